"""A table as a figure: one horizontal bar chart per column, best method highlighted."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reproduce.viz.overlays import save_figure  # noqa: E402


def column_panels(columns: int, rows: int, row_height: float):
    """A figure of one panel per table column, three panels a line, tall enough for ``rows`` labels."""
    cols = min(3, columns)
    grid_rows = math.ceil(columns / cols)
    height = max(2.5, row_height * rows + 1.2)
    return plt.subplots(grid_rows, cols, figsize=(5.2 * cols, height * grid_rows), squeeze=False)


def panel_title(ax, name: str, direction: str | None) -> None:
    """The column's name and which way is better, over its panel."""
    arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(direction or "", "")
    ax.set_title(f"{name}{arrow}", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)


def save_panels(fig, axes, columns: int, title: str, path: str) -> str:
    """Blank the panels no column uses, title the figure and save it."""
    for ax in list(axes.flat)[columns:]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def table_figure(rows: list[dict[str, Any]], columns: list[dict[str, Any]], best: dict[str, list[str]],
                 directions: dict[str, str | None], path: str, title: str) -> str:
    """``rows`` as produced by table assembly (``label`` and ``values[column] = (mean, std, n)``)."""
    n = len(columns)
    fig, axes = column_panels(n, len(rows), 0.28)
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
        panel_title(ax, name, directions.get(name))
        ax.grid(axis="x", alpha=0.3)
    return save_panels(fig, axes, n, f"{title} (orange: best)", path)
