"""ROAD: equal to pytorch-grad-cam's implementation on the same model and map, the imputation solves
its neighbour-mean system, the curves are informative (not all 0, Quantus#333), bad knobs fail early."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import (
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from reproduce.errors import ConfigError
from reproduce.metrics import AttributionBatch, create_metric
from reproduce.metrics.road import NEIGHBOURS, linear_impute, removal_keep
from reproduce.metrics.perturbation_curves import rank_descending

TARGET = torch.tensor([1, 4, 2])


def test_equal_to_pytorch_grad_cam_road(cnn, images):
    """MoRF/LeRF softmax curves at 25/50/75 % removed, zero noise (measured max difference ~1e-7).

    pytorch-grad-cam keeps the pixels below ``np.percentile(map, q)``; for 64x64 maps and these q the
    number removed equals ours, ``round(p * 4096)`` (checked below)."""
    maps = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(4))
    fractions = [0.25, 0.5, 0.75]
    ours = create_metric("road", cnn, percentages=fractions, noise=0.0, score="softmax")
    ours.update(AttributionBatch(images=images, labels=TARGET, targets=TARGET, maps=maps))
    out = ours.compute()
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in TARGET]
    cams = maps.numpy()
    for order, remover in (("morf", RemoveMostRelevantFirst), ("lerf", RemoveLeastRelevantFirst)):
        reference = []
        for p in fractions:
            q = 100 * (1 - p)
            metric = PerturbationConfidenceMetric(remover(q, NoisyLinearImputer(noise=0.0)))
            reference.append(float(np.mean(metric(images, cams, targets, cnn, return_diff=False))))
            kept = (cams[0] < np.percentile(cams[0], q)).sum() if order == "morf" else \
                ((1 - cams[0]) < np.percentile(1 - cams[0], q)).sum()
            assert kept == 4096 - round(p * 4096)
        diff = np.abs(out[order].numpy() - np.array(reference)).max()
        print(f"ROAD {order}: max difference to pytorch-grad-cam {diff:.1e}")
        assert diff < 1e-5
    # ROADCombined = (LeRF - MoRF) / 2 of the differences to the clean score, averaged over fractions
    assert out["combined"].item() == pytest.approx((out["lerf"].mean() - out["morf"].mean()).item() / 2)


def test_imputation_solves_the_neighbour_mean_system():
    g = np.random.default_rng(0)
    image = g.normal(size=(2, 9, 7))
    keep = g.random((9, 7)) > 0.4
    filled = image.copy()
    filled.reshape(2, -1)[:, ~keep.ravel()] = linear_impute(image, keep).T
    for r, c in zip(*np.nonzero(~keep)):
        total, weight = np.zeros(2), 0.0
        for (dy, dx), w in NEIGHBOURS:
            if 0 <= r + dy < 9 and 0 <= c + dx < 7:
                total += w * filled[:, r + dy, c + dx]
                weight += w
        np.testing.assert_allclose(filled[:, r, c], total / weight, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(linear_impute(image, np.zeros((9, 7), bool)), 0.0, atol=1e-12)  # nothing to interpolate


class PatchDetector(nn.Module):
    """Logit 1 = mean of channel 0 over a central patch; logit 0 = 0: only the patch matters."""

    num_classes = 2

    def forward(self, x):
        evidence = x[:, 0, 24:40, 24:40].mean((1, 2))
        return torch.stack([torch.zeros_like(evidence), evidence], 1)


def test_curves_are_informative_not_zero_and_seeded():
    images = torch.zeros(2, 3, 64, 64)
    images[:, :, 24:40, 24:40] = 4.0
    oracle = torch.zeros(2, 64, 64)
    oracle[:, 24:40, 24:40] = 1.0
    oracle += torch.linspace(0, 1e-3, 64 * 64).view(64, 64)  # break ties inside and outside the patch
    batch = AttributionBatch(images=images, labels=torch.tensor([1, 1]), targets=torch.tensor([1, 1]), maps=oracle)
    road = create_metric("road", PatchDetector(), percentages=[0.0625, 0.5], score="logit", noise=0.01)
    road.update(batch)
    out = road.compute()
    assert out["clean"].item() == pytest.approx(4.0)
    assert out["morf"][0].item() < 0.1  # the patch (6.25 % of the pixels) removed and imputed from zeros
    assert out["lerf"][0].item() == pytest.approx(4.0)  # least relevant 6.25 % removed: the patch stays
    assert out["combined"].item() > 1.0 and (out["morf"] != 0).all()  # not all zeros (Quantus#333)
    again = create_metric("road", PatchDetector(), percentages=[0.0625, 0.5], score="logit", noise=0.01)
    again.update(batch)
    assert torch.equal(again.compute()["morf"], out["morf"])
    other_seed = create_metric("road", PatchDetector(), percentages=[0.0625, 0.5], score="logit", noise=0.01, seed=1)
    other_seed.update(batch)
    assert not torch.equal(other_seed.compute()["morf"], out["morf"])


def test_removal_counts_and_orders():
    ranks = rank_descending(torch.arange(10.0)[None])  # value 9 ranks 0
    assert removal_keep(ranks, 0.3, "morf")[0].tolist() == [True] * 7 + [False] * 3
    assert removal_keep(ranks, 0.3, "lerf")[0].tolist() == [False] * 3 + [True] * 7
    assert not removal_keep(ranks, 1.0, "morf").any()


@pytest.mark.parametrize("percentages", [[0.0, 0.5], [0.5, 1.5], [-0.1], [], [0.5, 0.2], [True]])
def test_percentages_outside_the_unit_interval_fail_before_any_pass(cnn, percentages):
    with pytest.raises(ConfigError, match="percentages must"):
        create_metric("road", cnn, percentages=percentages)
