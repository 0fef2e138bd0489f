"""Confidence intervals and significance-aware "best" for an assembled table.

:func:`TableIntervals.build` is the hook :func:`reproduce.runtime.table_assembly.assemble` calls once
the per-row means exist. For every (row, column) whose cells keep per-image states
(:mod:`reproduce.runtime.intervals`) it computes the 95 % bootstrap interval over images and seeds;
the CSV gains ``<column> lo``, ``<column> hi`` and ``<column> n images`` for the columns that have
any, and the Markdown shows ``mean ± half-width``. "Best" becomes: the row with the best mean, bold,
and every row whose paired interval against it (same images and seeds) includes zero, i.e. every
row not significantly different from the best (a tie). Rows or columns without per-image states keep
the plain rule (mean ± std over seeds; bold = equal to the best mean), so tables of older cells read
exactly as before; a row whose cells keep states but give no interval (fewer than 10 images) is never
bold. Every bootstrap is seeded: two assemblies of the same cells are identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from reproduce.runtime.intervals import MIN_IMAGES, Interval, PerImageStates, cell_interval, paired_interval, row_states
from reproduce.runtime.table_spec import TableSpec

CellDir = Callable[[str], str]


def row_results(spec: TableSpec, results: dict[str, dict[str, Any]]) -> dict[str, list[tuple[str, dict[str, Any] | None]]]:
    """Per row label, its ``(cell key, result or None)`` for each seed of the spec, in seed order."""
    out: dict[str, list[tuple[str, dict[str, Any] | None]]] = {}
    for cell in spec.cells():
        out.setdefault(cell.row["label"], []).append((cell.key, results.get(cell.key)))
    return out


@dataclass
class TableIntervals:
    spec: TableSpec
    intervals: dict[str, dict[str, Interval]] = field(default_factory=dict)  # row -> column -> interval
    versus_best: dict[str, dict[str, Interval]] = field(default_factory=dict)  # column -> row -> best - row
    best: dict[str, list[str]] = field(default_factory=dict)
    _states: dict[tuple[str, str], list[PerImageStates] | None] = field(default_factory=dict)
    _loaded: dict[tuple[int, str], PerImageStates | None] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: TableSpec, results: dict[str, dict[str, Any]], table_rows: list[dict[str, Any]],
              best: dict[str, list[str]], directions: dict[str, str | None], cell_dir: CellDir | None = None) -> "TableIntervals":
        """Intervals of every cell that has per-image states and the significance-aware best
        (``best``: the plain rule's result, kept where no paired test is possible)."""
        self = cls(spec, best=dict(best))
        by_row = row_results(spec, results)
        for row in table_rows:
            cells = by_row.get(row["label"], [])
            for column in spec.columns:
                states, _ = row_states([r for _, r in cells], column["key"], [cell_dir(k) if cell_dir else None for k, _ in cells], self._loaded)
                self._states[(row["label"], column["key"])] = states
                if states is not None:
                    interval = cell_interval(states, column["key"]).scaled(float(column.get("scale", 1.0)))
                    self.intervals.setdefault(row["label"], {})[column["label"]] = interval
        for column in spec.columns:
            if directions.get(column["label"]) in ("higher", "lower"):
                self._significant_best(column, table_rows, directions[column["label"]])
        return self

    def _significant_best(self, column: dict[str, Any], table_rows: list[dict[str, Any]], direction: str) -> None:
        name = column["label"]
        means = {r["label"]: r["values"][name][0] for r in table_rows if r["values"][name][0] is not None}
        # Only a row with an interval can be the best: a mean over too few images cannot win on noise.
        contenders = {k: v for k, v in means.items() if (self.intervals.get(k, {}).get(name) or Interval(None)).defined}
        if not contenders:
            return
        top = (max if direction == "higher" else min)(contenders, key=contenders.get)
        top_states = self._states.get((top, column["key"]))
        if top_states is None:
            return  # no paired test possible: the plain rule stands
        bold = [top]
        for label, mean in means.items():
            if label == top:
                continue
            states = self._states.get((label, column["key"]))
            if states is not None and label not in contenders:
                continue  # per-image states but no interval (too few images): never bold
            versus = None if states is None else paired_interval(top_states, states, column["key"])
            if versus is not None:
                self.versus_best.setdefault(name, {})[label] = versus.scaled(float(column.get("scale", 1.0)))
            if versus is not None and versus.defined:
                tied = versus.low <= 0 <= versus.high
            else:
                tied = math.isclose(mean, means[top], rel_tol=1e-9, abs_tol=1e-12)
            if tied:
                bold.append(label)
        self.best[name] = [label for label in means if label in bold]

    # --- output ----------------------------------------------------------------------------------
    def has(self, column: dict[str, Any]) -> bool:
        return any(column["label"] in cols for cols in self.intervals.values())

    def csv_header(self, column: dict[str, Any]) -> list[str]:
        name = column["label"]
        return [f"{name} lo", f"{name} hi", f"{name} n images"] if self.has(column) else []

    def csv_cells(self, row_label: str, column: dict[str, Any]) -> list[Any]:
        if not self.has(column):
            return []
        interval = self.intervals.get(row_label, {}).get(column["label"])
        if interval is None or not interval.defined:
            return ["", "", "" if interval is None else interval.n_images]
        return [repr(round(interval.low, 6)), repr(round(interval.high, 6)), interval.n_images]

    def markdown(self, row_label: str, column: dict[str, Any], mean: float | None, digits: int) -> str | None:
        """``mean ± half-width`` (or the reason there is no interval); None: keep the plain text."""
        interval = self.intervals.get(row_label, {}).get(column["label"])
        if interval is None or mean is None:
            return None
        if not interval.defined:
            return f"{mean:.{digits}f} (n = {interval.n_images}: no CI)"
        return f"{mean:.{digits}f} ± {interval.half_width:.{digits}f}"

    def footnote(self) -> str:
        if not self.intervals:
            return ""
        return (f"Where cells keep per-image states: mean ± half-width of the 95 % bootstrap interval over images "
                f"(and seeds), BCa, seeded; no interval below {MIN_IMAGES} images. Bold: the best mean and every row "
                "whose paired interval against it (same images and seeds) includes zero.")

    def as_json(self) -> dict[str, Any]:
        return {"cells": {row: {col: iv.as_dict() for col, iv in cols.items()} for row, cols in self.intervals.items()},
                "versus_best": {col: {row: iv.as_dict() for row, iv in rows.items()} for col, rows in self.versus_best.items()}}
