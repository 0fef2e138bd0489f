"""``reproduce list attributors|metrics|datasets|tables``: every name with its one-line description and
its options (with defaults), read from the registries and the table specs, so it never goes stale."""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

from omegaconf import OmegaConf

from reproduce.attributors.registry import ATTRIBUTORS
from reproduce.checks import suggest
from reproduce.data.registry import DATASETS
from reproduce.metrics.registry import METRICS
from reproduce.registry import Registry
from reproduce.runtime.paths import CONF_DIR

REGISTRIES: dict[str, Registry] = {"attributors": ATTRIBUTORS, "metrics": METRICS, "datasets": DATASETS}
HIDDEN = {"split", "normalize"}  # dataset options the data module sets itself


def first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def defaults(registry: Registry, name: str) -> dict[str, Any]:
    """Each option of ``name`` with its default (following ``**kwargs`` to the parents, like ``options``)."""
    out: dict[str, Any] = {}
    wanted = [o for o in registry.options(name) if o not in HIDDEN]
    for klass in registry.get(name).__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.name in wanted and param.name not in out:
                out[param.name] = None if param.default is inspect.Parameter.empty else param.default
    return {k: out.get(k) for k in wanted}


def describe_registry(kind: str) -> list[str]:
    registry = REGISTRIES[kind]
    lines = []
    for name in registry.names():
        lines.append(f"{name}: {first_line(registry.get(name))}")
        options = ", ".join(f"{k}={v!r}" for k, v in defaults(registry, name).items())
        lines.append(f"    options: {options or '(none)'}")
    return lines


def describe_tables() -> list[str]:
    folder = os.path.join(CONF_DIR, "table")
    lines = []
    for file in sorted(f for f in os.listdir(folder) if f.endswith(".yaml")):
        spec = OmegaConf.to_container(OmegaConf.load(os.path.join(folder, file)), resolve=False)
        rows = spec.get("rows") or []
        lines.append(f"{file[:-5]}: {spec.get('title', '')}")
        lines.append(f"    {len(rows)} rows, {len(spec.get('columns') or [])} columns, models "
                     f"{', '.join(spec.get('models') or {})}; run: reproduce table table={file[:-5]}")
    return lines


KINDS = ("attributors", "metrics", "datasets", "tables")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in KINDS:
        given = argv[0] if argv else ""
        hint = suggest(given, KINDS) if given else ""
        sys.stderr.write(f"reproduce list: error: say what to list: reproduce list {'|'.join(KINDS)}.{hint}\n")
        return 2
    lines = describe_tables() if argv[0] == "tables" else describe_registry(argv[0])
    print("\n".join(lines))
    return 0
