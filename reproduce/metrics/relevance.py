"""Localisation against ground-truth masks in the CLEVR-XAI style (Arras, Osman & Samek, 2022):
``relevance_mass_accuracy`` and ``relevance_rank_accuracy``, as Quantus computes them (equal in a
test). Empty masks are an error naming the samples (never skipped).

- **Relevance mass accuracy** ``sum(r * mask) / sum(r)``: the share of the map's relevance inside
  the mask. ``relevance`` picks ``r``: ``"positive"`` (default, ``relu(map)``: mass is positive
  evidence; values in [0, 1]; this equals the energy pointing game's fraction, so the two columns
  agree by construction), ``"absolute"`` (``|map|``) or ``"signed"`` (the map as it is, Quantus'
  computation, after its division by ``max|map|`` which cancels in the ratio; negative values can
  push it outside [0, 1]). A map with no relevance (``sum(r) = 0``) scores 0, counted in
  ``no_relevance``.
- **Relevance rank accuracy**: with ``K`` = the mask's pixel count, the fraction of the ``K``
  top-ranked pixels that lie in the mask (1 = the top-K pixels are exactly the mask). Pixels are
  ranked by ``r`` (default ``"signed"``: the map's own order, as Quantus); ties keep raster order
  (:func:`reproduce.metrics.perturbation_curves.rank_descending`; Quantus' unstable ``argsort``
  has no defined tie order).

Both are higher-is-better and need the masks only (no model).
"""

from __future__ import annotations

import torch

from reproduce.checks import check_choice
from reproduce.metrics.base import MASKS, AttributionBatch, AttributionMetric, ones
from reproduce.metrics.perturbation_curves import rank_descending
from reproduce.metrics.pxap import check_nonempty_masks
from reproduce.metrics.registry import register_metric

RELEVANCES = ("positive", "absolute", "signed")


def relevance_of(maps: torch.Tensor, how: str) -> torch.Tensor:
    check_choice("relevance", how, RELEVANCES)
    m = maps.double().flatten(1)
    return m.clamp_min(0) if how == "positive" else m.abs() if how == "absolute" else m


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor, relevance: str = "positive") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mass accuracy ``[B]`` and whether the map has any relevance."""
    r = relevance_of(maps, relevance)
    total = r.sum(1)
    inside = (r * masks.flatten(1)).sum(1)
    has = total != 0
    return torch.where(has, inside / torch.where(has, total, torch.ones_like(total)), torch.zeros_like(total)), has


def relevance_rank(maps: torch.Tensor, masks: torch.Tensor, relevance: str = "signed") -> torch.Tensor:
    """Per-image rank accuracy ``[B]``: share of the top-``|mask|`` pixels inside the mask."""
    ranks = rank_descending(relevance_of(maps, relevance))
    m = masks.flatten(1)
    k = m.sum(1, keepdim=True)
    top = ranks < k
    return (top & m).sum(1).double() / k[:, 0].double()


@register_metric("relevance_mass_accuracy")
class RelevanceMassAccuracy(AttributionMetric):
    """Mean share of the map's relevance inside the ground-truth mask (higher is better)."""

    requires = (MASKS,)
    directions = {"mass_accuracy": "higher"}
    diagnostics = ("no_relevance",)

    def __init__(self, model=None, *, relevance: str = "positive"):
        super().__init__(model)
        self.relevance = check_choice("relevance", relevance, RELEVANCES)
        self._record(relevance=relevance, definition="sum(r * mask) / sum(r); no relevance -> 0")
        self._add_sum("total")
        self._add_sum("no_relevance")
        self._add_sum("count")
        self._track_per_image("total", "no_relevance", "count")  # 24 bytes per image

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        check_nonempty_masks(batch)
        values, has = relevance_mass(batch.maps, batch.masks, self.relevance)
        self._accumulate_rows({"total": values.double(), "no_relevance": (~has).double(), "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        return {"mass_accuracy": self.total / self._require_samples(self.count), "no_relevance": self.no_relevance.clone()}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"mass_accuracy": sums["total"] / sums["count"], "no_relevance": sums["no_relevance"]}


@register_metric("relevance_rank_accuracy")
class RelevanceRankAccuracy(AttributionMetric):
    """Mean share of the top-|mask| ranked pixels inside the ground-truth mask (higher is better)."""

    requires = (MASKS,)
    directions = {"rank_accuracy": "higher"}

    def __init__(self, model=None, *, relevance: str = "signed"):
        super().__init__(model)
        self.relevance = check_choice("relevance", relevance, RELEVANCES)
        self._record(relevance=relevance, definition="top-K pixels by r inside the mask / K, K = |mask|",
                     ties="raster order (stable sort)")
        self._add_sum("total")
        self._add_sum("count")
        self._track_per_image("total", "count")  # 16 bytes per image

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        check_nonempty_masks(batch)
        self._accumulate_rows({"total": relevance_rank(batch.maps, batch.masks, self.relevance).double(),
                               "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        return {"rank_accuracy": self.total / self._require_samples(self.count)}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"rank_accuracy": sums["total"] / sums["count"]}
