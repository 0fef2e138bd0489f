"""Run bookkeeping shared by training and evaluation: what a run's config is, which of its keys make
its identity, its run files, its logger, and the guarded ``instantiate``.

A run directory (``outputs/<task>/<name>``) holds ``config.yaml`` (the resolved config), a JSON file
(``run.json`` for training, ``result.json`` for an evaluation) and, with W&B, ``wandb/offline-run-*``.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from reproduce.errors import ConfigError, ReproduceError
from reproduce.runtime.config_checks import check_targets
from reproduce.runtime.config_hash import config_hash, drop_keys, to_plain

# Keys that change neither what is learned nor what is measured: where things are written, how they
# are logged and shown, on how many devices. Everything else is part of a run's identity.
_COMMON_VOLATILE = (
    "paths", "logger", "hydra", "name", "tags", "task", "verbose",
    "trainer.devices", "trainer.accelerator", "trainer.strategy", "trainer.num_nodes",
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "data.num_workers", "data.eval_batch_size", "data.options.root",
)
TRAIN_VOLATILE_KEYS = (*_COMMON_VOLATILE, "resume", "test")
# An evaluation's models enter its identity by content (runtime/model_identity.py), not by path:
# ``train_run`` and the checkpoint paths are replaced there, ``recompute`` only forces a run.
EVAL_VOLATILE_KEYS = (*_COMMON_VOLATILE, "num_overlays", "recompute", "train_run",
                      "trainer.max_epochs", "trainer.num_sanity_val_steps")

def job_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, without Hydra's own node."""
    return to_plain(OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]))


def config_identity(cfg: DictConfig | dict[str, Any], volatile: tuple[str, ...]) -> str:
    """Hash of the config without its ``volatile`` keys."""
    plain = job_config(cfg) if isinstance(cfg, DictConfig) else cfg
    return config_hash(drop_keys(plain, volatile))


def train_identity(cfg: DictConfig) -> str:
    return config_identity(cfg, TRAIN_VOLATILE_KEYS)


def read_run_file(path: str) -> dict[str, Any]:
    """A run's JSON file, ``{}`` when absent; a corrupt file is an error naming the fix."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is corrupt ({err}); delete it (`rm {path}`) and re-run the same command.") from err


def wandb_run_folders(run_dir: str) -> list[str]:
    """The offline W&B run folders under ``run_dir`` (newest last)."""
    return sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*")), key=os.path.getmtime)


def build_logger(cfg: DictConfig, run_dir: str, run_id: str):
    """The run's Lightning logger (``False`` for ``logger=none``); W&B resumes the run ``run_id``."""
    node = cfg.get("logger")
    if not node or "_target_" not in node:
        return False
    check_targets(node, "logger")
    extra = {}
    if node._target_.endswith("WandbLogger"):
        os.environ.setdefault("WANDB_SILENT", "true")
        extra = {"id": run_id, "resume": "allow"}
    return instantiate(node, **extra)


def instantiate_node(node: DictConfig):
    """``hydra.utils.instantiate`` that lets this package's own errors through unwrapped: Hydra wraps
    whatever a target raises in an InstantiationException, which would hide a ConfigError's type.
    Every ``_target_`` in ``node`` must lie under the allow-list of
    :data:`reproduce.runtime.config_checks.ALLOWED_TARGET_PREFIXES` (a config must not run arbitrary code)."""
    check_targets(node, node._get_full_key(None) if isinstance(node, DictConfig) else "")
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, ReproduceError):
            raise err.__cause__ from None
        raise
