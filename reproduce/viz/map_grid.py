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
from reproduce.viz.overlays import to_unit, save_figure  # noqa: E402


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


GAP = 2  # white pixels between the images of a row


def blend(image: torch.Tensor, attribution: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """``[H, W, 3]`` RGB of the min-max scaled map (jet) laid over the image with ``alpha``: the
    pixels :func:`~reproduce.viz.overlays.draw_overlay` shows, computed without drawing."""
    heat = plt.get_cmap("jet")(to_unit(attribution))[..., :3]
    return (1 - alpha) * image.permute(1, 2, 0).cpu().float().numpy().clip(0, 1) + alpha * heat


def _strip(items: Sequence[dict[str, Any]], cols: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One row of the grid as one image (``cols`` slots, a white gap between them) and its mask."""
    h, w = items[0]["map"].shape[-2:]
    rgb = np.ones((h, cols * (w + GAP) - GAP, 3))
    mask = np.zeros(rgb.shape[:2]) if any(o.get("mask") is not None for o in items) else None
    for c, item in enumerate(items[:cols]):
        x0 = c * (w + GAP)
        rgb[:, x0:x0 + w] = blend(item["image"], item["map"])
        if mask is not None and item.get("mask") is not None:
            mask[:, x0:x0 + w] = item["mask"].cpu().numpy().astype(float)
    return rgb, mask


def map_grid(rows: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str, title: str, k: int = 6) -> str:
    """Rows = methods, columns = the first ``k`` images the methods share (each row's own first
    images where they share none); each map min-max scaled, ground truth outlined in white.
    Each row is drawn as one image (one axes per method, not per map: a 27-method table would
    otherwise lay out and save 162 axes)."""
    rows = [(label, list(items)) for label, items in rows if items]
    shared = shared_images(rows, k)
    cols = max(1, len(shared) if shared else min(k, max(len(items) for _, items in rows)))
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.6 * cols + 1.6, 1.6 * len(rows) + 0.6), squeeze=False)
    for r, (label, items) in enumerate(rows):
        by_index = {o["index"]: o for o in items}
        chosen = [by_index[i] for i in shared] if shared else items[:cols]
        ax = axes[r, 0]
        rgb, mask = _strip(chosen, cols)
        ax.imshow(rgb, interpolation="nearest")
        if mask is not None and mask.any():
            ax.contour(mask, levels=[0.5], colors="white", linewidths=1.2)
        ax.set_yticks([])
        ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
        if r == 0:  # the image names on top, as tick labels so that the layout makes room for them
            w = chosen[0]["map"].shape[-1]
            ax.set_xticks([c * (w + GAP) + (w - 1) / 2 for c in range(len(chosen))],
                          [f"#{o['index']} (class {o['label']})" for o in chosen], fontsize=8)
            ax.xaxis.tick_top()
            ax.tick_params(axis="x", length=0)
        else:
            ax.set_xticks([])
    note = "the same images in every row" if shared else "each row's own first images (the rows share none)"
    fig.suptitle(f"{title}: maps by method ({note}; white: ground truth)", fontsize=10, y=1 - 0.1 / fig.get_figheight())
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # half an inch on top for the title
    return save_figure(fig, path)
