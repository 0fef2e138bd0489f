"""Curves (insertion/deletion, accuracy vs patches) with their AUC in the legend."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reproduce.viz.overlays import save_figure  # noqa: E402


def curves_figure(panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float], float | None]]],
                  path: str, xlabel: str = "fraction of pixels", ylabel: str = "score", title: str | None = None) -> str:
    """One panel per curve kind (e.g. ``insertion``, ``deletion``); each maps a method to
    ``(x, y, auc)``. Methods keep the same colour across panels."""
    kinds = list(panels)
    methods = list(dict.fromkeys(m for kind in kinds for m in panels[kind]))
    # Legends go under the panels: inside, a dozen labels would cover the curves they name.
    columns = 2 if len(methods) > 6 else 1
    legend_rows = -(-max(len(panels[kind]) for kind in kinds) // columns) if kinds else 0
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.4 + 0.17 * legend_rows), squeeze=False)
    colours = {m: plt.cm.tab20(i % 20) for i, m in enumerate(methods)}
    for ax, kind in zip(axes[0], kinds):
        for method, (x, y, auc) in panels[kind].items():
            label = method if auc is None else f"{method} (AUC {auc:.3f})"
            ax.plot(list(x), list(y), label=label, color=colours[method], linewidth=1.4)
        ax.set_title(kind)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=columns, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
