"""Evaluate one attributor on one model and dataset: the computation behind every table cell.

``evaluate_cell(cfg)`` composes the explained model (a checkpoint from ``python -m reproduce.train``
or a ``model`` config such as the pretrained EfficientNet-Lite0), the data module, the
``AttributionEvaluation`` module and a Lightning trainer, runs the test loop, and returns the result
that was written atomically to ``<output_dir>/result.json``. A finished cell with the same identity
is not recomputed.

Interruption: an evaluation keeps no partial state on disk. ``result.json`` is written once, at the
end, by an atomic rename, so a run killed at any point leaves either no result file or a complete
one; re-running the same command recomputes the cell from scratch with the same seed and gives the
same numbers (apart from the measured wall time, ``cost/seconds_per_image``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reproduce.errors import ConfigError, DataError
from reproduce.runtime.config_hash import config_hash, drop_keys
from reproduce.runtime.training import build_logger, job_config

VOLATILE_KEYS = (
    "paths", "logger", "hydra", "name", "tags", "task", "num_overlays",
    "trainer.devices", "trainer.accelerator", "trainer.strategy", "trainer.num_nodes",
    "trainer.enable_progress_bar", "trainer.max_epochs", "trainer.log_every_n_steps",
    "trainer.enable_model_summary", "trainer.num_sanity_val_steps", "data.num_workers", "data.eval_batch_size", "data.options.root",
)


def cell_identity(cfg: DictConfig) -> str:
    return config_hash(drop_keys(job_config(cfg), VOLATILE_KEYS))


def load_explained_model(cfg: DictConfig):
    """The model the attributor explains: from ``checkpoint`` when set, else ``create_model(**model)``."""
    from reproduce.models import create_model
    from reproduce.models.loading import load_any

    checkpoint = cfg.get("checkpoint")
    if checkpoint:
        if not os.path.isfile(str(checkpoint)):
            raise DataError(
                f"Checkpoint {checkpoint!r} does not exist. Train the model first, e.g. "
                f"`python -m reproduce.train experiment={cfg.get('train_run', '<experiment>')}`, or set checkpoint=<path>."
            )
        return load_any(str(checkpoint)).eval()
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    return create_model(**model_cfg).eval()


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


def result_path_of(cfg: DictConfig) -> str:
    return os.path.join(str(cfg.paths.output_dir), "result.json")


def finished_result(cfg: DictConfig) -> dict[str, Any] | None:
    """The result already on disk for this cell (same identity), or None when it must be computed."""
    path = result_path_of(cfg)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            previous = json.load(f)
    except json.JSONDecodeError:
        return None  # a corrupt file is recomputed (results are written atomically, so this is rare)
    return previous if previous.get("cell", {}).get("identity") == cell_identity(cfg) else None


def evaluate_cell(cfg: DictConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Evaluate the cell of ``cfg`` (or read its finished result); ``callbacks``: extra Lightning
    callbacks for the test loop (e.g. the memory benchmark's RSS probe)."""
    import lightning as L

    from reproduce.attributors import get_class
    from reproduce.lit.evaluation import AttributionEvaluation
    from reproduce.models import ModelAdapter
    from reproduce.runtime.training import instantiate_node

    out_dir = str(cfg.paths.output_dir)
    result_path = result_path_of(cfg)
    ident = cell_identity(cfg)
    previous = finished_result(cfg)
    if previous is not None:
        print(f"[reproduce.evaluate] {result_path} is up to date (identity {ident}): not recomputed", flush=True)
        return previous

    L.seed_everything(int(cfg.get("seed", 0)), workers=True)
    metrics = OmegaConf.to_container(cfg.metrics, resolve=True) or {}
    if not metrics:
        raise ConfigError("No metrics selected: pass e.g. metrics=[pxap,insertion].")
    attributor_cls = get_class(cfg.attributor.name)

    model = load_explained_model(cfg)
    scorer = _load(str(cfg.scorer_checkpoint), "Scorer") if cfg.get("scorer_checkpoint") else None
    references = {name: _load(path, f"Reference {name!r}") for name, path in (cfg.get("reference_checkpoints") or {}).items()}
    cell = {
        "identity": ident,
        "name": str(cfg.name),
        "dataset": str(cfg.data.name),
        "model": str(cfg.get("checkpoint") or cfg.model.name),
        "seed": int(cfg.get("seed", 0)),
        **(OmegaConf.to_container(cfg.cell, resolve=True) if cfg.get("cell") else {}),
    }
    module = AttributionEvaluation(
        model=model,
        attributor=str(cfg.attributor.name),
        attributor_options=OmegaConf.to_container(cfg.attributor.options, resolve=True) if cfg.attributor.get("options") else {},
        metrics=metrics,
        scorer=scorer,
        reference_models=references,
        target=str(cfg.target),
        samples=str(cfg.samples),
        result_path=result_path,
        cell=cell,
        num_overlays=int(cfg.get("num_overlays", 8)),
    )

    datamodule = instantiate_node(cfg.data)
    datamodule.set_data_config(ModelAdapter(model).data_config)
    if "extra:images_bg_shift" in module.requirements:
        datamodule.enable_bg_shift()
    datamodule.request_extras({r[len("extra:"):] for r in module.requirements if r.startswith("extra:")})
    datamodule.setup("test")
    module.check_available(_available(datamodule, getattr(attributor_cls, "provides_steps", False)),
                           source=f"the {cfg.data.name!r} test split")
    os.makedirs(out_dir, exist_ok=True)
    OmegaConf.save(OmegaConf.create(job_config(cfg)), os.path.join(out_dir, "config.yaml"))
    logger = build_logger(cfg, out_dir, run_id=f"eval-{ident}")
    settings = {**OmegaConf.to_container(cfg.trainer, resolve=True), "enable_model_summary": False}
    settings.pop("max_epochs", None)  # a test loop has no epochs (the trainer group is shared with training)
    trainer = L.Trainer(**settings, logger=logger, enable_checkpointing=False, callbacks=list(callbacks or []))
    trainer.test(module, datamodule=datamodule, verbose=False)
    # Only finish a W&B run this process started: under ddp_spawn it lives in the rank-0 child, and
    # touching ``logger.experiment`` here would open a second, empty run.
    if logger and getattr(logger, "_experiment", None) is not None and hasattr(logger.experiment, "finish"):
        logger.experiment.finish()
    result = module.result
    if result is None and trainer.is_global_zero:
        # ddp_spawn: the ranks ran in child processes; rank 0 wrote the result file.
        result = finished_result(cfg)
    if result is None:
        raise ConfigError("The evaluation produced no result (was the test set empty?).")
    return result


def _load(path: str, what: str):
    from reproduce.models.loading import load_any

    if not os.path.isfile(path):
        raise DataError(f"{what} checkpoint {path!r} does not exist; train it first or fix the path.")
    return load_any(path).eval()

