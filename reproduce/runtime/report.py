"""``results/REPORT.md``: the claims scoreboard first, then every table with its protocol and figures.

:func:`build_report` validates every claim (:mod:`reproduce.runtime.claims`) before any work, then
re-assembles each table that has cells on disk (so every table carries its intervals), judges each
claim from the cells, draws the report figures (:mod:`reproduce.runtime.report_figures`), writes
the report atomically and logs the scoreboard to W&B as one table of one run (group ``report``).
It works from whatever results exist: a claim whose table was not run says "not run".
"""

from __future__ import annotations

import datetime
import os
import platform
from collections import Counter
from dataclasses import dataclass
from typing import Any

from reproduce.atomic import atomic_write_text
from reproduce.runtime.claims import VERDICTS, Claim, TableCells, Verdict, evaluate, load_claims, load_specs
from reproduce.runtime.intervals import CONFIDENCE, MIN_IMAGES, N_RESAMPLES, Interval

SCOREBOARD_COLUMNS = ["claim", "paper", "statement", "table", "row", "against", "column", "direction", "margin",
                      "paper_number", "ours", "ours_low", "ours_high", "against_value", "effect", "effect_low",
                      "effect_high", "n_images", "verdict", "why"]


@dataclass
class Report:
    path: str
    verdicts: list[Verdict]
    figures: dict[str, dict[str, str]]
    markdown: str

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(v.verdict for v in self.verdicts)
        return {k: found.get(k, 0) for k in VERDICTS}


def build_report(root: str, claim_names: list[str] | None = None, quick: bool = False, wandb_mode: str = "offline",
                 figures: bool = True, claims_dir: str | None = None, tables_dir: str | None = None,
                 tables: list[str] | None = None) -> Report:
    """Judge the claims from the cells under ``root`` and write ``results/REPORT.md`` (see the module
    docstring); ``tables``: tables shown besides those the claims name (e.g. one without claims)."""
    from reproduce.runtime.claims import CLAIMS_DIR, TABLES_DIR, table_specs
    from reproduce.runtime.table_assembly import assemble, read_cells

    tables_dir = tables_dir or TABLES_DIR
    claims = load_claims(claim_names, claims_dir or CLAIMS_DIR, table_specs(tables_dir))  # fails before any work
    specs = load_specs({c.table for c in claims} | set(tables or ()), tables_dir, quick=quick)
    drawn: dict[str, dict[str, str]] = {}
    for name, spec in specs.items():
        results, missing = read_cells(root, spec)
        if results:
            assemble(root, spec)
            drawn[name] = table_figures_of(root, spec, results) if figures else {}
    cells = TableCells(root, specs, quick)
    verdicts = [evaluate(claim, cells) for claim in claims]
    markdown = render(verdicts, specs, drawn, root, quick)
    path = os.path.join(root, "results", "REPORT_quick.md" if quick else "REPORT.md")
    atomic_write_text(path, markdown)
    report = Report(path, verdicts, drawn, markdown)
    if wandb_mode != "disabled":
        log_scoreboard(report, root, wandb_mode)
    return report


def table_figures_of(root: str, spec: Any, results: dict[str, dict[str, Any]]) -> dict[str, str]:
    from reproduce.runtime.report_figures import table_figures

    return table_figures(root, spec, results)


# --- text -----------------------------------------------------------------------------------------------
def _value(interval: Interval | None, digits: int, unit: str = "", signed: bool = False) -> str:
    if interval is None or interval.estimate is None:
        return "—"
    sign = "+" if signed else ""
    text = f"{interval.estimate:{sign}.{digits}f}{unit}"
    if interval.defined:
        return f"{text} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"
    return f"{text} (n = {interval.n_images}: no CI)"


def _digits(claim: Claim, specs: dict[str, Any]) -> int:
    spec = specs.get(claim.table)
    column = next((c for c in spec.columns if c["label"] == claim.column), {}) if spec else {}
    return int(column.get("digits", 2))


def ours_text(v: Verdict, specs: dict[str, Any]) -> str:
    d = _digits(v.claim, specs)
    if v.ours is None:
        return "—"
    against = _value(v.theirs, d) if v.theirs is not None else f"{v.claim.constant:g}"
    unit, effect_digits = (" %", 1) if v.claim.effect == "relative" else ("", d)
    return f"{_value(v.ours, d)} vs {against}; effect {_value(v.effect, effect_digits, unit, signed=True)}"


def _claim_cell(c: Claim) -> str:
    margin = f", margin {c.margin:+g}{' %' if c.effect == 'relative' else ''}" if c.margin else ""
    rel = " (relative)" if c.effect == "relative" else ""
    variant = f" *Variant of {c.variant_of}: {c.reason}*" if c.variant_of else ""
    return (f"**{c.id}**: {c.statement}{variant} <br>*{c.row}* vs *{c.against}*, {c.column}{rel}, "
            f"{c.direction}{margin}")


def _links(c: Claim, specs: dict[str, Any], drawn: dict[str, dict[str, str]]) -> str:
    name = specs[c.table].name if c.table in specs else c.table
    figure = c.figure or os.path.basename(drawn.get(c.table, {}).get("intervals", "")) or None
    return f"[{name}]({name}.md)" + (f" · [figure]({figure})" if figure else "")


def render(verdicts: list[Verdict], specs: dict[str, Any], drawn: dict[str, dict[str, str]], root: str,
           quick: bool) -> str:
    counts = Counter(v.verdict for v in verdicts)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# {'QUICK preview: ' if quick else ''}Reproduction report", "",
             f"Generated {now} on {platform.machine()} ({os.cpu_count()} CPUs, {platform.system()}) from the cells "
             f"under `{os.path.join(root, 'outputs', 'tables')}`.", "",
             f"Intervals: {CONFIDENCE:.0%} BCa bootstrap over images (and seeds), {N_RESAMPLES} resamples, seeded "
             f"(`scipy.stats.bootstrap`); effects are paired (same images, same seeds); no interval below "
             f"{MIN_IMAGES} images. Verdicts: **reproduced** = the effect's interval lies beyond the margin in the "
             "claimed direction; **contradicted** = it excludes zero the other way; **inconclusive** otherwise; "
             "**untested** = no interval (the reason is given); **not run** = the table's cells are not on disk.", "",
             "## Scoreboard", "",
             " · ".join(f"{k}: {counts.get(k, 0)}" for k in VERDICTS), ""]
    for paper in dict.fromkeys(v.claim.paper for v in verdicts):
        lines += [f"### {paper}", "", "| Claim | Paper's number | Ours (95 % CI) | Verdict | Table · figure |",
                  "|---|---|---|---|---|"]
        for v in (v for v in verdicts if v.claim.paper == paper):
            paper_number = v.claim.paper_number or "not known"
            if v.claim.source and v.claim.paper_number:
                paper_number += f" <br>*({v.claim.source})*"
            why = f" <br>*{v.why}*" if v.why else ""
            lines.append(f"| {_claim_cell(v.claim)} | {paper_number} | {ours_text(v, specs)} | **{v.verdict}**{why} | "
                         f"{_links(v.claim, specs, drawn)} |")
        lines.append("")
    lines += ["## Tables", ""]
    for name, spec in specs.items():
        lines += [f"### {spec.raw.get('title', spec.name)}", ""]
        if name not in drawn:
            lines += [f"Not run: no cells on disk (`python -m reproduce.table table={name}{' quick=true' if quick else ''}`).", ""]
            continue
        if spec.raw.get("protocol"):
            lines += [str(spec.raw["protocol"]).strip(), ""]
        lines += [f"Table: [{spec.name}.md]({spec.name}.md) (CSV with the interval bounds: [{spec.name}.csv]({spec.name}.csv))", ""]
        for kind in ("intervals", "curves", "maps"):
            if kind in drawn[name]:
                lines += [f"![{spec.name} {kind}]({os.path.basename(drawn[name][kind])})", ""]
        if os.path.exists(os.path.join(root, "results", f"{spec.name}.png")):
            lines += [f"![{spec.name}]({spec.name}.png)", ""]
    return "\n".join(lines) + "\n"


# --- W&B ----------------------------------------------------------------------------------------------
def scoreboard_rows(verdicts: list[Verdict]) -> list[list[Any]]:
    """One row per claim, the columns of :data:`SCOREBOARD_COLUMNS` (numbers as numbers)."""
    def num(interval: Interval | None, field: str) -> float | None:
        return None if interval is None else getattr(interval, field)

    return [[v.claim.id, v.claim.paper, v.claim.statement, v.claim.table, v.claim.row, v.claim.against, v.claim.column,
             v.claim.direction, v.claim.margin, v.claim.paper_number or "", num(v.ours, "estimate"), num(v.ours, "low"),
             num(v.ours, "high"), num(v.theirs, "estimate") if v.theirs else v.claim.constant, num(v.effect, "estimate"),
             num(v.effect, "low"), num(v.effect, "high"), v.effect.n_images if v.effect else 0, v.verdict, v.why]
            for v in verdicts]


def log_scoreboard(report: Report, root: str, mode: str) -> None:
    import wandb

    run = wandb.init(project="reproduce", group="report", job_type="report", name="claims-scoreboard",
                     dir=os.path.join(root, "outputs", "report"), mode=mode, reinit="create_new",
                     config={"report": report.path})
    try:
        table = wandb.Table(columns=SCOREBOARD_COLUMNS, data=scoreboard_rows(report.verdicts))
        run.log({"scoreboard": table, **{f"verdicts/{k}": n for k, n in report.counts.items()}})
    finally:
        run.finish()
