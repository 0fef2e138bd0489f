"""The command line (issue 11.6, 11.9, 11.2, 12.10): ``reproduce <verb>`` / ``python -m reproduce``,
``--help`` and ``--version`` answered by the package, ``reproduce list``, and every important
suggested fix works when applied as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from conftest import TINY_SIZES, compose_config
from spec_rows import row_index
from reproduce import __version__
from reproduce.cli import VERBS, main
from reproduce.errors import ConfigError
from reproduce.runtime import listing
from reproduce.runtime.cli_errors import preflight
from reproduce.runtime.training import fit, resolve_resume
from reproduce.runtime.run_dir import train_identity
from reproduce.runtime.validation import validate_evaluate, validate_train

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, cwd, timeout=180):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""})


# --- the console script ----------------------------------------------------------------------------
def test_pyproject_declares_the_console_script_and_the_verbs_are_one_table():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"reproduce": "reproduce.cli:run"}
    assert list(VERBS) == ["train", "evaluate", "table", "report", "list"]


@pytest.mark.parametrize("args", [["-m", "reproduce", "--version"], ["-m", "reproduce.train", "--version"],
                                  ["-m", "reproduce", "table", "--version"]])
def test_version_is_the_package_version(args, tmp_path):
    proc = _run(*args, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"reproduce {__version__}"


@pytest.mark.parametrize("verb", ["train", "evaluate", "table", "report"])
def test_help_shows_usage_and_examples_not_the_composed_config(verb, tmp_path):
    proc = _run("-m", "reproduce", verb, "--help", cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines[0] == f"usage: reproduce {verb} [key=value ...]"
    assert "Examples:" in proc.stdout and f"python -m reproduce.{verb} " in proc.stdout
    assert "_target_" not in proc.stdout and "defaults" not in proc.stdout and len(lines) < 40
    assert not (tmp_path / "outputs").exists()
    module = _run("-m", f"reproduce.{verb}", "--help", cwd=tmp_path)
    assert module.stdout.splitlines()[0] == f"usage: python -m reproduce.{verb} [key=value ...]"


def test_no_verb_lists_the_verbs_and_a_typo_suggests_one(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: reproduce <verb>") and all(f"  {verb} " in out for verb in VERBS)
    assert main(["tabel"]) == 2
    assert "unknown verb 'tabel'. Did you mean table?" in capsys.readouterr().err


@pytest.mark.parametrize("kind", listing.KINDS)
def test_list_prints_every_name_with_its_description_and_options(kind, capsys):
    assert main(["list", kind]) == 0
    out = capsys.readouterr().out
    if kind == "tables":
        names = sorted(f[:-5] for f in os.listdir(ROOT / "conf" / "table") if f.endswith(".yaml"))
        assert all(f"{n}: " in out and f"reproduce table table={n}" in out for n in names)
        assert "table3: Table 3 (embedded benchmark): COMET vs post-hoc attributions under one protocol" in out
        return
    registry = listing.REGISTRIES[kind]
    for name in registry.names():
        assert f"\n{name}: " in f"\n{out}"
    if kind == "attributors":
        assert "rise: RISE (Petsiuk et al. 2018)" in out
        assert "options: n_masks=4000, grid_size=7, p1=0.5, seed=0, fill='mean'" in out
    if kind == "datasets":
        assert "split=" not in out  # set by the data module, not an option to give


def test_list_without_a_kind_names_the_kinds(capsys):
    assert main(["list", "metric"]) == 2
    assert "reproduce list attributors|metrics|datasets|tables. Did you mean metrics?" in capsys.readouterr().err


def test_python_m_reproduce_dispatches_to_the_entry_point(tmp_path):
    proc = _run("-m", "reproduce", "train", "nmae=x", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("reproduce.train: error: nmae is not a key of the train config")


def test_reproduce_report_is_the_report_entry_point(tmp_path):
    proc = _run("-m", "reproduce", "report", "claim_file=[moxi]", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("reproduce.report: error: claim_file is not a key of the report config")
    assert "Did you mean claim_files?" in proc.stderr.splitlines()[0]


# --- a misspelt table row option fails before any training (12.10) ---------------------------------
def test_a_misspelt_row_option_fails_the_table_command_before_any_training(tmp_path):
    # The error comes from validating every row before the first model trains (nothing under
    # outputs/tables); how fast that is, is not asserted here (timed tests are flaky on loaded CI).
    proc = _run("-m", "reproduce.table", "table=table3", f"+table.rows.{row_index('table3', 'RISE')}.attributor_options.n_mask=1000", cwd=tmp_path)
    assert proc.returncode == 2 and "Did you mean n_masks?" in proc.stderr.splitlines()[0]
    assert not (tmp_path / "outputs" / "tables").exists()  # nothing was trained


# --- every important suggested fix works as written ------------------------------------------------
def _fix(message: str, pattern: str) -> str:
    match = re.search(pattern, message)
    assert match, f"no suggestion matching {pattern!r} in: {message}"
    return match.group(1)


# (config, the bad override, where the message puts the fix, the fix as an override)
COMMAND_LINE_FIXES = [
    ("train", "trainer.max_epoch=1", r"\(e\.g\. (\S+)\)", lambda m: m),
    ("train", "nmae=x", r"Did you mean (\S+)\?", lambda m: f"{m}=x"),
    ("evaluate", "metrics=[pxapp]", r"Did you mean ([^,?\s]+)", lambda m: f"metrics=[{m}]"),
    ("evaluate", "attributor=gradcm", r"Did you mean ([^,?\s]+)", lambda m: f"attributor={m}"),
    ("train", "name=../../../tmp/x", r"Use e\.g\. (\S+)\.$", lambda m: m),
    ("train", "paths.root=/proc/reproduce-nope", r"set (paths\.root)=<a writable folder>", None),
]


@pytest.mark.parametrize("config, bad, pattern, apply", COMMAND_LINE_FIXES, ids=[c[1] for c in COMMAND_LINE_FIXES])
def test_suggested_overrides_of_command_line_errors_work(config, bad, pattern, apply, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        preflight(config, [bad])
    fix = _fix(str(err.value), pattern)
    preflight(config, [apply(fix) if apply else f"{fix}={tmp_path}"])  # composes, and the run directory can be made


@pytest.mark.parametrize("config, bad, pattern", [
    ("train", ["data.batch_size=100000000"], r"Lower it, e\.g\. (\S+)\.$"),
    ("evaluate", ["data.eval_batch_size=100000000"], r"Lower it, e\.g\. (\S+)\.$"),
    ("evaluate", ["train_run=../../etc"], r"Use e\.g\. (\S+)\.$"),
    ("train", ["trainer.accelerator=gpu"], r"use (trainer\.accelerator=\w+)"),
])
def test_suggested_overrides_of_validation_errors_work(config, bad, pattern, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = ["logger=none", "checkpoint=null"] if config == "evaluate" else ["logger=none"]
    validate = validate_train if config == "train" else validate_evaluate
    with pytest.raises(ConfigError) as err:
        validate(compose_config(config, [*base, *bad], tmp_path))
    fix = _fix(str(err.value), pattern)
    validate(compose_config(config, [*base, fix], tmp_path))


def test_the_model_override_that_a_checkpoint_ignores_is_an_error_and_its_fix_works(tmp_path):
    from reproduce.models import create_model

    path = tmp_path / "cnn.ckpt"
    model = create_model("resnet10t_os16", num_classes=6, img_size=64)
    torch.save({"hyper_parameters": {"model": dict(model.reproduce_spec)},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    base = ["logger=none", f"checkpoint={path}"]
    validate_evaluate(compose_config("evaluate", base, tmp_path))  # the config default: no complaint
    with pytest.raises(ConfigError, match=r"model=vit_micro_p8 disagrees with checkpoint=.*cnn.ckpt, which holds a "
                                          r"'resnet10t_os16': the checkpoint decides the model"):
        validate_evaluate(compose_config("evaluate", [*base, "model=vit_micro_p8"], tmp_path))
    validate_evaluate(compose_config("evaluate", [*base, "model=vit_micro_p8", "checkpoint=null"], tmp_path))
    validate_evaluate(compose_config("evaluate", [*base, "model=resnet10t_os16"], tmp_path))  # agrees


TRAIN = ["experiment=quickstart_cnn", f"data.options.sizes={TINY_SIZES}", "data.batch_size=32", "logger=none",
         "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "name=same"]


def test_a_run_directory_that_holds_another_run_names_fixes_that_work(tmp_path):
    fit(compose_config("train", TRAIN, tmp_path))
    other = compose_config("train", [*TRAIN, "module.optimizer.lr=0.1"], tmp_path)
    run_dir = str(other.paths.output_dir)
    with pytest.raises(ConfigError, match="holds a run with a different configuration") as err:
        fit(other)
    message = str(err.value)
    renamed = compose_config("train", [*TRAIN, "module.optimizer.lr=0.1", _fix(message, r"\(e\.g\. (name=\S+)\)")], tmp_path)
    assert resolve_resume(renamed, str(renamed.paths.output_dir), train_identity(renamed)) is None  # a fresh run
    with pytest.raises(ConfigError, match="resume=never: give this run another name"):
        fit(compose_config("train", [*TRAIN, "resume=never"], tmp_path))
    command = _fix(message, r"`(mv [^`]+)`")
    assert command == f"mv {run_dir} {run_dir}.old"
    subprocess.run(shlex.split(command), check=True)  # the suggested command, as written
    assert resolve_resume(other, run_dir, train_identity(other)) is None  # the same command now starts afresh


def test_a_corrupt_run_file_names_a_fix_that_works(tmp_path):
    from reproduce.runtime.run_dir import read_run_file

    path = tmp_path / "run.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError) as err:
        read_run_file(str(path))
    subprocess.run(shlex.split(_fix(str(err.value), r"`(rm [^`]+)`")), check=True)
    assert read_run_file(str(path)) == {}


# --- the Makefile: `make reproduce-all` runs every embedded table, then the report ------------------
OPT_IN_TABLES = {"sanity_data"}  # trains a permuted-label model for 30 epochs: run it by name


def _make_commands(*args: str) -> list[str]:
    """The commands ``make`` would run (``-n``; the virtualenv stamp counts as up to date)."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", *args], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_reproduce_all_runs_every_embedded_table_then_the_report():
    import yaml

    specs = {f[:-5]: yaml.safe_load((ROOT / "conf" / "table" / f).read_text())
             for f in os.listdir(ROOT / "conf" / "table") if f.endswith(".yaml")}
    embedded = {n for n, s in specs.items() if str(s.get("data")).startswith("synthetic") or s.get("data") == "photos"}
    listed = yaml.safe_load((ROOT / "conf" / "all.yaml").read_text())["tables"]
    assert set(listed) == embedded - OPT_IN_TABLES
    (command,) = [c for c in _make_commands("reproduce-all", "QUICK=1") if "-m reproduce." in c]
    assert command.endswith("-m reproduce.all jobs=2 quick=true")
    assert not any("quick=true" in c for c in _make_commands("reproduce-all"))  # QUICK unset: the full tables
    assert any(c.endswith("-m reproduce.all jobs=4") for c in _make_commands("reproduce-all", "JOBS=4"))


@pytest.mark.parametrize("target", ["reproduce-table3", "reproduce-moxi", "reproduce-superpixel", "reproduce-smdl",
                                    "reproduce-sanity", "reproduce-interventions", "report"])
def test_every_reproduce_target_passes_quick_on(target):
    commands = [c for c in _make_commands(target, "QUICK=1") if "-m reproduce." in c]
    assert commands and all(c.rstrip().endswith("quick=true") for c in commands), commands
    tables = re.findall(r"table=(\w+)", " ".join(commands))
    expected = {"reproduce-moxi": ["moxi", "moxi_photos"], "reproduce-smdl": ["smdl", "smdl_misclassified"]}
    assert tables == expected.get(target, [target.removeprefix("reproduce-")] if target != "report" else [])
    if target == "reproduce-moxi":  # a paper setting runs that table alone
        assert re.findall(r"table=(\w+)", " ".join(_make_commands(target, "DATA=imagenet_val"))) == ["moxi_imagenet_val"]
