"""Check a composed config before any work starts, one function per entry point.

``validate_train``, ``validate_evaluate`` and ``validate_table`` run at the top of the entry points
(and ``fit``; the table runner runs the first two on every model and cell config before it trains
anything): every interpolation must resolve, required keys must be present with the right types and
ranges, names must be registered (with close-match suggestions), counts must lie within what they
can mean and a configured batch must fit in memory (:mod:`reproduce.runtime.limits`), paths that
must exist do, run names stay inside ``outputs/``, and every ``_target_`` is allow-listed. The
checks of each config group live in :mod:`reproduce.runtime.config_checks`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from reproduce.checks import check_bool, check_choice, check_int, suggest
from reproduce.errors import ConfigError
from reproduce.lit.evaluation import SAMPLE_CHOICES, TARGET_CHOICES
from reproduce.models.checkpoint import model_spec_of, read_checkpoint
from reproduce.runtime.config_checks import (
    check_attributor, check_data, check_file, check_mapping, check_metrics, check_model, check_module,
    check_targets, check_trainer, require, resolved,
)
from reproduce.runtime.limits import check_memory, estimate_bytes, image_shape
from reproduce.runtime.paths import CONF_DIR, check_run_name, group_config
from reproduce.runtime.quick import quick_spec
from reproduce.runtime.table_spec import ROW_SAMPLING_KEYS, TableSpec, slugify

WANDB_MODES = ("offline", "online", "disabled")
_TRAIN_HINT = "train it first with `python -m reproduce.train experiment=<name>` or fix the path"


def check_common(plain: Mapping[str, Any]) -> None:
    check_int("seed", plain.get("seed", 0), minimum=0, example=0)
    name = require(plain, "name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"name must be a non-empty string, got {name!r} (e.g. name=my_run).")
    check_run_name("name", name)
    check_bool("verbose", plain.get("verbose", False))


def check_sampling(plain: Mapping[str, Any], where: str = "") -> None:
    """``eval_images``, ``per_class``, ``sampling_seed``, ``samples`` and ``target`` of an evaluation
    or of a table (``where``: ``table.`` or a row)."""
    check_int(f"{where}eval_images", plain.get("eval_images"), allow_none=True)
    check_int(f"{where}per_class", plain.get("per_class"), allow_none=True)
    check_int(f"{where}sampling_seed", plain.get("sampling_seed", 0), minimum=0, allow_none=True)
    if plain.get("samples") is not None:
        check_choice(f"{where}samples", plain["samples"], SAMPLE_CHOICES)
    if plain.get("target") is not None:
        check_choice(f"{where}target", plain["target"], TARGET_CHOICES)


def _check_memory(plain: Mapping[str, Any], batch_key: str, options: list, what: str) -> None:
    shape = image_shape(plain["data"])
    batch = plain["data"].get(batch_key.split(".")[-1]) or plain["data"].get("batch_size")
    if shape is None or not isinstance(batch, int):
        return
    warning = check_memory(estimate_bytes(shape, batch, options), batch_key, what)
    if warning:
        print(f"[reproduce] {warning}", flush=True)


def validate_train(cfg: DictConfig) -> dict[str, Any]:
    """Check a ``train`` config; returns it resolved as plain data."""
    plain = resolved(cfg, "train config")
    check_common(plain)
    check_bool("test", plain.get("test", True))
    check_targets(plain)
    check_data(require(plain, "data"))
    check_model(require(plain, "model"))
    check_module(require(plain, "module"))
    check_trainer(require(plain, "trainer"), training=True)
    resume = plain.get("resume", "auto")
    if resume not in ("auto", "never"):
        check_file("resume", resume, "use resume=auto, resume=never or the path of a checkpoint to resume from")
    _check_memory(plain, "data.batch_size", [], "a training batch")
    return plain


def model_overridden() -> bool:
    """Whether the command line set ``model`` (``model=...`` or ``model.<key>=...``) in this Hydra app."""
    if not HydraConfig.initialized():
        return False
    keys = [str(o).lstrip("+~").split("=", 1)[0] for o in HydraConfig.get().overrides.task]
    return any(k == "model" or k.startswith("model.") for k in keys)


def checkpoint_model_name(path: str) -> str | None:
    """The model a checkpoint holds: from its run's ``config.yaml`` when it is a training run's (a
    small file), else from the checkpoint's stored spec."""
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "config.yaml")
    if os.path.isfile(config):
        name = OmegaConf.select(OmegaConf.load(config), "model.name", default=None)
        if name:
            return str(name)
    return (model_spec_of(read_checkpoint(path)) or {}).get("name")


def check_model_agrees(plain: Mapping[str, Any]) -> None:
    """``model=`` on the command line is ignored when a checkpoint decides the model: refuse a mismatch."""
    checkpoint, wanted = plain.get("checkpoint"), (plain.get("model") or {}).get("name")
    if not (checkpoint and wanted and model_overridden()):
        return
    held = checkpoint_model_name(str(checkpoint))
    if held and held != wanted:
        raise ConfigError(
            f"model={wanted} disagrees with checkpoint={checkpoint}, which holds a {held!r}: the checkpoint "
            f"decides the model. Drop the model override, or set checkpoint=null to build {wanted!r} itself, "
            "or pick a checkpoint of that model with train_run=<its training run>."
        )


def validate_evaluate(cfg: DictConfig, models_exist: bool = True) -> dict[str, Any]:
    """Check an ``evaluate`` config; returns it resolved as plain data. ``models_exist=False``: the
    checkpoints are still to be trained (a table's cells, checked before its models are trained)."""
    plain = resolved(cfg, "evaluate config")
    check_run_name("train_run", plain.get("train_run", "none"))  # before `name`, which is built from it
    check_common(plain)
    check_sampling(plain)
    check_int("num_overlays", plain.get("num_overlays", 8), minimum=0)
    check_bool("recompute", plain.get("recompute", False))
    check_targets(plain)
    check_data(require(plain, "data"))
    shape = image_shape(plain["data"])
    references = check_mapping("reference_checkpoints", plain.get("reference_checkpoints"))
    check_attributor(require(plain, "attributor"), shape=shape)
    check_metrics(plain.get("metrics"), shape=shape, references=references)
    check_trainer(require(plain, "trainer"), training=False)
    checkpoint = plain.get("checkpoint")
    if not checkpoint:
        check_model(require(plain, "model"))
    elif models_exist:
        check_file("checkpoint", checkpoint, f"{_TRAIN_HINT} (train_run={plain.get('train_run')!r}), "
                   "or set checkpoint=null to build `model` (e.g. model=efficientnet_lite0_imagenet)")
        check_model_agrees(plain)
    if models_exist and plain.get("scorer_checkpoint"):
        check_file("scorer_checkpoint", plain["scorer_checkpoint"], _TRAIN_HINT)
    for name, path in references.items():
        if models_exist:
            check_file(f"reference_checkpoints.{name}", path, _TRAIN_HINT)
    options = [("attributor.options", plain["attributor"].get("options") or {}),
               *[(f"metrics.{k}", v) for k, v in (plain.get("metrics") or {}).items()]]
    _check_memory(plain, "data.eval_batch_size", options, "an evaluation batch")
    return plain


def check_table_rows(spec: TableSpec) -> None:
    """Every row's merged attributor options and metric options against the registries: a typo fails
    here, in seconds, not at the first cell after every model has trained."""
    for i, row in enumerate(spec.rows):
        where = f"table.rows[{i}] ({row['label']})"
        config = group_config("attributor", row["attributor"]) or {}
        options = {**(config.get("options") or {}), **(row.get("attributor_options") or {})}
        check_attributor({"name": config.get("name", row["attributor"]), "options": options}, where=f"{where}.attributor")
        metrics = {label: {**metric, **((row.get("metric_options") or {}).get(label) or {})}
                   for label, metric in spec.metrics.items() if label not in (row.get("skip_metrics") or [])}
        if metrics:
            check_metrics(metrics, where=f"{where}.metrics", references=spec.references)
        check_sampling({k: row.get(k) for k in ROW_SAMPLING_KEYS}, f"{where}.")


def check_recompute(value: Any, spec: TableSpec) -> None:
    """``recompute``: true/false, or a row label or cell key (or a list of them) to recompute."""
    if isinstance(value, bool):
        return
    names = {r["label"] for r in spec.rows} | {c.key for c in spec.cells()} | {slugify(r["label"]) for r in spec.rows}
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, str) or item not in names:
            raise ConfigError(f"recompute={item!r} is neither true/false nor a row label or cell key of table "
                              f"{spec.name!r}.{suggest(item, names)} Cells: {sorted(c.key for c in spec.cells())}.")


def validate_table(cfg: DictConfig) -> TableSpec:
    """Check a ``table`` config (the spec, every row's options) and return the spec, built once;
    ``quick=true``: the spec's QUICK preview (:func:`~reproduce.runtime.quick.quick_spec`), named
    ``<name>_quick`` so that its models, cells and results never mix with the full run's."""
    plain = resolved(cfg, "table config")
    shard = check_mapping("shard", plain.get("shard"))
    count, index = shard.get("count", 1), shard.get("index", 0)
    check_int("shard.count", count)
    check_int("shard.index", index, minimum=0)
    if index >= count:
        raise ConfigError(f"shard.index must be in [0, shard.count), got index={index} with count={count}.")
    check_targets(plain)
    table = check_mapping("table", require(plain, "table"), allow_none=False)
    seeds = table.get("seeds") or [0]
    if not isinstance(seeds, list):
        raise ConfigError(f"table.seeds must be a list of seeds such as [0, 1, 2], got {seeds!r}.")
    for i, seed in enumerate(seeds):
        check_int(f"table.seeds[{i}]", seed, minimum=0)
    check_sampling(table, "table.")
    if check_bool("quick", plain.get("quick", False)):
        table = quick_spec(table)
    spec = TableSpec.from_config(table)
    check_table_rows(spec)
    loggers = sorted(f[:-5] for f in os.listdir(os.path.join(CONF_DIR, "logger")) if f.endswith(".yaml"))
    check_choice("run_logger", plain.get("run_logger", "none"), loggers)
    check_choice("wandb_mode", plain.get("wandb_mode", "offline"), WANDB_MODES)
    for key in ("assemble", "assemble_only", "progress_bar", "smoke", "verbose"):
        if key in plain:
            check_bool(key, plain[key])
    check_recompute(plain.get("recompute", False), spec)
    return spec
