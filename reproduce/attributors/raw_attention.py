"""Raw attention (LATEC's "RA"): the class token's softmax attention over the patch tokens in the
last block of a timm ViT, heads fused as in :mod:`reproduce.attributors.attention` (mean by default,
or max / min), on the token grid and upsampled to the image.

Unlike rollout, nothing is propagated through the earlier blocks: the map is row 0 of the last
block's ``softmax(q k^T / sqrt(d))`` (read after the softmax, before attention dropout, which is
inactive in eval mode). Class-agnostic: ``target`` is accepted for the common contract and ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from reproduce.attributors.attention import HEAD_FUSIONS, fuse_heads
from reproduce.attributors.base import Attributor
from reproduce.attributors.cam import check_upsample, upsample_maps
from reproduce.attributors.registry import register
from reproduce.checks import check_choice
from reproduce.errors import InputError, ReproduceError
from reproduce.models import record_attention


@register("raw_attention")
class RawAttention(Attributor):
    """Last-block class-token attention over the patches.

    Args:
        model: a timm ViT with a class token.
        head_fusion: ``"mean"`` (default), ``"max"`` or ``"min"`` over heads.
        upsample: ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"`` from the token grid.
    """

    requires_vit = True

    def __init__(self, model: nn.Module, head_fusion: str = "mean", upsample: str = "bilinear", normalize: str | None = None):
        super().__init__(model, normalize=normalize)
        if getattr(model, "cls_token", None) is None:
            raise InputError(
                f"{type(model).__name__} has no class token, and raw attention reads the class token's row; "
                "use a ViT with a class token or a CAM/perturbation method."
            )
        self.head_fusion = check_choice("head_fusion", head_fusion, HEAD_FUSIONS, error=InputError)
        self.upsample = check_upsample(upsample)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), record_attention(self.model) as attentions:
            self.model(x)
        if len(attentions) != len(self.model.blocks):
            raise ReproduceError(
                f"Recorded {len(attentions)} attention maps for {len(self.model.blocks)} blocks; the model's "
                "attention modules are not timm's standard Attention."
            )
        last = fuse_heads(attentions[-1].float(), self.head_fusion)  # [B, N, N]
        gh, gw = self.adapter.token_grid
        cls_row = last[:, 0, self.adapter.num_prefix_tokens:]
        return upsample_maps(cls_row.reshape(x.shape[0], gh, gw).to(x.dtype), x.shape[-2:], self.upsample)
