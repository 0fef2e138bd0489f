"""The report's figures of one table, drawn from its cells and its assembled JSON:

- ``<table>_intervals.png``: every column's estimates with their 95 % intervals (log axis for time and
  pass counts), best or tied rows highlighted;
- ``<table>_curves_zoom.png``: the curve metrics of seed 0, each with a panel zoomed on where the
  curves still differ (they saturate early: MoXI's accuracy reaches 100 % within a few patches);
- ``<table>_maps.png``: methods by images, from the ``maps.npz`` each cell writes (see
  :mod:`reproduce.viz.map_grid`); absent for cells that predate it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from reproduce.lit.cell_states import MAPS_FILE
from reproduce.runtime.paths import TableLayout
from reproduce.runtime.table_spec import TableSpec

CURVE_METRICS = ("insertion", "deletion", "patch_insertion", "patch_deletion")


def interval_rows(spec: TableSpec, assembled: dict[str, Any]) -> list[dict[str, Any]]:
    """``{label, values: {column: (estimate, low, high)}}`` per row of an assembled table JSON
    (mean ± std over seeds where a cell has no interval, a bare point with one seed)."""
    cells = (assembled.get("intervals") or {}).get("cells") or {}
    out = []
    for row in assembled.get("rows") or []:
        values = {}
        for column in spec.columns:
            mean, std, n = (row.get("values") or {}).get(column["label"], (None, None, 0))
            interval = (cells.get(row["label"]) or {}).get(column["label"])
            if mean is None:
                values[column["label"]] = (None, None, None)
            elif interval and interval.get("low") is not None:
                values[column["label"]] = (mean, interval["low"], interval["high"])
            elif n and n > 1:
                values[column["label"]] = (mean, mean - std, mean + std)
            else:
                values[column["label"]] = (mean, None, None)
        out.append({"label": row["label"], "values": values})
    return out


def curve_panels(spec: TableSpec, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, tuple]]:
    """Seed-0 curves ``{metric label: {row: (x, y, auc)}}`` of the table's curve metrics."""
    panels: dict[str, dict[str, tuple]] = {}
    for cell in spec.cells():
        result = results.get(cell.key)
        if result is None or cell.seed != spec.seeds[0]:
            continue
        for label, metric in spec.metrics.items():
            y = (result.get("curves") or {}).get(f"{label}/curve")
            if metric.get("name", label) not in CURVE_METRICS or y is None:
                continue
            x = result["curves"].get(f"{label}/curve_x", [i / max(1, len(y) - 1) for i in range(len(y))])
            panels.setdefault(label, {})[cell.row["label"]] = (x, y, (result.get("scalars") or {}).get(f"{label}/auc"))
    return panels


def table_figures(root: str, spec: TableSpec, results: dict[str, dict[str, Any]], smoke: bool = False) -> dict[str, str]:
    """Draw the figures of the module docstring that the table's files allow; ``{kind: path}``
    (beside the table's files: ``results/``, or ``results/smoke/`` for a smoke run)."""
    from reproduce.viz.intervals import interval_figure, zoomed_curves_figure
    from reproduce.viz.map_grid import load_overlay_maps, map_grid

    layout = TableLayout(root, spec.name, smoke)
    title = layout.title(spec.title)
    figures: dict[str, str] = {}
    assembled_path = layout.result_file(".json")
    if os.path.exists(assembled_path):
        with open(assembled_path) as f:
            assembled = json.load(f)
        directions = {c["label"]: c.get("direction") for c in spec.columns}
        for r in results.values():
            for c in spec.columns:
                directions[c["label"]] = directions[c["label"]] or (r.get("directions") or {}).get(c["key"])
        figures["intervals"] = interval_figure(interval_rows(spec, assembled), spec.columns,
                                               layout.result_file("_intervals.png"), title, assembled.get("best"), directions)
    panels = curve_panels(spec, results)
    if panels:
        figures["curves"] = zoomed_curves_figure(panels, layout.result_file("_curves_zoom.png"),
                                                 title=layout.title(f"{spec.name}: curves (seed {spec.seeds[0]})"))
    rows = []
    for cell in spec.cells():
        path = os.path.join(layout.cell_dir(cell.key), MAPS_FILE)
        if cell.seed == spec.seeds[0] and cell.key in results and os.path.exists(path):
            rows.append((cell.row["label"], load_overlay_maps(path)))
    if rows:
        figures["maps"] = map_grid(rows, layout.result_file("_maps.png"), title)
    return figures
