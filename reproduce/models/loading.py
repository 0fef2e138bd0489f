"""Load whatever a checkpoint holds as an ``nn.Module`` ready to explain.

A checkpoint from ``python -m reproduce.train`` holds either a classifier (``hyper_parameters["model"]``)
or a COMET three-player model (``hyper_parameters["selector"]``); this picks the right loader so the
evaluation runner and the table runner take any trained model by path.
"""

from __future__ import annotations

import os

from torch import nn

from reproduce.errors import ConfigError
from reproduce.models.checkpoint import load_model, read_checkpoint


def load_any(path: str | os.PathLike) -> nn.Module:
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters") or {}
    if "selector" in hp:
        from reproduce.models.comet import load_comet

        return load_comet(path)
    if "model" in hp or "reproduce_spec" in ckpt:
        return load_model(path)
    raise ConfigError(
        f"Checkpoint {os.fspath(path)!r} holds neither a classifier nor a COMET model from "
        "`python -m reproduce.train`; build the model yourself and load weights with load_weights()."
    )
