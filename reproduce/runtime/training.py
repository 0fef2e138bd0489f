"""Fit a LightningModule described by a composed ``train`` config, resumably.

Used by ``python -m reproduce.train`` and by the table runner (which trains the models a table needs
and caches them by config hash). A run directory holds:

- ``checkpoints/last.ckpt`` and ``checkpoints/best.ckpt``;
- ``run.json``: the identity hash of the config, the W&B run id, and, once finished, the test
  metrics (written atomically, so its presence means the run completed).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reproduce.errors import ConfigError
from reproduce.atomic import atomic_write_json
from reproduce.runtime.config_hash import config_hash, drop_keys, to_plain

# Keys that do not change what is learned: where things are written, how they are logged, on
# how many devices. Everything else is part of the run's identity.
VOLATILE_KEYS = (
    "paths", "logger", "hydra", "name", "tags", "resume", "test", "task",
    "trainer.devices", "trainer.accelerator", "trainer.strategy", "trainer.num_nodes",
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "data.num_workers", "data.eval_batch_size", "data.options.root",
)


@dataclass
class TrainResult:
    run_dir: str
    best_checkpoint: str
    last_checkpoint: str
    metrics: dict[str, float]
    seconds: float


def job_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, without Hydra's own node."""
    return to_plain(OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]))


def identity_hash(cfg: DictConfig) -> str:
    return config_hash(drop_keys(job_config(cfg), VOLATILE_KEYS))


def _read_run_file(run_dir: str) -> dict[str, Any]:
    path = os.path.join(run_dir, "run.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is corrupt ({err}); delete it to restart bookkeeping of this run.") from err


def resolve_resume(cfg: DictConfig, run_dir: str, ident: str) -> str | None:
    """The checkpoint to resume from, or None to start fresh; refuses to mix two configs."""
    last = os.path.join(run_dir, "checkpoints", "last.ckpt")
    previous = _read_run_file(run_dir)
    mode = cfg.get("resume", "auto")
    if mode not in ("auto", "never"):
        if not os.path.isfile(str(mode)):
            raise ConfigError(f"resume={mode!r} is not a file; use auto, never or a checkpoint path.")
        return str(mode)
    if not os.path.exists(last):
        return None
    if mode == "never":
        raise ConfigError(
            f"{run_dir} already holds checkpoints and resume=never: pick another name=... or "
            "move that directory away (nothing is deleted automatically)."
        )
    if previous.get("identity") and previous["identity"] != ident:
        raise ConfigError(
            f"{run_dir} holds a run with a different configuration (identity {previous['identity']} "
            f"vs {ident} now). Give this run another name=... , or resume=never in a fresh directory."
        )
    return last


def build_logger(cfg: DictConfig, run_dir: str, run_id: str):
    from hydra.utils import instantiate

    from reproduce.runtime.validation import check_targets

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
    :data:`reproduce.runtime.validation.ALLOWED_TARGET_PREFIXES` (a config must not run arbitrary code)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from reproduce.errors import ReproduceError
    from reproduce.runtime.validation import check_targets

    check_targets(node, node._get_full_key(None) if isinstance(node, DictConfig) else "")
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, ReproduceError):
            raise err.__cause__ from None
        raise


def fit(cfg: DictConfig) -> TrainResult:
    """Train (or resume) and test the module of ``cfg``; returns checkpoints and test metrics."""
    from reproduce.runtime.validation import validate_train

    start = time.time()
    validate_train(cfg)  # types, ranges, names, paths and _target_s, before any work
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    seed = cfg.get("seed", 0)
    run_dir = str(cfg.paths.output_dir)
    ident = identity_hash(cfg)
    previous = _read_run_file(run_dir)
    ckpt_path = resolve_resume(cfg, run_dir, ident)  # refuses a different config or resume=never
    if previous.get("finished") and ckpt_path and os.path.exists(previous.get("best_checkpoint", "")):
        # The same run already finished: nothing to redo (delete run.json to force a re-test).
        return TrainResult(run_dir, previous["best_checkpoint"], previous["last_checkpoint"],
                           previous.get("test_metrics", {}), 0.0)
    run_id = previous.get("wandb_id") or uuid.uuid4().hex[:12]

    L.seed_everything(seed, workers=True)
    module = instantiate_node(cfg.module)  # builds the model: bad names fail here
    datamodule = instantiate_node(cfg.data)
    datamodule.set_data_config(module.data_config)
    datamodule.setup("fit")  # generate / validate the data before the trainer starts

    os.makedirs(run_dir, exist_ok=True)
    atomic_write_json(os.path.join(run_dir, "run.json"), {**previous, "identity": ident, "wandb_id": run_id})
    OmegaConf.save(OmegaConf.create(job_config(cfg)), os.path.join(run_dir, "config.yaml"))

    monitor = getattr(module, "monitor", "val/acc")
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    best_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="max",
                              save_top_k=1, enable_version_counter=False)
    # Lightning 2.6 only refreshes save_last when a top-k checkpoint is saved; a monitor-less
    # callback keeps the latest epoch instead, which is what resuming needs.
    last_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False)
    logger = build_logger(cfg, run_dir, run_id)
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=logger, callbacks=[best_cb, last_cb], default_root_dir=run_dir,
    )
    if logger:
        logger.log_hyperparams({"config": job_config(cfg), "identity": ident})
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    best = os.path.join(ckpt_dir, "best.ckpt")
    last = os.path.join(ckpt_dir, "last.ckpt")
    metrics: dict[str, float] = {}
    if cfg.get("test", True):
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best if os.path.exists(best) else None,
                               verbose=False, weights_only=True)
        metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    seconds = time.time() - start
    if trainer.is_global_zero:
        atomic_write_json(
            os.path.join(run_dir, "run.json"),
            {"identity": ident, "wandb_id": run_id, "best_checkpoint": best, "last_checkpoint": last,
             "test_metrics": metrics, "seconds_last_session": seconds, "finished": True},
        )
    if logger and hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
        logger.experiment.finish()
    return TrainResult(run_dir, best, last, metrics, seconds)
