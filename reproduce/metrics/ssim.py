"""Batched SSIM on the device, equal to ``skimage.metrics.structural_similarity`` with
``data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` (the super-pixel
paper's sister-code settings), and the PAIR grayscale conversion those maps go through.

skimage filters with a Gaussian of ``truncate=3.5`` (radius ``int(3.5 * 1.5 + 0.5) = 5``, an 11 px
window) and averages the SSIM map after cropping ``(win - 1) // 2 = 5`` pixels from each border;
the crop removes exactly the pixels the filter's border mode touches, so only valid convolutions
are needed here. Maps must be at least 11x11 (skimage refuses smaller images too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reproduce.errors import InputError

K1, K2 = 0.01, 0.03
TRUNCATE = 3.5


def grayscale(maps: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """PAIR's ``VisualizeImageGrayscale``: ``|map|``, clipped at its ``percentile``, scaled to [0, 1].

    ``(|m| - min) / (p99 - min)`` clipped to [0, 1] (numpy's linear-interpolation percentile); a map
    whose percentile equals its minimum (e.g. constant) becomes all zeros.
    """
    a = maps.abs().flatten(1).double()
    vmax = torch.quantile(a, percentile / 100, dim=1, keepdim=True)
    vmin = a.min(1, keepdim=True).values
    span = vmax - vmin
    scaled = torch.where(span > 0, (a - vmin) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(a))
    return scaled.clamp(0, 1).view_as(maps)


def _kernel(sigma: float, device, dtype) -> torch.Tensor:
    radius = int(TRUNCATE * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM ``[B]`` between images ``a`` and ``b`` ``[B, H, W]``."""
    if a.shape != b.shape or a.dim() != 3:
        raise InputError(f"SSIM needs two [B, H, W] tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    k = _kernel(sigma, a.device, torch.float64)
    win = k.numel()
    if min(a.shape[-2:]) < win:
        raise InputError(f"SSIM with sigma={sigma} needs maps of at least {win}x{win}, got {tuple(a.shape[-2:])}.")
    a, b = a.double(), b.double()
    x = torch.stack([a, b, a * a, b * b, a * b], dim=1)  # [B, 5, H, W]
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # valid region = skimage's crop
    ux, uy, uxx, uyy, uxy = x.unbind(1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
