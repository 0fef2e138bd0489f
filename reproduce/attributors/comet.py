"""COMET's selector mask as an attributor, so metrics and tables treat it like any other method.

    comet = load_comet("outputs/train/comet_synthetic/checkpoints/best.ckpt")
    maps = create("comet", comet).attribute(images)          # [B, H, W] in [0, 1]

The map is the selector's soft mask ``S(x)``: **class-agnostic** (the selector does not take the
target, so ``target`` changes nothing; ``None`` still resolves to the COMET model's own prediction
as the contract says). The model is the trained three-player :class:`reproduce.models.comet.Comet`
(or a COMET checkpoint path, or anything with a ``.comet`` attribute such as the LightningModule);
its ``forward`` is the predictor on the kept region, so accuracy-style metrics run on the
explainable model itself. Cost: one selector pass per image (counted as one forward).
"""

from __future__ import annotations

import os
from typing import ClassVar

import torch
from torch import nn

from reproduce.attributors.base import Attributor
from reproduce.attributors.registry import register
from reproduce.errors import InputError
from reproduce.models import record_forward
from reproduce.models.comet import Comet, load_comet


@register("comet")
class CometMask(Attributor):
    """``attribute(x) = S(x)``, the selector's mask of a trained COMET model."""

    # The generic contract tests build attributors on plain classifiers; this one needs a trained
    # COMET model, so its contract checks live in tests/test_comet.py.
    contract_skip: ClassVar[str | None] = "needs a trained COMET model"

    def __init__(self, model: nn.Module | str | os.PathLike, normalize: str | None = None):
        if isinstance(model, (str, os.PathLike)):
            model = load_comet(model)
        model = getattr(model, "comet", model)
        if not isinstance(model, Comet):
            raise InputError(
                f"The comet attributor explains a trained COMET model (reproduce.models.comet.Comet or a "
                f"COMET checkpoint path), got {type(model).__name__}. Train one with "
                "`python -m reproduce.train experiment=comet_synthetic` and load it with load_comet(path)."
            )
        super().__init__(model, normalize=normalize)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        record_forward(self.model, x.shape[0])
        return self.model.mask(x)
