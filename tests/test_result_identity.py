"""A result is keyed by what produced it: the config's identity plus the content of every model file it
used (issue 11.1). Retraining a model, in place or after moving its run away, makes exactly the
evaluations and table cells that used it stale; moving a run directory does not; ``recompute`` forces.

One tiny ResNet-10-T (1 epoch on 96 images) is trained per module and shared by the tests.
"""

from __future__ import annotations

import json
import os
import shutil
from unittest import mock

import pytest

from conftest import TINY_SIZES, compose_config
from reproduce.runtime import model_identity
from reproduce.runtime.evaluation import evaluate_cell, run_cell
from reproduce.runtime.model_identity import file_sha256
from reproduce.runtime.table_runner import run_table
from reproduce.runtime.training import fit

TRAIN = ["experiment=quickstart_cnn", f"data.options.sizes={TINY_SIZES}", "data.batch_size=32", "logger=none",
         "trainer.enable_progress_bar=false"]
EVALUATE = ["attributor=gradcam", "train_run=quickstart_cnn", "logger=none", "metrics=[pxap]",
            f"data.options.sizes={TINY_SIZES}", "trainer.enable_progress_bar=false", "name=quick-gradcam"]


def _train(root, epochs):
    return fit(compose_config("train", [*TRAIN, f"trainer.max_epochs={epochs}"], root))


def test_retraining_a_model_recomputes_its_evaluation_and_moving_it_does_not(tmp_path, capsys):
    first_run = _train(tmp_path, 1)
    first = evaluate_cell(compose_config("evaluate", EVALUATE, tmp_path))
    assert first["cell"]["models"]["checkpoint"]["sha256"] == file_sha256(first_run.best_checkpoint)
    assert first["cell"]["models"]["checkpoint"]["train_identity"] == json.load(open(os.path.join(first_run.run_dir, "run.json")))["identity"]

    # The identity-mismatch advice: move the run directory away, then retrain with other settings.
    moved = f"{first_run.run_dir}.old"
    os.rename(first_run.run_dir, moved)
    # Same weights at another path: the same result (models enter the identity by content, not path).
    capsys.readouterr()
    same = evaluate_cell(compose_config("evaluate", [*EVALUATE, f"checkpoint={moved}/checkpoints/best.ckpt"], tmp_path))
    assert same == first and "is up to date (same config identity" in capsys.readouterr().out

    second_run = _train(tmp_path, 2)
    assert file_sha256(second_run.best_checkpoint) != first["cell"]["models"]["checkpoint"]["sha256"]
    second = evaluate_cell(compose_config("evaluate", EVALUATE, tmp_path))
    out = capsys.readouterr().out
    old, new = first["cell"]["models"]["checkpoint"]["sha256"][:8], second["cell"]["models"]["checkpoint"]["sha256"][:8]
    assert f"a model changed (checkpoint {old} -> {new})" in out
    assert second["cell"]["identity"] != first["cell"]["identity"]
    assert second["cell"]["config_identity"] == first["cell"]["config_identity"]
    assert second["finished_at"] >= first["finished_at"] and second != first

    # Up to date now, unless recompute=true.
    again = run_cell(compose_config("evaluate", EVALUATE, tmp_path))
    assert again.reused and again.result == second
    forced = run_cell(compose_config("evaluate", [*EVALUATE, "recompute=true"], tmp_path))
    assert not forced.reused and forced.stale_reason == "recompute=true"
    assert forced.result["cell"]["identity"] == second["cell"]["identity"]  # recompute is not part of the identity


def test_the_content_hash_is_cached_beside_the_file_and_refreshed_when_it_changes(tmp_path):
    path = tmp_path / "best.ckpt"
    path.write_bytes(b"weights v1")
    calls = []
    real = model_identity.hashlib.sha256

    def counting():
        calls.append(1)
        return real()

    with mock.patch.object(model_identity.hashlib, "sha256", counting):
        first = file_sha256(str(path))
        assert file_sha256(str(path)) == first and len(calls) == 1  # the second call reads the cache
        cache = json.load(open(f"{path}.sha256"))
        assert cache == {"size": 10, "mtime_ns": os.stat(path).st_mtime_ns, "sha256": first}
        path.write_bytes(b"weights v2")  # same size, new mtime
        os.utime(path, ns=(cache["mtime_ns"] + 10**9, cache["mtime_ns"] + 10**9))
        assert file_sha256(str(path)) != first and len(calls) == 2


SPEC = {
    "name": "ident",
    "data": "synthetic",
    "overrides": ["data.options.sizes={train:64,val:16,test:16}"],
    "eval_images": 4,
    "models": {
        "a": {"train": ["experiment=quickstart_cnn", "trainer.max_epochs=1", "data.batch_size=32"]},
        "b": {"train": ["experiment=quickstart_cnn", "trainer.max_epochs=1", "data.batch_size=32"], "seed_offset": 1},
    },
    "metrics": {"pointing": {"name": "pointing_game"}},
    "rows": [{"label": "A", "model": "a", "attributor": "gradcam"}, {"label": "B", "model": "b", "attributor": "gradcam"}],
    "columns": [{"label": "Pointing", "key": "pointing/accuracy"}],
}


def _lines(out):
    return [line for line in out.splitlines() if line.startswith("[reproduce.table] cell")]


@pytest.mark.slow  # trains two models: ~25 s on a quiet machine
def test_table_cells_are_stale_exactly_when_their_model_changes(tmp_path, capsys):
    root = str(tmp_path)
    run = run_table(SPEC, root, progress_bar=False)
    capsys.readouterr()
    a_ckpt, b_ckpt = run.checkpoints[("a", 0)], run.checkpoints[("b", 0)]
    assert file_sha256(a_ckpt) != file_sha256(b_ckpt)  # seed_offset: b is trained with seed 1
    shutil.copyfile(a_ckpt, b_ckpt)  # model b "retrained": other weights in the same file
    again = run_table(SPEC, root, progress_bar=False)
    lines = _lines(capsys.readouterr().out)
    assert any("cell 1/2 a-s0" in line and "finished earlier, skipped" in line for line in lines), lines
    assert any("cell 2/2 b-s0" in line and "done in" in line and "recomputed: a model changed (checkpoint" in line
               for line in lines), lines
    assert again.results["b-s0"]["cell"]["models"]["checkpoint"]["sha256"] == file_sha256(a_ckpt)
    # recompute=<row label>: that row only.
    run_table(SPEC, root, progress_bar=False, recompute="A")
    lines = _lines(capsys.readouterr().out)
    assert any("a-s0" in line and "recomputed: recompute=true" in line for line in lines), lines
    assert any("b-s0" in line and "finished earlier, skipped" in line for line in lines), lines
