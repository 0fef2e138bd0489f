"""The attributor contract, with input checks, target resolution and model-state hygiene in one place.

Subclasses implement ``_attribute(x, target) -> [B, H, W]``; :meth:`Attributor.attribute` wraps it:

- checks ``inputs`` (rank, channels, dtype, finite values, ViT input size) and ``target``;
- ``target=None`` means the model's prediction (argmax of the logits on the clean input);
- runs with the model in eval mode and frozen parameters, restoring both afterwards (even on error);
- counts forward/backward passes per image (``last_cost``);
- rejects NaN/Inf maps naming the sample, and applies the optional ``normalize`` at the very end.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
from torch import nn

from reproduce.checks import check_choice
from reproduce.errors import InputError, ReproduceError
from reproduce.models import ModelAdapter, count_passes, inference_state, record_backward

NORMALIZE_CHOICES = (None, "minmax", "max_abs", "sum")



def check_inputs(inputs: Any, adapter: ModelAdapter) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise InputError(f"inputs must be a torch.Tensor [B, C, H, W], got {type(inputs).__name__}.")
    if inputs.dim() == 3:
        raise InputError(
            f"inputs has shape {tuple(inputs.shape)}: add the batch dimension (inputs.unsqueeze(0))."
        )
    if inputs.dim() != 4:
        raise InputError(f"inputs must have rank 4 [B, C, H, W], got shape {tuple(inputs.shape)}.")
    if inputs.shape[0] == 0:
        raise InputError("inputs is an empty batch (B = 0).")
    if not inputs.is_floating_point():
        raise InputError(
            f"inputs must be a float tensor in the model's normalised space, got {inputs.dtype}; "
            "convert with adapter.data_config.normalize(images.float() / 255)."
        )
    channels = adapter.data_config.input_size[0]
    if getattr(adapter.model, "pretrained_cfg", None) and inputs.shape[1] != channels:
        raise InputError(f"inputs has {inputs.shape[1]} channels but the model takes {channels}.")
    if not torch.isfinite(inputs).all():
        bad = (~torch.isfinite(inputs)).flatten(1).any(1).nonzero().flatten().tolist()
        raise InputError(f"inputs contain NaN or Inf (samples {bad[:8]}); clean the images first.")
    if adapter.is_vit:
        expected = tuple(adapter.model.patch_embed.img_size)
        if tuple(inputs.shape[-2:]) != expected and not getattr(adapter.model, "dynamic_img_size", False):
            raise InputError(
                f"This ViT takes {expected[0]}x{expected[1]} inputs, got "
                f"{inputs.shape[-2]}x{inputs.shape[-1]}: resize the images to the model's input size."
            )
    return inputs


def resolve_target(model: nn.Module, adapter: ModelAdapter, x: torch.Tensor, target: Any) -> torch.Tensor:
    """A ``[B]`` long tensor of classes on ``x.device``; ``None`` -> the model's prediction."""
    b = x.shape[0]
    n = adapter.num_classes
    if target is None:
        with torch.no_grad():
            return model(x).argmax(-1)
    if isinstance(target, bool):
        raise InputError("target must be an int, a [B] tensor of class indices or None, not a bool.")
    if isinstance(target, int):
        t = torch.full((b,), target, dtype=torch.long, device=x.device)
    else:
        try:
            t = torch.as_tensor(target, device=x.device)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(
                f"target must be an int, a [B] tensor of class indices or None, got {type(target).__name__} {target!r:.60}."
            ) from None
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise InputError(f"target must hold integer class indices, got dtype {t.dtype}.")
        t = t.long().reshape(-1) if t.dim() <= 1 else t
        if t.dim() != 1 or t.numel() != b:
            raise InputError(f"target must have one class per sample ({b}), got shape {tuple(torch.as_tensor(target).shape)}.")
    if n is not None and (t.min() < 0 or t.max() >= n):
        raise InputError(f"target {t.tolist()[:8]} out of range: the model has {n} classes (0..{n - 1}).")
    return t


def normalize_maps(maps: torch.Tensor, how: str | None) -> torch.Tensor:
    if how is None:
        return maps
    flat = maps.flatten(1)
    if how == "minmax":
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        flat = (flat - lo) / (hi - lo).clamp_min(1e-12)
    elif how == "max_abs":
        flat = flat / flat.abs().max(1, keepdim=True).values.clamp_min(1e-12)
    elif how == "sum":
        total = flat.sum(1, keepdim=True)
        flat = flat / torch.where(total.abs() > 1e-12, total, torch.ones_like(total))
    return flat.view_as(maps)


class Attributor:
    """Base class: ``attribute(inputs[B,C,H,W], target) -> maps[B,H,W]`` (higher = more important).

    Options shared by every method: ``normalize`` in ``(None, "minmax", "max_abs", "sum")`` applied
    per map at the end (off by default: metrics that use magnitudes must see raw maps).
    """

    name: ClassVar[str] = ""
    # Keyword options for a fast smoke run (tests, tiny table configs); empty = defaults are fast.
    smoke_options: ClassVar[dict[str, Any]] = {}
    requires_vit: ClassVar[bool] = False
    # Why the generic contract tests cannot run this method on a random model (None = they can).
    contract_skip: ClassVar[str | None] = None
    #: Whether :meth:`last_extras` holds the method's per-step path (``step_area``, ``step_score``
    #: ``[B, k]``: SMDL's greedy search), which metrics such as ``average_highest_confidence`` read;
    #: an evaluator checks it before the test loop, so a metric that needs the path fails early.
    provides_steps: ClassVar[bool] = False

    @classmethod
    def smoke_config(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` made fast for a smoke run, keeping the method what it is (tables in smoke mode)."""
        return {**options, **cls.smoke_options}

    def __init__(self, model: nn.Module, normalize: str | None = None):
        check_choice("normalize", normalize, NORMALIZE_CHOICES)
        self.model = model
        self.adapter = ModelAdapter(model)
        self.normalize = normalize
        if self.requires_vit:
            self.adapter.require_vit(f"{self.name or type(self).__name__}")
        self.last_cost: dict[str, float] = {}

    def attribute(self, inputs: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        """Attribution maps ``[B, H, W]`` on ``inputs.device``.

        Args:
            inputs: a batch in the model's normalised input space.
            target: class per sample (int for all, ``[B]`` tensor) or ``None`` for the model's
                prediction on each clean input.
        """
        x = check_inputs(inputs, self.adapter)
        with inference_state(self.model):
            t = resolve_target(self.model, self.adapter, x, target)
            start = time.perf_counter()
            with count_passes(self.model) as counter:
                maps = self._attribute(x, t)
            elapsed = time.perf_counter() - start
        b = x.shape[0]
        self.last_cost = {
            "seconds_per_image": elapsed / b,
            "forward_per_image": counter.forward / b,
            "backward_per_image": counter.backward / b,
            **self.extra_cost(b),
        }
        if maps.shape != (b, *x.shape[-2:]):
            raise ReproduceError(
                f"{type(self).__name__} returned maps of shape {tuple(maps.shape)}, expected "
                f"{(b, *x.shape[-2:])}; this is a bug in the attributor."
            )
        if not torch.isfinite(maps).all():
            bad = (~torch.isfinite(maps)).flatten(1).any(1).nonzero().flatten().tolist()
            raise ReproduceError(
                f"{self.name or type(self).__name__} produced NaN/Inf maps for samples {bad[:8]}; "
                "check the model outputs on these inputs (e.g. saturated logits) or the method options."
            )
        return normalize_maps(maps, self.normalize)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # Declared hooks (defaults here; methods override what they provide).
    def last_extras(self) -> dict[str, Any]:
        """Per-sample values of the last :meth:`attribute` call that metrics read from
        ``AttributionBatch.extra``: tensors ``{key: [B, ...]}`` (SMDL's greedy path, see
        :attr:`provides_steps`) or a batch object with per-sample fields (MoXI's
        :class:`~reproduce.models.player_path.PlayerPath`); empty unless the method has some."""
        return {}

    def extra_cost(self, batch_size: int) -> dict[str, float]:
        """Method-specific entries added to :attr:`last_cost` after each call, per image (e.g. the
        super-pixel wrapper's segmentation time); ``batch_size`` is the number of images explained."""
        return {}

    def group_input(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What a wrapper that pools this method over image regions (the super-pixel wrapper) sums
        over each region: ``[B, ..., H, W]``.

        ``x`` is a checked batch and ``target`` a resolved ``[B]`` tensor: call it from inside an
        :meth:`attribute` call (a wrapper's own ``_attribute``), which sets the model state and
        counts the passes. By default the final map; gradient methods and noise tunnels override it
        with the signed, channel-summed attribution (of every noisy copy, ``[B, m, H, W]``), so that
        grouping comes before their nonlinearity (see :mod:`reproduce.attributors.superpixel`). It
        depends only on the model's weights, the method's options, the images and the targets, so a
        wrapper may reuse it across evaluations (:meth:`use_memo`). ``normalize`` is not applied.
        """
        return self._attribute(x, target)

    def finish_grouped(self, grouped: torch.Tensor) -> torch.Tensor:
        """The maps ``[B, H, W]`` from :meth:`group_input`'s result after a region wrapper grouped it
        (the nonlinearity that follows the grouping: ``abs``, per-copy sparsification, the average
        over noisy copies); by default the grouped map itself."""
        return grouped

    def use_memo(self, memo: Any) -> None:
        """Let this attributor reuse work that another evaluation of the same model, images and
        targets already did (an :class:`~reproduce.attributors.memo.AttributionMemo`); methods with no
        such work ignore it. The super-pixel wrapper keeps its base's :meth:`group_input` there."""

    # Helpers shared by gradient-based families.
    def target_scores(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logits.gather(1, target[:, None]).squeeze(1)

    def input_gradient(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d logit_target / d x, per sample (the sum over the batch keeps samples independent)."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            score = self.target_scores(self.model(x), target).sum()
            (grad,) = torch.autograd.grad(score, x)
        record_backward(self.model, x.shape[0])
        return grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
