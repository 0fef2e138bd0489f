"""The one model surface attributors and metrics talk to.

``ModelAdapter(model)`` answers, for any classifier: its data config, whether it is a ViT and its
token grid, which layers a CAM can use and how to fold their output to a ``[B, C, h, w]`` grid, and
how to run it on a subset of patch tokens. Nothing outside this file special-cases an
architecture.
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import nn

from reproduce.errors import InputError
from reproduce.models.data_config import DataConfig, data_config_of
from reproduce.models.hooks import capture_output, get_submodule, record_forward

FEATURES = "features"  # the tensor ``forward_head`` consumes: the natural CAM layer of a CNN


class ModelAdapter:
    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise InputError(f"Expected a torch.nn.Module classifier, got {type(model).__name__}.")
        self.model = model

    # --- data -------------------------------------------------------------------------------
    @cached_property
    def data_config(self) -> DataConfig:
        return data_config_of(self.model)

    @property
    def num_classes(self) -> int | None:
        n = getattr(self.model, "num_classes", None)
        return int(n) if isinstance(n, int) else None

    # --- ViT structure ----------------------------------------------------------------------
    @cached_property
    def is_vit(self) -> bool:
        m = self.model
        return all(hasattr(m, a) for a in ("patch_embed", "blocks", "_pos_embed", "num_prefix_tokens"))

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 0)) if self.is_vit else 0

    @property
    def token_grid(self) -> tuple[int, int] | None:
        if not self.is_vit:
            return None
        gh, gw = self.model.patch_embed.grid_size
        return int(gh), int(gw)

    def require_vit(self, what: str) -> None:
        if not self.is_vit:
            raise InputError(
                f"{what} needs a timm Vision Transformer, but the model is a "
                f"{type(self.model).__name__}. Use a ViT (e.g. vit_micro_p8) or a method that "
                "works on any model (e.g. fill masking instead of token dropping)."
            )

    # --- CAM layers -------------------------------------------------------------------------
    @property
    def default_cam_layer(self) -> str:
        """``features`` for CNNs; for ViTs the input norm of the last block.

        A ViT that pools the class token passes no gradient to the patch tokens after the last
        block, so the last block's ``norm1`` (as pytorch-grad-cam recommends) is the last layer
        where patch tokens still carry class evidence.
        """
        if self.is_vit:
            return f"blocks.{len(self.model.blocks) - 1}.norm1"
        return FEATURES

    def cam_layer_names(self) -> list[str]:
        names = [FEATURES] if hasattr(self.model, "forward_features") else []
        for info in getattr(self.model, "feature_info", None) or []:
            if isinstance(info, dict) and "module" in info:
                names.append(info["module"])
        if self.is_vit:
            names += [f"blocks.{i}.norm1" for i in range(len(self.model.blocks))]
        return list(dict.fromkeys(names))

    def forward_with_activation(
        self, x: torch.Tensor, layer: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the raw output of ``layer`` (a graph node: take gradients w.r.t. it).

        Fold the activation (and its gradient) with :meth:`fold` to get a spatial grid.
        """
        layer = layer or self.default_cam_layer
        m = self.model
        if layer == FEATURES:
            if not (hasattr(m, "forward_features") and hasattr(m, "forward_head")):
                raise InputError(
                    f"{type(m).__name__} has no forward_features/forward_head; name a CAM layer "
                    "explicitly (one of model.named_modules())."
                )
            feats = m.forward_features(x)
            logits = m.forward_head(feats)
            record_forward(m, x.shape[0])
            return logits, feats
        module = get_submodule(m, layer)
        with capture_output(module) as cap:
            logits = m(x)
        if cap.value is None:
            raise InputError(f"Layer {layer!r} did not run during the forward pass; pick another layer.")
        return logits, cap.value

    def fold(self, t: torch.Tensor) -> torch.Tensor:
        """Fold a layer output to ``[B, C, h, w]``: NCHW stays, ViT tokens drop prefix tokens."""
        if t.dim() == 4:
            return t
        if t.dim() == 3 and self.is_vit:
            gh, gw = self.token_grid
            n = t.shape[1]
            if n == gh * gw + self.num_prefix_tokens:
                t = t[:, self.num_prefix_tokens :]
            elif n != gh * gw:
                raise InputError(f"Cannot fold {n} tokens onto the {gh}x{gw} token grid.")
            return t.reshape(t.shape[0], gh, gw, t.shape[-1]).permute(0, 3, 1, 2)
        raise InputError(
            f"Layer output of shape {tuple(t.shape)} is not a spatial map; choose a convolutional "
            "layer or a ViT block."
        )

    # --- token dropping ---------------------------------------------------------------------
    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after patch embedding and position embedding (prefix tokens first)."""
        self.require_vit("Token dropping")
        m = self.model
        t = m.patch_embed(x)
        t = m._pos_embed(t)
        t = m.patch_drop(t)
        return m.norm_pre(t)

    def forward_kept_tokens(self, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Run the transformer on the prefix tokens plus the patch tokens ``keep`` indexes.

        Args:
            tokens: ``[B, P + N, D]`` from :meth:`embed_tokens`.
            keep: ``[B, M, k]`` patch indices (0..N-1); each image is evaluated on M subsets of
                equal size k, in one batch of ``B*M`` sequences.
        Returns:
            logits ``[B, M, classes]``.
        """
        m = self.model
        b, m_sub, k = keep.shape
        p = self.num_prefix_tokens
        d = tokens.shape[-1]
        patches = tokens[:, p:].unsqueeze(1).expand(b, m_sub, -1, d)
        kept = torch.gather(patches, 2, keep.unsqueeze(-1).expand(b, m_sub, k, d))
        prefix = tokens[:, :p].unsqueeze(1).expand(b, m_sub, p, d)
        seq = torch.cat([prefix, kept], dim=2).reshape(b * m_sub, p + k, d)
        seq = m.norm(m.blocks(seq))
        record_forward(m, b * m_sub)
        return m.forward_head(seq).reshape(b, m_sub, -1)

    def forward_tokens(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` seen through the patch tokens in ``keep`` (``[B, k]`` or ``[B, M, k]``).

        Tokens are dropped after the position embedding and the class token is kept, as MoXI does;
        keeping every token reproduces the stock forward.
        """
        squeeze = keep.dim() == 2
        keep3 = keep.unsqueeze(1) if squeeze else keep
        logits = self.forward_kept_tokens(self.embed_tokens(x), keep3.long())
        return logits[:, 0] if squeeze else logits
