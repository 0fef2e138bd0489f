"""Where the Hydra configuration lives: ``conf/`` at the root of the repository checkout."""

from __future__ import annotations

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
