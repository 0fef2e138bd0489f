"""Check a composed config before any work starts, and report user errors cleanly on the command line.

``validate_train``, ``validate_evaluate`` and ``validate_table`` run at the top of the entry points
(and ``fit``): every interpolation must resolve, required keys must be present with the right types
and ranges (seeds are non-negative integers, epochs/steps/batch sizes positive), attributor, metric,
dataset and model names must be registered (with close-match suggestions), paths that must exist do,
and every ``_target_`` must be a class under :data:`ALLOWED_TARGET_PREFIXES` (see
:func:`check_target`: a config is data, it must not be able to call ``os.system``).

Every failure is a :class:`~reproduce.errors.ConfigError` (or ``DataError`` for missing files) whose
message names the key and the fix; :func:`reported_errors` prints it as the first and only thing
the user sees and exits with status 2 (``HYDRA_FULL_ERROR=1`` re-raises it with the traceback).
"""

from __future__ import annotations

import inspect
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reproduce.checks import check_bool, check_choice, check_int, check_number, suggest
from reproduce.errors import ConfigError, DataError, ReproduceError

# Module prefixes a config's ``_target_`` may name (the conf/ tree only uses reproduce.lit.* and
# lightning.pytorch.loggers.*). The resolved object's own ``__module__`` is checked too, so a path
# that walks through an allowed module into another one (``reproduce.x.os.system``) is refused.
ALLOWED_TARGET_PREFIXES = (
    "reproduce.",
    "lightning.",
    "pytorch_lightning.",
    "torch.optim.",
    "torchmetrics.",
    "timm.",
)

# Option names that count something (samples, steps, batch rows): a positive integer when set.
COUNT_OPTIONS = frozenset({
    "steps", "n_samples", "samples", "n_masks", "n_rounds", "nb_design", "batch_size",
    "internal_batch_size", "max_batch", "max_channels", "max_players", "bins", "chunk",
})
TARGET_CHOICES = ("label", "prediction")
SAMPLE_CHOICES = ("all", "correct", "misclassified")
WANDB_MODES = ("offline", "online", "disabled")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu", "xla")
_TRAIN_HINT = "train it first with `python -m reproduce.train experiment=<name>` or fix the path"


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


def check_count_options(where: str, options: Mapping[str, Any]) -> None:
    for name, value in options.items():
        if name in COUNT_OPTIONS and value is not None:
            check_int(f"{where}.{name}", value)


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
    from hydra._internal.utils import _locate

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
def check_common(plain: Mapping[str, Any]) -> None:
    seed = plain.get("seed", 0)
    check_int("seed", seed, minimum=0, example=0)
    name = require(plain, "name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"name must be a non-empty string, got {name!r} (e.g. name=my_run).")


def check_data(data: Any) -> None:
    """``data``: a registered dataset, positive sizes, a dataset root that exists when one is needed."""
    from reproduce.data.registry import DATASETS, available_datasets

    data = check_mapping("data", data, allow_none=False)
    name = require(data, "name", "data")
    if name not in available_datasets():
        raise ConfigError(
            f"data.name={name!r} is not a registered dataset.{suggest(name, available_datasets())} "
            f"Available: {', '.join(available_datasets())} (choose one with data=<name>)."
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
    from reproduce.data.image_folder import OnDiskDataset, require_root

    if issubclass(cls, OnDiskDataset):  # a real dataset read from disk (not generated)
        try:
            require_root(name, options.get("root"), cls.root_layout, cls.source)
        except DataError as err:
            raise DataError(f"{err}\nOn the command line: DATASET_ROOT=/path/to/data or paths.dataset_root=/path/to/data.") from None


def check_model(model: Any, key: str = "model") -> None:
    import timm

    from reproduce.models.factory import available_models

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
    import lightning as L

    trainer = check_mapping("trainer", trainer, allow_none=False)
    accepted = [p for p in inspect.signature(L.Trainer.__init__).parameters if p != "self"]
    for key in trainer:
        if key not in accepted or key in ("logger", "callbacks", "default_root_dir"):
            raise ConfigError(f"trainer.{key} is not a Lightning Trainer argument this package lets you set.{suggest(key, accepted)}")
    if "accelerator" in trainer and isinstance(trainer["accelerator"], str):
        check_choice("trainer.accelerator", trainer["accelerator"], ACCELERATORS)
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


def check_attributor(attributor: Any) -> None:
    from reproduce.attributors import available
    from reproduce.attributors.registry import ATTRIBUTORS

    attributor = check_mapping("attributor", attributor, allow_none=False)
    name = require(attributor, "name", "attributor")
    if name not in available():
        raise ConfigError(
            f"attributor.name={name!r} is not a registered attributor.{suggest(name, available())} "
            f"Available: {', '.join(available())} (choose a config with attributor=<name>)."
        )
    options = check_mapping("attributor.options", attributor.get("options"))
    allowed = sorted(ATTRIBUTORS.options(name))
    for key in options:
        if key not in allowed:
            raise ConfigError(f"attributor.options.{key}: {name!r} has no such option.{suggest(key, allowed)} Options: {allowed}.")
    check_count_options("attributor.options", options)


def check_metrics(metrics: Any) -> None:
    from reproduce.metrics.registry import METRICS, available_metrics

    metrics = check_mapping("metrics", metrics)
    if not metrics:
        raise ConfigError("No metrics selected: pass e.g. metrics=[pxap,insertion].")
    for label, spec in metrics.items():
        spec = check_mapping(f"metrics.{label}", spec)
        name = spec.get("name", label)
        if name not in available_metrics():
            raise ConfigError(
                f"metrics.{label}.name={name!r} is not a registered metric.{suggest(name, available_metrics())} "
                f"Available: {', '.join(available_metrics())} (e.g. metrics=[pxap,insertion])."
            )
        options = {k: v for k, v in spec.items() if k != "name"}
        allowed = METRICS.options(name)
        for key in options:
            if key not in allowed:
                raise ConfigError(f"metrics.{label}.{key}: metric {name!r} has no such option.{suggest(key, allowed)} Options: {allowed}.")
        check_count_options(f"metrics.{label}", options)


# --- entry points -------------------------------------------------------------------------------
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
    return plain


def validate_evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Check an ``evaluate`` config; returns it resolved as plain data."""
    plain = resolved(cfg, "evaluate config")
    check_common(plain)
    check_choice("target", plain.get("target", "label"), TARGET_CHOICES)
    check_choice("samples", plain.get("samples", "all"), SAMPLE_CHOICES)
    check_int("num_overlays", plain.get("num_overlays", 8), minimum=0)
    check_targets(plain)
    check_data(require(plain, "data"))
    check_attributor(require(plain, "attributor"))
    check_metrics(plain.get("metrics"))
    check_trainer(require(plain, "trainer"), training=False)
    checkpoint = plain.get("checkpoint")
    if checkpoint:
        check_file("checkpoint", checkpoint, f"{_TRAIN_HINT} (train_run={plain.get('train_run')!r}), "
                   "or set checkpoint=null to build `model` (e.g. model=efficientnet_lite0_imagenet)")
    else:
        check_model(require(plain, "model"))
    if plain.get("scorer_checkpoint"):
        check_file("scorer_checkpoint", plain["scorer_checkpoint"], _TRAIN_HINT)
    for name, path in check_mapping("reference_checkpoints", plain.get("reference_checkpoints")).items():
        check_file(f"reference_checkpoints.{name}", path, _TRAIN_HINT)
    return plain


def validate_table(cfg: DictConfig) -> dict[str, Any]:
    """Check a ``table`` config (the spec itself via :class:`TableSpec`); returns it as plain data."""
    from reproduce.runtime.table_spec import TableSpec

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
    check_int("table.eval_images", table.get("eval_images"), allow_none=True)
    for row in table.get("rows") or []:
        if isinstance(row, Mapping) and "eval_images" in row:
            check_int(f"table.rows[{row.get('label')!r}].eval_images", row["eval_images"])
    TableSpec.from_config(table)
    from reproduce.runtime.paths import CONF_DIR

    loggers = sorted(f[:-5] for f in os.listdir(os.path.join(CONF_DIR, "logger")) if f.endswith(".yaml"))
    check_choice("run_logger", plain.get("run_logger", "none"), loggers)
    check_choice("wandb_mode", plain.get("wandb_mode", "offline"), WANDB_MODES)
    for key in ("assemble", "assemble_only", "progress_bar", "smoke"):
        if key in plain:
            check_bool(key, plain[key])
    return plain


# --- command-line reporting ---------------------------------------------------------------------
def _user_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    return (ReproduceError, ConfigCompositionException, MissingConfigException, OverrideParseException)


@contextmanager
def reported_errors(prog: str) -> Iterator[None]:
    """Print a user error as ``<prog>: error: <message>`` on stderr and exit with status 2.

    Hydra would print the traceback first and the message last; a config mistake is the user's to
    fix, so its message must come first and alone. ``HYDRA_FULL_ERROR=1`` keeps the traceback.
    """
    try:
        yield
    except _user_errors() as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.stdout.flush()
        sys.stderr.write(f"{prog}: error: {err}\n(Set HYDRA_FULL_ERROR=1 to see where it was raised.)\n")
        sys.stderr.flush()
        raise SystemExit(2) from None


def check_yaml_files(argv: list[str]) -> None:
    """Parse every config file the app can load (``conf/`` and ``hydra.searchpath`` folders).

    Hydra reports a YAML syntax error deep inside its loader as a long traceback, before any
    handler of ours runs; parsing the files first names the file and line instead."""
    import re

    import yaml

    from reproduce.runtime.paths import CONF_DIR

    folders = [CONF_DIR]
    for arg in argv:
        if arg.startswith("hydra.searchpath="):
            folders += [m for m in re.findall(r"file://([^,\]'\"]+)", arg) if os.path.isdir(m)]
    for folder in folders:
        for parent, _, files in os.walk(folder):
            for name in sorted(files):
                if not name.endswith((".yaml", ".yml")):
                    continue
                path = os.path.join(parent, name)
                try:
                    with open(path) as f:
                        yaml.safe_load(f)
                except yaml.YAMLError as err:
                    raise ConfigError(f"{path} is not valid YAML; fix it at the place below.\n{err}") from None


def run_entry_point(main: Any, prog: str) -> None:
    """Run a Hydra main after checking that its config files parse (see :func:`check_yaml_files`)."""
    with reported_errors(prog):
        check_yaml_files(sys.argv[1:])
    main()
