"""What an evaluated cell keeps per image beside its ``result.json``: ``per_image.npz``.

Every metric that keeps per-image states (:mod:`reproduce.metrics.per_image`) and the accuracy
column give one entry of ``result["per_image"]`` (the format of :mod:`reproduce.runtime.intervals`):
the arrays go to ``per_image.npz`` (``<label>/indices``, ``<label>/<state>``; compressed, written
atomically) and each entry names the file and its sha256, so that the ``result.json`` written after
it (the commit marker) never reads a file of another run of the cell.

The accuracy entry holds ``100 x correct`` per image (statistic ``"mean"``), over exactly the images
the reported accuracy counts: every test image the loop saw, or, when the runner chose the explained
images by correctness (``samples=correct|misclassified``), the images its prediction pass visited
(:mod:`reproduce.runtime.sampling`).
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from reproduce.atomic import atomic_write_bytes
from reproduce.metrics import AttributionMetric

PER_IMAGE_FILE = "per_image.npz"
MAPS_FILE = "maps.npz"  # the overlay images and maps (:mod:`reproduce.viz.map_grid`)


class ImageAccuracy(AttributionMetric):
    """Top-1 correctness of every image the test loop saw (rows of the accuracy column's interval).
    Fed directly through :meth:`add` (it judges predictions, not maps); 16 bytes per image."""

    name = "accuracy"

    def __init__(self):
        super().__init__(None)
        self._add_sum("accuracy")
        self._add_sum("count")
        self._track_per_image("accuracy", "count")

    def add(self, correct: torch.Tensor, indices: torch.Tensor) -> None:
        self._accumulate_rows({"accuracy": 100 * correct.double(), "count": torch.ones_like(correct, dtype=torch.float64)},
                              indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        return {"accuracy": self.accuracy / self._require_samples(self.count)}


def accuracy_rows(visited: Sequence[tuple[int, bool]]) -> dict[str, Any]:
    """The accuracy's per-image states from ``(dataset index, correct)`` pairs (the sampler's pass)."""
    ordered = sorted(visited)
    return {"indices": [i for i, _ in ordered],
            "states": {"accuracy": [100.0 * bool(c) for _, c in ordered], "count": [1.0] * len(ordered)}}


def metric_options(spec: dict[str, Any]) -> dict[str, Any]:
    """A metric spec as JSON (models given directly, not by ``"@name"``, become ``"@model"``)."""
    def plain(value: Any) -> Any:
        if isinstance(value, nn.Module):
            return "@model"
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {key: plain(value) for key, value in spec.items()}


def write_per_image(path: str, entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Write the rows of ``entries`` (each ``{"indices", "states": {name: rows}, ...}``) to the
    ``.npz`` at ``path`` atomically; returns the entries as ``result.json`` keeps them (the file's
    name and sha256 instead of the rows)."""
    arrays: dict[str, np.ndarray] = {}
    for label, entry in entries.items():
        arrays[f"{label}/indices"] = np.asarray(entry["indices"], dtype=np.int64)
        for name, rows in entry["states"].items():
            arrays[f"{label}/{name}"] = np.asarray(rows, dtype=np.float64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    digest = hashlib.sha256(data).hexdigest()
    name = os.path.basename(path)
    return {label: {**{k: v for k, v in entry.items() if k not in ("indices", "states")}, "states": name, "sha256": digest}
            for label, entry in entries.items()}
