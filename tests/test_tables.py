"""Table specs: validation, assembly from hand-written cell files, and smoke runs of the real specs."""

import copy
import csv
import json
import os

import pytest

from reproduce.errors import ConfigError
from reproduce.atomic import atomic_write_json
from reproduce.runtime.config_hash import to_plain
from reproduce.runtime.paths import CONF_DIR
from reproduce.runtime.table_assembly import assemble, cell_result_path
from reproduce.runtime.table_spec import TableSpec

SPECS = sorted(f[:-5] for f in os.listdir(os.path.join(CONF_DIR, "table")) if f.endswith(".yaml"))


def _spec(compose, name):
    return to_plain(compose("table", [f"table={name}"]).table)


@pytest.mark.parametrize("name", SPECS)
def test_every_table_spec_composes_and_validates(compose, name):
    spec = TableSpec.from_config(_spec(compose, name))
    assert spec.rows and spec.columns and spec.model_jobs()
    assert len({c.key for c in spec.cells()}) == len(spec.cells())


def _mutated(compose, change):
    raw = copy.deepcopy(_spec(compose, "table3"))
    change(raw)
    return raw


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["rows"][0].update(attributor="gradcamm"), "not in conf/attributor"),
        (lambda r: r["metrics"].update(bogus={"name": "pxapp"}), "unknown metric 'pxapp'"),
        (lambda r: r["columns"].append({"label": "x"}), "needs a label and a key"),
        (lambda r: r["columns"].append({"label": "x", "key": "nope/auc"}), "reads 'nope/auc'"),
        (lambda r: r["columns"].append({"label": "x", "key": "accuracy", "y)": None}), r"unknown key\(s\) \[.y\).\]"),
        (lambda r: r["rows"][0].update(model="ghost"), "uses model 'ghost'"),
        (lambda r: r["rows"].append(dict(r["rows"][0])), "appears twice"),
        (lambda r: r["rows"].append({**r["rows"][2], "label": "grad cam"}), "clashes"),
        (lambda r: r["models"]["blackbox"].update(train=["{checkpoint:comet}"]), "cycle"),
        (lambda r: r.update(paper={"Nope": {"PxAP": 1}}), "unknown row 'Nope'"),
        (lambda r: r["rows"][0].update(metric_options={"ghost_metric": {}}), "not in `metrics`"),
        (lambda r: r.update(rows=[]), "non-empty `rows`"),
    ],
)
def test_spec_validation_names_the_problem(compose, change, message):
    with pytest.raises(ConfigError, match=message):
        TableSpec.from_config(_mutated(compose, change))


def _toy_spec():
    return TableSpec.from_config({
        "name": "toy",
        "seeds": [0, 1],
        "models": {"m": {"train": ["experiment=quickstart_cnn"]}},
        "metrics": {"pxap": {"name": "pxap"}, "deletion": {"name": "deletion"}},
        "rows": [
            {"label": "A", "model": "m", "attributor": "gradcam"},
            {"label": "B", "model": "m", "attributor": "saliency"},
            {"label": "C", "model": "m", "attributor": "rise"},
        ],
        "columns": [
            {"label": "PxAP", "key": "pxap/pxap", "digits": 1},
            {"label": "Deletion", "key": "deletion/auc", "digits": 2},
        ],
        "paper": {"A": {"PxAP": 50.0}},
    })


def _write(root, spec, key, pxap, deletion):
    atomic_write_json(cell_result_path(root, spec, key), {
        "scalars": {"pxap/pxap": pxap, "deletion/auc": deletion},
        "directions": {"pxap/pxap": "higher", "deletion/auc": "lower"},
        "curves": {}, "evaluated_images": 10,
    })


def test_assembly_from_hand_written_cells(tmp_path):
    spec = _toy_spec()
    root = str(tmp_path)
    _write(root, spec, "a-s0", 40.0, 0.30)
    _write(root, spec, "a-s1", 60.0, 0.10)
    _write(root, spec, "b-s0", 55.0, 0.20)
    _write(root, spec, "b-s1", 45.0, 0.20)
    # C is missing for seed 1 and absent entirely for the deletion column of seed 0.
    atomic_write_json(cell_result_path(root, spec, "c-s0"), {"scalars": {"pxap/pxap": 10.0}, "directions": {}})
    out = assemble(root, spec)
    rows = {r["label"]: r["values"] for r in out.rows}
    assert rows["A"]["PxAP"] == (50.0, pytest.approx(14.1421356, rel=1e-6), 2)
    assert rows["B"]["Deletion"] == (pytest.approx(0.2), pytest.approx(0.0), 2)
    assert rows["C"]["PxAP"] == (10.0, 0.0, 1) and rows["C"]["Deletion"] == (None, None, 0)
    assert out.best == {"PxAP": ["A", "B"], "Deletion": ["A", "B"]}  # ties are all marked
    assert out.missing == ["c-s1"]
    with open(out.csv_path) as f:
        table = list(csv.DictReader(f))
    assert table[0]["method"] == "A" and float(table[0]["PxAP"]) == 50.0 and table[0]["PxAP paper"] == "50.0"
    md = open(out.md_path).read()
    assert "| A | m | **50.0 ± 14.1** (50.0) | **0.20 ± 0.14** |" in md
    assert "| C | m | 10.0 | — |" in md and "Missing cells" in md
    assert json.load(open(os.path.join(root, "results", "toy.json")))["missing"] == ["c-s1"]


EMBEDDED = ["table3", "moxi", "moxi_photos", "superpixel", "smdl", "smdl_misclassified"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EMBEDDED)
def test_smoke_run_of_every_embedded_table(compose, tmp_path, name):
    from reproduce.runtime.table_publish import publish
    from reproduce.runtime.table_runner import run_table

    spec = TableSpec.from_config(_spec(compose, name))
    run = run_table(spec, str(tmp_path), logger="none", progress_bar=False, smoke=True)
    out = publish(spec, str(tmp_path), wandb_mode="disabled", smoke=True)
    assert len(run.results) == len(spec.cells())
    assert not out.missing and os.path.exists(os.path.join(tmp_path, "results", "smoke", f"{name}.png"))
    assert not os.path.exists(os.path.join(tmp_path, "results", f"{name}.md"))  # smoke runs stay apart
    # Smoke mode picks images that pass each row's filter: no cell is empty (the sampler errs on 0).
    assert all(r["evaluated_images"] > 0 for r in run.results.values())


def test_a_cell_with_fewer_images_than_asked_says_so(tmp_path):
    spec = _toy_spec()
    root = str(tmp_path)
    for key, n in (("a-s0", 64), ("a-s1", 64), ("b-s0", 12), ("b-s1", 64), ("c-s0", 64), ("c-s1", 64)):
        atomic_write_json(cell_result_path(root, spec, key), {
            "scalars": {"pxap/pxap": 50.0, "deletion/auc": 0.2}, "directions": {}, "curves": {},
            "evaluated_images": n, "requested_images": 64})
    out = assemble(root, spec)
    assert "| B [1] | m |" in out.markdown and "| A | m |" in out.markdown
    assert "[1] B: n=12 of 64 images (fewer passed the samples filter)." in out.markdown
    rows = list(csv.DictReader(open(out.csv_path)))
    assert (rows[1]["images"], rows[1]["images requested"]) == ("12 64", "64 64")
    assert json.load(open(os.path.join(root, "results", "toy.json")))["rows"][1]["images"] == [12, 64]



def test_quick_true_validates_the_preview_whose_files_never_overwrite_the_full_run(compose, tmp_path):
    """``quick=true`` (``make reproduce-moxi QUICK=1``): the spec's QUICK preview, named
    ``<name>_quick``, so its models, cells and results live apart from the full table's."""
    from reproduce.runtime.paths import TableLayout
    from reproduce.runtime.table_runner import plan_table
    from reproduce.runtime.validation import validate_table

    full = validate_table(compose("table", ["table=moxi"]))
    quick = validate_table(compose("table", ["table=moxi", "quick=true"]))
    assert (full.name, quick.name) == ("moxi", "moxi_quick") and quick.title.startswith("QUICK preview")
    assert quick.eval_images < full.eval_images and [r["label"] for r in quick.rows] == [r["label"] for r in full.rows]
    layout = TableLayout(str(tmp_path), quick.name)
    files = [*plan_table(quick, layout).checkpoints.values(), *(layout.cell_result(c.key) for c in quick.cells())]
    full_dir = os.path.join(str(tmp_path), "outputs", "tables", "moxi") + os.sep
    assert files and all("moxi_quick" in f and not f.startswith(full_dir) for f in files)
    with pytest.raises(ConfigError, match="quick must be true or false"):
        validate_table(compose("table", ["table=moxi", "quick=maybe"]))
