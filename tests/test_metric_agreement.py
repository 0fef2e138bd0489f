"""Metric agreement on hand-made assembled tables: Kendall tau (identical, reversed, directions, ties,
missing values), LATEC-style median ranks, and the files publish() writes beside the table."""

from __future__ import annotations

import csv
import math
import os

import pytest
from scipy import stats

from reproduce.atomic import atomic_write_json
from reproduce.runtime.metric_agreement import metric_agreement
from reproduce.runtime.table_assembly import cell_result_path
from reproduce.runtime.table_spec import TableSpec


def _rows(table: dict[str, dict[str, float | None]]) -> list[dict]:
    return [{"label": m, "values": {c: (v, 0.0, 1) for c, v in values.items()}} for m, values in table.items()]


def _columns(*labels, **extra):
    return [{"label": c, "key": f"m/{c}", **extra.get(c, {})} for c in labels]


def _tau(agreement, a, b):
    return agreement.tau[agreement.columns.index(a), agreement.columns.index(b)]


def test_identical_reversed_and_direction_aware_rankings():
    rows = _rows({
        "A": {"x": 1.0, "y": 10.0, "z": 1.0, "w": 5.0},
        "B": {"x": 2.0, "y": 20.0, "z": 2.0, "w": 5.0},
        "C": {"x": 3.0, "y": 30.0, "z": 3.0, "w": 1.0},
        "D": {"x": 4.0, "y": 40.0, "z": 4.0, "w": 0.0},
    })
    directions = {"x": "higher", "y": "higher", "z": "lower", "w": "higher"}
    out = metric_agreement(rows, _columns("x", "y", "z", "w"), directions)
    assert _tau(out, "x", "y") == pytest.approx(1.0)
    assert _tau(out, "x", "z") == pytest.approx(-1.0)  # same numbers, opposite direction: reversed ranking
    assert _tau(out, "x", "x") == pytest.approx(1.0)
    expected = stats.kendalltau([1, 2, 3, 4], [5, 5, 1, 0]).statistic  # ties: tau-b
    assert _tau(out, "x", "w") == pytest.approx(expected) and -1 < expected < 0
    # D is best on x and y and worst on z and w: ranks 1, 1, 4, 4
    assert out.ranks["D"] == {"median": 2.5, "min": 1.0, "max": 4.0, "iqr": 3.0, "columns": 4}


def test_missing_values_are_dropped_pairwise_and_too_few_methods_are_undefined():
    rows = _rows({
        "A": {"x": 1.0, "y": 3.0, "z": None},
        "B": {"x": 2.0, "y": None, "z": 1.0},
        "C": {"x": 3.0, "y": 1.0, "z": 2.0},
        "D": {"x": 4.0, "y": 0.0, "z": None},
    })
    out = metric_agreement(rows, _columns("x", "y", "z"), {"x": "higher", "y": "higher", "z": "higher"})
    assert _tau(out, "x", "y") == pytest.approx(-1.0)  # over A, C, D
    assert math.isnan(_tau(out, "x", "z"))  # only B and C in common
    assert out.common[0, 2] == 2 and out.ranks["B"]["columns"] == 2


def test_columns_without_direction_accuracy_and_cost_are_left_out():
    rows = _rows({m: {"acc": 1.0, "q": v, "t": v, "n": v, "off": v} for m, v in zip("ABC", (1.0, 2.0, 3.0))})
    columns = [{"label": "acc", "key": "accuracy"}, {"label": "q", "key": "m/q"}, {"label": "t", "key": "cost/seconds"},
               {"label": "n", "key": "m/n"}, {"label": "off", "key": "m/off", "agreement": False}]
    out = metric_agreement(rows, columns, {"acc": "higher", "q": "higher", "t": "lower", "n": None, "off": "higher"})
    assert out.columns == ["q"]


def test_publish_writes_the_agreement_beside_the_table(tmp_path):
    from reproduce.runtime.table_publish import publish

    spec = TableSpec.from_config({
        "name": "toy",
        "models": {"m": {"train": ["experiment=quickstart_cnn"]}},
        "metrics": {"pxap": {"name": "pxap"}, "deletion": {"name": "deletion"}, "insertion": {"name": "insertion"}},
        "rows": [{"label": label, "model": "m", "attributor": "gradcam"} for label in ("A", "B", "C", "D")],
        "columns": [{"label": "PxAP", "key": "pxap/pxap"}, {"label": "Deletion", "key": "deletion/auc"},
                    {"label": "Insertion", "key": "insertion/auc"}],
    })
    values = {"a": (10.0, 0.4, 0.5), "b": (20.0, 0.3, 0.6), "c": (30.0, 0.2, 0.7), "d": (40.0, 0.1, 0.8)}
    for key, (pxap, deletion, insertion) in values.items():
        atomic_write_json(cell_result_path(str(tmp_path), spec, f"{key}-s0"), {
            "scalars": {"pxap/pxap": pxap, "deletion/auc": deletion, "insertion/auc": insertion},
            "directions": {"pxap/pxap": "higher", "deletion/auc": "lower", "insertion/auc": "higher"},
            "curves": {}, "evaluated_images": 4})
    publish(spec, str(tmp_path), wandb_mode="disabled")
    results = tmp_path / "results"
    for suffix in ("csv", "md", "png"):
        assert (results / f"toy_agreement.{suffix}").exists(), suffix
    with open(results / "toy_agreement.csv") as f:
        matrix = {row["column"]: row for row in csv.DictReader(f)}
    assert float(matrix["PxAP"]["Deletion"]) == pytest.approx(1.0)  # lower deletion AUC ranks like higher PxAP
    assert "| D | 1.0 | 1.0 | 1.0 | 0.0 | 3 |" in (results / "toy_agreement.md").read_text()
    assert os.path.getsize(results / "toy_agreement.png") > 1000
