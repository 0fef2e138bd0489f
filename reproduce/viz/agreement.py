"""Metric agreement as a heat map: Kendall tau between the rankings of every pair of table columns."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reproduce.viz.overlays import save_figure  # noqa: E402


def agreement_figure(labels: list[str], tau: np.ndarray, path: str, title: str) -> str:
    """``tau`` ``[K, K]`` in [-1, 1] (NaN = undefined, drawn grey), annotated, diverging colours."""
    k = len(labels)
    side = max(4.0, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(tau), cmap=cmap, vmin=-1, vmax=1)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticklabels(labels, fontsize=7)
    for i in range(k):
        for j in range(k):
            if np.isfinite(tau[i, j]):
                ax.text(j, i, f"{tau[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(tau[i, j]) > 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="Kendall tau")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
