"""Malformed inputs to every public entry: each must fail fast with the package's own error whose
message names the problem, never a deep torch traceback, a hang or a silent wrong result.

Sections: attributors (every registered method x bad images/targets), metrics (bad batches, empty
ground truth, bad knobs), datasets (missing/malformed roots, corrupt and truncated files),
checkpoints (truncated, other class count, random bytes, pickles of arbitrary objects), configs
(composed with Hydra, the ``_target_`` allow-list) and the three command-line entry points run as
subprocesses (non-zero exit, the message first, no traceback). Models are built once per module.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from fixtures_datasets import write_cifar10, write_cub, write_imagenet9, write_imagenet_val
from omegaconf import OmegaConf
from spec_rows import row_index

from reproduce.attributors import available, create, get_class
from reproduce.data import create_dataset
from reproduce.errors import ConfigError, DataError, InputError, ReproduceError
from reproduce.metrics import AttributionBatch, create_metric
from reproduce.models import create_model
from reproduce.models.checkpoint import load_weights, read_checkpoint
from reproduce.models.factory import load_model
from reproduce.models.loading import load_any
from reproduce.runtime.config_checks import check_target
from reproduce.runtime.validation import validate_evaluate, validate_table, validate_train

METHODS = [m for m in available() if not get_class(m).contract_skip]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"cnn": create_model("resnet10t_os16", num_classes=6).eval(),
            "vit": create_model("vit_micro_p8", num_classes=6).eval()}


@pytest.fixture(scope="module")
def attributors(models):
    """One attributor per method (smoke options), on the model it runs on, built once."""
    return {m: create(m, models["vit" if get_class(m).requires_vit else "cnn"], **get_class(m).smoke_options) for m in METHODS}


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


def _with(value):
    x = torch.randn(2, 3, 64, 64)
    x[1, 0, 5, 5] = value
    return x


# --- attributors: images ------------------------------------------------------------------------
BAD_IMAGES = {
    "rank3": (lambda: _x(3, 64, 64), "unsqueeze"),
    "rank5": (lambda: _x(1, 2, 3, 64, 64), "rank 4"),
    "rank2": (lambda: _x(64, 64), "rank 4"),
    "empty_batch": (lambda: _x(0, 3, 64, 64), "empty batch"),
    "uint8": (lambda: torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8), "float"),
    "bool": (lambda: torch.rand(2, 3, 64, 64) > 0.5, "float"),
    "int64": (lambda: torch.randint(0, 5, (2, 3, 64, 64)), "float"),
    "complex": (lambda: torch.randn(2, 3, 64, 64, dtype=torch.complex64), "float"),
    "nan": (lambda: _with(float("nan")), r"NaN or Inf \(samples \[1\]\)"),
    "inf": (lambda: _with(float("inf")), "NaN or Inf"),
    "-inf": (lambda: _with(float("-inf")), "NaN or Inf"),
    "one_channel": (lambda: _x(2, 1, 64, 64), "channels"),
    "four_channels": (lambda: _x(2, 4, 64, 64), "channels"),
    "numpy": (lambda: np.zeros((2, 3, 64, 64), dtype=np.float32), "torch.Tensor"),
    "list": (lambda: [[0.0]], "torch.Tensor"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
@pytest.mark.parametrize("method", METHODS)
def test_attributor_rejects_bad_images(method, case, attributors):
    make, fragment = BAD_IMAGES[case]
    with pytest.raises(InputError, match=fragment):
        attributors[method].attribute(make(), 1)


@pytest.mark.parametrize("size", [48, 72, 60])
def test_vit_attributors_reject_the_wrong_input_size(size, models):
    for method in METHODS:
        try:
            attributor = create(method, models["vit"], **get_class(method).smoke_options)
        except InputError:  # CNN-only methods refuse the ViT up front, which is also a clear error
            continue
        with pytest.raises(InputError, match=f"takes 64x64 inputs, got {size}x{size}"):
            attributor.attribute(torch.randn(1, 3, size, size), 0)


# --- attributors: targets -----------------------------------------------------------------------
BAD_TARGETS = {
    "too_large": (6, "out of range"),
    "negative": (-1, "out of range"),
    "tensor_out_of_range": (torch.tensor([0, 9]), "out of range"),
    "python_float": (1.5, "integer"),
    "bool": (True, "not a bool"),
    "float_tensor": (torch.tensor([0.0, 1.0]), "integer"),
    "bool_tensor": (torch.tensor([True, False]), "integer"),
    "wrong_length": (torch.tensor([0, 1, 2]), "one class per sample"),
    "one_of_two": (torch.tensor([1]), "one class per sample"),
    "matrix": (torch.tensor([[0], [1]]), "one class per sample"),
    "empty": (torch.tensor([], dtype=torch.long), "one class per sample"),
    "string": ("cat", "target must"),
}


@pytest.mark.parametrize("case", list(BAD_TARGETS))
@pytest.mark.parametrize("method", METHODS)
def test_attributor_rejects_bad_targets(method, case, attributors):
    target, fragment = BAD_TARGETS[case]
    with pytest.raises(InputError, match=fragment):
        attributors[method].attribute(torch.randn(2, 3, 64, 64), target)


# --- metrics ------------------------------------------------------------------------------------
def _batch(**change):
    b, h = 2, 16
    fields = {"images": torch.randn(b, 3, h, h), "labels": torch.tensor([0, 1]), "targets": torch.tensor([0, 1]),
              "maps": torch.rand(b, h, h), "masks": torch.rand(b, h, h) > 0.5}
    fields.update(change)
    return AttributionBatch(**fields)


def _nan_map():
    maps = torch.rand(2, 16, 16)
    maps[1, 3, 3] = float("nan")
    return maps


BAD_BATCHES = {
    "maps_smaller": ({"maps": torch.rand(2, 8, 8)}, "upsample the maps"),
    "maps_rank2": ({"maps": torch.rand(16, 16)}, "maps have shape"),
    "maps_batch": ({"maps": torch.rand(3, 16, 16)}, "maps have shape"),
    "maps_nan": ({"maps": _nan_map()}, r"NaN/Inf for dataset indices \[1\]"),
    "maps_inf": ({"maps": torch.full((2, 16, 16), float("inf"))}, "NaN/Inf"),
    "maps_list": ({"maps": [[0.0]]}, "maps must be"),
    "masks_other_size": ({"masks": torch.ones(2, 8, 8, dtype=torch.bool)}, "nearest-neighbour"),
    "masks_soft": ({"masks": torch.rand(2, 16, 16)}, "threshold soft masks"),
    "images_rank3": ({"images": torch.randn(3, 16, 16)}, r"\[B, C, H, W\]"),
    "images_uint8": ({"images": torch.zeros(2, 3, 16, 16, dtype=torch.uint8)}, "must be float"),
    "images_empty": ({"images": torch.randn(0, 3, 16, 16), "maps": torch.rand(0, 16, 16)}, "empty"),
    "labels_float": ({"labels": torch.tensor([0.0, 1.0])}, "labels must be"),
    "labels_length": ({"labels": torch.tensor([0, 1, 2])}, "labels must be"),
    "targets_length": ({"targets": torch.tensor([0])}, "targets must be"),
    "targets_matrix": ({"targets": torch.tensor([[0, 1]])}, "targets must be"),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_attribution_batch_rejects_malformed_fields(case):
    change, fragment = BAD_BATCHES[case]
    with pytest.raises(InputError, match=fragment):
        _batch(**change)


@pytest.mark.parametrize("name", ["pointing_game", "energy_pointing_game", "pxap", "iou_auc"])
def test_localisation_metrics_refuse_empty_ground_truth(name):
    metric = create_metric(name)
    batch = _batch(masks=torch.zeros(2, 16, 16, dtype=torch.bool))
    with pytest.raises(InputError, match=r"masks of samples \[0, 1\] are empty"):
        metric.update(batch)


@pytest.mark.parametrize("name", ["pointing_game", "pxap", "iou_auc"])
def test_localisation_metrics_need_masks(name):
    with pytest.raises(ReproduceError, match="mask"):
        create_metric(name).update(_batch(masks=None))


BAD_KNOBS = [
    ("insertion", {"steps": 0}, "steps must be a positive integer"),
    ("insertion", {"steps": -3}, "steps must be a positive integer"),
    ("insertion", {"steps": 2.5}, "steps must be a positive integer"),
    ("insertion", {"steps": True}, "steps must be a positive integer"),
    ("deletion", {"steps": 0}, "steps must be a positive integer"),
    ("average_highest_confidence", {"steps": 0}, "steps must be a positive integer"),
    ("average_highest_confidence", {"budgets": [0]}, "budgets must lie in"),
    ("insertion", {"max_batch": 0}, "max_batch must be a positive integer"),
    ("insertion", {"score": "probability"}, "score"),
    ("pxap", {"bins": 0}, "bins must be a positive integer"),
    ("pxap", {"variant": "fancy"}, "variant"),
    ("max_sensitivity", {"samples": 0}, "samples must be a positive integer"),
    ("mu_fidelity", {"samples": 1}, "samples must be an integer >= 2"),
    ("mu_fidelity", {"grid": 0}, "grid must be a positive integer"),
    ("patch_insertion", {"grid": 0}, "grid must be a positive"),
    ("fidelity", {"remove": [1.5]}, "remove must lie in"),
    ("iou_auc", {"iou_step": 0}, "iou_step must be 1/n"),
    ("iou_auc", {"iou_step": -0.5}, "iou_step must be 1/n"),
    ("iou_auc", {"iou_step": float("nan")}, "iou_step must be 1/n"),
    ("iou_auc", {"thresholds": [1.5]}, "thresholds must be"),
    ("pointing_game", {"bogus": 1}, "has no option"),
    ("nonexistent_metric", {}, "Unknown metric"),
    ("insertio", {}, "Did you mean insertion"),
]


@pytest.mark.parametrize("name,knobs,fragment", BAD_KNOBS, ids=[f"{n}-{'-'.join(map(str, k.items()))}" for n, k, _ in BAD_KNOBS])
def test_metrics_reject_bad_knobs(name, knobs, fragment, models):
    """Refused at construction, or at the first update before any forward pass (``max_batch``)."""
    with pytest.raises(ConfigError, match=fragment):
        create_metric(name, models["cnn"], **knobs).update(_batch())


# --- datasets -----------------------------------------------------------------------------------
REAL = {"cifar10": write_cifar10, "cub200": write_cub, "imagenet9": write_imagenet9,
        "imagenet_val": lambda root: write_imagenet_val(root) and root}


@pytest.mark.parametrize("name", list(REAL))
@pytest.mark.parametrize("root", ["missing", "none", "a_file", "empty_dir"])
def test_datasets_reject_missing_or_malformed_roots(name, root, tmp_path):
    path = {"missing": tmp_path / "nope", "none": None, "a_file": tmp_path / "file.txt", "empty_dir": tmp_path / "empty"}[root]
    (tmp_path / "file.txt").write_text("not a dataset")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="Expected this layout"):
        create_dataset(name, root=path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
@pytest.mark.parametrize("name", ["cub200", "imagenet9", "imagenet_val"])
def test_corrupt_image_files_name_the_file(name, damage, tmp_path):
    root = REAL[name](tmp_path) if name != "imagenet_val" else (write_imagenet_val(tmp_path), tmp_path)[1]
    kwargs = {"split": "test"} if name != "imagenet_val" else {}
    ds = create_dataset(name, root=root, image_size=32, **kwargs)
    for victim in [p for p in tmp_path.rglob("*") if p.suffix in (".jpg", ".JPEG")]:
        data = victim.read_bytes()
        victim.write_bytes({"garbage": b"\x00not an image" * 20, "truncated": data[: len(data) // 3], "empty": b""}[damage])
    with pytest.raises(DataError, match=r"\.(jpg|JPEG)"):  # names the file
        ds[0]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "list", "wrong_shape", "label_count", "evil_global"])
def test_corrupt_cifar_batches_are_data_errors(damage, tmp_path):
    root = write_cifar10(tmp_path)
    batch = root / "cifar-10-batches-py" / "test_batch"
    data = batch.read_bytes()
    payload = {
        "truncated": data[: len(data) // 2],
        "garbage": np.random.default_rng(3).bytes(200),
        "empty": b"",
        "list": pickle.dumps([1, 2, 3], protocol=2),
        "wrong_shape": pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, protocol=2),
        "label_count": pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, protocol=2),
        "evil_global": pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2),
    }[damage]
    batch.write_bytes(payload)
    marker = tmp_path / "pwned"
    with pytest.raises(DataError, match="test_batch"):
        ds = create_dataset("cifar10", root=root, split="test")
        ds[0]
    assert not marker.exists()


class _Evil:
    """Unpickling this runs ``os.system`` (creates ``pwned`` in the cwd); loaders must refuse it."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_synthetic_dataset_rejects_bad_sizes(tmp_path):
    with pytest.raises(ReproduceError, match="sizes|positive"):
        create_dataset("synthetic", root=tmp_path, split="test", sizes={"train": 4, "val": 4, "test": -1})


# --- checkpoints --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    model = models["cnn"]
    good = folder / "good.ckpt"
    torch.save({"hyper_parameters": {"model": dict(model.reproduce_spec)},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, good)
    other = create_model("resnet10t_os16", num_classes=4)
    four = folder / "four.ckpt"
    torch.save({"hyper_parameters": {"model": dict(other.reproduce_spec)},
                "state_dict": {f"model.{k}": v for k, v in other.state_dict().items()}}, four)
    return folder, good, four


def _bad_checkpoint(kind, folder, good):
    path = folder / f"{kind}.bin"
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(7).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "evil_pickle":
        path.write_bytes(pickle.dumps(_Evil()))
    elif kind == "evil_torch":
        torch.save({"state_dict": _Evil()}, path, _use_new_zipfile_serialization=True)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "text":
        path.write_text("model: resnet\n")
    elif kind == "directory":
        path = folder / "a_directory"
        path.mkdir(exist_ok=True)
    elif kind == "missing":
        path = folder / "missing.ckpt"
    return path


CHECKPOINT_CASES = ["truncated", "random", "empty", "evil_pickle", "evil_torch", "tensor", "text", "directory", "missing"]
LOADERS = {"read_checkpoint": read_checkpoint, "load_any": load_any, "load_model": load_model}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("kind", CHECKPOINT_CASES)
def test_bad_checkpoints_are_refused_without_running_code(kind, loader, saved, tmp_path, monkeypatch):
    folder, good, _ = saved
    monkeypatch.chdir(tmp_path)
    path = _bad_checkpoint(kind, tmp_path, good)
    with pytest.raises(ReproduceError, match="train one|does not exist|cannot be read|not a state dict"):
        LOADERS[loader](path)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_for_another_class_count_names_the_fix(saved, models):
    _, _, four = saved
    model = create_model("resnet10t_os16", num_classes=6)
    with pytest.raises(ConfigError, match="has 4 classes but the model has 6: set num_classes=4"):
        load_weights(model, four)
    assert load_any(four).reproduce_spec["num_classes"] == 4  # the spec in the file is used instead


def test_checkpoint_of_another_architecture_is_refused(saved):
    _, good, _ = saved
    with pytest.raises(ConfigError, match="does not fit this architecture"):
        load_weights(create_model("vit_micro_p8", num_classes=6), good)


def test_plain_state_dict_without_a_spec_names_the_fix(saved, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ConfigError, match="load_weights"):
        load_any(path)


# --- configs (Hydra compose) --------------------------------------------------------------------
TRAIN_CASES = [
    (["seed=-1"], "seed must be an integer >= 0"),
    (["seed=1.5"], "seed must be"),
    (["seed=abc"], "seed must be"),
    (["seed=true"], "seed must be"),
    (["trainer.max_epochs=0"], "trainer.max_epochs must be a positive integer"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs must be a positive integer"),
    (["trainer.max_epochs=2.5"], "trainer.max_epochs must be"),
    (["+trainer.max_steps=0"], "trainer.max_steps must be a positive integer"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch is not a Lightning Trainer argument.*Did you mean max_epochs"),
    (["trainer.devices=0"], "trainer.devices must be"),
    (["trainer.accelerator=gpuu"], "trainer.accelerator must be one of"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps must be"),
    (["data.batch_size=0"], "data.batch_size must be a positive integer"),
    (["data.batch_size=-8"], "data.batch_size must be a positive integer"),
    (["data.batch_size=abc"], "data.batch_size must be"),
    (["data.eval_batch_size=0"], "data.eval_batch_size must be"),
    (["data.num_workers=-1"], "data.num_workers must be an integer >= 0"),
    (["data.image_size=0"], "data.image_size must be"),
    (["data.name=synthetc"], "Did you mean synthetic"),
    (["data.limits.test=0"], "data.limits.test must be"),
    (["data.options.sizes.train=0"], "data.options.sizes.train must be"),
    (["+data.options.sizez=1"], "data.options.sizez is not an option.*Did you mean sizes"),
    (["data=cifar10"], "(?s)no root given.*DATASET_ROOT"),
    (["data=cub200", "paths.dataset_root=/nonexistent/root"], "(?s)does not exist.*DATASET_ROOT"),
    (["model.name=resnet10t_os61"], "Did you mean resnet10t_os16"),
    (["model.num_classes=0"], "model.num_classes must be"),
    (["module.optimizer.lr=0"], "optimizer.lr must be a finite positive number"),
    (["module.optimizer.lr=-0.1"], "optimizer.lr must be"),
    (["module.optimizer.name=adamx"], "Did you mean adamw|adam"),
    (["module.optimizer.weight_decay=-1"], "weight_decay must be"),
    (["module.scheduler.name=cosin"], "Did you mean cosine"),
    (["module.scheduler.warmup_epochs=-1"], "warmup_epochs must be"),
    (["logger=csv", "logger._target_=os.system"], "'os.system' is not allowed"),
    (["logger=csv", "logger._target_=builtins.eval"], "is not allowed"),
    (["logger=csv", "logger._target_=reproduce.runtime.training.os.system"], "resolves to posix.system|resolves to nt.system"),
    (["logger=csv", "logger._target_=reproduce.errors.__builtins__"], "is not allowed"),
    (["logger=csv", "logger._target_=reproduce.no_such.Thing"], "cannot be imported"),
    (["+module.extra._target_=subprocess.Popen"], "module.extra._target_='subprocess.Popen' is not allowed"),
    (["data._target_=torch.load"], "is not allowed"),
    (["resume=/nonexistent/last.ckpt"], "resume='/nonexistent/last.ckpt' does not exist"),
    (["test=maybe"], "test must be true or false"),
    (["name=''"], "name must be a non-empty string"),
    (["name=${nope}"], "cannot be resolved"),
    # run names stay one directory under outputs/ (11.5)
    (["name=../../../tmp/x"], r"name='../../../tmp/x' is not a plain run name .* refused, nothing was written. Use e.g. name=tmp_x"),
    (["name=a/b"], r"not a plain run name.*Use e.g. name=a_b"),
    (["name=.hidden"], "not a plain run name"),
    # a training batch that cannot fit in memory (11.4)
    (["data.batch_size=100000000"], r"a training batch needs about \d+\.\d GiB .* Lower it, e.g. data.batch_size=\d+"),
    (["verbose=loud"], "verbose must be true or false"),
]

EVALUATE_CASES = [
    (["attributor.name=gradcm"], "Did you mean gradcam"),
    (["attributor=integrated_gradients", "++attributor.options.steps=0"], r"attributor.options.steps must be an integer in \[1, 10000\], got 0"),
    (["+attributor.options.bogus=1"], "attributor.options.bogus: 'gradcam' has no such option"),
    (["attributor=smoothgrad", "++attributor.options.n_samples=-2"], "attributor.options.n_samples must be"),
    (["metrics=[]"], "No metrics selected"),
    (["metrics.insertion.steps=0"], r"metrics.insertion.steps must be an integer in \[1, 4096\], got 0"),
    (["metrics.insertion.name=insertin"], "Did you mean insertion"),
    (["+metrics.insertion.bogus=1"], "metrics.insertion.bogus: metric 'insertion' has no such option"),
    (["+metrics.pxap.bins=0"], "metrics.pxap.bins must be"),
    (["target=labels"], "Did you mean label"),
    (["samples=some"], "samples must be one of"),
    (["num_overlays=-1"], "num_overlays must be"),
    (["seed=-4"], "seed must be"),
    (["checkpoint=/nonexistent.ckpt"], "does not exist: train it first"),
    (["checkpoint=null", "model.name=nope_net"], "model.name='nope_net' is not a known model"),
    (["scorer_checkpoint=/nonexistent.ckpt"], "scorer_checkpoint"),
    (["+reference_checkpoints.b=/nonexistent.ckpt"], "reference_checkpoints.b"),
    (["data.batch_size=0"], "data.batch_size must be"),
    (["+trainer.max_epohcs=1"], "not a Lightning Trainer argument"),
    (["logger=csv", "logger._target_=os.system"], "is not allowed"),
    # counts bounded by what they can mean (11.4)
    (["metrics.insertion.steps=1000000000"],
     r"metrics.insertion.steps must be an integer in \[1, 4096\], got 1000000000 \(a 64x64 image has 4096 pixels"),
    (["metrics.deletion.steps=4097"], r"metrics.deletion.steps must be an integer in \[1, 4096\]"),
    (["attributor=integrated_gradients", "++attributor.options.steps=1000000000"],
     r"attributor.options.steps must be an integer in \[1, 10000\].*documented cap in reproduce/runtime/limits.py"),
    (["attributor=smoothgrad", "++attributor.options.n_samples=1000000000"], r"n_samples must be an integer in \[1, 10000\]"),
    (["attributor=rise", "++attributor.options.n_masks=1000000000"], r"n_masks must be an integer in \[1, 100000\]"),
    (["attributor=shapley_sampling", "++attributor.options.n_rounds=1000000000"], r"n_rounds must be an integer in \[1, 10000\]"),
    (["attributor=hsic", "++attributor.options.nb_design=1000000000"], r"nb_design must be an integer in \[1, 100000\]"),
    (["attributor=shapley_exact", "++attributor.options.max_players=40"], r"max_players must be an integer in \[1, 24\]"),
    (["attributor=superpixel_smoothgrad", "++attributor.options.base_options={n_samples:1000000000}"],
     r"attributor.options.base_options.n_samples must be an integer in \[1, 10000\]"),
    (["attributor=moxi_insertion", "++attributor.options.grid=65"], r"attributor.options.grid must be an integer in \[1, 64\]"),
    (["data.eval_batch_size=100000000"], r"an evaluation batch needs about \d+\.\d GiB .* Lower it, e.g. data.eval_batch_size=\d+"),
    (["attributor=rise", "++attributor.options.batch_size=65536", "data.image_size=224"], "needs about|GiB"),
    # images (12.8), recompute (11.1), names (11.5), per-metric scorers
    (["eval_images=0"], "eval_images must be a positive integer"),
    (["per_class=-1"], "per_class must be a positive integer"),
    (["sampling_seed=-1"], "sampling_seed must be an integer >= 0"),
    (["recompute=maybe"], "recompute must be true or false"),
    (["name=../x"], "not a plain run name"),
    (["train_run=../../etc"], "train_run='../../etc' is not a plain run name"),
    (["+metrics.insertion.scorer=blackbox"], "scorer must name a reference model"),
    (["+metrics.insertion.scorer='@ghost'"], "names no reference model"),
]

RISE, GRADCAM = row_index("table3", "RISE"), row_index("table3", "Grad-CAM")
TABLE_CASES = [
    (["shard.count=0"], "shard.count must be a positive integer"),
    (["shard.index=-1"], "shard.index must be"),
    (["shard.index=2", "shard.count=2"], r"shard.index must be in \[0, shard.count\)"),
    (["run_logger=wandbb"], "Did you mean wandb"),
    (["wandb_mode=on"], "wandb_mode must be one of"),
    (["smoke=maybe"], "smoke must be true or false"),
    (["table.rows=[]"], "non-empty `rows`"),
    (["table.name=''"], "non-empty `name`"),
    (["table.eval_images=0"], "table.eval_images must be a positive integer"),
    (["table.seeds=[-1]"], r"table.seeds\[0\] must be"),
    (["table.metrics.pxap.name=pxapp"], "unknown metric 'pxapp'"),
    (["table.rows.0.attributor=gradcm"], "not in conf/attributor"),
    (["table.rows.0.model=nobody"], "uses model 'nobody'"),
    (["+table.extra._target_=os.system"], "is not allowed"),
    # every row's options checked before any training (12.10)
    ([f"+table.rows.{RISE}.attributor_options.n_mask=1000"], rf"table.rows\[{RISE}\] \(RISE\).attributor.options.n_mask: 'rise' has no such option. Did you mean n_masks"),
    (["+table.metrics.pointing.tolerence=3"], r"metrics.pointing.tolerence: metric 'pointing_game' has no such option. Did you mean tolerance"),
    ([f"+table.rows.{GRADCAM}.metric_options.pxap.binz=3"], rf"table.rows\[{GRADCAM}\] \(Grad-CAM\).metrics.pxap.binz: .* Did you mean bins"),
    ([f"table.rows.{RISE}.attributor_options.n_masks=1000000000"], r"n_masks must be an integer in \[1, 100000\]"),
    (["+table.rows.0.per_class=0"], r"table.rows\[0\] \(COMET\).per_class must be a positive integer"),
    (["+table.per_class=0"], "table.per_class must be a positive integer"),
    (["+table.samples=some"], "table.samples must be one of"),
    (["+table.metrics.insertion.scorer='@nobody'"], "names no reference model"),
    (["+table.models.blackbox.seed_offset=-1"], "seed_offset must be an integer >= 0"),
    (["+table.models.blackbox.sed_offset=1"], r"unknown key\(s\) \['sed_offset'\]"),
    (["table.name=../x"], "table.name='../x' is not a plain run name"),
    (["recompute=Grad-CAMM"], "recompute='Grad-CAMM' is neither .* Did you mean Grad-CAM"),
    (["verbose=1"], "verbose must be true or false"),
]


@pytest.mark.parametrize("overrides,fragment", TRAIN_CASES, ids=[" ".join(o) for o, _ in TRAIN_CASES])
def test_train_config_errors(overrides, fragment, compose):
    cfg = compose("train", ["logger=none", *overrides])
    with pytest.raises((ConfigError, DataError), match=fragment):
        validate_train(cfg)


@pytest.mark.parametrize("overrides,fragment", EVALUATE_CASES, ids=[" ".join(o) for o, _ in EVALUATE_CASES])
def test_evaluate_config_errors(overrides, fragment, compose, saved):
    cfg = compose("evaluate", ["logger=none", f"checkpoint={saved[1]}", *overrides])
    with pytest.raises((ConfigError, DataError), match=fragment):
        validate_evaluate(cfg)


@pytest.mark.parametrize("overrides,fragment", TABLE_CASES, ids=[" ".join(o) for o, _ in TABLE_CASES])
def test_table_config_errors(overrides, fragment, compose):
    cfg = compose("table", overrides)
    with pytest.raises(ConfigError, match=fragment):
        validate_table(cfg)


def _conf_names(group):
    from reproduce.runtime.paths import CONF_DIR

    return sorted(f[:-5] for f in os.listdir(os.path.join(CONF_DIR, group)) if f.endswith(".yaml"))


def _sweep(names, default):
    """Every shipped config; only ``default`` in the default tier (the sweep is marked slow)."""
    return [n if n == default else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("experiment", _sweep([None, *_conf_names("experiment")], None))
def test_shipped_train_configs_pass_validation(experiment, compose, tmp_path):
    """The checks must not refuse what the repository ships (real datasets get an existing root)."""
    cfg = compose("train", [f"paths.dataset_root={tmp_path}", *([f"experiment={experiment}"] if experiment else [])])
    validate_train(cfg)


@pytest.mark.parametrize("attributor", _sweep(_conf_names("attributor"), "gradcam"))
def test_shipped_evaluate_configs_pass_validation(attributor, compose, saved):
    validate_evaluate(compose("evaluate", [f"attributor={attributor}", f"checkpoint={saved[1]}"]))


@pytest.mark.parametrize("table", _sweep(_conf_names("table"), "table3"))
def test_shipped_table_configs_pass_validation(table, compose):
    validate_table(compose("table", [f"table={table}"]))


def test_instantiate_guard_runs_nothing_outside_the_allow_list(tmp_path, monkeypatch):
    from reproduce.runtime.run_dir import instantiate_node

    monkeypatch.chdir(tmp_path)
    for target in ("os.system", "subprocess.call", "reproduce.runtime.training.os.system", "builtins.exec"):
        node = OmegaConf.create({"_target_": target, "_args_": ["touch pwned"]})
        with pytest.raises(ConfigError, match="not allowed|resolves to"):
            instantiate_node(node)
    nested = OmegaConf.create({"_target_": "reproduce.lit.datamodule.ImageDataModule", "name": "synthetic",
                               "options": {"_target_": "os.system", "_args_": ["touch pwned"]}})
    with pytest.raises(ConfigError, match=r"options._target_='os.system' is not allowed"):
        instantiate_node(nested)
    assert not (tmp_path / "pwned").exists()
    check_target("torch.optim.AdamW")  # the allow-list lets library classes through
    with pytest.raises(ConfigError, match="not a class or function"):
        check_target("torch.optim.adamw.Tensor")


# --- the command-line entry points --------------------------------------------------------------
CLI_CASES = [
    ("reproduce.train", ["seed=-1"], "seed must be an integer >= 0"),
    ("reproduce.evaluate", ["num_overlays=-2"], "num_overlays must be"),
    ("reproduce.table", ["shard.count=0"], "shard.count must be a positive integer"),
    # Hydra's own errors, reworded to one line with the fix (11.9)
    ("reproduce.evaluate", ["attributor=gradcm"], "attributor: there is no config 'gradcm' (conf/attributor/gradcm.yaml). Did you mean gradcam"),
    ("reproduce.evaluate", ["metrics=[pxapp]"], "metrics: there is no config 'pxapp' (conf/metrics/pxapp.yaml). Did you mean pxap"),
    ("reproduce.train", ["trainer.max_epoch=1"],
     "trainer.max_epoch is not a key of the train config. Did you mean trainer.max_epochs? (e.g. trainer.max_epochs=1)"),
    ("reproduce.train", ["nmae=x"], "nmae is not a key of the train config. Did you mean name?"),
    ("reproduce.train", ["trainer.max_epochs=1="], "'trainer.max_epochs=1=' is not a valid override"),
    ("reproduce.train", ["paths.root=/proc/reproduce-nope"], "cannot create the run directory /proc/reproduce-nope/outputs/train/"),
    ("reproduce.train", ["name=../../../escaped"], "name='../../../escaped' is not a plain run name"),
    ("reproduce.table", ["table=tabel3"], "table: there is no config 'tabel3' (conf/table/tabel3.yaml). Did you mean table3"),
]


def _run(module, overrides, cwd, **env):
    return subprocess.run(
        [sys.executable, "-m", module, *overrides], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "WANDB_MODE": "offline", **env},
    )


@pytest.mark.parametrize("module,overrides,fragment", CLI_CASES, ids=[f"{m} {' '.join(o)}" for m, o, _ in CLI_CASES])
def test_entry_points_print_one_clear_error(module, overrides, fragment, tmp_path):
    proc = _run(module, overrides, tmp_path, HYDRA_FULL_ERROR="")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    first = next(line for line in proc.stderr.splitlines() if line.strip())
    assert fragment in first
    assert first.startswith(f"{module}: error:") and proc.returncode == 2
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.ckpt"))


def test_a_refused_run_name_writes_nothing_outside_outputs(tmp_path):
    inner = tmp_path / "cwd"
    inner.mkdir()
    proc = _run("reproduce.train", ["name=../../../escaped", "logger=none"], inner, HYDRA_FULL_ERROR="")
    assert proc.returncode == 2 and "Use e.g. name=escaped" in proc.stderr
    assert not any(p.name == "escaped" for p in tmp_path.rglob("*")) and not (tmp_path.parent / "escaped").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for a machine without a GPU")
def test_gpu_accelerator_without_a_gpu_is_one_line(tmp_path):
    proc = _run("reproduce.train", ["trainer.accelerator=gpu", "logger=none"], tmp_path, HYDRA_FULL_ERROR="")
    first = proc.stderr.splitlines()[0]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert first == ("reproduce.train: error: trainer.accelerator=gpu but this machine has no usable CUDA GPU "
                     "(torch.cuda.is_available() is False): use trainer.accelerator=cpu or trainer.accelerator=auto.")


def test_a_corrupt_checkpoint_message_never_advises_weights_only_false(saved, tmp_path):
    folder, good, _ = saved
    for kind in ("evil_pickle", "evil_torch", "random"):
        with pytest.raises(ReproduceError) as err:
            read_checkpoint(_bad_checkpoint(kind, tmp_path, good))
        assert "weights_only" not in str(err.value) and "could run code" in str(err.value)


def test_full_error_env_keeps_the_traceback(tmp_path):
    proc = _run("reproduce.train", ["seed=-1"], tmp_path, HYDRA_FULL_ERROR="1")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "seed must be" in proc.stderr


def test_a_config_file_that_is_not_yaml_is_named_with_its_line(tmp_path):
    (tmp_path / "conf" / "table").mkdir(parents=True)
    (tmp_path / "conf" / "table" / "broken.yaml").write_text("name: broken\nprotocol: |\n  fine\n`not yaml`\n")
    proc = _run("reproduce.table", ["table=broken", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"], tmp_path,
                HYDRA_FULL_ERROR="")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("reproduce.table: error:") and "broken.yaml is not valid YAML" in first
    assert "line 4" in proc.stderr
