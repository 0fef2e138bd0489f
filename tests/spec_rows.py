"""Row indices of a table spec by label, so that tests overriding ``table.rows.<i>`` keep naming the
row they mean when rows are added to a spec."""

from __future__ import annotations

from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[1] / "conf" / "table"


def row_index(table: str, label: str) -> int:
    rows = yaml.safe_load((CONF / f"{table}.yaml").read_text())["rows"]
    labels = [row["label"] for row in rows]
    return labels.index(label)
