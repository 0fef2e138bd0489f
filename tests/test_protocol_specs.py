"""The protocol choices the table specs promise, read from the resolved specs and cell configs.

Each test fails on the protocol it replaced: Table 3 scored by COMET's detector (or the ViT scoring
its own rollout), both stability halves trained with one seed, MoXI's deletion AUC from its
insertion order, Grad-CAM ranked on a bilinearly blurred token grid.
"""

from __future__ import annotations

import pytest

from reproduce.runtime.config_hash import to_plain
from reproduce.runtime.paths import TableLayout
from reproduce.runtime.table_runner import plan_table
from reproduce.runtime.table_spec import CHECKPOINT_REF, TableSpec


def _spec(compose, name: str) -> TableSpec:
    return TableSpec.from_config(to_plain(compose("table", [f"table={name}"]).table))


def _detector_role(spec: TableSpec, role: str) -> str:
    refs = [CHECKPOINT_REF.findall(o) for o in spec.models[role]["train"] if o.startswith("module.detector.checkpoint")]
    assert refs and refs[0], f"{role} has no frozen detector checkpoint"
    return refs[0][0]


@pytest.mark.parametrize("name", ["table3", "table3_imagenet9"])
def test_table3_rows_are_scored_by_an_independent_scorer(compose, tmp_path, monkeypatch, name):
    if name.endswith("imagenet9"):  # planning validates the dataset root: a fixture in the real layout
        from fixtures_datasets import write_imagenet9

        write_imagenet9(tmp_path / "in9")
        monkeypatch.setenv("DATASET_ROOT", str(tmp_path / "in9"))
    spec = _spec(compose, name)
    plan = plan_table(spec, TableLayout(str(tmp_path), spec.name))
    checkpoints = plan.checkpoints
    configs = {cell.row["label"]: cfg for cell, cfg in plan.cells}
    detector = checkpoints[(_detector_role(spec, "comet"), 0)]
    scorer = spec.models["scorer"]
    # Same architecture and recipe as the black box, another seed.
    assert scorer["train"] == spec.models["blackbox"]["train"] and scorer["seed_offset"] >= 1
    by_label = {cell.row["label"]: cell for cell in spec.cells()}
    comet_rows = [label for label, cell in by_label.items() if cell.row["model"] == "comet"]
    contrast = [label for label in comet_rows if "own detector" in label]
    assert len(contrast) == 1
    for label in [*comet_rows, next(lb for lb in by_label if lb.startswith("Attention rollout"))]:
        cfg = configs[label]
        if label in contrast:  # the labelled in-sample contrast: only the detector's deletion column
            assert cfg.scorer_checkpoint == detector and set(cfg.metrics) == {"deletion_detector"}
            continue
        assert cfg.scorer_checkpoint == checkpoints[("scorer", 0)] != detector and cfg.cell.scorer_role == "scorer"
        assert cfg.scorer_checkpoint != cfg.checkpoint  # not the explained model (e.g. the ViT of rollout)
        assert {"fidelity", "insertion", "deletion"} <= set(cfg.metrics) and "deletion_detector" not in cfg.metrics
    # Every other row names the scorer too (none falls back to the model it explains).
    assert all(c.row.get("scorer") == "scorer" for lb, c in by_label.items() if lb not in contrast)


def test_table3_pxap_pointing_fidelity_and_moxi_orders(compose):
    spec = _spec(compose, "table3")
    metrics = spec.metrics
    assert metrics["pxap_std"]["variant"] == "standard" and metrics["pxap_std"]["map_normalization"] == "minmax"
    # One standard PxAP for every row: no row changes its bins, cut-off or normalisation.
    assert not any("pxap_std" in (r.get("metric_options") or {}) for r in spec.rows)
    assert metrics["pointing"]["ties"] == "centroid"
    assert metrics["fidelity"]["selection"] == "rank" and metrics["fidelity"]["tie_break"] == "random"
    by_attributor = {}
    for row in spec.rows:
        key = (row["attributor"], (row.get("attributor_options") or {}).get("mode"))
        by_attributor[key] = row
    # MoXI's deletion AUC comes from its deletion-mode order, never from the insertion order.
    for insertion, deletion in ((("moxi_insertion", None), ("moxi_deletion", None)),
                                (("moxi_minus", "insertion"), ("moxi_minus", "deletion"))):
        assert "deletion" in by_attributor[insertion]["skip_metrics"]
        assert "deletion" not in by_attributor[deletion]["skip_metrics"]
        assert "insertion" in by_attributor[deletion]["skip_metrics"]
    smdl = by_attributor[("smdl", None)]
    assert CHECKPOINT_REF.fullmatch(smdl["attributor_options"]["confidence_model"]).group(1) == "edl"


def test_seed_offset_trains_a_role_with_another_seed(compose, tmp_path):
    spec = _spec(compose, "superpixel")
    plan = plan_table(spec, TableLayout(str(tmp_path), spec.name))
    seen = {str(cfg.name): int(cfg.seed) for _, cfg in plan.trainings}
    assert seen == {"superpixel-half_a-s0": 0, "superpixel-half_b-s0": 1}
    assert plan.checkpoints[("half_b", 0)].endswith("superpixel-half_b-s0/checkpoints/best.ckpt")  # under the table seed
    bad = {**spec.raw, "models": {**spec.models, "half_b": {**spec.models["half_b"], "seed_offset": -1}}}
    with pytest.raises(Exception, match="seed_offset"):
        TableSpec.from_config(bad)


@pytest.mark.parametrize("name", ["superpixel", "superpixel_cifar10"])
def test_stability_halves_differ_in_seed(compose, name):
    spec = _spec(compose, name)
    jobs = {job.role: job for job in spec.model_jobs()}
    assert jobs["half_a"].train_seed != jobs["half_b"].train_seed


def _gradcam_rows(spec):
    return [r for r in spec.rows if r["attributor"] in ("gradcam", "attention_rollout")]


@pytest.mark.parametrize("name", ["moxi", "moxi_imagenet_val", "moxi_photos"])
def test_moxi_specs_rank_cam_and_rollout_at_token_resolution(compose, name):
    spec = _spec(compose, name)
    rows = _gradcam_rows(spec)
    assert rows
    for row in rows:
        assert (row.get("attributor_options") or {}).get("upsample") == "nearest", row["label"]
        if row["attributor"] == "gradcam":
            assert row["attributor_options"].get("eigen_smooth") and row["attributor_options"].get("aug_smooth")
    assert "token resolution" in spec.raw["protocol"]


def test_an_undefined_cell_is_shown_but_never_marked_best(tmp_path):
    """MeGe of two barely trained models can be undefined (NaN): the table shows it, best skips it."""
    from reproduce.atomic import atomic_write_json
    from reproduce.runtime.table_assembly import assemble, cell_result_path

    spec = TableSpec.from_config({
        "name": "toy", "models": {"m": {"train": ["experiment=quickstart_cnn"]}},
        "metrics": {"mege": {"name": "mege", "others": ["@m"]}},
        "rows": [{"label": "A", "model": "m", "attributor": "saliency"}, {"label": "B", "model": "m", "attributor": "gradcam"}],
        "columns": [{"label": "MeGe", "key": "mege/mege", "digits": 1}],
    })
    for key, value in (("a-s0", float("nan")), ("b-s0", 20.0)):
        atomic_write_json(cell_result_path(str(tmp_path), spec, key),
                          {"scalars": {"mege/mege": value}, "directions": {"mege/mege": "higher"}})
    out = assemble(str(tmp_path), spec)
    assert out.best == {"MeGe": ["B"]}
    assert "| A | m | — |" in open(out.md_path).read()


CONTROL_TABLES = {"table3": {"Random (control)", "Constant (control)", "Center (control)", "Edges (control)",
                             "Ground-truth mask (control)"},
                  "moxi": {"Random (control)", "Center (control)", "Edges (control)", "Ground-truth mask (control)"},
                  "smdl": {"Random (control)", "Random + SMDL", "Edges (control)"},
                  "interventions": {"Random (control)", "Constant (control)", "Edges (control)", "Ground-truth mask (control)"}}


@pytest.mark.parametrize("name", sorted(CONTROL_TABLES))
def test_control_rows_never_look_at_the_model_and_the_oracle_skips_re_explaining_metrics(compose, name):
    """The control rows come last (earlier rows keep their index) and are model-free; the
    ground-truth-mask row leaves out every metric that re-explains perturbed images (no masks)."""
    from reproduce.attributors import get_class
    from reproduce.metrics import create_metric
    from reproduce.models import create_model

    spec = _spec(compose, name)
    labels = [r["label"] for r in spec.rows]
    controls = CONTROL_TABLES[name]
    assert set(labels[-len(controls):]) == controls and "control rows" in spec.raw["protocol"].lower()
    for row in spec.rows:
        if row["label"] not in controls:
            continue
        if row["attributor"] == "smdl":  # Random + SMDL: the search over a random prior
            assert row["attributor_options"]["prior"] == "random"
            continue
        cls = get_class(row["attributor"])
        assert cls.model_free, row["label"]
        if not getattr(cls, "needs_masks", False):
            continue
        vit = "quickstart_vit" in " ".join(spec.models[row["model"]]["train"])
        model = create_model("vit_micro_p8" if vit else "resnet10t_os16", num_classes=6, img_size=64)
        for label, metric in spec.metrics.items():
            if label in (row.get("skip_metrics") or []):
                continue
            options = {k: v for k, v in metric.items() if k != "name"}
            options = {k: model if v == "@explained" else v for k, v in options.items()}
            assert "explain" not in create_metric(metric.get("name", label), model, **options).requires, (row["label"], label)


def test_moxi_explains_a_vit_that_has_learned_its_data(compose):
    """MoXI explains the ViT's correct images: on the hard preset the micro ViT reaches ~32 %, so the
    embedded MoXI table uses the easy preset (where it reaches ~100 %) and says why."""
    cfg = compose("table", ["table=moxi"])
    spec = TableSpec.from_config(to_plain(cfg.table))
    assert spec.data == "synthetic_easy" and spec.samples == "correct"
    plan = plan_table(spec, TableLayout(str(cfg.paths.root), spec.name))
    assert {str(c.data.options.preset) for _, c in plan.trainings} == {"easy"}
    assert {str(c.data.options.preset) for _, c in plan.cells} == {"easy"}
    assert "31.9 %" in spec.protocol and "99.7 %" in spec.protocol
