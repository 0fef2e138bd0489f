"""Control maps (random, constant, center, edges, oracle_mask): golden values, the anchor for the
Sobel map (scikit-image) and, for oracle_mask, the contract checks with masks that the generic
contract test cannot run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import color, filters

from reproduce.attributors import available, create
from reproduce.attributors.controls import centre_gaussian, sobel_magnitude
from reproduce.errors import InputError


def test_controls_are_registered():
    assert {"random", "constant", "center", "edges", "oracle_mask"} <= set(available())


def test_random_is_uniform_seeded_per_image_content(cnn, images):
    rnd = create("random", cnn, seed=3)
    twice = torch.cat([images[:1], images[:1], images[1:2]])
    maps = rnd.attribute(twice, 0)
    assert maps.shape == (3, 64, 64) and maps.min() >= 0 and maps.max() < 1
    assert torch.equal(maps[0], maps[1])  # the same image gets the same noise wherever it sits
    assert not torch.allclose(maps[0], maps[2])  # another image gets other noise
    assert maps.mean().item() == pytest.approx(0.5, abs=0.02)
    changed = images[:1].clone()
    changed[0, 0, 0, 0] += 1e-3  # one pixel changed: independent noise
    assert not torch.allclose(rnd.attribute(changed, 0)[0], maps[0])
    assert rnd.last_cost["forward_per_image"] == 0


def test_constant_and_center_golden_values(cnn):
    x = torch.zeros(2, 3, 64, 64)
    assert torch.equal(create("constant", cnn, value=2.5).attribute(x, 0), torch.full((2, 64, 64), 2.5))
    # 4x4, sigma 0.5 of the side -> s = 2 px; pixel (0, 0) is 1.5 px from the centre on each axis.
    bump = centre_gaussian(4, 4, 0.5)
    assert bump[0, 0].item() == pytest.approx(math.exp(-4.5 / 8), rel=1e-6)
    assert bump[1, 2].item() == pytest.approx(math.exp(-0.5 / 8), rel=1e-6)
    torch.testing.assert_close(bump, bump.flip(0)) and torch.testing.assert_close(bump, bump.T)
    maps = create("center", cnn, sigma=0.25).attribute(x, 0)
    assert maps.argmax().item() in {31 * 64 + 31, 31 * 64 + 32, 32 * 64 + 31, 32 * 64 + 32}
    assert torch.equal(maps[0], maps[1])
    with pytest.raises(InputError, match="sigma must be a finite positive number"):
        create("center", cnn, sigma=0)


def test_edges_equal_scikit_image_sobel(cnn, images):
    edges = create("edges", cnn)
    maps = edges.attribute(images, 0)
    pixels = edges.adapter.data_config.denormalize(images).clamp(0, 1).permute(0, 2, 3, 1).double().numpy()
    expected = np.stack([filters.sobel(color.rgb2gray(p)) for p in pixels])
    diff = np.abs(maps.double().numpy() - expected).max()
    assert diff < 1e-6, diff  # measured: about 6e-8 (float32 vs float64)
    # a vertical step edge: magnitude only on the two columns beside it
    step = torch.zeros(1, 8, 8)
    step[..., 4:] = 1.0
    mag = sobel_magnitude(step)[0]
    assert torch.all(mag[:, [0, 1, 2, 5, 6, 7]] == 0) and torch.allclose(mag[:, 3:5], torch.full((8, 2), 1 / math.sqrt(2)))


# --- oracle_mask: the contract checks, with masks ----------------------------------------------
def _masks(b: int = 3) -> torch.Tensor:
    m = torch.zeros(b, 64, 64, dtype=torch.bool)
    for i in range(b):
        m[i, 8 * i : 8 * i + 20, 10:30] = True
    return m


def test_oracle_mask_returns_the_mask_batch_invariant(cnn, images):
    oracle = create("oracle_mask", cnn)
    masks = _masks()
    cnn.train()
    maps = oracle.attribute(images, torch.tensor([1, 4, 2]), masks=masks)
    assert torch.equal(maps, masks.float()) and maps.device == images.device
    assert all(m.training for m in cnn.modules())
    assert torch.equal(oracle.attribute(images[1:2], 4, masks=masks[1:2])[0], maps[1])
    assert oracle.last_cost["forward_per_image"] == 0
    scaled = create("oracle_mask", cnn, normalize="minmax").attribute(images, 0, masks=masks.float())
    assert torch.equal(scaled, masks.float())


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({}, "needs it: call attribute"),
        ({"masks": torch.ones(3, 32, 32, dtype=torch.bool)}, "nearest-neighbour"),
        ({"masks": torch.full((3, 64, 64), 0.5)}, "threshold soft masks"),
        ({"masks": np.ones((3, 64, 64))}, "must be a"),
    ],
)
def test_oracle_mask_refuses_missing_or_malformed_masks(cnn, images, kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        create("oracle_mask", cnn).attribute(images, 0, **kwargs)


def test_oracle_mask_still_checks_images_and_targets(cnn, images):
    oracle = create("oracle_mask", cnn)
    with pytest.raises(InputError, match="unsqueeze"):
        oracle.attribute(images[0], 0, masks=_masks(1)[0])
    with pytest.raises(InputError, match="out of range"):
        oracle.attribute(images, 9, masks=_masks())
