"""The metric contract: batch validation, registry, requirements, directions, config, DDP-correct
state (several batches == one batch == two merged processes) and functional twins."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import reproduce.metrics as M
from reproduce.errors import ConfigError, InputError
from reproduce.metrics import AttributionBatch
from reproduce.metrics.mu_fidelity import mu_fidelity
from reproduce.metrics.pxap import pxap

SIZE = 16


class TinyCNN(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                 nn.Linear(24, 4))
        for p in self.net.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.5
        self.pretrained_cfg = {"input_size": (3, SIZE, SIZE), "mean": (0.5,) * 3, "std": (0.25,) * 3}

    def forward(self, x):
        return self.net(x)


def explain(images, targets, model=None):
    """Deterministic stand-in attributor; another model gives a related but different map."""
    scale = 1.0 if model is None else 1.0 + getattr(model, "seed_shift", 0.5)
    return (images**2).sum(1) * scale + images[:, 0] * (1 + targets.view(-1, 1, 1))


MODEL = TinyCNN(0)
OTHER = TinyCNN(1)


def make_batch(b: int = 6, seed: int = 0) -> AttributionBatch:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        preds = MODEL(images).argmax(-1)
    labels = preds.clone()
    labels[::3] = (labels[::3] + 1) % 4  # some misclassified samples
    masks = torch.zeros(b, SIZE, SIZE, dtype=torch.bool)
    masks[:, 4:12, 3:10] = True
    # Two objects for the interventional metrics: a distractor whose removal changes nothing (its
    # layer is the background) and the evidence (its layer is the image itself, on a flipped background).
    objects = torch.stack([torch.zeros_like(masks), masks], 1)
    objects[:, 0, 12:, 12:] = True
    scenes = {"object_masks": objects, "object_footprints": objects, "object_kinds": torch.tensor([[2, 1]] * b),
              "object_layers": torch.stack([images.flip(-1), images], 1), "images_without_objects": images.flip(-1)}
    return AttributionBatch(
        images=images, labels=labels, targets=preds, maps=explain(images, preds), masks=masks,
        indices=torch.arange(50, 50 + b),
        extra={**scenes, "parts": objects, "images_mixed_rand": images.flip(-2), "images_bg_shift": images.flip(-1), "step_area": torch.linspace(0.1, 1.0, 5).expand(b, 5).clone(),
               "step_score": torch.rand(b, 5, generator=g), **M.cost_extras({"seconds_per_image": 0.2,
                                                                              "forward_per_image": 3.0,
                                                                              "backward_per_image": 1.0})},
    )


def rows(batch: AttributionBatch, sl: slice) -> AttributionBatch:
    extra = {k: (v[sl] if v.dim() > 0 else v) for k, v in batch.extra.items()}
    return AttributionBatch(images=batch.images[sl], labels=batch.labels[sl], targets=batch.targets[sl],
                            maps=batch.maps[sl], masks=batch.masks[sl], indices=batch.indices[sl], extra=extra)


CASES = {
    "insertion": {"steps": 4},
    "deletion": {"steps": 4, "baseline": "blur", "score": "logit"},
    "patch_insertion": {"grid": 4},
    "patch_deletion": {"grid": 4, "score": "softmax"},
    "accuracy_at_budget": {"grid": 4, "mode": "deletion", "budgets": (0.1, 0.5)},
    "average_highest_confidence": {"steps": 4},
    "pxap": {"variant": "comet"},
    "pointing_game": {},
    "energy_pointing_game": {},
    "iou_auc": {"thresholds": (0.3, 0.6), "iou_step": 0.01},
    "fidelity": {},
    "mu_fidelity": {"grid": 4, "samples": 8},
    "robustness": {"variant": "standard"},
    "max_sensitivity": {"samples": 3},
    "ssim_stability": {"other": OTHER},
    "mege": {"others": [TinyCNN(0)]},  # same weights: the same images are correct, maps differ
    "cost": {},
    "model_randomisation": {"layers": ["net.4", "net.0"]},
    "random_logit": {"seed": 3},
    "data_randomisation": {"other": OTHER},
    "road": {"percentages": (0.25, 0.5, 1.0), "score": "softmax"},
    "sparseness": {},
    "complexity": {},
    "relevance_mass_accuracy": {},
    "relevance_rank_accuracy": {"relevance": "absolute"},
    "interventions": {"thresholds": 8, "contrastivity": False},
    "variant_accuracy": {"variant": "mixed_rand"},
    "part_coverage": {"fraction": 0.3},
}


def test_every_registered_metric_is_covered():
    assert sorted(CASES) == M.available_metrics()


@pytest.mark.parametrize("name", sorted(CASES))
def test_contract_batches_processes_directions_and_config(name):
    batch = make_batch()
    whole = M.create_metric(name, MODEL, **CASES[name])
    whole.update(batch, explain=explain)
    out = whole.compute()
    # several batches == one batch
    split = M.create_metric(name, MODEL, **CASES[name])
    split.update(rows(batch, slice(0, 2)), explain=explain)
    split.update(rows(batch, slice(2, 6)), explain=explain)
    # two processes (each with its own batches) reduced as DDP would == one process
    first, second = M.create_metric(name, MODEL, **CASES[name]), M.create_metric(name, MODEL, **CASES[name])
    first.update(rows(batch, slice(0, 3)), explain=explain)
    second.update(rows(batch, slice(3, 6)), explain=explain)
    first.merge_state(second)
    for other in (split.compute(), first.compute()):
        assert other.keys() == out.keys()
        for key, value in out.items():
            assert torch.allclose(value.double(), other[key].double(), atol=1e-9, equal_nan=False), key
    scalars = {k for k, v in out.items() if v.dim() == 0}
    assert scalars == set(whole.directions) | set(whole.diagnostics)
    assert set(whole.directions.values()) <= {"higher", "lower"}
    for key, value in out.items():
        assert torch.isfinite(value).all(), key
        if value.dim() == 1 and not key.endswith("_x"):
            assert out[key + "_x"].shape == value.shape
    config = whole.config()
    assert config["metric"] == name
    json.dumps(config)
    for state, reduction in whole._reductions.items():
        assert reduction is not None, state  # every state reduces across processes


# --- batch validation --------------------------------------------------------------------------------
def _plain(**overrides):
    base = dict(images=torch.randn(3, 3, 8, 8), labels=torch.zeros(3, dtype=torch.long),
                targets=torch.zeros(3, dtype=torch.long), maps=torch.rand(3, 8, 8), indices=torch.tensor([5, 6, 7]))
    base.update(overrides)
    return AttributionBatch(**base)


def test_maps_of_the_wrong_shape_are_rejected():
    with pytest.raises(InputError, match="upsample the maps"):
        _plain(maps=torch.rand(3, 4, 4))
    with pytest.raises(InputError, match=r"\[B\] = \[3\]"):
        _plain(labels=torch.zeros(2, dtype=torch.long))
    assert _plain(maps=torch.rand(3, 1, 8, 8)).maps.shape == (3, 8, 8)


def test_nan_maps_name_the_dataset_index():
    maps = torch.rand(3, 8, 8)
    maps[1, 2, 2] = float("nan")
    with pytest.raises(InputError, match=r"dataset indices \[6\]"):
        _plain(maps=maps)


def test_masks_must_match_the_maps_and_be_binary():
    with pytest.raises(InputError, match="nearest-neighbour"):
        _plain(masks=torch.ones(3, 4, 4, dtype=torch.bool))
    with pytest.raises(InputError, match="boolean"):
        _plain(masks=torch.full((3, 8, 8), 0.5))
    assert _plain(masks=torch.ones(3, 8, 8)).masks.dtype == torch.bool


def test_metric_asking_for_missing_ground_truth_fails_clearly():
    metric = M.create_metric("pxap")
    with pytest.raises(ConfigError, match="pxap needs ground-truth masks; the dataset SyntheticShapes has none"):
        metric.check_available(set(), source="the dataset SyntheticShapes")
    metric.check_available({"masks"})
    with pytest.raises(InputError, match="ground-truth masks"):
        metric.update(_plain())
    with pytest.raises(ConfigError, match="images_bg_shift"):
        M.create_metric("robustness", perturbation="bg_shift").check_available({"explain"})


# --- registry ----------------------------------------------------------------------------------------
def test_registry_errors_name_the_fix():
    with pytest.raises(ConfigError, match="Did you mean insertion"):
        M.create_metric("insertoin", MODEL)
    with pytest.raises(ConfigError, match="no option"):
        M.create_metric("insertion", MODEL, stpes=10)
    with pytest.raises(ConfigError, match="scores a model"):
        M.create_metric("deletion")
    with pytest.raises(ConfigError, match="baseline"):
        M.create_metric("insertion", MODEL, baseline="grey")
    assert M.create_metric("pxap", MODEL).model is None  # metrics that score no model ignore it


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # torchmetrics' own warning comes first
def test_compute_before_update_is_an_error():
    with pytest.raises(InputError, match="update"):
        M.create_metric("insertion", MODEL).compute()


def test_the_model_is_not_part_of_the_metric_state():
    metric = M.create_metric("insertion", MODEL)
    assert not any(k.startswith("_model") for k in metric.state_dict())
    assert all(p is not q for p in metric.parameters() for q in MODEL.parameters())


# --- functional twins --------------------------------------------------------------------------------
def test_functional_twins_agree_with_the_modules():
    batch = make_batch()
    checks = []
    ins = M.create_metric("insertion", MODEL, steps=5)
    ins.update(batch)
    _, curves = M.insertion_deletion_curve(MODEL, batch.images, batch.maps, batch.targets, mode="insertion", steps=5)
    checks.append((ins.compute()["auc"], M.trapezoid_auc(curves).mean()))
    px = M.create_metric("pxap", variant="comet", bins=40)
    px.update(batch)
    checks.append((px.compute()["pxap"], pxap(batch.maps, batch.masks, variant="comet", bins=40)))
    fid = M.create_metric("fidelity", MODEL, remove=(0.2,), keep=(0.3,))
    fid.update(batch)
    correct = M.fidelity_correct(MODEL, batch.images, batch.maps, batch.labels, remove=(0.2,), keep=(0.3,))
    checks.append((fid.compute()["accuracy_keep_30"], correct[:, 2].mean()))
    mu = M.create_metric("mu_fidelity", MODEL, grid=4, samples=8, seed=1)
    mu.update(batch)
    corr, _ = mu_fidelity(MODEL, batch.images, batch.maps, batch.targets, batch.indices, grid=4, samples=8, seed=1)
    checks.append((mu.compute()["mu_fidelity"], corr.mean()))
    rob = M.create_metric("robustness", perturbation="bg_shift")
    rob.update(batch, explain=explain)
    shifted = explain(batch.extra["images_bg_shift"], batch.targets)
    checks.append((rob.compute()["pxap"], M.robustness_pxap(batch.maps, shifted)))
    pg = M.create_metric("pointing_game", tolerance=1)
    pg.update(batch)
    checks.append((pg.compute()["accuracy"], M.pointing_hits(batch.maps, batch.masks, tolerance=1).double().mean()))
    st = M.create_metric("ssim_stability", other=OTHER)
    st.update(batch, explain=explain)
    checks.append((st.compute()["ssim"], 100 * M.ssim_stability(batch.maps, explain(batch.images, batch.targets, OTHER)).mean()))
    for module_value, functional_value in checks:
        assert module_value.item() == pytest.approx(functional_value.item(), rel=1e-6, abs=1e-9)


def test_cost_is_weighted_by_images():
    metric = M.create_metric("cost")
    for seconds, b in ((1.0, 1), (4.0, 3)):
        batch = _plain(images=torch.randn(b, 3, 8, 8), labels=torch.zeros(b, dtype=torch.long),
                       targets=torch.zeros(b, dtype=torch.long), maps=torch.rand(b, 8, 8), indices=torch.arange(b))
        batch.extra.update(M.cost_extras({"seconds_per_image": seconds, "forward_per_image": 2 * seconds,
                                          "backward_per_image": 0.0}))
        metric.update(batch)
    out = metric.compute()
    assert out["seconds_per_image"].item() == pytest.approx((1 + 12) / 4)
    assert out["forward_per_image"].item() == pytest.approx(2 * 13 / 4)
    with pytest.raises(InputError, match="last_cost"):
        M.cost_extras({"seconds_per_image": 1.0})


# --- real DDP (two gloo processes) ---------------------------------------------------------------------
DDP_CASES = {"insertion": {"steps": 3}, "pxap": {"variant": "comet"}, "iou_auc": {"iou_step": 0.01},
             "robustness": {"variant": "standard"}}


def _ddp_worker(rank: int, world: int, port: int, out_path: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        batch = make_batch()
        mine = rows(batch, slice(rank * 3, rank * 3 + 3))
        results = {}
        for name, options in DDP_CASES.items():
            metric = M.create_metric(name, MODEL, **options)
            metric.update(mine, explain=explain)
            results[name] = {k: v.tolist() for k, v in metric.compute().items()}
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ddp_processes_give_the_numbers_of_one(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True)
    distributed = torch.load(out)
    batch = make_batch()
    for name, options in DDP_CASES.items():
        metric = M.create_metric(name, MODEL, **options)
        metric.update(batch, explain=explain)
        for key, value in metric.compute().items():
            assert torch.allclose(torch.tensor(distributed[name][key], dtype=torch.float64), value.double(), atol=1e-9), (name, key)
