"""Models shared across tables: a table copies a model another table trained with the same training
config instead of training it again, and never copies over a run of its own or a different config."""

from __future__ import annotations

import json
import os
from unittest import mock

from reproduce.atomic import atomic_write_json
from reproduce.runtime import table_runner
from reproduce.runtime.model_store import copy_run, finished_twin, is_empty_run
from reproduce.runtime.model_identity import file_sha256
from reproduce.runtime.table_runner import run_table


def _run(root, table, name, identity, finished=True):
    run_dir = os.path.join(root, "outputs", "tables", table, "models", name)
    os.makedirs(os.path.join(run_dir, "checkpoints"))
    for ckpt in ("best.ckpt", "last.ckpt"):
        with open(os.path.join(run_dir, "checkpoints", ckpt), "wb") as f:
            f.write(f"{table}/{name}/{ckpt}".encode())
    atomic_write_json(os.path.join(run_dir, "run.json"), {"identity": identity, "finished": finished,
                                                          "test_metrics": {"test/acc": 0.5}})
    return run_dir


def test_only_a_finished_run_with_the_same_identity_is_a_twin(tmp_path):
    root = str(tmp_path)
    pattern = os.path.join(root, "outputs", "tables", "*", "models", "*")
    _run(root, "a", "a-m-s0", "other")
    _run(root, "b", "b-m-s0", "same", finished=False)
    own = os.path.join(root, "outputs", "tables", "c", "models", "c-m-s0")
    assert finished_twin(pattern, "same", own) is None  # the other identity and an unfinished run
    donor = _run(root, "d", "d-m-s0", "same")
    assert finished_twin(pattern, "same", own) == donor
    assert finished_twin(pattern, "same", donor) is None  # a run is never its own twin
    os.remove(os.path.join(donor, "checkpoints", "last.ckpt"))
    assert finished_twin(pattern, "same", own) is None  # a twin must have both checkpoints


def test_runs_moved_aside_to_be_retrained_are_never_copied_back(tmp_path):
    root = str(tmp_path)
    pattern = os.path.join(root, "outputs", "tables", "*", "models", "*")
    own = os.path.join(root, "outputs", "tables", "c", "models", "c-m-s0")
    _run(root, "a", "a-m-s0.old", "same")  # `mv <run> <run>.old`
    _run(root, "b.prev", "b-m-s0", "same")  # the table folder moved aside
    assert finished_twin(pattern, "same", own) is None
    donor = _run(root, "d", "d-m-s0", "same")
    assert finished_twin(pattern, "same", own) == donor


def test_a_copy_is_whole_and_says_where_it_came_from(tmp_path):
    from omegaconf import OmegaConf

    donor = _run(str(tmp_path), "a", "a-m-s0", "same")
    target = os.path.join(str(tmp_path), "outputs", "tables", "b", "models", "b-m-s0")
    assert is_empty_run(target)
    run = copy_run(donor, target, OmegaConf.create({"name": "b-m-s0"}))
    assert not is_empty_run(target)
    for ckpt in ("best.ckpt", "last.ckpt"):
        assert file_sha256(os.path.join(target, "checkpoints", ckpt)) == file_sha256(os.path.join(donor, "checkpoints", ckpt))
    assert json.load(open(os.path.join(target, "run.json"))) == run
    assert run["best_checkpoint"] == os.path.join(target, "checkpoints", "best.ckpt")
    assert run["copied_from"] == donor and run["identity"] == "same" and run["finished"]
    assert OmegaConf.load(os.path.join(target, "config.yaml")).name == "b-m-s0"  # this run's own config
    assert not [f for f in os.listdir(os.path.join(target, "checkpoints")) if f.startswith(".tmp-")]


def _spec(name, epochs):
    return {
        "name": name, "data": "synthetic", "overrides": ["data.options.sizes={train:64,val:16,test:16}"],
        "eval_images": 2,
        "models": {"m": {"train": ["experiment=quickstart_cnn", f"trainer.max_epochs={epochs}", "data.batch_size=32"]}},
        "metrics": {"pointing": {"name": "pointing_game"}},
        "rows": [{"label": "A", "model": "m", "attributor": "gradcam"}],
        "columns": [{"label": "Pointing", "key": "pointing/accuracy"}],
    }


def test_a_table_copies_the_model_another_table_trained_with_the_same_config(tmp_path, capsys):
    root = str(tmp_path)
    first = run_table(_spec("first", 1), root, progress_bar=False)
    capsys.readouterr()
    with mock.patch.object(table_runner, "fit", side_effect=AssertionError("retrained")) as fit:
        second = run_table(_spec("second", 1), root, progress_bar=False)
    assert not fit.called
    assert "copied from" in capsys.readouterr().out
    a, b = first.checkpoints[("m", 0)], second.checkpoints[("m", 0)]
    assert a != b and file_sha256(a) == file_sha256(b)
    # Same weights: the cell measures the same numbers (the identity is by content, not by path).
    assert second.results["a-s0"]["scalars"] == first.results["a-s0"]["scalars"]
    # Another recipe is trained, not copied; and a table's own finished run is reused, not copied over.
    with mock.patch.object(table_runner, "fit", wraps=table_runner.fit) as fit:
        run_table(_spec("third", 2), root, progress_bar=False)
        assert fit.call_count == 1 and "trained in" in capsys.readouterr().out
        run_table(_spec("second", 1), root, progress_bar=False)
        assert fit.call_count == 2 and "reused (finished earlier)" in capsys.readouterr().out
    assert json.load(open(os.path.join(os.path.dirname(os.path.dirname(b)), "run.json")))["copied_from"]
