"""``make reproduce-all`` runs its tables side by side: the schedule, the waits, failures, threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reproduce.errors import ConfigError
from reproduce.runtime.table_lanes import TableJob, child_env, parse_jobs, run_side_by_side, threads_per_job


@pytest.mark.parametrize("tables, fragment", [
    ({"a": {"minutes": 0}}, "tables.a.minutes must be a positive number"),
    ({"a": {"minutes": True}}, "tables.a.minutes must be a positive number"),
    ({"a": {"minutes": 2, "befor": ["b"]}}, "unknown field(s) ['befor']"),
    ({"a": {"minutes": 2, "after": ["b"]}}, "tables.a.after names ['b']"),
    ({"a": {"minutes": 2, "after": ["b"]}, "b": {"minutes": 1, "after": ["a"]}}, "cycle a -> b -> a"),
    ({}, "tables must map each table"),
    ({"a": {"minutes": 2, "quick_minutes": -1}}, "tables.a.quick_minutes must be a positive number"),
    ({"a": {"minutes": 2, "quick_minutes": None}}, "tables.a.quick_minutes must be a positive number"),
])
def test_bad_table_lists_fail_before_any_work_naming_the_table(tables, fragment):
    with pytest.raises(ConfigError) as err:
        parse_jobs(tables)
    assert fragment in str(err.value)


def test_a_quick_run_orders_the_tables_by_their_previews_minutes():
    tables = {"big": {"minutes": 9, "quick_minutes": 2}, "photos": {"minutes": 4, "quick_minutes": 4},
              "plain": {"minutes": 3}}  # no preview minutes: its full minutes order it
    assert [(j.name, j.minutes) for j in parse_jobs(tables)] == [("big", 9), ("photos", 4), ("plain", 3)]
    assert [(j.name, j.minutes) for j in parse_jobs(tables, quick=True)] == [("big", 2), ("photos", 4), ("plain", 3)]


def test_threads_share_the_cores():
    assert [threads_per_job(s, 8) for s in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert child_env(3)["OMP_NUM_THREADS"] == "3" and child_env(3)["MKL_NUM_THREADS"] == "3"


def sleeper(tmp_path, seconds: dict[str, float], exit_codes: dict[str, int] | None = None):
    """A launcher of short processes that record when they start and end and their thread count."""
    events = tmp_path / "events"
    events.mkdir()

    def launch(job: TableJob) -> subprocess.Popen:
        code = (f"import os, time; open({str(events / job.name)!r} + '.start', 'w').write(os.environ['OMP_NUM_THREADS']);"
                f"time.sleep({seconds[job.name]}); open({str(events / job.name)!r} + '.end', 'w').write(str(time.time()));"
                f"raise SystemExit({(exit_codes or {}).get(job.name, 0)})")
        return subprocess.Popen([sys.executable, "-c", code], env=child_env(1))

    return launch, events


def test_the_longest_ready_table_starts_first_and_waits_for_its_models(tmp_path):
    jobs = parse_jobs({"short": {"minutes": 1}, "long": {"minutes": 9}, "copier": {"minutes": 5, "after": ["long"]},
                       "middle": {"minutes": 3}})
    launch, events = sleeper(tmp_path, {"short": 0.2, "long": 1.0, "copier": 0.2, "middle": 0.2})
    log: list[str] = []
    result = run_side_by_side(jobs, 2, launch, poll_seconds=0.05, log=log.append)
    starts = [line.split(":")[0] for line in log if "started" in line]
    # copier (5 min) is longer than middle and short but must wait for long: they fill the other slot
    assert starts == ["long", "middle", "short", "copier"]
    assert result.returncodes == {"long": 0, "middle": 0, "short": 0, "copier": 0} and not result.failed
    assert float((events / "copier.end").read_text()) > float((events / "long.end").read_text())
    assert {(events / f"{n}.start").read_text() for n in result.returncodes} == {"1"}
    assert not any("3 running" in line for line in log)  # never more than the slots


def test_after_a_failure_nothing_starts_and_running_tables_finish(tmp_path):
    jobs = parse_jobs({"fails": {"minutes": 9}, "running": {"minutes": 5}, "later": {"minutes": 1}})
    launch, events = sleeper(tmp_path, {"fails": 0.1, "running": 0.6, "later": 0.1}, exit_codes={"fails": 3})
    result = run_side_by_side(jobs, 2, launch, poll_seconds=0.05, log=lambda line: None)
    assert result.failed == ["fails"] and result.returncodes["running"] == 0 and result.not_started == ["later"]
    assert (events / "running.end").exists() and not (events / "later.start").exists()


def test_make_reproduce_all_names_a_table_without_a_spec_before_running_anything(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, "-m", "reproduce.all", "+tables.no_such_table={minutes:1}",
                          f"paths.root={tmp_path}"], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode != 0 and "['no_such_table'] have no spec conf/table/<name>.yaml" in out.stderr
    assert not os.path.exists(tmp_path / "outputs" / "tables")
