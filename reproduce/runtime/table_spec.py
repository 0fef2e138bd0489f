"""A table is a declarative spec (``conf/table/<name>.yaml``); this module validates it and expands it
into the models to train and the cells to evaluate.

Spec fields:

- ``name``, ``title``, ``protocol`` (text: which protocol each column follows);
- ``data``: the data config group; ``overrides``: overrides applied to every train and evaluate run,
  ``train_overrides``: to every training run only;
- ``seeds``: one model set and one evaluation per seed (mean and spread are reported);
- ``eval_images``: test images per cell, rows may change it; ``samples`` (all/correct/misclassified),
  ``per_class`` (at most k images per class) and ``sampling_seed`` choose them (rows may change
  them too): ``eval_images`` images that pass the ``samples`` filter, see
  :mod:`reproduce.runtime.sampling` (``samples: all`` without ``per_class``: the first N);
- ``models``: role -> ``{train: [overrides of conf/train.yaml], description, seed_offset}``; an override
  may refer to another role's best checkpoint as ``{checkpoint:<role>}`` (trained first);
  ``seed_offset: k`` trains that role with seed ``seed + k`` (e.g. two re-trainings that must differ);
  ``{pretrained: <model config>}`` instead of ``train`` uses a model config without training;
- ``metrics``: label -> metric spec shared by every row (``conf/metrics`` format); ``scorer: "@<reference>"``
  scores that column with a model of ``references`` instead of the row's scorer;
- ``rows``: ``{label, model, attributor (a conf/attributor config name), attributor_options, scorer,
  eval_images, samples, per_class, sampling_seed, target, metric_options: {metric label: {option: value}},
  skip_metrics: [labels]}``;
- ``columns``: ``{label, key, direction?, scale?, digits?}``; ``key`` is a result scalar
  (``accuracy`` or ``<metric label>/<scalar>``);
- ``references``: name -> model role, extra models handed to every cell (stability metrics refer to
  them as ``"@name"`` in their options);
- ``paper``: ``{row label: {column label: value}}``, the published numbers where known (never invented).

Row ``attributor_options`` may also hold ``{checkpoint:<role>}`` (e.g. SMDL's evidential model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from reproduce.checks import check_int
from reproduce.errors import ConfigError
from reproduce.metrics.registry import METRICS
from reproduce.runtime.paths import check_run_name, group_options

CHECKPOINT_REF = re.compile(r"\{checkpoint:([A-Za-z0-9_\-]+)\}")
MODEL_KEYS = ("train", "pretrained", "description", "seed_offset")
# Keys a row may set for its cells, beside the spec-wide defaults of the same name.
ROW_SAMPLING_KEYS = ("eval_images", "samples", "per_class", "sampling_seed", "target")


COLUMN_KEYS = {"label", "key", "direction", "scale", "digits"}


@dataclass(frozen=True)
class ModelJob:
    role: str
    seed: int              # the table's seed (the run's name and the key of its checkpoint)
    overrides: tuple[str, ...]
    pretrained: dict[str, Any] | None = None
    seed_offset: int = 0   # the model is trained with seed + seed_offset

    @property
    def train_seed(self) -> int:
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


@dataclass
class TableSpec:
    raw: dict[str, Any]
    name: str = ""
    title: str = ""
    protocol: str = ""
    data: str = "synthetic"
    overrides: list[str] = field(default_factory=list)
    train_overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    eval_images: int | None = 200
    samples: str | None = None          # None: the evaluate config's default
    per_class: int | None = None
    sampling_seed: int | None = None
    target: str | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)
    paper: dict[str, dict[str, Any]] = field(default_factory=dict)

    @staticmethod
    def from_config(raw: dict[str, Any]) -> "TableSpec":
        name = _need(raw, "name", str)
        spec = TableSpec(
            raw=raw, name=name, title=str(raw.get("title") or name), protocol=str(raw.get("protocol") or ""),
            data=str(raw.get("data") or "synthetic"),
            overrides=[str(o) for o in raw.get("overrides") or []],
            train_overrides=[str(o) for o in raw.get("train_overrides") or []],
            seeds=[int(s) for s in raw.get("seeds") or [0]],
            eval_images=raw.get("eval_images", 200), samples=raw.get("samples"), per_class=raw.get("per_class"),
            sampling_seed=raw.get("sampling_seed"), target=raw.get("target"),
            models=_need(raw, "models", dict), metrics=raw.get("metrics") or {},
            references=raw.get("references") or {}, rows=_need(raw, "rows", list),
            columns=_need(raw, "columns", list), paper=raw.get("paper") or {},
        )
        spec.validate()
        return spec

    def row_setting(self, row: dict[str, Any], key: str) -> Any:
        """A row's ``eval_images``/``samples``/``per_class``/``sampling_seed``/``target``, else the spec's."""
        return row[key] if key in row else getattr(self, key)

    # --- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        where = f"table {self.name!r}"
        check_run_name("table.name", self.name)
        if not self.rows:
            raise ConfigError(f"{where} has no rows.")
        self._validate_models(where)
        known_metrics = set(METRICS.names())
        for label, metric in self.metrics.items():
            name = (metric or {}).get("name", label)
            if name not in known_metrics:
                raise ConfigError(f"{where}: metric {label!r} uses unknown metric {name!r}; available: {sorted(known_metrics)}.")
        for name, role in self.references.items():
            if role not in self.models:
                raise ConfigError(f"{where}: reference {name!r} names model {role!r}, which is not a model of the table.")
        self._validate_rows(where)
        self._validate_columns(where)

    def _validate_models(self, where: str) -> None:
        for role, model in self.models.items():
            if not isinstance(model, dict) or ("train" in model) == ("pretrained" in model):
                raise ConfigError(f"{where}: model {role!r} needs exactly one of `train` (overrides) or `pretrained`.")
            unknown = sorted(set(model) - set(MODEL_KEYS))
            if unknown:
                raise ConfigError(f"{where}: model {role!r} has unknown key(s) {unknown}; a model has {list(MODEL_KEYS)}.")
            check_int(f"{where}: models.{role}.seed_offset", model.get("seed_offset", 0), minimum=0)
            for ref in self._refs(model):
                if ref not in self.models:
                    raise ConfigError(f"{where}: model {role!r} refers to {{checkpoint:{ref}}}, which is not a model of the table.")
        self._check_cycles()

    def _validate_rows(self, where: str) -> None:
        known_attributors = set(group_options("attributor"))
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

    def _validate_columns(self, where: str) -> None:
        keys = {"accuracy"} | {f"{m}/" for m in self.metrics}
        for column in self.columns:
            if not isinstance(column, dict) or "label" not in column or "key" not in column:
                raise ConfigError(f"{where}: every column needs a label and a key, got {column!r}.")
            unknown = sorted(set(column) - COLUMN_KEYS)
            if unknown:  # e.g. an unquoted comma in a label splits it into a second key
                raise ConfigError(f"{where}: column {column['label']!r} has unknown key(s) {unknown}; a column "
                                  f"has {sorted(COLUMN_KEYS)} (quote a label that contains a comma or colon).")
            key = column["key"]
            if key != "accuracy" and not any(key.startswith(k) for k in keys if k.endswith("/")):
                raise ConfigError(
                    f"{where}: column {column['label']!r} reads {key!r}; keys are 'accuracy' or "
                    f"'<metric label>/<scalar>' with metric labels {sorted(self.metrics)}."
                )
        labels = {r["label"] for r in self.rows}
        for row_label, values in self.paper.items():
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
        for role in self.references.values():
            add(role)
        return [
            ModelJob(role=role, seed=seed, overrides=tuple(str(o) for o in self.models[role].get("train") or []),
                     pretrained=self.models[role].get("pretrained"),
                     seed_offset=int(self.models[role].get("seed_offset", 0)))
            for seed in self.seeds for role in needed
        ]

    def cells(self) -> list[Cell]:
        return [Cell(row=row, seed=seed, index=i) for i, (seed, row) in enumerate((s, r) for s in self.seeds for r in self.rows)]


def _need(raw: dict[str, Any], key: str, kind: type):
    value = raw.get(key)
    if not isinstance(value, kind) or not value:
        raise ConfigError(f"The table spec needs a non-empty `{key}` ({kind.__name__}); see conf/table/table3.yaml.")
    return value
