"""On-disk cache of generated synthetic splits: one file per parameter set.

File layout: magic ``RPSYNTH1``, the SHA-256 of the payload, then the payload (an ``.npz`` holding
the cache key and the arrays). Files are written atomically; a file that is truncated, damaged,
foreign or written for other parameters is reported as unreadable and regenerated, never trusted.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from typing import Callable

import numpy as np

from reproduce.atomic import atomic_write_bytes
from reproduce.errors import ConfigError

log = logging.getLogger("reproduce.data.synthetic")

_MAGIC = b"RPSYNTH1"
_DIGEST = 32


def read_cache(path: str, key: str) -> dict[str, np.ndarray]:
    """The arrays stored in ``path`` for ``key``; ValueError when the file cannot be trusted."""
    with open(path, "rb") as f:
        blob = f.read()
    head = len(_MAGIC) + _DIGEST
    if len(blob) < head or blob[: len(_MAGIC)] != _MAGIC:
        raise ValueError("not a synthetic-benchmark cache file")
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(_MAGIC):head]:
        raise ValueError("checksum mismatch (truncated or damaged)")
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if str(arrays.pop("key")) != key:
        raise ValueError("written for other generation parameters")
    return arrays


def write_cache(path: str, key: str, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), **arrays)
    payload = buffer.getvalue()
    atomic_write_bytes(path, _MAGIC + hashlib.sha256(payload).digest() + payload)


def load_or_generate(path: str, key: str, generate: Callable[[], dict[str, np.ndarray]],
                     check: Callable[[dict[str, np.ndarray]], None]) -> dict[str, np.ndarray]:
    """The cached arrays (``check`` raises ValueError on unexpected shapes) or freshly generated and
    cached ones."""
    if os.path.exists(path):
        try:
            arrays = read_cache(path, key)
            check(arrays)
            return arrays
        except (ValueError, OSError, KeyError) as err:
            log.warning("Synthetic cache %s is unreadable (%s); regenerating it.", path, err)
    root = os.path.dirname(path)
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"Cannot create the synthetic cache directory {root!r} ({err}); pass "
                          "root= or set REPRODUCE_CACHE to a writable directory.") from err
    if not os.access(root, os.W_OK):
        raise ConfigError(f"The synthetic cache directory {root!r} is not writable; pass root= or "
                          "set REPRODUCE_CACHE to a writable directory.")
    arrays = generate()
    write_cache(path, key, arrays)
    return arrays
