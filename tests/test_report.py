"""The report: scoreboard and tables from hand-made cells, identical from two runs, "not run" for
tables without cells, the W&B scoreboard table, the figures (intervals, zoomed curves, map grid), the
QUICK preview spec, and the entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from reproduce.errors import ConfigError
from reproduce.runtime.quick import QUICK_TRAIN, quick_spec
from reproduce.runtime.report import SCOREBOARD_COLUMNS, build_report, log_scoreboard
from reproduce.runtime.table_assembly import cell_result_path
from reproduce.runtime.table_spec import TableSpec
from reproduce.viz.intervals import interval_figure, saturation_x
from reproduce.viz.map_grid import load_overlay_maps, save_overlay_maps
from test_claims import TOY, claim, write_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNRUN = {**TOY, "name": "unrun", "title": "Never run"}


def _setup(tmp_path):
    claims = [claim("faster", "A", "B"), claim("tie", "A", "C"),
              {**claim("elsewhere", "A", "B"), "table": "unrun", "paper_number": "3 vs 4", "source": "Table 9"}]
    root, claims_dir, tables_dir = write_setup(tmp_path, claims, tables={"toyclaims": TOY, "unrun": UNRUN})
    spec = TableSpec.from_config(TOY)
    g = torch.Generator().manual_seed(0)
    for key in ("a-s0", "b-s0"):
        items = [{"image": torch.rand(3, 16, 16, generator=g), "map": torch.rand(16, 16, generator=g),
                  "mask": torch.rand(16, 16, generator=g) > 0.5, "label": i % 3, "index": 10 + i} for i in range(4)]
        save_overlay_maps(os.path.join(os.path.dirname(cell_result_path(root, spec, key)), "maps.npz"), items)
    return root, claims_dir, tables_dir


def _body(markdown: str) -> str:
    return "\n".join(line for line in markdown.splitlines() if not line.startswith("Generated "))


def test_report_scoreboard_tables_and_figures(tmp_path):
    root, claims_dir, tables_dir = _setup(tmp_path)
    report = build_report(root, wandb_mode="disabled", claims_dir=claims_dir, tables_dir=tables_dir)
    md = open(report.path).read()
    assert report.path == os.path.join(root, "results", "REPORT.md") and md == report.markdown
    assert md.index("## Scoreboard") < md.index("## Tables")
    assert report.counts["reproduced"] == 1 and report.counts["inconclusive"] == 1 and report.counts["not run"] == 1
    faster = next(line for line in md.splitlines() if line.startswith("| **faster**"))
    assert "**reproduced**" in faster and "effect -" in faster and "[toyclaims](toyclaims.md)" in faster
    assert "toyclaims_intervals.png" in faster
    elsewhere = next(line for line in md.splitlines() if line.startswith("| **elsewhere**"))
    assert "3 vs 4" in elsewhere and "Table 9" in elsewhere and "**not run**" in elsewhere
    assert "Not run: no cells on disk" in md and "Hand-made cells." in md
    table = open(os.path.join(root, "results", "toyclaims.md")).read()
    assert "| D | m | 30.1 (n = 8: no CI) |" in table  # the lowest mean, but over 8 images: not bold
    for kind in ("intervals", "maps"):
        assert os.path.exists(report.figures["toyclaims"][kind]), kind
        assert os.path.basename(report.figures["toyclaims"][kind]) in md
    csv_first = open(os.path.join(root, "results", "toyclaims.csv")).read()
    assert "Time (ms) lo" in csv_first  # re-assembled with intervals
    first, second = (build_report(root, wandb_mode="disabled", claims_dir=claims_dir, tables_dir=tables_dir, figures=False)
                     for _ in range(2))
    assert _body(first.markdown) == _body(second.markdown)  # same cells, same seed: the same report
    assert open(os.path.join(root, "results", "toyclaims.csv")).read() == csv_first


def test_scoreboard_is_logged_as_one_wandb_table(tmp_path, monkeypatch):
    root, claims_dir, tables_dir = _setup(tmp_path)
    report = build_report(root, wandb_mode="disabled", claims_dir=claims_dir, tables_dir=tables_dir, figures=False)
    logged, calls = {}, []

    class Run:
        def log(self, data):
            logged.update(data)

        def finish(self):
            calls.append("finish")

    class Table:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    fake = type(sys)("wandb")
    fake.init = lambda **kw: calls.append(kw) or Run()
    fake.Table = Table
    monkeypatch.setitem(sys.modules, "wandb", fake)
    log_scoreboard(report, root, "offline")
    assert calls[0]["group"] == "report" and calls[0]["mode"] == "offline" and calls[-1] == "finish"
    table = logged["scoreboard"]
    assert table.columns == SCOREBOARD_COLUMNS and len(table.data) == 3
    row = dict(zip(SCOREBOARD_COLUMNS, table.data[0]))
    assert row["claim"] == "faster" and row["verdict"] == "reproduced" and row["effect_high"] < 0
    assert logged["verdicts/not run"] == 1


def test_overlay_maps_round_trip():
    items = [{"image": torch.rand(3, 8, 8), "map": torch.randn(8, 8), "mask": None, "label": 2, "index": 7}]
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"maps-{os.getpid()}.npz")
    back = load_overlay_maps(save_overlay_maps(path, items))
    os.unlink(path)
    assert back[0]["index"] == 7 and back[0]["mask"] is None
    assert torch.allclose(back[0]["map"], items[0]["map"]) and torch.allclose(back[0]["image"], items[0]["image"], atol=1e-3)


def test_map_grid_draws_each_row_as_its_maps_blended_over_their_images(tmp_path):
    from reproduce.viz.map_grid import GAP, _strip, blend, map_grid

    image = torch.zeros(3, 4, 4)
    image[0] = 1.0  # a red image
    ramp = torch.arange(16.0).view(4, 4)  # min-max scaled: 0 at the top left, 1 at the bottom right
    # jet(0) is dark blue (0, 0, 0.5), jet(1) dark red (0.5, 0, 0); half of each over red.
    pixels = blend(image, ramp)
    np.testing.assert_allclose(pixels[0, 0], [0.5, 0.0, 0.25], atol=1e-6)
    np.testing.assert_allclose(pixels[3, 3], [0.75, 0.0, 0.0], atol=1e-6)
    items = [{"image": image, "map": ramp, "mask": torch.ones(4, 4, dtype=torch.bool), "index": i, "label": 0}
             for i in range(2)]
    rgb, mask = _strip(items, 3)  # 3 slots, 2 filled: the gaps and the empty slot stay white
    assert rgb.shape == (4, 3 * 4 + 2 * GAP, 3) and (rgb[:, 4:4 + GAP] == 1).all() and (rgb[:, -4:] == 1).all()
    np.testing.assert_allclose(rgb[:, 4 + GAP:8 + GAP], pixels)
    assert mask[:, :4].all() and not mask[:, 4:4 + GAP].any()
    path = map_grid([("A", items), ("B", items[:1])], str(tmp_path / "grid.png"), "toy")
    assert os.path.getsize(path) > 0


def test_interval_figure_draws_intervals_that_do_not_contain_their_estimate(tmp_path, monkeypatch):
    """A BCa bootstrap interval need not contain the estimate (a degenerate one differs from it by
    rounding): the figure draws it as it is instead of failing (it did, in a QUICK preview)."""
    import matplotlib.axes

    drawn = []
    real_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda ax, *a, **k: drawn.append(a[:2]) or real_plot(ax, *a, **k))
    rows = [{"label": "rounded", "values": {"c": (0.8, 0.8000000001, 0.8000000001)}},
            {"label": "outside", "values": {"c": (1.0, 1.5, 2.0)}}, {"label": "point", "values": {"c": (3.0, None, None)}}]
    path = interval_figure(rows, [{"label": "c"}], str(tmp_path / "i.png"), "t")
    assert os.path.getsize(path) > 0
    assert ([1.5, 2.0], [1, 1]) in drawn and ([1.0], [1]) in drawn and ([3.0], [2]) in drawn


def test_saturation_point_of_curves():
    x = np.linspace(0, 1, 101)
    fast, slow = np.minimum(1, x / 0.1), np.minimum(1, x / 0.3)
    assert saturation_x([(x, fast), (x, slow)]) == pytest.approx(0.28, abs=0.011)  # slow reaches 95 % at 0.285
    assert saturation_x([(x, x), (x, 1 - x)]) is None  # never settles: no zoom


def test_quick_preview_spec():
    raw = {"name": "t", "title": "T", "eval_images": 200, "rows": [{"label": "A"}, {"label": "B", "eval_images": 24},
                                                                    {"label": "C", "attributor_options": {"n": 5, "m": 1}}],
           "models": {"m": {"train": ["experiment=x", "trainer.max_epochs=4"]}, "p": {"pretrained": "efficientnet"}}}
    quick = quick_spec(raw)
    assert quick["name"] == "t_quick" and quick["title"].startswith("QUICK") and quick["eval_images"] == 50
    # every trained model trains briefly, its own epochs overridden (later overrides win); pretrained ones as they are
    assert quick["models"]["m"]["train"] == ["experiment=x", "trainer.max_epochs=4", *QUICK_TRAIN]
    assert quick["models"]["p"] == {"pretrained": "efficientnet"} and raw["models"]["m"]["train"][-1] == "trainer.max_epochs=4"
    assert [r.get("eval_images") for r in quick["rows"]] == [None, 10, None] and raw["eval_images"] == 200
    block = quick_spec({**raw, "quick": {"eval_images": 30, "drop_rows": ["A"], "rows": {"C": {"attributor_options": {"n": 1}}},
                                         "train_overrides": ["trainer.max_epochs=1"]}})
    assert block["eval_images"] == 30 and [r["label"] for r in block["rows"]] == ["B", "C"]
    assert block["rows"][1]["attributor_options"] == {"n": 1, "m": 1} and block["train_overrides"] == ["trainer.max_epochs=1"]
    with pytest.raises(ConfigError, match="unknown field"):
        quick_spec({**raw, "quick": {"eval_image": 3}})
    with pytest.raises(ConfigError, match="row 'Z'"):
        quick_spec({**raw, "quick": {"drop_rows": ["Z"]}})


@pytest.mark.slow  # two fresh interpreters with Hydra (~30 s on a loaded 2-core machine)
def test_entry_point_writes_the_report_from_whatever_exists(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO, "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", "reproduce.report", f"paths.root={tmp_path}", "claim_files=[moxi]",
                           "wandb_mode=disabled"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    md = open(tmp_path / "results" / "REPORT.md").read()
    assert "moxi-insertion-4/grad_cam" in md and "**not run**" in md and "90 % vs 2 %" in md
    bad = subprocess.run([sys.executable, "-m", "reproduce.report", f"paths.root={tmp_path}", "claim_files=[moxii]"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "Did you mean moxi" in bad.stderr


def test_claims_files_parse_as_yaml():
    for name in os.listdir(os.path.join(REPO, "conf", "claims")):
        with open(os.path.join(REPO, "conf", "claims", name)) as f:
            assert yaml.safe_load(f)["claims"], name


def test_quick_report_reads_the_previews(tmp_path):
    root, claims_dir, tables_dir = _setup(tmp_path)  # cells of the full table only
    report = build_report(root, quick=True, wandb_mode="disabled", claims_dir=claims_dir, tables_dir=tables_dir)
    assert report.path.endswith("REPORT_quick.md") and report.counts["not run"] == 3
    assert report.markdown.startswith("# QUICK preview") and "table=toyclaims quick=true" in report.markdown


def test_tables_without_claims_are_shown_when_named(tmp_path):
    """conf/report.yaml's ``tables``: a table no claim names (e.g. interventions) still gets its section."""
    root, claims_dir, tables_dir = write_setup(tmp_path, [claim("faster", "A", "B")], tables={"toyclaims": TOY, "unrun": UNRUN})
    plain = build_report(root, wandb_mode="disabled", figures=False, claims_dir=claims_dir, tables_dir=tables_dir)
    assert "### Never run" not in plain.markdown
    named = build_report(root, wandb_mode="disabled", figures=False, claims_dir=claims_dir, tables_dir=tables_dir,
                         tables=["unrun"])
    assert "### Never run" in named.markdown and "table=unrun`" in named.markdown and named.counts == plain.counts


def test_the_report_config_names_every_embedded_table_of_make_reproduce_all():
    with open(os.path.join(REPO, "conf", "report.yaml")) as f:
        tables = yaml.safe_load(f)["tables"]
    with open(os.path.join(REPO, "conf", "all.yaml")) as f:
        embedded = list(yaml.safe_load(f)["tables"])
    # comet_two_part reaches the report through its claim (comet-feature-coverage), not this list.
    assert set(tables) == set(embedded) - {"comet_two_part"}
    assert all(os.path.exists(os.path.join(REPO, "conf", "table", f"{t}.yaml")) for t in tables)
