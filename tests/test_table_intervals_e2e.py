"""End to end: cells evaluated by the real evaluation module write per-image states; the published
table carries 95 % intervals (CSV, Markdown, JSON), "best" is bold only where a paired bootstrap says
so, the table's figures are drawn, and the report judges a claim written here from those cells.

Two rows on one model and the same 16 test images: the ``oracle_mask`` control (the ground truth as
the map: it localises perfectly) and the seeded ``random`` control. Columns: accuracy (a mean over
images; equal for both rows: a tie), the pointing game (a mean) and the standard PxAP (pooled over
pixels): the oracle wins both, significantly. The fast test builds the cells in this process (an
untrained model, no training); the slow one runs ``python -m reproduce.table`` and
``python -m reproduce.report`` themselves (in this process, on a 1-epoch model).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from unittest import mock

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from reproduce.runtime.paths import TableLayout
from reproduce.runtime.table_spec import TableSpec

SPEC = {
    "name": "e2e", "title": "Intervals end to end (tests)", "protocol": "Two controls on one model.",
    "data": "synthetic", "overrides": ["data.options.sizes={train:48,val:16,test:16}"], "eval_images": 16,
    "models": {"net": {"train": ["experiment=quickstart_cnn", "trainer.max_epochs=1", "data.batch_size=16"]}},
    "metrics": {"pointing": {"name": "pointing_game"}, "pxap": {"name": "pxap", "variant": "standard", "bins": 20}},
    "rows": [{"label": "Oracle", "model": "net", "attributor": "oracle_mask"},
             {"label": "Random", "model": "net", "attributor": "random"}],
    "columns": [{"label": "Accuracy (%)", "key": "accuracy", "digits": 1},
                {"label": "Pointing (%)", "key": "pointing/accuracy", "scale": 100, "digits": 1},
                {"label": "PxAP", "key": "pxap/pxap", "digits": 1}],
}
CLAIMS = {"paper": "Toy paper", "claims": [
    {"id": "oracle-localises", "statement": "The ground truth localises better than a random map.", "table": "e2e",
     "row": "Oracle", "against": {"row": "Random"}, "column": "PxAP", "direction": "higher", "margin": 10},
    {"id": "same-accuracy", "statement": "Both rows explain the same model.", "table": "e2e", "row": "Oracle",
     "against": {"row": "Random"}, "column": "Accuracy (%)", "direction": "higher"},
]}


def _loader():
    g = torch.Generator().manual_seed(5)
    items = []
    for i in range(16):
        mask = torch.zeros(64, 64, dtype=torch.bool)
        top, left = int(torch.randint(0, 40, (), generator=g)), int(torch.randint(0, 40, (), generator=g))
        mask[top:top + 20, left:left + 20] = True
        items.append({"image": torch.randn(3, 64, 64, generator=g), "label": i % 6, "index": 200 + i, "mask": mask})
    return DataLoader(items, batch_size=8)


def _check_table(root, smoke=False):
    """The published table's intervals, significance-aware best and figures."""
    layout = TableLayout(root, "e2e", smoke)
    with open(layout.result_file(".csv")) as f:
        table = {r["method"]: r for r in csv.DictReader(line for line in f if not line.startswith("#"))}
    for label in ("Oracle", "Random"):
        for column in ("Accuracy (%)", "Pointing (%)", "PxAP"):
            low, mean, high = (float(table[label][f"{column}{s}"]) for s in (" lo", "", " hi"))
            assert low <= mean <= high and table[label][f"{column} n images"] == "16", (label, column)
    assert float(table["Oracle"]["PxAP"]) == pytest.approx(100.0)
    md = open(layout.result_file(".md")).read()
    assert "**100.0 ± 0.0**" in md and " ± " in md.split("| Random | net | ")[1] and "95 % bootstrap" in md
    assembled = json.load(open(layout.result_file(".json")))
    assert assembled["best"] == {"Accuracy (%)": ["Oracle", "Random"], "Pointing (%)": ["Oracle"], "PxAP": ["Oracle"]}
    versus = assembled["intervals"]["versus_best"]["PxAP"]["Random"]
    assert versus["low"] > 0 and versus["n_images"] == 16  # the paired difference Oracle - Random excludes 0
    for suffix in ("_intervals.png", "_maps.png", ".png", "_agreement.png"):
        assert os.path.getsize(layout.result_file(suffix)) > 5_000, suffix


def _check_report(report_md):
    lines = report_md.splitlines()
    assert "**reproduced**" in next(line for line in lines if line.startswith("| **oracle-localises**"))
    assert "**inconclusive**" in next(line for line in lines if line.startswith("| **same-accuracy**"))


def _write_claims(tmp_path):
    claims_dir, tables_dir = tmp_path / "claims", tmp_path / "conf" / "table"
    claims_dir.mkdir()
    tables_dir.mkdir(parents=True, exist_ok=True)
    (claims_dir / "e2e.yaml").write_text(yaml.safe_dump(CLAIMS))
    (tables_dir / "e2e.yaml").write_text(yaml.safe_dump(SPEC))
    return str(claims_dir), str(tables_dir)


def test_cells_with_per_image_states_give_intervals_best_figures_and_a_verdict(cnn, tmp_path):
    from reproduce.lit.evaluation import AttributionEvaluation
    from reproduce.runtime.report import build_report
    from reproduce.runtime.table_publish import publish

    spec, root = TableSpec.from_config(SPEC), str(tmp_path / "root")
    for cell in spec.cells():
        module = AttributionEvaluation(cnn, cell.row["attributor"], metrics=spec.metrics, num_overlays=4,
                                       result_path=TableLayout(root, "e2e").cell_result(cell.key))
        L.Trainer(accelerator="cpu", logger=False, inference_mode=False, enable_progress_bar=False,
                  enable_model_summary=False, enable_checkpointing=False).test(module, dataloaders=_loader(), verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):
        publish(spec, root, wandb_mode="disabled")
    _check_table(root)
    claims_dir, tables_dir = _write_claims(tmp_path)
    report = build_report(root, ["e2e"], wandb_mode="disabled", figures=False, claims_dir=claims_dir, tables_dir=tables_dir)
    _check_report(report.markdown)


@pytest.mark.slow
def test_the_table_and_report_commands_end_to_end(tmp_path, monkeypatch):
    """``python -m reproduce.table`` trains the model and evaluates both cells (real data, sampler and
    cell files), then ``python -m reproduce.report`` judges the claims written here."""
    import reproduce.runtime.claims as claims_module
    from reproduce.runtime.cli_errors import run_entry_point

    claims_dir, tables_dir = _write_claims(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.chdir(root)  # Hydra's own log file lands under root
    argv = ["reproduce.table", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "table=e2e", f"paths.root={root}",
            "run_logger=none", "wandb_mode=disabled", "progress_bar=false"]
    from reproduce.table import PROG, main

    with mock.patch.object(sys, "argv", argv), contextlib.redirect_stdout(io.StringIO()):
        run_entry_point(main, PROG, "table")
    _check_table(str(root))
    monkeypatch.setattr(claims_module, "CLAIMS_DIR", claims_dir)  # the report reads them at call time
    monkeypatch.setattr(claims_module, "TABLES_DIR", tables_dir)
    from reproduce.report import main as report_main

    out = io.StringIO()
    argv = ["reproduce.report", f"paths.root={root}", "claim_files=[e2e]", "wandb_mode=disabled", "figures=false"]
    with mock.patch.object(sys, "argv", argv), contextlib.redirect_stdout(out):
        report_main()
    assert "reproduced 1" in out.getvalue()
    _check_report(open(os.path.join(root, "results", "REPORT.md")).read())
