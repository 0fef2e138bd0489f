"""Localisation: PxAP (both variants), pointing game, energy pointing game, IoU-AUC.

Golden values on hand-built maps; agreement with Quantus' PointingGame where definitions match.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

import reproduce.metrics as M
from reproduce.errors import ConfigError, InputError
from reproduce.metrics import AttributionBatch
from reproduce.metrics.pxap import pxap, pxap_edges


def _batch(maps, masks, indices=None):
    b, h, w = maps.shape
    zeros = torch.zeros(b, dtype=torch.long)
    return AttributionBatch(images=torch.zeros(b, 3, h, w), labels=zeros, targets=zeros, maps=maps, masks=masks,
                            indices=indices)


def _square_mask(b=2, size=32, lo=10, hi=20):
    masks = torch.zeros(b, size, size, dtype=torch.bool)
    masks[:, lo:hi, lo:hi] = True
    return masks


def _pxap(maps, masks, **options):
    metric = M.create_metric("pxap", **options)
    metric.update(_batch(maps, masks))
    return metric.compute()["pxap"].item()


# --- PxAP --------------------------------------------------------------------------------------------
def test_ground_truth_as_map_scores_100_standard_and_the_synthetic_point_short_of_it_comet():
    masks = _square_mask()
    maps = masks.float()
    assert _pxap(maps, masks) == pytest.approx(100.0, abs=1e-9)
    # COMET: negatives (0) fall below the cut-off and are dropped; every point has precision 1 and
    # recall 1, but the sum starts from the synthetic point's recall 1/10001.
    assert _pxap(maps, masks, variant="comet") == pytest.approx(100 * (1 - 1 / 10001), abs=1e-9)
    # With the top bin empty the first recall difference is taken from 0: exactly 100.
    assert _pxap(maps * 0.9, masks, variant="comet", map_normalization="none") == pytest.approx(100.0, abs=1e-9)


def test_constant_map_scores_the_positive_fraction():
    masks = _square_mask()
    chance = 100 * masks.float().mean().item()
    assert _pxap(torch.full((2, 32, 32), 3.0), masks) == pytest.approx(chance)  # minmax -> all zeros, threshold 0
    assert _pxap(torch.full((2, 32, 32), 0.5), masks, variant="comet", map_normalization="none") == pytest.approx(chance)
    with pytest.raises(InputError, match="cut-off"):  # minmax -> zeros -> all below the cut-off
        pxap(torch.full((2, 32, 32), 3.0), masks, variant="comet")  # the functional twin, as COMET's evaluator
    # The Metric reports that undefined value as NaN, so a constant control row does not abort a table.
    assert np.isnan(_pxap(torch.full((2, 32, 32), 3.0), masks, variant="comet"))


def _toy_two_images():
    maps = torch.tensor([[[0.95, 0.65], [0.35, 0.15]], [[0.85, 0.25], [0.75, 0.05]]])
    masks = torch.tensor([[[1, 0], [1, 0]], [[1, 1], [0, 0]]], dtype=torch.bool)
    return maps, masks


def test_hand_computed_pxap_on_a_two_image_toy():
    maps, masks = _toy_two_images()
    # Pooled positives 0.95 0.35 0.85 0.25, negatives 0.65 0.15 0.75 0.05; thresholds k/10.
    # (precision, recall) from theta = 0.9 down: (1, 1/4) (1, 1/2) (2/3, 1/2) ... (3/5, 3/4) (2/3, 1) ...
    standard = Fraction(1, 4) + Fraction(1, 4) + Fraction(3, 5) * Fraction(1, 4) + Fraction(2, 3) * Fraction(1, 4)
    assert _pxap(maps, masks, bins=10, map_normalization="none") == pytest.approx(100 * float(standard))
    # COMET (cut-off 0.1): 0.05 is dropped; synthetic point TP=1, FP=0, FN=10000 first.
    comet = standard - Fraction(1, 10001)
    assert _pxap(maps, masks, variant="comet", bins=10, map_normalization="none") == pytest.approx(100 * float(comet))
    # Two batches pool like one.
    metric = M.create_metric("pxap", variant="comet", bins=10, map_normalization="none")
    metric.update(_batch(maps[:1], masks[:1]))
    metric.update(_batch(maps[1:], masks[1:]))
    assert metric.compute()["pxap"].item() == pytest.approx(100 * float(comet))


def test_baseline_grid_of_forty_has_a_cutoff_of_0_025():
    metric = M.create_metric("pxap", variant="comet", bins=40)
    assert metric.config()["cutoff"] == 0.025
    edges = pxap_edges(40, 0.025)
    assert edges[0].item() == 0.025 and edges[-1].item() == 1.0 and len(edges) == 40


def test_map_values_outside_unit_range_need_minmax():
    maps, masks = _toy_two_images()
    with pytest.raises(InputError, match="minmax"):
        _pxap(maps * 2, masks, map_normalization="none")


def test_empty_ground_truth_masks_are_an_error_naming_the_sample():
    masks = _square_mask(b=3)
    masks[2] = False
    batch = _batch(torch.rand(3, 32, 32), masks, indices=torch.tensor([7, 8, 9]))
    for name in ("pxap", "pointing_game", "energy_pointing_game", "iou_auc"):
        with pytest.raises(InputError, match=r"\[9\]"):
            M.create_metric(name).update(batch)


# --- pointing game -----------------------------------------------------------------------------------
def test_pointing_game_on_ground_truth_and_constant_maps():
    masks = _square_mask()
    assert M.pointing_hits(masks.float(), masks).all()
    constant = torch.ones(2, 32, 32)
    # ties="first": the first maximum is the top-left pixel, 10 px from the mask corner > 15*32/224.
    assert not M.pointing_hits(constant, masks, ties="first").any()
    assert M.pointing_hits(constant, masks, ties="any").all()  # Quantus' rule: any maximum may hit
    assert M.pointing_hits(constant, masks).all()  # the default centroid rule points at the centre


def test_a_region_constant_map_points_at_its_region_centroid():
    maps = torch.zeros(3, 32, 32)
    maps[0, 4:13, 16:29] = 1.0  # a 9x13 region: centroid (8, 22), a pixel of the region
    maps[1, 4:12, 16:28] = 1.0  # an 8x12 region: centroid (7.5, 21.5), 4 equally near pixels -> (7, 21)
    maps[2, 0:3, 0:3] = maps[2, 0:3, 29:32] = 1.0  # two blobs: centroid (1, 15.5) is on neither
    points = M.localization.pointing_points(maps).view(3, 32, 32)
    assert [tuple(p.nonzero()[0].tolist()) for p in points] == [(8, 22), (7, 21), (1, 2)]
    assert points.flatten(1).sum(1).tolist() == [1, 1, 1]
    first = M.localization.pointing_points(maps, "first").view(3, 32, 32)
    assert tuple(first[0].nonzero()[0].tolist()) == (4, 16)  # the old rule: the region's top-left pixel
    # The mask covers the region's centre but not its top-left corner (3.2 px tolerance at 32 px).
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, 7:10, 20:25] = True
    assert M.pointing_hits(maps[:1], masks).item() and not M.pointing_hits(maps[:1], masks, ties="first").item()
    metric = M.create_metric("pointing_game")
    assert metric.config()["ties"] == "centroid" and "centroid" in metric.config()["tie_rule"]


def test_pointing_tolerance_is_torchray_strict_and_scales_with_the_image():
    masks = torch.zeros(1, 224, 224, dtype=torch.bool)
    masks[0, 100:120, 100:120] = True
    maps = torch.zeros(1, 224, 224)
    maps[0, 110, 135] = 1.0  # 16 px right of the mask edge
    assert not M.pointing_hits(maps, masks).item()  # 16 >= 15
    maps[0, 110, 135], maps[0, 110, 134] = 0.0, 1.0  # 15 px: TorchRay's test is d^2 < 15^2
    assert not M.pointing_hits(maps, masks).item()
    maps[0, 110, 134], maps[0, 110, 133] = 0.0, 1.0  # 14 px
    assert M.pointing_hits(maps, masks).item()
    assert not M.pointing_hits(maps, masks, tolerance=0).item()
    assert M.localization.default_tolerance(64, 64) == pytest.approx(15 * 64 / 224)


def test_pointing_game_agrees_with_quantus():
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 16, 16, generator=g)
    masks = torch.rand(6, 16, 16, generator=g) > 0.7
    flat = maps.flatten(1).argmax(1)
    masks.view(6, -1)[torch.arange(3), flat[:3]] = True  # the first three images hit for sure
    masks.view(6, -1)[torch.arange(3, 6), flat[3:]] = False  # the last three miss for sure
    metric = quantus.PointingGame(disable_warnings=True, display_progressbar=False)
    theirs = metric(model=None, x_batch=np.zeros((6, 3, 16, 16), np.float32), y_batch=np.zeros(6, int),
                    a_batch=maps[:, None].numpy(), s_batch=masks[:, None].numpy().astype(np.float32), channel_first=True)
    ours = M.pointing_hits(maps, masks, tolerance=0, ties="any")
    assert ours.tolist() == [bool(v) for v in theirs] == [True] * 3 + [False] * 3


def test_pointing_game_metric_averages_hits():
    masks = _square_mask(b=4)
    maps = torch.zeros(4, 32, 32)
    maps[:3, 15, 15] = 1.0
    maps[3, 0, 31] = 1.0
    metric = M.create_metric("pointing_game", tolerance=2)
    metric.update(_batch(maps, masks))
    assert metric.compute()["accuracy"].item() == pytest.approx(0.75)


# --- energy pointing game ----------------------------------------------------------------------------
def test_energy_inside_the_mask():
    masks = _square_mask(b=3)
    maps = torch.zeros(3, 32, 32)
    maps[0] = masks[0].float()  # all energy inside
    maps[1, 15, 15], maps[1, 0, 0], maps[1, 0, 1] = 2.0, 1.0, -5.0  # 2 of 3 positive units inside
    # maps[2] stays zero: no positive energy -> 0, counted
    metric = M.create_metric("energy_pointing_game")
    metric.update(_batch(maps, masks))
    out = metric.compute()
    assert out["energy"].item() == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert out["zero_energy"].item() == 1


# --- IoU-AUC -----------------------------------------------------------------------------------------
def test_iou_auc_on_hand_made_masks():
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[:, :4, :] = True  # top half
    maps = torch.zeros(3, 8, 8)
    maps[0, :4, :] = 0.8  # IoU 1
    maps[1, :2, :] = 0.8  # IoU 1/2
    maps[2, 4:, :] = 0.8  # IoU 0
    ious = M.localization.binary_iou(maps.double(), masks, torch.tensor([0.5]))
    assert ious[:, 0].tolist() == [1.0, 0.5, 0.0]
    # Fraction with IoU >= t on t = 0, .25, .5, .75, 1: 1, 2/3, 2/3, 1/3, 1/3; trapezoid with dt = 1/4.
    expected = 0.25 * (0.5 * 1 + 2 / 3 + 2 / 3 + 1 / 3 + 0.5 * 1 / 3)
    assert M.iou_auc(maps, masks, thresholds=(0.5,), iou_step=0.25, map_normalization="none").item() == pytest.approx(expected)
    # COMET's fine grid: about the mean IoU (0.5); exactly 0.5 + 1/60000 with the jump at t = 0.
    fine = M.iou_auc(maps, masks, thresholds=(0.5,), map_normalization="none").item()
    assert fine == pytest.approx(0.5 + 1 / 60000, abs=1e-9)
    metric = M.create_metric("iou_auc", thresholds=(0.5, 0.9), map_normalization="none")
    metric.update(_batch(maps, masks))
    out = metric.compute()
    assert out["iou_auc"].item() == pytest.approx(fine) and out["best_threshold"].item() == 0.5
    assert out["iou_auc_by_threshold"][1].item() == pytest.approx(0.5 / 20000)  # all IoU 0: only the t = 0 trapezoid


def test_iou_step_must_divide_one():
    with pytest.raises(ConfigError, match="iou_step"):
        M.create_metric("iou_auc", iou_step=0.3)
