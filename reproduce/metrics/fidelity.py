"""COMET's fidelity tests: a black-box model's accuracy after removing or keeping the top-p pixels.

The model given at construction is the black box that scores the masked images (COMET: a
ResNet-18/101 trained on the dataset), not necessarily the explained model. For each fraction
``p`` the top-``p`` pixels of the map are

- **removed** (``remove``, COMET's code uses 0.05, 0.1, 0.2): accuracy should drop (lower is better);
- **kept**, everything else removed (``keep``, 0.5 in the code): accuracy should stay (higher is better).

Removed pixels take the fill value (``"mean"`` = 0 in normalised space, as the code's
``mask * img``). Selection:

- ``"rank"`` (default): exactly ``round(p * H*W)`` pixels by rank (half-up). Ties are broken by
  ``tie_break``: ``"random"`` (default) a seeded random order per image (``seed``, the dataset
  index; :func:`~reproduce.metrics.perturbation_curves.rank_descending_random_ties`), ``"raster"``
  the first in raster order. Every method then loses or keeps the same number of pixels, whatever
  its ties: a ReLU'd CAM with 60 % zeros keeps 50 % of the image, and a region-constant map
  (patches, super-pixels, saturated masks) loses exactly 10 %, a random part of its boundary region.
- ``"quantile"``: the code's ``binarize_map``, threshold ``torch.quantile(map, 1 - p)`` (linear
  interpolation), top = ``map >= threshold``: every pixel tied at the threshold is selected, so the
  amount removed or kept depends on the method (e.g. "keep 50 %" keeps the whole image when the
  median of a CAM is 0).

``accuracy_clean`` (no pixel removed) is reported for reference, and the fraction of pixels
actually removed (``removed_fraction_<p>``) and kept (``kept_fraction_<p>``), averaged over images,
is reported for every budget (diagnostics), so a result says what was measured under either rule.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reproduce.errors import ConfigError
from reproduce.checks import check_choice, check_fraction, check_int
from reproduce.metrics.base import AttributionBatch, AttributionMetric, ones, percent_key
from reproduce.metrics.perturbation_curves import (
    Perturber,
    check_fill,
    rank_descending,
    rank_descending_random_ties,
    target_scores,
)
from reproduce.metrics.registry import register_metric

SELECTIONS = ("rank", "quantile")
TIE_BREAKS = ("random", "raster")


def top_fraction_masks(maps: torch.Tensor, fractions: list[float], selection: str = "rank", *,
                       tie_break: str = "random", seed: int = 0, indices: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean ``[B, F, H, W]``: the top ``fractions[f]`` of each map's pixels (see the module docstring).

    ``tie_break``/``seed``/``indices`` (dataset indices, for the per-image random tie order) only
    matter for ``selection="rank"``.
    """
    check_choice("selection", selection, SELECTIONS)
    check_choice("tie_break", tie_break, TIE_BREAKS)
    b, h, w = maps.shape
    flat = maps.reshape(b, -1).float()
    if selection == "quantile":
        q = torch.tensor([1 - p for p in fractions], dtype=flat.dtype, device=flat.device)
        thresholds = torch.quantile(flat, q, dim=1).T  # [B, F]
        top = flat[:, None, :] >= thresholds[:, :, None]
    else:
        ranks = rank_descending_random_ties(flat, indices, seed) if tie_break == "random" else rank_descending(flat)
        counts = torch.tensor([int(math.floor(p * h * w + 0.5)) for p in fractions], device=flat.device)
        top = ranks[:, None, :] < counts[None, :, None]
    return top.view(b, len(fractions), h, w)


def fidelity_visible(maps: torch.Tensor, remove: tuple[float, ...], keep: tuple[float, ...], *,
                     selection: str = "rank", tie_break: str = "random", seed: int = 0,
                     indices: torch.Tensor | None = None) -> torch.Tensor:
    """Visible-pixel masks ``[B, 1 + R + K, H, W]``: the clean image, top-``remove`` removed, top-``keep`` kept."""
    fractions = [*remove, *keep]
    if fractions:
        top = top_fraction_masks(maps, fractions, selection, tie_break=tie_break, seed=seed, indices=indices)
    else:
        top = maps.new_zeros((maps.shape[0], 0, *maps.shape[1:]), dtype=torch.bool)
    return torch.cat([torch.ones_like(top[:, :1]), ~top[:, : len(remove)], top[:, len(remove):]], dim=1)


def fidelity_correct(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor, *,
                     remove: tuple[float, ...] = (0.05, 0.1, 0.2), keep: tuple[float, ...] = (0.5,),
                     selection: str = "rank", tie_break: str = "random", seed: int = 0,
                     fill: str | float = "mean", max_batch: int = 256,
                     indices: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
    """Correctness ``[B, 1 + R + K]``: clean image, then top-``remove`` removed, then top-``keep`` kept.

    ``visible``: the masks of :func:`fidelity_visible` when the caller already has them.
    """
    if visible is None:
        visible = fidelity_visible(maps, tuple(remove), tuple(keep), selection=selection, tie_break=tie_break,
                                   seed=seed, indices=indices)
    perturber = Perturber(model, fill=check_fill(fill), removal="fill", max_batch=max_batch, indices=indices)
    logits = perturber.logits(images, visible.shape[1], lambda a, b: visible[:, a:b])
    return target_scores(logits, labels, "accuracy")


@register_metric("fidelity")
class Fidelity(AttributionMetric):
    """Black-box accuracy with the top-p pixels removed (lower is better) or kept (higher is better)."""

    needs_model = True

    def __init__(self, model: nn.Module | None = None, *, remove: tuple[float, ...] | list[float] = (0.05, 0.1, 0.2),
                 keep: tuple[float, ...] | list[float] = (0.5,), selection: str = "rank", tie_break: str = "random",
                 seed: int = 0, fill: str | float = "mean", max_batch: int = 256):
        super().__init__(model)
        self.remove = tuple(check_fraction("remove", p, allow_one=False) for p in remove)
        self.keep = tuple(check_fraction("keep", p, allow_one=False) for p in keep)
        if not self.remove and not self.keep:
            raise ConfigError("Give at least one fraction to remove or keep, e.g. remove=(0.1,).")
        self.selection = check_choice("selection", selection, SELECTIONS)
        self.tie_break = check_choice("tie_break", tie_break, TIE_BREAKS)
        self.seed = check_int("seed", seed, minimum=0)
        self.fill = check_fill(fill)
        self.max_batch = max_batch
        rank = selection == "rank"
        self._record(remove=list(self.remove), keep=list(self.keep), selection=selection,
                     count="round(p * H*W) pixels, half-up" if rank else "every pixel >= the (1 - p) quantile",
                     tie_break=tie_break if rank else "none (ties at the threshold are all selected)",
                     tie_seed=seed if rank and tie_break == "random" else None, fill=self.fill,
                     score="accuracy (argmax == label)")
        self._add_sum("correct", (1 + len(self.remove) + len(self.keep),))
        self._add_sum("selected", (len(self.remove) + len(self.keep),))
        self._add_sum("count")
        # Per image: 8 x (2 F + 1) bytes for F fractions (56 for COMET's 3 removed + 1 kept).
        self._track_per_image("correct", "selected", "count")

    def _keys(self) -> list[str]:
        return ["accuracy_clean", *[f"accuracy_remove_{percent_key(p)}" for p in self.remove],
                *[f"accuracy_keep_{percent_key(p)}" for p in self.keep]]

    def _fraction_keys(self) -> list[str]:
        return [*[f"removed_fraction_{percent_key(p)}" for p in self.remove],
                *[f"kept_fraction_{percent_key(p)}" for p in self.keep]]

    @property
    def diagnostics(self) -> tuple[str, ...]:
        return ("accuracy_clean", *self._fraction_keys())

    @property
    def directions(self) -> dict[str, str]:
        keys = self._keys()
        out = {k: "lower" for k in keys[1: 1 + len(self.remove)]}
        out.update({k: "higher" for k in keys[1 + len(self.remove):]})
        return out

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        visible = fidelity_visible(batch.maps, self.remove, self.keep, selection=self.selection,
                                   tie_break=self.tie_break, seed=self.seed, indices=batch.indices)
        correct = fidelity_correct(self.model, batch.images, batch.maps, batch.labels, fill=self.fill,
                                   max_batch=self.max_batch, indices=batch.indices, visible=visible)
        # Fraction of pixels each budget acts on: removed for `remove`, kept (visible) for `keep`.
        r = 1 + len(self.remove)
        acted = torch.cat([~visible[:, 1:r], visible[:, r:]], dim=1).flatten(2).double().mean(-1)
        self._accumulate_rows({"correct": correct.double(), "selected": acted, "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        out = {k: self.correct[i] / n for i, k in enumerate(self._keys())}
        out.update({k: self.selected[i] / n for i, k in enumerate(self._fraction_keys())})
        return out

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = sums["count"]
        out = {k: sums["correct"][:, i] / n for i, k in enumerate(self._keys())}
        out.update({k: sums["selected"][:, i] / n for i, k in enumerate(self._fraction_keys())})
        return out
