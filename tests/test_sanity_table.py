"""The sanity table specs end to end in smoke mode (slow tier): every row gets its verdict columns,
and the control maps, which never look at the model, fail both checks."""

from __future__ import annotations

import os

import pytest

from reproduce.runtime.config_hash import to_plain
from reproduce.runtime.table_spec import TableSpec


def _smoke(compose, tmp_path, name):
    from reproduce.runtime.paths import TableLayout
    from reproduce.runtime.table_publish import publish
    from reproduce.runtime.table_runner import run_table

    raw = to_plain(compose("table", [f"table={name}"]).table)
    run = run_table(raw, str(tmp_path), logger="none", progress_bar=False, smoke=True)
    spec = TableSpec.from_config(raw)
    out = publish(spec, str(tmp_path), wandb_mode="disabled", smoke=True)  # the smoke run's cells
    assert len(run.results) == len(spec.cells()) and not out.missing
    assert os.path.exists(TableLayout(str(tmp_path), name, True).result_file(".png"))
    return {r["label"]: r["values"] for r in out.rows}


@pytest.mark.slow
def test_sanity_table_smoke_run_and_controls_fail(compose, tmp_path):
    rows = _smoke(compose, tmp_path, "sanity")
    for label, values in rows.items():
        assert values["MPRT pass"][0] in (0.0, 1.0) and values["Random-logit pass"][0] in (0.0, 1.0), label
        if "(control)" in label:
            assert values["MPRT Spearman abs (full)"][0] == 1.0 and values["MPRT pass"][0] == 0.0, label


@pytest.mark.slow
def test_data_randomisation_table_smoke_run(compose, tmp_path):
    rows = _smoke(compose, tmp_path, "sanity_data")
    assert rows["Edges (control)"]["Data-rand. pass"][0] == 0.0
