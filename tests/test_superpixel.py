"""Super-pixel grouping (BMVC'24), its segmenters and the segmentation cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata
from torch import nn

from reproduce.attributors import create, get_class
from reproduce.attributors import segmenters as seg
from reproduce.attributors.segmenters import SegmentationCache, Segmenter
from reproduce.attributors.superpixel import group_maps
from reproduce.errors import ConfigError, InputError
from reproduce.models import DataConfig, ModelAdapter, create_model


def photos(size: int) -> torch.Tensor:
    """Two real photos in [0, 1], ``[2, 3, size, size]``."""
    batch = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float() / 255 for im in (skdata.astronaut(), skdata.chelsea())]
    return torch.stack([F.interpolate(im[None], size=(size, size), mode="area")[0] for im in batch])


IDENTITY = DataConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), input_size=(3, 16, 16))


@pytest.fixture
def linear():
    """f(x) = W x + b on 3x16x16 inputs with identity normalisation (inputs are pixels in [0, 1])."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).eval()
    model.num_classes = 4
    return model


@pytest.fixture
def halves():
    """Left half black, right half white: two flat segments."""
    x = torch.zeros(1, 3, 16, 16)
    x[..., 8:] = 1.0
    return x


# --- the grouping operator --------------------------------------------------------------------
def random_partition(b: int, h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 5, (b, 1, h // 4, w // 4), generator=g).float()
    return F.interpolate(coarse, size=(h, w), mode="nearest")[:, 0].long()


def test_grouping_conserves_totals_and_is_constant_per_segment():
    labels = random_partition(2, 16, 16)
    maps = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))  # [B, m, H, W]
    summed = group_maps(maps, labels, "sum")
    mean = group_maps(maps, labels, "mean")
    sizes = group_maps(torch.ones(2, 16, 16), labels, "sum")  # |G| painted on each pixel
    # mean: the pixel map's total is conserved; sum: the segment values add up to the total.
    torch.testing.assert_close(mean.sum((-2, -1)), maps.sum((-2, -1)))
    torch.testing.assert_close((summed / sizes.unsqueeze(1)).sum((-2, -1)), maps.sum((-2, -1)))
    for i in range(2):
        for k in labels[i].unique():
            region = labels[i] == k
            seg_values = summed[i][:, region]
            assert torch.allclose(seg_values, seg_values[:, :1].expand_as(seg_values))
            torch.testing.assert_close(seg_values[:, 0], maps[i][:, region].sum(-1))


# --- hand-made two-segment image --------------------------------------------------------------
def test_grouped_gradient_on_two_segments_is_hand_computed(linear, halves):
    target = torch.tensor([2])
    w = linear[1].weight[2].detach().view(3, 16, 16)
    left, right = w[..., :8].sum().item(), w[..., 8:].sum().item()
    expected = torch.empty(1, 16, 16)
    expected[..., :8], expected[..., 8:] = abs(left), abs(right)
    # Felzenszwalb without pre-smoothing finds exactly the two flat halves.
    opts = {"segmenter": "felzenszwalb", "segmenter_options": {"sigma": 0.0}, "cache": SegmentationCache()}
    sp = create("superpixel", linear, base="saliency", **opts)
    assert sp.segments(halves).unique().numel() == 2
    torch.testing.assert_close(sp.attribute(halves, target), expected)
    # Shifting a whole segment by h changes the logit by h * (segment value): the exact derivative.
    with torch.no_grad():
        shifted = halves.clone()
        shifted[..., 8:] += 0.5
        assert (linear(shifted) - linear(halves))[0, 2].item() == pytest.approx(0.5 * right, rel=1e-4)
    # IG of a segment (zero baseline) = sum over the segment of x * w; "mean" divides by |G| = 128.
    ig = create("superpixel", linear, base="integrated_gradients", reduce="mean", **opts).attribute(halves, target)
    torch.testing.assert_close(ig[0, 0, 15], (halves[0] * w)[..., 8:].sum() / 128)
    torch.testing.assert_close(ig[0, 0, 0], torch.tensor(0.0))


def test_superpixel_ig_keeps_completeness(cnn):
    x = photos(64)[:1]
    x = (x - torch.tensor(cnn.pretrained_cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cnn.pretrained_cfg["std"]).view(1, 3, 1, 1)
    ig = create("integrated_gradients", cnn, steps=4).attribute(x, 1)
    grouped = create("superpixel", cnn, base_options={"steps": 4}, reduce="mean", cache=SegmentationCache()).attribute(x, 1)
    torch.testing.assert_close(grouped.sum(), ig.sum(), rtol=1e-4, atol=1e-4 * ig.abs().sum().item())


# --- noise tunnels are grouped per noisy sample -----------------------------------------------
def test_sparsified_smoothgrad_groups_each_noisy_sample(cnn, images):
    x, target = images[:2], torch.tensor([1, 4])
    cache = SegmentationCache()
    ssg_options = {"n_samples": 3, "tau": 0.2, "saturate": 0.05, "batch_size": 2}  # one copy per pass, as below
    ours = create(
        "superpixel", cnn, base="sparsified_smoothgrad", base_options=ssg_options, segmenter="watershed", cache=cache
    ).attribute(x, target)

    labels = Segmenter("watershed", cache=cache)(x, DataConfig(*[cnn.pretrained_cfg[k] for k in ("mean", "std", "input_size")]))
    ssg = create("sparsified_smoothgrad", cnn, **ssg_options)
    noise = ssg.noise(x)
    hw = 64 * 64
    k, ks = int(0.2 * hw), int(0.05 * hw)
    reference = torch.zeros(2, 64, 64)
    for j in range(3):
        xj = (x + noise[:, j]).contiguous(memory_format=torch.channels_last).requires_grad_(True)  # as ours: same kernels
        (g,) = torch.autograd.grad(cnn(xj).gather(1, target[:, None]).sum(), xj)
        for i in range(2):  # by hand: segment sums of the channel-summed gradient, |.|, sparsify
            s = torch.zeros(64, 64)
            for lab in labels[i].unique():
                region = labels[i] == lab
                s[region] = g[i].sum(0)[region].sum().abs()
            srt = s.flatten().sort(descending=True).values
            reference[i] += torch.where(s >= srt[k - 1], (s / srt[ks - 1]).clamp(max=1), torch.zeros_like(s))
    reference /= 3
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    after_averaging = group_maps(ssg.attribute(x, target), labels)
    assert (after_averaging / after_averaging.amax((1, 2), keepdim=True) - ours / ours.amax((1, 2), keepdim=True)).abs().max() > 0.05


def test_smoothgrad_without_abs_groups_linearly(cnn, images):
    """Signed SmoothGrad: grouping each noisy copy equals grouping the average (grouping is linear)."""
    x, target = images[:2], torch.tensor([0, 2])
    cache = SegmentationCache()
    sg_options = {"n_samples": 3, "base_options": {"abs": False, "channel_reduction": "sum"}}
    per_copy = create("superpixel", cnn, base="smoothgrad", base_options=sg_options, segmenter="watershed", cache=cache)
    labels = per_copy.segments(x)
    after = group_maps(create("smoothgrad", cnn, **sg_options).attribute(x, target), labels)
    grouped = per_copy.attribute(x, target)
    torch.testing.assert_close(grouped, after, rtol=1e-4, atol=1e-5 * after.abs().max().item())


# --- segmentation cache -----------------------------------------------------------------------
def test_segmentation_is_computed_once_for_two_methods(cnn, images, monkeypatch):
    calls = []
    spec = seg.SEGMENTERS["watershed"]

    def counting(image, **params):
        calls.append(1)
        return spec.run(image, **params)

    monkeypatch.setitem(seg.SEGMENTERS, "watershed", dataclasses.replace(spec, run=counting))
    cache = SegmentationCache()
    opts = {"segmenter": "watershed", "cache": cache}
    create("superpixel", cnn, base_options={"steps": 2}, **opts).attribute(images, 0)
    create("superpixel", cnn, base="smoothgrad", base_options={"n_samples": 2}, **opts).attribute(images, 0)
    assert len(calls) == 3
    assert cache.stats() == {"hits": 3, "misses": 3, "entries": 3}
    Segmenter("watershed", {"markers": 20}, cache)(images, DataConfig((0.5,) * 3, (0.5,) * 3, (3, 64, 64)))
    assert len(calls) == 6  # other parameters (and another normalisation) are other entries


# --- segmenters -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(seg.SEGMENTERS))
def test_every_segmenter_gives_several_segments_with_defaults(name):
    x = photos(64)
    labels = Segmenter(name, cache=SegmentationCache())(x, IDENTITY)
    assert labels.shape == (2, 64, 64) and labels.dtype == torch.long
    for lab in labels:
        count = lab.unique().numel()
        assert count >= 2
        assert lab.max().item() == count - 1  # contiguous 0..K-1


@pytest.mark.parametrize(
    "name, options, fragment",
    [
        ("slic", {"n_segments": 1}, "n_segments"),
        ("watershed", {"markers": 1}, "markers"),
        ("felzenszwalb", {"scale": 1e6, "min_size": 64 * 64}, "scale"),
        ("quickshift", {"kernel_size": 64, "max_dist": 1e6}, "kernel_size"),
    ],
)
def test_one_segment_parameters_raise_input_error(name, options, fragment):
    with pytest.raises(InputError, match=fragment):
        Segmenter(name, options, SegmentationCache())(photos(64)[:1], IDENTITY)


def test_bad_segmenter_options_raise_config_error(cnn):
    with pytest.raises(ConfigError, match="Unknown segmenter"):
        Segmenter("grabcut")
    with pytest.raises(ConfigError, match="n_segmens"):
        Segmenter("slic", {"n_segmens": 10})
    with pytest.raises(ConfigError, match="reduce"):
        create("superpixel", cnn, reduce="median")
    with pytest.raises(ConfigError, match="itself"):
        create("superpixel", cnn, base="superpixel")


def test_default_parameters_follow_the_image_size():
    small, large = Segmenter("quickshift").params(64, 64), Segmenter("quickshift").params(224, 224)
    assert (small["kernel_size"], large["kernel_size"]) == (1, 4)
    assert Segmenter("slic", {"n_segments": 7}).params(224, 224)["n_segments"] == 7


def test_superpixel_on_a_real_model_and_photo_batch():
    model = create_model("resnet10t_os16", num_classes=6).eval()
    cfg = DataConfig(*[model.pretrained_cfg[k] for k in ("mean", "std", "input_size")])
    x = cfg.normalize(photos(64))
    sp = create("superpixel", model, base="saliency", cache=SegmentationCache())
    maps = sp.attribute(x, torch.tensor([0, 1]))
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all() and (maps >= 0).all()
    assert sp.last_cost["segmentation_seconds_per_image"] > 0
    alone = sp.attribute(x[1:], torch.tensor([1]))
    torch.testing.assert_close(alone, maps[1:], rtol=1e-5, atol=1e-6 * maps.abs().max().item())


def test_smoke_config_keeps_the_base_method_and_segmenter():
    # A smoke table row of super-pixel IG with quickshift must stay super-pixel IG with quickshift.
    options = get_class("superpixel").smoke_config(
        {"base": "integrated_gradients", "base_options": {"steps": 64, "baseline": 0.0}, "segmenter": "quickshift"}
    )
    assert options["base"] == "integrated_gradients" and options["segmenter"] == "quickshift"
    assert options["base_options"] == {"steps": get_class("integrated_gradients").smoke_options["steps"], "baseline": 0.0}


# --- the public hook and the channel-reduction control ----------------------------------------
def test_superpixel_uses_the_base_methods_public_grouping_hooks(cnn, images, monkeypatch):
    from reproduce.attributors import Attributor
    from reproduce.attributors import superpixel as sp_module
    from reproduce.attributors.registry import ATTRIBUTORS

    class ChannelMean(Attributor):
        """A method outside the gradient family that declares where its grouping goes."""

        def _attribute(self, x, target):
            return x.mean(1)

        def group_input(self, x, target):
            return x.mean(1)  # grouped first...

        def finish_grouped(self, grouped):
            return grouped.abs()  # ...then a nonlinearity

    monkeypatch.setitem(ATTRIBUTORS.classes, "channel_mean", ChannelMean)
    labels = Segmenter("slic", cache=SegmentationCache())(images, ModelAdapter(cnn).data_config)
    ours = create("superpixel", cnn, base="channel_mean").attribute(images, 0)
    torch.testing.assert_close(ours, group_maps(images.mean(1), labels).abs())
    # The wrapper knows no base type: no isinstance ladder, no private call into the base.
    assert not hasattr(sp_module, "SmoothGrad") and not hasattr(sp_module, "GradientAttributor")


def test_pixel_segmenter_is_the_singleton_limit_of_grouping(cnn, images):
    x, target = images[:2], torch.tensor([1, 4])
    control = create("superpixel", cnn, base="saliency", segmenter="pixel").attribute(x, target)
    signed = create("saliency", cnn, abs=False, channel_reduction="sum").attribute(x, target)
    torch.testing.assert_close(control, signed.abs())  # |sum_c g| per pixel
    pixel = create("saliency", cnn).attribute(x, target)  # the paper's baseline: max_c |g|
    assert not torch.allclose(control, pixel)  # the control changes the channel reduction only
    sg = create("superpixel", cnn, base="smoothgrad", base_options={"n_samples": 3}, segmenter="pixel")
    tunnel = create("smoothgrad", cnn, n_samples=3, base_options={"abs": False})
    noisy = (x.unsqueeze(1) + tunnel.noise(x)).flatten(0, 1)
    per_copy = tunnel.base.signed(noisy, target.repeat_interleave(3)).sum(1).abs().unflatten(0, (2, 3)).mean(1)
    torch.testing.assert_close(sg.attribute(x, target), per_copy, rtol=1e-4, atol=1e-6)  # mean_j |sum_c g_j|
    with pytest.raises(ConfigError, match="no option"):
        Segmenter("pixel", {"n_segments": 4})
