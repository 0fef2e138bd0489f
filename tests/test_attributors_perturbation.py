"""Occlusion (vs Captum), RISE and HSIC-attribution (closed-form oracles, seeded masks, models whose
output depends on one known region)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from reproduce.attributors import create
from reproduce.attributors.hsic import binary_design, hsic_binary
from reproduce.errors import ConfigError, InputError


class TinyNet(nn.Module):
    """A small random conv net carrying a data config (so "black" is not 0 in its input space)."""

    def __init__(self, classes: int = 4, size=(20, 18)):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(36, classes)
        )
        self.num_classes = classes
        self.pretrained_cfg = {"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3), "input_size": (3, *size)}

    def forward(self, x):
        return self.net(x)


class RegionModel(nn.Module):
    """Class-0 logit = ``gain * (mean input over one box - 0.5)``; every other logit is 0.

    On inputs in [1, 1.5] class 0 is near-certain when the box is visible and near-impossible
    when it is filled with 0, whatever happens elsewhere.
    """

    def __init__(self, box=(8, 16, 40, 48), classes: int = 3, gain: float = 12.0):
        super().__init__()
        self.box, self.gain, self.num_classes = box, gain, classes

    def forward(self, x):
        r0, r1, c0, c1 = self.box
        evidence = self.gain * (x[:, :, r0:r1, c0:c1].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([evidence, *[torch.zeros_like(evidence)] * (self.num_classes - 1)], dim=1)


class ConstantModel(nn.Module):
    """Logits that ignore the input: the target probability is the same for every mask."""

    num_classes = 3

    def forward(self, x):
        return torch.tensor([[0.5, -1.0, 2.0]]) + 0 * x.mean(dim=(1, 2, 3))[:, None]


def _positive_images(b=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 1 + 0.5 * torch.rand(b, 3, size, size, generator=g)


# --- occlusion --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window,stride,fill,output",
    [
        ((6, 5), (4, 3), "mean", "logit"),  # last windows overhang the border (clipped, as Captum)
        (4, 4, "black", "logit"),
        ((5, 7), (2, 3), 0.7, "probability"),
    ],
)
def test_occlusion_matches_captum(window, stride, fill, output):
    model = TinyNet().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 20, 18, generator=g)
    target = torch.tensor([1, 3])
    occlusion = create("occlusion", model, window=window, stride=stride, fill=fill, output=output, batch_size=7)
    ours = occlusion.attribute(x, target)

    wh, ww = (window, window) if isinstance(window, int) else window
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    if fill == "mean":
        baseline = torch.zeros_like(x)
    elif fill == "black":
        baseline = occlusion.adapter.data_config.value_of(0.0, x).unsqueeze(0).expand_as(x).contiguous()
        assert baseline.abs().min() > 1  # really not the "mean" fill
    else:
        baseline = torch.full_like(x, fill)
    forward = model if output == "logit" else (lambda inp: model(inp).softmax(-1))
    ref = CaptumOcclusion(forward).attribute(
        x, sliding_window_shapes=(3, wh, ww), strides=(3, sh, sw), baselines=baseline, target=target,
        perturbations_per_eval=64,
    )
    # The window spans every channel, so Captum's attribution is identical across channels.
    torch.testing.assert_close(ref, ref[:, :1].expand_as(ref))
    torch.testing.assert_close(ours, ref[:, 0], rtol=1e-5, atol=1e-6)


def test_occlusion_counts_one_forward_per_window():
    model = TinyNet().eval()
    occlusion = create("occlusion", model, window=(6, 5), stride=(4, 3))
    occlusion.attribute(torch.randn(3, 3, 20, 18), 0)
    windows = (math.ceil((20 - 6) / 4) + 1) * (math.ceil((18 - 5) / 3) + 1)
    assert occlusion.last_cost["forward_per_image"] == 1 + windows


def test_occlusion_rejects_gaps_and_oversized_windows():
    model = TinyNet().eval()
    with pytest.raises(ConfigError, match="stride"):
        create("occlusion", model, window=4, stride=5)
    with pytest.raises(InputError, match="window"):
        create("occlusion", model, window=32, stride=8).attribute(torch.randn(1, 3, 20, 18), 0)
    with pytest.raises(ConfigError, match="output"):
        create("occlusion", model, output="softmax")


# --- RISE -------------------------------------------------------------------------------------


def test_rise_is_seeded_and_masks_do_not_depend_on_the_batch():
    model = TinyNet(size=(32, 32)).eval()
    x = _positive_images(3, size=32)
    options = {"n_masks": 32, "grid_size": 8}
    maps = create("rise", model, seed=3, **options).attribute(x, 0)
    torch.testing.assert_close(create("rise", model, seed=3, **options).attribute(x, 0), maps, rtol=0, atol=0)
    assert not torch.allclose(create("rise", model, seed=4, **options).attribute(x, 0), maps)
    # A sample's map is the same alone, reordered, and with other chunk sizes.
    rise = create("rise", model, seed=3, batch_size=5, **options)
    torch.testing.assert_close(rise.attribute(x[1:2], 0)[0], maps[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rise.attribute(x.flip(0), 0).flip(0), maps, rtol=1e-5, atol=1e-6)
    # Masks built chunk by chunk are the same masks.
    torch.testing.assert_close(rise.masks(32, 32, 10, 20), rise.masks(32, 32)[10:20], rtol=0, atol=0)


def test_rise_masks_follow_the_paper():
    rise = create("rise", ConstantModel(), n_masks=200, grid_size=7, p1=0.5, seed=0)
    masks = rise.masks(64, 64)
    assert masks.shape == (200, 64, 64)
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.5) < 0.05
    # Shifts differ between masks: the same grid would otherwise always put cell edges at 0 mod 10.
    grids, shifts = rise._design(64, 64)
    assert shifts.min() >= 0 and shifts.max() <= math.ceil(64 / 7) - 1 and len(set(shifts[:, 0].tolist())) > 1


def test_rise_formula_on_a_constant_model():
    """f(x * M) = c for every mask, so S = c * sum_m M_m / (N * p1) exactly."""
    model = ConstantModel()
    rise = create("rise", model, n_masks=40, grid_size=5, p1=0.3, seed=1, batch_size=16)
    maps = rise.attribute(_positive_images(2), 2)
    c = torch.softmax(torch.tensor([0.5, -1.0, 2.0]), 0)[2]
    expected = c * rise.masks(64, 64).sum(0) / (40 * 0.3)
    for m in maps:
        torch.testing.assert_close(m, expected, rtol=1e-5, atol=1e-6)


def test_rise_highlights_the_only_region_the_model_reads():
    model = RegionModel(box=(8, 16, 40, 48))
    maps = create("rise", model, n_masks=300, grid_size=8, seed=0).attribute(_positive_images(2), 0)
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[8:16, 40:48] = True
    far = torch.ones(64, 64, dtype=torch.bool)  # beyond one mask cell (8 px) from the box
    far[0:25, 31:64] = False
    for m in maps:
        row, col = divmod(int(m.argmax()), 64)
        assert inside[row, col]
        assert m[inside].mean() > m[~inside].mean() + 0.1
        assert m[inside].min() > m[far].max()


# --- HSIC-attribution -------------------------------------------------------------------------


def _xplique_hsic(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Xplique's BinaryEstimator written out literally: Gram matrices, centring, sum / n."""
    n, d = design.shape
    h = np.eye(n) - np.ones((n, n)) / n
    width = np.percentile(y, 50)
    gram_l = np.exp(-((y[:, None] - y[None, :]) ** 2) / (2 * width**2))
    scores = []
    for j in range(d):
        x = design[:, j]
        gram_k = 1 + (0.5 - (x[:, None] - x[None, :]) ** 2)
        scores.append(np.sum((h @ gram_k @ h) * (h @ gram_l @ h).T) / n)
    return np.array(scores)


def test_hsic_estimator_golden_value():
    """Output = cell 0's variable, cell 1 independent: HSIC = [2 (1 - e^-2), 0] by hand.

    Median output 0.5 -> L_ij = exp(-2 (y_i - y_j)^2); centred cell-0 values are +-1/2, so
    sum_ij x_i x_j L_ij = 32/4 - 32 e^-2 / 4 and the score is 2/8 of it. Cell 1 is balanced within
    both output groups, so every sum cancels.
    """
    col0 = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.float32)
    col1 = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1], dtype=torch.float32)
    design = torch.stack([col0, col1], dim=1)
    scores = hsic_binary(design, col0[None])
    torch.testing.assert_close(scores, torch.tensor([[2 * (1 - math.exp(-2)), 0.0]]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(scores[0].double(), torch.from_numpy(_xplique_hsic(design.numpy(), col0.numpy())), rtol=1e-5, atol=1e-6)


def test_hsic_estimator_matches_xplique_gram_form():
    g = torch.Generator().manual_seed(0)
    design = (torch.rand(24, 5, generator=g) < 0.5).float()
    outputs = torch.rand(3, 24, generator=g)
    scores = hsic_binary(design, outputs)
    for b in range(3):
        ref = _xplique_hsic(design.numpy().astype(np.float64), outputs[b].numpy().astype(np.float64))
        torch.testing.assert_close(scores[b].double(), torch.from_numpy(ref), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sampler", ["sobol", "lhs"])
def test_hsic_designs_are_seeded_binary_and_balanced(sampler):
    design = binary_design(64, 256, sampler, seed=0)
    assert design.shape == (256, 64)
    assert set(design.unique().tolist()) <= {0.0, 1.0}
    assert abs(design.mean().item() - 0.5) < 0.05
    assert torch.equal(binary_design(64, 256, sampler, seed=0), design)
    assert not torch.equal(binary_design(64, 256, sampler, seed=1), design)


def test_hsic_is_seeded_and_batch_independent():
    model = TinyNet(size=(32, 32)).eval()
    x = _positive_images(3, size=32)
    options = {"nb_design": 32, "grid_size": 4}
    maps = create("hsic", model, seed=2, **options).attribute(x, 0)
    torch.testing.assert_close(create("hsic", model, seed=2, **options).attribute(x, 0), maps, rtol=0, atol=0)
    assert not torch.allclose(create("hsic", model, seed=3, **options).attribute(x, 0), maps)
    alone = create("hsic", model, seed=2, batch_size=7, **options).attribute(x[2:3], 0)
    torch.testing.assert_close(alone[0], maps[2], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sampler", ["sobol", "lhs"])
def test_hsic_ranks_the_region_cell_first(sampler):
    model = RegionModel(box=(8, 16, 40, 48))  # exactly cell (1, 5) of an 8x8 grid on 64x64
    x = _positive_images(2)
    hsic = create("hsic", model, grid_size=8, nb_design=128, sampler=sampler, upsample="nearest")
    cells = hsic.attribute(x, 0)[:, ::8, ::8]
    for c in cells:
        assert divmod(int(c.argmax()), 8) == (1, 5)
    smooth = create("hsic", model, grid_size=8, nb_design=128, sampler=sampler).attribute(x, 0)  # bicubic
    for m in smooth:
        row, col = divmod(int(m.argmax()), 64)
        assert 8 <= row < 16 and 40 <= col < 48


def test_hsic_rejects_bad_options():
    model = RegionModel()
    with pytest.raises(InputError, match="sampler"):
        create("hsic", model, sampler="halton")
    with pytest.raises(InputError, match="nb_design"):
        create("hsic", model, nb_design=1)
    with pytest.raises(InputError, match="grid_size"):
        create("hsic", model, grid_size=65, nb_design=4, sampler="lhs").attribute(_positive_images(1), 0)
