"""Pixel average precision (PxAP, Choe et al. CVPR 2020) in two variants, from pooled histograms.

Map values at ground-truth-positive and -negative pixels are histogrammed over the whole test set
(micro-average, so the state is two sum-reducible histograms). Threshold ``theta`` predicts
"positive" for pixels with value ``>= theta``; TP/FP are reverse cumulative sums.

``variant="comet"`` (COMET's ``evaluation_explain.MaskEvaluator``, reproduced arithmetic and all):

- thresholds ``i/bins`` from the cut-off: ``bins=20`` (cut-off 0.05) for COMET's own masks,
  ``bins=40`` (cut-off 0.025) for the baselines; bin edges ``[cutoff, ..., 1 - 1/bins, 1]``, the
  last bin closed (``np.histogram``);
- pixels below the cut-off are **dropped**: they count neither as positives nor as negatives, so
  recall is relative to the positives that scored ``>= cutoff`` and the last recall is 1;
- a synthetic first point ``TP=1, FP=0, FN=10000`` (precision 1, recall 1/10001) is prepended;
- ``PxAP = 100 * sum_k precision_k * (recall_k - recall_{k-1})`` over points with ``TP+FP > 0``.

  Edge cases this implies: the ground-truth mask used as the map scores
  ``100 * (1 - 1/10001) = 99.990001`` (the synthetic point's recall is subtracted once), unless the
  top bin is empty, in which case the first non-empty point's recall difference is taken from 0
  and a perfect map scores exactly 100. A set where no positive pixel reaches the cut-off is
  undefined (the code raises; so do we).

``variant="standard"`` (bins from 0, every pixel counted): thresholds ``i/bins``, ``i = 0..bins-1``
(default ``bins=100``, the WSOL default interval 0.01); pixels below a non-zero ``cutoff`` count as
predicted negative at every threshold; ``PxAP = 100 * sum_k precision_k (recall_k - recall_{k-1})``
with ``recall_{-1} = 0``. A perfect map scores 100 and a constant map the positive fraction.
(WSOL's own code also drops the lowest threshold's term, which would give a constant map 0; we
keep it.)

Maps must lie in [0, 1]: ``map_normalization="minmax"`` (default) rescales each map (a constant map
becomes all zeros), ``"none"`` takes them as they are (COMET's sigmoid masks) and rejects values
outside [0, 1] as COMET's ``check_scoremap_validity`` does.
"""

from __future__ import annotations

import torch

from reproduce.errors import ConfigError, InputError
from reproduce.checks import check_choice, choice_error
from reproduce.metrics.base import MASKS, AttributionBatch, AttributionMetric
from reproduce.metrics.registry import register_metric

VARIANTS = ("comet", "standard")
NORMALIZATIONS = ("minmax", "none")
SYNTHETIC_FN = 10000.0  # COMET's prepended point: TP = 1, FP = 0, FN = 10000


def normalize_01(maps: torch.Tensor, how: str, indices: torch.Tensor | None = None) -> torch.Tensor:
    """Per-map min-max to [0, 1] (constant maps -> 0), or a range check for ``"none"``."""
    maps = maps.double()
    if how == "minmax":
        flat = maps.flatten(1)
        lo = flat.min(1, keepdim=True).values
        span = flat.max(1, keepdim=True).values - lo
        safe = torch.where(span > 0, span, torch.ones_like(span))
        return torch.where(span > 0, (flat - lo) / safe, torch.zeros_like(flat)).view_as(maps)
    if how == "none":
        bad = ((maps < 0) | (maps > 1)).flatten(1).any(1)
        if bool(bad.any()):
            rows = bad.nonzero().flatten()
            names = (indices[rows] if indices is not None else rows).tolist()
            raise InputError(
                f"maps of samples {names[:10]} leave [0, 1] but map_normalization='none'; use "
                "map_normalization='minmax' or maps already in [0, 1] (e.g. sigmoid masks)."
            )
        return maps
    raise choice_error("map_normalization", how, NORMALIZATIONS)


def pxap_edges(bins: int, cutoff: float, device=None) -> torch.Tensor:
    """Ascending bin edges: the cut-off, every ``i/bins`` above it, and 1.0."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"bins must be a positive integer (20 for COMET, 40 for its baselines), got {bins!r}.")
    if not 0 <= cutoff < 1:
        raise ConfigError(f"cutoff must lie in [0, 1), got {cutoff!r}.")
    grid = [i / bins for i in range(1, bins) if i / bins > cutoff + 1e-12]
    return torch.tensor([float(cutoff), *grid, 1.0], dtype=torch.float64, device=device)


def score_histograms(maps01: torch.Tensor, masks: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Counts ``[2, K + 1]``: row 0 GT-positive, row 1 GT-negative pixels; column 0 below the
    first edge, column ``1 + i`` bin ``[edges[i], edges[i+1])`` (the last bin closed)."""
    k = edges.numel() - 1
    values = maps01.double().flatten()
    idx = torch.bucketize(values, edges.to(values.device), right=True) - 1  # -1 below, k at exactly 1.0
    idx = idx.clamp(max=k - 1) + 1
    negative = (~masks.bool()).flatten().long()
    flat = torch.bincount(idx + negative * (k + 1), minlength=2 * (k + 1))
    return flat.view(2, k + 1).double()


def per_image_histograms(maps01: torch.Tensor, masks: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """:func:`~reproduce.metrics.pxap.score_histograms` of each image alone: ``[B, 2, K + 1]`` (their
    sum over the batch is the batch's histogram)."""
    b, k = maps01.shape[0], edges.numel() - 1
    idx = torch.bucketize(maps01.double().flatten(1), edges.to(maps01.device), right=True) - 1
    idx = idx.clamp(max=k - 1) + 1 + (~masks.bool()).flatten(1).long() * (k + 1)
    idx = idx + torch.arange(b, device=idx.device)[:, None] * 2 * (k + 1)
    return torch.bincount(idx.flatten(), minlength=b * 2 * (k + 1)).view(b, 2, k + 1).double()


def pxap_batch(hist: torch.Tensor, variant: str) -> torch.Tensor:
    """:func:`~reproduce.metrics.pxap.pxap_from_histograms`'s PxAP for a batch of pooled histograms
    ``[R, 2, K + 1]`` -> ``[R]`` (NaN where undefined: no positive pixel), e.g. bootstrap resamples."""
    pos, neg = hist[:, 0, 1:], hist[:, 1, 1:]
    tp, fp = pos.flip(-1).cumsum(-1), neg.flip(-1).cumsum(-1)
    if variant == "comet":
        total = pos.sum(-1)
        one = tp.new_ones(tp.shape[0], 1)
        fn = torch.cat([one * SYNTHETIC_FN, total[:, None] - tp], -1)
        tp, fp = torch.cat([one, tp], -1), torch.cat([one * 0, fp], -1)
        defined = (tp + fp) != 0
        precision = tp / torch.where(defined, tp + fp, torch.ones_like(tp))
        terms = precision[:, 1:] * torch.diff(tp / (tp + fn), dim=-1)
        ap = torch.where(defined[:, 1:], terms, torch.zeros_like(terms)).sum(-1)
    else:
        total = pos.sum(-1) + hist[:, 0, 0]
        defined = (tp + fp) != 0
        precision = tp / torch.where(defined, tp + fp, torch.ones_like(tp))
        recall = tp / torch.where(total > 0, total, torch.ones_like(total))[:, None]
        previous = torch.cat([recall.new_zeros(recall.shape[0], 1), recall[:, :-1]], -1)
        ap = torch.where(defined, precision * (recall - previous), torch.zeros_like(recall)).sum(-1)
    return torch.where(total > 0, 100 * ap, torch.full_like(ap, float("nan")))


def pxap_from_histograms(hist: torch.Tensor, variant: str = "standard") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(pxap, precision, recall)`` from pooled :func:`score_histograms`; curves over defined points."""
    check_choice("variant", variant, VARIANTS)
    pos, neg = hist[0, 1:], hist[1, 1:]
    tp = pos.flip(0).cumsum(0)  # thresholds from the highest down
    fp = neg.flip(0).cumsum(0)
    if variant == "comet":
        total = pos.sum()
        if total <= 0:
            raise InputError(
                "No ground-truth-positive pixel scored at or above the cut-off over the whole set, so "
                "the code-faithful PxAP is undefined (COMET's evaluator raises here too); lower the "
                "cutoff or check that the maps are not constant."
            )
        fn = total - tp
        one = tp.new_ones(1)
        tp = torch.cat([one, tp])
        fp = torch.cat([one * 0, fp])
        fn = torch.cat([one * SYNTHETIC_FN, fn])
        defined = (tp + fp) != 0
        precision = tp / torch.where(defined, tp + fp, one)
        recall = tp / (tp + fn)
        terms = precision[1:] * torch.diff(recall)
        ap = terms[defined[1:]].sum()
    else:
        total = pos.sum() + hist[0, 0]
        if total <= 0:
            raise InputError("No ground-truth-positive pixel in the whole set: PxAP is undefined.")
        defined = (tp + fp) != 0
        precision = tp / torch.where(defined, tp + fp, torch.ones_like(tp))
        recall = tp / total
        previous = torch.cat([recall.new_zeros(1), recall[:-1]])
        ap = (precision * (recall - previous))[defined].sum()
    return 100 * ap, precision[defined], recall[defined]


def pxap(maps: torch.Tensor, masks: torch.Tensor, *, variant: str = "standard", bins: int | None = None,
         cutoff: float | None = None, map_normalization: str = "minmax") -> torch.Tensor:
    """PxAP of maps ``[B, H, W]`` against boolean masks ``[B, H, W]``, pooled over the batch."""
    bins, cutoff = default_grid(variant, bins, cutoff)
    edges = pxap_edges(bins, cutoff, device=maps.device)
    hist = score_histograms(normalize_01(maps, map_normalization), masks, edges)
    return pxap_from_histograms(hist, variant)[0]


def default_grid(variant: str, bins: int | None, cutoff: float | None) -> tuple[int, float]:
    check_choice("variant", variant, VARIANTS)
    if bins is None:
        bins = 20 if variant == "comet" else 100
    if cutoff is None:
        cutoff = 1 / bins if variant == "comet" else 0.0
    return bins, float(cutoff)


class HistogramPxAP(AttributionMetric):
    """Shared state and compute of PxAP-style metrics (pooled score histograms).

    Per-image states: each image's own pair of histograms ``hist`` ``[2, K + 1]`` (float64): 8 x 2 x
    (K + 1) bytes, i.e. 336 at COMET's 20 bins, 656 at 40 and 1,616 at the standard 100; the pooled
    PxAP of any set of images is that of the sum of its rows (:func:`pxap_batch` for many sets)."""

    def __init__(self, model=None, *, variant: str, bins: int | None, cutoff: float | None, map_normalization: str):
        super().__init__(model)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.bins, self.cutoff = default_grid(variant, bins, cutoff)
        self.map_normalization = check_choice("map_normalization", map_normalization, NORMALIZATIONS)
        self.register_buffer("edges", pxap_edges(self.bins, self.cutoff), persistent=False)
        self._record(variant=self.variant, bins=self.bins, cutoff=self.cutoff, map_normalization=map_normalization)
        self._add_sum("hist", (2, self.edges.numel()))
        self._track_per_image("hist")

    directions = {"pxap": "higher"}

    def _add_maps(self, maps: torch.Tensor, reference: torch.Tensor, batch: AttributionBatch) -> None:
        maps01 = normalize_01(maps, self.map_normalization, batch.indices)
        self._accumulate_rows({"hist": per_image_histograms(maps01, reference, self.edges)}, batch.indices)

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"pxap": pxap_batch(sums["hist"], self.variant)}

    def _compute(self) -> dict[str, torch.Tensor]:
        self._require_samples(self.hist.sum(), "pixels")
        if self.variant == "comet" and self.hist[0, 1:].sum() <= 0:
            # Undefined (e.g. a constant control map: every pixel below the cut-off). The functional
            # twin raises as COMET's evaluator does; a table cell reports NaN ("—", never best).
            empty = self.hist.new_zeros(0)
            return {"pxap": torch.tensor(float("nan"), dtype=self.hist.dtype), "pr_curve": empty, "pr_curve_x": empty}
        value, precision, recall = pxap_from_histograms(self.hist, self.variant)
        return {"pxap": value, "pr_curve": precision, "pr_curve_x": recall}


@register_metric("pxap")
class PxAP(HistogramPxAP):
    """Pixel average precision of the maps against the ground-truth masks (higher is better)."""

    requires = (MASKS,)

    def __init__(self, model=None, *, variant: str = "standard", bins: int | None = None, cutoff: float | None = None,
                 map_normalization: str = "minmax"):
        super().__init__(model, variant=variant, bins=bins, cutoff=cutoff, map_normalization=map_normalization)

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        check_nonempty_masks(batch)
        self._add_maps(batch.maps, batch.masks, batch)


def check_nonempty_masks(batch: AttributionBatch) -> None:
    """Empty ground truth is a data error: raise naming the samples (no silent skipping)."""
    empty = ~batch.masks.flatten(1).any(1)
    if bool(empty.any()):
        names = batch.names(empty.nonzero().flatten())
        raise InputError(
            f"Ground-truth masks of samples {names[:10]} are empty; localisation is undefined for "
            "them. Drop these samples from the evaluation split or fix their masks."
        )
