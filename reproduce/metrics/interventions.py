"""FunnyBirds' interventional protocol (Hesse, Schaub-Meyer, Roth, ICCV 2023) on scenes that can be
re-rendered without any set of their objects (the synthetic benchmark with ``interventions=True``).

Every family asks whether what the map calls important is what the model really uses, judged by
exact counterfactual scenes rather than by filling pixels (arithmetic in
:mod:`reproduce.metrics.intervention_scores`; object importance = the map summed in the object's
mask dilated by a 5x5 max-pool; *important at t* = importance > t * the map's sum, with 80 thresholds
t in linspace(0.01, 0.5)):

- **csdc** (controlled synthetic data check), correctly classified images: the fraction of the
  class's minimal sufficient part set flagged important. Here that set is the evidence (one object,
  or both parts of the two-part variant, which needs them both), so on the two-part variant it is
  the coverage of every part the class needs.
- **pc** (preservation check): remove the candidate objects the map does not flag: the prediction
  must stay. **dc** (deletion check): remove the flagged ones: the prediction must change.
  Candidates: the evidence (``completeness="evidence"``, FunnyBirds' bird parts) or ``all`` objects.
- **d** (distractibility): the objects (evidence or distractor) whose removal alone changes the
  target logit by less than ``tolerance`` (5 %) of it, or raises it, must not be flagged:
  1 - mean fraction of them flagged.
- **com** = ((csdc + pc + dc)/3 + d)/2, all read at the ONE threshold maximising
  csdc/3 + pc/3 + dc/3 + d over the pooled test set (the curves are reported too).
- **sd** (correctness, single deletion): Spearman's rho per image between object importance and the
  drop of the target logit when that object alone is removed, mapped to 0.5 rho + 0.5; over
  ``single_deletion="all"`` objects (evidence and distractors: a single-object scene has one
  evidence object, so FunnyBirds' parts-only correlation would be undefined) or ``evidence``.
- **bi** (background independence, a property of the model): the fraction of distractors whose
  removal does not lower the target logit by ``tolerance`` or more.
- **ts** (contrastivity, ``contrastivity=True``, two-part scenes, re-explains twice): see
  :func:`reproduce.metrics.intervention_scores._target_sensitivity`.
- **mx** = mean(com, sd[, ts]): FunnyBirds' summary (mean of completeness, correctness and, when
  measured, contrastivity).

Logits are the scorer's (the model given at construction; FunnyBirds: the explained model). The map
is the one being judged (for ``target``); FunnyBirds explains the predicted class for pc/dc, which
is the same map on correctly classified images.
"""

from __future__ import annotations

import torch
from torch import nn

from reproduce.checks import check_bool, check_choice, check_fraction, check_int
from reproduce.errors import ConfigError
from reproduce.metrics.base import EXPLAIN, EXTRA, AttributionBatch, AttributionMetric
from reproduce.metrics.intervention_scores import Protocol, Scenes, summarise, summarise_batch, tally, tally_rows
from reproduce.metrics.registry import register_metric

SCENE_EXTRAS = ("object_masks", "object_kinds", "object_footprints", "object_layers", "images_without_objects")
OBJECT_SETS = ("evidence", "all")


def scenes_of(batch: AttributionBatch) -> Scenes:
    e = batch.extra
    return Scenes(batch.images, e["object_kinds"].long(), e["object_masks"].bool(), e["object_footprints"].bool(),
                  e["object_layers"].to(batch.images.dtype), e["images_without_objects"].to(batch.images.dtype))


def interventional_scores(model: nn.Module, batch: AttributionBatch, explain=None, **knobs) -> dict[str, torch.Tensor]:
    """The functional twin of :class:`Interventions` on one batch (same knobs)."""
    metric = Interventions(model, **knobs)
    return summarise(tally(model, scenes_of(batch), batch.maps, batch.labels, batch.targets, metric.protocol,
                           explain, batch.indices), metric.protocol.thresholds)


@register_metric("interventions")
class Interventions(AttributionMetric):
    """FunnyBirds' completeness (csdc, pc, dc, d, com), correctness (sd), contrastivity (ts),
    background independence (bi) and summary (mx) on exact counterfactual scenes."""

    needs_model = True

    def __init__(self, model: nn.Module | None = None, *, thresholds: int = 80, min_threshold: float = 0.01,
                 max_threshold: float = 0.5, dilation: int = 5, tolerance: float = 0.05,
                 completeness: str = "evidence", single_deletion: str = "all", contrastivity: bool = False,
                 max_batch: int = 256):
        super().__init__(model)
        count = check_int("thresholds", thresholds)
        lo, hi = (check_fraction(n, v) for n, v in (("min_threshold", min_threshold), ("max_threshold", max_threshold)))
        if lo > hi:
            raise ConfigError(f"min_threshold={lo} exceeds max_threshold={hi}.")
        grid = tuple(torch.linspace(lo, hi, count, dtype=torch.float64).tolist())
        self.protocol = Protocol(
            thresholds=grid, dilation=check_int("dilation", dilation), tolerance=check_fraction("tolerance", tolerance),
            completeness=check_choice("completeness", completeness, OBJECT_SETS),
            single_deletion=check_choice("single_deletion", single_deletion, OBJECT_SETS),
            contrastivity=check_bool("contrastivity", contrastivity), max_batch=check_int("max_batch", max_batch))
        self._record(thresholds=f"linspace({lo}, {hi}, {count})", dilation=dilation, tolerance=tolerance,
                     completeness=completeness, single_deletion=single_deletion, contrastivity=contrastivity,
                     score="logit of the explained class", threshold_selection="max csdc/3 + pc/3 + dc/3 + d",
                     removal="exact re-render without the objects (FunnyBirds interventions)")
        for name in ("pc", "dc", "csdc", "d"):
            self._add_sum(name, (count,))
        for name in ("images", "csdc_n", "d_n", "sd", "sd_n", "bi_relevant", "bi_total", "ts", "ts_n"):
            self._add_sum(name)
        # Per image every sum it reads: 8 x (4 T + 9 [+ 2 with TS]) bytes, 2,632 at FunnyBirds' 80
        # thresholds (the threshold curves cannot be compressed and stay additive). The scores are
        # ratios of these sums read at the threshold selected on the pooled set, not means of per-image
        # values: the bootstrap re-selects it on every resample (summarise_batch), as compute() would.
        self._track_per_image(*self._sum_names())

    @property
    def requires(self) -> tuple[str, ...]:
        return (*(f"{EXTRA}{k}" for k in SCENE_EXTRAS), *((EXPLAIN,) if self.protocol.contrastivity else ()))

    def _missing_message(self, need: str, source: str) -> str:
        if need.startswith(EXTRA) and need[len(EXTRA):] in SCENE_EXTRAS:
            return (f"interventions needs batch.extra[{need[len(EXTRA):]!r}], which {source} does not provide; "
                    "evaluate on the synthetic benchmark with its original background, whose test split "
                    "renders them (its interventions option, switched on by the evaluation).")
        return super()._missing_message(need, source)

    @property
    def directions(self) -> dict[str, str]:
        keys = ["csdc", "pc", "dc", "d", "com", "sd", "bi", "mx", *(["ts"] if self.protocol.contrastivity else [])]
        return {k: "higher" for k in keys}

    @property
    def diagnostics(self) -> tuple[str, ...]:
        return ("threshold", "images_csdc", "images_d", "images_sd", *(("images_ts",) if self.protocol.contrastivity else ()))

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        rows = tally_rows(self.model, scenes_of(batch), batch.maps, batch.labels, batch.targets, self.protocol, explain,
                          batch.indices)
        self._accumulate_rows(rows, batch.indices)

    def _sum_names(self) -> tuple[str, ...]:
        names = ("images", "pc", "dc", "csdc", "csdc_n", "d", "d_n", "sd", "sd_n", "bi_relevant", "bi_total")
        return (*names, "ts", "ts_n") if self.protocol.contrastivity else names

    def _compute(self) -> dict[str, torch.Tensor]:
        self._require_samples(self.images)
        return summarise({k: getattr(self, k) for k in self._sum_names()}, self.protocol.thresholds)

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return summarise_batch(sums, self.protocol.thresholds)
