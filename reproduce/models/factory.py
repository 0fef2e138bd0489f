"""One factory over timm for every classifier in the package.

``create_model`` accepts any timm architecture name, the small presets below (sized to train on the
64x64 embedded benchmark in minutes on a CPU) and ``efficientnet_lite0_imagenet``, the real
ImageNet-pretrained network that works offline. Every model carries its data config
(``pretrained_cfg`` mean/std/input size) and a ``reproduce_spec`` from which :func:`load_model`
rebuilds it from a checkpoint (``checkpoint.py`` below only reads and applies weights).
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import timm
from torch import nn

from reproduce.errors import ConfigError
from reproduce.models.checkpoint import apply_weights, load_weights, model_spec_of, read_checkpoint

# name -> (timm architecture, constructor overrides, default image size)
PRESETS: dict[str, tuple[str, dict[str, Any], int]] = {
    # ResNet-10-T with output stride 16: a 4x4 CAM grid at 64x64 (14x14 at 224), ~0.2 s per
    # training step of 64 images on 2 CPU cores.
    "resnet10t_os16": ("resnet10t", {"output_stride": 16}, 64),
    # A 4-block ViT with 8x8 patches: an 8x8 token grid at 64x64 (the MoXI player grid).
    "vit_micro_p8": (
        "vit_tiny_patch16_224",
        {"patch_size": 8, "depth": 4, "embed_dim": 128, "num_heads": 4},
        64,
    ),
}
PRETRAINED_OFFLINE = ("efficientnet_lite0_imagenet",)


def available_models() -> list[str]:
    """Preset and offline-pretrained names; any ``timm.list_models()`` name is accepted too."""
    return sorted([*PRESETS, *PRETRAINED_OFFLINE])


def _unknown_model(name: str) -> ConfigError:
    pool = [*available_models(), *timm.list_models()]
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(
        f"Unknown model {name!r}.{hint} Use one of {available_models()} or any name from "
        "timm.list_models()."
    )


def _check_image_size(model: nn.Module, name: str, img_size: int) -> None:
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and hasattr(patch_embed, "patch_size"):
        patch = patch_embed.patch_size[0]
        if img_size % patch:
            raise ConfigError(
                f"Model {name!r} uses {patch}x{patch} patches and cannot take {img_size}x{img_size} "
                f"images: pick an image size divisible by {patch} (e.g. {img_size // patch * patch or patch})."
            )
        return
    info = getattr(model, "feature_info", None)
    reduction = None
    if info is not None:
        try:
            reduction = max(int(f["reduction"]) for f in info)
        except (TypeError, KeyError):  # feature_info is a FeatureInfo object on some timm models
            reduction = int(info.reduction()[-1]) if hasattr(info, "reduction") else None
    if reduction and img_size < reduction:
        raise ConfigError(
            f"Model {name!r} downsamples by {reduction}, so {img_size}x{img_size} images leave no "
            f"spatial map: use images of at least {reduction}x{reduction}."
        )


def _timm_model(name: str, num_classes: int | None, img_size: int | None, pretrained: bool, in_chans: int,
                kwargs: dict[str, Any]) -> tuple[nn.Module, int]:
    """The timm model of a preset or a timm architecture name, and the input size it will see."""
    if name in PRESETS:
        arch, overrides, default_size = PRESETS[name]
        size = img_size or default_size
    elif timm.is_model(name):
        arch, overrides, size = name, {}, img_size
    else:
        raise _unknown_model(name)
    overrides = {**overrides, **kwargs}
    build_kwargs: dict[str, Any] = dict(overrides, in_chans=in_chans)
    if num_classes is not None:
        build_kwargs["num_classes"] = num_classes
    is_vit_family = "vit" in arch or "deit" in arch
    if size is not None and is_vit_family:
        build_kwargs["img_size"] = size
    try:
        model = timm.create_model(arch, pretrained=pretrained, **build_kwargs)
    except TypeError as err:
        raise ConfigError(f"Model {name!r} does not accept these arguments: {err}.") from err
    return model, size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def create_model(
    name: str,
    num_classes: int | None = None,
    img_size: int | None = None,
    pretrained: bool = False,
    checkpoint: str | None = None,
    in_chans: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """Build a classifier.

    Args:
        name: a preset (``resnet10t_os16``, ``vit_micro_p8``), ``efficientnet_lite0_imagenet`` or a
            timm architecture name.
        num_classes: classifier outputs (1000 for the pretrained ImageNet model).
        img_size: square input size the model will see; checked against its patch size / stride.
        pretrained: timm hub weights. Off by default because this package never downloads at run
            time; set it only where the hub is reachable.
        checkpoint: local weights to load (a checkpoint from ``python -m reproduce.train`` or a
            plain state dict), checked against ``num_classes``.
        kwargs: extra timm constructor arguments (e.g. ``depth``, ``drop_rate``).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"Model name must be a non-empty string, got {name!r}.")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if img_size is not None and (not isinstance(img_size, int) or img_size < 1):
        raise ConfigError(f"img_size must be a positive integer, got {img_size!r}.")

    if name in PRETRAINED_OFFLINE:
        from reproduce.models.pretrained import efficientnet_lite0_imagenet

        if num_classes not in (None, 1000):
            raise ConfigError(
                f"{name} is the ImageNet-1k classifier and has 1000 outputs, not {num_classes}; "
                "train a new model for another label set."
            )
        model = efficientnet_lite0_imagenet()
        size = img_size or 224
    else:
        model, size = _timm_model(name, num_classes, img_size, pretrained, in_chans, kwargs)

    _check_image_size(model, name, size)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg["input_size"] = (in_chans, size, size)
    cfg["num_classes"] = int(model.num_classes) if hasattr(model, "num_classes") else num_classes
    model.pretrained_cfg = cfg
    model.reproduce_spec = {
        "name": name,
        "num_classes": int(cfg["num_classes"]) if cfg["num_classes"] is not None else None,
        "img_size": int(size),
        "in_chans": in_chans,
        "kwargs": dict(kwargs),
    }
    if checkpoint:
        load_weights(model, checkpoint)
    return model


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """An untrained model with the architecture a ``reproduce_spec`` describes."""
    return create_model(
        spec["name"], num_classes=spec.get("num_classes"), img_size=spec.get("img_size"),
        in_chans=spec.get("in_chans", 3), **spec.get("kwargs", {}),
    )


def load_model(path: str | os.PathLike, prefix: str = "model.", contents: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild a model from the spec stored in its checkpoint and load its weights.

    ``contents``: the checkpoint already read by :func:`read_checkpoint` (the file is then not read
    again); ``path`` only names it in errors.
    """
    ckpt = read_checkpoint(path) if contents is None else contents
    spec = model_spec_of(ckpt)
    if not spec:
        raise ConfigError(
            f"Checkpoint {os.fspath(path)!r} carries no model spec; build the model with "
            "create_model(name, num_classes, checkpoint=path) instead."
        )
    return apply_weights(model_from_spec(spec), ckpt, path, prefix)
