"""Stability across models trained on different data (the super-pixel paper's metrics).

Both metrics take the other model(s) at construction and re-run the evaluated attributor on them
through ``explain(images, targets, model=other)``; the evaluated model's maps are ``batch.maps``.
The class explained is ``batch.targets`` for every model (the sister code uses the ground-truth
label: run the evaluation with ``target=label`` to match).

- **SSIM stability** (``ssim_stability``): SSIM between the evaluated model's and ``other``'s maps
  of each image (two models trained on disjoint halves of the data), after PAIR's grayscale
  conversion (|map|, clipped at the 99th percentile, scaled to [0, 1]); skimage settings
  ``data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` (see
  :mod:`reproduce.metrics.ssim`). Mean over images, in %. Higher is better.
- **MeGe** (``mege``; Fel et al., WACV 2022): over all pairs of models (evaluated + ``others``)
  that both classify ``x`` correctly, the L2 distance between their maps; MeGe = 1 / (1 + mean
  distance) over all such pairs of the test set, in %. Maps are normalised before the distance:
  ``"minmax"`` (default: each map to [0, 1]; the rebuttal tables do not state the normalisation,
  and [0, 1] maps put MeGe on their scale), ``"l2"`` (unit L2 norm) or ``"none"``. Xplique's MeGe
  uses a Spearman distance instead (``distance="spearman"``: sqrt(1 - |rho|)). Higher is better.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import torch
from torch import nn

from reproduce.errors import ConfigError, InputError
from reproduce.checks import check_choice
from reproduce.metrics.base import EXPLAIN, AttributionBatch, AttributionMetric, Explain, describe_model
from reproduce.metrics.mu_fidelity import average_ranks
from reproduce.metrics.pxap import normalize_01
from reproduce.metrics.registry import register_metric
from reproduce.metrics.ssim import grayscale, ssim
from reproduce.models import inference_state

MEGE_NORMALIZATIONS = ("minmax", "l2", "none")
DISTANCES = ("l2", "spearman")


def ssim_stability(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM ``[B]`` of the grayscale-converted maps of two models."""
    return ssim(grayscale(maps_a), grayscale(maps_b), data_range=1.0, sigma=1.5)


def normalize_for_distance(maps: torch.Tensor, how: str) -> torch.Tensor:
    check_choice("map_normalization", how, MEGE_NORMALIZATIONS)
    if how == "minmax":
        return normalize_01(maps, "minmax")
    flat = maps.double().flatten(1)
    if how == "l2":
        norm = flat.norm(dim=1, keepdim=True)
        flat = flat / torch.where(norm > 0, norm, torch.ones_like(norm))
    return flat.view_as(maps)


def map_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "l2", normalization: str = "minmax") -> torch.Tensor:
    """Per-image distance ``[B]`` between two models' maps."""
    check_choice("distance", distance, DISTANCES)
    if distance == "spearman":
        ra, rb = average_ranks(a.double().flatten(1)), average_ranks(b.double().flatten(1))
        ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
        denom = ra.norm(dim=1) * rb.norm(dim=1)
        rho = torch.where(denom > 0, (ra * rb).sum(1) / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(denom))
        return (1 - rho.abs()).clamp_min(0).sqrt()
    na, nb = normalize_for_distance(a, normalization), normalize_for_distance(b, normalization)
    return (na - nb).flatten(1).norm(dim=1)


def mege_pairs(maps: Sequence[torch.Tensor], correct: torch.Tensor, distance: str = "l2",
               normalization: str = "minmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of distances over model pairs that both classify each image correctly.

    ``maps``: one ``[B, H, W]`` per model; ``correct``: ``[models, B]`` bool.
    """
    total = torch.zeros((), dtype=torch.float64, device=correct.device)
    count = torch.zeros((), dtype=torch.float64, device=correct.device)
    for i, j in combinations(range(len(maps)), 2):
        both = correct[i] & correct[j]
        if bool(both.any()):
            d = map_distance(maps[i][both], maps[j][both], distance, normalization)
            total = total + d.sum()
            count = count + both.sum()
    return total, count


def _as_model_list(others, name: str) -> list[nn.Module]:
    models = [others] if isinstance(others, nn.Module) else list(others or [])
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise ConfigError(f"{name} must be a model (or a list of models) trained on other data, got {others!r}.")
    return models


@register_metric("ssim_stability")
class SSIMStability(AttributionMetric):
    """Mean SSIM (%) between the maps of the evaluated model and a model trained on other data."""

    requires = (EXPLAIN,)
    directions = {"ssim": "higher"}

    def __init__(self, model=None, *, other: nn.Module | None = None):
        super().__init__(model)
        self._others = _as_model_list(other, "other")[:1]
        self._record(other=describe_model(self._others[0]), grayscale="|map|, clip at p99, scale to [0, 1]",
                     ssim="data_range=1, gaussian sigma=1.5, population covariance")
        self._add_sum("ssim_sum")
        self._add_sum("count")

    def _update(self, batch: AttributionBatch, explain: Explain | None = None) -> None:
        other_maps = self._explain(explain, batch.images, batch.targets, batch, model=self._others[0])
        values = ssim_stability(batch.maps, other_maps)
        self._accumulate("ssim_sum", values.sum())
        self._accumulate("count", torch.tensor(float(batch.size)))

    def _compute(self) -> dict[str, torch.Tensor]:
        return {"ssim": 100 * self.ssim_sum / self._require_samples(self.count)}


@register_metric("mege")
class MeGe(AttributionMetric):
    """MeGe (%): 1 / (1 + mean map distance) over model pairs that classify an image correctly."""

    needs_model = True
    requires = (EXPLAIN,)
    directions = {"mege": "higher"}
    diagnostics = ("pairs",)

    def __init__(self, model: nn.Module | None = None, *, others: Sequence[nn.Module] | nn.Module | None = None,
                 distance: str = "l2", map_normalization: str = "minmax"):
        super().__init__(model)
        self._others = _as_model_list(others, "others")
        self.distance = check_choice("distance", distance, DISTANCES)
        self.map_normalization = check_choice("map_normalization", map_normalization, MEGE_NORMALIZATIONS)
        self._record(others=[describe_model(m) for m in self._others], distance=distance,
                     map_normalization=map_normalization if distance == "l2" else None,
                     pairs="both models correct (argmax == label)")
        self._add_sum("distance_sum")
        self._add_sum("pairs")

    def _update(self, batch: AttributionBatch, explain: Explain | None = None) -> None:
        models = [self.model, *self._others]
        maps = [batch.maps] + [self._explain(explain, batch.images, batch.targets, batch, model=m) for m in self._others]
        correct = []
        for m in models:
            with inference_state(m), torch.no_grad():
                correct.append(m(batch.images).argmax(-1) == batch.labels)
        total, count = mege_pairs(maps, torch.stack(correct), self.distance, self.map_normalization)
        self._accumulate("distance_sum", total)
        self._accumulate("pairs", count)

    def _compute(self) -> dict[str, torch.Tensor]:
        pairs = float(self.pairs)
        if pairs <= 0:
            raise InputError(
                "MeGe is undefined: no image was classified correctly by two of the models (or update() "
                "was never called); evaluate more images or better-trained models."
            )
        return {"mege": 100 / (1 + self.distance_sum / pairs), "pairs": self.pairs.clone()}
