"""How concentrated a map is: ``sparseness`` (Gini index; Chalasani et al. 2020) and
``complexity`` (entropy; Bhatt et al. 2020), as Quantus computes them (equal in a test).

Both take ``|map|`` divided by its maximum (Quantus' ``abs=True, normalise_by_max``; an all-zero map
is left as is), flattened over the pixels, per image; mean over images.

- **Sparseness** ``G = sum_i (2 i - n - 1) a_(i) / (n sum_i a_(i))`` over the values sorted
  ascending, after adding ``1e-7`` to every value (Quantus' offset, which makes an all-zero map
  count as uniform, ``G = 0``). 1 = all mass on one pixel, 0 = uniform. Higher is better (a sparser
  explanation is easier to read).
- **Complexity** ``H = -sum_i p_i log(p_i + 1e-12)`` with ``p = a / sum(a)``: the Shannon entropy
  (nats) of the map as a distribution; 0 = one pixel, ``log n`` = uniform. Lower is better. An
  all-zero map is no distribution (Quantus returns NaN): it counts as uniform, ``log n``, as the
  Gini offset makes it count for sparseness, and the number of such maps is the ``zero_maps``
  diagnostic of both metrics.

Neither needs the model or ground truth: they describe the maps only, which is why a constant or
edge control map is the useful reference row.
"""

from __future__ import annotations

import torch

from reproduce.metrics.base import AttributionBatch, AttributionMetric, ones
from reproduce.metrics.registry import register_metric

GINI_OFFSET = 1e-7
ENTROPY_EPS = 1e-12


def _abs_max_normalised(maps: torch.Tensor) -> torch.Tensor:
    a = maps.double().abs().flatten(1)
    top = a.max(1, keepdim=True).values
    return a / torch.where(top > 0, top, torch.ones_like(top))


def gini_sparseness(maps: torch.Tensor) -> torch.Tensor:
    """Per-image Gini index ``[B]`` of ``|maps|`` ``[B, H, W]`` (see the module docstring)."""
    a = torch.sort(_abs_max_normalised(maps) + GINI_OFFSET, dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    return ((2 * i - n - 1) * a).sum(1) / (n * a.sum(1))


def entropy_complexity(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image entropy ``[B]`` of ``|maps|`` as a distribution (all-zero maps: ``log n``), and
    which maps are all zero."""
    a = _abs_max_normalised(maps)
    total = a.sum(1, keepdim=True)
    zero = total[:, 0] <= 0
    p = a / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -(p * torch.log(p + ENTROPY_EPS)).sum(1)
    return torch.where(zero, torch.full_like(entropy, float(torch.log(torch.tensor(float(a.shape[1]))))), entropy), zero


@register_metric("sparseness")
class Sparseness(AttributionMetric):
    """Mean Gini index of ``|map|`` (higher = sparser)."""

    directions = {"sparseness": "higher"}
    diagnostics = ("zero_maps",)

    def __init__(self, model=None):
        super().__init__(model)
        self._record(definition="Gini index of |map| / max|map| + 1e-7 (Quantus Sparseness, abs=True, normalise_by_max)")
        self._add_sum("total")
        self._add_sum("zero_maps")
        self._add_sum("count")
        self._track_per_image("total", "zero_maps", "count")  # 24 bytes per image

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        self._accumulate_rows({"total": gini_sparseness(batch.maps).double(),
                               "zero_maps": (batch.maps.flatten(1) == 0).all(1).double(), "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        return {"sparseness": self.total / self._require_samples(self.count), "zero_maps": self.zero_maps.clone()}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"sparseness": sums["total"] / sums["count"], "zero_maps": sums["zero_maps"]}


@register_metric("complexity")
class Complexity(AttributionMetric):
    """Mean entropy (nats) of ``|map|`` as a distribution over pixels (lower = simpler)."""

    directions = {"complexity": "lower"}
    diagnostics = ("zero_maps",)

    def __init__(self, model=None):
        super().__init__(model)
        self._record(definition="entropy -sum p log(p + 1e-12), p = |map| / sum|map| (Quantus Complexity)",
                     unit="nats; log(H*W) for a uniform map", zero_maps="count as uniform (log(H*W))")
        self._add_sum("total")
        self._add_sum("zero_maps")
        self._add_sum("count")
        self._track_per_image("total", "zero_maps", "count")  # 24 bytes per image

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        values, zero = entropy_complexity(batch.maps)
        self._accumulate_rows({"total": values.double(), "zero_maps": zero.double(), "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        return {"complexity": self.total / self._require_samples(self.count), "zero_maps": self.zero_maps.clone()}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"complexity": sums["total"] / sums["count"], "zero_maps": sums["zero_maps"]}
