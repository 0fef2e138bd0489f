"""Guided Backpropagation (Springenberg et al., 2015): the gradient with every ReLU's backward pass
also zeroing negative incoming gradients, ``grad_in = relu(grad_out) * [input > 0]``.

This is Captum's ``GuidedBackprop`` (equal in a test): only ``nn.ReLU`` *modules* are modified, as
in Captum, so a functional ``F.relu`` inside a forward stays a plain ReLU. Each ReLU module gets a
forward hook that passes its output through an identity whose backward clamps the gradient at 0;
composed with the ReLU's own backward this is the guided rule, and it also works for in-place
ReLUs (timm's default) because the hook acts on the ReLU's output. The hooks are removed even on
error. Models without ``nn.ReLU`` modules (GELU ViTs) are refused at construction.

Adebayo et al. (NeurIPS'18) found Guided Backprop's maps nearly unchanged when the model's weights
are randomised (it acts like an edge detector): the sanity table (``conf/table/sanity.yaml``)
measures that here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from reproduce.attributors.gradient import GradientAttributor
from reproduce.attributors.registry import register
from reproduce.errors import InputError


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward keeps only the positive part of the incoming gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp_min(0)


def relu_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.ReLU)]


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """Every ``nn.ReLU`` of ``model`` back-propagates with the guided rule inside the block."""
    handles = [m.register_forward_hook(lambda _m, _inp, out: _PositiveGradient.apply(out)) for m in relu_modules(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@register("guided_backprop")
class GuidedBackprop(GradientAttributor):
    """Guided Backpropagation. Defaults as ``saliency``: ``abs=True`` and the maximum over channels
    (``abs=False, channel_reduction="sum"`` gives the signed map summed over channels)."""

    def __init__(self, model: nn.Module, abs: bool = True, channel_reduction: str = "max", normalize: str | None = None):
        super().__init__(model, abs=abs, channel_reduction=channel_reduction, normalize=normalize)
        if not relu_modules(model):
            raise InputError(
                f"guided_backprop modifies the backward pass of nn.ReLU modules, and {type(model).__name__} has "
                "none (e.g. a GELU Vision Transformer); use saliency or a CAM method for this model."
            )

    def signed(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with guided_relus(self.model):
            return self.gradient(x, target)
