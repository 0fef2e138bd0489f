"""COMET's robustness: does the map of a perturbed image still find the clean map's region?

The clean map (``batch.maps``) is binarised at its own mean (``map > mean(map)``, COMET's
``reference_mask``); the attributor is re-run (``explain``) on a perturbed image for the same
class (``batch.targets``; COMET re-predicts the class on the perturbed image) and the perturbed map
is scored against that reference with the pooled PxAP of :mod:`reproduce.metrics.pxap` (same
``variant``/``bins``/``cutoff``/``map_normalization`` knobs). Perturbations:

- ``"pixel_drop"``: each pixel kept with probability ``keep_prob`` (0.8 in the code), the same mask
  for all channels, dropped pixels set to 0 in normalised space (the mean colour); drawn per sample
  from ``(seed, dataset index)``, so independent of batch composition;
- ``"bg_shift"``: the background-swapped version of the image (ImageNet-9 ``mixed_next``), passed
  by the runner in ``batch.extra["images_bg_shift"]``.

A deterministic attributor under a zero-strength perturbation (``keep_prob=1``) reproduces its
clean map; its score is then the PxAP of the map against its own mean-binarisation (100 when no
histogram bin holds pixels on both sides of the mean). Higher is better. A map constant over an
image has an empty reference and contributes only negatives.

Per-image states: each image's own pair of histograms (``[2, K + 1]``, 2 x 21 float64 = 336 bytes at
COMET's 20 bins, 656 at 40), so the pooled PxAP of any subset of images is recomputed exactly.
"""

from __future__ import annotations

import torch

from reproduce.errors import ConfigError, InputError
from reproduce.checks import check_choice, check_fraction
from reproduce.metrics.base import EXPLAIN, EXTRA, AttributionBatch, Explain
from reproduce.metrics.pxap import (
    SYNTHETIC_FN,
    HistogramPxAP,
    default_grid,
    normalize_01,
    pxap_edges,
    pxap_from_histograms,
    score_histograms,
)
from reproduce.metrics.registry import register_metric
from reproduce.metrics.sample_rng import uniform

PERTURBATIONS = ("pixel_drop", "bg_shift")


def mean_reference(maps: torch.Tensor) -> torch.Tensor:
    """COMET's reference: ``map > mean(map)`` per image (raw map values)."""
    return maps > maps.flatten(1).mean(1).view(-1, 1, 1)


def drop_pixels(images: torch.Tensor, indices: torch.Tensor, *, keep_prob: float = 0.8, seed: int = 0) -> torch.Tensor:
    """Zero (in normalised space) each pixel with probability ``1 - keep_prob``, all channels alike."""
    b, _, h, w = images.shape
    keep = uniform(indices, seed, (h, w), images.device) < keep_prob
    return images * keep[:, None].to(images.dtype)


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


def robustness_pxap(maps: torch.Tensor, perturbed_maps: torch.Tensor, *, variant: str = "comet", bins: int | None = None,
                    cutoff: float | None = None, map_normalization: str = "minmax") -> torch.Tensor:
    """PxAP of ``perturbed_maps`` against ``maps > mean(maps)``, pooled over the batch."""
    bins, cutoff = default_grid(variant, bins, cutoff)
    edges = pxap_edges(bins, cutoff, device=maps.device)
    hist = score_histograms(normalize_01(perturbed_maps, map_normalization), mean_reference(maps), edges)
    return pxap_from_histograms(hist, variant)[0]


@register_metric("robustness")
class Robustness(HistogramPxAP):
    """PxAP of re-explained perturbed images against the clean map's mean-binarisation (higher is better)."""

    def __init__(self, model=None, *, perturbation: str = "pixel_drop", keep_prob: float = 0.8, seed: int = 0,
                 variant: str = "comet", bins: int | None = None, cutoff: float | None = None,
                 map_normalization: str = "minmax"):
        super().__init__(model, variant=variant, bins=bins, cutoff=cutoff, map_normalization=map_normalization)
        self.perturbation = check_choice("perturbation", perturbation, PERTURBATIONS)
        self.keep_prob = check_fraction("keep_prob", keep_prob)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seed must be an integer, got {seed!r}.")
        self.seed = seed
        self._record(perturbation=perturbation, reference="clean map > its mean", target="batch.targets",
                     keep_prob=self.keep_prob if perturbation == "pixel_drop" else None,
                     seed=seed if perturbation == "pixel_drop" else None)
        self._track_per_image("hist")

    @property
    def requires(self) -> tuple[str, ...]:
        return (EXPLAIN, f"{EXTRA}images_bg_shift") if self.perturbation == "bg_shift" else (EXPLAIN,)

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"pxap": pxap_batch(sums["hist"], self.variant)}

    def _update(self, batch: AttributionBatch, explain: Explain | None = None) -> None:
        if self.perturbation == "pixel_drop":
            perturbed = drop_pixels(batch.images, batch.indices, keep_prob=self.keep_prob, seed=self.seed)
        else:
            perturbed = batch.extra["images_bg_shift"]
            if perturbed.shape != batch.images.shape:
                raise InputError(
                    f"images_bg_shift has shape {tuple(perturbed.shape)}, the images {tuple(batch.images.shape)}; "
                    "the background-shift variant must be preprocessed like the clean images."
                )
        perturbed_maps = self._explain(explain, perturbed, batch.targets, batch)
        maps01 = normalize_01(perturbed_maps, self.map_normalization, batch.indices)
        self._accumulate_rows({"hist": per_image_histograms(maps01, mean_reference(batch.maps), self.edges)}, batch.indices)
