"""``python -m reproduce <verb> ...``: the same as the ``reproduce`` console script (see reproduce.cli)."""

from reproduce.cli import run

raise SystemExit(run())
