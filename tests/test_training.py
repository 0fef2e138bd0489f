"""Classifier training through the real Hydra configs: smoke runs, W&B offline, resume, kill -9."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY_SIZES
from fixtures_training import fit_one_step_and_check
from reproduce.errors import ConfigError
from reproduce.runtime.training import fit

TINY = [f"data.options.sizes={TINY_SIZES}", "data.batch_size=32", "trainer.enable_progress_bar=false"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=resnet10t_os16"],
        ["model=vit_micro_p8"],
        ["data=synthetic_two_part", "model=resnet10t_os16"],
        ["experiment=quickstart_cnn"],
        ["experiment=quickstart_vit"],
    ],
)
def test_fast_dev_run_of_real_configs(compose, overrides, monkeypatch):
    cfg = compose("train", [*overrides, *TINY, "+trainer.fast_dev_run=true", "logger=none"])
    fit_one_step_and_check(cfg, monkeypatch)  # it trained, and test/acc is the trained model's on the test batch


def test_wandb_offline_writes_a_local_run(compose):
    cfg = compose("train", [*TINY, "trainer.max_epochs=1", "logger=wandb"])
    os.environ["WANDB_MODE"] = "offline"
    result = fit(cfg)
    runs = glob.glob(os.path.join(result.run_dir, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(runs) == 1 and os.path.getsize(runs[0]) > 0
    info = json.load(open(os.path.join(result.run_dir, "run.json")))
    assert info["finished"] and info["wandb_id"] in runs[0]
    assert os.path.exists(os.path.join(result.run_dir, "config.yaml"))


def test_csv_logger_and_explicit_resume_continue_the_step_count(compose, tmp_path):
    first = fit(compose("train", [*TINY, "trainer.max_epochs=1", "logger=csv", "name=first"]))
    steps_per_epoch = torch.load(first.last_checkpoint, weights_only=True)["global_step"]
    assert glob.glob(os.path.join(first.run_dir, "csv", "*", "metrics.csv"))
    second = fit(compose("train", [*TINY, "trainer.max_epochs=2", "logger=none", "name=second", f"resume={first.last_checkpoint}"]))
    ckpt = torch.load(second.last_checkpoint, weights_only=True)
    assert ckpt["global_step"] == 2 * steps_per_epoch and ckpt["epoch"] == 1


def test_a_run_dir_refuses_a_different_config(compose):
    fit(compose("train", [*TINY, "trainer.max_epochs=1", "logger=none", "name=same"]))
    with pytest.raises(ConfigError, match="different configuration"):
        fit(compose("train", [*TINY, "trainer.max_epochs=1", "logger=none", "name=same", "module.optimizer.lr=0.1"]))
    with pytest.raises(ConfigError, match="resume=never"):
        fit(compose("train", [*TINY, "trainer.max_epochs=1", "logger=none", "name=same", "resume=never"]))


def test_bad_seed_is_refused_before_training(compose):
    with pytest.raises(ConfigError, match="seed"):
        fit(compose("train", [*TINY, "seed=-1", "logger=none"]))


def _train_cmd(root, name):
    return [
        sys.executable, "-m", "reproduce.train", f"paths.root={root}", f"name={name}", "logger=none",
        "data.options.sizes={train:384,val:64,test:64}", "trainer.max_epochs=3",
        "trainer.enable_progress_bar=false",
    ]


def test_kill_9_during_training_then_rerun_equals_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    run_dir = tmp_path / "outputs" / "train" / "killed"
    proc = subprocess.Popen(_train_cmd(tmp_path, "killed"), env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    info = json.load(open(run_dir / "run.json"))
    assert not info.get("finished"), "the run finished before it could be killed"
    subprocess.run(_train_cmd(tmp_path, "killed"), env=env, cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(_train_cmd(tmp_path, "clean"), env=env, cwd=tmp_path, check=True, capture_output=True)
    resumed = json.load(open(run_dir / "run.json"))
    clean = json.load(open(tmp_path / "outputs" / "train" / "clean" / "run.json"))
    assert resumed["finished"] and resumed["test_metrics"] == clean["test_metrics"]
    a = torch.load(resumed["last_checkpoint"], weights_only=True)["state_dict"]
    b = torch.load(clean["last_checkpoint"], weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
