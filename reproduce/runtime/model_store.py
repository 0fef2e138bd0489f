"""Models shared across tables: a table that needs a model another table already trained with the
same training config (same identity: data, recipe, seed; see :func:`reproduce.runtime.run_dir.train_identity`)
copies that finished run instead of training it again.

Each table keeps its own run directory (``outputs/tables/<table>/models/<run>``), so deleting or
retraining one table's models never touches another's; the copy's ``run.json`` says where it came
from (``copied_from``). Only finished runs are copied (``run.json`` is written last, atomically), and
the checkpoints are copied through a temporary file, so a killed copy leaves nothing a later run trusts.
A run moved aside (renamed, e.g. ``<run>.old``, or its table folder renamed) is not a source: moving a
run away is how a user asks for it to be trained again.
"""

from __future__ import annotations

import glob
import os
import re

from omegaconf import DictConfig, OmegaConf

from reproduce.atomic import atomic_write_bytes, atomic_write_json
from reproduce.runtime.run_dir import job_config, read_run_file

CHECKPOINTS = ("best.ckpt", "last.ckpt")


def _canonical(candidate: str) -> bool:
    """Whether ``candidate`` is a table's own model directory, ``tables/<t>/models/<t>-<role>-s<seed>``:
    a run or table moved aside (``mv <run> <run>.old``, the way to ask for a retraining) is never copied."""
    table = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(candidate))))
    return re.fullmatch(rf"{re.escape(table)}-.+-s\d+", os.path.basename(candidate)) is not None


def finished_twin(models_glob: str, identity: str, run_dir: str) -> str | None:
    """A finished run directory matching ``models_glob`` (``.../tables/*/models/*``, canonical names
    only), other than ``run_dir``, whose training identity is ``identity`` and whose checkpoints
    exist; else None."""
    own = os.path.abspath(run_dir)
    for candidate in sorted(glob.glob(models_glob)):
        if os.path.abspath(candidate) == own or not _canonical(candidate):
            continue
        try:
            run = read_run_file(os.path.join(candidate, "run.json"))
        except ValueError:  # a corrupt run.json is that table's problem (its own run reports it)
            continue
        ckpts = [os.path.join(candidate, "checkpoints", name) for name in CHECKPOINTS]
        if run.get("finished") and run.get("identity") == identity and all(os.path.isfile(c) for c in ckpts):
            return candidate
    return None


def is_empty_run(run_dir: str) -> bool:
    """Whether ``run_dir`` holds no run yet (no ``run.json``, no checkpoint): only such a directory is
    filled by a copy; a finished, interrupted or conflicting run there is left to ``fit``."""
    return not os.path.exists(os.path.join(run_dir, "run.json")) and not glob.glob(os.path.join(run_dir, "checkpoints", "*"))


def copy_run(donor: str, run_dir: str, cfg: DictConfig) -> dict:
    """Copy the finished run ``donor`` into ``run_dir`` (with ``cfg``, this run's own config, as its
    ``config.yaml``); returns the copy's ``run.json``."""
    run = read_run_file(os.path.join(donor, "run.json"))
    for name in CHECKPOINTS:  # through a temporary file: a killed copy leaves no half checkpoint
        with open(os.path.join(donor, "checkpoints", name), "rb") as f:
            atomic_write_bytes(os.path.join(run_dir, "checkpoints", name), f.read())
    OmegaConf.save(OmegaConf.create(job_config(cfg)), os.path.join(run_dir, "config.yaml"))
    copied = {**run, "best_checkpoint": os.path.join(run_dir, "checkpoints", "best.ckpt"),
              "last_checkpoint": os.path.join(run_dir, "checkpoints", "last.ckpt"),
              "copied_from": os.path.abspath(donor), "seconds_last_session": 0.0}
    atomic_write_json(os.path.join(run_dir, "run.json"), copied)  # last: its presence means the copy is whole
    return copied
