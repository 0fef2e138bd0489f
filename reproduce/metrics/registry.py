"""Registry of metrics by the names papers use (snake_case).

A new metric is one module in ``reproduce/metrics/`` with a class decorated by
``@register_metric("name")``; modules of this package are discovered on first use.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from typing import Any

from torch import nn

from reproduce.errors import ConfigError

_REGISTRY: dict[str, type] = {}
_DISCOVERED = False


def register_metric(name: str):
    """Class decorator: make ``cls`` available as ``create_metric(name, model, ...)``."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"Metric name {name!r} is already registered by {_REGISTRY[name].__name__}.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import reproduce.metrics as package

    for info in pkgutil.iter_modules(package.__path__, prefix=f"{package.__name__}."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
    _DISCOVERED = True


def available_metrics() -> list[str]:
    """Registered metric names."""
    _discover()
    return sorted(_REGISTRY)


def metric_class(name: str) -> type:
    _discover()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"Unknown metric {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def metric_options(cls: type) -> list[str]:
    """Keyword options the metric's constructor accepts (besides ``model``)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]
    return [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def create_metric(name: str, model: nn.Module | None = None, **options: Any):
    """Build the metric ``name`` for ``model`` (ignored by metrics that score no model).

    Every metric constructor is ``(model=None, *, knobs...)``; unknown knobs are a ``ConfigError``.
    """
    cls = metric_class(name)
    accepted = metric_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"Metric {name!r} has no option(s) {unknown}; its options are {accepted}.")
    if getattr(cls, "needs_model", False) and model is None:
        raise ConfigError(f"Metric {name!r} scores a model: pass create_metric({name!r}, model, ...).")
    return cls(model if getattr(cls, "needs_model", False) else None, **options)
