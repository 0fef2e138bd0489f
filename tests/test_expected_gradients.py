"""Expected Gradients and Guided Backprop against Captum, raw attention against a hand computation,
and Expected Gradients' closed form on a linear model and its bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import GradientShap
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from torch import nn

from reproduce.attributors import create
from reproduce.errors import InputError
from reproduce.models import record_attention

TARGET = torch.tensor([1, 4, 2])


def close(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4) -> float:
    scale = ref.abs().max().item()
    assert scale > 0, "reference map is all zeros: the comparison would prove nothing"
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * scale)
    return (ours - ref).abs().max().item() / scale


def test_expected_gradients_equal_captum_gradient_shap_on_its_draws(cnn, images, monkeypatch):
    """Captum's GradientShap draws (baseline choice, noise, interpolation point) are recorded and fed
    to ExpectedGradients.from_draws: the maps agree (measured max rel. difference ~1e-7)."""
    refs = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    n = 6
    seen: dict[str, object] = {}
    real_choice, real_uniform, real_normal = np.random.choice, np.random.uniform, torch.normal

    def choice(*args, **kwargs):
        seen["index"] = real_choice(*args, **kwargs)
        return seen["index"]

    def uniform(*args, **kwargs):
        seen["alpha"] = real_uniform(*args, **kwargs)
        return seen["alpha"]

    def normal(*args, **kwargs):
        seen["noise"] = real_normal(*args, **kwargs)
        return seen["noise"]

    monkeypatch.setattr(np.random, "choice", choice)
    monkeypatch.setattr(np.random, "uniform", uniform)
    monkeypatch.setattr(torch, "normal", normal)
    np.random.seed(0)
    torch.manual_seed(0)
    ref = GradientShap(cnn).attribute(images, baselines=refs, n_samples=n, stdevs=0.05, target=TARGET)
    monkeypatch.undo()
    eg = create("expected_gradients", cnn, baselines=refs, n_samples=n, stdevs=0.05)
    b = images.shape[0]
    index = torch.as_tensor(np.asarray(seen["index"])).view(b, n)
    noisy = images.repeat_interleave(n, 0) + seen["noise"]
    alpha = torch.as_tensor(seen["alpha"], dtype=images.dtype).view(b, n)
    ours = eg.from_draws(images, TARGET, refs[index], noisy.view(b, n, *images.shape[1:]), alpha)
    print("max relative difference to Captum GradientShap:", close(ours, ref))
    close(eg.reduce_channels(ours), ref.sum(1))


def test_expected_gradients_closed_form_on_a_linear_model():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    base = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    eg = create("expected_gradients", model, baselines=base, n_samples=5, stdevs=0.0)
    maps = eg.attribute(x, torch.tensor([0, 3]))
    w = model[1].weight.view(4, 3, 8, 8)
    expected = ((x - base) * w[[0, 3]]).sum(1)  # the gradient of a linear model is its weight
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # completeness: the map sums to f(x) - f(b)
        gap = model(x)[[0, 1], [0, 3]] - model(base)[0, [0, 3]]
    torch.testing.assert_close(maps.sum((1, 2)), gap, rtol=1e-4, atol=1e-5)


def test_expected_gradients_reference_set_is_fixed_and_batch_variant_is_declared(cnn, images):
    default = create("expected_gradients", cnn, n_samples=3)
    assert default.batch_invariant and default.baseline_set(images).shape == (16, 3, 64, 64)
    latec = create("expected_gradients", cnn, baselines="batch", n_samples=3)
    assert not latec.batch_invariant
    whole = latec.attribute(images, TARGET)
    alone = latec.attribute(images[:1], TARGET[:1])
    assert (whole[0] - alone[0]).abs().max() > 0  # the batch is the baseline set: batch-mates matter


def test_expected_gradients_bad_baselines_fail_before_any_pass(cnn, images):
    with pytest.raises(InputError, match=r"\[R, 3, H, W\]"):
        create("expected_gradients", cnn, baselines=torch.zeros(4, 1, 64, 64))
    with pytest.raises(InputError, match="needs 'dataset'"):
        create("expected_gradients", cnn, baselines={"split": "train"})
    with pytest.raises(InputError, match="'batch'"):
        create("expected_gradients", cnn, baselines="data")
    eg = create("expected_gradients", cnn, baselines=torch.zeros(4, 3, 32, 32), n_samples=2)
    with pytest.raises(InputError, match="inputs' size"):
        eg.attribute(images, TARGET)
    with pytest.raises(InputError, match="n_samples must be a positive integer"):
        create("expected_gradients", cnn, n_samples=0)


def test_guided_backprop_equals_captum(cnn, images):
    x = images.clone()
    ref = CaptumGuidedBackprop(cnn).attribute(x.requires_grad_(), target=TARGET)
    gb = create("guided_backprop", cnn, abs=False)
    ours = gb.signed(images, TARGET)
    print("max relative difference to Captum GuidedBackprop:", close(ours, ref))
    plain = create("saliency", cnn, abs=False).signed(images, TARGET)
    assert (plain - ours).abs().max() > 0.1 * ref.abs().max()  # the guided rule changes the map
    close(create("guided_backprop", cnn).attribute(images, TARGET), ref.detach().abs().amax(1))


def test_guided_backprop_refuses_a_model_without_relu_modules(vit):
    with pytest.raises(InputError, match="has none"):
        create("guided_backprop", vit)


def test_raw_attention_is_the_last_blocks_class_row(vit, images):
    tokens = {}
    handle = vit.blocks[-1].norm1.register_forward_hook(lambda _m, _i, out: tokens.setdefault("x", out))
    try:
        maps = create("raw_attention", vit, upsample="nearest").attribute(images, TARGET)
    finally:
        handle.remove()
    attn = vit.blocks[-1].attn
    b, n, d = tokens["x"].shape
    qkv = attn.qkv(tokens["x"]).reshape(b, n, 3, attn.num_heads, d // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    probs = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1).mean(1)  # [B, N, N], heads averaged
    expected = probs[:, 0, 1:].reshape(b, 8, 8)
    torch.testing.assert_close(maps[:, ::8, ::8], expected.detach(), rtol=1e-5, atol=1e-7)
    with record_attention(vit) as recorded, torch.no_grad():
        vit(images)
    rollout_free = recorded[-1].amax(1)[:, 0, 1:].reshape(b, 8, 8)
    torch.testing.assert_close(create("raw_attention", vit, head_fusion="max", upsample="nearest")
                               .attribute(images, TARGET)[:, ::8, ::8], rollout_free)
