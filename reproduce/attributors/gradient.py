"""The gradient family: ``saliency``, ``input_x_gradient`` and ``integrated_gradients``.

Every method here is computed in three stages, so that wrappers can step in between them:

1. :meth:`GradientAttributor.signed`: a signed per-element attribution ``[B, C, H, W]`` that is
   linear in the gradient (the gradient, input x gradient, or the integrated gradients). This is
   what Captum's ``Saliency(abs=False)``, ``InputXGradient`` and ``IntegratedGradients`` return.
2. ``abs``: optional element-wise absolute value (Captum's ``Saliency(abs=True)``).
3. ``channel_reduction``: ``[B, C, H, W] -> [B, H, W]``, one of :data:`CHANNEL_REDUCTIONS`.

Default reductions, per method, and why:

- ``saliency``: ``abs=True`` and ``max`` over channels: the map of Simonyan et al. (2014) and the
  SmoothGrad paper (largest |gradient| over the colour channels of a pixel).
- ``input_x_gradient``: signed, ``sum`` over channels: the pixel's first-order contribution
  ``sum_c x_c * d f / d x_c`` (for a linear model without bias, the maps sum to the logit).
- ``integrated_gradients``: signed, ``sum`` over channels, which keeps completeness:
  ``map.sum() == f(x) - f(baseline)`` up to the integration error.

The noise tunnel (``smoothgrad``) and the super-pixel wrapper use stage 1 of any method here: a
noise tunnel averages stages 1-2 over noisy copies, the super-pixel wrapper sums stage 1 over a
segment (the exact derivative w.r.t. shifting the whole segment) before stage 2.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from reproduce.checks import check_choice, choice_error
from reproduce.attributors.base import Attributor
from reproduce.attributors.registry import register
from reproduce.errors import ConfigError, InputError
from reproduce.models import fill_tensor

CHANNEL_REDUCTIONS = ("sum", "mean", "max", "l2")


def reduce_channels(attribution: torch.Tensor, how: str) -> torch.Tensor:
    """``[..., C, H, W] -> [..., H, W]`` with one of :data:`CHANNEL_REDUCTIONS`."""
    if how == "sum":
        return attribution.sum(-3)
    if how == "mean":
        return attribution.mean(-3)
    if how == "max":
        return attribution.amax(-3)
    if how == "l2":
        return attribution.norm(dim=-3)
    raise choice_error("channel_reduction", how, CHANNEL_REDUCTIONS)


class GradientAttributor(Attributor):
    """Base of the gradient family (see the module docstring for the three stages).

    Subclasses implement :meth:`signed`; ``abs`` and ``channel_reduction`` are options of every
    method of the family.
    """

    def __init__(self, model: nn.Module, abs: bool = False, channel_reduction: str = "sum", normalize: str | None = None):
        super().__init__(model, normalize=normalize)
        if not isinstance(abs, bool):
            raise ConfigError(f"abs must be True or False, got {abs!r}.")
        check_choice("channel_reduction", channel_reduction, CHANNEL_REDUCTIONS)
        self.abs = abs
        self.channel_reduction = channel_reduction

    def signed(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The signed, gradient-linear attribution ``[B, C, H, W]`` (stage 1)."""
        raise NotImplementedError

    def gradient(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d logit_target / d x per sample, computed on a channels-last copy of ``x``.

        Channels-last activations select oneDNN's NHWC convolution kernels: the forward and backward
        passes of ResNets and EfficientNets ran 5-30% faster on the 2-core CPU of the benchmark
        (neutral for ViTs). Values agree up to float rounding; where the network sits exactly on a
        kink (max-pool ties in flat image regions), the kernel may route the subgradient to another
        pixel, which moves attribution between a few pixels without changing the totals.
        """
        return self.input_gradient(x.contiguous(memory_format=torch.channels_last), target)

    def elementwise(self, signed: torch.Tensor) -> torch.Tensor:
        """Stage 2: ``|signed|`` when ``abs`` is set (any shape)."""
        return signed.abs() if self.abs else signed

    def reduce_channels(self, attribution: torch.Tensor) -> torch.Tensor:
        """Stage 3: ``[..., C, H, W] -> [..., H, W]``."""
        return reduce_channels(attribution, self.channel_reduction)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.reduce_channels(self.elementwise(self.signed(x, target)))

    def group_input(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The signed attribution summed over channels ``[B, H, W]``, to be grouped before ``abs``.

        The channel reduction (stage 3) is not used: shifting a segment moves all its channels, so
        the segment value is ``sum_{i in G} sum_c signed_{c,i}`` (the exact derivative of the
        segment shift for saliency; completeness for IG).
        """
        return self.signed(x, target).sum(1)

    def finish_grouped(self, grouped: torch.Tensor) -> torch.Tensor:
        """Stage 2 (``abs``) of the grouped attribution."""
        return self.elementwise(grouped)


@register("saliency")
class Saliency(GradientAttributor):
    """Gradient of the target logit w.r.t. the input (Simonyan et al., 2014).

    Defaults: ``abs=True`` (like Captum's ``Saliency``) and the maximum over channels.
    One forward and one backward pass per image.
    """

    def __init__(self, model: nn.Module, abs: bool = True, channel_reduction: str = "max", normalize: str | None = None):
        super().__init__(model, abs=abs, channel_reduction=channel_reduction, normalize=normalize)

    def signed(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.gradient(x, target)


@register("input_x_gradient")
class InputXGradient(GradientAttributor):
    """Input times gradient (Shrikumar et al., 2016), signed and summed over channels by default.

    The input is taken in the model's normalised space, like Captum's ``InputXGradient`` applied to
    the model input: 0 there is the mean colour.
    """

    def __init__(self, model: nn.Module, abs: bool = False, channel_reduction: str = "sum", normalize: str | None = None):
        super().__init__(model, abs=abs, channel_reduction=channel_reduction, normalize=normalize)

    def signed(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return x * self.gradient(x, target)


INTEGRATION_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")
BASELINE_NAMES = ("zero", "mean", "black", "blur")


def integration_rule(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights of the path integral ``int_0^1 g(alpha) d alpha``.

    The points are Captum's. The weights are Captum's except for ``riemann_trapezoid``: Captum
    uses ``1/n`` (halved at both ends) on ``n`` points spaced ``1/(n-1)`` apart, so its weights sum
    to ``(n-1)/n`` and IG maps come out ``(n-1)/n`` too small; here the weights are the trapezoid
    rule's ``1/(n-1)`` (halved at both ends), which integrate constants exactly.
    """
    n = steps
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1 + nodes), 0.5 * weights
    if method == "riemann_trapezoid":
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0, 1, n), weights
    starts = {"riemann_left": 0.0, "riemann_middle": 0.5 / n, "riemann_right": 1.0 / n}
    return starts[method] + np.arange(n) / n, np.full(n, 1.0 / n)


@register("integrated_gradients")
class IntegratedGradients(GradientAttributor):
    """Integrated gradients (Sundararajan et al., 2017) along the straight path from a baseline.

    ``IG_i = (x_i - b_i) * int_0^1 d f(b + a (x - b)) / d x_i da``, signed and summed over channels
    by default so that the map sums to ``f(x) - f(b)`` (completeness) up to the integration error.

    Args:
        baseline: ``"zero"`` (= ``"mean"``: 0 in the normalised space, the data mean colour),
            ``"black"`` (pixel value 0 mapped through the model's normalisation), ``"blur"`` (a
            Gaussian blur of the input), a number (a constant in the normalised input space, as in
            Captum) or a tensor broadcastable to the inputs (``[C,H,W]``, ``[1,C,H,W]`` or
            ``[B,C,H,W]``; a per-sample baseline follows its sample).
        steps: points of the integration rule (``steps`` forward and backward passes per image).
        method: ``gausslegendre`` (Captum's default) or a Riemann rule; see :func:`integration_rule`.
        internal_batch_size: at most this many path points (over all images and steps) per
            forward/backward pass; bounds memory independently of ``steps`` and the batch size.
    """

    smoke_options: ClassVar[dict] = {"steps": 4}

    def __init__(
        self,
        model: nn.Module,
        baseline: str | float | torch.Tensor = "zero",
        steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int = 64,
        abs: bool = False,
        channel_reduction: str = "sum",
        normalize: str | None = None,
    ):
        super().__init__(model, abs=abs, channel_reduction=channel_reduction, normalize=normalize)
        check_choice("method", method, INTEGRATION_METHODS)
        least = 1 if method == "gausslegendre" else 2
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < least:
            raise ConfigError(f"steps must be an integer >= {least} for method {method!r}, got {steps!r}.")
        if isinstance(internal_batch_size, bool) or not isinstance(internal_batch_size, int) or internal_batch_size < 1:
            raise ConfigError(f"internal_batch_size must be a positive integer, got {internal_batch_size!r}.")
        if isinstance(baseline, str) and baseline not in BASELINE_NAMES:
            raise choice_error("baseline", baseline, BASELINE_NAMES, also="a number or a tensor")
        if not isinstance(baseline, (str, float, int, torch.Tensor)) or isinstance(baseline, bool):
            raise choice_error("baseline", type(baseline).__name__, BASELINE_NAMES, also="a number or a tensor")
        self.baseline = baseline
        self.steps = steps
        self.method = method
        self.internal_batch_size = internal_batch_size
        self._alphas, self._weights = integration_rule(method, steps)

    def baseline_for(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline ``[B, C, H, W]`` of each input."""
        fill = "mean" if isinstance(self.baseline, str) and self.baseline == "zero" else self.baseline
        base = fill_tensor(self.adapter, x, fill)
        try:
            return base.expand_as(x) if base.dim() == 4 else base.unsqueeze(0).expand_as(x)
        except RuntimeError as err:
            raise InputError(
                f"baseline of shape {tuple(base.shape)} does not broadcast to the inputs "
                f"{tuple(x.shape)}; pass [C,H,W], [1,C,H,W] or [B,C,H,W]."
            ) from err

    def signed(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        baseline = self.baseline_for(x)
        diff = x - baseline
        alphas = torch.as_tensor(self._alphas, dtype=x.dtype, device=x.device)
        weights = torch.as_tensor(self._weights, dtype=x.dtype, device=x.device)
        rows = x.shape[0] * self.steps
        integral = torch.zeros_like(x)
        # Path points of all images are flattened (image-major) and cut into chunks of at most
        # internal_batch_size rows: memory is bounded whatever the batch size and steps.
        for start in range(0, rows, self.internal_batch_size):
            r = torch.arange(start, min(start + self.internal_batch_size, rows), device=x.device)
            image, step = r // self.steps, r % self.steps
            point = baseline[image] + alphas[step].view(-1, 1, 1, 1) * diff[image]
            grad = self.gradient(point, target[image])
            integral.index_add_(0, image, grad * weights[step].view(-1, 1, 1, 1))
        return diff * integral
