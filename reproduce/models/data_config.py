"""The data configuration that travels with a model: mean, std and input size.

Attribution baselines ("0 = mean colour"), segmenters (which need the image in [0, 1]) and the
data pipeline all read these numbers from the model, never from a separate constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DataConfig:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]  # (C, H, W)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1) if x.dim() == 4 else (-1, 1, 1)
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return mean, std

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Map an image in [0, 1] ([C,H,W] or [B,C,H,W]) to the model's input space."""
        mean, std = self._stats(x01)
        return (x01 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: model input back to [0, 1] pixel space (not clipped)."""
        mean, std = self._stats(x)
        return x * std + mean

    def value_of(self, rgb01: float | tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        """The normalised-space value ``[C,1,1]`` of a colour given in [0, 1] (e.g. 0 = black)."""
        c = len(self.mean)
        colour = torch.as_tensor(rgb01, dtype=like.dtype, device=like.device).expand(c).reshape(c, 1, 1)
        return self.normalize(colour)


def data_config_of(model: nn.Module) -> DataConfig:
    """Read the data config a model carries (timm ``pretrained_cfg``); identity stats otherwise."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    channels = size[0]
    mean = tuple(float(v) for v in cfg.get("mean", (0.0,) * channels))
    std = tuple(float(v) for v in cfg.get("std", (1.0,) * channels))
    return DataConfig(mean=mean, std=std, input_size=(int(size[0]), int(size[1]), int(size[2])))
