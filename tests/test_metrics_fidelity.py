"""Fidelity (COMET's keep/remove top-p accuracy) and mu-fidelity on toy models with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reproduce.metrics as M
from reproduce.errors import ConfigError
from reproduce.metrics import AttributionBatch
from reproduce.metrics.mu_fidelity import mu_fidelity, subset_masks


class RegionModel(nn.Module):
    """Class 0 when the region's mean is above 0.25, else class 1."""

    def __init__(self, size: int = 16):
        super().__init__()
        region = torch.zeros(size, size)
        region[4:8, 4:8] = 1
        self.register_buffer("region", region)

    def forward(self, x):
        s = (x.mean(1) * self.region).sum((1, 2)) / self.region.sum() - 0.25
        return torch.stack([s, torch.zeros_like(s)], 1)


class LinearModel(nn.Module):
    """logit_k = sum(w_k * x): removing pixels drops the logit by exactly their gradient x input."""

    def __init__(self, shape=(3, 18, 18), classes: int = 3):
        super().__init__()
        self.register_buffer("w", torch.randn(classes, *shape, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x, self.w)


def _batch(images, maps, labels, indices=None):
    return AttributionBatch(images=images, labels=labels, targets=labels, maps=maps, indices=indices)


# --- COMET fidelity ----------------------------------------------------------------------------------
def test_removing_the_evidence_breaks_the_prediction_and_keeping_it_does_not():
    model = RegionModel()
    images = torch.ones(2, 3, 16, 16)
    labels = torch.zeros(2, dtype=torch.long)
    perfect = model.region.expand(2, 16, 16) + 1e-3 * torch.rand(2, 16, 16)
    metric = M.create_metric("fidelity", model, remove=(0.05, 0.1), keep=(0.1, 0.5))
    metric.update(_batch(images, perfect, labels))
    out = metric.compute()
    assert out["accuracy_clean"].item() == 1.0
    assert out["accuracy_remove_10"].item() == 0.0  # 25.6 px removed cover the 16-px region
    assert out["accuracy_remove_5"].item() == 0.0  # 13 of 16 region pixels removed: mean 3/16 < 0.25
    assert out["accuracy_keep_10"].item() == 1.0 and out["accuracy_keep_50"].item() == 1.0
    # Ranking the region last: removing the top 50 % leaves the region, keeping 10 % loses it.
    inverse = M.create_metric("fidelity", model, remove=(0.5,), keep=(0.1,))
    inverse.update(_batch(images, 1 - perfect, labels))
    assert inverse.compute()["accuracy_remove_50"].item() == 1.0 and inverse.compute()["accuracy_keep_10"].item() == 0.0
    assert metric.directions == {"accuracy_remove_5": "lower", "accuracy_remove_10": "lower",
                                 "accuracy_keep_10": "higher", "accuracy_keep_50": "higher"}


def test_quantile_selection_keeps_ties_and_rank_selection_is_exact():
    maps = torch.zeros(1, 10, 10)
    maps[0, :3] = 1.0  # 30 tied top pixels
    quantile = M.top_fraction_masks(maps, [0.1], "quantile")
    rank = M.top_fraction_masks(maps, [0.1], "rank", tie_break="raster")
    assert quantile.sum().item() == 30  # COMET's binarize_map: map >= quantile(map, 0.9) = 1
    assert rank.sum().item() == 10 and rank[0, 0, 0].all()  # the first 10 in raster order
    threshold = torch.quantile(maps.flatten(), 0.9)
    assert torch.equal(quantile[0, 0], maps[0] >= threshold)


def _fractions(maps, **options):
    images = torch.ones(maps.shape[0], 3, *maps.shape[1:])
    labels = torch.zeros(maps.shape[0], dtype=torch.long)
    metric = M.create_metric("fidelity", RegionModel(maps.shape[-1]), **options)
    metric.update(_batch(images, maps, labels))
    return metric.compute()


def test_rank_selection_keeps_exactly_half_of_a_cam_with_sixty_percent_zeros():
    g = torch.Generator().manual_seed(0)
    cam = torch.rand(2, 16, 16, generator=g) + 0.1
    cam.view(2, -1)[:, :154] = 0  # 154 of 256 pixels = 60 % ReLU zeros
    out = _fractions(cam, remove=(0.1,), keep=(0.5,))  # the default: rank, random tie-break
    assert out["kept_fraction_50"].item() == 128 / 256 and out["removed_fraction_10"].item() == 26 / 256
    old = _fractions(cam, remove=(0.1,), keep=(0.5,), selection="quantile")
    assert old["kept_fraction_50"].item() == 1.0  # the median is 0: ">= quantile" keeps the whole image
    metric = M.create_metric("fidelity", RegionModel(), remove=(0.1,), keep=(0.5,))
    assert {"removed_fraction_10", "kept_fraction_50"} <= set(metric.diagnostics)
    assert metric.config()["tie_break"] == "random" and metric.config()["tie_seed"] == 0


def test_rank_selection_removes_exactly_ten_percent_of_a_region_constant_map():
    regions = torch.arange(4).repeat_interleave(4).view(4, 4).repeat_interleave(5, 0).repeat_interleave(5, 1)
    maps = regions[None].float().expand(2, 20, 20).contiguous()  # 4 constant regions of 25 % each
    out = _fractions(maps, remove=(0.1,), keep=(0.5,))
    assert out["removed_fraction_10"].item() == 0.1 and out["kept_fraction_50"].item() == 0.5
    assert _fractions(maps, remove=(0.1,), selection="quantile")["removed_fraction_10"].item() == 0.25
    top = M.top_fraction_masks(maps, [0.1], indices=torch.tensor([3, 4]))[:, 0]
    assert (top & (regions == 3)).sum().item() == 2 * 40  # all 40 pixels from the top region
    raster = M.top_fraction_masks(maps, [0.1], tie_break="raster")[0, 0]
    assert not torch.equal(top[0], raster)  # a random part of the region, not its first rows
    alone = M.top_fraction_masks(maps[1:], [0.1], indices=torch.tensor([4]))[:, 0]
    assert torch.equal(alone[0], top[1])  # seeded by (seed, dataset index): batch-mates do not matter
    assert not torch.equal(top[0], top[1])  # and each image draws its own tie order


def test_fidelity_fractions_are_checked():
    with pytest.raises(ConfigError, match="remove"):
        M.create_metric("fidelity", RegionModel(), remove=(1.5,))
    with pytest.raises(ConfigError, match="at least one"):
        M.create_metric("fidelity", RegionModel(), remove=(), keep=())


# --- mu-fidelity -------------------------------------------------------------------------------------
def test_gradient_times_input_of_a_linear_model_has_mu_fidelity_one():
    model = LinearModel()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, 18, 18, generator=g)
    labels = torch.tensor([0, 1, 2])
    exact = (model.w[labels] * images).sum(1)  # the logit drop of a removed set is the sum of this map
    corr, defined = mu_fidelity(model, images, exact, labels, grid=6, samples=40)
    assert defined.all() and torch.allclose(corr, torch.ones(3, dtype=torch.float64), atol=1e-6)
    noisy, _ = mu_fidelity(model, images, torch.rand(3, 18, 18, generator=g), labels, grid=6, samples=40)
    assert (noisy < 0.7).all()  # a map unrelated to the weights correlates far less


def test_mu_fidelity_correlations_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    model = LinearModel()
    g = torch.Generator().manual_seed(2)
    images, maps, labels = torch.randn(2, 3, 18, 18, generator=g), torch.rand(2, 18, 18, generator=g), torch.tensor([1, 0])
    indices = torch.tensor([5, 6])
    cells = subset_masks(indices, grid=9, subset=0.2, samples=30, seed=3, device="cpu")
    keep = torch.nn.functional.interpolate(cells.float(), size=(18, 18), mode="nearest-exact")  # 2x2 blocks per cell
    assert torch.equal(keep, cells.float().repeat_interleave(2, 2).repeat_interleave(2, 3))
    with torch.no_grad():
        clean = model(images).gather(1, labels[:, None])
        masked = model((images[:, None] * keep[:, :, None]).flatten(0, 1)).view(2, 30, -1)
    drops = (clean - masked.gather(2, labels.view(2, 1, 1).expand(2, 30, 1))[..., 0]).numpy()
    removed = (maps[:, None] * (1 - keep)).flatten(2).sum(-1).numpy()
    for kind, reference in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr)):
        ours, _ = mu_fidelity(model, images, maps, labels, indices, grid=9, samples=30, seed=3, correlation=kind)
        theirs = [reference(removed[i], drops[i])[0] for i in range(2)]
        assert np.allclose(ours.numpy(), theirs, atol=1e-6)


def test_mu_fidelity_is_seeded_per_sample_and_counts_degenerate_images():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2)

    images, maps, labels = torch.randn(2, 3, 18, 18), torch.rand(2, 18, 18), torch.zeros(2, dtype=torch.long)
    metric = M.create_metric("mu_fidelity", Constant(), grid=3, samples=10)
    metric.update(_batch(images, maps, labels))
    out = metric.compute()
    assert out["mu_fidelity"].item() == 0.0 and out["degenerate"].item() == 2
    model = LinearModel()
    whole, _ = mu_fidelity(model, images, maps, labels, torch.tensor([3, 4]), grid=3, samples=10, seed=7)
    alone, _ = mu_fidelity(model, images[1:], maps[1:], labels[1:], torch.tensor([4]), grid=3, samples=10, seed=7)
    assert torch.allclose(whole[1:], alone)
