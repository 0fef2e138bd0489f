"""Evaluate one attributor on one model and dataset: the computation behind every table cell.

:func:`run_cell` loads the explained model (a checkpoint from ``python -m reproduce.train`` or a
``model`` config such as the pretrained EfficientNet-Lite0), the scorer and reference models, builds
the ``AttributionEvaluation`` module and the data module, picks the test images
(:mod:`reproduce.runtime.sampling`), runs Lightning's test loop and returns the result that was
written atomically to ``<output_dir>/result.json``.

A result's identity is the config's identity (without paths, loggers and devices) plus the identity
of every model file it used (its sha256 and its training run's identity, see
:mod:`reproduce.runtime.model_identity`): a finished result with the same identity is reused, and
retraining any of its models, in place or elsewhere, makes it stale. ``recompute=true`` forces it.

Interruption: an evaluation keeps no partial state on disk. ``result.json`` is written once, at the
end, by an atomic rename, so a run killed at any point leaves either no result file or a complete
one; re-running the same command recomputes the cell from scratch with the same seed and gives the
same numbers (apart from the measured wall time, ``cost/seconds_per_image``). Its files beside it,
``per_image.npz`` (the per-image states that intervals are computed from, :mod:`reproduce.lit.cell_states`)
and ``maps.npz`` (the maps of the overlay images), are written just before it, atomically too; each
result names the sha256 of its ``per_image.npz``, so a result never reads the file of a later,
interrupted run of the same cell.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch import nn

from reproduce.attributors import get_class
from reproduce.attributors.memo import AttributionMemo
from reproduce.errors import ConfigError, DataError
from reproduce.lit.evaluation import AttributionEvaluation
from reproduce.models import ModelAdapter, create_model
from reproduce.models.loading import load_any
from reproduce.runtime.config_hash import config_hash, drop_keys
from reproduce.runtime.console import quiet_lightning
from reproduce.runtime.model_identity import model_identity, models_in, short, without_model_paths
from reproduce.runtime.run_dir import EVAL_VOLATILE_KEYS, build_logger, instantiate_node, job_config, read_run_file
from reproduce.runtime.sampling import Selection, select_test_images


@dataclass
class ResultIdentity:
    identity: str                 # what a result file is keyed by: config and models together
    config: str                   # the config part alone
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # config key -> {path, sha256, ...}

    def describe(self) -> str:
        models = ", ".join(f"{key} {short(m)}" for key, m in self.models.items())
        return f"config identity {self.config}" + (f" and models {models}" if models else "")


@dataclass
class CellRun:
    result: dict[str, Any]
    reused: bool
    identity: ResultIdentity
    seconds: float
    stale_reason: str | None = None  # why a result on disk was not reused ("a model changed (...)")

    def describe(self, path: str) -> str:
        if self.reused:
            return f"{path} is up to date (same {self.identity.describe()}): reused, not recomputed (recompute=true forces it)"
        return f"recomputed {path}: {self.stale_reason}" if self.stale_reason else f"wrote {path}"


@dataclass
class Models:
    explained: nn.Module
    scorer: nn.Module | None
    references: dict[str, nn.Module]


def result_identity(cfg: DictConfig) -> ResultIdentity:
    tree = drop_keys(job_config(cfg), EVAL_VOLATILE_KEYS)
    models = {key: {"path": path, **model_identity(path)} for key, path in models_in(tree).items()}
    config = config_hash(without_model_paths(tree))
    keyed = {key: {k: v for k, v in m.items() if k != "path"} for key, m in models.items()}
    return ResultIdentity(config_hash({"config": config, "models": keyed}), config, models)


def result_path_of(cfg: DictConfig) -> str:
    return os.path.join(str(cfg.paths.output_dir), "result.json")


def previous_result(cfg: DictConfig) -> dict[str, Any]:
    """The result file on disk (``{}`` when absent or unreadable: it is then recomputed)."""
    try:
        return read_run_file(result_path_of(cfg))
    except ConfigError:
        return {}


def _why_stale(previous: dict[str, Any], ident: ResultIdentity) -> str:
    cell = previous.get("cell", {})
    if cell.get("config_identity") not in (None, ident.config):
        return f"the config changed (identity {cell['config_identity']} -> {ident.config})"
    before = cell.get("models", {})
    changed = [f"{key} {short(before.get(key, {})) or 'none'} -> {short(m)}" for key, m in ident.models.items()
               if before.get(key, {}).get("sha256") != m.get("sha256")]
    return f"a model changed ({', '.join(changed)})" if changed else "its identity changed (a file of an older version)"


def run_cell(cfg: DictConfig, callbacks: list | None = None, memo: AttributionMemo | None = None) -> CellRun:
    """Evaluate the cell of ``cfg`` or reuse its finished result; ``callbacks``: extra Lightning
    callbacks for the test loop (e.g. the memory benchmark's RSS probe); ``memo``: work the reference
    models' attributors share with other cells of the same run (see :class:`AttributionMemo`)."""
    start = time.time()
    ident = result_identity(cfg)
    previous = previous_result(cfg)
    same = previous.get("cell", {}).get("identity") == ident.identity
    if same and not cfg.get("recompute", False):
        return CellRun(previous, True, ident, 0.0)
    reason = ("recompute=true" if same else _why_stale(previous, ident)) if previous else None
    L.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)
    models = load_models(cfg)
    module = build_module(cfg, models, ident, memo)
    datamodule = build_data(cfg, models.explained, module)
    selection = select_images(cfg, models.explained, datamodule)
    module.set_selection(selection.record(), selection.accuracy, selection.visited)
    result = run_test(cfg, module, datamodule, ident, callbacks)
    return CellRun(result, False, ident, time.time() - start, reason)


def evaluate_cell(cfg: DictConfig, callbacks: list | None = None) -> dict[str, Any]:
    """The result of the cell of ``cfg`` (computed, or read back when up to date), saying which."""
    run = run_cell(cfg, callbacks)
    print(f"[reproduce.evaluate] {run.describe(result_path_of(cfg))}", flush=True)
    return run.result


def _load(path: str, what: str) -> nn.Module:
    if not os.path.isfile(path):
        raise DataError(f"{what} checkpoint {path!r} does not exist; train it first or fix the path.")
    return load_any(path).eval()


def load_models(cfg: DictConfig) -> Models:
    """The explained model (``checkpoint``, or ``create_model(**model)`` when it is null), the scorer
    and the reference models; each checkpoint file is read once."""
    checkpoint = cfg.get("checkpoint")
    if checkpoint:
        if not os.path.isfile(str(checkpoint)):
            raise DataError(
                f"Checkpoint {checkpoint!r} does not exist. Train the model first, e.g. "
                f"`python -m reproduce.train experiment={cfg.get('train_run', '<experiment>')}`, or set checkpoint=<path>."
            )
        explained = load_any(str(checkpoint)).eval()
    else:
        explained = create_model(**OmegaConf.to_container(cfg.model, resolve=True)).eval()
    scorer = _load(str(cfg.scorer_checkpoint), "Scorer") if cfg.get("scorer_checkpoint") else None
    references = {name: _load(str(path), f"Reference {name!r}")
                  for name, path in (cfg.get("reference_checkpoints") or {}).items()}
    return Models(explained, scorer, references)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def build_module(cfg: DictConfig, models: Models, ident: ResultIdentity,
                 memo: AttributionMemo | None = None) -> AttributionEvaluation:
    metrics = _plain(cfg.metrics) or {}
    if not metrics:
        raise ConfigError("No metrics selected: pass e.g. metrics=[pxap,insertion].")
    cell = {
        "identity": ident.identity,
        "config_identity": ident.config,
        "models": ident.models,
        "name": str(cfg.name),
        "dataset": str(cfg.data.name),
        "model": str(cfg.get("checkpoint") or cfg.model.name),
        "seed": int(cfg.get("seed", 0)),
        **(_plain(cfg.cell) if cfg.get("cell") else {}),
    }
    return AttributionEvaluation(
        model=models.explained,
        attributor=str(cfg.attributor.name),
        attributor_options=_plain(cfg.attributor.get("options")) or {},
        metrics=metrics,
        scorer=models.scorer,
        reference_models=models.references,
        target=str(cfg.target),
        samples=str(cfg.samples),
        result_path=result_path_of(cfg),
        cell=cell,
        num_overlays=int(cfg.get("num_overlays", 8)),
        reference_memo=memo,
    )


def _available(datamodule, attributor_has_steps: bool) -> set[str]:
    test = datamodule.dataset("test")
    available = {"explain", "extra:cost_seconds_per_image", "extra:cost_forward_per_image", "extra:cost_backward_per_image"}
    if getattr(test, "has_masks", False):
        available.add("masks")
    if datamodule.bg_shift:
        available.add("extra:images_bg_shift")
    available |= {f"extra:{key}" for key in datamodule.provided_extras()}  # dataset extras, paired variants
    if getattr(test, "has_parts", False):
        available.add("extra:parts")
    if attributor_has_steps:
        available |= {"extra:step_area", "extra:step_score"}
    return available


def build_data(cfg: DictConfig, explained: nn.Module, module: AttributionEvaluation):
    """The data module, normalised for the explained model, checked against what the metrics need."""
    datamodule = instantiate_node(cfg.data)
    datamodule.set_data_config(ModelAdapter(explained).data_config)
    if "extra:images_bg_shift" in module.requirements:
        datamodule.enable_bg_shift()
    datamodule.request_extras({r[len("extra:"):] for r in module.requirements if r.startswith("extra:")})
    datamodule.setup("test")
    steps = getattr(get_class(str(cfg.attributor.name)), "provides_steps", False)
    module.check_available(_available(datamodule, steps), source=f"the {cfg.data.name!r} test split")
    return datamodule


def select_images(cfg: DictConfig, explained: nn.Module, datamodule) -> Selection:
    """Pick the test images (``eval_images``, ``samples``, ``per_class``, ``sampling_seed``) and restrict
    the data module to them."""
    selection = select_test_images(
        explained, datamodule.dataset("test"), samples=str(cfg.samples), eval_images=cfg.get("eval_images"),
        per_class=cfg.get("per_class"), seed=int(cfg.get("sampling_seed", 0)),
        batch_size=int(datamodule.eval_batch_size), num_workers=int(datamodule.num_workers),
    )
    if selection.indices is not None:
        datamodule.restrict_test(selection.indices)
    return selection


def run_test(cfg: DictConfig, module: AttributionEvaluation, datamodule, ident: ResultIdentity,
             callbacks: list | None) -> dict[str, Any]:
    """Lightning's test loop over the selected images; writes config.yaml, result.json and figures."""
    out_dir = str(cfg.paths.output_dir)
    os.makedirs(out_dir, exist_ok=True)
    OmegaConf.save(OmegaConf.create(job_config(cfg)), os.path.join(out_dir, "config.yaml"))
    logger = build_logger(cfg, out_dir, run_id=f"eval-{ident.identity}")
    settings = {**OmegaConf.to_container(cfg.trainer, resolve=True), "enable_model_summary": False}
    settings.pop("max_epochs", None)  # a test loop has no epochs (the trainer group is shared with training)
    with quiet_lightning(bool(cfg.get("verbose", False))):
        trainer = L.Trainer(**settings, logger=logger, enable_checkpointing=False, callbacks=list(callbacks or []))
        trainer.test(module, datamodule=datamodule, verbose=False)
    # Only finish a W&B run this process started: under ddp_spawn it lives in the rank-0 child, and
    # touching ``logger.experiment`` here would open a second, empty run.
    if logger and getattr(logger, "_experiment", None) is not None and hasattr(logger.experiment, "finish"):
        logger.experiment.finish()
    result = module.result
    if result is None and trainer.is_global_zero:
        result = previous_result(cfg) or None  # ddp_spawn: the ranks ran in child processes; rank 0 wrote it
    if result is None:
        raise ConfigError("The evaluation produced no result (was the test set empty?).")
    return result
