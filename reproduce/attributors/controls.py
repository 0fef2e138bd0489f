"""Control maps: what "chance", "a prior", "an edge detector" and "the answer" score in a table.

None of these looks at the model (no forward pass, ``forward_per_image == 0``); each is a row a
reader compares the real methods against (Quantus' control variables, TorchRay's centre baseline,
the ground truth as an upper bound):

- ``random``: i.i.d. uniform [0, 1) values, seeded per image by ``(seed, image content)``
  (:mod:`reproduce.attributors.content_seed`), so an image's noise does not depend on its
  batch-mates, its position in the batch or the device; a rerun repeats it.
- ``constant``: the same value everywhere (every pixel ties: rank-based metrics break the ties in
  raster order, see :func:`reproduce.metrics.perturbation_curves.rank_descending`).
- ``center``: a Gaussian bump centred on the image, ``sigma`` a fraction of the shorter side (the
  centre-bias prior of natural-image datasets).
- ``edges``: the Sobel gradient magnitude of the de-normalised grey image, equal to
  ``skimage.filters.sobel(skimage.color.rgb2gray(image))`` (tested): an image-only map that sees
  every edge of the scene, object or not.
- ``oracle_mask``: the ground-truth mask itself (1 inside, 0 outside), the upper bound of
  localisation metrics. The attributor contract has no mask input, so it takes one explicitly:
  ``attribute(images, target, masks=masks)`` with ``masks`` ``[B, H, W]``; a class with
  ``needs_masks = True`` tells the evaluation to pass the batch's masks this way.

``target`` is accepted for the common contract and ignored by all of them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.attributors.base import Attributor
from reproduce.attributors.content_seed import image_generators
from reproduce.attributors.registry import register
from reproduce.checks import check_int, check_number
from reproduce.errors import InputError

# skimage.color.rgb2gray weights (ITU-R BT.709 luma), used so `edges` equals skimage's Sobel.
GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)


@register("random")
class RandomMap(Attributor):
    """Uniform [0, 1) noise per pixel, seeded per image content (see the module docstring).

    Args:
        seed: selects the noise; the same (seed, image) always gives the same map.
    """

    model_free: ClassVar[bool] = True

    def __init__(self, model: nn.Module, seed: int = 0, normalize: str | None = None):
        super().__init__(model, normalize=normalize)
        self.seed = check_int("seed", seed, minimum=0, error=InputError)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        maps = [torch.rand(h, w, generator=g) for g in image_generators(self.seed, x)]
        return torch.stack(maps).to(device=x.device, dtype=x.dtype)


@register("constant")
class ConstantMap(Attributor):
    """The same ``value`` on every pixel (a map that ranks nothing)."""

    model_free: ClassVar[bool] = True

    def __init__(self, model: nn.Module, value: float = 1.0, normalize: str | None = None):
        super().__init__(model, normalize=normalize)
        self.value = check_number("value", value, error=InputError)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], *x.shape[-2:]), self.value, device=x.device, dtype=x.dtype)


def centre_gaussian(height: int, width: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """``exp(-d^2 / (2 s^2))`` ``[H, W]``, ``d`` the distance to the image centre in pixels and
    ``s = sigma * min(H, W)``; pixel centres at ``i + 0.5``, so the bump is symmetric."""
    s = sigma * min(height, width)
    ys = torch.arange(height, device=device, dtype=torch.float64) + 0.5 - height / 2
    xs = torch.arange(width, device=device, dtype=torch.float64) + 0.5 - width / 2
    d2 = ys[:, None] ** 2 + xs[None, :] ** 2
    return torch.exp(-d2 / (2 * s * s)).to(dtype)


@register("center")
class CenterMap(Attributor):
    """A centred Gaussian bump (the centre-bias prior).

    Args:
        sigma: standard deviation as a fraction of the shorter image side (default 0.25: the bump
            falls to ``exp(-2) = 0.14`` at the middle of each border).
    """

    model_free: ClassVar[bool] = True

    def __init__(self, model: nn.Module, sigma: float = 0.25, normalize: str | None = None):
        super().__init__(model, normalize=normalize)
        self.sigma = check_number("sigma", sigma, positive=True, error=InputError)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bump = centre_gaussian(*x.shape[-2:], self.sigma, device=x.device, dtype=x.dtype)
        return bump.expand(x.shape[0], -1, -1).clone()


def sobel_magnitude(grey: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude ``[B, H, W]`` of ``grey`` ``[B, H, W]`` as ``skimage.filters.sobel``:
    ``sqrt((g_y^2 + g_x^2) / 2)`` with the kernels ``[1, 0, -1] x [1, 2, 1] / 4`` and the border
    repeated (scipy's ``reflect`` mode, which for a 3x3 kernel repeats the edge pixel)."""
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=grey.dtype, device=grey.device) / 4
    edge = torch.tensor([1.0, 0.0, -1.0], dtype=grey.dtype, device=grey.device)
    kernel_y = (edge[:, None] * smooth[None, :])[None, None]
    kernel_x = kernel_y.transpose(-1, -2)
    padded = F.pad(grey[:, None], (1, 1, 1, 1), mode="replicate")
    gy, gx = F.conv2d(padded, kernel_y), F.conv2d(padded, kernel_x)
    return torch.sqrt((gy**2 + gx**2) / 2)[:, 0]


@register("edges")
class EdgeMap(Attributor):
    """Sobel edge magnitude of the image (de-normalised to [0, 1], clipped, converted to grey)."""

    model_free: ClassVar[bool] = True

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pixels = self.adapter.data_config.denormalize(x.detach()).clamp(0, 1)
        if pixels.shape[1] == 3:
            weights = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            grey = (pixels * weights).sum(1)
        else:
            grey = pixels.mean(1)
        return sobel_magnitude(grey)


@register("oracle_mask")
class OracleMask(Attributor):
    """The ground-truth mask as a map: ``attribute(images, target, masks=[B, H, W])``.

    Only meaningful where the dataset has masks; metrics that re-explain other images (robustness,
    stability, sanity checks) have no mask for them and get a clear error.
    """

    needs_masks: ClassVar[bool] = True
    model_free: ClassVar[bool] = True
    contract_skip: ClassVar[str | None] = (
        "needs the ground-truth masks (attribute(..., masks=)), which the generic checks do not have; "
        "the same checks with masks are in tests/test_controls.py"
    )

    def __init__(self, model: nn.Module, normalize: str | None = None):
        super().__init__(model, normalize=normalize)
        self._masks: torch.Tensor | None = None

    def attribute(self, inputs: torch.Tensor, target: Any = None, masks: torch.Tensor | None = None) -> torch.Tensor:
        if masks is None:
            raise InputError(
                "oracle_mask paints the ground-truth mask and needs it: call attribute(images, target, "
                "masks=<[B, H, W] bool>) (the evaluation does so for datasets with masks). Metrics that "
                "re-explain other images (robustness, stability, sanity checks) cannot be used with it."
            )
        if not isinstance(masks, torch.Tensor):
            raise InputError(f"masks must be a [B, H, W] tensor, got {type(masks).__name__}.")
        if isinstance(inputs, torch.Tensor) and inputs.dim() == 4 and tuple(masks.shape) != (inputs.shape[0], *inputs.shape[-2:]):
            raise InputError(
                f"masks have shape {tuple(masks.shape)} but the inputs need [B, H, W] = "
                f"{(inputs.shape[0], *inputs.shape[-2:])}; resize them with nearest-neighbour interpolation."
            )
        if masks.is_floating_point() and not torch.all((masks == 0) | (masks == 1)):
            raise InputError("masks must be boolean (or 0/1 valued); threshold soft masks first.")
        self._masks = masks
        try:
            return super().attribute(inputs, target)
        finally:
            self._masks = None

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._masks.to(device=x.device, dtype=x.dtype)
