"""Patch-ranked curves and accuracy at a patch budget (MoXI's evaluation).

Players are the cells of a patch grid (default: the ViT token grid). Patches are ranked by the
map's mean over each patch, so the map an ordering method paints (count - rank per patch, as
MoXI's heatmaps) reproduces its ordering exactly; ties keep patch (raster) order.

- **Curves** (``patch_insertion`` / ``patch_deletion``): the score with the top ``k`` patches shown
  (insertion, from nothing) or hidden (deletion, from the clean image), ``k = 0..n``; ``k = 0`` is
  evaluated too (MoXI's notebook prepends 0 / 1 instead). The default score is top-1 accuracy
  (argmax == label), MoXI's metric; ``softmax``/``logit`` of the explained class are options.
  The AUC (trapezoid over ``k/n`` in [0, 1]) is an extra scalar the paper does not report.
- **Accuracy at budget** (``accuracy_at_budget``): the same score only at ``k = round(p * n)``
  patches shown (insertion) or hidden (deletion), e.g. MoXI's 4 % shown and 10 % hidden (8 and 20
  of 196 patches); rounding is half up.

Removal: ``"token"`` drops the hidden patches' tokens from a ViT (MoXI), ``"fill"`` fills them
(0 in normalised space by default: MoXI's CNN masking); ``"auto"`` picks token for ViTs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reproduce.errors import ConfigError
from reproduce.checks import check_choice, check_fraction
from reproduce.metrics.base import AttributionBatch, AttributionMetric, percent_key
from reproduce.metrics.insertion_deletion import MODES
from reproduce.metrics.perturbation_curves import (
    SCORES,
    Perturber,
    check_fill,
    patch_scores,
    rank_descending,
    resolve_removal,
    target_scores,
    trapezoid_auc,
)
from reproduce.metrics.registry import register_metric
from reproduce.models import ModelAdapter, Partition


def resolve_grid(model: nn.Module, grid: int | tuple[int, int] | None, removal: str) -> tuple[int, int]:
    adapter = ModelAdapter(model)
    if grid is None:
        if adapter.token_grid is None:
            raise ConfigError(
                "grid is required for a model without a token grid: set the patch grid (e.g. grid=14 "
                "as MoXI uses on 224x224 images, or a divisor of the image size)."
            )
        return adapter.token_grid
    g = (grid, grid) if isinstance(grid, int) else tuple(int(v) for v in grid)
    if len(g) != 2 or min(g) < 1:
        raise ConfigError(f"grid must be a positive int or (rows, cols), got {grid!r}.")
    if removal == "token" and g != adapter.token_grid:
        raise ConfigError(
            f"Token removal needs the {adapter.token_grid} token grid, got grid={grid!r}; leave grid "
            "unset or use removal='fill'."
        )
    return g


def budget_counts(budgets: tuple[float, ...], n: int) -> list[int]:
    """Patches at each budget fraction: ``floor(p * n + 0.5)`` (4 % of 196 -> 8, 10 % -> 20)."""
    return [int(math.floor(p * n + 0.5)) for p in budgets]


def patch_curve(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    *,
    mode: str,
    counts: list[int] | torch.Tensor | None = None,
    grid: int | tuple[int, int] | None = None,
    removal: str = "auto",
    score: str = "accuracy",
    fill: str | float = "mean",
    max_batch: int = 256,
    indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[B, S]`` with ``counts[s]`` top patches shown (insertion) or hidden (deletion).

    ``classes`` are the labels for ``score="accuracy"``, the explained classes otherwise.
    ``counts`` defaults to every ``k = 0..n``. Returns ``(counts [S], scores [B, S])``.
    """
    check_choice("mode", mode, MODES)
    check_choice("score", score, SCORES)
    removal = resolve_removal(model, removal)
    g = resolve_grid(model, grid, removal)
    b, _, h, w = images.shape
    partition = Partition.patch_grid(b, h, w, g, device=images.device)
    n = partition.num_players
    counts_t = torch.arange(n + 1, device=images.device) if counts is None else torch.as_tensor(counts, device=images.device).long()
    ranks = rank_descending(patch_scores(maps, g))
    perturber = Perturber(model, fill=check_fill(fill), removal=removal, max_batch=max_batch, indices=indices)
    logits = perturber.ranked_logits(images, ranks, counts_t, reveal=(mode == "insertion"), partition=partition)
    return counts_t, target_scores(logits, classes, score)


class _PatchMetric(AttributionMetric):
    needs_model = True

    def __init__(self, model, *, grid, removal, score, fill, max_batch):
        super().__init__(model)
        self.score = check_choice("score", score, SCORES)
        self.removal = resolve_removal(model, removal)
        self.grid = resolve_grid(model, grid, self.removal)
        self.fill = check_fill(fill)
        self.max_batch = max_batch
        self.num_patches = self.grid[0] * self.grid[1]
        self._record(grid=list(self.grid), removal=self.removal, score=score,
                     fill=self.fill if self.removal == "fill" else None,
                     ranking="patch mean of the map, descending, ties in raster order")

    def _scores(self, batch: AttributionBatch, mode: str, counts) -> torch.Tensor:
        classes = batch.labels if self.score == "accuracy" else batch.targets
        _, scores = patch_curve(self.model, batch.images, batch.maps, classes, mode=mode, counts=counts,
                                grid=self.grid, removal=self.removal, score=self.score, fill=self.fill,
                                max_batch=self.max_batch, indices=batch.indices)
        return scores


class _PatchCurveMetric(_PatchMetric):
    mode = ""

    def __init__(self, model: nn.Module | None = None, *, grid: int | tuple[int, int] | None = None,
                 removal: str = "auto", score: str = "accuracy", fill: str | float = "mean", max_batch: int = 256):
        super().__init__(model, grid=grid, removal=removal, score=score, fill=fill, max_batch=max_batch)
        self._record(mode=self.mode, endpoints="k = 0..n all evaluated")
        self._add_sum("curve_sum", (self.num_patches + 1,))
        self._add_sum("count")

    @property
    def directions(self) -> dict[str, str]:
        return {"auc": "higher" if self.mode == "insertion" else "lower"}

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        scores = self._scores(batch, self.mode, None)
        self._accumulate("curve_sum", scores.double().sum(0))
        self._accumulate("count", torch.tensor(float(batch.size)))

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        curve = self.curve_sum / n
        x = torch.arange(self.num_patches + 1, dtype=torch.float64, device=curve.device) / self.num_patches
        return {"auc": trapezoid_auc(curve), "curve": curve, "curve_x": x}


@register_metric("patch_insertion")
class PatchInsertion(_PatchCurveMetric):
    """Score (default accuracy) per number of top patches shown, k = 0..n (MoXI insertion curve)."""

    mode = "insertion"


@register_metric("patch_deletion")
class PatchDeletion(_PatchCurveMetric):
    """Score (default accuracy) per number of top patches hidden, k = 0..n (MoXI deletion curve)."""

    mode = "deletion"


@register_metric("accuracy_at_budget")
class AccuracyAtBudget(_PatchMetric):
    """Accuracy with ``p`` of the patches shown (insertion) or hidden (deletion), for each budget."""

    def __init__(self, model: nn.Module | None = None, *, mode: str = "insertion",
                 budgets: tuple[float, ...] | list[float] | None = None, grid: int | tuple[int, int] | None = None,
                 removal: str = "auto", score: str = "accuracy", fill: str | float = "mean", max_batch: int = 256):
        super().__init__(model, grid=grid, removal=removal, score=score, fill=fill, max_batch=max_batch)
        self.mode = check_choice("mode", mode, MODES)
        if budgets is None:
            budgets = (0.04,) if mode == "insertion" else (0.10,)  # MoXI's reported budgets
        self.budgets = tuple(check_fraction("budgets", p, open_low=False) for p in budgets)
        if not self.budgets:
            raise ConfigError("budgets must hold at least one fraction, e.g. (0.04,).")
        self.counts = budget_counts(self.budgets, self.num_patches)
        self._record(mode=self.mode, budgets=list(self.budgets), patches=self.counts, rounding="half up")
        self._add_sum("score_sum", (len(self.budgets),))
        self._add_sum("count")

    def _key(self, p: float) -> str:
        return f"{self.score}_{'shown' if self.mode == 'insertion' else 'hidden'}_{percent_key(p)}"

    @property
    def directions(self) -> dict[str, str]:
        way = "higher" if self.mode == "insertion" else "lower"
        return {self._key(p): way for p in self.budgets}

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        scores = self._scores(batch, self.mode, self.counts)
        self._accumulate("score_sum", scores.double().sum(0))
        self._accumulate("count", torch.tensor(float(batch.size)))

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        return {self._key(p): self.score_sum[i] / n for i, p in enumerate(self.budgets)}
