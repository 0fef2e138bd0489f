"""HSIC-attribution (Novello, Fel & Vigouroux, NeurIPS 2022), as Xplique's ``HsicAttributionMethod``.

The image is cut into a ``grid_size x grid_size`` grid; each cell is a binary input variable
(kept, or set to the baseline 0 in normalised space: Xplique's "inpainting" perturbation
``x * M``). ``nb_design`` binary designs are drawn once from a seeded quasi-random sequence and
shared by every image; the model's target probability on each perturbed image is the output.
A cell's score is the HSIC between its variable and the output, with Xplique's kernels:

- input: the binary kernel ``k(a, b) = 1 + (0.5 - (a - b)^2)`` (Xplique ``BinaryEstimator``);
- output: RBF ``exp(-(y_i - y_j)^2 / (2 w^2))`` with ``w`` the median of the outputs themselves
  (Xplique's "median heuristic": ``tfp.stats.percentile(Y, 50)``, not of pairwise distances);
- estimator: ``sum(HKH * HLH) / n`` with ``H = I - 1/n`` (Xplique divides by ``n``, not the
  textbook ``(n - 1)^2``; a per-image constant that does not change the map's ranking).

For binary ``a, b`` the centred input Gram matrix is ``HKH = 2 x_c x_c^T`` (``x_c`` the centred
cell column; the ``1.5 - a - b`` part is removed by centring), so the score is
``2 x_c^T L x_c / n``: one ``[n, n] x [n, d]`` product per image instead of ``d`` centred Gram
matrices. The original repository's Dirac kernel ``1 - (a - b)^2`` gives the same value.

The per-cell scores are upsampled to the input with bicubic interpolation (Xplique:
``cv2.resize(..., INTER_CUBIC)``; it can overshoot slightly below 0 next to strong cells); the
perturbation masks themselves are upsampled with half-pixel nearest neighbour (Xplique:
``tf.image.resize(..., "nearest")``), i.e. whole cells are kept or removed.

Differences from Xplique, on purpose: Xplique's default sampler is TensorFlow's *unscrambled*
Sobol sequence rounded to {0, 1} (no seed); here ``"sobol"`` is scipy's scrambled Sobol sequence
and ``"lhs"`` a Latin hypercube (the paper's sampler), both seeded and rounded to {0, 1}. The
RBF bandwidth is floored at 1e-6 where Xplique would divide by zero (median output exactly 0).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reproduce.checks import choice_error, positive_int
from reproduce.attributors.base import Attributor
from reproduce.attributors.cam import check_upsample, upsample_maps
from reproduce.attributors.perturbation import check_output, masked_target_outputs
from reproduce.attributors.registry import register
from reproduce.errors import InputError
from reproduce.models import FillMasker

SAMPLERS = ("sobol", "lhs")


def binary_design(num_cells: int, nb_design: int, sampler: str = "sobol", seed: int = 0) -> torch.Tensor:
    """``[nb_design, num_cells]`` designs in {0, 1}: a seeded quasi-random sample rounded."""
    from scipy.stats import qmc

    if sampler == "sobol":
        engine = qmc.Sobol(num_cells, scramble=True, seed=seed)
        with warnings.catch_warnings():  # balance is only guaranteed for powers of 2; Xplique uses 500
            warnings.filterwarnings("ignore", message=".*balance properties of Sobol.*")
            points = engine.random(nb_design)
    elif sampler == "lhs":
        points = qmc.LatinHypercube(num_cells, seed=seed).random(nb_design)
    else:
        raise choice_error("sampler", sampler, SAMPLERS, error=InputError)
    return torch.from_numpy(np.round(points).astype(np.float32))


def hsic_binary(design: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """HSIC of each binary variable with the output, Xplique's ``BinaryEstimator`` (RBF output).

    Args:
        design: ``[n, d]`` binary designs (shared by the images).
        outputs: ``[B, n]`` model outputs, one row per image.
    Returns:
        ``[B, d]`` scores ``2 x_c^T L x_c / n`` (see the module docstring).
    """
    n = design.shape[0]
    y = outputs.float()
    width = torch.quantile(y, 0.5, dim=1).abs().clamp_min(1e-6)  # linear interpolation, as tfp
    gram = torch.exp(-((y[:, :, None] - y[:, None, :]) ** 2) / (2 * width[:, None, None] ** 2))  # [B, n, n]
    centred = design.float() - design.float().mean(dim=0)
    scores = 2.0 * torch.einsum("id,bij,jd->bd", centred, gram, centred) / n
    return scores.to(outputs.dtype)


@register("hsic")
class HSICAttribution(Attributor):
    """HSIC-attribution map (see the module docstring for the estimator and its conventions).

    Args:
        grid_size: cells per side (Xplique default 8; SMDL's VGG-Face2 run used 7).
        nb_design: number of perturbed images per input (Xplique default 500).
        sampler: ``"sobol"`` (scrambled Sobol, Xplique's default family) or ``"lhs"`` (the
            paper's Latin hypercube); both rounded to {0, 1}.
        seed: seed of the sampler; the same designs serve every image.
        fill: value of a removed cell (``"mean"`` = 0 in normalised space = Xplique inpainting).
        output: ``"probability"`` (default; Xplique reads a softmax model's output) or ``"logit"``.
        upsample: ``"bicubic"`` (Xplique), ``"bilinear"`` or ``"nearest"`` from cells to pixels.
        batch_size: rows (perturbed images) per forward pass.
        normalize: see :class:`Attributor`.
    """

    smoke_options = {"nb_design": 32, "grid_size": 4}

    def __init__(
        self,
        model: nn.Module,
        grid_size: int = 8,
        nb_design: int = 500,
        sampler: str = "sobol",
        seed: int = 0,
        fill: str | float | torch.Tensor = "mean",
        output: str = "probability",
        upsample: str = "bicubic",
        batch_size: int = 256,
        normalize: str | None = None,
    ):
        super().__init__(model, normalize=normalize)
        self.grid_size = positive_int("grid_size", grid_size, error=InputError)
        self.nb_design = positive_int("nb_design", nb_design, error=InputError)
        if self.nb_design < 2:
            raise InputError("nb_design must be at least 2 to estimate a dependence.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(f"seed must be an integer, got {seed!r}.")
        self.sampler = sampler
        self.seed = seed
        self.output = check_output(output)
        self.upsample = check_upsample(upsample)
        self.batch_size = positive_int("batch_size", batch_size, error=InputError)
        self.masker = FillMasker(model, fill=fill, max_batch=self.batch_size)
        self.design = binary_design(self.grid_size**2, self.nb_design, sampler, seed)  # [n, g*g], row-major cells

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        g = self.grid_size
        if height < g or width < g:
            raise InputError(f"grid_size {g} is larger than the {height}x{width} input; use a smaller grid.")
        design = self.design.to(device=x.device, dtype=x.dtype)
        cells = design.view(-1, 1, g, g)

        def keep_masks(start: int, stop: int) -> torch.Tensor:
            return F.interpolate(cells[start:stop], size=(height, width), mode="nearest-exact").squeeze(1)

        outputs = torch.empty(b, self.nb_design, device=x.device, dtype=x.dtype)
        chunks = masked_target_outputs(self.masker, x, target, self.nb_design, keep_masks, self.batch_size, self.output)
        for part, _, scores in chunks:
            outputs[:, part] = scores
        scores = hsic_binary(design, outputs).view(b, g, g)
        return upsample_maps(scores, (height, width), self.upsample)
