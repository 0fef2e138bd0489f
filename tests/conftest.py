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


TINY_SIZES = "{train:96,val:32,test:32}"


def compose_config(config_name: str, overrides: list[str], root) -> "DictConfig":  # noqa: F821
    """Compose a real config from conf/ the way the Hydra entry point would, with paths under ``root``.

    Hydra's own node is kept (``${hydra:...}`` interpolations resolve), and the global HydraConfig is
    set so code that reads it behaves as under ``python -m reproduce.<verb>``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from reproduce.runtime.paths import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=[f"paths.root={root}", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def compose(tmp_path):
    """``compose(name, overrides)`` with every output under this test's tmp dir."""
    return lambda name, overrides=(): compose_config(name, list(overrides), tmp_path)
