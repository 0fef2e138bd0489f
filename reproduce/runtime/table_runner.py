"""Run a table spec: plan every run, train (or reuse) its models, evaluate its cells.

Each step happens once. :func:`plan_table` composes every model's ``train`` config and every cell's
``evaluate`` config from overrides (:mod:`reproduce.runtime.table_cells`) and validates all of them
before anything is trained, so a mistake in the last row fails in seconds, not after the models are
trained. A model's checkpoint path is known before it is trained (its run directory is
deterministic), so cells refer to it from the start.

Everything is cached on disk and resumable: a model is a training run directory keyed by the table,
role and seed (``fit`` reuses a finished run with the same config and resumes an interrupted one);
a model another table trained with the same config is copied from there, not retrained;
a cell is ``outputs/tables/<table>/cells/<cell>/result.json``, written atomically and reused while
its identity (config and the content of every model it used) is unchanged: a killed run re-run with
the same command skips the finished cells and recomputes the interrupted one from scratch; a
retrained model makes exactly the cells that used it stale. Cells can be sharded
(``shard.index``/``shard.count``: shard i evaluates the cells whose index is i modulo count) across
processes or a Hydra multirun; models are trained under a lock so shards never train one twice.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from reproduce.attributors.memo import AttributionMemo
from reproduce.errors import ConfigError
from reproduce.runtime.config_hash import to_plain
from reproduce.runtime.evaluation import run_cell
from reproduce.runtime.locks import directory_lock
from reproduce.runtime.model_store import copy_run, finished_twin, is_empty_run
from reproduce.runtime.paths import TableLayout
from reproduce.runtime.run_dir import train_identity
from reproduce.runtime.table_cells import Checkpoints, Compose, cell_overrides, hydra_compose, train_overrides
from reproduce.runtime.table_spec import Cell, ModelJob, TableSpec
from reproduce.runtime.training import fit
from reproduce.runtime.validation import validate_evaluate, validate_train

PREFIX = "[reproduce.table]"


@dataclass
class TablePlan:
    spec: TableSpec
    layout: TableLayout
    trainings: list[tuple[ModelJob, DictConfig]] = field(default_factory=list)
    checkpoints: Checkpoints = field(default_factory=dict)
    cells: list[tuple[Cell, DictConfig]] = field(default_factory=list)


@dataclass
class TableRun:
    spec: TableSpec
    table_dir: str
    checkpoints: Checkpoints
    results: dict[str, dict[str, Any]]
    seconds: float


def _selected(recompute: Any, cell: Cell) -> bool:
    """Whether ``recompute`` (true, or row labels / cell keys) asks for this cell."""
    if isinstance(recompute, bool):
        return recompute
    wanted = recompute if isinstance(recompute, (list, tuple)) else [recompute]
    return any(w in (cell.key, cell.row["label"], cell.key.rsplit("-s", 1)[0]) for w in wanted)


def plan_table(spec: TableSpec, layout: TableLayout, compose: Compose = hydra_compose, *, shard: tuple[int, int] = (0, 1),
               logger: str = "none", progress_bar: bool = True, verbose: bool = False, recompute: Any = False) -> TablePlan:
    """Compose and validate every training and this shard's cells (nothing is trained or read yet)."""
    index, count = shard
    if not (0 <= index < count):
        raise ConfigError(f"shard.index must be in [0, shard.count), got {index} of {count}.")
    plan = TablePlan(spec, layout)
    for job in spec.model_jobs():
        if job.pretrained is not None:
            plan.checkpoints[(job.role, job.seed)] = None
            continue
        cfg = compose("train", train_overrides(spec, job, layout, plan.checkpoints, logger=logger,
                                               progress_bar=progress_bar, verbose=verbose))
        validate_train(cfg)
        plan.trainings.append((job, cfg))
        plan.checkpoints[(job.role, job.seed)] = os.path.join(str(cfg.paths.output_dir), "checkpoints", "best.ckpt")
    probe = compose("evaluate", [f"paths.root={layout.root}", f"data={spec.data}", "logger=none", *spec.overrides])
    data_sizes = "sizes" in (probe.data.get("options") or {})
    eval_batch = probe.data.get("eval_batch_size") or probe.data.get("batch_size")
    for cell in spec.cells():
        if cell.index % count != index:
            continue
        cfg = compose("evaluate", cell_overrides(spec, cell, layout, plan.checkpoints, logger=logger,
                                                 progress_bar=progress_bar, verbose=verbose,
                                                 recompute=_selected(recompute, cell), data_sizes=data_sizes,
                                                 eval_batch_size=eval_batch))
        validate_evaluate(cfg, models_exist=False)
        plan.cells.append((cell, cfg))
    return plan


def train_models(plan: TablePlan) -> Checkpoints:
    """Train (or reuse) every model of the plan; returns the best checkpoint of each. A model that
    another table of the same root already trained with the same config is copied from it
    (:mod:`reproduce.runtime.model_store`)."""
    models_glob = os.path.join(os.path.dirname(plan.layout.table_dir), "*", "models", "*")
    for job, cfg in plan.trainings:
        run_dir = str(cfg.paths.output_dir)
        fix = (f"the table trained model {job.role!r} (seed {job.seed}) there with other settings; move it away "
               f"(`mv {run_dir} {run_dir}.old`) and re-run the same command to retrain it (the cells that used it "
               "are then recomputed)")
        with directory_lock(run_dir):
            print(f"{PREFIX} model {job.role} (seed {job.seed}) -> {run_dir}", flush=True)
            donor = finished_twin(models_glob, train_identity(cfg), run_dir) if is_empty_run(run_dir) else None
            if donor is not None:  # another table trained exactly this model: copy it, do not retrain
                copy_run(donor, run_dir, cfg)
                print(f"{PREFIX} model {job.role} (seed {job.seed}): copied from {donor} (same training config)",
                      flush=True)
                continue
            result = fit(cfg, validate=False, fix=fix)
        state = "reused (finished earlier)" if result.reused else f"trained in {result.seconds:.0f} s"
        print(f"{PREFIX} model {job.role} (seed {job.seed}): {state}", flush=True)
    return plan.checkpoints


def _summary(result: dict[str, Any], spec: TableSpec) -> str:
    parts = []
    for column in spec.columns:
        value = result.get("scalars", {}).get(column["key"])
        if value is not None:
            parts.append(f"{column['label']} {value * float(column.get('scale', 1.0)):.{int(column.get('digits', 2))}f}")
    n, asked = result.get("evaluated_images"), result.get("requested_images")
    images = f"n={n}" + (f" of {asked}" if asked is not None and n is not None and n < asked else "")
    return ", ".join([images, *parts])


def run_table(spec: TableSpec | dict[str, Any] | DictConfig, root: str, shard: tuple[int, int] = (0, 1),
              logger: str = "none", compose: Compose = hydra_compose, progress_bar: bool = True, smoke: bool = False,
              recompute: Any = False, verbose: bool = False) -> TableRun:
    """Plan, train what the table needs and evaluate this shard's cells; returns the cells' results.
    ``spec``: a :class:`TableSpec` (built once by ``validate_table``) or the raw spec."""
    start = time.time()
    spec = spec if isinstance(spec, TableSpec) else TableSpec.from_config(to_plain(spec))
    layout = TableLayout(root, spec.name, smoke)
    plan = plan_table(spec, layout, compose, shard=shard, logger=logger, progress_bar=progress_bar,
                      verbose=verbose, recompute=recompute)
    checkpoints = train_models(plan)
    results: dict[str, dict[str, Any]] = {}
    spent, computed = 0.0, 0
    total = len(plan.cells)
    memo = AttributionMemo()  # e.g. model B's base attribution, shared by the super-pixel rows
    for k, (cell, cfg) in enumerate(plan.cells, start=1):
        head = f"{PREFIX} cell {k}/{total} {cell.key} ({cell.row['attributor']} on {cell.row['model']})"
        print(f"{head} ...", flush=True)
        outcome = run_cell(cfg, memo=memo)
        results[cell.key] = outcome.result
        if outcome.reused:
            print(f"{head}: finished earlier, skipped (same {outcome.identity.describe()}): "
                  f"{_summary(outcome.result, spec)}", flush=True)
            continue
        spent, computed = spent + outcome.seconds, computed + 1
        eta = spent / computed * (total - k)  # the mean pace so far; cells finished earlier take no time
        why = f" [recomputed: {outcome.stale_reason}]" if outcome.stale_reason else ""
        print(f"{head}: done in {outcome.seconds:.1f} s, ETA {eta / 60:.1f} min{why}: {_summary(outcome.result, spec)}",
              flush=True)
    return TableRun(spec, layout.table_dir, checkpoints, results, time.time() - start)
