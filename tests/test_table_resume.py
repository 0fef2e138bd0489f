"""Tables through the real CLI: kill -9 then resume, same seed same numbers, shards through a Hydra
launcher, and the launcher configs themselves.

A tiny spec (one 1-epoch ResNet-10-T, two or three cheap rows, 8 test images) lives in a temporary
config folder added with ``hydra.searchpath``. Every process runs with one torch thread: CPU
results are reproducible for a fixed thread count (convolution backward sums in a thread-dependent
order, so another thread count moves the last digits and, through histogram bins, PxAP's 4th digit).
"""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

SPEC = """
name: tiny
title: Tiny table (tests)
data: synthetic
overrides: ["data.options.sizes={train:48,val:16,test:16}"]
seeds: [0]
eval_images: 8
target: label
models:
  net: {train: [experiment=quickstart_cnn, trainer.max_epochs=1, data.batch_size=16]}
metrics:
  pxap: {name: pxap}
  insertion: {name: insertion, steps: 5}
  cost: {name: cost}
rows:
%s
columns:
  - {label: Accuracy (%%), key: accuracy}
  - {label: PxAP, key: pxap/pxap}
  - {label: Insertion AUC, key: insertion/auc, digits: 3}
  - {label: Forward passes/img, key: cost/forward_per_image, digits: 0}
  - {label: Time (ms/img), key: cost/seconds_per_image, scale: 1000}
"""
ROWS = {
    "Grad-CAM": "gradcam",
    "Saliency": "saliency",
    "IxG": "input_x_gradient",
}
CELLS = ["grad_cam-s0", "saliency-s0", "ixg-s0"]
# Wall time is measured, not computed: it is the only column two identical runs may disagree on.
TIMING_COLUMNS = ("Time (ms/img)",)


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conf")
    rows = "\n".join(f"  - {{label: {label}, model: net, attributor: {name}}}" for label, name in ROWS.items())
    (folder / "table").mkdir()
    (folder / "table" / "tiny.yaml").write_text(SPEC % rows)
    return folder


def _table_cmd(conf_dir, root, *extra, multirun=False):
    return [sys.executable, "-m", "reproduce.table", *(["-m"] if multirun else []),
            f"hydra.searchpath=[file://{conf_dir}]", "table=tiny",
            f"paths.root={root}", "run_logger=none", "wandb_mode=disabled", "progress_bar=false", *extra]


def _env():
    return {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def _run(conf_dir, root, *extra, multirun=False):
    return subprocess.run(_table_cmd(conf_dir, root, *extra, multirun=multirun), env=_env(), cwd=root, check=True,
                          capture_output=True, text=True)


def _cell(root, key):
    return root / "outputs" / "tables" / "tiny" / "cells" / key / "result.json"


def _csv_without_timing(root) -> str:
    """The table CSV, byte for byte, minus the columns of timing columns (mean, std, n, paper)."""
    lines = list(csv.reader(open(root / "results" / "tiny.csv", newline="")))
    drop = {i for i, name in enumerate(lines[0]) if name.startswith(TIMING_COLUMNS)}
    assert drop, "the spec has a timing column; the comparison must know which it is"
    out = io.StringIO()
    csv.writer(out).writerows([[v for i, v in enumerate(line) if i not in drop] for line in lines])
    return out.getvalue()


@pytest.fixture(scope="module")
def clean(conf_dir, tmp_path_factory):
    """One uninterrupted run of the tiny table."""
    root = tmp_path_factory.mktemp("clean")
    _run(conf_dir, root)
    return root


def test_kill_9_during_a_table_run_then_rerun_skips_finished_cells_and_equals_a_clean_run(conf_dir, clean, tmp_path):
    proc = subprocess.Popen(_table_cmd(conf_dir, tmp_path), env=_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not _cell(tmp_path, CELLS[0]).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _cell(tmp_path, CELLS[0]).exists(), "the run ended before its first cell was written"
    assert not _cell(tmp_path, CELLS[-1]).exists(), "the run finished before it could be killed"
    assert not (tmp_path / "results" / "tiny.csv").exists()
    first = json.load(open(_cell(tmp_path, CELLS[0])))  # complete (written atomically) even though killed
    stamp = os.stat(_cell(tmp_path, CELLS[0])).st_mtime_ns

    rerun = _run(conf_dir, tmp_path)
    assert f"cell 1/3 {CELLS[0]} (gradcam on net): finished earlier, skipped (same config identity" in rerun.stdout
    assert f"cell 3/3 {CELLS[-1]} (input_x_gradient on net): done in" in rerun.stdout  # the unfinished cells were evaluated
    assert os.stat(_cell(tmp_path, CELLS[0])).st_mtime_ns == stamp
    assert json.load(open(_cell(tmp_path, CELLS[0]))) == first
    assert _csv_without_timing(tmp_path) == _csv_without_timing(clean)


@pytest.mark.slow
def test_same_seed_gives_identical_csv_in_two_independent_runs(conf_dir, clean, tmp_path):
    _run(conf_dir, tmp_path)
    assert _csv_without_timing(tmp_path) == _csv_without_timing(clean)
    for key in CELLS:  # and every computed number of every cell, to the last bit
        a, b = json.load(open(_cell(tmp_path, key))), json.load(open(_cell(clean, key)))
        a["scalars"].pop("cost/seconds_per_image"), b["scalars"].pop("cost/seconds_per_image")
        assert (a["scalars"], a["curves"]) == (b["scalars"], b["curves"])


@pytest.mark.slow
def test_shards_through_the_joblib_launcher_equal_one_process(conf_dir, clean, tmp_path):
    multirun = _run(conf_dir, tmp_path, "shard.count=2", "shard.index=0,1", "hydra/launcher=joblib_local",
                    "assemble=false", multirun=True)
    assert "Joblib.Parallel(n_jobs=2" in multirun.stdout + multirun.stderr
    assert all(_cell(tmp_path, key).exists() for key in CELLS) and not (tmp_path / "results").exists()
    _run(conf_dir, tmp_path, "assemble_only=true")
    assert _csv_without_timing(tmp_path) == _csv_without_timing(clean)


@pytest.mark.parametrize("launcher, target", [
    ("joblib_local", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
])
def test_launcher_configs_compose_and_instantiate(compose, launcher, target):
    pytest.importorskip(target.rsplit(".", 2)[0])
    from hydra.utils import instantiate

    cfg = compose("table", [f"hydra/launcher={launcher}", "shard.count=2"])
    assert cfg.hydra.launcher._target_ == target
    launcher_obj = instantiate(cfg.hydra.launcher)  # checks every field against the plugin's signature
    assert type(launcher_obj).__name__ == target.rsplit(".", 1)[1]
    if launcher == "submitit_slurm":
        assert str(cfg.hydra.launcher.submitit_folder).endswith("/.submitit/%j")
