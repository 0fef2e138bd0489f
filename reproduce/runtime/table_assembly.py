"""Assemble a table from its cell result files: CSV and Markdown with mean and spread over seeds,
the best value per column marked, and the paper's numbers beside ours where known.

A cell that evaluated fewer images than it asked for (a ``samples`` filter or ``per_class`` quota
left fewer) is flagged: the Markdown marks its row with a footnote ``n=12 of 64``, and the CSV and
JSON carry the image counts of every row. A smoke run's files carry the title prefix
``SMOKE (tiny settings): not a result`` (:data:`reproduce.runtime.paths.SMOKE_TITLE`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from reproduce.atomic import atomic_write_json, atomic_write_text
from reproduce.runtime.paths import SMOKE_TITLE, TableLayout
from reproduce.runtime.table_intervals import TableIntervals
from reproduce.runtime.table_spec import TableSpec


@dataclass
class Assembled:
    rows: list[dict[str, Any]]  # per row: label, model, values {column: (mean, std, n)}
    missing: list[str]
    best: dict[str, list[str]]
    directions: dict[str, str | None]
    results: dict[str, dict[str, Any]]
    markdown: str
    csv_path: str
    md_path: str
    json_path: str = ""


def cell_result_path(root: str, spec: TableSpec, key: str, smoke: bool = False) -> str:
    return TableLayout(root, spec.name, smoke).cell_result(key)


def read_cells(root: str, spec: TableSpec, smoke: bool = False) -> tuple[dict[str, dict[str, Any]], list[str]]:
    results, missing = {}, []
    for cell in spec.cells():
        path = cell_result_path(root, spec, cell.key, smoke)
        try:
            with open(path) as f:
                results[cell.key] = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            missing.append(cell.key)
    return results, missing


def _direction(column: dict[str, Any], results: list[dict[str, Any]]) -> str | None:
    if column.get("direction"):
        return column["direction"]
    for r in results:
        if column["key"] in r.get("directions", {}):
            return r["directions"][column["key"]]
    return None


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _rows(spec: TableSpec, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row: label, model, attributor, ``values[column] = (mean, std, n)`` over seeds, and the
    images each seed evaluated and asked for."""
    table_rows = []
    for row in spec.rows:
        per_seed = [results[c.key] for c in spec.cells() if c.row["label"] == row["label"] and c.key in results]
        values = {}
        for column in spec.columns:
            scale = float(column.get("scale", 1.0))
            xs = [r["scalars"][column["key"]] * scale for r in per_seed if column["key"] in r.get("scalars", {})]
            mean = statistics.fmean(xs) if xs else None
            std = statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)
            values[column["label"]] = (mean, std, len(xs))
        table_rows.append({"label": row["label"], "model": row["model"], "attributor": row["attributor"],
                           "values": values, "images": [r.get("evaluated_images") for r in per_seed],
                           "requested": [r.get("requested_images") for r in per_seed]})
    return table_rows


def short_of(row: dict[str, Any]) -> str | None:
    """``n=12 of 64`` when some seed of the row evaluated fewer images than it asked for, else None."""
    pairs = [(n, asked) for n, asked in zip(row["images"], row["requested"]) if n is not None and asked and n < asked]
    return ", ".join(f"n={n} of {asked}" for n, asked in pairs) or None


def _best(spec: TableSpec, table_rows: list[dict[str, Any]], results: dict[str, dict[str, Any]]):
    best: dict[str, list[str]] = {}  # every row that ties for the best mean
    directions: dict[str, str | None] = {}
    for column in spec.columns:
        direction = directions[column["label"]] = _direction(column, list(results.values()))
        candidates = {r["label"]: r["values"][column["label"]][0] for r in table_rows  # a NaN mean is never best
                      if r["values"][column["label"]][0] is not None and not math.isnan(r["values"][column["label"]][0])}
        if direction in ("higher", "lower") and candidates:
            top = (max if direction == "higher" else min)(candidates.values())
            best[column["label"]] = [label for label, v in candidates.items() if math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-12)]
    return best, directions


def _csv(spec: TableSpec, table_rows: list[dict[str, Any]], smoke: bool, intervals: TableIntervals) -> str:
    """One line per row: its image counts, then mean/std/n, the paper value and (where cells keep
    per-image states) the 95 % interval of every column (a smoke run's CSV starts with a ``# SMOKE
    ...`` comment line)."""
    buffer = io.StringIO()
    if smoke:
        buffer.write(f"# {SMOKE_TITLE}\n")
    writer = csv.writer(buffer)
    header = ["method", "model", "attributor", "images", "images requested"]
    for column in spec.columns:
        header += [f"{column['label']}", f"{column['label']} std", f"{column['label']} n", f"{column['label']} paper"]
        header += intervals.csv_header(column)
    writer.writerow(header)
    for r in table_rows:
        counts = [" ".join(str(n) for n in r[key] if n is not None) for key in ("images", "requested")]
        line = [r["label"], r["model"], r["attributor"], *counts]
        for column in spec.columns:
            mean, std, n = r["values"][column["label"]]
            line += ["" if mean is None else repr(round(mean, 6)), "" if std is None else repr(round(std, 6)), n,
                     spec.paper.get(r["label"], {}).get(column["label"], "")]
            line += intervals.csv_cells(r["label"], column)
        writer.writerow(line)
    return buffer.getvalue()


def _markdown(spec: TableSpec, table_rows, best, directions, missing: list[str], title: str,
              intervals: TableIntervals) -> str:
    """ "mean ± half-width (paper)" (or "mean ± std" over seeds where cells keep no per-image states),
    best in bold, arrows give each column's direction; rows that evaluated fewer images than asked
    carry a footnote with the counts."""
    arrows = {"higher": " ↑", "lower": " ↓"}
    lines = [f"# {title}", ""]
    if spec.protocol:
        lines += [spec.protocol.strip(), ""]
    lines.append("| Method | Model | " + " | ".join(f"{c['label']}{arrows.get(directions[c['label']], '')}" for c in spec.columns) + " |")
    lines.append("|---|---|" + "---|" * len(spec.columns))
    notes = []
    for r in table_rows:
        cells = []
        for column in spec.columns:
            mean, std, n = r["values"][column["label"]]
            digits = int(column.get("digits", 2))
            text = intervals.markdown(r["label"], column, mean, digits)
            if text is None:  # no per-image states: mean ± std over seeds
                text = _fmt(mean, digits)
                if n and n > 1:
                    text += f" ± {_fmt(std, digits)}"
            if r["label"] in best.get(column["label"], []):
                text = f"**{text}**"
            ref = spec.paper.get(r["label"], {}).get(column["label"])
            if ref not in (None, ""):
                text += f" ({ref})"
            cells.append(text)
        label = r["label"]
        if short_of(r):
            notes.append(f"[{len(notes) + 1}] {r['label']}: {short_of(r)} images (fewer passed the samples filter).")
            label += f" [{len(notes)}]"
        lines.append(f"| {label} | {r['model']} | " + " | ".join(cells) + " |")
    lines.append("")
    n_seeds = len(spec.seeds)
    lines.append(f"Mean{' ± std' if n_seeds > 1 else ''} over {n_seeds} seed(s); best per column in bold; "
                 "paper values in parentheses where known (empty where the paper's number could not be read).")
    if intervals.footnote():
        lines.append(intervals.footnote())
    lines += [""] + notes if notes else []
    if missing:
        lines.append(f"\nMissing cells (not yet evaluated): {', '.join(missing)}.")
    return "\n".join(lines) + "\n"


def assemble(root: str, spec: TableSpec, extra_meta: dict[str, Any] | None = None, smoke: bool = False) -> Assembled:
    layout = TableLayout(root, spec.name, smoke)
    results, missing = read_cells(root, spec, smoke)
    table_rows = _rows(spec, results)
    best, directions = _best(spec, table_rows, results)
    # Cells with per-image states: 95 % intervals, and "best" only where significant (paired).
    intervals = TableIntervals.build(spec, results, table_rows, best, directions, cell_dir=layout.cell_dir)
    best = intervals.best
    csv_path, md_path, json_path = (layout.result_file(s) for s in (".csv", ".md", ".json"))
    atomic_write_text(csv_path, _csv(spec, table_rows, smoke, intervals))
    markdown = _markdown(spec, table_rows, best, directions, missing, layout.title(spec.title), intervals)
    atomic_write_text(md_path, markdown)
    atomic_write_json(json_path, {
        "table": spec.name, "title": layout.title(spec.title), "smoke": smoke, "rows": table_rows, "best": best,
        "missing": missing, "intervals": intervals.as_json(), **(extra_meta or {}),
    })
    return Assembled(table_rows, missing, best, directions, results, markdown, csv_path, md_path, json_path)
