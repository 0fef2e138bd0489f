"""Attention rollout (Abnar & Zuidema 2020) for timm Vision Transformers, as MoXI uses it.

Per block: fuse the heads' softmax attention ``[N, N]`` (mean by default), optionally zero the
smallest entries (``discard_ratio``, as jacobgil/vit-explain), add the identity for the residual
path and re-normalise each row to sum to 1. The rollout is the product ``A_L ... A_2 A_1``; the
class token's row over the patch tokens, on the token grid and upsampled, is the map.

MoXI divides ``A + I`` by its total sum instead of by row sums; with mean fusion and no discarding
every row of ``A + I`` sums to 2, so the two differ by the constant ``N`` per layer (the map by
``N ** L``): rankings, insertion and deletion curves are identical.

The rollout is class-agnostic: ``target`` is accepted for the common contract and ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from reproduce.checks import check_choice
from reproduce.attributors.base import Attributor
from reproduce.attributors.cam import check_upsample, upsample_maps
from reproduce.attributors.registry import register
from reproduce.errors import InputError, ReproduceError
from reproduce.models import record_attention

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attention: torch.Tensor, how: str) -> torch.Tensor:
    """``[B, heads, N, N]`` -> ``[B, N, N]``."""
    if how == "mean":
        return attention.mean(dim=1)
    if how == "max":
        return attention.amax(dim=1)
    return attention.amin(dim=1)


def discard_lowest(attention: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the ``ratio`` smallest entries of each ``[N, N]`` map, never the class-token self-entry."""
    if ratio <= 0:
        return attention
    flat = attention.flatten(1)
    k = int(flat.shape[1] * ratio)
    if k == 0:
        return attention
    ranking = flat.clone()
    ranking[:, 0] = float("inf")  # entry (0, 0): the class token attending to itself
    drop = ranking.topk(k, dim=1, largest=False).indices
    return flat.scatter(1, drop, 0.0).view_as(attention)


def rollout(attentions: list[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """Rollout ``[B, N, N]`` of per-block attention ``[B, heads, N, N]`` listed input to output."""
    result = None
    for attention in attentions:
        a = discard_lowest(fuse_heads(attention.float(), head_fusion), discard_ratio)
        a = a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    return result


@register("attention_rollout")
class AttentionRollout(Attributor):
    """Attention rollout map of the class token over the patch tokens.

    Args:
        model: a timm ViT with a class token.
        head_fusion: ``"mean"`` (Abnar & Zuidema, MoXI), ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction of each fused attention map's entries set to 0 before adding the
            identity (vit-explain's filter; 0 = none, MoXI's setting).
        upsample: ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"`` from the token grid.
        normalize: see :class:`Attributor`.

    ``target`` is ignored: the rollout does not depend on the class.
    """

    requires_vit = True

    def __init__(
        self,
        model: nn.Module,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        upsample: str = "bilinear",
        normalize: str | None = None,
    ):
        super().__init__(model, normalize=normalize)
        if getattr(model, "cls_token", None) is None:
            raise InputError(
                f"{type(model).__name__} has no class token, and attention rollout reads the "
                "class token's row; use a ViT with a class token or a CAM/perturbation method."
            )
        check_choice("head_fusion", head_fusion, HEAD_FUSIONS, error=InputError)
        if not 0.0 <= float(discard_ratio) < 1.0:
            raise InputError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}.")
        self.head_fusion = head_fusion
        self.discard_ratio = float(discard_ratio)
        self.upsample = check_upsample(upsample)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), record_attention(self.model) as attentions:
            self.model(x)
        depth = len(self.model.blocks)
        if len(attentions) != depth:
            raise ReproduceError(
                f"Recorded {len(attentions)} attention maps for {depth} blocks; the model's "
                "attention modules are not timm's standard Attention."
            )
        result = rollout(attentions, self.head_fusion, self.discard_ratio)
        gh, gw = self.adapter.token_grid
        cls_row = result[:, 0, self.adapter.num_prefix_tokens :]
        grid = cls_row.reshape(x.shape[0], gh, gw).to(x.dtype)
        return upsample_maps(grid, x.shape[-2:], self.upsample)
