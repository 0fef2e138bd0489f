"""``python -m reproduce.table`` run in this process on a tiny spec (one 1-epoch ResNet-10-T, two cheap
rows, 4 test images), once for real and once with ``smoke=true``, with counters on the steps that
must happen once (issue 13.3): the spec is built once per command, each cell's "finished?" check
runs once, and each model is read from its checkpoint once per cell. The same runs show what the
command prints (issue 11.7, 11.8) and that a smoke run stays apart from the real one (11.2).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from unittest import mock

import pytest

import reproduce.models.checkpoint as checkpoint_module
from reproduce.runtime import evaluation as evaluation_module
from reproduce.runtime.paths import SMOKE_TITLE
from reproduce.runtime.table_spec import TableSpec

SPEC = """
name: once
title: Steps once (tests)
data: synthetic
overrides: ["data.options.sizes={train:48,val:16,test:16}"]
eval_images: 4
models:
  net: {train: [experiment=quickstart_cnn, trainer.max_epochs=1, data.batch_size=16]}
metrics:
  pointing: {name: pointing_game}
  cost: {name: cost}
rows:
  - {label: Grad-CAM, model: net, attributor: gradcam}
  - {label: Saliency, model: net, attributor: saliency}
columns:
  - {label: Accuracy (%), key: accuracy, digits: 1}
  - {label: Pointing (%), key: pointing/accuracy, scale: 100, digits: 1}
"""


def _table(conf_dir, root, *extra):
    """Run the real entry point in this process; returns the counters and what it printed."""
    from reproduce.runtime.cli_errors import run_entry_point
    from reproduce.table import PROG, main

    counts = {"spec": 0, "read_checkpoint": 0, "finished_check": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)
        return wrapper

    real_read = checkpoint_module.read_checkpoint
    readers = [m for m in list(sys.modules.values()) if getattr(m, "read_checkpoint", None) is real_read]
    patches = [mock.patch.object(TableSpec, "from_config", staticmethod(counted("spec", TableSpec.from_config))),
               mock.patch.object(evaluation_module, "previous_result", counted("finished_check", evaluation_module.previous_result)),
               *[mock.patch.object(m, "read_checkpoint", counted("read_checkpoint", real_read)) for m in readers]]
    argv = ["reproduce.table", f"hydra.searchpath=[file://{conf_dir}]", "table=once", f"paths.root={root}",
            "run_logger=none", "wandb_mode=offline", "progress_bar=false", *extra]
    for p in patches:
        p.start()
    try:
        with mock.patch.object(sys, "argv", argv):
            run_entry_point(main, PROG, "table")
    finally:
        for p in patches:
            p.stop()
    return counts


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    conf = tmp_path_factory.mktemp("conf")
    (conf / "table").mkdir()
    (conf / "table" / "once.yaml").write_text(SPEC)
    root = tmp_path_factory.mktemp("root")
    capture = {}
    cwd = os.getcwd()
    os.chdir(root)  # Hydra's own log file lands in the run directory, under root
    try:
        for mode, extra in (("real", []), ("again", [])):
            out = io.StringIO()  # capsys is function-scoped: capture by hand for the module's runs
            with contextlib.redirect_stdout(out):
                counts = _table(conf, root, *extra)
            capture[mode] = (counts, out.getvalue())
    finally:
        os.chdir(cwd)
    return conf, root, capture


def test_each_step_happens_once(runs):
    _, _, capture = runs
    counts, _ = capture["real"]
    assert counts["spec"] == 1  # validate_table builds it; run_table and publish take it
    assert counts["finished_check"] == 2  # once per cell
    assert counts["read_checkpoint"] == 2  # the explained model, once per cell
    again, _ = capture["again"]
    assert again == {"spec": 1, "finished_check": 2, "read_checkpoint": 0}  # reused cells read no model


def test_progress_one_line_per_cell_and_no_lightning_banner(runs):
    _, _, capture = runs
    out = capture["real"][1]
    done = [line for line in out.splitlines() if line.startswith("[reproduce.table] cell ") and "done in" in line]
    assert len(done) == 2 and done[0].startswith("[reproduce.table] cell 1/2 grad_cam-s0 (gradcam on net): done in")
    assert all("ETA" in line and "n=4" in line and "Pointing (%)" in line for line in done)
    assert "cell 2/2 saliency-s0" in done[1] and "ETA 0.0 min" in done[1]
    skipped = [line for line in capture["again"][1].splitlines() if "finished earlier, skipped" in line]
    assert len(skipped) == 2 and "same config identity" in skipped[0] and "models checkpoint" in skipped[0]
    for noise in ("GPU available", "litlogger", "LeafSpec", "Seed set to"):
        assert noise not in out


def test_where_things_went(runs):
    _, root, capture = runs
    out = capture["real"][1]
    assert f"[reproduce.table] run directory: {root}/outputs/tables/once" in out
    for name in ("once.csv", "once.md", "once.json", "once.png"):
        assert f"[reproduce.table] wrote {root}/results/{name}" in out
    sync = [line for line in out.splitlines() if "wandb sync" in line]
    assert len(sync) == 1 and f"{root}/outputs/tables/once/wandb/offline-run-" in sync[0]
    folder = sync[0].split("`wandb sync ")[1].rstrip("`")
    assert os.path.isdir(folder)


def test_smoke_runs_are_planned_apart(tmp_path):
    from reproduce.runtime.paths import TableLayout
    from reproduce.runtime.table_runner import plan_table
    from reproduce.runtime.table_cells import SMOKE_IMAGES

    spec = TableSpec.from_config(__import__("yaml").safe_load(SPEC))
    plan = plan_table(spec, TableLayout(str(tmp_path), "once", smoke=True))
    dirs = [str(cfg.paths.output_dir) for _, cfg in plan.trainings] + [str(cfg.paths.output_dir) for _, cfg in plan.cells]
    assert dirs and all(d.startswith(f"{tmp_path}/outputs/smoke/tables/once/") for d in dirs)
    assert all(cfg.eval_images == SMOKE_IMAGES and cfg.cell.smoke for _, cfg in plan.cells)
    assert TableLayout(str(tmp_path), "once", smoke=True).result_file(".md") == f"{tmp_path}/results/smoke/once.md"


@pytest.mark.slow  # one more tiny training and two cells (~20 s)
def test_a_smoke_run_is_written_apart_and_says_so(runs):
    conf, root, _ = runs
    real_files = {p: os.stat(p).st_mtime_ns for p in (os.path.join(root, "results", f"once{s}") for s in (".md", ".csv", ".json"))}
    with contextlib.redirect_stdout(io.StringIO()):
        cwd = os.getcwd()
        os.chdir(root)
        try:
            _table(conf, root, "smoke=true")
        finally:
            os.chdir(cwd)
    smoke = os.path.join(root, "results", "smoke")
    md = open(os.path.join(smoke, "once.md")).read()
    assert md.startswith(f"# {SMOKE_TITLE}: Steps once (tests)")
    assert open(os.path.join(smoke, "once.csv")).readline().strip() == f"# {SMOKE_TITLE}"
    meta = json.load(open(os.path.join(smoke, "once.json")))
    assert meta["smoke"] is True and meta["title"].startswith(SMOKE_TITLE)
    cell = json.load(open(os.path.join(root, "outputs", "smoke", "tables", "once", "cells", "grad_cam-s0", "result.json")))
    assert "/outputs/smoke/tables/once/models/" in cell["cell"]["models"]["checkpoint"]["path"] and cell["cell"]["smoke"]
    # The real run's files are untouched, its title has no prefix.
    assert {p: os.stat(p).st_mtime_ns for p in real_files} == real_files
    real = json.load(open(os.path.join(root, "results", "once.json")))
    assert real["smoke"] is False and real["title"] == "Steps once (tests)"


def test_a_model_trained_with_other_settings_stops_the_table_and_the_fix_works(runs):
    """Runs last: it moves the module's model directory away."""
    import re
    import shlex
    import subprocess

    from reproduce.errors import ConfigError
    from reproduce.runtime.paths import TableLayout
    from reproduce.runtime.run_dir import train_identity
    from reproduce.runtime.table_runner import plan_table, train_models
    from reproduce.runtime.training import resolve_resume

    _, root, _ = runs
    raw = __import__("yaml").safe_load(SPEC.replace("trainer.max_epochs=1", "trainer.max_epochs=2"))
    plan = plan_table(TableSpec.from_config(raw), TableLayout(str(root), "once"))
    with pytest.raises(ConfigError, match=r"holds a run with a different configuration .*: the table trained model "
                                          r"'net' \(seed 0\) there with other settings; move it away") as err:
        train_models(plan)
    command = re.search(r"`(mv [^`]+)`", str(err.value)).group(1)
    subprocess.run(shlex.split(command), check=True)  # as written
    (_, cfg), = plan.trainings
    assert resolve_resume(cfg, str(cfg.paths.output_dir), train_identity(cfg)) is None  # re-running now retrains
