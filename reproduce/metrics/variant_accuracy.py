"""Accuracy of a classifier on a test variant of the evaluated images (ImageNet-9 Backgrounds
Challenge style: ``mixed_rand`` = the same foregrounds on random backgrounds).

The batch carries the variant's image of each evaluated test image as
``extra["images_<variant>"]`` (the data module's ``paired_variants``). The classifier is
``classifier`` when given (tables pass ``"@explained"``: the explained model itself, e.g. COMET's
predictor on its selected region), else the metric's model. ``accuracy`` is top-1 against the labels
in [0, 1]; ``gap`` = clean accuracy minus variant accuracy on the same images (the shortcut gap;
lower is better).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from reproduce.errors import ConfigError
from reproduce.metrics.base import EXTRA, AttributionBatch, AttributionMetric, check_finite, ones
from reproduce.metrics.registry import register_metric
from reproduce.models import inference_state


def variant_correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bool ``[B]``: whether ``model`` classifies each image correctly."""
    with inference_state(model), torch.no_grad():
        logits = model(images)
    check_finite(logits, torch.arange(len(labels)), "Classifier outputs on the variant", "check the model")
    return logits.argmax(-1) == labels


@register_metric("variant_accuracy")
class VariantAccuracy(AttributionMetric):
    """Top-1 accuracy on ``images_<variant>`` and the gap to the clean images."""

    needs_model = True
    directions = {"accuracy": "higher", "gap": "lower"}
    diagnostics = ("accuracy_clean",)

    def __init__(self, model: nn.Module | None = None, *, variant: str = "mixed_rand", classifier: nn.Module | None = None):
        super().__init__(model)
        if not isinstance(variant, str) or not re.fullmatch(r"[a-z0-9_]+", variant):
            raise ConfigError(f"variant must be a test-variant name such as 'mixed_rand', got {variant!r}.")
        if classifier is not None and not isinstance(classifier, nn.Module):
            raise ConfigError(f"classifier must be a model (tables: '@explained'), got {type(classifier).__name__}.")
        self.variant = variant
        self._classifier_ref = [classifier]
        self._record(variant=variant, classifier="explained model" if classifier is not None else "metric model")
        for name in ("correct", "correct_clean", "count"):
            self._add_sum(name)
        # 24 bytes per image; the gap is paired per image (the same image, clean and shifted).
        self._track_per_image("correct", "correct_clean", "count")

    @property
    def requires(self) -> tuple[str, ...]:
        return (f"{EXTRA}images_{self.variant}",)

    def _missing_message(self, need: str, source: str) -> str:
        return (f"variant_accuracy needs batch.extra['images_{self.variant}'], which {source} does not provide; "
                f"use a dataset whose data config names a {self.variant!r} test variant (data.variants; the "
                f"evaluation pairs it), or pair it explicitly: data.paired_variants=[{self.variant}].")

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        model = self._classifier_ref[0] or self.model
        shifted = batch.extra[f"images_{self.variant}"]
        self._accumulate_rows({"correct": variant_correct(model, shifted, batch.labels).double(),
                               "correct_clean": variant_correct(model, batch.images, batch.labels).double(),
                               "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        self._require_samples(self.count)
        return {key: value[0] for key, value in self._compute_batch(
            {name: getattr(self, name)[None] for name in ("correct", "correct_clean", "count")}).items()}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        accuracy, clean = sums["correct"] / sums["count"], sums["correct_clean"] / sums["count"]
        return {"accuracy": accuracy, "accuracy_clean": clean, "gap": clean - accuracy}
