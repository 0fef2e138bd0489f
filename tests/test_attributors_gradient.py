"""Gradient family and noise tunnels: agreement with Captum, closed-form oracles, seeds."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel as CaptumNoiseTunnel
from captum.attr import Saliency as CaptumSaliency
from torch import nn

from reproduce.attributors import create
from reproduce.attributors.gradient import reduce_channels
from reproduce.errors import ConfigError, InputError

TARGET = torch.tensor([0, 3, 5])


def close(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4) -> None:
    """Tight agreement relative to the reference map's scale."""
    scale = ref.abs().max().item()
    assert scale > 0, "reference map is all zeros: the comparison would prove nothing"
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * scale)


@pytest.fixture
def linear():
    """f(x) = W x + b on 3x8x8 inputs, 4 classes."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    model.num_classes = 4
    return model


@pytest.fixture
def small():
    return torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def linear_weight(model: nn.Module, target: torch.Tensor) -> torch.Tensor:
    return model[1].weight[target].detach().view(-1, 3, 8, 8)


# --- agreement with Captum --------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["cnn", "vit"])
@pytest.mark.parametrize("abs_", [True, False])
def test_saliency_matches_captum(request, images, model_name, abs_):
    model = request.getfixturevalue(model_name)
    ours = create("saliency", model, abs=abs_, channel_reduction="max").attribute(images, TARGET)
    ref = CaptumSaliency(model).attribute(images, target=TARGET, abs=abs_).amax(1)
    close(ours, ref)


@pytest.mark.parametrize("model_name", ["cnn", "vit"])
def test_input_x_gradient_matches_captum(request, images, model_name):
    model = request.getfixturevalue(model_name)
    ours = create("input_x_gradient", model).attribute(images, TARGET)
    ref = CaptumInputXGradient(model).attribute(images, target=TARGET).sum(1)
    close(ours, ref)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_middle", "riemann_right"])
def test_integrated_gradients_matches_captum(cnn, images, method):
    # internal_batch_size 5 does not divide B * steps = 18: chunks straddle images and steps.
    ours = create("integrated_gradients", cnn, steps=6, method=method, internal_batch_size=5).attribute(images, TARGET)
    ref = CaptumIG(cnn).attribute(images, target=TARGET, n_steps=6, method=method).sum(1)
    close(ours, ref)


def test_integrated_gradients_trapezoid_fixes_captum_weights(cnn, images):
    """Captum's trapezoid weights sum to (n-1)/n; ours sum to 1, so ours = Captum * n/(n-1)."""
    n = 6
    ours = create("integrated_gradients", cnn, steps=n, method="riemann_trapezoid").attribute(images, TARGET)
    ref = CaptumIG(cnn).attribute(images, target=TARGET, n_steps=n, method="riemann_trapezoid").sum(1)
    close(ours, ref * n / (n - 1))


@pytest.mark.parametrize("baseline", ["black", 0.7])
def test_integrated_gradients_baselines_match_captum(vit, images, baseline):
    ig = create("integrated_gradients", vit, steps=5, baseline=baseline)
    ours = ig.attribute(images, TARGET)
    ref_baseline = ig.baseline_for(images)
    ref = CaptumIG(vit).attribute(images, baselines=ref_baseline, target=TARGET, n_steps=5).sum(1)
    close(ours, ref)
    if baseline == 0.7:  # a number is a constant in the normalised input space, as in Captum
        torch.testing.assert_close(ref_baseline, torch.full_like(images, 0.7))
    if baseline == "black":  # black = pixel 0 pushed through the model's normalisation
        mean = torch.tensor(vit.pretrained_cfg["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(vit.pretrained_cfg["std"]).view(1, 3, 1, 1)
        torch.testing.assert_close(ref_baseline, (-mean / std).expand_as(images))


def captum_noise_patch(noise: torch.Tensor):
    """Make Captum's NoiseTunnel draw exactly ``noise`` [B, n, C, H, W] (its layout is sample-major)."""
    flat = noise.flatten(0, 1)

    def fake_normal(mean, std, *args, **kwargs):
        assert std.shape == flat.shape, "Captum drew noise of an unexpected shape"
        return flat.clone()

    return mock.patch.object(torch, "normal", fake_normal)


@pytest.mark.parametrize("model_name", ["cnn", "vit"])
def test_smoothgrad_matches_captum_noise_tunnel_with_same_noise(request, images, model_name):
    model = request.getfixturevalue(model_name)
    sg = create("smoothgrad", model, n_samples=5, sigma=0.2, seed=3, batch_size=4)
    ours = sg.attribute(images, TARGET)
    with captum_noise_patch(sg.noise(images)):
        ref = CaptumNoiseTunnel(CaptumSaliency(model)).attribute(
            images, nt_type="smoothgrad", nt_samples=5, stdevs=1.0, target=TARGET
        )
    close(ours, ref.amax(1))


def test_smoothgrad_of_integrated_gradients_matches_captum(cnn, images):
    sg = create("smoothgrad", cnn, base="integrated_gradients", base_options={"steps": 3}, n_samples=3)
    ours = sg.attribute(images[:2], TARGET[:2])
    with captum_noise_patch(sg.noise(images[:2])):
        ref = CaptumNoiseTunnel(CaptumIG(cnn)).attribute(
            images[:2], nt_type="smoothgrad", nt_samples=3, stdevs=1.0, target=TARGET[:2], n_steps=3
        )
    close(ours, ref.sum(1))


# --- closed-form oracles ----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left"])
@pytest.mark.parametrize("baseline", ["zero", 0.3])
def test_integrated_gradients_on_linear_model_is_exact(linear, small, method, baseline):
    target = torch.tensor([0, 1, 3])
    ours = create("integrated_gradients", linear, steps=3, method=method, baseline=baseline).attribute(small, target)
    expected = ((small - (0.0 if baseline == "zero" else baseline)) * linear_weight(linear, target)).sum(1)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


def test_saliency_and_input_x_gradient_on_linear_model(linear, small):
    target = torch.tensor([2, 2, 0])
    w = linear_weight(linear, target)
    torch.testing.assert_close(create("saliency", linear).attribute(small, target), w.abs().amax(1))
    torch.testing.assert_close(create("input_x_gradient", linear).attribute(small, target), (small * w).sum(1))


@pytest.fixture
def smooth():
    """A small smooth nonlinear network (tanh, softplus): IG's integration error is visible."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1), nn.Softplus(),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 2),
    ).eval()


@pytest.mark.parametrize("method", ["riemann_trapezoid", "riemann_left", "gausslegendre"])
def test_integrated_gradients_completeness_error_shrinks_with_steps(smooth, method):
    x = 2 * torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        gap = (smooth(x)[0, 0] - smooth(torch.zeros_like(x))[0, 0]).item()
    errors = []
    for steps in (2, 4, 16, 64):
        total = create("integrated_gradients", smooth, steps=steps, method=method).attribute(x, 0).sum().item()
        errors.append(abs(total - gap))
    assert errors[0] > 1e-3 * abs(gap), "the model is too linear for this test to mean anything"
    assert errors[-1] < errors[0] and errors[-1] < 0.05 * abs(gap), (errors, gap)
    if method != "gausslegendre":  # Gauss-Legendre reaches float precision early and then jitters
        assert errors == sorted(errors, reverse=True), errors


def test_channel_reductions():
    t = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]])  # [1, 3, 1, 1]
    assert reduce_channels(t, "sum").item() == 0.0
    assert reduce_channels(t, "mean").item() == 0.0
    assert reduce_channels(t, "max").item() == 2.0
    assert reduce_channels(t, "l2").item() == pytest.approx(14**0.5)


# --- noise tunnels: seeds, batching, sparsification -------------------------------------------
def test_smoothgrad_seeded_and_chunking_invariant(cnn, images):
    a = create("smoothgrad", cnn, n_samples=4, seed=1, batch_size=64).attribute(images, TARGET)
    b = create("smoothgrad", cnn, n_samples=4, seed=1, batch_size=1).attribute(images, TARGET)
    c = create("smoothgrad", cnn, n_samples=4, seed=2).attribute(images, TARGET)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    assert (a - c).abs().max() > 1e-3 * a.abs().max()


def _retrained(seed: int):
    from reproduce.models import create_model

    torch.manual_seed(seed)
    return create_model("resnet10t_os16", num_classes=6).eval()


@pytest.mark.parametrize("name", ["smoothgrad", "sparsified_smoothgrad"])
def test_two_models_draw_independent_noise_and_one_model_the_same(images, name):
    model_a, model_b, model_a_again = _retrained(0), _retrained(1), _retrained(0)
    x = images[:1]
    noise_a = create(name, model_a, n_samples=3).noise(x)
    noise_b = create(name, model_b, n_samples=3).noise(x)
    assert (noise_a - noise_b).abs().max() > 0.1 * noise_a.abs().max()  # independent draws per model
    assert torch.equal(create(name, model_a, n_samples=3).noise(x), noise_a)  # reproducible for one model
    assert torch.equal(create(name, model_a_again, n_samples=3).noise(x), noise_a)  # same weights, same noise
    shared_a = create(name, model_a, n_samples=3, noise="shared").noise(x)
    assert torch.equal(shared_a, create(name, model_b, n_samples=3, noise="shared").noise(x))  # the old rule
    assert not torch.equal(shared_a, noise_a)
    # A super-pixel wrapper and an evaluator's reference attributor build their tunnels the same way.
    wrapped = create("superpixel", model_b, base=name, base_options={"n_samples": 3})
    assert torch.equal(wrapped.base.noise(x), noise_b)


def test_noise_scales_with_each_image_range(cnn):
    x = torch.stack([torch.linspace(0, 1, 3 * 64 * 64).view(3, 64, 64), torch.linspace(0, 4, 3 * 64 * 64).view(3, 64, 64)])
    noise = create("smoothgrad", cnn, n_samples=3, sigma=0.1).noise(x)
    assert noise.shape == (2, 3, 3, 64, 64)
    torch.testing.assert_close(noise[1], 4 * noise[0])  # same draw, range 4 vs 1
    assert noise[0].std().item() == pytest.approx(0.1, rel=0.02)


def test_sparsification_golden_values(cnn):
    ssg = create("sparsified_smoothgrad", cnn, tau=0.3, saturate=0.1)
    maps = torch.tensor([0.5, 4.0, 0.0, 1.0, 2.0, 0.1, 0.2, 0.3, 0.4, 0.05]).view(1, 1, 10)
    # K = 3 kept (4, 2, 1), K_s = 1 saturated (4 -> 1); 2 and 1 are divided by 4.
    expected = torch.tensor([0, 1.0, 0, 0.25, 0.5, 0, 0, 0, 0, 0]).view(1, 1, 10)
    torch.testing.assert_close(ssg.per_sample(maps), expected)
    binary = create("sparsified_smoothgrad", cnn, tau=0.3, saturate=0.3).per_sample(maps)
    torch.testing.assert_close(binary, (expected > 0).float())
    tied = torch.tensor([3.0, 3.0, 3.0, 1.0]).view(1, 1, 4)  # ties with the K-th value are all kept
    assert create("sparsified_smoothgrad", cnn, tau=0.25, saturate=0.25).per_sample(tied).sum() == 3


def test_sparsified_smoothgrad_equals_reference_loop(cnn, images):
    x, target = images[:2], TARGET[:2]
    ssg = create("sparsified_smoothgrad", cnn, n_samples=3, tau=0.05, saturate=0.01, batch_size=2)
    ours = ssg.attribute(x, target)
    noise = ssg.noise(x)
    acc = torch.zeros(2, 3, 64, 64)
    for j in range(3):
        xj = (x + noise[:, j]).contiguous(memory_format=torch.channels_last).requires_grad_(True)  # as ours: same kernels
        (g,) = torch.autograd.grad(cnn(xj).gather(1, target[:, None]).sum(), xj)
        flat = g.abs().flatten(1)
        k, ks = int(0.05 * flat.shape[1]), int(0.01 * flat.shape[1])
        srt = flat.sort(1, descending=True).values
        kept = flat >= srt[:, k - 1 : k]
        acc += torch.where(kept, (flat / srt[:, ks - 1 : ks]).clamp(max=1), 0).view_as(g)
    expected = (acc / 3).amax(1)  # the base's default channel reduction (max)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


# --- option checks ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, options, fragment",
    [
        ("integrated_gradients", {"method": "simpson"}, "method"),
        ("integrated_gradients", {"steps": 1, "method": "riemann_left"}, "steps"),
        ("integrated_gradients", {"baseline": "white"}, "baseline"),
        ("integrated_gradients", {"internal_batch_size": 0}, "internal_batch_size"),
        ("saliency", {"channel_reduction": "median"}, "channel_reduction"),
        ("smoothgrad", {"base": "gradcam"}, "gradient attributor"),
        ("smoothgrad", {"sigma": -0.1}, "sigma"),
        ("smoothgrad", {"base_options": {"normalize": "minmax"}}, "normalize"),
        ("sparsified_smoothgrad", {"tau": 0.01, "saturate": 0.1}, "saturate"),
        ("sparsified_smoothgrad", {"tau": 0.0}, "tau"),
    ],
)
def test_bad_options_raise_config_error(cnn, name, options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        create(name, cnn, **options)


def test_integrated_gradients_per_sample_baseline(cnn, images):
    baseline = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    ig = create("integrated_gradients", cnn, steps=4, baseline=baseline)
    batch = ig.attribute(images, TARGET)
    alone = create("integrated_gradients", cnn, steps=4, baseline=baseline[1:2]).attribute(images[1:2], TARGET[1:2])
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="baseline"):
        create("integrated_gradients", cnn, baseline=torch.zeros(2, 3, 64, 64)).attribute(images, TARGET)
