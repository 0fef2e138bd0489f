"""The evaluation layer end to end: ``evaluate_cell`` through the real configs, sample selection and
targets, errors that name the failing image, DDP equal to one process, kill -9 safety."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from reproduce.errors import ReproduceError
from reproduce.runtime.evaluation import evaluate_cell
from reproduce.viz.map_grid import load_overlay_maps

N_TEST = 16
BASE = [
    "checkpoint=null",  # the seeded, untrained resnet10t_os16: no training needed, ~17 % accuracy
    f"data.options.sizes={{train:8,val:8,test:{N_TEST}}}",
    "data.eval_batch_size=8",
    "trainer.enable_progress_bar=false",
]
TIMING = "cost/seconds_per_image"  # measured wall time: the one number that differs between runs


def _scalars(result):
    return {k: v for k, v in result["scalars"].items() if k != TIMING}


def _models_and_test_set(cfg):
    """The models of ``cfg`` (as the evaluation loads them) and its test images and labels, without the module."""
    from reproduce.models import ModelAdapter
    from reproduce.runtime.evaluation import load_models
    from reproduce.runtime.run_dir import instantiate_node

    L.seed_everything(int(cfg.seed))
    models = load_models(cfg)
    dm = instantiate_node(cfg.data)
    dm.set_data_config(ModelAdapter(models.explained).data_config)
    dm.setup("test")
    images = torch.stack([dm.dataset("test")[i]["image"] for i in range(N_TEST)])
    labels = torch.tensor([dm.dataset("test")[i]["label"] for i in range(N_TEST)])
    return models, images, labels


def _predictions(cfg):
    """Per-image predictions of the explained model and the labels, computed without the module."""
    models, images, labels = _models_and_test_set(cfg)
    with torch.no_grad():
        preds = models.explained(images).argmax(-1)
    return preds, labels


def test_evaluate_cell_writes_result_overlays_and_wandb_run(compose):
    cfg = compose("evaluate", [*BASE, "logger=wandb", "name=cell", "metrics=[pxap,insertion,deletion,cost]"])
    os.environ["WANDB_MODE"] = "offline"
    result = evaluate_cell(cfg)
    out = str(cfg.paths.output_dir)
    on_disk = json.load(open(os.path.join(out, "result.json")))
    assert on_disk == json.loads(json.dumps(result))
    assert set(on_disk) == {"cell", "attributor", "metrics", "target", "samples", "selection", "requested_images",
                            "evaluated_images", "scalars", "directions", "curves", "world_size", "torch_threads",
                            "overlay_indices", "finished_at", "per_image"}
    # samples=all without per_class: the first eval_images (null: every) test image, no prediction pass
    assert on_disk["selection"] == {"samples": "all", "eval_images": None, "per_class": None, "seed": 0,
                                    "order": "first", "pool": N_TEST, "scanned": 0, "chosen": N_TEST}
    assert on_disk["evaluated_images"] == N_TEST and on_disk["world_size"] == 1
    assert on_disk["torch_threads"] == torch.get_num_threads()
    assert on_disk["attributor"] == {"name": "gradcam", "options": {}}
    assert (on_disk["target"], on_disk["samples"]) == ("label", "all")
    assert on_disk["cell"]["dataset"] == "synthetic" and re.fullmatch(r"[0-9a-f]{10}", on_disk["cell"]["identity"])

    scalars = on_disk["scalars"]
    assert set(scalars) == {"accuracy", "pxap/pxap", "insertion/auc", "deletion/auc", TIMING,
                            "cost/forward_per_image", "cost/backward_per_image"}
    preds, labels = _predictions(cfg)
    assert scalars["accuracy"] == pytest.approx(100 * (preds == labels).float().mean().item())
    # Grad-CAM: one forward and one backward pass per image.
    assert scalars["cost/forward_per_image"] == 1.0 and scalars["cost/backward_per_image"] == 1.0
    assert 0 < scalars["pxap/pxap"] <= 100 and 0 <= scalars["insertion/auc"] <= 1
    assert on_disk["directions"] == {
        "accuracy": "higher", "pxap/pxap": "higher", "insertion/auc": "higher", "deletion/auc": "lower",
        TIMING: "lower", "cost/forward_per_image": "lower", "cost/backward_per_image": "lower",
    }
    curves = on_disk["curves"]
    for name in ("insertion", "deletion"):
        # x: the fraction of pixels changed at each of the 10 steps (whole pixels, so ~i/10).
        assert curves[f"{name}/curve_x"] == pytest.approx([i / 10 for i in range(11)], abs=1e-3)
        assert len(curves[f"{name}/curve"]) == 11
        # The AUC is the trapezoid of the stored mean curve: curves are kept only as aggregates.
        x, y = (torch.tensor(curves[f"{name}/{k}"], dtype=torch.float64) for k in ("curve_x", "curve"))
        assert scalars[f"{name}/auc"] == pytest.approx(float(torch.trapezoid(y, x)), abs=1e-4)
    assert "pxap/pr_curve" in curves
    # Protocol settings of every metric are recorded.
    metrics = on_disk["metrics"]
    assert set(metrics) == {"pxap", "insertion", "deletion", "cost"}
    assert metrics["insertion"]["steps"] == 10 and metrics["insertion"]["baseline"] == "mean"
    assert metrics["insertion"]["score"] == "softmax" and metrics["deletion"]["mode"] == "deletion"
    assert metrics["pxap"]["variant"] == "standard" and metrics["pxap"]["map_normalization"] == "minmax"

    assert on_disk["overlay_indices"] == list(range(8))  # the first num_overlays test images
    png = open(os.path.join(out, "overlays.png"), "rb").read()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    runs = glob.glob(os.path.join(out, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(runs) == 1 and os.path.getsize(runs[0]) > 0 and on_disk["cell"]["identity"] in runs[0]

    _per_image_states_give_the_reported_numbers(on_disk, out, preds == labels)
    assert [o["index"] for o in load_overlay_maps(os.path.join(out, "maps.npz"))] == list(range(8))

    # Same identity: read back, not recomputed (the file is untouched), and its states still read.
    stamp = os.stat(os.path.join(out, "result.json")).st_mtime_ns
    assert evaluate_cell(cfg) == on_disk
    assert os.stat(os.path.join(out, "result.json")).st_mtime_ns == stamp
    _per_image_states_give_the_reported_numbers(evaluate_cell(cfg), out, preds == labels)


def _per_image_states_give_the_reported_numbers(result, cell_dir, correct):
    """per_image.npz holds every metric's rows and the accuracy's (one per test image): the
    statistic of all of them is each reported scalar, and intervals come out of the cell."""
    from reproduce.runtime.intervals import PerImageStates, cell_interval

    per_image = result["per_image"]
    assert set(per_image) == {"pxap", "insertion", "deletion", "cost", "accuracy"}
    assert all(e["states"] == "per_image.npz" and len(e["sha256"]) == 64 for e in per_image.values())
    for key, value in result["scalars"].items():
        label = key.split("/", 1)[0]
        states = PerImageStates.from_result(result, label, cell_dir=cell_dir)
        assert states.indices.tolist() == list(range(N_TEST)), key
        assert states.estimate(key) == pytest.approx(value, rel=1e-9), key
    accuracy = PerImageStates.from_result(result, "accuracy", cell_dir=cell_dir)
    assert accuracy.states["accuracy"].tolist() == (100.0 * correct.double()).tolist()
    interval = cell_interval([PerImageStates.from_result(result, "insertion", cell_dir=cell_dir)], "insertion/auc")
    assert interval.defined and interval.low <= result["scalars"]["insertion/auc"] <= interval.high


def test_target_and_sample_selection(compose):
    def run(target, samples):
        cfg = compose("evaluate", [*BASE, "logger=none", f"name={target}-{samples}", f"target={target}",
                                   f"samples={samples}", "metrics=[energy_pointing_game]"])
        return evaluate_cell(cfg), cfg

    label_all, cfg = run("label", "all")
    preds, labels = _predictions(cfg)
    correct = int((preds == labels).sum())
    assert 0 < correct < N_TEST, "the untrained model should get some, not all, images right"
    pred_all, _ = run("prediction", "all")
    label_correct, _ = run("label", "correct")
    pred_correct, _ = run("prediction", "correct")
    label_wrong, _ = run("label", "misclassified")

    assert [r["evaluated_images"] for r in (label_all, pred_all, label_correct, pred_correct, label_wrong)] == \
        [N_TEST, N_TEST, correct, correct, N_TEST - correct]
    # Accuracy is always over every image: selection only decides which images are explained.
    assert len({r["scalars"]["accuracy"] for r in (label_all, label_correct, label_wrong)}) == 1
    # On correctly classified images the label is the prediction: both targets explain the same class.
    assert _scalars(label_correct) == _scalars(pred_correct)
    # Over all images they differ: misclassified images are explained for another class.
    key = "energy_pointing_game/energy"
    assert label_all["scalars"][key] != pytest.approx(pred_all["scalars"][key], abs=1e-4)
    # The per-image mean over all images is the count-weighted mean of the two subsets.
    mixed = (correct * label_correct["scalars"][key] + (N_TEST - correct) * label_wrong["scalars"][key]) / N_TEST
    assert label_all["scalars"][key] == pytest.approx(mixed, abs=1e-6)


def test_a_nan_map_names_the_dataset_index_of_the_image(cnn):
    from reproduce.lit.evaluation import AttributionEvaluation

    module = AttributionEvaluation(cnn, "gradcam", metrics={"insertion": {"name": "insertion", "steps": 4}},
                                   num_overlays=0)
    original = module.attributor._attribute

    def poisoned(x, target):  # the image whose first pixel is 50 gets a NaN map
        maps = original(x, target)
        return torch.where((x[:, 0, 0, 0] == 50)[:, None, None], torch.nan, maps)

    module.attributor._attribute = poisoned
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(10):
        image = torch.randn(3, 64, 64, generator=g)
        if i == 6:
            image[0, 0, 0] = 50
        items.append({"image": image, "label": i % 6, "index": 100 + i})
    trainer = L.Trainer(accelerator="cpu", logger=False, inference_mode=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    with pytest.raises(ReproduceError, match=r"dataset index \[106\] \(test batch 1"):
        trainer.test(module, dataloaders=DataLoader(items, batch_size=4), verbose=False)


# --- separate processes: DDP and kill -9 ------------------------------------------------------

CLI = ["data.options.sizes={train:8,val:8,test:48}", "data.eval_batch_size=8", "checkpoint=null",
       "logger=none", "metrics=[pxap,insertion,deletion,cost]", "num_overlays=6"]


def _evaluate_cmd(root, name, *extra):
    return [sys.executable, "-m", "reproduce.evaluate", f"paths.root={root}", f"name={name}", *CLI, *extra]


def _env():
    return {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-process evaluation (the CLI, as a user runs it)."""
    root = tmp_path_factory.mktemp("eval_reference")
    subprocess.run(_evaluate_cmd(root, "one", "trainer.enable_progress_bar=false"), env=_env(), cwd=root,
                   check=True, capture_output=True)
    return root, json.load(open(root / "outputs" / "evaluate" / "one" / "result.json"))


@pytest.mark.slow  # ~30 s alone on a quiet machine, 90 s under load: too much for the default tier
def test_two_process_ddp_equals_one_process(reference, tmp_path):
    root, one = reference
    subprocess.run(_evaluate_cmd(tmp_path, "two", "trainer=cpu_ddp", "trainer.enable_progress_bar=false"),
                   env=_env(), cwd=tmp_path, check=True, capture_output=True)
    two = json.load(open(tmp_path / "outputs" / "evaluate" / "two" / "result.json"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["evaluated_images"] == one["evaluated_images"] == 48  # no padding duplicates
    assert two["cell"]["identity"] == one["cell"]["identity"]  # devices are not part of a cell's identity
    assert set(two["scalars"]) == set(one["scalars"])
    for key in _scalars(one):
        assert two["scalars"][key] == pytest.approx(one["scalars"][key], abs=1e-6), key
    assert set(two["curves"]) == set(one["curves"])
    for key, values in one["curves"].items():
        assert two["curves"][key] == pytest.approx(values, abs=1e-6), key
    # Overlays: the same first images, gathered from both ranks (each holds every other image).
    assert two["overlay_indices"] == one["overlay_indices"] == list(range(6))
    assert os.path.getsize(tmp_path / "outputs" / "evaluate" / "two" / "overlays.png") > 10_000
    # Per-image states: every image's rows gathered from both ranks, as one process keeps them.
    import numpy as np

    with np.load(root / "outputs" / "evaluate" / "one" / "per_image.npz") as a, \
            np.load(tmp_path / "outputs" / "evaluate" / "two" / "per_image.npz") as b:
        assert sorted(a.files) == sorted(b.files) and a["accuracy/indices"].tolist() == list(range(48))
        for key in a.files:
            if not key.startswith("cost/"):  # measured wall time
                assert np.allclose(a[key], b[key], atol=1e-6), key


@pytest.mark.slow
def test_kill_9_during_evaluation_leaves_no_partial_result_and_rerun_equals_uninterrupted(reference, tmp_path):
    _, one = reference
    out = tmp_path / "outputs" / "evaluate" / "killed"
    # The progress bar (Lightning's tqdm writes to stdout) shows the test loop running: kill after
    # its first batches.
    proc = subprocess.Popen(_evaluate_cmd(tmp_path, "killed", "trainer.enable_progress_bar=true"), env=_env(),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = b""
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not re.search(rb"\b[1-4]/6\b", seen):
        seen += os.read(proc.stdout.fileno(), 4096)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert re.search(rb"\b[1-4]/6\b", seen), "the evaluation was not caught inside its test loop"
    assert not (out / "result.json").exists()
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]
    subprocess.run(_evaluate_cmd(tmp_path, "killed", "trainer.enable_progress_bar=false"), env=_env(), cwd=tmp_path,
                   check=True, capture_output=True)
    again = json.load(open(out / "result.json"))
    assert _scalars(again) == _scalars(one)
    assert again["curves"] == one["curves"]
    assert again["evaluated_images"] == one["evaluated_images"]


def test_reference_models_give_a_stability_side_by_side(compose, tmp_path):
    from omegaconf import OmegaConf

    from reproduce.models import create_model

    torch.manual_seed(1)  # another initialisation: a "re-trained" model B
    path = tmp_path / "b.pt"
    model_b = create_model("resnet10t_os16", num_classes=6, img_size=64)
    # the layout `python -m reproduce.train` writes: the model spec plus "model."-prefixed weights
    torch.save({"hyper_parameters": {"model": {"name": "resnet10t_os16", "num_classes": 6, "img_size": 64}},
                "state_dict": {f"model.{k}": v for k, v in model_b.state_dict().items()}}, path)
    cfg = compose("evaluate", [*BASE, "logger=none", "name=stability"])
    OmegaConf.set_struct(cfg, False)
    cfg.reference_checkpoints = {"b": str(path)}
    cfg.metrics = {"ssim": {"name": "ssim_stability", "other": "@b"}}
    result = evaluate_cell(cfg)
    # Direct: SSIM of the two models' Grad-CAM maps of every test image (the default attributor, labels explained).
    from reproduce.attributors import create
    from reproduce.metrics.stability import ssim_stability

    models, images, labels = _models_and_test_set(cfg)
    maps_a, maps_b = (create("gradcam", m).attribute(images, labels) for m in (models.explained, models.references["b"]))
    expected = 100 * ssim_stability(maps_a, maps_b).double().mean().item()
    assert result["scalars"]["ssim/ssim"] == pytest.approx(expected, abs=1e-3)
    assert result["scalars"]["ssim/ssim"] < 95  # another initialisation explains differently
    figure = os.path.join(str(cfg.paths.output_dir), "stability.png")
    assert os.path.getsize(figure) > 10_000  # a 4 x 2 grid of overlays, not an empty canvas


def test_sampled_images_pass_the_filter_and_are_recorded(compose):
    cfg = compose("evaluate", [*BASE, "logger=none", "name=sampled", "samples=correct", "eval_images=3",
                               "per_class=1", "sampling_seed=5", "metrics=[energy_pointing_game]", "num_overlays=3"])
    result = evaluate_cell(cfg)
    preds, labels = _predictions(cfg)
    right = [i for i in range(N_TEST) if preds[i] == labels[i]]
    chosen = result["overlay_indices"]  # every evaluated image is in the overlays (3 of them)
    assert result["evaluated_images"] == len(chosen) == min(3, len({int(labels[i]) for i in right}))
    assert all(i in right for i in chosen) and len({int(labels[i]) for i in chosen}) == len(chosen)
    selection = result["selection"]
    assert (selection["samples"], selection["eval_images"], selection["per_class"], selection["seed"]) == ("correct", 3, 1, 5)
    assert selection["order"] == "seeded" and selection["chosen"] == len(chosen) and selection["pool"] == N_TEST
    # Accuracy: over the images the prediction pass visited, not over the (all correct) chosen ones,
    # and so are its per-image rows.
    assert result["scalars"]["accuracy"] == pytest.approx(selection["scanned_accuracy"]) and result["scalars"]["accuracy"] < 100
    from reproduce.runtime.intervals import PerImageStates

    accuracy = PerImageStates.from_result(result, "accuracy", cell_dir=str(cfg.paths.output_dir))
    assert accuracy.indices.size == selection["scanned"] > len(chosen)
    assert accuracy.estimate("accuracy") == pytest.approx(result["scalars"]["accuracy"])
    assert all(accuracy.states["accuracy"][list(accuracy.indices).index(i)] == 100 for i in chosen)
    energy = PerImageStates.from_result(result, "energy_pointing_game", cell_dir=str(cfg.paths.output_dir))
    assert energy.indices.tolist() == sorted(chosen)  # the metrics' rows: the explained images


def _loader(n=8, batch=4):
    g = torch.Generator().manual_seed(3)
    items = [{"image": torch.randn(3, 64, 64, generator=g), "label": i % 6, "index": i} for i in range(n)]
    return DataLoader(items, batch_size=batch)


def _trainer():
    return L.Trainer(accelerator="cpu", logger=False, inference_mode=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False)


def test_maps_are_explained_once_per_model_and_batch_and_equal_fresh_ones(cnn):

    from reproduce.attributors import create
    from reproduce.lit.evaluation import AttributionEvaluation
    from reproduce.models import create_model

    torch.manual_seed(1)
    other = create_model("resnet10t_os16", num_classes=6).eval()
    module = AttributionEvaluation(cnn, "saliency", metrics={"ssim": {"name": "ssim_stability", "other": "@b"}},
                                   reference_models={"b": other}, num_overlays=4)
    calls = _explanations_per_model(module)
    # Two batches: the explained model once each; model b once each for SSIM, and the stability
    # figure's first four images come from the cache (without it: a third call).
    assert calls == {id(cnn): 2, id(other): 2} and module.maps_cache.hits == 1
    images = torch.stack([item["image"] for item in _loader().dataset[:4]])
    fresh = create("saliency", other).attribute(images, torch.tensor([0, 1, 2, 3]))
    cached = torch.stack([o["references"][0] for o in module._overlays])
    assert torch.equal(cached, fresh)


def test_a_metric_can_be_scored_by_a_reference_model(cnn):
    from reproduce.errors import ConfigError
    from reproduce.lit.evaluation import AttributionEvaluation
    from reproduce.models import create_model

    torch.manual_seed(2)
    independent = create_model("resnet10t_os16", num_classes=6).eval()
    metrics = {"ins": {"name": "insertion", "steps": 4, "scorer": "@indep"}, "del": {"name": "deletion", "steps": 4}}
    module = AttributionEvaluation(cnn, "saliency", metrics=metrics, reference_models={"indep": independent}, num_overlays=0)
    assert module.metrics["ins"].model is independent and module.metrics["del"].model is cnn
    _trainer().test(module, dataloaders=_loader(), verbose=False)
    assert module.result["metrics"]["ins"]["scorer"] == "@indep" and "scorer" not in module.result["metrics"]["del"]
    with pytest.raises(ConfigError, match='metrics.ins.scorer must name a reference model as "@<name>"'):
        AttributionEvaluation(cnn, "saliency", metrics={"ins": {"name": "insertion", "scorer": "indep"}},
                              reference_models={"indep": independent})
    with pytest.raises(ConfigError, match="refers to model '@nope'"):
        AttributionEvaluation(cnn, "saliency", metrics={"ins": {"name": "insertion", "scorer": "@nope"}})


def test_the_evaluate_command_says_where_things_went_in_percent(tmp_path, monkeypatch, capsys):
    """The entry point in this process: the summary's units and the closing lines (issue 11.8)."""
    from reproduce.evaluate import PROG, main
    from reproduce.runtime.cli_errors import run_entry_point

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["reproduce.evaluate", *BASE, f"paths.root={tmp_path}", "name=told", "logger=wandb",
                                      "metrics=[pxap,pointing_game,cost]"])
    run_entry_point(main, PROG, "evaluate")
    out = capsys.readouterr().out
    run_dir = f"{tmp_path}/outputs/evaluate/told"
    assert f"[reproduce.evaluate] told: {N_TEST} images (samples=all); proportions in %:" in out
    result = json.load(open(f"{run_dir}/result.json"))
    pointing = result["scalars"]["pointing_game/accuracy"]
    assert re.search(rf"pointing_game/accuracy\s+{100 * pointing:.4f} %\s+higher is better", out)  # a fraction, in %
    assert re.search(rf"pxap/pxap\s+{result['scalars']['pxap/pxap']:.4f} %", out)                # already in %
    assert re.search(r"cost/seconds_per_image\s+\d+\.\d+ s/img", out)
    for line in (f"[reproduce.evaluate] run directory: {run_dir}", f"[reproduce.evaluate] wrote {run_dir}/result.json",
                 f"[reproduce.evaluate] wrote {run_dir}/overlays.png"):
        assert line in out
    sync = re.search(r"upload it with `wandb sync (\S+)`", out)
    assert sync and sync.group(1).startswith(f"{run_dir}/wandb/offline-run-") and os.path.isdir(sync.group(1))
    for noise in ("GPU available", "litlogger", "Seed set to"):
        assert noise not in out


def test_lightning_banner_is_quiet_unless_verbose():
    import logging
    import warnings

    from reproduce.runtime.console import quiet_lightning

    banner = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    before = logging.getLogger("lightning.pytorch").level
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_lightning(verbose=False):
            assert not banner.isEnabledFor(logging.INFO)
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", DeprecationWarning)
            warnings.warn("something the user must see", UserWarning)
        with quiet_lightning(verbose=True):
            assert banner.isEnabledFor(logging.INFO) == logging.getLogger("lightning.pytorch").isEnabledFor(logging.INFO)
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", DeprecationWarning)
    assert [str(w.message) for w in seen] == ["something the user must see", "`isinstance(treespec, LeafSpec)` is deprecated"]
    assert logging.getLogger("lightning.pytorch").level == before  # restored


def test_the_stability_figure_explains_only_the_references_metrics_explain_with(cnn):
    """A reference that only scores a metric (``scorer: "@indep"``) is never explained: neither for
    the metrics nor for the stability side-by-side (the figure shows model b alone)."""

    from reproduce.lit.evaluation import AttributionEvaluation, explained_references
    from reproduce.models import create_model

    torch.manual_seed(1)
    other, independent = create_model("resnet10t_os16", num_classes=6).eval(), create_model("resnet10t_os16", num_classes=6).eval()
    metrics = {"ins": {"name": "insertion", "steps": 4, "scorer": "@indep"}, "ssim": {"name": "ssim_stability", "other": "@b"}}
    assert explained_references({**metrics, "mege": {"name": "mege", "others": ["@c", "@b"]}}) == ["b", "c"]
    module = AttributionEvaluation(cnn, "saliency", metrics=metrics, reference_models={"indep": independent, "b": other},
                                   num_overlays=4)
    calls = _explanations_per_model(module)
    assert id(independent) not in calls and calls[id(other)] == 2
    assert list(module.figure_references) == ["b"] and all(o["references"].shape[0] == 1 for o in module._overlays)


def _masked_loader(bad=None):
    g = torch.Generator().manual_seed(4)
    items = []
    for i in range(8):
        mask = torch.zeros(64, 64)
        mask[8 * (i % 4):8 * (i % 4) + 20, 10:40] = 1.0
        if i == bad:
            mask[0, 0] = 0.5  # not a mask: the oracle refuses this image alone
        items.append({"image": torch.randn(3, 64, 64, generator=g), "label": i % 6, "index": 100 + i, "mask": mask})
    return DataLoader(items, batch_size=4)


def test_the_oracle_mask_control_gets_the_masks_and_fails_early_without_them(cnn):
    from reproduce.errors import ConfigError
    from reproduce.lit.evaluation import AttributionEvaluation

    metrics = {"energy": {"name": "energy_pointing_game"}, "pg": {"name": "pointing_game"}}
    module = AttributionEvaluation(cnn, "oracle_mask", metrics=metrics, num_overlays=0)
    with pytest.raises(ConfigError, match="oracle_mask attributor explains with the ground-truth masks; the 'toy' test split has none"):
        module.check_available({"explain"}, source="the 'toy' test split")
    module.check_available({"explain", "masks"}, source="the 'toy' test split")
    # A metric that re-explains perturbed images (no masks for them) is refused before the test loop.
    reexplaining = AttributionEvaluation(cnn, "oracle_mask", metrics={**metrics, "rob": {"name": "robustness"}}, num_overlays=0)
    with pytest.raises(ConfigError, match=r"metric\(s\) \['rob'\] re-explain perturbed images.*skip_metrics"):
        reexplaining.check_available({"explain", "masks"}, source="the 'toy' test split")
    _trainer().test(module, dataloaders=_masked_loader(), verbose=False)
    assert module.result["scalars"]["energy/energy"] == pytest.approx(1.0) and module.result["scalars"]["pg/accuracy"] == 1.0
    # The per-image retry that names the failing image hands each image its own mask.
    failing = AttributionEvaluation(cnn, "oracle_mask", metrics=metrics, num_overlays=0)
    with pytest.raises(ReproduceError, match=r"dataset index \[106\] \(test batch 1"):
        _trainer().test(failing, dataloaders=_masked_loader(bad=6), verbose=False)


def test_a_killed_write_never_leaves_a_result_without_its_states(cnn, tmp_path, monkeypatch):
    """per_image.npz and maps.npz are written before result.json (the commit marker): a run killed
    between them leaves no result; a result never reads the states of another, interrupted run."""
    import reproduce.lit.evaluation as evaluation
    from reproduce.errors import DataError
    from reproduce.runtime.intervals import PerImageStates

    def module():
        return evaluation.AttributionEvaluation(cnn, "saliency", metrics={"ins": {"name": "insertion", "steps": 4}},
                                                result_path=str(tmp_path / "result.json"), num_overlays=2)

    def killed(path, obj):
        raise OSError("killed before result.json")

    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "atomic_write_json", killed)
        with pytest.raises(OSError, match="killed"):
            _trainer().test(module(), dataloaders=_loader(), verbose=False)
    assert sorted(os.listdir(tmp_path)) == ["maps.npz", "overlays.png", "per_image.npz"]  # no result.json
    _trainer().test(module(), dataloaders=_loader(), verbose=False)
    result = json.load(open(tmp_path / "result.json"))
    states = PerImageStates.from_result(result, "ins", cell_dir=str(tmp_path))
    assert states.estimate("ins/auc") == pytest.approx(result["scalars"]["ins/auc"], rel=1e-9)
    other = evaluation.AttributionEvaluation(cnn, "gradcam", metrics={"ins": {"name": "insertion", "steps": 4}},
                                             result_path=str(tmp_path / "later" / "result.json"), num_overlays=0)
    _trainer().test(other, dataloaders=_loader(), verbose=False)
    os.replace(tmp_path / "later" / "per_image.npz", tmp_path / "per_image.npz")  # a later run's states, its result lost
    with pytest.raises(DataError, match="is not the file this result wrote"):
        PerImageStates.from_result(result, "ins", cell_dir=str(tmp_path))


def _explanations_per_model(module) -> dict[int, int]:
    """Run the test loop with ``Attributor.attribute`` counted: ``{id(model): calls}``."""
    from unittest import mock

    from reproduce.attributors.base import Attributor

    calls: dict[int, int] = {}
    real = Attributor.attribute

    def counted(self, inputs, target=None):
        calls[id(self.model)] = calls.get(id(self.model), 0) + 1
        return real(self, inputs, target)

    with mock.patch.object(Attributor, "attribute", counted):
        _trainer().test(module, dataloaders=_loader(), verbose=False)
    return calls


def test_model_randomisation_through_the_evaluation_equals_the_metric_fed_fresh_maps(cnn):
    # The evaluation answers repeated explanations from its map cache; the MPRT copy changes weights
    # in place between steps, and the cache served step 1's maps for every later step (each sanity
    # table row had identical 'full', 'mean' and independent values).
    from reproduce.attributors import create
    from reproduce.lit.evaluation import AttributionEvaluation
    from reproduce.metrics import AttributionBatch, create_metric

    layers = ["fc", "layer4", "layer2", "conv1"]
    options = {"name": "model_randomisation", "layers": layers, "similarities": ["spearman_abs"],
               "verdict_on": "spearman_abs"}
    module = AttributionEvaluation(cnn, "saliency", metrics={"mprt": options}, num_overlays=0)
    _trainer().test(module, dataloaders=_loader(), verbose=False)
    curves, scalars = module.result["curves"], module.result["scalars"]

    direct = create_metric("model_randomisation", cnn, **{k: v for k, v in options.items() if k != "name"})
    attributors = {}

    def explain(images, targets, model=None):  # no cache: a fresh map for every request
        model = cnn if model is None else model
        attributors.setdefault(id(model), create("saliency", model))
        return attributors[id(model)].attribute(images, targets)
    for batch in _loader():
        images, labels = batch["image"], batch["label"]
        direct.update(AttributionBatch(images=images, labels=labels, targets=labels, maps=explain(images, labels),
                                       indices=batch["index"]), explain=explain)
    expected = direct.compute()
    curve = torch.tensor(curves["mprt/spearman_abs"], dtype=torch.float64)
    torch.testing.assert_close(curve, expected["spearman_abs"].double(), rtol=0, atol=1e-6)
    assert curve.max() - curve.min() > 0.03  # the steps differ: randomising more layers changes the map
    assert scalars["mprt/spearman_abs_full"] == pytest.approx(float(expected["spearman_abs_full"]), abs=1e-6)
