"""Heatmap overlays with ground-truth outlines."""

from __future__ import annotations

import math
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from reproduce.atomic import atomic_write_bytes  # noqa: E402


def to_unit(m: torch.Tensor) -> np.ndarray:
    m = m.detach().float().cpu()
    lo, hi = m.min(), m.max()
    return ((m - lo) / (hi - lo).clamp_min(1e-12)).numpy()


def draw_overlay(ax, image: torch.Tensor, attribution: torch.Tensor, mask: torch.Tensor | None = None,
                 title: str | None = None, alpha: float = 0.5):
    """Image ``[3, H, W]`` in [0, 1] with the min-max scaled map on top and the mask outlined."""
    ax.imshow(image.permute(1, 2, 0).cpu().numpy())
    handle = ax.imshow(to_unit(attribution), cmap="jet", alpha=alpha, vmin=0, vmax=1)
    if mask is not None and bool(mask.any()):
        ax.contour(mask.cpu().numpy().astype(float), levels=[0.5], colors="white", linewidths=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return handle


def save_figure(fig, path: str, dpi: int = 120) -> str:
    """Write ``fig`` as PNG atomically and close it."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def overlay_grid(items: Sequence[dict[str, Any]], title: str, path: str, columns: int = 4) -> str:
    """A grid of overlays (``image``, ``map``, optional ``mask`` and ``label`` per item) with a colour bar."""
    n = len(items)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 0.6, 2.2 * rows + 0.4), squeeze=False)
    handle = None
    for ax, item in zip(axes.flat, items):
        label = item.get("label")
        handle = draw_overlay(ax, item["image"], item["map"], item.get("mask"),
                              title=None if label is None else f"class {label}")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{title} (white: ground truth)", fontsize=10)
    if handle is not None:
        bar = fig.colorbar(handle, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label="attribution (min-max per map)")
        bar.solids.set_alpha(1)
    return save_figure(fig, path)


def stability_grid(items: Sequence[dict[str, Any]], models: Sequence[str], title: str, path: str,
                   max_images: int = 4) -> str:
    """Stability side by side: one row per image, one column per model (``map`` then each of
    ``references``), so maps of re-trained models can be compared by eye."""
    items = list(items)[:max_images]
    rows, cols = len(items), len(models)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 0.6, 2.2 * rows + 0.4), squeeze=False)
    handle = None
    for r, item in enumerate(items):
        maps = [item["map"], *(item["references"] if item.get("references") is not None else [])]
        for c, (name, amap) in enumerate(zip(models, maps)):
            handle = draw_overlay(axes[r, c], item["image"], amap, item.get("mask"), title=name if r == 0 else None)
        axes[r, 0].set_ylabel(f"class {item.get('label')}", fontsize=8)
    fig.suptitle(f"{title}: the same images explained by each model (white: ground truth)", fontsize=10)
    if handle is not None:
        bar = fig.colorbar(handle, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label="attribution (min-max per map)")
        bar.solids.set_alpha(1)
    return save_figure(fig, path)
