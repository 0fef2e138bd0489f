"""Cost of the attributor: wall time and model passes per image.

The attributor records its cost of the last ``attribute`` call in ``last_cost``
(``seconds_per_image``, ``forward_per_image``, ``backward_per_image``). The runner hands it over in
the batch extras, made with :func:`cost_extras`, so cost flows through the same
``update(batch)`` loop as every other metric; the metric averages it over images (each batch
weighted by its size). Lower is better for all three.
"""

from __future__ import annotations

import torch

from reproduce.errors import InputError
from reproduce.metrics.base import EXTRA, AttributionBatch, AttributionMetric
from reproduce.metrics.registry import register_metric

COST_KEYS = ("seconds_per_image", "forward_per_image", "backward_per_image")
PREFIX = "cost_"


def cost_extras(last_cost: dict[str, float], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Batch extras (``cost_seconds_per_image`` ...) from an attributor's ``last_cost``."""
    missing = [k for k in COST_KEYS if k not in last_cost]
    if missing:
        raise InputError(f"last_cost lacks {missing}; pass the dict Attributor.attribute() leaves in last_cost.")
    return {PREFIX + k: torch.tensor(float(last_cost[k]), dtype=torch.float64, device=device) for k in COST_KEYS}


@register_metric("cost")
class Cost(AttributionMetric):
    """Mean seconds, forward and backward passes per explained image (lower is better)."""

    requires = tuple(f"{EXTRA}{PREFIX}{k}" for k in COST_KEYS)
    directions = {k: "lower" for k in COST_KEYS}

    def __init__(self, model=None):
        super().__init__(model)
        self._record(source="Attributor.last_cost via batch.extra (cost_extras)", weighting="per image")
        self._add_sum("totals", (len(COST_KEYS),))
        self._add_sum("count")
        # Per image: the batch's per-image cost, the same for each image of the batch.
        self._track_per_image("totals", "count")

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        per_image = torch.stack([batch.extra[PREFIX + k].double().reshape(()) for k in COST_KEYS])
        self._accumulate_rows({"totals": per_image.expand(batch.size, -1),
                               "count": torch.ones(batch.size, dtype=torch.float64)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        return {k: self.totals[i] / n for i, k in enumerate(COST_KEYS)}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: sums["totals"][:, i] / sums["count"] for i, k in enumerate(COST_KEYS)}
