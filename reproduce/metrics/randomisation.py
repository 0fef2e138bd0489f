"""Sanity checks as metrics (Adebayo et al., NeurIPS'18): does the map depend on what it explains?

Each re-runs the evaluated attributor (``explain(images, targets, model=...)``) on something that
should change the explanation and reports how *similar* the new map stays to ``batch.maps``
(:mod:`reproduce.metrics.map_similarity`: SSIM, Spearman of |maps|, Spearman of signed maps;
mean over images). Lower similarity = the method passes.

- ``model_randomisation`` (MPRT): the model's layers re-initialised top-down, **cascading**
  (layers 1..l randomised together at step l) or **independent** (only layer l); see
  :mod:`reproduce.metrics.model_randomisation` for what a layer is, the seeding and BatchNorm.
  Curves ``<similarity>`` over the steps (x = step number, 1 = the top layer) and scalars
  ``<similarity>_mean`` (mean over steps) and ``<similarity>_full`` (every selected layer
  randomised: the cascade's last step; for ``independent`` one extra explanation). The copy is
  randomised once per metric and seed: every image sees the same randomised weights (quanda#89
  asks whether per sample; the paper does not say, once is cheaper and reproducible).
- ``random_logit`` (Sixt et al. / Quantus' RandomLogit): explain a class drawn uniformly among
  the *other* classes, seeded per (seed, dataset index); scalars ``<similarity>``.
- ``data_randomisation``: the same explanation from a model trained on permuted labels (``other``,
  the ``train_label_permutation_seed`` data option), scalars ``<similarity>``.

``passes`` (each metric): 1 when the mean ``verdict_on`` similarity (at full randomisation for
MPRT) is below ``threshold``, else 0. No threshold is published: Adebayo et al. read the curves.
The default, a rank correlation of |maps| below 0.5, is this package's choice (a map whose pixel
ranking keeps a correlation of 0.5 or more with the trained model's after every weight is
re-drawn has not been shown to depend on the model). The explained model must be the metric's
model: do not set a separate ``scorer`` for rows that carry these metrics.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from reproduce.checks import check_choice, check_number
from reproduce.errors import ConfigError
from reproduce.metrics.base import EXPLAIN, AttributionBatch, AttributionMetric, Explain, describe_model, ones
from reproduce.metrics.per_image import StatisticOnlyModel
from reproduce.metrics.map_similarity import SIMILARITIES, check_similarities, map_similarity
from reproduce.metrics.model_randomisation import BATCHNORM_RULES, MODES, LayerRandomiser, TOKEN_STD
from reproduce.metrics.registry import register_metric
from reproduce.metrics.sample_rng import per_sample
from reproduce.models import ModelAdapter, inference_state

SIMILARITY_RECORD = {
    "ssim": "SSIM of |map| clipped at p99 and scaled to [0, 1] (data_range 1, Gaussian sigma 1.5)",
    "spearman_abs": "Spearman rank correlation of |map| (ties: mean rank)",
    "spearman_signed": "Spearman rank correlation of the signed maps (ties: mean rank)",
    "equal_or_constant": "equal maps score 1; a constant map against another scores 0 (counted in undefined)",
}


class SimilarityMetric(AttributionMetric):
    """Shared knobs and states: similarity kinds, verdict rule, sums per kind (and per step)."""

    def _setup(self, similarities, threshold: float, verdict_on: str, steps: int | None = None) -> None:
        self.similarities = check_similarities(similarities)
        self.threshold = check_number("threshold", threshold)
        self.verdict_on = check_choice("verdict_on", verdict_on, SIMILARITIES)
        if verdict_on not in self.similarities:
            raise ConfigError(f"verdict_on={verdict_on!r} must be one of the similarities {list(self.similarities)}.")
        self._steps = steps
        for kind in self.similarities:
            self._add_sum(f"{kind}_sum", () if steps is None else (steps,))
        if steps is not None:
            for kind in self.similarities:
                self._add_sum(f"{kind}_full_sum")
        self._add_sum("undefined")
        self._add_sum("count")
        # Per image 8 x (K (S + 1) + 2) bytes for K similarities over S steps (208 for 3 x 7 steps;
        # 40 without steps).
        full = [f"{kind}_full_sum" for kind in self.similarities] if steps is not None else []
        self._track_per_image(*(f"{kind}_sum" for kind in self.similarities), *full, "undefined", "count")
        self._record(similarities=list(self.similarities), similarity_definitions=SIMILARITY_RECORD,
                     threshold=self.threshold, verdict_on=verdict_on,
                     verdict=f"passes = mean {verdict_on}{'_full' if steps is not None else ''} < {self.threshold}")

    @property
    def directions(self) -> dict[str, str]:  # type: ignore[override]
        keys = [f"{k}_{s}" for k in self.similarities for s in ("mean", "full")] if self._steps is not None else list(self.similarities)
        return {**{k: "lower" for k in keys}, "passes": "higher"}

    diagnostics = ("undefined",)

    def _similarity_rows(self, reference: torch.Tensor, maps: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per image ``[B]``: each similarity of ``maps`` to ``reference``, and how many were undefined."""
        values, undefined = {}, torch.zeros(reference.shape[0], dtype=torch.float64, device=reference.device)
        for kind in self.similarities:
            values[kind], defined = map_similarity(reference, maps, kind)
            values[kind] = values[kind].double()
            if kind.startswith("spearman"):
                undefined = undefined + (~defined).double()
        return values, undefined

    def _add_rows(self, batch: AttributionBatch, values: dict[str, torch.Tensor], undefined: torch.Tensor) -> None:
        """One call for the step-free metrics: ``values[kind]`` ``[B]``."""
        self._accumulate_rows({**{f"{k}_sum": v for k, v in values.items()}, "undefined": undefined, "count": ones(batch)},
                              batch.indices)

    def _scalars_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The step-free metrics' statistic of ``[R]`` sums (and RandomLogit's compute with ``R = 1``)."""
        out = {kind: sums[f"{kind}_sum"] / sums["count"] for kind in self.similarities}
        return {**out, "passes": self._verdict(out[self.verdict_on]), "undefined": sums["undefined"]}

    def _verdict(self, value: torch.Tensor) -> torch.Tensor:
        return (value < self.threshold).double()


@register_metric("model_randomisation")
class ModelRandomisation(SimilarityMetric):
    """Model-parameter randomisation test: similarity of the trained model's map to the maps of
    randomised copies (lower = the method depends on the weights)."""

    needs_model = True
    requires = (EXPLAIN,)

    def __init__(self, model: nn.Module | None = None, *, mode: str = "cascading", layers: Sequence[str] | None = None,
                 seed: int = 0, batchnorm: str = "keep_statistics",
                 similarities: Sequence[str] = ("ssim", "spearman_abs", "spearman_signed"),
                 threshold: float = 0.5, verdict_on: str = "spearman_abs"):
        super().__init__(model)
        self.mode = check_choice("mode", mode, MODES)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}.")
        if isinstance(model, StatisticOnlyModel):  # a statistic of stored states: only the steps' count matters
            self.randomiser, names = None, list(layers or [])
        else:
            self.randomiser = LayerRandomiser(model, list(layers) if layers is not None else None, seed, batchnorm)
            names = self.randomiser.names
        self._setup(similarities, threshold, verdict_on, steps=len(names))
        self._record(mode=mode, seed=seed, batchnorm=batchnorm, batchnorm_rules=list(BATCHNORM_RULES),
                     layers=names, layer_rule="modules owning parameters (or the named blocks), top-down",
                     randomisation=f"reset_parameters() under a per-layer seed; other parameters N(0, {TOKEN_STD}^2)",
                     randomised="once per metric: every image sees the same randomised weights")

    @classmethod
    def for_statistic(cls, options, config):
        """Without the model: the recorded layer names give the number of steps."""
        return super().for_statistic({**options, "layers": list(config["layers"])}, config)

    def _update(self, batch: AttributionBatch, explain: Explain | None = None) -> None:
        curves = {kind: torch.zeros(batch.size, self._steps, dtype=torch.float64, device=batch.maps.device)
                  for kind in self.similarities}
        undefined = torch.zeros(batch.size, dtype=torch.float64, device=batch.maps.device)
        for step, randomised in self.randomiser.models(self.mode):
            maps = self._explain(explain, batch.images, batch.targets, batch, model=randomised)
            values, missing = self._similarity_rows(batch.maps, maps)
            for kind in self.similarities:
                curves[kind][:, step] = values[kind]
            undefined = undefined + missing
            last = maps
        if self.mode == "independent":
            last = self._explain(explain, batch.images, batch.targets, batch, model=self.randomiser.fully_randomised())
        full, missing = self._similarity_rows(batch.maps, last)
        self._accumulate_rows({**{f"{k}_sum": curves[k] for k in self.similarities},
                               **{f"{k}_full_sum": full[k] for k in self.similarities},
                               "undefined": undefined + missing, "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        out: dict[str, torch.Tensor] = {}
        steps = torch.arange(1, self._steps + 1, dtype=torch.float64)
        for kind in self.similarities:
            curve = getattr(self, f"{kind}_sum") / n
            out[kind] = curve
            out[f"{kind}_x"] = steps.to(curve.device)
        scalars = self._compute_batch({name: getattr(self, name)[None] for name in self._per_image_names})
        return {**out, **{key: value[0] for key, value in scalars.items()}}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = sums["count"]
        out = {}
        for kind in self.similarities:
            out[f"{kind}_mean"] = (sums[f"{kind}_sum"] / n[:, None]).mean(1)
            out[f"{kind}_full"] = sums[f"{kind}_full_sum"] / n
        return {**out, "passes": self._verdict(out[f"{self.verdict_on}_full"]), "undefined": sums["undefined"]}


def other_classes(targets: torch.Tensor, indices: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A class ``!= target`` per sample, uniform over the others, seeded by (seed, dataset index)."""
    draw = per_sample(indices, seed, lambda g: torch.randint(num_classes - 1, (), generator=g, device=targets.device),
                      targets.device)
    return draw + (draw >= targets).long()


@register_metric("random_logit")
class RandomLogit(SimilarityMetric):
    """Similarity of the map of the explained class to the map of a random other class (lower = the
    method is class-sensitive)."""

    needs_model = True
    requires = (EXPLAIN,)

    def __init__(self, model: nn.Module | None = None, *, seed: int = 0,
                 similarities: Sequence[str] = ("ssim", "spearman_abs", "spearman_signed"),
                 threshold: float = 0.5, verdict_on: str = "spearman_abs"):
        super().__init__(model)
        self.num_classes = ModelAdapter(model).num_classes  # None: read from the logits at the first update
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}.")
        self.seed = seed
        self._setup(similarities, threshold, verdict_on)
        self._record(seed=seed, other_class="uniform over the classes != target, seeded per (seed, dataset index)")

    def _update(self, batch: AttributionBatch, explain: Explain | None = None) -> None:
        if self.num_classes is None:
            with inference_state(self.model), torch.no_grad():
                self.num_classes = int(self.model(batch.images[:1]).shape[-1])
        if self.num_classes < 2:
            raise ConfigError("random_logit needs a classifier with at least two classes.")
        others = other_classes(batch.targets, batch.indices, self.num_classes, self.seed)
        maps = self._explain(explain, batch.images, others, batch)
        self._add_rows(batch, *self._similarity_rows(batch.maps, maps))

    def _compute(self) -> dict[str, torch.Tensor]:
        self._require_samples(self.count)
        return {key: value[0] for key, value in self._compute_batch({n: getattr(self, n)[None] for n in self._per_image_names}).items()}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._scalars_batch(sums)


@register_metric("data_randomisation")
class DataRandomisation(SimilarityMetric):
    """Similarity of the map to the map of a model trained on permuted labels (``other``)."""

    requires = (EXPLAIN,)

    def __init__(self, model: nn.Module | None = None, *, other: nn.Module | None = None,
                 similarities: Sequence[str] = ("ssim", "spearman_abs", "spearman_signed"),
                 threshold: float = 0.5, verdict_on: str = "spearman_abs"):
        super().__init__(model)
        if not isinstance(other, nn.Module):
            raise ConfigError(
                f"data_randomisation needs other=<model trained on permuted labels> (a table refers to it as "
                f"'@<reference>'), got {other!r}."
            )
        self._other = [other]
        self._setup(similarities, threshold, verdict_on)
        self._record(other=describe_model(other), other_training="same recipe, training labels permuted (seeded)")

    def _update(self, batch: AttributionBatch, explain: Explain | None = None) -> None:
        maps = self._explain(explain, batch.images, batch.targets, batch, model=self._other[0])
        self._add_rows(batch, *self._similarity_rows(batch.maps, maps))

    _compute = RandomLogit._compute
    _compute_batch = RandomLogit._compute_batch
