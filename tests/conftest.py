"""Shared fixtures: tiny models and inputs, W&B forced offline, Hydra outputs in tmp dirs."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def cnn():
    from reproduce.models import create_model

    torch.manual_seed(0)
    return create_model("resnet10t_os16", num_classes=6).eval()


@pytest.fixture
def vit():
    from reproduce.models import create_model

    torch.manual_seed(0)
    return create_model("vit_micro_p8", num_classes=6).eval()


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 3, 64, 64, generator=g)
