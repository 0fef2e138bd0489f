"""Checks of the config groups (data, model, trainer, module, attributor, metrics) and the
``_target_`` guard, used by the per-entry validation in :mod:`reproduce.runtime.validation`.

Every failure is a :class:`~reproduce.errors.ConfigError` (or ``DataError`` for missing files) whose
message names the key and the fix. Every ``_target_`` must be a class under
:data:`ALLOWED_TARGET_PREFIXES` (see :func:`check_target`: a config is data, it must not be able to
call ``os.system``).
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Iterable, Mapping

import timm
import torch
from hydra._internal.utils import _locate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reproduce.attributors.registry import ATTRIBUTORS
from reproduce.checks import check_choice, check_int, check_number, suggest
from reproduce.data.on_disk import OnDiskDataset, require_root
from reproduce.data.registry import DATASETS
from reproduce.errors import ConfigError, DataError
from reproduce.metrics.registry import METRICS
from reproduce.models.factory import available_models
from reproduce.runtime.limits import check_counts

ALLOWED_TARGET_PREFIXES = (
    "reproduce.",
    "lightning.",
    "pytorch_lightning.",
    "torch.optim.",
    "torchmetrics.",
    "timm.",
)

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu", "xla")


# --- small typed checks (the generic ones live in reproduce.checks) -------------------------
def check_mapping(key: str, value: Any, *, allow_none: bool = True) -> Mapping[str, Any]:
    if value is None and allow_none:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping {{key: value}}, got {value!r}.")
    return value


def require(cfg: Mapping[str, Any], key: str, where: str = "") -> Any:
    """``cfg[key]``, or a ConfigError naming the missing key."""
    if key not in cfg:
        full = f"{where}.{key}" if where else key
        raise ConfigError(f"The config has no `{full}`; add it (e.g. +{full}=...) or restore the default config files.")
    return cfg[key]


def check_file(key: str, path: Any, fix: str) -> None:
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(os.fspath(path)):
        raise DataError(f"{key}={path!r} does not exist: {fix}.")


# --- resolution and the _target_ guard ----------------------------------------------------------
def resolved(cfg: DictConfig | ListConfig, where: str = "the config") -> Any:
    """``cfg`` as plain data with every interpolation resolved (Hydra's own node left out)."""
    try:
        if isinstance(cfg, DictConfig) and "hydra" in cfg:
            cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        first = str(err).splitlines()[0]
        raise ConfigError(
            f"{where}: `{key}` cannot be resolved ({type(err).__name__}: {first}). Set it on the "
            f"command line (e.g. {key}=...) or fix the interpolation in conf/."
        ) from None


def check_target(target: Any, where: str = "_target_") -> None:
    """Refuse a ``_target_`` outside :data:`ALLOWED_TARGET_PREFIXES` before Hydra imports or calls it."""
    allowed = ", ".join(ALLOWED_TARGET_PREFIXES)
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{where} must be a dotted class path such as reproduce.lit.classifier.ClassifierModule, got {target!r}.")
    parts = target.split(".")
    if not target.startswith(ALLOWED_TARGET_PREFIXES) or any(not p.isidentifier() or p.startswith("__") for p in parts):
        raise ConfigError(
            f"{where}={target!r} is not allowed: configs may only instantiate classes under {allowed} "
            "(instantiating anything else could run arbitrary code). Use a class of this package."
        )
    try:
        obj = _locate(target)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"{where}={target!r} cannot be imported ({str(err).splitlines()[0]}); check the spelling.") from None
    module = getattr(obj, "__module__", None) or ""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)) or not f"{module}.".startswith(ALLOWED_TARGET_PREFIXES):
        shown = f"{module}.{getattr(obj, '__qualname__', type(obj).__name__)}"
        raise ConfigError(
            f"{where}={target!r} resolves to {shown}, which is not a class or function under {allowed}; "
            "configs may only instantiate this package's classes and the libraries above."
        )


def check_targets(node: Any, where: str = "") -> None:
    """:func:`check_target` on every ``_target_`` anywhere in ``node`` (plain data or OmegaConf)."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = resolved(node, where or "the config")
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                check_target(value, path)
            else:
                check_targets(value, path)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_targets(value, f"{where}[{i}]")


# --- groups -------------------------------------------------------------------------------------
def check_data(data: Any) -> None:
    """``data``: a registered dataset, positive sizes, a dataset root that exists when one is needed."""
    data = check_mapping("data", data, allow_none=False)
    name = require(data, "name", "data")
    if name not in DATASETS.names():
        raise ConfigError(
            f"data.name={name!r} is not a registered dataset.{suggest(name, DATASETS.names())} "
            f"Available: {', '.join(DATASETS.names())} (choose one with data=<name>)."
        )
    for key in ("batch_size", "image_size", "num_classes"):
        if key in data:
            check_int(f"data.{key}", data[key], allow_none=key != "batch_size")
    check_int("data.eval_batch_size", data.get("eval_batch_size"), allow_none=True)
    check_int("data.num_workers", data.get("num_workers", 0), minimum=0)
    for split, limit in check_mapping("data.limits", data.get("limits")).items():
        check_int(f"data.limits.{split}", limit, allow_none=True)
    options = check_mapping("data.options", data.get("options"))
    cls = DATASETS.get(name)
    accepted = [p for p in DATASETS.options(name) if p not in ("split", "normalize")]  # set by the data module
    for key in options:
        if key not in accepted:
            raise ConfigError(f"data.options.{key} is not an option of dataset {name!r}.{suggest(key, accepted)} Options: {accepted}.")
    if "image_size" in options:
        check_int("data.options.image_size", options["image_size"])
    for split, size in check_mapping("data.options.sizes", options.get("sizes")).items():
        check_int(f"data.options.sizes.{split}", size)
    if issubclass(cls, OnDiskDataset):  # a real dataset read from disk (not generated)
        try:
            require_root(name, options.get("root"), cls.root_layout, cls.source)
        except DataError as err:
            raise DataError(f"{err}\nOn the command line: DATASET_ROOT=/path/to/data or paths.dataset_root=/path/to/data.") from None


def check_model(model: Any, key: str = "model") -> None:
    model = check_mapping(key, model, allow_none=False)
    name = require(model, "name", key)
    if not isinstance(name, str) or (name not in available_models() and not timm.is_model(name)):
        raise ConfigError(
            f"{key}.name={name!r} is not a known model.{suggest(name, available_models())} Use one of "
            f"{available_models()} or a timm.list_models() name (choose one with model=<config>)."
        )
    check_int(f"{key}.num_classes", model.get("num_classes"), allow_none=True)
    check_int(f"{key}.img_size", model.get("img_size"), allow_none=True)


def check_trainer(trainer: Any, *, training: bool) -> None:
    import lightning as L  # heavy (seconds): imported only once a trainer is checked, after the fast checks

    trainer = check_mapping("trainer", trainer, allow_none=False)
    accepted = [p for p in inspect.signature(L.Trainer.__init__).parameters if p != "self"]
    for key in trainer:
        if key not in accepted or key in ("logger", "callbacks", "default_root_dir"):
            raise ConfigError(f"trainer.{key} is not a Lightning Trainer argument this package lets you set.{suggest(key, accepted)}")
    if "accelerator" in trainer and isinstance(trainer["accelerator"], str):
        check_choice("trainer.accelerator", trainer["accelerator"], ACCELERATORS)
        if trainer["accelerator"] in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={trainer['accelerator']} but this machine has no usable CUDA GPU "
                "(torch.cuda.is_available() is False): use trainer.accelerator=cpu or trainer.accelerator=auto."
            )
    devices = trainer.get("devices", "auto")
    if isinstance(devices, bool) or isinstance(devices, float) or (isinstance(devices, int) and devices not in (-1,) and devices < 1):
        raise ConfigError(f"trainer.devices must be a positive integer, -1 (all), a list of device ids or 'auto', got {devices!r}.")
    for key in ("log_every_n_steps", "check_val_every_n_epoch", "accumulate_grad_batches"):
        if key in trainer:
            check_int(f"trainer.{key}", trainer[key], allow_none=True)
    if "num_sanity_val_steps" in trainer:
        check_int("trainer.num_sanity_val_steps", trainer["num_sanity_val_steps"], minimum=-1)
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if key in trainer:
            check_number(f"trainer.{key}", trainer[key], positive=True, allow_none=True)
    if not training:
        return
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if steps not in (-1, None):
        check_int("trainer.max_steps", steps, example=1000)
    if epochs == -1 and steps not in (-1, None):
        return  # unlimited epochs, bounded by max_steps
    check_int("trainer.max_epochs", epochs, allow_none=steps not in (-1, None), example=5)


def check_module(module: Any) -> None:
    module = check_mapping("module", module, allow_none=False)
    require(module, "_target_", "module")
    for where, node in [("module", module), *[(f"module.{p}", module.get(p)) for p in ("predictor", "detector", "selector")]]:
        if not isinstance(node, Mapping):
            continue
        opt = node.get("optimizer")
        if isinstance(opt, Mapping):
            check_choice(f"{where}.optimizer.name", opt.get("name", "adamw"), ("adamw", "adam", "sgd"))
            check_number(f"{where}.optimizer.lr", opt.get("lr", 1e-3), positive=True)
            check_number(f"{where}.optimizer.weight_decay", opt.get("weight_decay", 0.0), non_negative=True)
        elif opt is not None:
            raise ConfigError(f"{where}.optimizer must be a mapping such as {{name: adamw, lr: 0.001}}, got {opt!r}.")
    scheduler = module.get("scheduler")
    if isinstance(scheduler, Mapping):
        check_choice("module.scheduler.name", scheduler.get("name", "cosine"), ("cosine", "multistep", "constant"))
        check_number("module.scheduler.warmup_epochs", scheduler.get("warmup_epochs", 0), non_negative=True)
    if isinstance(module.get("model"), Mapping):
        check_model(module["model"], "module.model")


def check_attributor(attributor: Any, where: str = "attributor", shape: tuple[int, int, int] | None = None) -> None:
    """A registered attributor with known options, every count within its bound (``where``: the key
    shown in messages, e.g. a table row's)."""
    available = ATTRIBUTORS.names()
    attributor = check_mapping(where, attributor, allow_none=False)
    name = require(attributor, "name", where)
    if name not in available:
        raise ConfigError(
            f"{where}.name={name!r} is not a registered attributor.{suggest(name, available)} "
            f"Available: {', '.join(available)} (choose a config with attributor=<name>)."
        )
    options = check_mapping(f"{where}.options", attributor.get("options"))
    allowed = sorted(ATTRIBUTORS.options(name))
    for key in options:
        if key not in allowed:
            raise ConfigError(f"{where}.options.{key}: {name!r} has no such option.{suggest(key, allowed)} Options: {allowed}.")
    check_count_tree(f"{where}.options", options, shape)


def check_metrics(metrics: Any, where: str = "metrics", shape: tuple[int, int, int] | None = None,
                  references: Iterable[str] | None = None) -> None:
    """Registered metrics with known options and bounded counts; a metric's ``scorer`` names one of
    ``references`` as ``"@name"`` (None: not checked)."""
    available = METRICS.names()
    metrics = check_mapping(where, metrics)
    if not metrics:
        raise ConfigError("No metrics selected: pass e.g. metrics=[pxap,insertion].")
    for label, spec in metrics.items():
        spec = check_mapping(f"{where}.{label}", spec)
        name = spec.get("name", label)
        if name not in available:
            raise ConfigError(
                f"{where}.{label}.name={name!r} is not a registered metric.{suggest(name, available)} "
                f"Available: {', '.join(available)} (e.g. metrics=[pxap,insertion])."
            )
        options = {k: v for k, v in spec.items() if k not in ("name", "scorer")}
        allowed = METRICS.options(name)
        for key in options:
            if key not in allowed:
                raise ConfigError(f"{where}.{label}.{key}: metric {name!r} has no such option.{suggest(key, allowed)} Options: {allowed}.")
        if "scorer" in spec:
            check_scorer_reference(f"{where}.{label}.scorer", spec["scorer"], references)
        check_count_tree(f"{where}.{label}", options, shape, metric=name)


def check_scorer_reference(key: str, value: Any, references: Iterable[str] | None) -> None:
    if not (isinstance(value, str) and value.startswith("@")):
        raise ConfigError(f"{key} must name a reference model as \"@<name>\" (see reference_checkpoints), got {value!r}.")
    if references is not None and value[1:] not in set(references):
        names = sorted(references)
        raise ConfigError(f"{key}={value!r} names no reference model.{suggest(value[1:], names)} References: {names}.")


def check_count_tree(where: str, options: Mapping[str, Any], shape: tuple[int, int, int] | None,
                     metric: str | None = None) -> None:
    """:func:`~reproduce.runtime.limits.check_counts` on ``options`` and on its nested ``*_options``."""
    check_counts(where, options, shape, metric)
    for key, value in options.items():
        if key.endswith("_options") and isinstance(value, Mapping):
            check_count_tree(f"{where}.{key}", value, shape)
