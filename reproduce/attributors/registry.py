"""Registry of attributors by the method names papers use (snake_case).

A new attributor is one module in ``reproduce/attributors/`` with a class decorated by
``@register("name")``: modules of this package are discovered on first use, so nothing else needs
editing for ``create``/``available`` (and the contract tests) to pick it up.

Out-of-tree attributors (plugins): set ``REPRODUCE_PLUGINS`` to comma-separated importable module
names (e.g. ``REPRODUCE_PLUGINS=my_lab.saliency,edge_saliency`` with their folders on ``PYTHONPATH``);
discovery imports them after the package's own modules, so their ``@register`` classes appear in
``available()``, ``create`` and the contract tests like built-in ones.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from torch import nn

from reproduce.errors import InputError
from reproduce.registry import Registry

PLUGINS_ENV = "REPRODUCE_PLUGINS"


def plugin_modules() -> list[str]:
    """Module names listed in ``$REPRODUCE_PLUGINS`` (comma-separated; blanks ignored)."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def _import_plugins() -> None:
    for module in plugin_modules():
        try:
            importlib.import_module(module)
        except Exception as err:  # any failure of a plugin is the user's to fix: name it and how
            raise InputError(
                f"{PLUGINS_ENV} names the module {module!r}, which failed to import "
                f"({type(err).__name__}: {err}). Put the folder holding {module.replace('.', '/')}.py on "
                f"PYTHONPATH (or install its package), fix the error, or remove it from {PLUGINS_ENV}."
            ) from err


ATTRIBUTORS = Registry("attributor", "reproduce.attributors", InputError, import_extra=_import_plugins, positional=1)
register = ATTRIBUTORS.register  # @register("name") on a class: create(name, model, ...) builds it


def available() -> list[str]:
    """Registered method names."""
    return ATTRIBUTORS.names()


def get_class(name: str) -> type:
    return ATTRIBUTORS.get(name)


def create(name: str, model: nn.Module, **options: Any):
    """Build the attributor registered as ``name`` for ``model``; unknown options are an error."""
    return ATTRIBUTORS.create(name, model, **options)
