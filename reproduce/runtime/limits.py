"""Bounds on every count option and the memory a configured batch needs, checked before any work.

A count can only mean so much: an insertion curve cannot have more steps than the image has pixels,
a patch grid no more cells per side than pixels, and the sampling methods' counts have documented
caps (:data:`COUNT_CAPS`) far above any published setting. Beyond them a typo (``steps=1000000000``)
would only grow the process until the kernel kills it. The memory estimate is deliberately simple
(see :func:`estimate_bytes`); it refuses what cannot fit in the machine's physical memory and warns
when the estimate exceeds what is available now.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from reproduce.checks import check_int
from reproduce.errors import ConfigError

# The caps, with what each counts. Published settings: IG 20-300 steps, SmoothGrad 50 samples,
# RISE 4000-8000 masks, sampled Shapley 200 rounds, HSIC 1500 designs, mu-fidelity 128-200 subsets.
COUNT_CAPS: dict[str, tuple[int, str]] = {
    "steps": (10_000, "path points / curve steps"),
    "n_samples": (10_000, "noise samples per image"),
    "samples": (100_000, "random draws per image"),
    "n_masks": (100_000, "RISE masks per image"),
    "n_rounds": (10_000, "Shapley permutation rounds per image"),
    "nb_design": (100_000, "HSIC designs per image"),
    "max_players": (24, "players of an exact Shapley game: 2^n forward passes per image"),
    "per_region": (1_024, "sub-regions per region"),
    "bins": (100_000, "histogram bins"),
    "max_channels": (65_536, "channels"),
    "batch_size": (65_536, "rows per forward pass"),
    "internal_batch_size": (65_536, "rows per forward pass"),
    "max_batch": (65_536, "rows per forward pass"),
    "chunk": (65_536, "rows per forward pass"),
}
CAPS_SOURCE = "reproduce/runtime/limits.py"
# Metrics whose ``steps`` walk over the pixels of the map: more steps than pixels change nothing.
PIXEL_STEP_METRICS = ("insertion", "deletion", "average_highest_confidence")
ROW_OPTIONS = ("batch_size", "internal_batch_size", "max_batch", "chunk")
# Activations, gradients and copies of a forward/backward pass, per input byte: ResNet-10-T keeps
# about 12x its input in activations at 64x64; twice that covers a backward pass and the masked copies.
ACTIVATION_FACTOR = 24
BYTES_PER_VALUE = 4  # float32
GIB = 2 ** 30


def image_shape(data: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """``(C, H, W)`` that a data config feeds the model, or None when the config does not say."""
    size = data.get("image_size") or (data.get("options") or {}).get("image_size")
    return (3, int(size), int(size)) if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def check_counts(where: str, options: Mapping[str, Any], shape: tuple[int, int, int] | None,
                 metric: str | None = None) -> None:
    """Every count option of ``options`` within its cap; curve steps within the pixels; grids within the side."""
    for name, value in options.items():
        if value is None or name not in COUNT_CAPS:
            continue
        cap, what = COUNT_CAPS[name]
        why = f"{what}: the documented cap in {CAPS_SOURCE}"
        if metric in PIXEL_STEP_METRICS and name == "steps" and shape is not None:
            pixels = shape[1] * shape[2]
            cap, why = min(cap, pixels), f"a {shape[1]}x{shape[2]} image has {pixels} pixels, so more steps change nothing"
        check_int(f"{where}.{name}", value, maximum=cap, why=why)
    grid = options.get("grid")
    if shape is not None and grid is not None:
        sides = list(grid) if isinstance(grid, (list, tuple)) else [grid]
        for i, side in enumerate(sides):
            check_int(f"{where}.grid" + (f"[{i}]" if len(sides) > 1 else ""), side, maximum=min(shape[1:]),
                      why=f"a patch is at least one pixel of the {shape[1]}x{shape[2]} image")


@dataclass
class Estimate:
    bytes: int
    driver: str   # the option that dominates the estimate, for the fix
    value: int


def estimate_bytes(shape: tuple[int, int, int], batch: int, options: list[tuple[str, Mapping[str, Any]]]) -> Estimate:
    """Memory of one configured batch: ``rows x C x H x W x 4 bytes x ACTIVATION_FACTOR`` for the largest
    number of rows a forward pass takes, the batch itself or a method's row chunk (every method and
    metric here chunks its masked, noisy or interpolated copies into such passes, so the counts above
    change the time, not the peak memory)."""
    c, h, w = shape
    rows, driver = batch, "batch size"
    for where, opts in options:
        for name in ROW_OPTIONS:
            value = opts.get(name)
            if _count(value) and value > rows:
                rows, driver = value, f"{where}.{name}"
    return Estimate(rows * c * h * w * BYTES_PER_VALUE * ACTIVATION_FACTOR, driver, rows)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no bound known
        return None


def available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo (what can be allocated without swapping), else free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(estimate: Estimate, batch_key: str, what: str) -> str | None:
    """Refuse an estimate above physical memory (the error names the number and the fix); return a
    warning line when it exceeds the memory available now, else None."""
    physical, available = physical_memory(), available_memory()
    need = estimate.bytes / GIB
    driver = batch_key if estimate.driver == "batch size" else estimate.driver
    if physical is not None and estimate.bytes > physical:
        fit = max(1, int(estimate.value * physical / estimate.bytes / 2))
        raise ConfigError(
            f"{what} needs about {need:.1f} GiB ({estimate.value} from {driver}; estimate in {CAPS_SOURCE}) "
            f"but this machine has {physical / GIB:.1f} GiB of memory. Lower it, e.g. {driver}={fit}."
        )
    if available is not None and estimate.bytes > available:
        return (f"warning: {what} needs about {need:.1f} GiB ({driver}={estimate.value}) and {available / GIB:.1f} GiB "
                "are available now; it may swap or be killed.")
    return None
