"""Optimisers and learning-rate schedules from plain config dicts.

Schedules are per optimisation step (``interval: step``): a linear warm-up over ``warmup_epochs``
followed by either cosine decay to ``min_lr_ratio`` or COMET's step decay (MultiStepLR with
``milestones`` in epochs and factor ``gamma``).

Where the milestones count from (``milestones_from``): ``"start"`` (default) drops the rate once
``epoch >= m``, counting from the first step; ``"warmup_end"`` counts them from the end of the
warm-up (the rate drops at ``warmup_epochs + m`` epochs), as COMET's released code does: it starts
stepping its MultiStepLR once per epoch only after the 2 warm-up epochs, so its drops for
milestones 80/120/160 land at epochs 82/122/162.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from reproduce.checks import check_choice
from reproduce.errors import ConfigError

MILESTONE_ORIGINS = ("start", "warmup_end")

_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict[str, Any] | None) -> torch.optim.Optimizer:
    cfg = dict(cfg or {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05})
    name = cfg.pop("name", "adamw")
    if name not in _OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer {name!r}; use one of {sorted(_OPTIMIZERS)}.")
    lr = cfg.get("lr", 1e-3)
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise ConfigError(f"optimizer.lr must be a positive number, got {lr!r}.")
    return _OPTIMIZERS[name](params, **cfg)


def lr_factor(step: int, steps_per_epoch: int, total_steps: int, cfg: dict[str, Any]) -> float:
    """Multiplier of the base learning rate at optimisation ``step`` (0-based)."""
    warmup = int(round(cfg.get("warmup_epochs", 0) * steps_per_epoch))
    origin = check_choice("scheduler.milestones_from", cfg.get("milestones_from", "start"), MILESTONE_ORIGINS)
    if step < warmup:
        return (step + 1) / warmup
    name = cfg.get("name", "cosine")
    if name == "cosine":
        floor = cfg.get("min_lr_ratio", 0.01)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if name == "multistep":
        counted = step - warmup if origin == "warmup_end" else step
        epoch = counted // max(1, steps_per_epoch)
        return cfg.get("gamma", 0.2) ** sum(epoch >= m for m in cfg.get("milestones", ()))
    if name == "constant":
        return 1.0
    raise ConfigError(f"Unknown scheduler {name!r}; use cosine, multistep or constant.")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict[str, Any] | None, trainer) -> dict[str, Any] | None:
    """A per-step LambdaLR for Lightning, or None when ``cfg`` is empty."""
    if not cfg:
        return None
    cfg = dict(cfg)
    lr_factor(0, 1, 1, cfg)  # validates the name before training starts
    total = int(trainer.estimated_stepping_batches)
    epochs = max(1, int(trainer.max_epochs or 1))
    steps_per_epoch = max(1, total // epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, total, cfg)
    )
    return {"scheduler": scheduler, "interval": "step"}
