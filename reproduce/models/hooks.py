"""Temporary model surgery, always undone: every helper here is a context manager.

- ``inference_state``: eval mode and frozen parameters for attribution, restored afterwards.
- ``capture_output``: the output tensor of one sub-module (a live graph node, so gradients reach it).
- ``record_attention``: attention probabilities of every timm attention block (fused SDPA off).
- ``count_passes``: forward/backward passes per image, for the cost metric and the benchmarks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from reproduce.errors import InputError

_COUNTER_ATTR = "_reproduce_pass_counter"


@contextmanager
def inference_state(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with ``requires_grad=False`` parameters; restore both on exit.

    Eval mode matters for correctness, not only speed: BatchNorm in train mode mixes statistics of
    the batch, so a sample's attribution would depend on its batch-mates.
    """
    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        model.eval()
        for p in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes.items():  # each module's own flag: Module.train() would recurse
            m.training = training
        for p, flag in flags.items():
            p.requires_grad_(flag)


@dataclass
class Captured:
    value: torch.Tensor | None = None


def get_submodule(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule`` that accepts negative indices (``blocks.-1.norm1``)."""
    module = model
    for part in name.split("."):
        if part.lstrip("-").isdigit() and isinstance(module, (nn.Sequential, nn.ModuleList)):
            module = module[int(part)]
        elif hasattr(module, part) and isinstance(getattr(module, part), nn.Module):
            module = getattr(module, part)
        else:
            raise InputError(
                f"Layer {name!r} does not exist in {type(model).__name__} (no sub-module {part!r}). "
                "Pass one of adapter.cam_layer_names() or a name from model.named_modules()."
            )
    return module


@contextmanager
def capture_output(module: nn.Module) -> Iterator[Captured]:
    """Record the (last) output of ``module`` during the forward passes run inside the block."""
    holder = Captured()

    def hook(_m, _inp, out):
        holder.value = out[0] if isinstance(out, (tuple, list)) else out

    handle = module.register_forward_hook(hook)
    try:
        yield holder
    finally:
        handle.remove()


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "fused_attn") and hasattr(m, "attn_drop")]


@contextmanager
def record_attention(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect softmax attention ``[B, heads, N, N]`` of each block, in execution order.

    timm's fused attention (SDPA) never materialises the probabilities, so hooks would see nothing;
    it is switched off here and switched back to its previous setting on exit.
    """
    modules = _attention_modules(model)
    if not modules:
        raise InputError(
            f"{type(model).__name__} has no timm attention blocks; attention methods need a timm "
            "ViT (e.g. vit_micro_p8, vit_tiny_patch16_224)."
        )
    maps: list[torch.Tensor] = []
    saved = [(m, m.fused_attn) for m in modules]
    handles = [m.attn_drop.register_forward_hook(lambda _m, _i, out: maps.append(out)) for m in modules]
    try:
        for m in modules:
            m.fused_attn = False
        yield maps
    finally:
        for h in handles:
            h.remove()
        for m, flag in saved:
            m.fused_attn = flag


@dataclass
class PassCounter:
    """Rows pushed through the model (forward) and rows whose gradient was taken (backward)."""

    forward: int = 0
    backward: int = 0


def record_forward(model: nn.Module, rows: int) -> None:
    """Count forward rows run by a path that bypasses ``model.forward`` (e.g. token dropping)."""
    counter = getattr(model, _COUNTER_ATTR, None)
    if counter is not None:
        counter.forward += int(rows)


def record_backward(model: nn.Module, rows: int) -> None:
    counter = getattr(model, _COUNTER_ATTR, None)
    if counter is not None:
        counter.backward += int(rows)


@contextmanager
def count_passes(model: nn.Module) -> Iterator[PassCounter]:
    """Count forward rows through ``model.forward`` plus those reported by ``record_*``."""
    counter = PassCounter()
    previous = getattr(model, _COUNTER_ATTR, None)
    setattr(model, _COUNTER_ATTR, counter)

    def pre_hook(_m, args):
        if args and isinstance(args[0], torch.Tensor):
            record_forward(model, args[0].shape[0])

    # One hook per model: a nested block only swaps the active counter and hands its counts on.
    handle = model.register_forward_pre_hook(pre_hook) if previous is None else None
    try:
        yield counter
    finally:
        if handle is not None:
            handle.remove()
            delattr(model, _COUNTER_ATTR)
        else:
            setattr(model, _COUNTER_ATTR, previous)
            previous.forward += counter.forward
            previous.backward += counter.backward
