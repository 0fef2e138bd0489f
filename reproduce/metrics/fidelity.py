"""COMET's fidelity tests: a black-box model's accuracy after removing or keeping the top-p pixels.

The model given at construction is the black box that scores the masked images (COMET: a
ResNet-18/101 trained on the dataset), not necessarily the explained model. For each fraction
``p`` the top-``p`` pixels of the map are

- **removed** (``remove``, COMET's code uses 0.05, 0.1, 0.2): accuracy should drop (lower is better);
- **kept**, everything else removed (``keep``, 0.5 in the code): accuracy should stay (higher is better).

Removed pixels take the fill value (``"mean"`` = 0 in normalised space, as the code's
``mask * img``). Selection ``"quantile"`` reproduces the code's ``binarize_map``: threshold
``torch.quantile(map, 1 - p)`` (linear interpolation), top = ``map >= threshold``, so ties at the
threshold are all selected; ``"rank"`` selects exactly ``round(p * H*W)`` pixels by rank (ties in
raster order). ``accuracy_clean`` (no pixel removed) is reported for reference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reproduce.errors import ConfigError
from reproduce.checks import check_choice, check_fraction
from reproduce.metrics.base import AttributionBatch, AttributionMetric, percent_key
from reproduce.metrics.perturbation_curves import Perturber, check_fill, rank_descending, target_scores
from reproduce.metrics.registry import register_metric

SELECTIONS = ("quantile", "rank")


def top_fraction_masks(maps: torch.Tensor, fractions: list[float], selection: str = "quantile") -> torch.Tensor:
    """Boolean ``[B, F, H, W]``: the top ``fractions[f]`` of each map's pixels."""
    check_choice("selection", selection, SELECTIONS)
    b, h, w = maps.shape
    flat = maps.reshape(b, -1).float()
    if selection == "quantile":
        q = torch.tensor([1 - p for p in fractions], dtype=flat.dtype, device=flat.device)
        thresholds = torch.quantile(flat, q, dim=1).T  # [B, F]
        top = flat[:, None, :] >= thresholds[:, :, None]
    else:
        ranks = rank_descending(flat)
        counts = torch.tensor([int(math.floor(p * h * w + 0.5)) for p in fractions], device=flat.device)
        top = ranks[:, None, :] < counts[None, :, None]
    return top.view(b, len(fractions), h, w)


def fidelity_correct(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor, *,
                     remove: tuple[float, ...] = (0.05, 0.1, 0.2), keep: tuple[float, ...] = (0.5,),
                     selection: str = "quantile", fill: str | float = "mean", max_batch: int = 256,
                     indices: torch.Tensor | None = None) -> torch.Tensor:
    """Correctness ``[B, 1 + R + K]``: clean image, then top-``remove`` removed, then top-``keep`` kept."""
    fractions = [*remove, *keep]
    top = top_fraction_masks(maps, fractions, selection) if fractions else maps.new_zeros((maps.shape[0], 0, *maps.shape[1:]), dtype=torch.bool)
    visible = torch.cat([torch.ones_like(top[:, :1]), ~top[:, : len(remove)], top[:, len(remove):]], dim=1)
    perturber = Perturber(model, fill=check_fill(fill), removal="fill", max_batch=max_batch, indices=indices)
    logits = perturber.logits(images, visible.shape[1], lambda a, b: visible[:, a:b])
    return target_scores(logits, labels, "accuracy")


@register_metric("fidelity")
class Fidelity(AttributionMetric):
    """Black-box accuracy with the top-p pixels removed (lower is better) or kept (higher is better)."""

    needs_model = True

    def __init__(self, model: nn.Module | None = None, *, remove: tuple[float, ...] | list[float] = (0.05, 0.1, 0.2),
                 keep: tuple[float, ...] | list[float] = (0.5,), selection: str = "quantile", fill: str | float = "mean",
                 max_batch: int = 256):
        super().__init__(model)
        self.remove = tuple(check_fraction("remove", p, allow_one=False) for p in remove)
        self.keep = tuple(check_fraction("keep", p, allow_one=False) for p in keep)
        if not self.remove and not self.keep:
            raise ConfigError("Give at least one fraction to remove or keep, e.g. remove=(0.1,).")
        self.selection = check_choice("selection", selection, SELECTIONS)
        self.fill = check_fill(fill)
        self.max_batch = max_batch
        self._record(remove=list(self.remove), keep=list(self.keep), selection=selection, fill=self.fill,
                     score="accuracy (argmax == label)")
        self._add_sum("correct", (1 + len(self.remove) + len(self.keep),))
        self._add_sum("count")

    def _keys(self) -> list[str]:
        return ["accuracy_clean", *[f"accuracy_remove_{percent_key(p)}" for p in self.remove],
                *[f"accuracy_keep_{percent_key(p)}" for p in self.keep]]

    @property
    def directions(self) -> dict[str, str]:
        keys = self._keys()
        out = {k: "lower" for k in keys[1: 1 + len(self.remove)]}
        out.update({k: "higher" for k in keys[1 + len(self.remove):]})
        return out

    diagnostics = ("accuracy_clean",)

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        correct = fidelity_correct(self.model, batch.images, batch.maps, batch.labels, remove=self.remove,
                                   keep=self.keep, selection=self.selection, fill=self.fill, max_batch=self.max_batch,
                                   indices=batch.indices)
        self._accumulate("correct", correct.double().sum(0))
        self._accumulate("count", torch.tensor(float(batch.size)))

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        return {k: self.correct[i] / n for i, k in enumerate(self._keys())}
