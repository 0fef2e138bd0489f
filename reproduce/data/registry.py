"""Datasets by name: ``create_dataset("synthetic", split="test", ...)``.

Each dataset module registers its class with ``@register_dataset(name)``; modules of this package
are discovered on first use.
"""

from __future__ import annotations

from typing import Any

from reproduce.errors import ConfigError
from reproduce.registry import Registry

DATASETS = Registry("dataset", "reproduce.data", ConfigError, attribute="registry_name")
register_dataset = DATASETS.register


def available_datasets() -> list[str]:
    return DATASETS.names()


def dataset_class(name: str) -> type:
    return DATASETS.get(name)


def has_splits(name: str) -> bool:
    """Whether the dataset takes a ``split`` (single-collection sets such as ``photos`` do not)."""
    return "split" in DATASETS.options(name)


def create_dataset(name: str, **options: Any):
    """Build the dataset registered as ``name`` (e.g. ``split="test"``, ``root=...``); unknown
    options are an error."""
    return DATASETS.create(name, **options)
