"""Shared by the benchmark suites: the clock, a printed table and an atomically written JSON file.

The clock (``--clock``) is wall time by default; ``cpu`` is the process's CPU time, which does not
count the time other processes hold the cores, so ratios measured on a loaded machine stay close
to the quiet machine's (with several torch threads it sums their CPU time: compare runs with the
same thread count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any, Callable

import torch

from reproduce.atomic import atomic_write_text


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = {"now": time.perf_counter, "name": "wall"}


def set_clock(name: str) -> None:
    """Select the clock every suite reads through :func:`now` (``"wall"`` or ``"cpu"``)."""
    _clock.update(now=CLOCKS[name], name=name)


def parse_suite_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser``'s arguments plus the ones every suite takes (``--out``, ``--clock``), parsed; the
    clock is selected."""
    parser.add_argument("--out", default="bench_results")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (steadier on a loaded machine)")
    args = parser.parse_args(argv)
    set_clock(args.clock)
    return args


def now() -> float:
    return _clock["now"]()


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "clock": _clock["name"],
    }


def write_report(suite: str, rows: list[dict[str, Any]], out_dir: str = "bench_results", **extra: Any) -> str:
    """Print ``rows`` as a table and write ``{out_dir}/{suite}.json``; returns the path."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(_fmt(r.get(k)).ljust(widths[k]) for k in keys))
    path = os.path.join(out_dir, f"{suite}.json")
    atomic_write_text(path, json.dumps({"suite": suite, "machine": machine(), "rows": rows, **extra}, indent=2))
    print(f"wrote {path}")
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
