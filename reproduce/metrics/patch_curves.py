"""Patch-ranked curves and accuracy at a patch budget (MoXI's evaluation).

Players are the cells of a patch grid (default: the ViT token grid). Patches are ranked by the
map's mean over each patch, so the map an ordering method paints (count - rank per patch, as
MoXI's heatmaps) reproduces its ordering exactly; ties keep patch (raster) order.

- **Curves** (``patch_insertion`` / ``patch_deletion``): the score with the top ``k`` patches shown
  (insertion, from nothing) or hidden (deletion, from the clean image), ``k = 0..n``. The default
  score is top-1 accuracy (argmax == label), MoXI's metric; ``softmax``/``logit`` of the explained
  class are options. The AUC (trapezoid over ``k/n`` in [0, 1]) is an extra scalar the paper does
  not report (its figures plot the curves).
- **The k = 0 point** (``zero_point``): ``"prepend"`` writes 0 (insertion) / 1 (deletion) without
  evaluating, as MoXI's notebook does for its curves (it explains correctly classified images only,
  so the clean image scores 1); ``"evaluate"`` runs the model on the empty image (class token
  alone for token removal: about chance) / the clean image. ``"auto"`` (default) is ``"prepend"``
  for the accuracy score, the paper's, and ``"evaluate"`` for the other scores, where no constant
  is right.
- **Reuse**: a greedy search that has already evaluated its own prefixes (MoXI) passes them in
  ``batch.extra["player_path"]`` (:class:`~reproduce.models.player_path.PlayerPath`). Its logits
  are used, not recomputed, when the path is of this very model, masker (token removal, or fill
  with the same value) and grid, the same mode and images, and the map ranks the patches in the
  path's order; any other point (and any batch that does not match) is evaluated. The metric
  reports ``reused`` (fraction of images whose points came from the path) and
  ``forward_per_image`` (passes the metric itself ran).
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
from reproduce.metrics.base import AttributionBatch, AttributionMetric, ones, percent_key
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
from reproduce.models.player_path import PlayerPath

ZERO_POINTS = ("auto", "prepend", "evaluate")


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
    zero_point: str = "evaluate",
    path: PlayerPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[B, S]`` with ``counts[s]`` top patches shown (insertion) or hidden (deletion).

    ``classes`` are the labels for ``score="accuracy"``, the explained classes otherwise.
    ``counts`` defaults to every ``k = 0..n``; ``zero_point`` and ``path`` as in the module
    docstring. Returns ``(counts [S], scores [B, S])``.
    """
    counts_t, scores, _ = patch_scores_with_reuse(
        model, images, maps, classes, mode=mode, counts=counts, grid=grid, removal=removal, score=score,
        fill=fill, max_batch=max_batch, indices=indices, zero_point=zero_point, path=path)
    return counts_t, scores


def patch_scores_with_reuse(model, images, maps, classes, *, mode, counts, grid, removal, score, fill, max_batch,
                            indices, zero_point, path) -> tuple[torch.Tensor, torch.Tensor, tuple[bool, int]]:
    """:func:`patch_curve` plus ``(reused, passes)``: whether the path's logits were used and how
    many forward passes were run here."""
    check_choice("mode", mode, MODES)
    check_choice("score", score, SCORES)
    zero_point = resolve_zero_point(zero_point, score)
    removal = resolve_removal(model, removal)
    g = resolve_grid(model, grid, removal)
    b, _, h, w = images.shape
    partition = Partition.patch_grid(b, h, w, g, device=images.device)
    n = partition.num_players
    counts_t = torch.arange(n + 1, device=images.device) if counts is None else torch.as_tensor(counts, device=images.device).long()
    ranks = rank_descending(patch_scores(maps, g))
    reusable = path_matches(path, model, images, ranks, g, removal, check_fill(fill), mode)
    known = (counts_t >= 1) & (counts_t <= (path.evaluated if reusable else 0))
    constant = (counts_t == 0) & (zero_point == "prepend")
    todo = ~(known | constant)
    scores = torch.empty(b, len(counts_t), device=images.device)
    if known.any():
        scores[:, known] = target_scores(path.logits[:, counts_t[known] - 1], classes, score)
    if constant.any():
        scores[:, constant] = 0.0 if mode == "insertion" else 1.0
    if todo.any():
        perturber = Perturber(model, fill=check_fill(fill), removal=removal, max_batch=max_batch, indices=indices)
        logits = perturber.ranked_logits(images, ranks, counts_t[todo], reveal=(mode == "insertion"), partition=partition)
        scores[:, todo] = target_scores(logits, classes, score)
    return counts_t, scores, (reusable, b * int(todo.sum()))


def resolve_zero_point(zero_point: str, score: str) -> str:
    check_choice("zero_point", zero_point, ZERO_POINTS)
    if zero_point == "auto":
        return "prepend" if score == "accuracy" else "evaluate"
    if zero_point == "prepend" and score != "accuracy":
        raise ConfigError(
            f"zero_point='prepend' writes accuracy 0 (insertion) / 1 (deletion) at k = 0, MoXI's rule; it has "
            f"no value for score={score!r}: use zero_point='evaluate'."
        )
    return zero_point


def path_matches(path: PlayerPath | None, model: nn.Module, images: torch.Tensor, ranks: torch.Tensor,
                 grid: tuple[int, int], removal: str, fill, mode: str) -> bool:
    """Whether the path's logits are exactly this curve's points (module docstring, "Reuse")."""
    if not isinstance(path, PlayerPath) or path.model is not model or path.mode != mode:
        return False
    if tuple(path.grid) != tuple(grid) or path.removal != removal:
        return False
    if removal == "fill" and not _same_fill(path.fill, fill):
        return False
    if path.inputs.shape != images.shape or not torch.equal(path.inputs, images):
        return False
    order = torch.argsort(ranks, dim=1)[:, : path.evaluated]
    return bool(torch.equal(order, path.order[:, : path.evaluated].to(order.device)))


def _same_fill(a, b) -> bool:
    if isinstance(a, (int, float)) and not isinstance(a, bool) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return isinstance(a, str) and a == b


class _PatchMetric(AttributionMetric):
    needs_model = True
    diagnostics = ("reused", "forward_per_image")

    def __init__(self, model, *, grid, removal, score, fill, max_batch, zero_point="evaluate"):
        super().__init__(model)
        self.score = check_choice("score", score, SCORES)
        self.removal = resolve_removal(model, removal)
        self.grid = resolve_grid(model, grid, self.removal)
        self.fill = check_fill(fill)
        self.max_batch = max_batch
        self.zero_point = resolve_zero_point(zero_point, self.score)
        self.num_patches = self.grid[0] * self.grid[1]
        self._record(grid=list(self.grid), removal=self.removal, score=score,
                     fill=self.fill if self.removal == "fill" else None,
                     ranking="patch mean of the map, descending, ties in raster order",
                     reuse="the attributor's player_path when model, masker, grid, mode, images and ranking match")
        self._add_sum("reused_sum")
        self._add_sum("passes_sum")

    @classmethod
    def for_statistic(cls, options, config):
        """The grid comes from the recorded config (by default it is read from the ViT's token grid,
        and the placeholder model has none); the removal does not enter the statistic, and "fill"
        is the one a model-free instance accepts."""
        return super().for_statistic({**options, "grid": list(config["grid"]), "removal": "fill"}, config)

    def _scores(self, batch: AttributionBatch, mode: str, counts) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scores ``[B, S]`` and each image's rows of the reuse diagnostics (whether its points came
        from the path; the passes run here for it)."""
        classes = batch.labels if self.score == "accuracy" else batch.targets
        _, scores, (reused, passes) = patch_scores_with_reuse(
            self.model, batch.images, batch.maps, classes, mode=mode, counts=counts, grid=self.grid,
            removal=self.removal, score=self.score, fill=self.fill, max_batch=self.max_batch,
            indices=batch.indices, zero_point=self.zero_point, path=batch.extra.get("player_path"))
        one = ones(batch)
        return scores, {"reused_sum": one * float(reused), "passes_sum": one * (passes / batch.size), "count": one}

    def _reuse_report(self, n: float) -> dict[str, torch.Tensor]:
        return {"reused": self.reused_sum / n, "forward_per_image": self.passes_sum / n}

    @staticmethod
    def _reuse_batch(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"reused": sums["reused_sum"] / sums["count"], "forward_per_image": sums["passes_sum"] / sums["count"]}


class _PatchCurveMetric(_PatchMetric):
    mode = ""

    def __init__(self, model: nn.Module | None = None, *, grid: int | tuple[int, int] | None = None,
                 removal: str = "auto", score: str = "accuracy", fill: str | float = "mean", max_batch: int = 256,
                 zero_point: str = "auto"):
        super().__init__(model, grid=grid, removal=removal, score=score, fill=fill, max_batch=max_batch,
                         zero_point=zero_point)
        k0 = {"prepend": f"{0 if self.mode == 'insertion' else 1} written (MoXI's notebook)", "evaluate": "evaluated"}
        self._record(mode=self.mode, zero_point=self.zero_point, endpoints=f"k = 0: {k0[self.zero_point]}; k = 1..n evaluated")
        self._add_sum("curve_sum", (self.num_patches + 1,))
        self._add_sum("count")
        # Per image its curve, count and reuse diagnostics: 8 x (n + 4) bytes (1,600 for 196 patches).
        self._track_per_image("curve_sum", "count", "reused_sum", "passes_sum")

    @property
    def directions(self) -> dict[str, str]:
        return {"auc": "higher" if self.mode == "insertion" else "lower"}

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        scores, rows = self._scores(batch, self.mode, None)
        self._accumulate_rows({"curve_sum": scores.double(), **rows}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        curve = self.curve_sum / n
        x = torch.arange(self.num_patches + 1, dtype=torch.float64, device=curve.device) / self.num_patches
        return {"auc": trapezoid_auc(curve), "curve": curve, "curve_x": x, **self._reuse_report(n)}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"auc": trapezoid_auc(sums["curve_sum"] / sums["count"][:, None]), **self._reuse_batch(sums)}


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
        self._track_per_image("score_sum", "count", "reused_sum", "passes_sum")  # 8 x (budgets + 3) bytes per image

    def _key(self, p: float) -> str:
        return f"{self.score}_{'shown' if self.mode == 'insertion' else 'hidden'}_{percent_key(p)}"

    @property
    def directions(self) -> dict[str, str]:
        way = "higher" if self.mode == "insertion" else "lower"
        return {self._key(p): way for p in self.budgets}

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        scores, rows = self._scores(batch, self.mode, self.counts)
        self._accumulate_rows({"score_sum": scores.double(), **rows}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        return {**{self._key(p): self.score_sum[i] / n for i, p in enumerate(self.budgets)}, **self._reuse_report(n)}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = sums["count"]
        return {**{self._key(p): sums["score_sum"][:, i] / n for i, p in enumerate(self.budgets)}, **self._reuse_batch(sums)}
