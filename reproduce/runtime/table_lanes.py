"""Tables side by side (``python -m reproduce.all``): a few processes at a time, each with a share of
the cores, the longest ready table first, a table after the tables whose models it copies.

Why processes rather than threads: the package's models are small (64x64 inputs), and a 2-thread
process uses its second core for only 1.5-1.7x the first's work, while two 1-thread processes side by
side do 1.17-1.37x the work of one 2-thread process (measured on the 2-core reference machine). Every
table writes its own cells and models, and cells are resumable, so nothing is shared but the disk.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

from reproduce.errors import ConfigError


@dataclass(frozen=True)
class TableJob:
    """One table of the run: its name, its measured minutes (only to order the tables; the QUICK
    preview's own minutes in a ``quick`` run) and the tables it waits for."""

    name: str
    minutes: float
    after: tuple[str, ...] = ()


def parse_jobs(tables: dict, quick: bool = False) -> list[TableJob]:
    """The jobs of ``tables`` (``{name: {minutes: m, quick_minutes: q, after: [names]}}``), checked:
    positive minutes, ``after`` naming tables of the run, no cycle. ``quick``: order by the QUICK
    preview's measured minutes where a table has them (a preview is not a fixed fraction of its table:
    one whose images are already at the interval minimum costs as much as the full table)."""
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"tables must map each table to {{minutes: <measured minutes>, after: [tables]}}, got {tables!r}.")
    jobs = []
    for name, entry in tables.items():
        entry = entry or {}
        unknown = set(entry) - {"minutes", "quick_minutes", "after"}
        after = entry.get("after") or []
        if unknown:
            raise ConfigError(f"tables.{name} has unknown field(s) {sorted(unknown)}; fields: minutes, quick_minutes, after.")
        for key in ("minutes", *(["quick_minutes"] if "quick_minutes" in entry else [])):
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"tables.{name}.{key} must be a positive number (the table's measured minutes), "
                                  f"got {value!r}.")
        missing = [a for a in after if a not in tables]
        if missing:
            raise ConfigError(f"tables.{name}.after names {missing}, which the run does not have; tables: {sorted(tables)}.")
        minutes = entry.get("quick_minutes", entry["minutes"]) if quick else entry["minutes"]
        jobs.append(TableJob(str(name), float(minutes), tuple(after)))
    _check_acyclic(jobs)
    return jobs


def _check_acyclic(jobs: list[TableJob]) -> None:
    after = {j.name: j.after for j in jobs}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            raise ConfigError(f"tables: the 'after' lists form a cycle {' -> '.join([*path, name])}; no table could start.")
        state[name] = "open"
        for dep in after[name]:
            visit(dep, [*path, name])
        state[name] = "done"

    for job in jobs:
        visit(job.name, [])


def threads_per_job(slots: int, cores: int) -> int:
    """Threads of each of ``slots`` processes on ``cores`` cores (at least one)."""
    return max(1, cores // slots)


Launch = Callable[[TableJob], subprocess.Popen]


@dataclass
class LanesResult:
    returncodes: dict[str, int]  # tables that ran, by exit status
    not_started: list[str]  # tables left out after a failure
    seconds: dict[str, float]

    @property
    def failed(self) -> list[str]:
        return [name for name, rc in self.returncodes.items() if rc != 0]


def run_side_by_side(jobs: list[TableJob], slots: int, launch: Launch, poll_seconds: float = 1.0,
                     log: Callable[[str], None] = print) -> LanesResult:
    """Run ``jobs`` at most ``slots`` at a time (``launch`` starts one); a free slot takes the longest
    job whose ``after`` jobs succeeded. After a failure no job starts, the running ones finish (their
    cells are kept either way), and the rest are reported as not started."""
    pending = sorted(jobs, key=lambda j: -j.minutes)  # stable: equal minutes keep the config's order
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    result = LanesResult({}, [], {})
    start = time.time()
    while pending or running:
        while not result.failed and len(running) < slots:
            ready = [j for j in pending if all(result.returncodes.get(a) == 0 for a in j.after)]
            if not ready:
                break
            job = ready[0]
            pending.remove(job)
            running[job.name] = (launch(job), time.time())
            log(f"{job.name}: started at {(time.time() - start) / 60:.1f} min ({len(running)} running)")
        if result.failed and not running:
            break
        time.sleep(poll_seconds)
        for name, (proc, began) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            result.returncodes[name], result.seconds[name] = proc.returncode, time.time() - began
            status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            log(f"{name}: {status} in {result.seconds[name] / 60:.1f} min, at {(time.time() - start) / 60:.1f} min")
    result.not_started = [j.name for j in pending]
    return result


def child_env(threads: int) -> dict[str, str]:
    """The environment of a table process with ``threads`` threads (OpenMP and MKL)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
