"""The papers' claims as declarative specs, validated before any work, and their verdicts.

A claims file ``conf/claims/<paper>.yaml``::

    paper: "MoXI (Sumiyasu et al., CVPR 2024)"
    claims:
      - id: moxi-insertion-4            # unique over all files
        statement: "With 4 % of the patches shown in MoXI's order, accuracy is far above Grad-CAM's."
        table: moxi                     # conf/table/<table>.yaml
        row: MoXI (insertion order)     # a row label of the table ("*": every row but `against` and `exclude`)
        against: {row: Grad-CAM}        # or {constant: 4096}; optional factor: k (compare with k x the row)
        column: Acc 4% shown (%)        # a column label of the table
        direction: higher               # the claim: row higher / lower than against
        effect: difference              # or relative: row / against - 1, in %
        margin: 10                      # optional, in the column's units (in % for relative effects);
                                        # >= 0 for higher, <= 0 for lower
        paper_number: "90 % vs 2 %"     # the paper's own number, only where known (never invented)
        source: "CVPR'24, Sec. 5.1"     # where the paper's number comes from
        variant_of: <claim id>          # optional: a debatable protocol choice, as a second claim row
        reason: "why this variant"      # required with variant_of
        each:                           # optional: one claim per item, the item's fields override
          - {against: {row: Attention rollout}, paper_number: "90 % vs 4 %"}

**Verdicts** come from the paired bootstrap of :mod:`reproduce.runtime.intervals` (same images and
seeds for both rows): *reproduced* when the 95 % interval of the effect lies beyond the margin in the
claimed direction; *contradicted* when it excludes zero the other way; *inconclusive* otherwise.
*untested*: the cells exist but give no interval (no per-image states, fewer than 10 images; the
reason is given); *not run*: the table's cells are not on disk.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import yaml

from reproduce.checks import suggest
from reproduce.errors import ConfigError, DataError
from reproduce.runtime.intervals import EFFECTS, Interval, cell_interval, paired_interval, row_states
from reproduce.runtime.paths import CONF_DIR
from reproduce.runtime.table_spec import slugify

DIRECTIONS = ("higher", "lower")
VERDICTS = ("reproduced", "contradicted", "inconclusive", "untested", "not run")
FIELDS = {"id", "statement", "table", "row", "against", "column", "direction", "effect", "margin", "paper_number",
          "source", "variant_of", "reason", "each", "exclude", "figure"}
CLAIMS_DIR = os.path.join(CONF_DIR, "claims")
TABLES_DIR = os.path.join(CONF_DIR, "table")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    statement: str
    table: str
    row: str
    column: str
    direction: str
    against_row: str | None = None
    constant: float | None = None
    factor: float = 1.0
    effect: str = "difference"
    margin: float = 0.0
    paper_number: str | None = None
    source: str | None = None
    variant_of: str | None = None
    reason: str | None = None
    figure: str | None = None
    file: str = ""

    @property
    def against(self) -> str:
        if self.against_row is not None:
            return self.against_row if self.factor == 1 else f"{self.factor:g} x {self.against_row}"
        return f"{self.constant:g}"


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    effect: Interval | None = None
    ours: Interval | None = None
    theirs: Interval | None = None
    why: str = ""


# --- loading and validation ---------------------------------------------------------------------------
def claim_files(directory: str = CLAIMS_DIR) -> list[str]:
    return sorted(f[:-5] for f in os.listdir(directory) if f.endswith(".yaml")) if os.path.isdir(directory) else []


def table_specs(directory: str = TABLES_DIR) -> dict[str, dict[str, Any]]:
    """Every table spec's raw YAML by name (rows and columns are all validation needs)."""
    out = {}
    for f in sorted(os.listdir(directory)):
        if f.endswith(".yaml"):
            with open(os.path.join(directory, f)) as handle:
                out[f[:-5]] = yaml.safe_load(handle) or {}
    return out


def load_claims(names: list[str] | None = None, directory: str = CLAIMS_DIR,
                tables: dict[str, dict[str, Any]] | None = None) -> list[Claim]:
    """The claims of ``names`` (default: every file), expanded and validated against ``tables``
    (default: ``conf/table``). Every problem of every claim is reported at once, each naming its claim."""
    claims, problems = check_claims(names, directory, tables)
    if problems:
        raise ConfigError("Invalid claims (fix them before running the report):\n  " + "\n  ".join(problems))
    return claims


def check_claims(names: list[str] | None = None, directory: str = CLAIMS_DIR,
                 tables: dict[str, dict[str, Any]] | None = None) -> tuple[list[Claim], list[str]]:
    """``(valid claims, problems)``: :func:`load_claims` without raising."""
    tables = table_specs() if tables is None else tables
    available = claim_files(directory)
    claims, problems = [], []
    for name in names if names is not None else available:
        if name not in available:
            raise ConfigError(f"No claims file conf/claims/{name}.yaml; files: {available}.{suggest(name, available)}")
        path = os.path.join(directory, f"{name}.yaml")
        with open(path) as handle:
            raw = yaml.safe_load(handle) or {}
        if not isinstance(raw.get("claims"), list) or not raw["claims"]:
            raise ConfigError(f"{path}: needs a non-empty `claims:` list (see reproduce/runtime/claims.py).")
        for entry in raw["claims"]:
            for item in _expanded(entry, tables):
                claim, errors = _parse(item, str(raw.get("paper", name)), path, tables)
                problems += errors
                if claim is not None:
                    claims.append(claim)
    ids = [c.id for c in claims]
    problems += [f"claim {i!r}: the id is used twice." for i in sorted({i for i in ids if ids.count(i) > 1})]
    problems += [f"claim {c.id!r} ({c.file}): variant_of {c.variant_of!r} is not a claim.{suggest(c.variant_of, ids)}"
                 for c in claims if c.variant_of and c.variant_of not in ids]
    return claims, problems


def _expanded(entry: dict[str, Any], tables: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One claim per ``each`` item (its fields override) and per row of ``row: "*"``."""
    entry = dict(entry)
    items = entry.pop("each", None) or [{}]
    out = []
    for item in items:
        merged = {**copy.deepcopy(entry), **item}
        suffix = item.get("row") or (item.get("against") or {}).get("row") if item else None
        if suffix and "id" not in item:
            merged["id"] = f"{entry.get('id')}/{slugify(str(suffix))}"
            if entry.get("variant_of") and "variant_of" not in item:  # the variant of the matching expansion
                merged["variant_of"] = f"{entry['variant_of']}/{slugify(str(suffix))}"
        if merged.get("row") == "*":  # every row that fills the column
            table = tables.get(merged.get("table")) or {}
            rows = [r.get("label") for r in table.get("rows") or [] if fills(table, r.get("label"), merged.get("column"))]
            skip = {(merged.get("against") or {}).get("row"), *(merged.get("exclude") or [])}
            out += [{**merged, "row": r, "id": f"{merged.get('id')}/{slugify(r)}"} for r in rows if r not in skip]
        else:
            out.append(merged)
    return out


def fills(table: dict[str, Any], label: Any, column: Any) -> bool:
    """Whether row ``label`` of the raw table spec fills ``column``: a row's ``skip_metrics`` leave
    the columns of those metrics empty (e.g. MoXI's insertion-order row has no deletion AUC)."""
    key = next((str(c.get("key", "")) for c in table.get("columns") or [] if c.get("label") == column), "accuracy")
    row = next((r for r in table.get("rows") or [] if r.get("label") == label), {})
    return key == "accuracy" or key.split("/")[0] not in (row.get("skip_metrics") or [])


def _parse(item: dict[str, Any], paper: str, path: str, tables: dict[str, dict[str, Any]]) -> tuple[Claim | None, list[str]]:
    name = item.get("id")
    where = f"claim {name!r} ({os.path.basename(path)})"
    if not isinstance(name, str) or not name:
        return None, [f"a claim in {path} has no id: give each claim a unique `id`."]
    problems = [f"{where}: unknown field {k!r}.{suggest(k, FIELDS)}" for k in item if k not in FIELDS]
    problems += [f"{where}: `{k}` is required." for k in ("statement", "table", "row", "column", "direction") if not item.get(k)]
    if problems:
        return None, problems
    table = tables.get(item["table"])
    if table is None:
        return None, [f"{where}: table {item['table']!r} does not exist (conf/table/).{suggest(item['table'], tables)}"]
    rows = [r.get("label") for r in table.get("rows") or []]
    columns = [c.get("label") for c in table.get("columns") or []]
    against = item.get("against") or {}
    for label in [item["row"], *([against["row"]] if "row" in against else [])]:
        if label not in rows:
            problems.append(f"{where}: table {item['table']!r} has no row {label!r}.{suggest(label, rows)}")
    if item["column"] not in columns:
        problems.append(f"{where}: table {item['table']!r} has no column {item['column']!r}.{suggest(item['column'], columns)}")
    else:
        problems += [f"{where}: row {label!r} of table {item['table']!r} skips the metric of column {item['column']!r} "
                     "(skip_metrics): its cell is empty." for label in [item["row"], against.get("row")]
                     if label in rows and not fills(table, label, item["column"])]
    direction = item["direction"]
    if direction not in DIRECTIONS:
        problems.append(f"{where}: direction must be one of {list(DIRECTIONS)}, got {direction!r}.")
    effect = item.get("effect", "difference")
    if effect not in EFFECTS:
        problems.append(f"{where}: effect must be one of {list(EFFECTS)}, got {effect!r}.")
    if ("row" in against) == ("constant" in against) or set(against) - {"row", "constant", "factor"}:
        problems.append(f"{where}: `against` must be {{row: <label>}} (optionally with factor) or {{constant: <number>}}, got {against!r}.")
    margin, factor, constant = _number(item.get("margin", 0.0)), _number(against.get("factor", 1.0)), _number(against.get("constant"))
    if margin is None:
        problems.append(f"{where}: margin must be a number, got {item.get('margin')!r}.")
    elif direction in DIRECTIONS and (margin < 0 if direction == "higher" else margin > 0):
        sign = ">= 0 (the row must exceed `against` by it)" if direction == "higher" else "<= 0 (the row must fall below `against` by it)"
        problems.append(f"{where}: margin {margin:g} has the wrong sign for direction {direction!r}: it must be {sign}.")
    if factor is None or factor <= 0:
        problems.append(f"{where}: against.factor must be a positive number, got {against.get('factor')!r}.")
    if "constant" in against and constant is None:
        problems.append(f"{where}: against.constant must be a number, got {against.get('constant')!r}.")
    if item.get("variant_of") and not item.get("reason"):
        problems.append(f"{where}: a variant (variant_of) must say why in `reason`.")
    if problems:
        return None, problems
    return Claim(id=name, paper=paper, statement=str(item["statement"]).strip(), table=item["table"], row=item["row"],
                 column=item["column"], direction=direction, against_row=against.get("row"), constant=constant,
                 factor=factor, effect=effect, margin=margin, paper_number=_text(item.get("paper_number")),
                 source=_text(item.get("source")), variant_of=item.get("variant_of"), reason=_text(item.get("reason")),
                 figure=item.get("figure"), file=os.path.basename(path)), []


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value).strip()


# --- verdicts ------------------------------------------------------------------------------------------
def verdict_of(effect: Interval, direction: str, margin: float) -> str:
    """The verdict of an effect interval (see the module docstring)."""
    if not effect.defined:
        return "untested"
    if direction == "higher":
        return "reproduced" if effect.low > margin else "contradicted" if effect.high < 0 else "inconclusive"
    return "reproduced" if effect.high < margin else "contradicted" if effect.low > 0 else "inconclusive"


class TableCells:
    """The cells of the tables on disk, by table and row (one result per seed)."""

    def __init__(self, root: str, specs: dict[str, Any], quick: bool = False):
        self.root, self.specs, self.quick = root, specs, quick  # name -> TableSpec (validated) to read
        self._rows: dict[str, dict[str, list[tuple[str, dict[str, Any] | None]]]] = {}
        self._loaded: dict[tuple[int, str], Any] = {}

    def row(self, table: str, label: str) -> tuple[list[dict[str, Any] | None], list[str]]:
        """Results (None where missing) and cell directories of a row, one per seed."""
        from reproduce.runtime.table_assembly import cell_result_path, read_cells
        from reproduce.runtime.table_intervals import row_results

        spec = self.specs[table]
        if table not in self._rows:
            results, _ = read_cells(self.root, spec)
            self._rows[table] = row_results(spec, results)
        cells = self._rows[table].get(label, [])
        return [r for _, r in cells], [os.path.dirname(cell_result_path(self.root, spec, k)) for k, _ in cells]


def evaluate(claim: Claim, cells: TableCells) -> Verdict:
    """The verdict of one claim from the cells on disk."""
    spec = cells.specs.get(claim.table)
    if spec is None:
        return Verdict(claim, "not run", why=f"table {claim.table!r} was not loaded")
    column = next(c for c in spec.columns if c["label"] == claim.column)
    key, scale = column["key"], float(column.get("scale", 1.0))
    results, dirs = cells.row(claim.table, claim.row)
    a, why_a = row_states(results, key, dirs, cells._loaded)
    b, why_b = None, ""
    if claim.against_row is not None:
        results_b, dirs_b = cells.row(claim.table, claim.against_row)
        b, why_b = row_states(results_b, key, dirs_b, cells._loaded)
    if "not run" in (why_a, why_b):
        missing = claim.row if why_a == "not run" else claim.against_row
        run = f"python -m reproduce.table table={claim.table}{' quick=true' if cells.quick else ''}"
        return Verdict(claim, "not run", why=f"no cells of row {missing!r} in table {claim.table!r} (run `{run}`)")
    if a is None or (claim.against_row is not None and b is None):
        return Verdict(claim, "untested", why=why_a or why_b)
    ours = cell_interval(a, key).scaled(scale)
    theirs = cell_interval(b, key).scaled(scale) if b is not None else None
    constant = None if claim.constant is None else claim.constant / scale
    effect = paired_interval(a, b, key, constant=constant, factor=claim.factor, effect=claim.effect)
    if claim.effect == "difference":
        effect = effect.scaled(scale)
    verdict = verdict_of(effect, claim.direction, claim.margin)
    return Verdict(claim, verdict, effect, ours, theirs, why=effect.note)


def load_specs(names: set[str], directory: str = TABLES_DIR, quick: bool = False) -> dict[str, Any]:
    """Validated :class:`TableSpec` of each named table (the ``quick`` preview where asked)."""
    from reproduce.runtime.quick import quick_spec
    from reproduce.runtime.table_spec import TableSpec

    raw = table_specs(directory)
    missing = sorted(names - set(raw))
    if missing:
        raise DataError(f"Tables {missing} have no spec in {directory}.")
    return {name: TableSpec.from_config(quick_spec(raw[name]) if quick else raw[name]) for name in sorted(names)}
