"""What a run prints: Lightning's start-up noise kept quiet unless ``verbose=true``, and the closing
"where things went" lines (run directory, result files, figures, the W&B offline run and the exact
``wandb sync`` command for it)."""

from __future__ import annotations

import logging
import os
import shlex
import warnings
from contextlib import contextmanager
from typing import Iterable, Iterator

from reproduce.runtime.run_dir import wandb_run_folders

# Loggers whose INFO lines are Lightning's banner (devices, the litlogger tip, "Seed set to ...").
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
# Warnings that come from library internals and say nothing about the run (messages as regexes).
KNOWN_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
)


@contextmanager
def quiet_lightning(verbose: bool = False) -> Iterator[None]:
    """Inside: Lightning's INFO banner and the known library warnings are hidden (``verbose``: shown)."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in KNOWN_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(lightning|pytorch_lightning)\..*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def where_things_went(prog: str, run_dir: str, files: Iterable[str] = ()) -> list[str]:
    """The closing lines of a run: its directory, the files it wrote (those that exist) and, for
    every offline W&B run in it, the command that uploads it."""
    lines = [f"[{prog}] run directory: {run_dir}"]
    for path in files:
        if path and os.path.exists(path):
            lines.append(f"[{prog}] wrote {path}")
    for folder in wandb_run_folders(run_dir):
        lines.append(f"[{prog}] W&B offline run: {folder}; upload it with `wandb sync {shlex.quote(folder)}`")
    return lines


# Units of the scalars an evaluation reports, by metric: every proportion is shown in percent.
NATIVE_PERCENT = {"pxap", "robustness", "ssim_stability", "mege"}    # already 0..100
FRACTION = {"pointing_game", "energy_pointing_game", "fidelity", "accuracy_at_budget", "iou_auc",
            "average_highest_confidence"}                            # 0..1, shown x100
UNITS = {"cost": {"seconds_per_image": "s/img", "forward_per_image": "passes/img", "backward_per_image": "passes/img"}}


def scalar_unit(key: str, metrics: dict) -> tuple[float, str]:
    """``(scale, unit)`` to show the scalar ``key`` (``<metric label>/<name>`` or ``accuracy``) with."""
    if key == "accuracy":
        return 1.0, "%"
    label, _, name = key.partition("/")
    metric = (metrics.get(label) or {}).get("metric", label)
    if metric in NATIVE_PERCENT:
        return 1.0, "%"
    if metric in FRACTION:
        return 100.0, "%"
    return 1.0, UNITS.get(metric, {}).get(name, "")


def summary_lines(result: dict) -> list[str]:
    """One line per scalar: the value in its unit (proportions in %, AUCs and scores as they are), and
    its direction."""
    lines = []
    for key, value in sorted(result["scalars"].items()):
        scale, unit = scalar_unit(key, result.get("metrics", {}))
        arrow = {"higher": "higher is better", "lower": "lower is better"}.get(result["directions"].get(key), "")
        lines.append(f"  {key:45s} {value * scale:10.4f} {unit:10s} {arrow}".rstrip())
    return lines
