"""Similarity of two maps of the same image, as the sanity checks of Adebayo et al. (NeurIPS'18)
measure it (HOG is left out):

- ``ssim``: SSIM of the two maps after PAIR's grayscale recipe (``|map|``, clipped at its 99th
  percentile, scaled to [0, 1]), scikit-image settings (:mod:`reproduce.metrics.ssim`);
- ``spearman_abs``: Spearman rank correlation of ``|map|`` (ties share their mean rank, as
  ``scipy.stats.spearmanr``), what Quantus' MPRT and RandomLogit compute by default;
- ``spearman_signed``: Spearman rank correlation of the signed maps.

A rank correlation is undefined when a map is constant (zero rank variance). Here two *equal*
maps always score 1 (a constant map that does not change is maximally similar to itself: the
constant control fails every randomisation test, as it should) and a constant map against a
non-constant one scores 0; the number of such images is reported by the metrics as ``undefined``.
"""

from __future__ import annotations

import torch

from reproduce.checks import check_choice
from reproduce.errors import ConfigError
from reproduce.metrics.mu_fidelity import average_ranks
from reproduce.metrics.ssim import grayscale, ssim

SIMILARITIES = ("ssim", "spearman_abs", "spearman_signed")


def spearman(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Spearman rank correlation ``[B]`` of maps ``[B, H, W]`` and whether it is defined
    (see the module docstring for equal and constant maps)."""
    ra = average_ranks(a.double().flatten(1))
    rb = average_ranks(b.double().flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = ra.norm(dim=1) * rb.norm(dim=1)
    defined = denom > 0
    rho = (ra * rb).sum(1) / torch.where(defined, denom, torch.ones_like(denom))
    equal = (a.flatten(1) == b.flatten(1)).all(1)
    rho = torch.where(defined, rho, equal.double())
    return rho.clamp(-1, 1), defined


def map_similarity(a: torch.Tensor, b: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(similarity [B], defined [B])`` of two batches of maps ``[B, H, W]`` (``kind`` in :data:`SIMILARITIES`)."""
    check_choice("similarity", kind, SIMILARITIES)
    if kind == "ssim":
        values = ssim(grayscale(a), grayscale(b), data_range=1.0, sigma=1.5)
        return values, torch.ones_like(values, dtype=torch.bool)
    if kind == "spearman_abs":
        return spearman(a.abs(), b.abs())
    return spearman(a, b)


def check_similarities(similarities) -> tuple[str, ...]:
    kinds = (similarities,) if isinstance(similarities, str) else tuple(similarities)
    if not kinds:
        raise ConfigError(f"similarities must name at least one of {list(SIMILARITIES)}.")
    for kind in kinds:
        check_choice("similarities", kind, SIMILARITIES)
    return kinds
