"""``python -m reproduce.all`` (``make reproduce-all``): every embedded table, then ``results/REPORT.md``.

The tables of ``conf/all.yaml`` run side by side, ``jobs`` at a time, each as ``python -m
reproduce.table table=<name>`` with (cores / jobs) threads; each table's output goes to its log
(``outputs/all/all/logs/<table>.log``), the console gets one line per start and finish. Every table
is resumable, so a second call after an interruption or a failure continues where the first stopped.
The report runs last, with every core.

Examples:
    python -m reproduce.all                 # 2 tables at a time (the 2-core reference machine)
    python -m reproduce.all jobs=4          # on 8 cores: 4 tables at a time, 2 threads each
    python -m reproduce.all quick=true      # the QUICK=1 previews and their report
"""

from __future__ import annotations

import os
import subprocess
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from reproduce.runtime.paths import CONF_DIR

PROG = "reproduce.all"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="all")
def main(cfg: DictConfig) -> None:
    from reproduce.checks import check_bool, positive_int
    from reproduce.errors import ConfigError
    from reproduce.runtime.cli_errors import reported_errors
    from reproduce.runtime.table_lanes import child_env, parse_jobs, run_side_by_side, threads_per_job

    with reported_errors(PROG):
        quick = check_bool("quick", cfg.quick)
        jobs = parse_jobs(OmegaConf.to_container(cfg.tables), quick=quick)
        missing = [j.name for j in jobs if not os.path.isfile(os.path.join(CONF_DIR, "table", f"{j.name}.yaml"))]
        if missing:
            raise ConfigError(f"tables {missing} have no spec conf/table/<name>.yaml; fix the names in conf/all.yaml.")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        slots = cores if cfg.jobs is None else positive_int("jobs", cfg.jobs)
    root, threads = str(cfg.paths.root), threads_per_job(slots, cores)
    logs = os.path.join(str(cfg.paths.output_dir), "logs_quick" if quick else "logs")
    os.makedirs(logs, exist_ok=True)
    extra = ["quick=true"] if quick else []
    print(f"[{PROG}] {len(jobs)} tables, {slots} at a time with {threads} thread(s) each on {cores} core(s); "
          f"logs in {logs}", flush=True)

    def launch(job):
        with open(os.path.join(logs, f"{job.name}.log"), "w") as log:  # the child keeps its own descriptor
            return subprocess.Popen([sys.executable, "-m", "reproduce.table", f"table={job.name}", *extra],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=root, env=child_env(threads))

    result = run_side_by_side(jobs, slots, launch, log=lambda line: print(f"[{PROG}] {line}", flush=True))
    if result.failed:
        for name in result.failed:
            print(f"[{PROG}] {name} failed; the end of {os.path.join(logs, name + '.log')}:", file=sys.stderr)
            with open(os.path.join(logs, f"{name}.log"), errors="replace") as f:
                sys.stderr.write("".join(f.readlines()[-15:]))
        left = f"; not started: {result.not_started}" if result.not_started else ""
        sys.exit(f"[{PROG}] failed: {result.failed}{left}. Fix the cause and run it again: finished cells are kept.")
    report = subprocess.run([sys.executable, "-m", "reproduce.report", *extra], cwd=root)
    if report.returncode:
        sys.exit(report.returncode)


if __name__ == "__main__":
    from reproduce.runtime.cli_errors import run_entry_point

    run_entry_point(main, PROG, "all", __doc__)
