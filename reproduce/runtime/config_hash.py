"""Stable hashes of (parts of) resolved configs: the identity of a trained model or a table cell.

Two configs that would produce the same result hash the same, whatever their key order; keys that
do not change the result (loggers, paths, devices, worker counts) are left out by the caller.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf


def to_plain(cfg: Any) -> Any:
    """A resolved OmegaConf node (or plain data) as JSON-compatible Python objects."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def drop_keys(tree: Any, dotted: Iterable[str]) -> Any:
    """A copy of ``tree`` without the dotted keys (e.g. ``trainer.devices``)."""
    tree = json.loads(json.dumps(tree))
    for key in dotted:
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(leaf, None)
    return tree


def config_hash(tree: Any, length: int = 10) -> str:
    payload = json.dumps(to_plain(tree), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]
