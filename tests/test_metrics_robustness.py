"""Robustness (COMET's perturbed-map PxAP) and max-sensitivity (agreement with Captum)."""

from __future__ import annotations

import pytest
import torch

import reproduce.metrics as M
from reproduce.errors import InputError
from reproduce.metrics import AttributionBatch


def two_level_explain(images, targets, model=None):
    """A deterministic attributor whose maps take two values (1 where channel 0 > 0, else 0)."""
    return (images[:, 0] > 0).float()


def square_explain(images, targets, model=None):
    return (images**2).sum(1) * (1 + targets.view(-1, 1, 1).float())


def _batch(images, maps, indices=None, **extra):
    zeros = torch.zeros(images.shape[0], dtype=torch.long)
    return AttributionBatch(images=images, labels=zeros, targets=zeros, maps=maps, indices=indices, extra=extra)


def test_zero_strength_perturbation_of_a_deterministic_attributor_scores_100():
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    batch = _batch(images, two_level_explain(images, None))
    standard = M.create_metric("robustness", keep_prob=1.0, variant="standard")
    standard.update(batch, explain=two_level_explain)
    assert standard.compute()["pxap"].item() == pytest.approx(100.0)
    comet = M.create_metric("robustness", keep_prob=1.0)  # the code-faithful PxAP: synthetic first point
    comet.update(batch, explain=two_level_explain)
    assert comet.compute()["pxap"].item() == pytest.approx(100 * (1 - 1 / 10001))


def test_pixel_drop_lowers_the_score_and_does_not_depend_on_batch_composition():
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    indices = torch.tensor([10, 11, 12, 13])
    batch = _batch(images, square_explain(images, torch.zeros(4, dtype=torch.long)), indices)
    whole = M.create_metric("robustness", variant="standard")
    whole.update(batch, explain=square_explain)
    split = M.create_metric("robustness", variant="standard")
    for rows in (slice(0, 1), slice(1, 4)):
        split.update(_batch(images[rows], batch.maps[rows], indices[rows]), explain=square_explain)
    assert whole.compute()["pxap"].item() == pytest.approx(split.compute()["pxap"].item(), abs=1e-9)
    assert whole.compute()["pxap"].item() < 95
    dropped = M.drop_pixels(images, indices, keep_prob=0.8, seed=0)
    zeroed = (dropped == 0).all(1)
    assert torch.equal(dropped[~zeroed[:, None].expand_as(images)], images[~zeroed[:, None].expand_as(images)])
    assert 0.1 < zeroed.float().mean().item() < 0.3  # about 20 % of pixels, all channels at once
    assert torch.equal(M.drop_pixels(images[2:3], indices[2:3]), dropped[2:3])


def test_background_shift_uses_the_provided_images():
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    metric = M.create_metric("robustness", perturbation="bg_shift", variant="standard")
    assert metric.requires == ("explain", "extra:images_bg_shift")
    with pytest.raises(InputError, match="images_bg_shift"):
        metric.update(_batch(images, two_level_explain(images, None)), explain=two_level_explain)
    metric.update(_batch(images, two_level_explain(images, None), images_bg_shift=images.clone()), explain=two_level_explain)
    assert metric.compute()["pxap"].item() == pytest.approx(100.0)
    shifted = M.create_metric("robustness", perturbation="bg_shift", variant="standard")
    shifted.update(_batch(images, two_level_explain(images, None), images_bg_shift=-images), explain=two_level_explain)
    assert shifted.compute()["pxap"].item() < 60  # the inverted map ranks the reference region last


def test_robustness_needs_explain():
    images = torch.randn(1, 3, 16, 16)
    with pytest.raises(InputError, match="explain"):
        M.create_metric("robustness").update(_batch(images, torch.rand(1, 16, 16)))


def test_nan_re_explained_maps_name_the_sample():
    def nan_explain(images, targets, model=None):
        out = square_explain(images, targets)
        out[1] = float("nan")
        return out

    images = torch.randn(2, 3, 16, 16)
    with pytest.raises(InputError, match=r"\[21\]"):
        M.create_metric("robustness").update(_batch(images, torch.rand(2, 16, 16), torch.tensor([20, 21])),
                                             explain=nan_explain)


# --- max-sensitivity ---------------------------------------------------------------------------------
def test_max_sensitivity_agrees_with_captum():
    captum_metrics = pytest.importorskip("captum.metrics")
    g = torch.Generator().manual_seed(3)
    images, targets, indices = torch.randn(3, 3, 8, 8, generator=g), torch.tensor([0, 1, 2]), torch.tensor([4, 5, 6])
    maps = square_explain(images, targets)
    noise = M.sensitivity_noise(images, indices, samples=5, radius=0.1, seed=9)
    ours = M.max_sensitivity(square_explain, images, targets, maps, noise, chunk=2)

    def perturb(inputs, radius):  # Captum repeats each input n times in a row: our noise, same order
        return inputs + noise.flatten(0, 1)

    def captum_explain(inputs, target):  # Captum passes the clean inputs as a 1-tuple and wants a tuple back
        if isinstance(inputs, tuple):
            return (square_explain(inputs[0], target),)
        return square_explain(inputs, target)

    theirs = captum_metrics.sensitivity_max(captum_explain, images, perturb_func=perturb, perturb_radius=0.1,
                                            n_perturb_samples=5, target=targets)
    assert torch.allclose(ours.float(), theirs, rtol=1e-5)
    metric = M.create_metric("max_sensitivity", radius=0.1, samples=5, seed=9)
    metric.update(AttributionBatch(images=images, labels=targets, targets=targets, maps=maps, indices=indices),
                  explain=square_explain)
    assert metric.compute()["max_sensitivity"].item() == pytest.approx(ours.mean().item())
    assert noise.abs().max() <= 0.1 and metric.directions == {"max_sensitivity": "lower"}


def test_max_sensitivity_of_an_input_independent_attributor_is_zero():
    images = torch.randn(2, 3, 8, 8)
    constant = lambda images, targets, model=None: torch.ones(images.shape[0], 8, 8)  # noqa: E731
    metric = M.create_metric("max_sensitivity", samples=3)
    metric.update(_batch(images, torch.ones(2, 8, 8)), explain=constant)
    assert metric.compute()["max_sensitivity"].item() == 0.0
