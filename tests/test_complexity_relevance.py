"""Sparseness, complexity, relevance mass and rank accuracy: equal to Quantus on the same maps and
masks, golden values on hand-built maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reproduce.errors import InputError
from reproduce.metrics import AttributionBatch, create_metric
from reproduce.metrics.complexity import entropy_complexity, gini_sparseness
from reproduce.metrics.relevance import relevance_mass, relevance_rank


def _batch(maps, masks=None):
    b = maps.shape[0]
    return AttributionBatch(images=torch.zeros(b, 3, *maps.shape[-2:]), labels=torch.zeros(b, dtype=torch.long),
                            targets=torch.zeros(b, dtype=torch.long), maps=maps, masks=masks)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(4, 16, 16, generator=g) * torch.rand(4, 1, 1, generator=g) + 0.3
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    for i in range(4):
        masks[i, 2 + i : 9 + i, 3:11] = True
    return maps, masks


def _quantus(metric, maps, masks=None):
    x = np.zeros((maps.shape[0], 1, 16, 16), dtype=np.float32)
    y = np.zeros(maps.shape[0], dtype=int)
    s = None if masks is None else masks.numpy()[:, None].astype(np.float32)
    return np.asarray(metric(model=None, x_batch=x, y_batch=y, a_batch=maps.numpy()[:, None].astype(np.float64),
                             s_batch=s, channel_first=True, device="cpu"), dtype=np.float64)


def test_sparseness_and_complexity_equal_quantus(data):
    import quantus

    maps, _ = data
    for name, cls, fn in (("sparseness", quantus.Sparseness, gini_sparseness),
                          ("complexity", quantus.Complexity, lambda m: entropy_complexity(m)[0])):
        reference = _quantus(cls(disable_warnings=True), maps)
        ours = fn(maps).numpy()
        print(f"{name}: max difference to Quantus {np.abs(ours - reference).max():.1e}")
        np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-9)
        metric = create_metric(name)
        metric.update(_batch(maps))
        assert metric.compute()[name].item() == pytest.approx(reference.mean(), rel=1e-6)


def test_complexity_and_sparseness_golden_values():
    one_hot = torch.zeros(1, 8, 8)
    one_hot[0, 3, 4] = 5.0
    uniform = torch.full((1, 8, 8), -2.0)
    assert entropy_complexity(one_hot)[0].item() == pytest.approx(0.0, abs=1e-9)
    assert entropy_complexity(uniform)[0].item() == pytest.approx(math.log(64), rel=1e-9)
    assert gini_sparseness(one_hot).item() == pytest.approx(63 / 64, abs=1e-5)  # (n - 1) / n, up to the 1e-7 offset
    assert gini_sparseness(uniform).item() == pytest.approx(0.0, abs=1e-9)
    zero = torch.zeros(1, 8, 8)
    values, is_zero = entropy_complexity(zero)
    assert is_zero.item() and values.item() == pytest.approx(math.log(64))  # counted as uniform
    metric = create_metric("complexity")
    metric.update(_batch(zero))
    assert metric.compute()["zero_maps"].item() == 1.0


@pytest.mark.parametrize("relevance", ["signed", "positive"])
def test_relevance_mass_and_rank_accuracy_equal_quantus(data, relevance):
    import quantus

    maps, masks = data
    maps = maps if relevance == "signed" else maps.clamp_min(0)  # Quantus takes the map as it is
    mass_ref = _quantus(quantus.RelevanceMassAccuracy(disable_warnings=True), maps, masks)
    rank_ref = _quantus(quantus.RelevanceRankAccuracy(disable_warnings=True), maps, masks)
    mass, _ = relevance_mass(maps, masks, relevance)
    rank = relevance_rank(maps, masks, "signed")
    print(f"relevance ({relevance}): max difference to Quantus mass {np.abs(mass.numpy() - mass_ref).max():.1e}, "
          f"rank {np.abs(rank.numpy() - rank_ref).max():.1e}")
    np.testing.assert_allclose(mass.numpy(), mass_ref, rtol=1e-6)
    np.testing.assert_allclose(rank.numpy(), rank_ref, rtol=0, atol=1e-12)


def test_relevance_golden_values_and_empty_masks():
    maps = torch.zeros(1, 4, 4)
    maps[0, 0, :2] = torch.tensor([3.0, 1.0])
    maps[0, 3, 3] = -4.0
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 3, 3] = True
    assert relevance_mass(maps, mask, "positive")[0].item() == pytest.approx(3 / 4)
    assert relevance_mass(maps, mask, "absolute")[0].item() == pytest.approx(7 / 8)
    signed, has = relevance_mass(maps, mask, "signed")  # (3 - 4) inside over a total of 3 + 1 - 4 = 0
    assert not has.item() and signed.item() == 0.0
    # top-2 by signed value: (0,0)=3 in the mask, (0,1)=1 outside -> 1/2; by |value|: 4 and 3, both inside
    assert relevance_rank(maps, mask, "signed").item() == 0.5
    assert relevance_rank(maps, mask, "absolute").item() == 1.0
    metric = create_metric("relevance_mass_accuracy")
    with pytest.raises(InputError, match="are empty"):
        metric.update(_batch(maps, torch.zeros(1, 4, 4, dtype=torch.bool)))
