"""Publish an assembled table: print it, draw its figures next to it, log everything to W&B.

Figures beside ``results/<name>.md``: the table (``.png``), its curves (``_curves.png``), the metric
agreement (``_agreement.png``), and those of :mod:`reproduce.runtime.report_figures`: every column
with its 95 % intervals (``_intervals.png``), the curves zoomed where they differ
(``_curves_zoom.png``) and the maps grid, methods by images (``_maps.png``)."""

from __future__ import annotations

import os

import wandb

from reproduce.runtime.console import where_things_went
from reproduce.runtime.metric_agreement import write_agreement
from reproduce.runtime.paths import TableLayout
from reproduce.runtime.report_figures import curve_panels, table_figures
from reproduce.runtime.table_assembly import Assembled, assemble
from reproduce.runtime.table_spec import TableSpec
from reproduce.viz.curves import curves_figure
from reproduce.viz.tables import table_figure


def publish(spec: TableSpec, root: str, wandb_mode: str = "offline", seconds: float | None = None,
            smoke: bool = False) -> Assembled:
    """Assemble the table, print it, draw its figures, log them to W&B and say where everything went."""
    layout = TableLayout(root, spec.name, smoke)
    assembled = assemble(root, spec, extra_meta={"seconds_last_run": seconds} if seconds is not None else None, smoke=smoke)
    print(assembled.markdown)
    figures = [table_figure(assembled.rows, spec.columns, assembled.best, assembled.directions,
                            layout.result_file(".png"), layout.title(spec.title))]
    panels = curve_panels(spec, assembled.results)
    if panels:
        figures.append(curves_figure(panels, layout.result_file("_curves.png"),
                                     title=layout.title(f"{spec.name}: curves (seed {spec.seeds[0]})")))
    figures += write_agreement(spec.name, assembled, spec.columns, layout.results_dir)  # <name>_agreement.{csv,md,png}
    # 95 % intervals (log axes for time and passes), the curves zoomed where they differ, the maps grid.
    figures += list(table_figures(root, spec, assembled.results, smoke).values())
    if seconds is not None:
        print(f"[reproduce.table] this run took {seconds / 60:.1f} min")
    if wandb_mode != "disabled":
        _log_to_wandb(spec, assembled, figures, layout, wandb_mode)
    for line in where_things_went("reproduce.table", layout.table_dir,
                                  [assembled.csv_path, assembled.md_path, assembled.json_path, *figures]):
        print(line)
    return assembled


def _log_to_wandb(spec: TableSpec, assembled: Assembled, figures: list[str], layout: TableLayout, mode: str) -> None:
    os.makedirs(layout.table_dir, exist_ok=True)
    run = wandb.init(project="reproduce", group=spec.name, job_type="smoke-table" if layout.smoke else "table",
                     name=f"{spec.name}-{'smoke-' if layout.smoke else ''}table", dir=layout.table_dir, mode=mode,
                     reinit="create_new", config={"table": spec.raw, "smoke": layout.smoke}, notes=layout.title(spec.title))
    try:
        columns = ["method", "model"] + [c["label"] for c in spec.columns]
        data = [[r["label"], r["model"]] + [r["values"][c["label"]][0] for c in spec.columns] for r in assembled.rows]
        run.log({f"{spec.name}/table": wandb.Table(columns=columns, data=data),
                 **{f"{spec.name}/{os.path.basename(p)}": wandb.Image(p) for p in figures}})
    finally:
        run.finish()
