"""Assemble a table from its cell result files: CSV and Markdown with mean and spread over seeds,
the best value per column marked, and the paper's numbers beside ours where known."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from dataclasses import dataclass
from typing import Any

from reproduce.atomic import atomic_write_json, atomic_write_text
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


def cell_result_path(root: str, spec: TableSpec, key: str) -> str:
    return os.path.join(root, "outputs", "tables", spec.name, "cells", key, "result.json")


def read_cells(root: str, spec: TableSpec) -> tuple[dict[str, dict[str, Any]], list[str]]:
    results, missing = {}, []
    for cell in spec.cells():
        path = cell_result_path(root, spec, cell.key)
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


def assemble(root: str, spec: TableSpec, extra_meta: dict[str, Any] | None = None) -> Assembled:
    results, missing = read_cells(root, spec)
    paper = spec.raw.get("paper") or {}
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
                           "values": values, "images": [r.get("evaluated_images") for r in per_seed]})

    best: dict[str, list[str]] = {}  # every row that ties for the best mean
    directions: dict[str, str | None] = {}
    for column in spec.columns:
        direction = directions[column["label"]] = _direction(column, list(results.values()))
        candidates = {r["label"]: r["values"][column["label"]][0] for r in table_rows
                      if r["values"][column["label"]][0] is not None and not math.isnan(r["values"][column["label"]][0])}
        if direction in ("higher", "lower") and candidates:
            top = (max if direction == "higher" else min)(candidates.values())
            best[column["label"]] = [label for label, v in candidates.items() if math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-12)]
    # Cells with per-image states: 95 % intervals, and "best" only where significant (paired).
    intervals = TableIntervals.build(spec, results, table_rows, best, directions,
                                     cell_dir=lambda key: os.path.dirname(cell_result_path(root, spec, key)))
    best = intervals.best

    # CSV: one line per row, mean/std/n per column and the paper value beside it.
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["method", "model", "attributor"]
    for column in spec.columns:
        header += [f"{column['label']}", f"{column['label']} std", f"{column['label']} n", f"{column['label']} paper"]
        header += intervals.csv_header(column)
    writer.writerow(header)
    for r in table_rows:
        line = [r["label"], r["model"], r["attributor"]]
        for column in spec.columns:
            mean, std, n = r["values"][column["label"]]
            line += ["" if mean is None else repr(round(mean, 6)), "" if std is None else repr(round(std, 6)), n,
                     paper.get(r["label"], {}).get(column["label"], "")]
            line += intervals.csv_cells(r["label"], column)
        writer.writerow(line)
    csv_path = os.path.join(root, "results", f"{spec.name}.csv")
    atomic_write_text(csv_path, buffer.getvalue())

    # Markdown: "mean ± std (paper)", best in bold, arrows give each column's direction.
    arrows = {"higher": " ↑", "lower": " ↓"}
    lines = [f"# {spec.raw.get('title', spec.name)}", ""]
    if spec.raw.get("protocol"):
        lines += [str(spec.raw["protocol"]).strip(), ""]
    lines.append("| Method | Model | " + " | ".join(f"{c['label']}{arrows.get(directions[c['label']], '')}" for c in spec.columns) + " |")
    lines.append("|---|---|" + "---|" * len(spec.columns))
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
            ref = paper.get(r["label"], {}).get(column["label"])
            if ref not in (None, ""):
                text += f" ({ref})"
            cells.append(text)
        lines.append(f"| {r['label']} | {r['model']} | " + " | ".join(cells) + " |")
    lines.append("")
    n_seeds = len(spec.seeds)
    lines.append(f"Mean{' ± std' if n_seeds > 1 else ''} over {n_seeds} seed(s); best per column in bold; "
                 "paper values in parentheses where known (empty where the paper's number could not be read).")
    if intervals.footnote():
        lines.append(intervals.footnote())
    if missing:
        lines.append(f"\nMissing cells (not yet evaluated): {', '.join(missing)}.")
    markdown = "\n".join(lines) + "\n"
    md_path = os.path.join(root, "results", f"{spec.name}.md")
    atomic_write_text(md_path, markdown)
    atomic_write_json(os.path.join(root, "results", f"{spec.name}.json"), {
        "table": spec.name, "rows": table_rows, "best": best, "missing": missing, "intervals": intervals.as_json(),
        **(extra_meta or {}),
    })
    return Assembled(table_rows, missing, best, directions, results, markdown, csv_path, md_path)
