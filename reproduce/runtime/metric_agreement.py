"""Do two columns of a table measure the same thing? Metric agreement beside every assembled table.

For every pair of metric columns, the **Kendall tau** (tau-b, which accounts for ties; scipy)
between the method rankings the two columns induce: each column is oriented by its direction
(``lower`` columns negated, so that larger = better in both), and only methods with a value in both
columns take part (pairwise deletion). tau = 1: the same order; -1: reversed; undefined (blank, NaN
in the figure) with fewer than 3 common methods or a column that does not separate them.

Per method, the **LATEC-style median rank** (Klein et al., NeurIPS'24): each column ranks the methods
that have a value (1 = best, ties share their mean rank), and a method's median over the columns,
with the spread of its ranks (min, max, interquartile range) and the number of columns.

Which columns count: those with a ``higher``/``lower`` direction, except the model's accuracy
(``key: accuracy``, a property of the model, not of the map), cost columns (``cost/...``) and any
column with ``agreement: false`` in the spec. Written next to the table as
``results/<name>_agreement.csv`` (the tau matrix), ``results/<name>_agreement.md`` (both tables)
and ``results/<name>_agreement.png`` (the heat map).
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from reproduce.atomic import atomic_write_text

MIN_COMMON = 3


@dataclass
class Agreement:
    columns: list[str]
    tau: np.ndarray  # [K, K], NaN where undefined
    common: np.ndarray  # [K, K] number of methods both columns score
    ranks: dict[str, dict[str, Any]]  # method -> {median, min, max, iqr, columns}


def agreement_columns(columns: list[dict[str, Any]], directions: dict[str, str | None]) -> list[str]:
    """Labels of the columns that take part (see the module docstring)."""
    return [c["label"] for c in columns
            if directions.get(c["label"]) in ("higher", "lower") and c.get("agreement", True)
            and c["key"] != "accuracy" and not str(c["key"]).startswith("cost/")]


def _oriented(rows: list[dict[str, Any]], label: str, direction: str) -> dict[str, float]:
    sign = 1.0 if direction == "higher" else -1.0
    out = {}
    for r in rows:
        value = r["values"][label][0]
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[r["label"]] = sign * float(value)
    return out


def kendall(a: dict[str, float], b: dict[str, float]) -> tuple[float, int]:
    """Kendall tau-b of two oriented columns over their common methods, and how many there are."""
    common = sorted(set(a) & set(b))
    if len(common) < MIN_COMMON:
        return math.nan, len(common)
    x, y = [a[m] for m in common], [b[m] for m in common]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, len(common)
    return float(stats.kendalltau(x, y).statistic), len(common)


def median_ranks(oriented: dict[str, dict[str, float]], methods: list[str]) -> dict[str, dict[str, Any]]:
    per_method: dict[str, list[float]] = {m: [] for m in methods}
    for values in oriented.values():
        if not values:
            continue
        names = list(values)
        ranks = stats.rankdata([-values[m] for m in names], method="average")  # 1 = best
        for m, r in zip(names, ranks):
            per_method[m].append(float(r))
    out = {}
    for m, ranks in per_method.items():
        if not ranks:
            out[m] = {"median": None, "min": None, "max": None, "iqr": None, "columns": 0}
            continue
        q1, q3 = np.percentile(ranks, [25, 75])
        out[m] = {"median": statistics.median(ranks), "min": min(ranks), "max": max(ranks),
                  "iqr": float(q3 - q1), "columns": len(ranks)}
    return out


def metric_agreement(rows: list[dict[str, Any]], columns: list[dict[str, Any]],
                     directions: dict[str, str | None]) -> Agreement:
    """The agreement of an assembled table (``rows`` as :class:`~reproduce.runtime.table_assembly.Assembled`)."""
    labels = agreement_columns(columns, directions)
    oriented = {c: _oriented(rows, c, directions[c]) for c in labels}
    k = len(labels)
    tau = np.full((k, k), np.nan)
    common = np.zeros((k, k), dtype=int)
    for i in range(k):
        for j in range(k):
            tau[i, j], common[i, j] = kendall(oriented[labels[i]], oriented[labels[j]])
    return Agreement(labels, tau, common, median_ranks(oriented, [r["label"] for r in rows]))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def agreement_markdown(name: str, agreement: Agreement) -> str:
    cols = agreement.columns
    lines = [f"# {name}: metric agreement", "",
             "Kendall tau-b between the method rankings of two columns (each oriented by its direction; "
             "methods scored by both; blank = fewer than 3 common methods or no separation).", "",
             "| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for i, c in enumerate(cols):
        lines.append(f"| {c} | " + " | ".join(_fmt(agreement.tau[i, j]) for j in range(len(cols))) + " |")
    lines += ["", "Median rank per method over the columns above (1 = best; LATEC-style), with its spread.", "",
              "| Method | Median rank | Min | Max | IQR | Columns |", "|---|---|---|---|---|---|"]
    ordered = sorted(agreement.ranks.items(), key=lambda kv: (kv[1]["median"] is None, kv[1]["median"] or 0.0))
    for method, r in ordered:
        lines.append(f"| {method} | {_fmt(r['median'], 1)} | {_fmt(r['min'], 1)} | {_fmt(r['max'], 1)} | "
                     f"{_fmt(r['iqr'], 1)} | {r['columns']} |")
    return "\n".join(lines) + "\n"


def agreement_csv(agreement: Agreement) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["column", *agreement.columns])
    for i, c in enumerate(agreement.columns):
        writer.writerow([c, *("" if math.isnan(v) else repr(round(float(v), 6)) for v in agreement.tau[i])])
    return buffer.getvalue()


def write_agreement(name: str, assembled, columns: list[dict[str, Any]], results_dir: str) -> list[str]:
    """Write ``<name>_agreement.{csv,md,png}`` beside the table; returns the figure paths (none when
    fewer than two columns take part)."""
    from reproduce.viz.agreement import agreement_figure

    agreement = metric_agreement(assembled.rows, columns, assembled.directions)
    if len(agreement.columns) < 2:
        return []
    atomic_write_text(os.path.join(results_dir, f"{name}_agreement.csv"), agreement_csv(agreement))
    atomic_write_text(os.path.join(results_dir, f"{name}_agreement.md"), agreement_markdown(name, agreement))
    path = os.path.join(results_dir, f"{name}_agreement.png")
    return [agreement_figure(agreement.columns, agreement.tau, path, f"{name}: Kendall tau between column rankings")]
