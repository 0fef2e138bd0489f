"""A methods-by-images grid of maps for a table, and the small file each cell keeps its maps in.

Each evaluated cell may write ``maps.npz`` beside its ``result.json`` (:func:`save_overlay_maps`,
from the overlay items it already keeps for ``overlays.png``):

- ``images`` ``[k, 3, H, W]`` float16, the de-normalised images in [0, 1];
- ``maps`` ``[k, H, W]`` float32, the attribution maps as returned;
- ``masks`` ``[k, H, W]`` bool, the ground truth (absent when the dataset has none);
- ``indices`` ``[k]`` int64 dataset indices (ascending) and ``labels`` ``[k]`` int64.

About 80 KB for 8 images of 64x64. :func:`map_grid` draws one row per method and one column per
image, the same images for every method where the rows share them.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from reproduce.atomic import atomic_write_bytes  # noqa: E402
from reproduce.viz.overlays import draw_overlay, save_figure  # noqa: E402


def save_overlay_maps(path: str, items: Sequence[dict[str, Any]]) -> str:
    """Write the overlay items (``image``, ``map``, optional ``mask``, ``label``, ``index``) as
    ``maps.npz`` (see the module docstring), atomically."""
    items = sorted(items, key=lambda o: o["index"])
    arrays = {
        "images": np.stack([torch.as_tensor(o["image"]).float().numpy() for o in items]).astype(np.float16),
        "maps": np.stack([torch.as_tensor(o["map"]).float().numpy() for o in items]).astype(np.float32),
        "indices": np.asarray([int(o["index"]) for o in items], dtype=np.int64),
        "labels": np.asarray([int(o.get("label", -1)) for o in items], dtype=np.int64),
    }
    if items and all(o.get("mask") is not None for o in items):
        arrays["masks"] = np.stack([torch.as_tensor(o["mask"]).bool().numpy() for o in items])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_overlay_maps(path: str) -> list[dict[str, Any]]:
    """The items of a ``maps.npz`` (tensors), ordered by dataset index."""
    with np.load(path) as npz:
        masks = npz["masks"] if "masks" in npz.files else None
        return [{"image": torch.from_numpy(npz["images"][i].astype(np.float32)), "map": torch.from_numpy(npz["maps"][i]),
                 "mask": None if masks is None else torch.from_numpy(masks[i]), "index": int(npz["indices"][i]),
                 "label": int(npz["labels"][i])} for i in range(len(npz["indices"]))]


def shared_images(rows: Sequence[tuple[str, Sequence[dict[str, Any]]]], k: int) -> list[int]:
    """The first ``k`` dataset indices every row has (fewer if they share fewer)."""
    common = None
    for _, items in rows:
        have = {o["index"] for o in items}
        common = have if common is None else common & have
    return sorted(common or [])[:k]


def map_grid(rows: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str, title: str, k: int = 6) -> str:
    """Rows = methods, columns = the first ``k`` images the methods share (each row's own first
    images where they share none); each map min-max scaled, ground truth outlined in white."""
    rows = [(label, list(items)) for label, items in rows if items]
    shared = shared_images(rows, k)
    cols = max(1, len(shared) if shared else min(k, max(len(items) for _, items in rows)))
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols + 1.6, 1.6 * len(rows) + 0.6), squeeze=False)
    for r, (label, items) in enumerate(rows):
        by_index = {o["index"]: o for o in items}
        chosen = [by_index[i] for i in shared] if shared else items[:cols]
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(chosen):
                ax.axis("off")
                continue
            item = chosen[c]
            draw_overlay(ax, item["image"], item["map"], item.get("mask"),
                         title=f"#{item['index']} (class {item['label']})" if r == 0 else None)
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    note = "the same images in every row" if shared else "each row's own first images (the rows share none)"
    fig.suptitle(f"{title}: maps by method ({note}; white: ground truth)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
