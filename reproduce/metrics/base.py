"""What every attribution metric receives and promises.

``AttributionBatch`` is the one input format: images in the model's normalised space, the maps to
judge, the classes explained, optional ground truth and extras (background-shifted images, SMDL's
per-step areas, attributor cost). ``AttributionMetric`` is a ``torchmetrics.Metric`` built once
per model with every protocol knob as a constructor argument:

- ``update(batch, explain=None)`` accumulates DDP-reducible state (sums / histograms), so updates
  over several batches equal one big batch and two processes equal one;
- ``explain(images, targets, model=None) -> maps`` re-runs the evaluated attributor (robustness and
  stability metrics; ``model=`` explains with another model);
- ``compute() -> dict[str, Tensor]``: 0-d tensors are scalars, 1-d tensors are curves; a curve
  ``K`` has its x-axis under ``K + "_x"``. Every scalar key is either in ``directions``
  (``"higher"``/``"lower"`` is better) or in ``diagnostics`` (spreads and counts with no better
  direction, e.g. ``*_std``). Keys are local to the metric: the evaluator prefixes them with the
  metric's label;
- ``requires`` names what the batch must carry (``"masks"``, ``"explain"``, ``"extra:<key>"``) so
  a runner can fail before any work (:meth:`AttributionMetric.check_available`);
- ``config()`` returns every knob, recorded with each result;
- per-image states (:mod:`reproduce.metrics.per_image`): every image's own contribution to the
  sum states is also kept (a ``cat`` state), so the reported statistic of any subset of the images
  (a bootstrap resample) is ``statistic(sums over its rows)``, exactly what ``compute()`` would
  report on that subset (:mod:`reproduce.runtime.intervals`).

NaN maps or NaN scores are never averaged away: they raise, naming the dataset indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import nn
from torchmetrics import Metric

from reproduce.errors import ConfigError, InputError
from reproduce.metrics.per_image import PerImageTracking

Explain = Callable[..., torch.Tensor]

MASKS = "masks"
EXPLAIN = "explain"
EXTRA = "extra:"


@dataclass
class AttributionBatch:
    """One batch of attributions to judge.

    Attributes:
        images: ``[B, C, H, W]`` float, in the model's normalised input space.
        labels: ``[B]`` ground-truth classes.
        targets: ``[B]`` classes the maps explain.
        maps: ``[B, H, W]`` attribution maps (higher = more important), same size as the images.
        masks: ``[B, H, W]`` bool ground-truth evidence, or ``None`` when the dataset has none.
        indices: ``[B]`` dataset indices, used to name offending samples in errors.
        extra: named extras, e.g. ``images_bg_shift`` ``[B, C, H, W]``, ``step_area``/``step_score``
            ``[B, k]`` (SMDL's greedy path), cost entries (see :mod:`reproduce.metrics.cost`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    maps: torch.Tensor
    masks: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dim() != 4:
            raise InputError(
                f"images must be a [B, C, H, W] tensor, got "
                f"{tuple(self.images.shape) if isinstance(self.images, torch.Tensor) else type(self.images).__name__}."
            )
        if not self.images.is_floating_point():
            raise InputError(f"images must be float (the model's normalised space), got {self.images.dtype}.")
        b, _, h, w = self.images.shape
        if b == 0:
            raise InputError("The batch is empty (B = 0).")
        device = self.images.device
        if self.indices is None:
            self.indices = torch.arange(b, device=device)
        for name in ("labels", "targets", "indices"):
            value = torch.as_tensor(getattr(self, name), device=device)
            if value.is_floating_point() or value.dim() != 1 or value.numel() != b:
                raise InputError(f"{name} must be a [B] = [{b}] integer tensor, got shape {tuple(value.shape)} ({value.dtype}).")
            setattr(self, name, value.long())
        if not isinstance(self.maps, torch.Tensor):
            raise InputError(f"maps must be a [B, H, W] tensor, got {type(self.maps).__name__}.")
        if self.maps.dim() == 4 and self.maps.shape[1] == 1:
            self.maps = self.maps[:, 0]
        if tuple(self.maps.shape) != (b, h, w):
            raise InputError(
                f"maps have shape {tuple(self.maps.shape)} but the images need [B, H, W] = {(b, h, w)}; "
                "upsample the maps to the image size (attributors return image-sized maps)."
            )
        if not self.maps.is_floating_point():
            self.maps = self.maps.float()
        check_finite(self.maps, self.indices, "maps", "check the attributor on these samples")
        if self.masks is not None:
            masks = self.masks[:, 0] if self.masks.dim() == 4 and self.masks.shape[1] == 1 else self.masks
            if tuple(masks.shape) != (b, h, w):
                raise InputError(
                    f"masks have shape {tuple(masks.shape)} but the maps are {(b, h, w)}; resize the "
                    "ground truth to the image size with nearest-neighbour interpolation."
                )
            if masks.dtype != torch.bool:
                if masks.is_floating_point() and not torch.all((masks == 0) | (masks == 1)):
                    raise InputError("masks must be boolean (or 0/1 valued); threshold soft masks first.")
                masks = masks.bool()
            self.masks = masks

    @property
    def size(self) -> int:
        return int(self.images.shape[0])

    def names(self, rows: torch.Tensor | list[int]) -> list[int]:
        """Dataset indices of batch rows (for error messages)."""
        rows = torch.as_tensor(rows, device=self.indices.device).long().flatten()
        return self.indices[rows].tolist()


def check_finite(values: torch.Tensor, indices: torch.Tensor, what: str, fix: str) -> None:
    """Raise naming the dataset indices of rows of ``values`` that hold NaN/Inf."""
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()
        names = indices.to(rows.device)[rows].tolist()
        raise InputError(f"{what} contain NaN/Inf for dataset indices {names[:10]}; {fix}.")


def ones(batch: AttributionBatch) -> torch.Tensor:
    """``[B]`` float64 ones: each image's row of a ``count`` state."""
    return torch.ones(batch.size, dtype=torch.float64, device=batch.images.device)


def percent_key(p: float) -> str:
    """``0.05 -> "5"``, ``0.025 -> "2.5"``: fractions as percentages in result keys."""
    return f"{round(p * 100, 6):g}"


def describe_model(model: nn.Module | None) -> Any:
    """A JSON-friendly description of a model for ``config()``."""
    if model is None:
        return None
    spec = getattr(model, "reproduce_spec", None)
    return dict(spec) if isinstance(spec, dict) else type(model).__name__


class AttributionMetric(PerImageTracking, Metric):
    """Base class of every metric in :mod:`reproduce.metrics` (see the module docstring).

    Subclasses set ``name`` (the registry name), ``needs_model``, ``requires``, ``directions`` and
    ``diagnostics`` (instance properties where they depend on the configuration), call :meth:`_record` with their
    knobs, and implement ``_update(batch, explain)`` and ``_compute()``.
    """

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False
    requires: tuple[str, ...] = ()
    directions: dict[str, str] = {}
    diagnostics: tuple[str, ...] = ()

    full_state_update = False
    higher_is_better = None

    def __init__(self, model: nn.Module | None = None):
        super().__init__()
        if self.needs_model and model is None:
            raise ConfigError(f"The {self.name or type(self).__name__} metric scores a model: pass model=<classifier>.")
        if model is not None and not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        # Held in a list so the classifier is not registered as a sub-module of the metric (it must
        # not be moved, saved in the metric's state_dict or copied with it).
        self._model_ref = [model]
        self._config: dict[str, Any] = {}
        self._per_image_names: list[str] = []  # sum states that also keep per-image rows

    @property
    def model(self) -> nn.Module | None:
        return self._model_ref[0]

    def _record(self, **knobs: Any) -> None:
        self._config.update(knobs)

    def config(self) -> dict[str, Any]:
        """Every protocol knob of this metric (JSON-friendly), plus its name and model."""
        out = {"metric": self.name}
        if self.model is not None:
            out["model"] = describe_model(self.model)
        out.update(self._config)
        return out

    # --- requirements ---------------------------------------------------------------------
    def check_available(self, available: Iterable[str], source: str = "the dataset") -> None:
        """Fail before any work when ``available`` lacks something this metric requires.

        ``available`` holds requirement names (``"masks"``, ``"explain"``, ``"extra:<key>"``) that
        the runner can provide, e.g. ``{"masks"} if dataset.has_masks else set()``.
        """
        have = set(available)
        for need in self.requires:
            if need not in have:
                raise ConfigError(self._missing_message(need, source))

    def _missing_message(self, need: str, source: str) -> str:
        who = self.name or type(self).__name__
        if need == MASKS:
            return (
                f"{who} needs ground-truth masks; {source} has none. Evaluate it on a dataset with "
                "masks (has_masks=True) or drop it from the metric list."
            )
        if need == EXPLAIN:
            return (
                f"{who} re-runs the attributor on perturbed inputs: pass explain=<callable(images, "
                "targets, model=None) -> maps> to update()."
            )
        if need.startswith(EXTRA):
            key = need[len(EXTRA):]
            return (
                f"{who} needs batch.extra[{key!r}], which {source} does not provide; "
                f"{_EXTRA_HINTS.get(key, 'add it to the batch extras')}."
            )
        return f"{who} needs {need!r}, which {source} does not provide."

    def _check_batch(self, batch: AttributionBatch, explain: Explain | None) -> None:
        if not isinstance(batch, AttributionBatch):
            raise InputError(f"update() takes an AttributionBatch, got {type(batch).__name__}.")
        available = set(f"{EXTRA}{k}" for k in batch.extra)
        if batch.masks is not None:
            available.add(MASKS)
        if explain is not None:
            available.add(EXPLAIN)
        missing = [r for r in self.requires if r not in available]
        if missing:
            raise InputError(self._missing_message(missing[0], "this batch"))

    # --- torchmetrics hooks ------------------------------------------------------------------
    def update(self, batch: AttributionBatch, explain: Explain | None = None) -> None:  # type: ignore[override]
        self._check_batch(batch, explain)
        self._update(batch, explain)

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self._compute()

    def _update(self, batch: AttributionBatch, explain: Explain | None) -> None:
        raise NotImplementedError

    def _compute(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # --- helpers for subclasses --------------------------------------------------------------
    def _add_sum(self, name: str, shape: tuple[int, ...] = ()) -> None:
        """A float64 sum state (float64 keeps pixel counts over whole test sets exact)."""
        self.add_state(name, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def _accumulate(self, name: str, value: torch.Tensor) -> None:
        state = getattr(self, name)
        setattr(self, name, state + value.detach().to(device=state.device, dtype=state.dtype))

    def _require_samples(self, count: torch.Tensor, what: str = "images") -> float:
        n = float(count)
        if n <= 0:
            raise InputError(f"{self.name}: compute() was called before any {what} were evaluated; call update() first.")
        return n

    def _explain(self, explain: Explain, images: torch.Tensor, targets: torch.Tensor, batch: AttributionBatch,
                 model: nn.Module | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``explain`` with gradients enabled (torchmetrics disables them in ``update``)."""
        with torch.enable_grad():
            maps = explain(images, targets) if model is None else explain(images, targets, model=model)
        if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != (images.shape[0], *images.shape[-2:]):
            got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise InputError(
                f"explain() must return maps [B, H, W] = {(images.shape[0], *images.shape[-2:])}, got {got}."
            )
        maps = maps.detach().float()
        indices = batch.indices if rows is None else batch.indices[rows]
        check_finite(maps, indices, f"Re-explained maps ({self.name})", "check the attributor on these samples")
        return maps

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({knobs})"


_EXTRA_HINTS = {
    "images_bg_shift": "build the dataset with its background-shift variant (ImageNet-9 mixed_next)",
    "step_area": "evaluate the smdl attributor, which exposes its per-step revealed areas",
    "step_score": "evaluate the smdl attributor, which exposes its per-step scores",
}

