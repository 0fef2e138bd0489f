"""Attributors evaluated as Lightning ``test_step``s.

``AttributionEvaluation`` wraps the model that is explained, one attributor and a set of metrics.
Each ``test_step`` computes the maps of a batch and updates every metric (torchmetrics, so DDP
reduces them); ``on_test_epoch_end`` logs scalars, curves and an overlay grid, and writes one result
file per (model, attributor, dataset) cell atomically.

Memory is bounded whatever the test set size: metrics keep fixed-size sum states (histograms,
curve sums) plus a few numbers per image (their per-image states, from which bootstrap intervals are
computed: ``per_image.npz``, :mod:`reproduce.lit.cell_states`), maps are dropped after each batch, and
only the first ``num_overlays`` images are kept for the figures (``overlays.png``, and ``maps.npz``
for the table's maps grid). Under DDP every rank sees a disjoint shard (no padding duplicates), metric states are
summed across ranks, the overlays are gathered and ordered by dataset index, and only rank 0 writes
files, so the result equals a single-process run up to float summation order.

Two models may be involved: the *explained* model (what the attributor explains, and whose
accuracy is reported: the black box for post-hoc methods, COMET's masked predictor for COMET) and
the *scorer* (the black box that perturbation metrics such as insertion or fidelity query), which
defaults to the explained model. A metric may name its own scorer among the reference models
(``scorer: "@name"``), so that some columns are scored by a second, independent model.

Maps are computed once per (model, images) within a test step: the batch's maps, and those that
stability metrics and the stability figure ask for again (the same images explained by a reference
model), are kept in a small per-batch cache (:class:`~reproduce.lit.map_cache.MapCache`). Across
evaluations (a table's rows), the attributors of reference models may share intermediate work through
``reference_memo`` (:class:`~reproduce.attributors.memo.AttributionMemo`); the explained model's
attributor never does, since its time is what the cost metric reports.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from reproduce.checks import check_choice
from reproduce.attributors import create
from reproduce.attributors.memo import AttributionMemo
from reproduce.errors import ConfigError, ReproduceError
from reproduce.metrics import AttributionBatch, create_metric
from reproduce.metrics.cost import cost_extras
from reproduce.models import ModelAdapter
from reproduce.atomic import atomic_write_json
from reproduce.lit.cell_states import PER_IMAGE_FILE, ImageAccuracy, accuracy_rows, metric_options, write_per_image
from reproduce.lit.evaluation_figures import gather_overlays, log_result, write_figures
from reproduce.lit.map_cache import MapCache

SAMPLE_CHOICES = ("all", "correct", "misclassified")
TARGET_CHOICES = ("label", "prediction")


def explained_references(specs: dict[str, dict[str, Any]]) -> list[str]:
    """Names of the reference models (``"@name"``) the metrics explain with, in order of mention: every
    reference a metric option names, except a metric's ``scorer`` (a model that only scores)."""
    names: list[str] = []
    for spec in specs.values():
        for key, value in spec.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            names += [v[1:] for v in values if key != "scorer" and isinstance(v, str) and v.startswith("@") and v[1:] not in names]
    return names


class AttributionEvaluation(L.LightningModule):
    """Evaluate ``attributor`` on ``model`` with ``metrics`` over a test set.

    Args:
        model: the explained classifier (eval mode, frozen).
        attributor: registry name; ``attributor_options`` its keyword options.
        metrics: ``{label: {"name": registry_name, **options}}``.
        scorer: black-box queried by model-based metrics (default: ``model``).
        reference_models: extra models by name for stability metrics (``{"b": model_b}``); a metric
            option value ``"@b"`` (or a list of them) is replaced by that model.
        target: explain the ``label`` or the model's ``prediction``.
        samples: evaluate ``all`` images, only the ``correct`` ly or the ``misclassified`` ones.
        result_path: JSON file written at the end (atomically); ``cell``: metadata stored in it.
        num_overlays: images kept for the overlay figure.
        reference_memo: an :class:`~reproduce.attributors.memo.AttributionMemo` given to the
            reference models' attributors (:meth:`~reproduce.attributors.base.Attributor.use_memo`),
            e.g. one per table run, so that rows explaining the same images with the same reference
            model share what their methods have in common.
    """

    def __init__(
        self,
        model: nn.Module,
        attributor: str,
        attributor_options: dict[str, Any] | None = None,
        metrics: dict[str, dict[str, Any]] | None = None,
        scorer: nn.Module | None = None,
        reference_models: dict[str, nn.Module] | None = None,
        target: str = "label",
        samples: str = "all",
        result_path: str | None = None,
        cell: dict[str, Any] | None = None,
        num_overlays: int = 8,
        reference_memo: AttributionMemo | None = None,
    ):
        super().__init__()
        check_choice("target", target, TARGET_CHOICES)
        check_choice("samples", samples, SAMPLE_CHOICES)
        self.explained = model.eval().requires_grad_(False)
        self.scorer_model = (scorer or model).eval().requires_grad_(False)
        self.references = {k: m.eval().requires_grad_(False) for k, m in (reference_models or {}).items()}
        self.attributor_name = attributor
        self.attributor_options = dict(attributor_options or {})
        self.attributor = create(attributor, self.explained, **self.attributor_options)
        self._reference_attributors: dict[int, Any] = {}
        self.metric_specs = {k: dict(v) for k, v in (metrics or {}).items()}
        if "accuracy" in self.metric_specs:
            raise ConfigError("The metric label 'accuracy' is the accuracy column's (scalars and per-image states); "
                              "label the metric otherwise, e.g. 'pointing_accuracy'.")
        self.metrics = nn.ModuleDict({label: self._build_metric(label, spec) for label, spec in self.metric_specs.items()})
        # The stability figure shows the maps of the reference models that metrics explain with; a
        # reference that only scores a metric (``scorer: "@name"``) is never explained.
        self.figure_references = {name: self.references[name] for name in explained_references(self.metric_specs)
                                  if name in self.references}
        self.target = target
        self.samples = samples
        self.result_path = result_path
        self.cell = dict(cell or {})
        self.num_overlays = num_overlays
        num_classes = ModelAdapter(self.explained).num_classes
        self.accuracy = MulticlassAccuracy(num_classes, average="micro") if num_classes else None
        self.image_accuracy = ImageAccuracy()  # the accuracy's per-image rows (its interval)
        self.register_buffer("evaluated", torch.zeros((), dtype=torch.long), persistent=False)
        self._overlays: list[dict[str, Any]] = []
        self.maps_cache = MapCache()
        self.reference_memo = reference_memo
        self.selection: dict[str, Any] = {}
        self.selection_accuracy: float | None = None
        self.selection_visited: list[tuple[int, bool]] | None = None
        self.seen = 0  # test images this process's loop has seen (index fallback for datasets without one)
        self.result: dict[str, Any] | None = None

    def set_selection(self, record: dict[str, Any], accuracy: float | None = None,
                      visited: list[tuple[int, bool]] | None = None) -> None:
        """How the runner chose the test images (recorded in the result); ``accuracy``: top-1 (%) of a
        prediction pass over the images it visited (``visited``: their dataset index and correctness),
        reported as the accuracy when the chosen images were filtered by correctness (they then all
        pass the filter)."""
        self.selection, self.selection_accuracy, self.selection_visited = dict(record), accuracy, visited

    @property
    def requirements(self) -> set[str]:
        """What the metrics need from the data and the attributor (``masks``, ``extra:<key>``, ...)."""
        return {r for metric in self.metrics.values() for r in metric.requires}

    def check_available(self, available: set[str], source: str) -> None:
        """Fail before the test loop when the data cannot feed a metric, or the attributor (the
        ``oracle_mask`` control needs the ground truth)."""
        if getattr(self.attributor, "needs_masks", False) and "masks" not in available:
            raise ConfigError(f"The {self.attributor_name} attributor explains with the ground-truth masks; {source} has "
                              "none. Evaluate it on a dataset with masks (e.g. the synthetic benchmark).")
        reexplaining = [label for label, metric in self.metrics.items() if "explain" in metric.requires]
        if getattr(self.attributor, "needs_masks", False) and reexplaining:  # the re-explained images have no masks
            raise ConfigError(f"The {self.attributor_name} attributor needs each image's ground-truth mask, but metric(s) "
                              f"{reexplaining} re-explain perturbed images, which have none: leave them out "
                              "(a table row: skip_metrics).")
        for metric in self.metrics.values():
            metric.check_available(available, source=source)

    def _reference(self, label: str, value: Any) -> Any:
        if value == "@explained":  # the explained model itself (e.g. its accuracy on a test variant)
            return self.explained
        if isinstance(value, str) and value.startswith("@"):
            if value[1:] not in self.references:
                raise ConfigError(
                    f"Metric {label!r} refers to model {value!r}, but the evaluation has reference models "
                    f"{sorted(self.references)}; pass it in reference_models."
                )
            return self.references[value[1:]]
        if isinstance(value, (list, tuple)) and any(isinstance(v, str) and v.startswith("@") for v in value):
            return [self._reference(label, v) for v in value]
        return value

    def _build_metric(self, label: str, spec: dict[str, Any]):
        """The metric of ``spec``; ``scorer: "@name"`` scores it with that reference model instead of
        the evaluation's scorer."""
        if "scorer" in spec and not (isinstance(spec["scorer"], str) and spec["scorer"].startswith("@")):
            raise ConfigError(f"metrics.{label}.scorer must name a reference model as \"@<name>\", got {spec['scorer']!r}.")
        spec = {k: self._reference(label, v) for k, v in spec.items()}
        name = spec.pop("name", label)
        scorer = spec.pop("scorer", self.scorer_model)
        return create_metric(name, scorer, **spec)

    # --- explaining --------------------------------------------------------------------------
    def explain(self, images: torch.Tensor, targets: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """The evaluated method's maps, optionally for another model (stability metrics); maps this
        step already computed for the same model and images come from :attr:`maps_cache`."""
        model = self.explained if model is None else model
        cached = self.maps_cache.get(model, images, targets)
        if cached is not None:
            return cached
        if model is self.explained:
            attributor = self.attributor
        else:
            if id(model) not in self._reference_attributors:
                reference = create(self.attributor_name, model, **self.attributor_options)
                if self.reference_memo is not None:
                    reference.use_memo(self.reference_memo)
                self._reference_attributors[id(model)] = reference
            attributor = self._reference_attributors[id(model)]
        maps = attributor.attribute(images, targets)
        self.maps_cache.put(model, images, targets, maps)
        return maps

    def _select(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows to evaluate and the classes to explain (``indices``: dataset indices of the batch)."""
        with torch.no_grad():
            preds = self.explained(images).argmax(-1)
        if self.accuracy is not None:
            self.accuracy.update(preds, labels)
            self.image_accuracy.add(preds == labels, indices)
        keep = torch.ones_like(labels, dtype=torch.bool)
        if self.samples == "correct":
            keep = preds == labels
        elif self.samples == "misclassified":
            keep = preds != labels
        targets = labels if self.target == "label" else preds
        return keep, targets

    def _attribute_naming_culprits(self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor,
                                   batch_idx: int, masks: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's maps; on failure (NaN/Inf map, bad input) the error names the dataset index of
        every image that fails on its own (maps never depend on batch-mates, so this finds them).
        An attributor with ``needs_masks`` (the ``oracle_mask`` control) is given the masks."""
        def masks_of(rows: slice) -> dict[str, Any]:
            return {"masks": None if masks is None else masks[rows]} if getattr(self.attributor, "needs_masks", False) else {}

        try:
            with torch.enable_grad():
                return self.attributor.attribute(images, targets, **masks_of(slice(None)))
        except ReproduceError as err:
            culprits = []
            for i in range(len(images)):
                try:
                    with torch.enable_grad():
                        self.attributor.attribute(images[i:i + 1], targets[i:i + 1], **masks_of(slice(i, i + 1)))
                except ReproduceError:
                    culprits.append(int(indices[i]))
            raise type(err)(
                f"Evaluating {self.attributor_name!r} failed on test image(s) with dataset index "
                f"{culprits or indices.tolist()} (test batch {batch_idx}, rank {self.global_rank}): {err}"
            ) from err

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images, labels = batch["image"], batch["label"]
        if "index" in batch:
            every = batch["index"]
        else:  # datasets without an index column: position in this process's stream
            every = self.seen + torch.arange(len(labels), device=images.device)
        self.seen += len(labels)
        keep, targets = self._select(images, labels, every)
        if not bool(keep.any()):
            return
        rows = keep.nonzero().flatten()
        images, labels, targets, indices = images[rows], labels[rows], targets[rows], every[rows]
        masks = batch["mask"][rows] if "mask" in batch else None
        self.maps_cache.clear()
        maps = self._attribute_naming_culprits(images, targets, indices, batch_idx, masks)
        self.maps_cache.put(self.explained, images, targets, maps)
        extra = {k: v[rows] for k, v in batch.items() if k.startswith(("images_", "object_"))}
        extra.update(cost_extras(self.attributor.last_cost, device=images.device))
        extra.update(getattr(self.attributor, "last_extras", lambda: {})())
        ab = AttributionBatch(
            images=images, labels=labels, targets=targets, maps=maps.detach(),
            masks=masks, indices=indices,
            extra={**extra, **({"parts": batch["parts"][rows]} if "parts" in batch else {})},
        )
        for metric in self.metrics.values():
            metric.update(ab, explain=self.explain)
        self.evaluated += len(rows)
        if len(self._overlays) < self.num_overlays:
            take = min(self.num_overlays - len(self._overlays), len(rows))
            denormalize = ModelAdapter(self.explained).data_config.denormalize
            # Stability side-by-side: the same images explained by each reference model a metric explains with.
            references = [self.explain(images[:take], targets[:take], model=m).detach().cpu()
                          for m in self.figure_references.values()]
            for i in range(take):
                self._overlays.append({
                    "image": denormalize(images[i]).clamp(0, 1).detach().cpu(),
                    "map": maps[i].detach().cpu(),
                    "references": torch.stack([r[i] for r in references]) if references else None,
                    "mask": ab.masks[i].cpu() if ab.masks is not None else None,
                    "label": int(labels[i]),
                    "index": int(indices[i]),
                })

    # --- results -----------------------------------------------------------------------------
    def on_test_epoch_end(self) -> None:
        evaluated = int(self.all_gather(self.evaluated).sum()) if self.trainer.world_size > 1 else int(self.evaluated)
        scalars: dict[str, float] = {}
        curves: dict[str, list[float]] = {}
        directions: dict[str, str] = {}
        if self.accuracy is not None:
            filtered = self.samples != "all" and self.selection_accuracy is not None
            scalars["accuracy"] = self.selection_accuracy if filtered else float(self.accuracy.compute()) * 100
            directions["accuracy"] = "higher"
        for label, metric in self.metrics.items():
            if evaluated == 0:
                continue
            for key, value in metric.compute().items():
                full = f"{label}/{key}"
                if value.dim() == 0:
                    scalars[full] = float(value)
                    if key in metric.directions:
                        directions[full] = metric.directions[key]
                else:
                    curves[full] = value.detach().cpu().tolist()
        per_image = self._per_image(evaluated)
        overlays = gather_overlays(self, self._overlays, self.num_overlays, len(self.figure_references))
        self.result = {
            "cell": self.cell,
            "attributor": {"name": self.attributor_name, "options": self.attributor_options},
            "metrics": {label: {**m.config(), **{k: v for k, v in self.metric_specs[label].items() if k == "scorer"}}
                        for label, m in self.metrics.items()},
            "target": self.target,
            "samples": self.samples,
            "selection": self.selection,
            "requested_images": self.selection.get("eval_images"),
            "evaluated_images": evaluated,
            "scalars": scalars,
            "directions": directions,
            "curves": curves,
            "world_size": self.trainer.world_size,
            # CPU results are reproducible for a fixed thread count only (`make reproduce-all` runs
            # tables side by side with fewer threads than a table alone): say which computed these.
            "torch_threads": torch.get_num_threads(),
            "overlay_indices": [o["index"] for o in overlays],  # dataset indices of the images in overlays.png
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "per_image": per_image,
        }
        if self.trainer.is_global_zero:
            # per_image.npz and maps.npz first: result.json, written last, is the commit marker.
            if self.result_path and per_image:
                self.result["per_image"] = write_per_image(os.path.join(os.path.dirname(self.result_path), PER_IMAGE_FILE),
                                                           per_image)
            figures = (None, None)
            if self.result_path:
                figures = write_figures(os.path.dirname(self.result_path), overlays, self.attributor_name,
                                        list(self.figure_references))
            log_result(self.loggers, scalars, curves, *figures)
            if self.result_path:
                atomic_write_json(self.result_path, self.result)

    def _per_image(self, evaluated: int) -> dict[str, dict[str, Any]]:
        """Every metric's per-image states (:mod:`reproduce.lit.cell_states`) and the accuracy's, over
        the images the reported accuracy counts. Collective under DDP: every rank calls it."""
        out = {}
        for label, metric in self.metrics.items():
            record = metric.per_image_record(metric_options(self.metric_specs[label])) if evaluated else None
            if record is not None:
                out[label] = record
        if self.accuracy is None:
            return out
        if self.samples != "all" and self.selection_accuracy is not None:  # the sampler's prediction pass
            if self.selection_visited:
                out["accuracy"] = {**accuracy_rows(self.selection_visited), "statistic": "mean"}
        else:
            states = self.image_accuracy.per_image_states()
            out["accuracy"] = {"indices": states["indices"].tolist(),
                               "states": {k: v.tolist() for k, v in states["states"].items()}, "statistic": "mean"}
        return out
