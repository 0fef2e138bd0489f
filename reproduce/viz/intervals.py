"""Table columns as point estimates with 95 % intervals, and curves with a zoom on where they differ."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reproduce.viz.overlays import save_figure  # noqa: E402
from reproduce.viz.tables import column_panels, panel_title, save_panels  # noqa: E402

LOG_KEYS = ("seconds", "forward", "backward", "passes")  # cost columns span orders of magnitude


def wants_log(column: dict[str, Any]) -> bool:
    """A column drawn on a log axis: ``log: true`` in the spec, or a time or pass count."""
    if "log" in column:
        return bool(column["log"])
    return any(k in str(column.get("key", "")) for k in LOG_KEYS)


def interval_figure(rows: list[dict[str, Any]], columns: list[dict[str, Any]], path: str, title: str,
                    best: dict[str, list[str]] | None = None, directions: dict[str, str | None] | None = None) -> str:
    """One panel per column: each row's estimate with its interval as an error bar.

    ``rows``: ``{"label", "values": {column label: (estimate, low, high)}}`` (low/high None: a point,
    drawn hollow: no interval). Time and pass columns use a log axis where they span a factor of 10
    or more. Best rows are orange."""
    best, directions = best or {}, directions or {}
    n = len(columns)
    fig, axes = column_panels(n, len(rows), 0.3)
    labels = [r["label"] for r in rows]
    for ax, column in zip(axes.flat, columns):
        name = column["label"]
        for y, row in enumerate(rows):
            estimate, low, high = row["values"].get(name, (None, None, None))
            if estimate is None:
                continue
            colour = "tab:orange" if row["label"] in best.get(name, []) else "tab:blue"
            if low is not None and high is not None:
                # The interval as its own segment: a bootstrap interval need not contain the estimate
                # (a degenerate one differs from it by rounding), which an error bar cannot draw.
                ax.plot([low, high], [y, y], "-|", color=colour, markersize=6, linewidth=1)
                ax.plot([estimate], [y], "o", color=colour, markersize=4)
            else:
                ax.plot([estimate], [y], "o", mfc="none", color=colour, markersize=5)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        if wants_log(column) and _spans_a_decade(rows, name):
            ax.set_xscale("log")
        panel_title(ax, name, directions.get(name))
        ax.grid(axis="x", alpha=0.3, which="both")
    return save_panels(fig, axes, n, f"{title}: 95 % intervals (orange: best or tied; hollow: no interval)", path)


def _spans_a_decade(rows: list[dict[str, Any]], name: str) -> bool:
    """Log axis only where it helps: positive values over at least a factor of 10."""
    values = [v for r in rows for v in (r["values"].get(name) or (None,)) if v is not None]
    return bool(values) and min(values) > 0 and max(values) >= 10 * min(values)


def saturation_x(curves: Sequence[tuple[Sequence[float], Sequence[float]]], tolerance: float = 0.05) -> float | None:
    """The x after which every curve stays within ``tolerance`` of its final value (relative to the
    spread of all curves), or None when they never settle before the last fifth of the axis."""
    ys = [v for _, y in curves for v in y]
    spread = (max(ys) - min(ys)) if ys else 0.0
    if spread <= 0:
        return None
    settle = 0.0
    for x, y in curves:
        last = y[-1]
        for xi, yi in zip(reversed(list(x)), reversed(list(y))):
            if abs(yi - last) > tolerance * spread:
                settle = max(settle, xi)
                break
    return settle if 0 < settle < 0.8 * max(max(x) for x, _ in curves) else None


def zoomed_curves_figure(panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float], float | None]]],
                         path: str, title: str | None = None, xlabel: str = "fraction flipped",
                         ylabel: str = "score") -> str:
    """Curves (as :func:`reproduce.viz.curves.curves_figure`), each kind with a second panel zoomed on
    the x-range before the curves saturate, where the methods differ."""
    kinds = list(panels)
    methods = list(dict.fromkeys(m for kind in kinds for m in panels[kind]))
    colours = {m: plt.cm.tab20(i % 20) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(len(kinds), 2, figsize=(9.5, 3.3 * len(kinds) + 0.5), squeeze=False)
    for (full, zoom), kind in zip(axes, kinds):
        curves = panels[kind]
        cut = saturation_x([(x, y) for x, y, _ in curves.values()])
        for method, (x, y, auc) in curves.items():
            label = method if auc is None else f"{method} (AUC {auc:.3f})"
            full.plot(list(x), list(y), color=colours[method], linewidth=1.3, label=label)
            zoom.plot(list(x), list(y), color=colours[method], linewidth=1.3)
        if cut is not None:
            full.axvspan(0, cut, color="grey", alpha=0.08)
            zoom.set_xlim(0, cut)
            inside = [v for x, y, _ in curves.values() for xi, v in zip(x, y) if xi <= cut]
            pad = 0.05 * ((max(inside) - min(inside)) or 1)
            zoom.set_ylim(min(inside) - pad, max(inside) + pad)
            zoom.set_title(f"{kind}: zoom on x <= {cut:.2f} (before the curves saturate)", fontsize=9)
        else:
            zoom.set_title(f"{kind}: no saturation, no zoom", fontsize=9)
        full.set_title(kind, fontsize=10)
        for ax in (full, zoom):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        full.legend(fontsize=6, loc="upper center", bbox_to_anchor=(1.1, -0.22), ncol=3, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
