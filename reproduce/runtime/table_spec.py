"""A table is a declarative spec (``conf/table/<name>.yaml``); this module validates it and expands it
into the models to train and the cells to evaluate.

Spec fields:

- ``name``, ``title``, ``protocol`` (text: which protocol each column follows);
- ``data``: the data config group; ``overrides``: overrides applied to every train and evaluate run,
  ``train_overrides``: to every training run only;
- ``seeds``: one model set and one evaluation per seed (mean and spread are reported);
- ``eval_images``: test images per cell (first N of the test split), rows may lower it;
- ``models``: role -> ``{train: [overrides of conf/train.yaml], description, seed_offset}``; an
  override may refer to another role's best checkpoint as ``{checkpoint:<role>}`` (trained first);
  ``seed_offset: k`` trains the role with ``seed + k`` (e.g. the second of two re-trainings, or an
  independent scorer of the black box's architecture), so roles that must differ in initialisation
  and batch order do; the role's checkpoint is still found under the table seed;
  ``{pretrained: <model config>}`` instead of ``train`` uses a model config without training;
- ``metrics``: label -> metric spec shared by every row (``conf/metrics`` format);
- ``rows``: ``{label, model, attributor (a conf/attributor config name), attributor_options, scorer, eval_images, samples, target,
  metric_options: {metric label: {option: value}}, skip_metrics: [labels]}``;
- ``columns``: ``{label, key, direction?, scale?, format?}``; ``key`` is a result scalar
  (``accuracy`` or ``<metric label>/<scalar>``);
- ``references``: name -> model role, extra models handed to every cell (stability metrics refer to
  them as ``"@name"`` in their options);
- ``paper``: ``{row label: {column label: value}}``, the published numbers where known (never invented).

Row ``attributor_options`` may also hold ``{checkpoint:<role>}`` (e.g. SMDL's evidential model).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from reproduce.errors import ConfigError

CHECKPOINT_REF = re.compile(r"\{checkpoint:([A-Za-z0-9_\-]+)\}")


@dataclass(frozen=True)
class ModelJob:
    role: str
    seed: int
    overrides: tuple[str, ...]
    depends_on: tuple[str, ...]
    pretrained: dict[str, Any] | None = None
    seed_offset: int = 0

    @property
    def training_seed(self) -> int:
        """The seed the role is trained with (the table seed plus the role's ``seed_offset``)."""
        return self.seed + self.seed_offset


@dataclass(frozen=True)
class Cell:
    row: dict[str, Any]
    seed: int
    index: int

    @property
    def key(self) -> str:
        return f"{slugify(self.row['label'])}-s{self.seed}"


def slugify(label: str) -> str:
    """A file-name-safe, case-insensitive form of a row label (``Grad-CAM++`` -> ``grad_campp``,
    ``MoXI(-)`` -> ``moxi_minus``)."""
    label = label.replace("+", "p").replace("(-)", "_minus")
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower()


def attributor_configs() -> list[str]:
    """Names of the attributor configs (``conf/attributor/<name>.yaml``) a row may use, plus those in
    the folders of ``hydra.searchpath`` when called inside a Hydra app (out-of-tree methods)."""
    from hydra.core.global_hydra import GlobalHydra

    from reproduce.runtime.paths import CONF_DIR

    folder = os.path.join(CONF_DIR, "attributor")
    names = {f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")}
    if GlobalHydra.instance().is_initialized():
        loader = GlobalHydra.instance().config_loader()
        names.update(loader.get_group_options("attributor", overrides=searchpath_overrides()))
    return sorted(names)


def searchpath_overrides() -> list[str]:
    """``hydra.searchpath=[...]`` of the running Hydra app (empty outside one or without it).

    The global config loader's repository predates the app's own ``hydra.searchpath``, so configs
    composed or listed inside the app (table cells, attributor names) must pass it again."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or not HydraConfig.get().searchpath:
        return []
    return [f"hydra.searchpath=[{','.join(repr(str(p)) for p in HydraConfig.get().searchpath)}]"]


@dataclass
class TableSpec:
    raw: dict[str, Any]
    name: str = ""
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)

    @staticmethod
    def from_config(raw: dict[str, Any]) -> "TableSpec":
        spec = TableSpec(raw=raw)
        spec.name = _need(raw, "name", str)
        spec.models = _need(raw, "models", dict)
        spec.rows = _need(raw, "rows", list)
        spec.columns = _need(raw, "columns", list)
        spec.metrics = raw.get("metrics") or {}
        spec.seeds = [int(s) for s in raw.get("seeds") or [0]]
        spec.validate()
        return spec

    # --- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        from reproduce.metrics import available_metrics

        where = f"table {self.name!r}"
        if not self.rows:
            raise ConfigError(f"{where} has no rows.")
        for role, model in self.models.items():
            if not isinstance(model, dict) or ("train" in model) == ("pretrained" in model):
                raise ConfigError(f"{where}: model {role!r} needs exactly one of `train` (overrides) or `pretrained`.")
            offset = model.get("seed_offset", 0)
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
                raise ConfigError(f"{where}: model {role!r} has seed_offset {offset!r}; it must be an integer >= 0.")
            for ref in self._refs(model):
                if ref not in self.models:
                    raise ConfigError(f"{where}: model {role!r} refers to {{checkpoint:{ref}}}, which is not a model of the table.")
        self._check_cycles()
        known_metrics = set(available_metrics())
        for label, metric in self.metrics.items():
            name = (metric or {}).get("name", label)
            if name not in known_metrics:
                raise ConfigError(f"{where}: metric {label!r} uses unknown metric {name!r}; available: {sorted(known_metrics)}.")
        known_attributors = set(attributor_configs())
        labels, slugs = set(), set()
        for row in self.rows:
            if not isinstance(row, dict) or "label" not in row:
                raise ConfigError(f"{where}: every row needs a label, got {row!r}.")
            label = row["label"]
            if label in labels:
                raise ConfigError(f"{where}: row label {label!r} appears twice.")
            labels.add(label)
            if slugify(label) in slugs:
                raise ConfigError(f"{where}: row label {label!r} clashes with another row once made a file name; rename one.")
            slugs.add(slugify(label))
            if row.get("model") not in self.models:
                raise ConfigError(f"{where}: row {label!r} uses model {row.get('model')!r}; models are {sorted(self.models)}.")
            if row.get("scorer") is not None and row["scorer"] not in self.models:
                raise ConfigError(f"{where}: row {label!r} scores with unknown model {row['scorer']!r}.")
            if row.get("attributor") not in known_attributors:
                raise ConfigError(
                    f"{where}: row {label!r} uses attributor config {row.get('attributor')!r}, which is not in "
                    f"conf/attributor/; available: {sorted(known_attributors)}."
                )
            for ref in self._row_refs(row):
                if ref not in self.models:
                    raise ConfigError(f"{where}: row {label!r} refers to {{checkpoint:{ref}}}, which is not a model of the table.")
            for metric in {**row.get("metric_options", {})}.keys() | set(row.get("skip_metrics", [])):
                if metric not in self.metrics:
                    raise ConfigError(f"{where}: row {label!r} configures metric {metric!r}, which is not in `metrics`.")
        for name, role in (self.raw.get("references") or {}).items():
            if role not in self.models:
                raise ConfigError(f"{where}: reference {name!r} names model {role!r}, which is not a model of the table.")
        keys = {"accuracy"} | {f"{m}/" for m in self.metrics}
        for column in self.columns:
            if not isinstance(column, dict) or "label" not in column or "key" not in column:
                raise ConfigError(f"{where}: every column needs a label and a key, got {column!r}.")
            key = column["key"]
            if key != "accuracy" and not any(key.startswith(k) for k in keys if k.endswith("/")):
                raise ConfigError(
                    f"{where}: column {column['label']!r} reads {key!r}; keys are 'accuracy' or "
                    f"'<metric label>/<scalar>' with metric labels {sorted(self.metrics)}."
                )
        for row_label, values in (self.raw.get("paper") or {}).items():
            if row_label not in labels:
                raise ConfigError(f"{where}: paper numbers given for unknown row {row_label!r}.")
            for column_label in values:
                if column_label not in {c["label"] for c in self.columns}:
                    raise ConfigError(f"{where}: paper numbers given for unknown column {column_label!r}.")

    @staticmethod
    def _refs(model: dict[str, Any]) -> list[str]:
        return [m for o in model.get("train") or [] for m in CHECKPOINT_REF.findall(str(o))]

    @staticmethod
    def _row_refs(row: dict[str, Any]) -> list[str]:
        return [m for v in (row.get("attributor_options") or {}).values() for m in CHECKPOINT_REF.findall(str(v))]

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}

        def visit(role: str, trail: list[str]) -> None:
            if state.get(role) == 1:
                raise ConfigError(f"table {self.name!r}: models depend on each other in a cycle: {' -> '.join(trail + [role])}.")
            if state.get(role) == 2:
                return
            state[role] = 1
            for ref in self._refs(self.models[role]):
                visit(ref, trail + [role])
            state[role] = 2

        for role in self.models:
            visit(role, [])

    # --- expansion -----------------------------------------------------------------------------
    def model_jobs(self) -> list[ModelJob]:
        """Models the rows need, dependencies first, for every seed."""
        needed: list[str] = []

        def add(role: str) -> None:
            for ref in self._refs(self.models[role]):
                add(ref)
            if role not in needed:
                needed.append(role)

        for row in self.rows:
            for role in [row["model"], row.get("scorer"), *self._row_refs(row)]:
                if role:
                    add(role)
        for role in (self.raw.get("references") or {}).values():
            add(role)
        return [
            ModelJob(
                role=role, seed=seed,
                overrides=tuple(str(o) for o in self.models[role].get("train") or []),
                depends_on=tuple(self._refs(self.models[role])),
                pretrained=self.models[role].get("pretrained"),
                seed_offset=int(self.models[role].get("seed_offset", 0)),
            )
            for seed in self.seeds for role in needed
        ]

    def cells(self) -> list[Cell]:
        return [Cell(row=row, seed=seed, index=i) for i, (seed, row) in enumerate((s, r) for s in self.seeds for r in self.rows)]


def _need(raw: dict[str, Any], key: str, kind: type):
    value = raw.get(key)
    if not isinstance(value, kind) or not value:
        raise ConfigError(f"The table spec needs a non-empty `{key}` ({kind.__name__}); see conf/table/table3.yaml.")
    return value
