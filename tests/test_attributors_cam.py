"""CAM family and attention rollout: agreement with pytorch-grad-cam before its min-max scaling,
layer resolution, and a hand-computed rollout on a ViT whose attention is set by hand."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import pytorch_grad_cam.base_cam as grad_cam_base
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from reproduce.attributors import create
from reproduce.errors import ConfigError, InputError
from reproduce.models import ModelAdapter

TARGETS = [2, 5]


def _raw_scaling(cam, target_size):
    """pytorch-grad-cam's ``scale_cam_image`` resize (cv2, bilinear) without its min-max step."""
    return np.float32([cv2.resize(np.float32(c), target_size) for c in cam])


def _no_scaling(cam, target_size=None):
    """Keep the CAM at the layer's grid: pytorch-grad-cam's raw ReLU(sum_c w_c A_c)."""
    return np.float32(cam)


def _fold_tokens(tokens):
    return tokens[:, 1:].reshape(tokens.shape[0], 8, 8, tokens.shape[-1]).permute(0, 3, 1, 2)


def _library_cam(cls, model, layer, x, scaling, monkeypatch, reshape=None, batch_size=None):
    monkeypatch.setattr(grad_cam_base, "scale_cam_image", scaling)
    cam = cls(model=model, target_layers=[layer], reshape_transform=reshape)
    if batch_size is not None:
        cam.batch_size = batch_size
    with cam:
        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in TARGETS[: len(x)]])
    return torch.from_numpy(out)


def _grid(maps: torch.Tensor, cell: int) -> torch.Tensor:
    """Undo an integer-factor nearest upsampling."""
    return maps[:, ::cell, ::cell]


def _assert_matches(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4) -> None:
    scale = ref.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * scale)


CNN_METHODS = [("gradcam", GradCAM), ("gradcam_pp", GradCAMPlusPlus)]


@pytest.mark.parametrize("name,cls", CNN_METHODS)
def test_gradient_cams_match_pytorch_grad_cam_on_cnn(cnn, images, monkeypatch, name, cls):
    x = images[:2]
    target = torch.tensor(TARGETS)
    ref_grid = _library_cam(cls, cnn, cnn.layer4, x, _no_scaling, monkeypatch)
    grid = _grid(create(name, cnn, upsample="nearest").attribute(x, target), 16)
    assert grid.shape == ref_grid.shape == (2, 4, 4)
    _assert_matches(grid, ref_grid)
    # The library's own resize (cv2 INTER_LINEAR) of its raw CAM vs our on-device bilinear.
    ref_up = torch.from_numpy(_raw_scaling(ref_grid.numpy(), (64, 64)))
    _assert_matches(create(name, cnn).attribute(x, target), ref_up)
    if name == "gradcam":  # Grad-CAM++ weights are >= 0 and layer4 follows a ReLU: nothing to clip
        _assert_relu_matters(create(name, cnn, relu=False, upsample="nearest"), x, target, ref_grid, 16)


def _assert_relu_matters(attributor, x, target, ref_grid, cell):
    """Without the ReLU the map keeps negative evidence and must NOT match the library."""
    signed = _grid(attributor.attribute(x, target), cell)
    assert (signed < 0).any()
    assert not torch.allclose(signed, ref_grid, rtol=1e-3, atol=1e-3 * ref_grid.abs().max().item())


def test_gradcam_minmax_equals_pytorch_grad_cam_output(cnn, images):
    x = images[:2]
    with GradCAM(model=cnn, target_layers=[cnn.layer4]) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in TARGETS]))
    ours = create("gradcam", cnn, normalize="minmax").attribute(x, torch.tensor(TARGETS))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_scorecam_matches_pytorch_grad_cam_on_cnn(cnn, images, monkeypatch):
    x = images[:1]
    ref = _library_cam(ScoreCAM, cnn, cnn.layer4, x, _no_scaling, monkeypatch, batch_size=512)
    attributor = create("scorecam", cnn, upsample="nearest", batch_size=512)
    ours = _grid(attributor.attribute(x, TARGETS[0]), 16)
    _assert_matches(ours, ref, rtol=3e-4)
    channels = cnn.num_features
    assert attributor.last_cost["forward_per_image"] == 1 + channels
    assert attributor.last_cost["backward_per_image"] == 0


@pytest.mark.parametrize("name,cls", CNN_METHODS)
def test_gradient_cams_match_pytorch_grad_cam_on_vit(vit, images, monkeypatch, name, cls):
    x = images[:2]
    ref = _library_cam(cls, vit, vit.blocks[-1].norm1, x, _no_scaling, monkeypatch, reshape=_fold_tokens)
    attributor = create(name, vit, upsample="nearest")
    assert attributor.layer == "blocks.3.norm1"
    ours = _grid(attributor.attribute(x, torch.tensor(TARGETS)), 8)
    assert ours.shape == (2, 8, 8)
    _assert_matches(ours, ref)
    # norm1 outputs are signed, so both variants have negative evidence for the ReLU to clip.
    _assert_relu_matters(create(name, vit, relu=False, upsample="nearest"), x, torch.tensor(TARGETS), ref, 8)


def test_scorecam_matches_pytorch_grad_cam_on_vit(vit, images, monkeypatch):
    x = images[:2]
    ref = _library_cam(ScoreCAM, vit, vit.blocks[-1].norm1, x, _no_scaling, monkeypatch, reshape=_fold_tokens, batch_size=256)
    # One (costly) run without the ReLU checks both the map and that the ReLU matters.
    signed = _grid(create("scorecam", vit, relu=False, upsample="nearest", batch_size=256).attribute(x, torch.tensor(TARGETS)), 8)
    assert (signed < 0).any()
    _assert_matches(signed.clamp_min(0), ref, rtol=3e-4)
    assert not torch.allclose(signed, ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())


def test_scorecam_max_channels_renormalises_over_the_most_varied_channels(vit, images):
    """Faster Score-CAM: the softmax over k channels = the full weights restricted and renormalised."""
    x, target = images[:2], torch.tensor(TARGETS)
    full = create("scorecam", vit, batch_size=256)
    fast = create("scorecam", vit, max_channels=8)
    activations, _ = full.layer_activations(x, target)
    all_weights = full.channel_weights(activations, None, x, target)
    weights = fast.channel_weights(activations, None, x, target)
    chosen = activations.flatten(2).std(dim=2).topk(8, dim=1).indices
    for b in range(2):
        expected = torch.zeros_like(all_weights[b])
        expected[chosen[b]] = all_weights[b, chosen[b]] / all_weights[b, chosen[b]].sum()
        torch.testing.assert_close(weights[b], expected, rtol=1e-4, atol=1e-7)
    fast.attribute(x, target)
    assert fast.last_cost["forward_per_image"] == 1 + 8
    with pytest.raises(ConfigError, match="max_channels"):
        create("scorecam", vit, max_channels=0)


def test_gradcam_counts_one_backward_row_per_image(cnn, images):
    attributor = create("gradcam", cnn)
    attributor.attribute(images)
    assert attributor.last_cost["forward_per_image"] == 1
    assert attributor.last_cost["backward_per_image"] == 1


def test_explicit_layer_matches_library_and_differs_from_default(cnn, images, monkeypatch):
    x = images[:2]
    target = torch.tensor(TARGETS)
    ref = _library_cam(GradCAM, cnn, cnn.layer3, x, _no_scaling, monkeypatch)
    layer3 = _grid(create("gradcam", cnn, layer="layer3", upsample="nearest").attribute(x, target), 16)
    default = _grid(create("gradcam", cnn, upsample="nearest").attribute(x, target), 16)
    _assert_matches(layer3, ref)
    assert not torch.allclose(layer3, default, rtol=1e-2, atol=1e-2 * default.abs().max().item())
    layer2 = create("gradcam", cnn, layer="layer2", upsample="nearest").attribute(x, target)
    assert torch.equal(_grid(layer2, 8).repeat_interleave(8, 1).repeat_interleave(8, 2), layer2)  # 8x8 grid


def test_default_layer_comes_from_the_adapter(cnn, vit):
    assert create("gradcam", cnn).layer == ModelAdapter(cnn).default_cam_layer == "features"
    assert create("gradcam_pp", vit).layer == ModelAdapter(vit).default_cam_layer


@pytest.mark.parametrize("name", ["gradcam", "gradcam_pp", "scorecam"])
def test_unknown_layer_lists_the_cam_layers(cnn, name):
    with pytest.raises(ConfigError) as err:
        create(name, cnn, layer="layer9")
    message = str(err.value)
    assert "layer9" in message
    for layer in ModelAdapter(cnn).cam_layer_names():
        assert repr(layer) in message


def test_bad_upsample_mode_is_a_config_error(cnn):
    with pytest.raises(ConfigError, match="upsample"):
        create("gradcam", cnn, upsample="area")


# --- attention rollout ------------------------------------------------------------------------


class FixedAttention(nn.Module):
    """Stands in for ``attn_drop``: the block then uses (and records) a hand-set attention."""

    def __init__(self, attention: torch.Tensor):
        super().__init__()
        self.attention = attention  # [heads, N, N], rows sum to 1

    def forward(self, attn):
        return self.attention.expand_as(attn)


class Boom(nn.Module):
    def forward(self, attn):
        raise RuntimeError("boom")


def _hand_set(vit, seed=0):
    g = torch.Generator().manual_seed(seed)
    heads, n = vit.blocks[0].attn.num_heads, 65
    fixed = []
    for block in vit.blocks:
        a = torch.softmax(3 * torch.randn(heads, n, n, generator=g), dim=-1)
        block.attn.attn_drop = FixedAttention(a)
        fixed.append(a.numpy().astype(np.float64))
    return fixed


def _hand_rollout(fixed, fusion, discard_ratio=0.0):
    n = fixed[0].shape[-1]
    result = np.eye(n)
    for a in fixed:
        a = {"mean": a.mean(0), "max": a.max(0), "min": a.min(0)}[fusion].copy()
        k = int(a.size * discard_ratio)
        if k:
            flat = a.reshape(-1)
            order = [i for i in np.argsort(flat, kind="stable") if i != 0][:k]
            flat[order] = 0.0
        a = a + np.eye(n)
        a = a / a.sum(1, keepdims=True)
        result = a @ result
    return result[0, 1:].reshape(8, 8)


@pytest.mark.parametrize("fusion,discard", [("mean", 0.0), ("max", 0.0), ("min", 0.0), ("mean", 0.5)])
def test_rollout_equals_hand_computation(vit, images, fusion, discard):
    fixed = _hand_set(vit)
    maps = create("attention_rollout", vit, head_fusion=fusion, discard_ratio=discard, upsample="nearest").attribute(images[:2])
    expected = torch.from_numpy(_hand_rollout(fixed, fusion, discard)).float()
    for grid in _grid(maps, 8):
        torch.testing.assert_close(grid, expected, rtol=1e-4, atol=1e-6)


def test_rollout_ignores_target_and_restores_fused_attention(vit, images):
    attention = [block.attn for block in vit.blocks]
    flags = [True, False, True, True]
    for module, flag in zip(attention, flags):
        module.fused_attn = flag
    rollout = create("attention_rollout", vit)
    torch.testing.assert_close(rollout.attribute(images, 0), rollout.attribute(images, 3))
    assert [m.fused_attn for m in attention] == flags
    assert all(not m.attn_drop._forward_hooks for m in attention)

    vit.blocks[2].attn.attn_drop = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        rollout.attribute(images)
    assert [m.fused_attn for m in attention] == flags
    assert all(not m.attn_drop._forward_hooks for m in attention)
    assert not vit.training


def test_rollout_needs_a_vit(cnn):
    with pytest.raises(InputError, match="Vision Transformer"):
        create("attention_rollout", cnn)


@pytest.mark.parametrize("options", [{"head_fusion": "median"}, {"discard_ratio": 1.0}])
def test_rollout_rejects_bad_options(vit, options):
    with pytest.raises(InputError):
        create("attention_rollout", vit, **options)


# --- pytorch-grad-cam's eigen_smooth and aug_smooth -------------------------------------------------
def _captured_projection(monkeypatch):
    """Record pytorch-grad-cam's raw eigen projection (before its ReLU and scaling)."""
    captured = []
    original = grad_cam_base.get_2d_projection

    def spy(activation_batch):
        captured.append(torch.from_numpy(original(activation_batch)))
        return captured[-1].numpy()

    monkeypatch.setattr(grad_cam_base, "get_2d_projection", spy)
    return captured


@pytest.mark.parametrize("model_name,cell", [("cnn", 16), ("vit", 8)])
def test_eigen_smooth_matches_pytorch_grad_cam_up_to_the_fixed_sign(model_name, cell, request, images, monkeypatch):
    model = request.getfixturevalue(model_name)
    x, target = images[:2], torch.tensor(TARGETS)
    layer, reshape = (model.layer4, None) if model_name == "cnn" else (model.blocks[-1].norm1, _fold_tokens)
    captured = _captured_projection(monkeypatch)
    ref = _library_cam(GradCAM, model, layer, x, _no_scaling, monkeypatch, reshape=reshape)
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in TARGETS], eigen_smooth=True)
    theirs = captured[-1]  # [2, h, w], LAPACK's sign
    signed = _grid(create("gradcam", model, eigen_smooth=True, relu=False, upsample="nearest").attribute(x, target), cell)
    plain = _grid(create("gradcam", model, relu=False, upsample="nearest").attribute(x, target), cell)
    for b in range(2):
        sign = 1.0 if torch.allclose(signed[b], theirs[b], rtol=1e-3, atol=1e-4 * theirs[b].abs().max()) else -1.0
        _assert_matches(signed[b], sign * theirs[b], rtol=1e-3)
        # Our sign: the projection agrees with the plain CAM's evidence.
        assert ((signed[b] - signed[b].mean()) * (plain[b] - plain[b].mean())).sum() >= 0
    ours = _grid(create("gradcam", model, eigen_smooth=True, upsample="nearest").attribute(x, target), cell)
    torch.testing.assert_close(ours, signed.clamp_min(0))
    assert not torch.allclose(ours, ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())  # the flag matters


def _sign_fixed_projection(monkeypatch):
    """pytorch-grad-cam's projection with our sign rule (agree with the centred channel sum)."""
    original = grad_cam_base.get_2d_projection

    def fixed(activation_batch):
        projection = original(activation_batch)
        plain = activation_batch.sum(1)
        agree = ((projection - projection.mean((1, 2), keepdims=True)) * (plain - plain.mean((1, 2), keepdims=True))).sum((1, 2))
        return np.float32(np.where(agree[:, None, None] < 0, -projection, projection))

    monkeypatch.setattr(grad_cam_base, "get_2d_projection", fixed)


@pytest.mark.parametrize("eigen", [False, True])
def test_aug_smooth_matches_pytorch_grad_cam_end_to_end(cnn, images, eigen, monkeypatch):
    x, target = images[:2], torch.tensor(TARGETS)
    _sign_fixed_projection(monkeypatch)
    with GradCAM(model=cnn, target_layers=[cnn.layer4]) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in TARGETS],
                                   aug_smooth=True, eigen_smooth=eigen))
    attributor = create("gradcam", cnn, aug_smooth=True, eigen_smooth=eigen)
    ours = attributor.attribute(x, target)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=2e-4)
    assert attributor.last_cost["forward_per_image"] == 6 and attributor.last_cost["backward_per_image"] == 6
    torch.testing.assert_close(attributor.attribute(x, target), ours)  # deterministic
    plain = create("gradcam", cnn, eigen_smooth=eigen, normalize="minmax").attribute(x, target)
    assert not torch.allclose(ours, plain, atol=1e-2)  # the augmentations matter


@pytest.mark.parametrize("name", ["gradcam", "attention_rollout"])
def test_nearest_upsampling_ranks_patches_by_their_token_values(vit, images, name):
    from reproduce.metrics import rank_descending
    from reproduce.metrics.perturbation_curves import patch_scores

    x, target = images[:2], torch.tensor(TARGETS)
    tokens = create(name, vit, upsample="nearest").attribute(x, target)[:, ::8, ::8]  # [2, 8, 8] token map
    grid = create(name, vit).grid_cam(x, target) if name == "gradcam" else tokens
    torch.testing.assert_close(tokens, grid)
    nearest = patch_scores(create(name, vit, upsample="nearest").attribute(x, target), (8, 8))
    torch.testing.assert_close(nearest, tokens.reshape(2, 64), rtol=1e-6, atol=0)  # a patch's mean is its token's value
    assert torch.equal(rank_descending(nearest), rank_descending(tokens.reshape(2, 64)))
    # Bilinear upsampling then the patch mean is a 3x3 blur of the token map (the old MoXI ranking).
    blurred = patch_scores(create(name, vit).attribute(x, target), (8, 8)).view(2, 8, 8)
    kernel = torch.tensor([0.125, 0.75, 0.125])
    expected = torch.nn.functional.conv2d(tokens[:, None], (kernel[:, None] * kernel[None, :])[None, None])[:, 0]
    torch.testing.assert_close(blurred[:, 1:-1, 1:-1], expected, rtol=1e-4, atol=1e-6)
    assert not torch.equal(rank_descending(blurred.reshape(2, 64)), rank_descending(tokens.reshape(2, 64)))
