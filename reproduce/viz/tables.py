"""A table as a figure: one horizontal bar chart per column, best method highlighted."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reproduce.viz.overlays import save_figure  # noqa: E402


def table_figure(rows: list[dict[str, Any]], columns: list[dict[str, Any]], best: dict[str, list[str]],
                 directions: dict[str, str | None], path: str, title: str) -> str:
    """``rows`` as produced by table assembly (``label`` and ``values[column] = (mean, std, n)``)."""
    n = len(columns)
    cols = min(3, n)
    grid_rows = math.ceil(n / cols)
    height = max(2.5, 0.28 * len(rows) + 1.2)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(5.2 * cols, height * grid_rows), squeeze=False)
    labels = [r["label"] for r in rows]
    for ax, column in zip(axes.flat, columns):
        name = column["label"]
        means = [r["values"][name][0] for r in rows]
        stds = [r["values"][name][1] or 0.0 for r in rows]
        shown = [m if m is not None else 0.0 for m in means]
        colours = ["tab:orange" if lab in best.get(name, []) else ("tab:blue" if m is not None else "lightgrey")
                   for lab, m in zip(labels, means)]
        ax.barh(range(len(rows)), shown, xerr=stds, color=colours, height=0.7)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(directions.get(name) or "", "")
        ax.set_title(f"{name}{arrow}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.suptitle(f"{title} (orange: best)", fontsize=11)
    return save_figure(fig, path)
