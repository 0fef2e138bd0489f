"""Class activation maps (Grad-CAM, Grad-CAM++, Score-CAM) behind one base class.

A CAM is ``ReLU(sum_c w_c A_c)`` over the channels of one layer's activation ``A`` (folded to
``[B, C, h, w]`` by :meth:`ModelAdapter.fold`), upsampled to the input size. The variants differ
only in the channel weights ``w``, so a new variant is one subclass of :class:`CAM` overriding
:meth:`CAM.channel_weights`.

Conventions (checked against pytorch-grad-cam 1.5.7 in ``tests/test_attributors_cam.py``):

- ``layer=None`` is ``adapter.default_cam_layer``: the ``forward_features`` output of a CNN, the
  last block's ``norm1`` of a ViT (patch tokens folded onto the token grid, prefix tokens dropped);
- gradients are ``torch.autograd.grad`` of the *sum* of the per-sample target logits, so a
  sample's map never depends on its batch-mates (the mean-reduced loss of grad-cam#584 does);
- the weighted sum, ReLU and upsampling stay on the input's device; there is NO per-map min-max
  scaling (pytorch-grad-cam always applies one): pass ``normalize="minmax"`` to get its scale.

pytorch-grad-cam's two smoothing flags (MoXI runs Grad-CAM with both) are options of every CAM:

- ``eigen_smooth``: the map is the projection of the weighted activations ``w_c A_c`` (pixels x
  channels, centred per channel) on their first right singular vector, instead of their channel sum
  (pytorch-grad-cam's ``get_2d_projection``). The sign of a singular vector is arbitrary (LAPACK
  picks one, and pytorch-grad-cam keeps it); here the sign is fixed so that the projection
  correlates non-negatively with the plain CAM (the channel sum), so the ReLU keeps the side of the
  principal component that agrees with the class evidence, on every device and platform.
- ``aug_smooth``: pytorch-grad-cam's test-time augmentation, deterministic: the 6 inputs
  ``x * f`` and ``flip(x * f)`` for ``f`` in (0.9, 1, 1.1) (a horizontal flip and a multiplication
  in the model's normalised space, ttach's ``HorizontalFlip`` x ``Multiply``), each CAM upsampled,
  min-max scaled to [0, 1] as pytorch-grad-cam scales every CAM (``(c - min) / (1e-7 + max - min)``),
  flipped back, and averaged. It costs 6 times the passes; the maps lie in [0, 1].
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.checks import check_bool, check_choice
from reproduce.attributors.base import Attributor
from reproduce.attributors.registry import register
from reproduce.errors import ConfigError, InputError
from reproduce.models import FEATURES, ModelAdapter, forward_rows, record_backward
from reproduce.models.hooks import get_submodule

UPSAMPLE_MODES = ("bilinear", "bicubic", "nearest")
# pytorch-grad-cam's default test-time augmentation (ttach): horizontal flip x input multiplication.
AUG_FLIPS = (False, True)
AUG_FACTORS = (0.9, 1.0, 1.1)


def check_upsample(mode: str) -> str:
    check_choice("upsample", mode, UPSAMPLE_MODES)
    return mode


def upsample_maps(maps: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize low-resolution maps ``[B, h, w]`` to ``size`` on their device.

    ``bilinear``/``bicubic`` use half-pixel centres (``align_corners=False``), the convention of
    ``cv2.resize`` that pytorch-grad-cam (bilinear) and Xplique (bicubic) use; ``nearest`` with an
    integer factor replicates each cell as a block.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    extra = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(maps.unsqueeze(1), size=size, mode=mode, **extra).squeeze(1)


def eigen_projection(weighted: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w] -> [B, h, w]``: projection on the first principal component (see the module docstring).

    Per sample, the ``h*w`` x ``C`` matrix of ``weighted`` is centred per channel and projected on
    its first right singular vector, signed so that the projection's dot product with the centred
    channel sum is ``>= 0``.
    """
    b, c, h, w = weighted.shape
    rows = weighted.flatten(2).transpose(1, 2).double()  # [B, hw, C]
    centred = rows - rows.mean(1, keepdim=True)
    first = torch.linalg.svd(centred, full_matrices=False).Vh[:, 0]  # [B, C]
    projection = torch.einsum("bpc,bc->bp", centred, first)
    plain = centred.sum(2)
    sign = torch.where((projection * plain).sum(1) < 0, -1.0, 1.0).to(projection)
    return (projection * sign[:, None]).view(b, h, w).to(weighted.dtype)


def minmax_unit(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ``scale_cam_image`` scaling, per map: ``(m - min) / (1e-7 + max - min)``."""
    flat = maps.flatten(1)
    lo = flat.amin(1, keepdim=True)
    return ((flat - lo) / (1e-7 + flat.amax(1, keepdim=True) - lo)).view_as(maps)


def resolve_cam_layer(adapter: ModelAdapter, layer: str | None) -> str:
    """The layer name a CAM reads; fails early, listing the usual choices, if it does not exist."""
    if layer is None:
        return adapter.default_cam_layer
    names = adapter.cam_layer_names()
    if not isinstance(layer, str) or not layer:
        raise ConfigError(f"layer must be a sub-module name such as one of {names}, got {layer!r}.")
    if layer == FEATURES:
        if FEATURES not in names:
            raise ConfigError(
                f"{type(adapter.model).__name__} has no forward_features; name a layer instead "
                f"(one of {names} or a name from model.named_modules())."
            )
        return layer
    try:
        get_submodule(adapter.model, layer)
    except InputError:
        raise ConfigError(
            f"CAM layer {layer!r} does not exist in {type(adapter.model).__name__}. Use one of "
            f"{names} (layer=None picks {adapter.default_cam_layer!r}) or any name from "
            "model.named_modules()."
        ) from None
    return layer


class CAM(Attributor):
    """Base class of the CAM family: ``ReLU(sum_c w_c A_c)`` upsampled to the input.

    Args:
        model: the classifier.
        layer: the layer whose output is weighted (see :func:`resolve_cam_layer`); ``None`` =
            ``adapter.default_cam_layer``.
        relu: clip negative evidence (as every CAM paper and pytorch-grad-cam do).
        upsample: ``"bilinear"`` (default, as pytorch-grad-cam), ``"bicubic"`` or ``"nearest"``
            (with an integer factor each cell becomes a block, so a patch's mean is its token's value:
            MoXI ranks patches by the token-resolution CAM).
        eigen_smooth: first principal component of the weighted activations instead of their sum.
        aug_smooth: average over pytorch-grad-cam's 6 deterministic test-time augmentations.
        normalize: see :class:`Attributor` (off by default).
    """

    # Whether ``channel_weights`` needs d(target logit)/d(activation) (one backward per image).
    uses_gradients: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        relu: bool = True,
        upsample: str = "bilinear",
        eigen_smooth: bool = False,
        aug_smooth: bool = False,
        normalize: str | None = None,
    ):
        super().__init__(model, normalize=normalize)
        self.layer = resolve_cam_layer(self.adapter, layer)
        self.relu = bool(relu)
        self.upsample = check_upsample(upsample)
        self.eigen_smooth = check_bool("eigen_smooth", eigen_smooth)
        self.aug_smooth = check_bool("aug_smooth", aug_smooth)

    def channel_weights(
        self, activations: torch.Tensor, gradients: torch.Tensor | None, inputs: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """Channel weights ``[B, C]`` from the folded activation/gradient ``[B, C, h, w]``.

        ``gradients`` is ``None`` when the class sets ``uses_gradients = False``; ``inputs`` and
        ``target`` are there for methods that re-query the model (Score-CAM).
        """
        raise NotImplementedError

    def grid_cam(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The CAM ``[B, h, w]`` at the layer's resolution (ReLU applied if ``relu``)."""
        activations, gradients = self.layer_activations(x, target)
        weights = self.channel_weights(activations, gradients, x, target).to(activations.dtype)
        if self.eigen_smooth:
            cam = eigen_projection(weights[:, :, None, None] * activations)
        else:
            cam = torch.einsum("bc,bchw->bhw", weights, activations)
        return cam.clamp_min(0) if self.relu else cam

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.aug_smooth:
            return upsample_maps(self.grid_cam(x, target), x.shape[-2:], self.upsample)
        total = torch.zeros(x.shape[0], *x.shape[-2:], device=x.device, dtype=x.dtype)
        for flip in AUG_FLIPS:
            for factor in AUG_FACTORS:
                augmented = (x.flip(-1) if flip else x) * factor
                cam = minmax_unit(upsample_maps(self.grid_cam(augmented, target), x.shape[-2:], self.upsample))
                total += cam.flip(-1) if flip else cam
        return total / (len(AUG_FLIPS) * len(AUG_FACTORS))

    def layer_activations(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Folded activation ``[B, C, h, w]`` and, if needed, its target-logit gradient."""
        if not self.uses_gradients:
            with torch.no_grad():
                _, activation = self.adapter.forward_with_activation(x, self.layer)
            return self.adapter.fold(activation), None
        # Parameters are frozen during attribution, so the input carries the graph; autograd.grad
        # only back-propagates as far as the requested activation.
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits, activation = self.adapter.forward_with_activation(xg, self.layer)
            score = self.target_scores(logits, target).sum()
            (gradient,) = torch.autograd.grad(score, activation, allow_unused=True)
        if gradient is None:
            raise ConfigError(
                f"The class scores do not depend on layer {self.layer!r}; pick a layer the "
                f"prediction is computed from (one of {self.adapter.cam_layer_names()})."
            )
        record_backward(self.model, x.shape[0])
        return self.adapter.fold(activation.detach()), self.adapter.fold(gradient)


@register("gradcam")
class GradCAM(CAM):
    """Grad-CAM (Selvaraju et al. 2017): ``w_c`` = spatial mean of the gradient."""

    def channel_weights(self, activations, gradients, inputs, target):
        return gradients.mean(dim=(2, 3))


@register("gradcam_pp")
class GradCAMPlusPlus(CAM):
    """Grad-CAM++ (Chattopadhyay et al. 2018), with pytorch-grad-cam's closed form of Eq. 19.

    ``alpha = g^2 / (2 g^2 + sum_hw(A) g^3 + 1e-6)`` (0 where ``g == 0``) and
    ``w_c = sum_hw(alpha * ReLU(g))``, using first-order gradients for the higher powers as the
    paper does for an exponential output.
    """

    def channel_weights(self, activations, gradients, inputs, target):
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        sum_activations = activations.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + sum_activations * g3 + 1e-6)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        return (gradients.clamp_min(0) * alpha).sum(dim=(2, 3))


@register("scorecam")
class ScoreCAM(CAM):
    """Score-CAM (Wang et al. 2020), as pytorch-grad-cam's ``ScoreCAM`` computes it.

    Each channel, upsampled to the input (bilinear, ``align_corners=True``) and min-max scaled to
    [0, 1], masks the input (``x * mask``: the hidden part is 0 in normalised space, the mean
    colour); ``w`` = softmax over channels of the target logit of the masked inputs. Every
    (image, channel) pair is one row of a forward batch: ``B * C`` rows in ``ceil(B*C/batch_size)``
    passes, with masks built per chunk so memory stays at ``batch_size`` images.

    Args:
        batch_size: rows (masked images) per forward pass.
        max_channels: ``None`` (default) scores every channel, as pytorch-grad-cam. An integer k
            scores only each image's k channels with the largest spatial standard deviation
            ("Faster Score-CAM", the ``max_N`` option of tabayashi0117's Keras Score-CAM); the
            softmax runs over those k and the other channels get weight 0. Cost: k + 1 forwards
            per image instead of C + 1.
    """

    uses_gradients = False
    smoke_options = {"max_channels": 16}

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        batch_size: int = 128,
        max_channels: int | None = None,
        **options,
    ):
        super().__init__(model, layer=layer, **options)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if max_channels is not None and (not isinstance(max_channels, int) or isinstance(max_channels, bool) or max_channels < 1):
            raise ConfigError(f"max_channels must be None (all channels) or a positive integer, got {max_channels!r}.")
        self.batch_size = batch_size
        self.max_channels = max_channels

    @torch.no_grad()
    def channel_weights(self, activations, gradients, inputs, target):
        b, c, h, w = activations.shape
        if self.max_channels is not None and self.max_channels < c:
            spread = activations.flatten(2).std(dim=2, correction=0)
            chosen = spread.topk(self.max_channels, dim=1).indices  # [B, k]
        else:
            chosen = torch.arange(c, device=activations.device).expand(b, c)
        k = chosen.shape[1]
        maps = activations.gather(1, chosen[:, :, None, None].expand(b, k, h, w)).flatten(0, 1)
        scores = torch.empty(b * k, device=inputs.device, dtype=inputs.dtype)
        step = forward_rows(self.batch_size, inputs)  # capped on a CPU, as every masked forward
        for start in range(0, b * k, step):  # row r = (image r // k, channel chosen[r])
            rows = torch.arange(start, min(start + step, b * k), device=inputs.device)
            image = rows // k
            mask = F.interpolate(maps[rows].unsqueeze(1), size=inputs.shape[-2:], mode="bilinear", align_corners=True)
            low = mask.amin(dim=(2, 3), keepdim=True)
            high = mask.amax(dim=(2, 3), keepdim=True)
            mask = (mask - low) / (high - low + 1e-8)
            masked = inputs[image] * mask.to(inputs.dtype)
            if not self.adapter.is_vit:  # NHWC convolutions: faster CNN forwards (as FillMasker)
                masked = masked.contiguous(memory_format=torch.channels_last)
            logits = self.model(masked)
            scores[rows] = logits.gather(1, target[image].unsqueeze(1)).squeeze(1)
        weights = torch.zeros(b, c, device=inputs.device, dtype=scores.dtype)
        return weights.scatter(1, chosen, scores.view(b, k).softmax(dim=-1))
