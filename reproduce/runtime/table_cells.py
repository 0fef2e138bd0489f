"""The configs of a table's runs, composed from Hydra overrides only: every model's ``train`` config
and every cell's ``evaluate`` config, so that each is exactly what the same command line would give
(and passes the same validation); nothing is patched into a config after it is composed.

Plain values (lists, nested dicts, paths, ``"@name"`` references) are written in Hydra's override
grammar by :func:`override_value`; a dict override merges into the config's own dict (``++key={...}``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from reproduce.attributors import get_class
from reproduce.errors import ConfigError
from reproduce.runtime.paths import CONF_DIR, TableLayout, group_config, searchpath_overrides
from reproduce.runtime.table_spec import CHECKPOINT_REF, Cell, ModelJob, TableSpec

Compose = Callable[[str, list[str]], DictConfig]
Checkpoints = dict[tuple[str, int], "str | None"]

# Smoke mode (tests, `make smoke TABLE=<name>`): every model one tiny epoch, every attributor its smoke options,
# a few test images (that pass the row's samples filter: the sampler picks them).
SMOKE_SIZES = {"train": 64, "val": 32, "test": 32}
SMOKE_TRAIN = (f"data.options.sizes={{train:{SMOKE_SIZES['train']},val:{SMOKE_SIZES['val']},test:{SMOKE_SIZES['test']}}}",
               "trainer.max_epochs=1", "data.batch_size=32")
SMOKE_IMAGES = 4
# With the progress bar on, a cell's test loop runs in at least this many batches, so that the bar
# moves inside a costly cell (maps never depend on batch-mates, and the batch size is not part of a
# result's identity: see runtime/run_dir.py).
PROGRESS_BATCHES = 8


def hydra_compose(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a config from conf/ inside or outside a running Hydra app."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=[*searchpath_overrides(), *overrides])
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides=overrides)


def override_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings quoted, so paths and ``@name`` stay strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf") if not math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"Cannot write {value!r} ({type(value).__name__}) as a Hydra override.")


def substitute(value: Any, who: str, seed: int, checkpoints: Checkpoints) -> Any:
    """Replace ``{checkpoint:<role>}`` in a string by that role's best checkpoint (same seed)."""
    if not isinstance(value, str):
        return value

    def repl(match) -> str:
        path = checkpoints.get((match.group(1), seed))
        if not path:
            raise ConfigError(f"{who} needs the checkpoint of model {match.group(1)!r}, which has none.")
        return path

    return CHECKPOINT_REF.sub(repl, value)


def common_overrides(spec: TableSpec, layout: TableLayout, logger: str, verbose: bool) -> list[str]:
    grouping = [f"logger.group={spec.name}", f"logger.tags=[{spec.name}]"] if logger == "wandb" else []
    return [f"paths.root={layout.root}", f"data={spec.data}", f"logger={logger}", *grouping,
            f"verbose={str(verbose).lower()}", *spec.overrides]


def train_overrides(spec: TableSpec, job: ModelJob, layout: TableLayout, checkpoints: Checkpoints, *,
                    logger: str, progress_bar: bool, verbose: bool) -> list[str]:
    own = [substitute(o, f"Model {job.role!r}", job.seed, checkpoints) for o in job.overrides]
    return [*common_overrides(spec, layout, logger, verbose), *spec.train_overrides, *own,
            *(SMOKE_TRAIN if layout.smoke else ()), f"seed={job.train_seed}", f"name={spec.name}-{job.role}-s{job.seed}",
            f"task={layout.task}/models", f"trainer.enable_progress_bar={str(progress_bar).lower()}"]


def _attributor_options(cell: Cell, checkpoints: Checkpoints, smoke: bool) -> dict[str, Any]:
    row = cell.row
    config = group_config("attributor", row["attributor"]) or {}
    options = {**(config.get("options") or {}), **(row.get("attributor_options") or {})}
    if smoke:
        options = get_class(str(config.get("name", row["attributor"]))).smoke_config(options)
    return {k: substitute(v, f"Row {row['label']!r}", cell.seed, checkpoints) for k, v in options.items()}


def _metrics(spec: TableSpec, row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {label: {**metric, **((row.get("metric_options") or {}).get(label) or {})}
            for label, metric in spec.metrics.items() if label not in (row.get("skip_metrics") or [])}


def cell_overrides(spec: TableSpec, cell: Cell, layout: TableLayout, checkpoints: Checkpoints, *, logger: str,
                   progress_bar: bool, verbose: bool, recompute: bool, data_sizes: bool,
                   eval_batch_size: int | None = None) -> list[str]:
    """The ``evaluate`` overrides of one cell: the row's model, attributor, metrics and images.
    ``data_sizes``: the data config has ``options.sizes`` (smoke mode shrinks them);
    ``eval_batch_size``: the data config's (lowered with the progress bar on, see PROGRESS_BATCHES)."""
    row, role = cell.row, cell.row["model"]
    pretrained = spec.models[role].get("pretrained")
    models = [f"model={pretrained}", "checkpoint=null"] if pretrained is not None else \
        [f"checkpoint={override_value(checkpoints[(role, cell.seed)])}"]
    if row.get("scorer"):
        models.append(f"scorer_checkpoint={override_value(checkpoints[(row['scorer'], cell.seed)])}")
    models += [f"++reference_checkpoints.{name}={override_value(checkpoints[(ref, cell.seed)])}"
               for name, ref in spec.references.items()]
    images = spec.row_setting(row, "eval_images")
    if layout.smoke:
        images = SMOKE_IMAGES if images is None else min(int(images), SMOKE_IMAGES)
    sampling = [f"eval_images={override_value(images)}"]
    if progress_bar and images and eval_batch_size:
        sampling.append(f"data.eval_batch_size={max(1, min(eval_batch_size, math.ceil(images / PROGRESS_BATCHES)))}")
    for key in ("samples", "per_class", "sampling_seed", "target"):
        if spec.row_setting(row, key) is not None:
            sampling.append(f"{key}={override_value(spec.row_setting(row, key))}")
    cell_info = {"table": spec.name, "row": row["label"], "model_role": role, "scorer_role": row.get("scorer") or role,
                 "seed": cell.seed,
                 "attributor": row["attributor"], "smoke": layout.smoke}
    return [*common_overrides(spec, layout, logger, verbose), f"attributor={row['attributor']}", f"seed={cell.seed}",
            f"name={cell.key}", f"task={layout.task}/cells", "metrics=[]",
            f"trainer.enable_progress_bar={str(progress_bar).lower()}", f"recompute={str(recompute).lower()}",
            f"++attributor.options={override_value(_attributor_options(cell, checkpoints, layout.smoke))}",
            *[f"++metrics.{label}={override_value(m)}" for label, m in _metrics(spec, row).items()],
            *models, *sampling, f"++cell={override_value(cell_info)}",
            *([f"data.options.sizes={override_value(SMOKE_SIZES)}"] if layout.smoke and data_sizes else [])]
