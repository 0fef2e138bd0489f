"""Average highest confidence under an area budget (SMDL's misclassified-sample table).

For each image the class scored is the ground-truth label (SMDL evaluates misclassified samples;
the runner selects them). Two sources of per-step (area, score) sequences:

- ``source="map"`` (SMDL's baselines): insert the top ``r`` of the map's pixels, ``r = i/steps``
  for ``i = 1..steps`` (SMDL: 50 steps), other pixels filled (SMDL: black, i.e. raw 0 mapped to
  the normalised space), and record the softmax probability of the label. Two budget rules are
  reported for every budget ``p``:

  - ``step_<p>``: max over the first ``floor(p * steps)`` steps (the code's baseline rule);
  - ``area_<p>``: max over steps whose revealed area (fraction of pixels) is ``<= p``. For pixel
    insertion the areas are ``floor(i*N/steps)/N``, so both rules pick the same steps whenever
    ``p * steps`` is an integer; they differ only in rounding.

- ``source="search"`` (SMDL's own method): the attributor's greedy path, passed by the runner as
  ``batch.extra["step_area"]`` and ``batch.extra["step_score"]`` ``[B, k]``; ``area_<p>`` is the
  max score over steps with area ``<= p`` (the code's "ours" rule). A sample with no step inside a
  budget is an error naming it (the budget is below the first region's area).

Each ``<key>`` comes with ``<key>_std`` (population std over images, as the scripts print).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reproduce.errors import ConfigError, InputError
from reproduce.checks import check_choice, check_fraction
from reproduce.metrics.base import EXTRA, AttributionBatch, AttributionMetric, check_finite, ones, percent_key
from reproduce.metrics.perturbation_curves import Perturber, check_fill, check_steps, fraction_counts, rank_descending, target_scores
from reproduce.metrics.registry import register_metric

SMDL_BUDGETS = (0.25, 0.5, 0.75, 1.0)
EPS = 1e-9


def insertion_steps(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    *,
    steps: int = 50,
    fill: str | float = "black",
    score: str = "softmax",
    max_batch: int = 256,
    indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(areas [steps], scores [B, steps])`` with the top ``i/steps`` pixels inserted, ``i = 1..steps``."""
    b, _, h, w = images.shape
    n = h * w
    counts = fraction_counts(n, check_steps(steps), device=images.device)[1:]
    ranks = rank_descending(maps.reshape(b, n))
    perturber = Perturber(model, fill=check_fill(fill), removal="fill", max_batch=max_batch, indices=indices)
    logits = perturber.ranked_logits(images, ranks, counts, reveal=True)
    return counts.double() / n, target_scores(logits, classes, score)


def highest_within(areas: torch.Tensor, scores: torch.Tensor, budget: float) -> torch.Tensor:
    """Per-image max of ``scores [B, k]`` over steps with ``areas`` (``[k]`` or ``[B, k]``) ``<= budget``.

    Rows with no step inside the budget get NaN (callers raise naming the sample).
    """
    inside = (areas <= budget + EPS).expand_as(scores)
    masked = torch.where(inside, scores.double(), torch.full_like(scores, -math.inf, dtype=torch.float64))
    best = masked.max(1).values
    return torch.where(inside.any(1), best, torch.full_like(best, math.nan))


def highest_within_steps(scores: torch.Tensor, budget: float) -> torch.Tensor:
    """Per-image max over the first ``floor(budget * k)`` of ``k`` steps (SMDL's baseline rule)."""
    first = int(math.floor(budget * scores.shape[1] + EPS))
    if first < 1:
        raise ConfigError(
            f"Budget {budget} covers no step of {scores.shape[1]}; raise the budget or the number of steps."
        )
    return scores[:, :first].double().max(1).values


@register_metric("average_highest_confidence")
class AverageHighestConfidence(AttributionMetric):
    """Mean over images of the best label probability reached within each area budget (higher is better)."""

    needs_model = True

    def __init__(self, model: nn.Module | None = None, *, budgets: tuple[float, ...] | list[float] = SMDL_BUDGETS,
                 source: str = "map", steps: int = 50, fill: str | float = "black", score: str = "softmax",
                 max_batch: int = 256):
        super().__init__(model)
        self.budgets = tuple(check_fraction("budgets", p) for p in budgets)
        if not self.budgets:
            raise ConfigError("budgets must hold at least one fraction, e.g. (0.25, 0.5, 0.75, 1.0).")
        self.source = check_choice("source", source, ("map", "search"))
        self.steps = check_steps(steps)
        self.fill = check_fill(fill)
        self.score = check_choice("score", score, ("softmax", "logit"))
        self.max_batch = max_batch
        if self.source == "map":
            for p in self.budgets:
                if math.floor(p * self.steps + EPS) < 1:
                    raise ConfigError(f"Budget {p} covers no step of {self.steps}; raise the budget or steps.")
        self._record(budgets=list(self.budgets), source=self.source, target="label",
                     steps=self.steps if self.source == "map" else None,
                     fill=self.fill if self.source == "map" else None,
                     score=score if self.source == "map" else "the attributor's step_score")
        keys = self._keys()
        self._add_sum("value_sum", (len(keys),))
        self._add_sum("value_sq_sum", (len(keys),))
        self._add_sum("count")
        if self.source == "map":
            self._add_sum("curve_sum", (self.steps,))
        # Per image its values, their squares and count (and its curve, for the map source): 8 x (2 K
        # + 1 [+ steps]) bytes for K keys: 536 for SMDL's 8 keys and 50 steps, 72 for the search.
        self._track_per_image("value_sum", "value_sq_sum", "count", *(("curve_sum",) if self.source == "map" else ()))

    def _keys(self) -> list[str]:
        rules = ("step", "area") if self.source == "map" else ("area",)
        return [f"{rule}_{percent_key(p)}" for rule in rules for p in self.budgets]

    @property
    def requires(self) -> tuple[str, ...]:
        return (f"{EXTRA}step_area", f"{EXTRA}step_score") if self.source == "search" else ()

    @property
    def directions(self) -> dict[str, str]:
        return {k: "higher" for k in self._keys()}

    @property
    def diagnostics(self) -> tuple[str, ...]:
        return tuple(f"{k}_std" for k in self._keys())

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        if self.source == "map":
            areas, scores = insertion_steps(self.model, batch.images, batch.maps, batch.labels, steps=self.steps,
                                            fill=self.fill, score=self.score, max_batch=self.max_batch,
                                            indices=batch.indices)
            values = [highest_within_steps(scores, p) for p in self.budgets]
            values += [highest_within(areas, scores, p) for p in self.budgets]
            curve = {"curve_sum": scores.double()}
        else:
            areas, scores = self._search_path(batch)
            values = [highest_within(areas, scores, p) for p in self.budgets]
            curve = {}
            for p, v in zip(self.budgets, values):
                if torch.isnan(v).any():
                    bad = batch.names(torch.isnan(v).nonzero().flatten())
                    raise InputError(
                        f"Samples {bad[:10]} have no search step with area <= {p}; the budget is below the "
                        "first region's area: raise the budget or use smaller regions."
                    )
        stacked = torch.stack(values, dim=1)  # [B, keys]
        self._accumulate_rows({"value_sum": stacked, "value_sq_sum": stacked**2, "count": ones(batch), **curve}, batch.indices)

    def _search_path(self, batch: AttributionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        areas, scores = batch.extra["step_area"], batch.extra["step_score"]
        if areas.dim() != 2 or areas.shape != scores.shape or areas.shape[0] != batch.size:
            raise InputError(
                f"step_area and step_score must both be [B, k] with B = {batch.size}, got "
                f"{tuple(areas.shape)} and {tuple(scores.shape)}."
            )
        check_finite(areas, batch.indices, "step_area", "pad shorter paths by repeating their last step")
        check_finite(scores, batch.indices, "step_score", "pad shorter paths by repeating their last step")
        return areas.double(), scores.double()

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        out = {key: value[0] for key, value in self._compute_batch({
            "value_sum": self.value_sum[None], "value_sq_sum": self.value_sq_sum[None], "count": self.count[None]}).items()}
        if self.source == "map":
            out["curve"] = self.curve_sum / n
            out["curve_x"] = torch.arange(1, self.steps + 1, dtype=torch.float64, device=self.count.device) / self.steps
        return out

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean and population std per key (a function of the sums of the values and their squares)."""
        n = sums["count"][:, None]
        mean = sums["value_sum"] / n
        std = (sums["value_sq_sum"] / n - mean**2).clamp_min(0).sqrt()
        out: dict[str, torch.Tensor] = {}
        for i, key in enumerate(self._keys()):
            out[key] = mean[:, i]
            out[f"{key}_std"] = std[:, i]
        return out
