"""Pixel-ranked insertion and deletion curves (Petsiuk et al. 2018, as Xplique implements them).

Pixels are ranked by the map (descending; ties in raster order, see
:mod:`reproduce.metrics.perturbation_curves`). At step ``t = 0..steps`` the top
``floor(t * H*W / steps)`` pixels are

- **deletion**: replaced by the baseline, starting from the clean image (lower AUC is better);
- **insertion**: copied from the image onto the baseline (higher AUC is better).

All channels of a pixel flip together. Both endpoints are evaluated, so the curve has
``steps + 1`` points; its x-axis is the fraction of pixels flipped. The score is the softmax
probability (or the logit) of the explained class; AUC is the trapezoid on [0, 1]. Xplique's
defaults are ``steps=10`` and baseline 0 in the model's normalised input space (``"mean"``: the
mean colour), which SMDL's tables use; ``"black"`` (raw 0), ``"blur"`` and any number are options.
All steps of all images are evaluated in as few forward passes as ``max_batch`` allows.
"""

from __future__ import annotations

import torch
from torch import nn

from reproduce.checks import check_choice
from reproduce.metrics.base import AttributionBatch, AttributionMetric, ones
from reproduce.metrics.perturbation_curves import (
    Perturber,
    check_fill,
    check_steps,
    fraction_counts,
    rank_descending,
    target_scores,
    trapezoid_auc,
)
from reproduce.metrics.registry import register_metric

MODES = ("insertion", "deletion")


def insertion_deletion_curve(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    mode: str,
    steps: int = 10,
    baseline: str | float = "mean",
    score: str = "softmax",
    max_batch: int = 256,
    blur_sigma: float = 5.0,
    indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image insertion or deletion curves.

    ``indices`` (dataset indices of the rows) only serve error messages.

    Returns:
        ``(x, scores)``: the fraction of pixels flipped ``[steps + 1]`` and the score of
        ``targets`` ``[B, steps + 1]``. Their AUC is :func:`trapezoid_auc` of ``scores``.
    """
    check_choice("mode", mode, MODES)
    check_choice("score", score, ("softmax", "logit"))
    steps = check_steps(steps)
    b, _, h, w = images.shape
    n = h * w
    counts = fraction_counts(n, steps, device=images.device)
    ranks = rank_descending(maps.reshape(b, n))
    perturber = Perturber(model, fill=check_fill(baseline), removal="fill", max_batch=max_batch, blur_sigma=blur_sigma,
                         indices=indices)
    logits = perturber.ranked_logits(images, ranks, counts, reveal=(mode == "insertion"))
    return counts.double() / n, target_scores(logits, targets, score)


class _PixelCurve(AttributionMetric):
    mode = ""
    needs_model = True

    def __init__(self, model: nn.Module | None = None, *, steps: int = 10, baseline: str | float = "mean",
                 score: str = "softmax", target: str = "target", max_batch: int = 256, blur_sigma: float = 5.0):
        super().__init__(model)
        self.steps = check_steps(steps)
        self.baseline = check_fill(baseline)
        self.score = check_choice("score", score, ("softmax", "logit"))
        self.target = check_choice("target", target, ("target", "label"))
        self.max_batch = max_batch
        self.blur_sigma = blur_sigma
        self._record(mode=self.mode, steps=self.steps, baseline=self.baseline, score=score, target=target,
                     ranking="descending, ties in raster order", auc="trapezoid on [0, 1]",
                     blur_sigma=blur_sigma if self.baseline == "blur" else None)
        self._add_sum("curve_sum", (self.steps + 1,))
        self._add_sum("x_sum", (self.steps + 1,))
        self._add_sum("count")
        # Per image its curve and count: 8 x (steps + 2) bytes (96 at 10 steps). The x-axis is the
        # same for every image (it depends on H x W only), so its sum is not tracked: the AUC reads
        # the curve alone.
        self._track_per_image("curve_sum", "count")

    @property
    def directions(self) -> dict[str, str]:
        return {"auc": "higher" if self.mode == "insertion" else "lower"}

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        classes = batch.targets if self.target == "target" else batch.labels
        x, scores = insertion_deletion_curve(
            self.model, batch.images, batch.maps, classes, mode=self.mode, steps=self.steps,
            baseline=self.baseline, score=self.score, max_batch=self.max_batch, blur_sigma=self.blur_sigma,
            indices=batch.indices,
        )
        self._accumulate_rows({"curve_sum": scores.double(), "count": ones(batch)}, batch.indices)
        self._accumulate("x_sum", x * batch.size)

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        curve = self.curve_sum / n
        return {"auc": trapezoid_auc(curve), "curve": curve, "curve_x": self.x_sum / n}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"auc": trapezoid_auc(sums["curve_sum"] / sums["count"][:, None])}


@register_metric("insertion")
class Insertion(_PixelCurve):
    """Insertion AUC (higher is better): pixels revealed onto the baseline in map order."""

    mode = "insertion"


@register_metric("deletion")
class Deletion(_PixelCurve):
    """Deletion AUC (lower is better): pixels replaced by the baseline in map order."""

    mode = "deletion"
