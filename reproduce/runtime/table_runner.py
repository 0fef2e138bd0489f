"""Run a table spec: train (or reuse) its models, evaluate its cells, assemble the result.

Everything is cached on disk and resumable: a model is a training run directory keyed by the table,
role and seed (``fit`` reuses a finished run with the same config and resumes an interrupted one);
a cell is ``outputs/tables/<table>/cells/<cell>/result.json``, written atomically and skipped when
present with the same identity (a killed run re-run with the same command skips the finished cells
and recomputes the interrupted one from scratch). Cells can be sharded (``shard.index``/``shard.count``:
shard i evaluates the cells whose index is i modulo count) across processes or a Hydra multirun;
models are trained under a lock so shards never train one twice.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from reproduce.errors import ConfigError
from reproduce.runtime.config_hash import to_plain
from reproduce.runtime.locks import directory_lock
from reproduce.runtime.table_spec import CHECKPOINT_REF, Cell, TableSpec, searchpath_overrides

Compose = Callable[[str, list[str]], DictConfig]


@dataclass
class TableRun:
    spec: TableSpec
    table_dir: str
    checkpoints: dict[tuple[str, int], str | None]
    results: dict[str, dict[str, Any]]
    seconds: float


def hydra_compose(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a config from conf/ inside or outside a running Hydra app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from reproduce.runtime.paths import CONF_DIR

    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=[*searchpath_overrides(), *overrides])
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides=overrides)


def _common(spec: TableSpec, root: str, logger: str) -> list[str]:
    grouping = [f"logger.group={spec.name}", f"logger.tags=[{spec.name}]"] if logger == "wandb" else []
    return [f"paths.root={root}", f"data={spec.raw.get('data', 'synthetic')}", f"logger={logger}", *grouping,
            *[str(o) for o in spec.raw.get("overrides") or []]]


# Smoke mode (tests, `make smoke`): every model one tiny epoch, every attributor its smoke options.
SMOKE_TRAIN = ("data.options.sizes={train:64,val:32,test:32}", "trainer.max_epochs=1", "data.batch_size=32")
SMOKE_IMAGES = 4


def train_models(spec: TableSpec, root: str, compose: Compose, logger: str = "none",
                 progress_bar: bool = True, smoke: bool = False) -> dict[tuple[str, int], str | None]:
    """Best checkpoint of every model the table needs (None for untrained pretrained models)."""
    from reproduce.runtime.training import fit

    checkpoints: dict[tuple[str, int], str | None] = {}
    for job in spec.model_jobs():
        if job.pretrained is not None:
            checkpoints[(job.role, job.seed)] = None
            continue
        overrides = [_substitute(o, f"Model {job.role!r}", job.seed, checkpoints) for o in job.overrides]
        name = f"{spec.name}-{job.role}-s{job.seed}"
        cfg = compose("train", [*_common(spec, root, logger), *[str(o) for o in spec.raw.get("train_overrides") or []],
                                *overrides, *(SMOKE_TRAIN if smoke else ()),
                                f"seed={job.training_seed}", f"name={name}",
                                f"task=tables/{spec.name}/models", f"trainer.enable_progress_bar={str(progress_bar).lower()}"])
        with directory_lock(str(cfg.paths.output_dir)):
            print(f"[reproduce.table] model {job.role} (seed {job.seed}) -> {cfg.paths.output_dir}", flush=True)
            result = fit(cfg)
        checkpoints[(job.role, job.seed)] = result.best_checkpoint
    return checkpoints


def _substitute(value: Any, who: str, seed: int, checkpoints: dict[tuple[str, int], str | None]) -> Any:
    """Replace ``{checkpoint:<role>}`` in a string by that role's best checkpoint (same seed)."""
    if not isinstance(value, str):
        return value

    def repl(match) -> str:
        path = checkpoints.get((match.group(1), seed))
        if not path:
            raise ConfigError(f"{who} needs the checkpoint of model {match.group(1)!r}, which has none.")
        return path

    return CHECKPOINT_REF.sub(repl, value)


def cell_config(spec: TableSpec, cell: Cell, root: str, checkpoints: dict[tuple[str, int], str | None],
                compose: Compose, logger: str = "none", smoke: bool = False) -> DictConfig:
    """The evaluate config of one cell: the row's model, attributor and metrics."""
    row = cell.row
    role = row["model"]
    pretrained = spec.models[role].get("pretrained")
    overrides = [*_common(spec, root, logger), f"attributor={row['attributor']}", f"seed={cell.seed}",
                 f"name={cell.key}", f"task=tables/{spec.name}/cells", "metrics=[]", "trainer.enable_progress_bar=false"]
    if pretrained is not None:
        overrides += [f"model={pretrained}", "checkpoint=null"]
    cfg = compose("evaluate", overrides)
    OmegaConf.set_struct(cfg, False)
    if pretrained is None:
        cfg.checkpoint = checkpoints[(role, cell.seed)]
    if row.get("scorer"):
        cfg.scorer_checkpoint = checkpoints[(row["scorer"], cell.seed)]
    defaults = cfg.attributor.get("options")
    options = {**(OmegaConf.to_container(defaults, resolve=True) if defaults else {}), **(row.get("attributor_options") or {})}
    if smoke:
        from reproduce.attributors import get_class

        options = get_class(str(cfg.attributor.name)).smoke_config(options)
    cfg.attributor.options = {k: _substitute(v, f"Row {row['label']!r}", cell.seed, checkpoints) for k, v in options.items()}
    cfg.reference_checkpoints = {name: checkpoints[(role, cell.seed)] for name, role in (spec.raw.get("references") or {}).items()}
    metrics = {}
    for label, metric in spec.metrics.items():
        if label in (row.get("skip_metrics") or []):
            continue
        metrics[label] = {**metric, **(row.get("metric_options", {}).get(label) or {})}
    cfg.metrics = metrics
    images = int(row.get("eval_images", spec.raw.get("eval_images", 200)))
    cfg.data.limits = {"test": min(images, SMOKE_IMAGES) if smoke else images}
    if smoke and "sizes" in cfg.data.options:
        cfg.data.options.sizes = {"train": 64, "val": 32, "test": 32}
    for key in ("target", "samples"):
        if key in row or key in spec.raw:
            cfg[key] = row.get(key, spec.raw.get(key))
    cfg.cell = {"table": spec.name, "row": row["label"], "model_role": role, "seed": cell.seed,
                "attributor": row["attributor"], "scorer_role": row.get("scorer") or role}
    return cfg


def run_table(table: dict[str, Any] | DictConfig, root: str, shard: tuple[int, int] = (0, 1), logger: str = "none",
              compose: Compose = hydra_compose, progress_bar: bool = True, smoke: bool = False) -> TableRun:
    """Train what the table needs and evaluate this shard's cells; returns the cells' results."""
    from reproduce.runtime.evaluation import evaluate_cell, finished_result

    start = time.time()
    spec = TableSpec.from_config(to_plain(table))
    index, count = shard
    if not (0 <= index < count):
        raise ConfigError(f"shard.index must be in [0, shard.count), got {index} of {count}.")
    table_dir = os.path.join(root, "outputs", "tables", spec.name)
    checkpoints = train_models(spec, root, compose, logger, progress_bar, smoke)
    results: dict[str, dict[str, Any]] = {}
    for cell in spec.cells():
        if cell.index % count != index:
            continue
        cfg = cell_config(spec, cell, root, checkpoints, compose, logger, smoke)
        previous = finished_result(cfg)
        if previous is not None:
            print(f"[reproduce.table] cell {cell.key}: finished earlier, skipped", flush=True)
            results[cell.key] = previous
            continue
        print(f"[reproduce.table] cell {cell.key} ({cell.row['attributor']} on {cell.row['model']})", flush=True)
        results[cell.key] = evaluate_cell(cfg)
    return TableRun(spec, table_dir, checkpoints, results, time.time() - start)
