"""Reading model weights from checkpoints safely (``weights_only=True``) with errors a user can act on.

Two formats are understood: a Lightning checkpoint written by ``python -m reproduce.train`` (its
``hyper_parameters["model"]`` holds the model spec and its ``state_dict`` prefixes the network with
``model.``) and a plain state dict (optionally ``{"reproduce_spec": ..., "state_dict": ...}``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from reproduce.errors import ConfigError, DataError

_TRAIN_HINT = "train one with `python -m reproduce.train` (see README) or fix the path"


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True``; never unpickles arbitrary objects."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"Checkpoint {path!r} does not exist: {_TRAIN_HINT}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - malformed bytes surface as any of Index/Key/EOF/Unpickling/... errors
        # torch's own message for a file with non-tensor objects advises loading it with
        # weights_only=False, i.e. running whatever the file holds: never repeat that advice.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if any("weights_only" in line for line in lines):
            detail = [line for line in lines if not any(w in line for w in ("weights_only", "Weights only", "torch.load"))]
            why = ("the safe loader refused it, since unpickling anything but tensors could run code: "
                   f"{(detail or ['not a weights file'])[0].replace('WeightsUnpickler error:', '').strip()[:200]}")
        else:
            why = f"{type(err).__name__}: {(lines or [''])[0][:200]}"
        raise ConfigError(
            f"Checkpoint {path!r} cannot be read ({why}). "
            f"It is truncated, corrupt or not a PyTorch weights file: {_TRAIN_HINT}."
        ) from None
    if not isinstance(obj, dict):
        raise ConfigError(f"Checkpoint {path!r} holds a {type(obj).__name__}, not a state dict: {_TRAIN_HINT}.")
    return obj


def model_spec_of(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The ``create_model`` arguments stored in a checkpoint, if any."""
    hp = ckpt.get("hyper_parameters") or {}
    spec = hp.get("model") if isinstance(hp, dict) else None
    return spec or ckpt.get("reproduce_spec")


def state_dict_of(ckpt: dict[str, Any], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The network's tensors; strips ``prefix`` when the checkpoint is a Lightning one."""
    sd = ckpt.get("state_dict", ckpt)
    if any(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_weights(model: nn.Module, path: str | os.PathLike, prefix: str = "model.") -> nn.Module:
    """Load ``path`` into ``model`` in place, checking class count and architecture first."""
    return apply_weights(model, read_checkpoint(path), path, prefix)


def apply_weights(model: nn.Module, ckpt: dict[str, Any], path: str | os.PathLike, prefix: str = "model.") -> nn.Module:
    """Load the tensors of an already read checkpoint ``ckpt`` (from ``path``, named in errors) into
    ``model`` in place, checking architecture and class count first."""
    sd = state_dict_of(ckpt, prefix)
    own = model.state_dict()
    spec = model_spec_of(ckpt) or {}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        arch = f" (it was saved from {spec.get('name')!r})" if spec.get("name") else ""
        raise ConfigError(
            f"Checkpoint {os.fspath(path)!r} does not fit this architecture{arch}: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:2]}). Build the model the checkpoint was trained with."
        )
    wrong = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in own.items() if sd[k].shape != v.shape]
    if wrong:
        head = getattr(model, "pretrained_cfg", {}).get("classifier")
        for key, theirs, ours in wrong:
            if head and key.startswith(f"{head}."):
                raise ConfigError(
                    f"Checkpoint {os.fspath(path)!r} has {theirs[0]} classes but the model has {ours[0]}: "
                    f"set num_classes={theirs[0]} or use a checkpoint trained on this dataset."
                )
        raise ConfigError(
            f"Checkpoint {os.fspath(path)!r} has tensors of other shapes, e.g. {wrong[0][0]}: "
            f"{wrong[0][1]} vs {wrong[0][2]} in the model. Build the model the checkpoint was trained with."
        )
    model.load_state_dict(sd)
    return model
