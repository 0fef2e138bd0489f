"""The identity of a model file: a sha256 of its bytes (cached beside it) plus the identity of the
training run that wrote it, so that a result is keyed by the weights it used, not by their path.

The hash of ``best.ckpt`` is cached in ``best.ckpt.sha256`` as ``{size, mtime_ns, sha256}``; a file
whose size or modification time changed is hashed again. (A file rewritten with the same size
within the same nanosecond timestamp would keep a stale hash; no writer here does that.)
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from reproduce.atomic import atomic_write_json
from reproduce.runtime.run_dir import read_run_file

MODEL_SUFFIXES = (".ckpt", ".pt", ".pth")
SHORT = 8  # characters of a hash shown in messages


def file_sha256(path: str) -> str:
    """sha256 of the file's bytes, cached in ``<path>.sha256`` (re-hashed when size or mtime change)."""
    stat = os.stat(path)
    cache = f"{path}.sha256"
    try:
        with open(cache) as f:
            cached = json.load(f)
        if cached.get("size") == stat.st_size and cached.get("mtime_ns") == stat.st_mtime_ns:
            return str(cached["sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # no cache yet, or an unreadable one: hash again
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    try:
        atomic_write_json(cache, {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value})
    except OSError:  # a read-only model folder: the hash is still right, only not cached
        pass
    return value


def model_identity(path: str) -> dict[str, Any]:
    """``{sha256, train_identity}`` of a model file: its content hash and, for a checkpoint of
    ``python -m reproduce.train`` (``<run>/checkpoints/*.ckpt``), the config identity of its run."""
    identity: dict[str, Any] = {"sha256": file_sha256(path)}
    run_file = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "run.json")
    try:
        train = read_run_file(run_file).get("identity")
    except ValueError:  # a corrupt run.json says nothing about these weights; the hash still does
        train = None
    if train:
        identity["train_identity"] = train
    return identity


def is_model_file(value: Any) -> bool:
    return isinstance(value, str) and value.endswith(MODEL_SUFFIXES) and os.path.isfile(value)


def models_in(tree: Any, where: str = "") -> dict[str, str]:
    """Every model file named anywhere in a plain config tree, by dotted key (``checkpoint``,
    ``reference_checkpoints.b``, ``attributor.options.confidence_model``)."""
    found: dict[str, str] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            found.update(models_in(value, f"{where}.{key}" if where else str(key)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found.update(models_in(value, f"{where}[{i}]"))
    elif is_model_file(tree):
        found[where] = tree
    return found


def without_model_paths(tree: Any) -> Any:
    """``tree`` with every model file path replaced by a placeholder: models enter an identity by
    content (:func:`model_identity`), so moving a run directory does not change what a result is."""
    if isinstance(tree, dict):
        return {k: without_model_paths(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [without_model_paths(v) for v in tree]
    return "<model file>" if is_model_file(tree) else tree


def short(identity: dict[str, Any]) -> str:
    return str(identity.get("sha256", ""))[:SHORT]
