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
    undefined = nobody.compute()  # no pair both correct: undefined, reported as NaN with pairs = 0
    assert undefined["mege"].isnan() and undefined["pairs"].item() == 0 and undefined["pairs_unequal"].item() == 0
    with pytest.raises(InputError, match="update"):
        M.create_metric("mege", c, others=[Fixed(2, 0.0)]).compute()


def test_spearman_distance_matches_xplique_definition():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(2, 6, 6, generator=g), torch.rand(2, 6, 6, generator=g)
    ours = M.stability.map_distance(a, b, "spearman")
    for i in range(2):
        rho = stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0]
        assert ours[i].item() == pytest.approx(np.sqrt(1 - abs(rho)))


def _xplique_reco(s_eq: np.ndarray, s_ne: np.ndarray) -> float:
    """Xplique's ``MeGe.evaluate`` ReCo loop (xplique/metrics/representativity.py), transcribed."""
    s_total = np.concatenate([s_eq, s_ne], axis=0)
    reco, step = 0.0, (len(s_total) // 20) + 1
    for gamma in np.sort(s_total)[::step]:
        tp, tn = np.sum(s_eq < gamma), np.sum(s_ne > gamma)
        fp, fn = np.sum(s_ne < gamma), np.sum(s_eq > gamma)
        reco = max(reco, tp / (tp + fn + 1e-10) + tn / (tn + fp + 1e-10) - 1.0)
    return reco


def test_reco_equals_xplique_on_random_distance_sets():
    g = np.random.default_rng(0)
    for n_eq, n_ne, shift in ((30, 12, 0.3), (7, 50, 0.0), (100, 3, 1.0)):
        s_eq, s_ne = g.random(n_eq), g.random(n_ne) + shift
        ours = M.stability.reco_score(torch.from_numpy(s_eq), torch.from_numpy(s_ne)).item()
        assert ours == pytest.approx(_xplique_reco(s_eq, s_ne), abs=1e-12)
    separated = M.stability.reco_score(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.7, 0.8, 0.9]))
    assert separated.item() == pytest.approx(1.0, abs=1e-9)


class Predicts(nn.Module):
    """Predicts ``classes[i]`` for image i (images carry their index in pixel [0, 0, 0])."""

    def __init__(self, classes, value):
        super().__init__()
        self.classes, self.value = torch.tensor(classes), value

    def forward(self, x):
        return torch.nn.functional.one_hot(self.classes[x[:, 0, 0, 0].long()], 3).float()


def test_mege_and_reco_follow_xplique_sets_and_held_out_pairs():
    labels = torch.tensor([0, 0, 1, 2])
    a = Predicts([0, 0, 1, 1], 0.0)  # correct on 0, 1, 2
    b = Predicts([0, 1, 1, 2], 1.0)  # correct on 0, 2, 3
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 4, 4).contiguous()
    maps = torch.zeros(4, 4, 4)
    # map values: model a 0.0 everywhere, b 1.0 -> L2 distance (no normalisation) 4 on every image.
    batch = AttributionBatch(images=images, labels=labels, targets=labels, maps=maps)
    metric = M.create_metric("mege", a, others=[b], map_normalization="none")
    metric.update(batch, explain=explain_by_model)
    out = metric.compute()
    # S=: images 0, 2 (both correct); S!=: images 1, 3 (one correct); all distances 4: nothing separates.
    assert (out["pairs"].item(), out["pairs_unequal"].item()) == (2, 2)
    assert out["mege"].item() == pytest.approx(100 / 5) and out["reco"].item() == pytest.approx(0.0, abs=1e-9)
    twin = M.stability.mege_reco([maps, torch.ones(4, 4, 4)], torch.stack([a(images).argmax(-1), b(images).argmax(-1)]),
                                 labels, normalization="none")
    assert [v.item() for v in twin] == pytest.approx([100 / 5, 0.0])
    held = M.create_metric("mege", a, others=[b, Predicts([2, 2, 2, 2], 1.0)], map_normalization="none", points="held_out")
    assert "extra:held_out_by" in held.requires
    with pytest.raises(InputError, match="held_out_by"):
        held.update(batch, explain=explain_by_model)
    # Image i was not seen by model held_out_by[i]; only pairs containing that model count.
    extra = {"held_out_by": torch.tensor([0, 1, 2, 2])}
    held.update(AttributionBatch(images=images, labels=labels, targets=labels, maps=maps, extra=extra),
                explain=explain_by_model)
    result = held.compute()
    # image 0 (held out by a): (a,b) S=, (a,c) S!=; image 1 (by b): (a,b) S!=, (b,c) neither correct;
    # image 2 (by c): (a,c), (b,c) S!=; image 3 (by c): (a,c) S!=, (b,c) S=; (a,b) never counts there.
    assert (result["pairs"].item(), result["pairs_unequal"].item()) == (2, 5)
    assert held.config()["points"].startswith("training images")


def test_spearman_mege_drops_undefined_pairs_like_xplique():
    labels = torch.zeros(2, dtype=torch.long)
    images = torch.zeros(2, 3, 4, 4)
    g = torch.Generator().manual_seed(0)
    varied = torch.rand(2, 4, 4, generator=g)
    batch = AttributionBatch(images=images, labels=labels, targets=labels, maps=varied)
    metric = M.create_metric("mege", Fixed(0, 0.0), others=[Fixed(0, 0.5)], distance="spearman")
    metric.update(batch, explain=explain_by_model)  # the other model's maps are constant: rho undefined
    out = metric.compute()
    assert out["undefined"].item() == 2 and out["pairs"].item() == 0 and out["mege"].isnan()
