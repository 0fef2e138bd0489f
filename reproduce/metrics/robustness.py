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

Per-image states: each image's own pair of histograms (:class:`~reproduce.metrics.pxap.HistogramPxAP`),
so the pooled PxAP of any subset of images is recomputed exactly.
"""

from __future__ import annotations

import torch

from reproduce.errors import ConfigError, InputError
from reproduce.checks import check_choice, check_fraction
from reproduce.metrics.base import EXPLAIN, EXTRA, AttributionBatch, Explain
from reproduce.metrics.pxap import (
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

    @property
    def requires(self) -> tuple[str, ...]:
        return (EXPLAIN, f"{EXTRA}images_bg_shift") if self.perturbation == "bg_shift" else (EXPLAIN,)

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
        self._add_maps(perturbed_maps, mean_reference(batch.maps), batch)
