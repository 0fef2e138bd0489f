"""Load whatever a checkpoint holds as an ``nn.Module`` ready to explain.

A checkpoint from ``python -m reproduce.train`` holds either a classifier (``hyper_parameters["model"]``)
or a COMET three-player model (``hyper_parameters["selector"]``); :func:`load_any` reads the file once
and hands its contents to the right loader, so the evaluation and table runners take any trained
model by path. This module sits on top of the factory and COMET's building code.
"""

from __future__ import annotations

import os

from torch import nn

from reproduce.errors import ConfigError
from reproduce.models.checkpoint import read_checkpoint
from reproduce.models.comet import load_comet
from reproduce.models.factory import load_model


def load_any(path: str | os.PathLike) -> nn.Module:
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters") or {}
    if "selector" in hp:
        return load_comet(path, contents=ckpt)
    if "model" in hp or "reproduce_spec" in ckpt:
        return load_model(path, contents=ckpt)
    raise ConfigError(
        f"Checkpoint {os.fspath(path)!r} holds neither a classifier nor a COMET model from "
        "`python -m reproduce.train`; build the model yourself and load weights with load_weights()."
    )
