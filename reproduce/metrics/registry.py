"""Registry of metrics by the names papers use (snake_case).

A new metric is one module in ``reproduce/metrics/`` with a class decorated by
``@register_metric("name")``; modules of this package are discovered on first use.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from reproduce.errors import ConfigError
from reproduce.registry import Registry

METRICS = Registry("metric", "reproduce.metrics", ConfigError, positional=1)
register_metric = METRICS.register  # @register_metric("name") on a class: create_metric(name, model, ...)


def available_metrics() -> list[str]:
    """Registered metric names."""
    return METRICS.names()


def metric_class(name: str) -> type:
    return METRICS.get(name)


def create_metric(name: str, model: nn.Module | None = None, **options: Any):
    """Build the metric ``name`` for ``model`` (ignored by metrics that score no model).

    Every metric constructor is ``(model=None, *, knobs...)``; unknown knobs are a ``ConfigError``.
    """
    cls = metric_class(name)
    METRICS.check_options(name, options)
    if getattr(cls, "needs_model", False) and model is None:
        raise ConfigError(f"Metric {name!r} scores a model: pass create_metric({name!r}, model, ...).")
    return cls(model if getattr(cls, "needs_model", False) else None, **options)
