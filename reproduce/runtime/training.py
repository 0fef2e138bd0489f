"""Fit a LightningModule described by a composed ``train`` config, resumably.

Used by ``python -m reproduce.train`` and by the table runner (which trains the models a table needs
and caches them by config hash). A run directory holds:

- ``checkpoints/last.ckpt`` and ``checkpoints/best.ckpt`` (and ``best.ckpt.sha256``, its content
  hash, once an evaluation used it: see :mod:`reproduce.runtime.model_identity`);
- ``run.json``: the identity hash of the config, the W&B run id, and, once finished, the test
  metrics (written atomically, so its presence means the run completed).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from reproduce.atomic import atomic_write_json
from reproduce.errors import ConfigError
from reproduce.runtime.console import quiet_lightning
from reproduce.runtime.run_dir import build_logger, instantiate_node, job_config, read_run_file, train_identity
from reproduce.runtime.validation import validate_train


@dataclass
class TrainResult:
    run_dir: str
    best_checkpoint: str
    last_checkpoint: str
    metrics: dict[str, float]
    seconds: float
    reused: bool = False


def train_fix(cfg: DictConfig, run_dir: str) -> str:
    """How to get past a run directory that holds another run, for ``python -m reproduce.train``."""
    return (f"give this run another name (e.g. name={cfg.name}-2) or move the old run away "
            f"(`mv {run_dir} {run_dir}.old`) and re-run the same command")


def resolve_resume(cfg: DictConfig, run_dir: str, ident: str, fix: str | None = None) -> str | None:
    """The checkpoint to resume from, or None to start fresh; refuses to mix two configs (``fix``:
    what the refusal suggests, for callers other than ``python -m reproduce.train``)."""
    last = os.path.join(run_dir, "checkpoints", "last.ckpt")
    previous = read_run_file(os.path.join(run_dir, "run.json"))
    mode = cfg.get("resume", "auto")
    if mode not in ("auto", "never"):
        if not os.path.isfile(str(mode)):
            raise ConfigError(f"resume={mode!r} is not a file; use resume=auto, resume=never or a checkpoint path.")
        return str(mode)
    if not os.path.exists(last):
        return None
    fix = fix or train_fix(cfg, run_dir)
    if mode == "never":
        raise ConfigError(f"{run_dir} already holds checkpoints and resume=never: {fix} (nothing is deleted automatically).")
    if previous.get("identity") and previous["identity"] != ident:
        raise ConfigError(
            f"{run_dir} holds a run with a different configuration (identity {previous['identity']} "
            f"vs {ident} now): {fix}."
        )
    return last


def fit(cfg: DictConfig, validate: bool = True, fix: str | None = None) -> TrainResult:
    """Train (or resume) and test the module of ``cfg``; returns checkpoints and test metrics.

    ``validate=False``: the caller already ran :func:`validate_train` on ``cfg`` (the table runner
    validates every model before training the first); ``fix``: see :func:`resolve_resume`."""
    start = time.time()
    if validate:
        validate_train(cfg)  # types, ranges, names, paths and _target_s, before any work
    run_dir = str(cfg.paths.output_dir)
    ident = train_identity(cfg)
    previous = read_run_file(os.path.join(run_dir, "run.json"))
    ckpt_path = resolve_resume(cfg, run_dir, ident, fix)  # refuses a different config or resume=never
    if previous.get("finished") and ckpt_path and os.path.exists(previous.get("best_checkpoint", "")):
        # The same run already finished: nothing to redo (delete run.json to force a re-test).
        return TrainResult(run_dir, previous["best_checkpoint"], previous["last_checkpoint"],
                           previous.get("test_metrics", {}), 0.0, reused=True)
    with quiet_lightning(bool(cfg.get("verbose", False))):
        return _train(cfg, run_dir, ident, previous, ckpt_path, start)


def _train(cfg: DictConfig, run_dir: str, ident: str, previous: dict, ckpt_path: str | None, start: float) -> TrainResult:
    run_id = previous.get("wandb_id") or uuid.uuid4().hex[:12]
    L.seed_everything(cfg.get("seed", 0), workers=True, verbose=False)
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
             "test_metrics": metrics, "seconds_last_session": seconds, "finished": True,
             "torch_threads": torch.get_num_threads()},  # CPU training is reproducible for a fixed count only
        )
    if logger and hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
        logger.experiment.finish()
    return TrainResult(run_dir, best, last, metrics, seconds)
