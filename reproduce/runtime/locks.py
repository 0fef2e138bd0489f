"""A file lock per run directory, so table shards that need the same model train it once."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def directory_lock(directory: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<directory>/.lock`` (blocks until other holders release it)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
