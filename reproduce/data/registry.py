"""Datasets by name: ``create_dataset("synthetic", split="test", ...)``.

Each dataset module registers its class with ``@register_dataset(name)``; modules of this package
are discovered on first use.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from typing import Any

from reproduce.errors import ConfigError

_DATASETS: dict[str, type] = {}
_DISCOVERED = False


def register_dataset(name: str):
    def wrap(cls: type) -> type:
        _DATASETS[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def _discover() -> None:
    global _DISCOVERED
    if not _DISCOVERED:
        import reproduce.data as package

        for info in pkgutil.iter_modules(package.__path__, prefix=f"{package.__name__}."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)
        _DISCOVERED = True


def available_datasets() -> list[str]:
    _discover()
    return sorted(_DATASETS)


def dataset_class(name: str) -> type:
    _discover()
    if name not in _DATASETS:
        close = difflib.get_close_matches(str(name), list(_DATASETS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"Unknown dataset {name!r}.{hint} Available: {', '.join(sorted(_DATASETS))}.")
    return _DATASETS[name]


def has_splits(name: str) -> bool:
    """Whether the dataset takes a ``split`` (single-collection sets such as ``photos`` do not)."""
    return "split" in inspect.signature(dataset_class(name).__init__).parameters


def create_dataset(name: str, **options: Any):
    """Build the dataset registered as ``name`` (e.g. ``split="test"``, ``root=...``)."""
    return dataset_class(name)(**options)
