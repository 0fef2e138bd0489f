"""Stability across models: SSIM (agreement with skimage) and MeGe (hand-computed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reproduce.metrics as M
from reproduce.errors import ConfigError, InputError
from reproduce.metrics import AttributionBatch
from reproduce.metrics.ssim import ssim


class Fixed(nn.Module):
    """Predicts ``cls`` for every input; its attribution map is the constant ``value``."""

    def __init__(self, cls: int, value: float):
        super().__init__()
        self.cls, self.value = cls, value

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((x.shape[0],), self.cls), 3).float()


def explain_by_model(images, targets, model=None):
    value = 0.0 if model is None else model.value
    return torch.full((images.shape[0], *images.shape[-2:]), value)


def test_ssim_agrees_with_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 24, 20, generator=g)
    b = (a + 0.3 * torch.rand(3, 24, 20, generator=g)).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(3):
        theirs = skimage_metrics.structural_similarity(a[i].double().numpy(), b[i].double().numpy(), data_range=1.0,
                                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(theirs, abs=1e-10)


def test_grayscale_follows_the_pair_recipe():
    maps = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(1))
    for i in range(2):
        a = np.abs(maps[i].double().numpy())
        vmax, vmin = np.percentile(a, 99), a.min()
        assert np.allclose(M.grayscale(maps)[i].numpy(), np.clip((a - vmin) / (vmax - vmin), 0, 1))


def test_identical_maps_have_ssim_100_and_different_maps_less():
    images = torch.randn(2, 3, 16, 16)
    maps = torch.rand(2, 16, 16)
    batch = AttributionBatch(images=images, labels=torch.zeros(2, dtype=torch.long), targets=torch.zeros(2, dtype=torch.long),
                             maps=maps)
    same = M.create_metric("ssim_stability", other=Fixed(0, 0.0))
    same.update(batch, explain=lambda x, t, model=None: maps)
    assert same.compute()["ssim"].item() == pytest.approx(100.0)
    other = M.create_metric("ssim_stability", other=Fixed(0, 0.0))
    other.update(batch, explain=lambda x, t, model=None: torch.rand(2, 16, 16))
    assert other.compute()["ssim"].item() < 50
    with pytest.raises(ConfigError, match="other"):
        M.create_metric("ssim_stability")
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8))


def test_mege_of_identical_maps_is_100():
    models = [Fixed(0, 0.5), Fixed(0, 0.5)]
    labels = torch.zeros(2, dtype=torch.long)
    batch = AttributionBatch(images=torch.zeros(2, 3, 4, 4), labels=labels, targets=labels, maps=torch.full((2, 4, 4), 0.5))
    metric = M.create_metric("mege", models[0], others=models[1:])
    metric.update(batch, explain=explain_by_model)
    out = metric.compute()
    assert out["mege"].item() == pytest.approx(100.0) and out["pairs"].item() == 2


def test_mege_uses_only_pairs_that_classify_correctly():
    # Models: evaluated (predicts 0, map 0.0), B (predicts 0, map 1.0), C (predicts 1, map 3.0).
    evaluated, b, c = Fixed(0, 0.0), Fixed(0, 1.0), Fixed(1, 3.0)
    labels = torch.tensor([0, 1])  # image 0: evaluated and B correct; image 1: only C correct
    batch = AttributionBatch(images=torch.zeros(2, 3, 4, 4), labels=labels, targets=labels, maps=torch.zeros(2, 4, 4))
    metric = M.create_metric("mege", evaluated, others=[b, c], map_normalization="none")
    metric.update(batch, explain=explain_by_model)
    out = metric.compute()
    # One pair (evaluated, B) on image 0: L2 distance of constant 0 vs 1 over 16 pixels = 4.
    assert out["pairs"].item() == 1 and out["mege"].item() == pytest.approx(100 / (1 + 4))
    nobody = M.create_metric("mege", c, others=[Fixed(2, 0.0)])
    nobody.update(AttributionBatch(images=torch.zeros(1, 3, 4, 4), labels=torch.zeros(1, dtype=torch.long),
                                   targets=torch.zeros(1, dtype=torch.long), maps=torch.zeros(1, 4, 4)), explain=explain_by_model)
    with pytest.raises(InputError, match="MeGe is undefined"):
        nobody.compute()


def test_spearman_distance_matches_xplique_definition():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(2, 6, 6, generator=g), torch.rand(2, 6, 6, generator=g)
    ours = M.stability.map_distance(a, b, "spearman")
    for i in range(2):
        rho = stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0]
        assert ours[i].item() == pytest.approx(np.sqrt(1 - abs(rho)))
