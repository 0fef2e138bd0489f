"""ROAD: RemOve And Debias (Rong et al., ICML'22), most- and least-relevant-first removal with
noisy linear imputation; equal to ``pytorch_grad_cam.metrics.road`` on the same model, map and
(zero) noise in a test.

For each fraction ``p`` of ``percentages``, the ``round(p * H * W)`` highest-ranked pixels (MoRF) or
lowest-ranked pixels (LeRF) are removed (ranks: :func:`~reproduce.metrics.perturbation_curves.
rank_descending`, ties in raster order) and *imputed*: every removed pixel takes the weighted mean of
its 8 neighbours (weights 1/6 for the 4 edge neighbours, 1/12 for the diagonals, renormalised at the
image border), known neighbours fixed, which is one sparse linear system per image, channel and
fraction (solved exactly, on the CPU, with scipy's sparse LU as the reference code does), plus
Gaussian noise of standard deviation ``noise`` on the imputed pixels (0.01 in the model's normalised
space, the paper's and pytorch-grad-cam's default; LATEC uses 0.1). Imputation, unlike a constant
fill, leaks no "where was the mask" information to the model: that is ROAD's point.

A region of removed pixels with no known neighbour (``p = 1``: everything removed) has no data to
interpolate: a ``1e-8`` diagonal term makes the system regular and such regions become 0 (the mean
colour) plus noise. The noise of image ``i`` is drawn from a generator seeded by (seed, dataset
index), per fraction in a fixed order, so it does not depend on batch-mates.

Outputs: curves ``morf`` and ``lerf`` (mean score at each fraction, x = the fractions), scalars
``morf_mean`` (lower is better), ``lerf_mean`` (higher is better), ``combined`` =
``(lerf_mean - morf_mean) / 2`` (pytorch-grad-cam's ``ROADCombined``; higher is better) and the
clean score ``clean`` (diagnostic). The score is the accuracy on the labels (Rong et al.), the
softmax probability or the logit of the explained class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.sparse import coo_matrix, diags
from scipy.sparse.linalg import spsolve
from torch import nn

from reproduce.checks import check_choice
from reproduce.errors import ConfigError
from reproduce.metrics.base import AttributionBatch, AttributionMetric, check_finite, ones
from reproduce.metrics.perturbation_curves import SCORES, rank_descending, target_scores
from reproduce.metrics.registry import register_metric
from reproduce.metrics.sample_rng import sample_seed
from reproduce.models import forward_rows, inference_state

NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
REGULARISATION = 1e-8
ORDERS = ("morf", "lerf")


def linear_impute(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Values ``[n, C]`` of the removed pixels (``keep == False``, raster order) of ``image``
    ``[C, H, W]`` by the neighbour-mean system (see the module docstring; no noise)."""
    c, h, w = image.shape
    known = keep.ravel()
    unknown = np.flatnonzero(~known)
    n = unknown.size
    if n == 0:
        return np.zeros((0, c))
    variable = np.full(h * w, -1)
    variable[unknown] = np.arange(n)
    values = image.reshape(c, -1)
    r0, c0 = unknown // w, unknown % w
    rows, cols, weights = [], [], []
    diagonal = np.full(n, REGULARISATION)
    rhs = np.zeros((n, c))
    for (dy, dx), weight in NEIGHBOURS:
        r, q = r0 + dy, c0 + dx
        inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
        ids, neighbour = np.flatnonzero(inside), (r * w + q)[inside]
        diagonal[ids] += weight
        fixed = known[neighbour]
        rhs[ids[fixed]] += weight * values[:, neighbour[fixed]].T
        rows.append(ids[~fixed])
        cols.append(variable[neighbour[~fixed]])
        weights.append(np.full(int((~fixed).sum()), weight))
    system = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    solution = spsolve((diags(diagonal) - system).tocsc(), rhs)
    return solution.reshape(n, c)


def removal_keep(ranks: torch.Tensor, fraction: float, order: str) -> torch.Tensor:
    """Keep masks ``[B, N]``: MoRF hides the ``round(p N)`` top ranks, LeRF the bottom ones."""
    n = ranks.shape[1]
    k = int(round(fraction * n))
    return ranks >= k if order == "morf" else ranks < n - k


def check_percentages(percentages: Sequence[float]) -> list[float]:
    values = [percentages] if isinstance(percentages, (int, float)) else list(percentages)
    bad = [p for p in values if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1]
    if not values or bad:
        raise ConfigError(
            f"percentages must be fractions of pixels removed in (0, 1] (e.g. [0.1, 0.2, ..., 0.9]), got {percentages!r}."
        )
    if sorted(set(values)) != values:
        raise ConfigError(f"percentages must be increasing and distinct, got {percentages!r}.")
    return [float(p) for p in values]


def road_images(images: torch.Tensor, maps: torch.Tensor, indices: torch.Tensor, percentages: list[float],
                noise: float, seed: int) -> torch.Tensor:
    """Imputed images ``[B, 2 * P, C, H, W]``: MoRF at each fraction, then LeRF at each fraction."""
    b, c, h, w = images.shape
    ranks = rank_descending(maps.flatten(1)).cpu()
    pixels = images.detach().double().cpu().numpy()
    out = images.detach().cpu().double()[:, None].repeat(1, 2 * len(percentages), 1, 1, 1)
    for i in range(b):
        g = torch.Generator().manual_seed(sample_seed(seed, int(indices[i])))
        for j, (order, p) in enumerate((o, p) for o in ORDERS for p in percentages):
            keep = removal_keep(ranks[i:i + 1], p, order)[0].numpy()
            filled = torch.from_numpy(linear_impute(pixels[i], keep.reshape(h, w)))  # [n, C]
            filled = filled + noise * torch.randn(filled.shape, generator=g, dtype=torch.float64)
            flat = out[i, j].view(c, h * w)
            flat[:, torch.from_numpy(~keep)] = filled.T
    return out.to(device=images.device, dtype=images.dtype)


@register_metric("road")
class ROAD(AttributionMetric):
    """ROAD MoRF / LeRF curves with noisy linear imputation (see the module docstring).

    Args:
        percentages: fractions of pixels removed, each in (0, 1], increasing (default 0.1..0.9).
        noise: standard deviation of the imputation noise in the normalised space.
        score: ``accuracy`` (on the labels, Rong et al.), ``softmax`` or ``logit`` of the explained class.
        seed: selects the imputation noise (per dataset index).
        max_batch: imputed images per forward pass.
    """

    needs_model = True
    directions = {"morf_mean": "lower", "lerf_mean": "higher", "combined": "higher"}
    diagnostics = ("clean",)

    def __init__(self, model: nn.Module | None = None, *, percentages: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                 noise: float = 0.01, score: str = "accuracy", seed: int = 0, max_batch: int = 128):
        super().__init__(model)
        self.percentages = check_percentages(percentages)
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
            raise ConfigError(f"noise must be a number >= 0 (0.01 as Rong et al.), got {noise!r}.")
        self.noise = float(noise)
        self.score = check_choice("score", score, SCORES)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}.")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch must be a positive integer, got {max_batch!r}.")
        self.seed, self.max_batch = seed, max_batch
        self._record(percentages=self.percentages, noise=self.noise, score=score, seed=seed,
                     imputation="noisy linear (8-neighbour weights 1/6, 1/12), sparse LU on the CPU",
                     removed="round(p * H * W) pixels; ties in raster order", space="model's normalised input space")
        p = len(self.percentages)
        self._add_sum("morf_sum", (p,))
        self._add_sum("lerf_sum", (p,))
        self._add_sum("clean_sum")
        self._add_sum("count")
        self._track_per_image("morf_sum", "lerf_sum", "clean_sum", "count")  # 8 x (2 P + 2) bytes: 160 at P = 9

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        p = len(self.percentages)
        imputed = road_images(batch.images, batch.maps, batch.indices, self.percentages, self.noise, self.seed)
        flat = torch.cat([batch.images[:, None], imputed], 1).flatten(0, 1)
        with inference_state(self.model), torch.no_grad():
            step = forward_rows(self.max_batch, flat)  # capped on a CPU, as every masked forward
            logits = torch.cat([self.model(flat[s:s + step]) for s in range(0, flat.shape[0], step)])
        logits = logits.view(batch.size, 2 * p + 1, -1)
        check_finite(logits, batch.indices, "Model outputs on ROAD-imputed images", "check the model on these samples")
        classes = batch.labels if self.score == "accuracy" else batch.targets
        scores = target_scores(logits, classes, self.score).double()
        self._accumulate_rows({"clean_sum": scores[:, 0], "morf_sum": scores[:, 1:p + 1], "lerf_sum": scores[:, p + 1:],
                               "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        morf, lerf = self.morf_sum / n, self.lerf_sum / n
        x = torch.tensor(self.percentages, dtype=torch.float64, device=morf.device)
        return {"morf": morf, "morf_x": x, "lerf": lerf, "lerf_x": x.clone(), "morf_mean": morf.mean(),
                "lerf_mean": lerf.mean(), "combined": (lerf.mean() - morf.mean()) / 2, "clean": self.clean_sum / n}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = sums["count"]
        morf, lerf = (sums[k] / n[:, None] for k in ("morf_sum", "lerf_sum"))
        return {"morf_mean": morf.mean(1), "lerf_mean": lerf.mean(1), "combined": (lerf.mean(1) - morf.mean(1)) / 2,
                "clean": sums["clean_sum"] / n}
