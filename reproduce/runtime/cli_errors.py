"""What the command line shows when a command cannot start: one ``<prog>: error: <message>`` line that
names the fix, never a traceback (``HYDRA_FULL_ERROR=1`` keeps it), for our errors and for Hydra's.

Hydra reports a misspelt config name with its search path and a misspelt key with advice to append
it (``+trainer.max_epoch=1``); both happen before any code of ours runs. :func:`run_entry_point`
therefore composes the command's config once before handing it to Hydra (:func:`preflight`), turns
those errors into one line with close-match suggestions, checks that the run directory can be
created, and answers ``--help`` and ``--version`` itself.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig

from reproduce import __version__
from reproduce.checks import suggest
from reproduce.errors import ConfigError, ReproduceError
from reproduce.runtime.paths import CONF_DIR, check_run_name, config_folders

USER_ERRORS = (ReproduceError, ConfigCompositionException, MissingConfigException, OverrideParseException)


@contextmanager
def reported_errors(prog: str) -> Iterator[None]:
    """Print a user error as ``<prog>: error: <message>`` on stderr and exit with status 2.

    Hydra would print the traceback first and the message last; a config mistake is the user's to
    fix, so its message must come first and alone. ``HYDRA_FULL_ERROR=1`` keeps the traceback.
    """
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.stdout.flush()
        sys.stderr.write(f"{prog}: error: {err}\n(Set HYDRA_FULL_ERROR=1 to see where it was raised.)\n")
        sys.stderr.flush()
        raise SystemExit(2) from None


def check_yaml_files(argv: list[str]) -> None:
    """Parse every config file the app can load (``conf/`` and ``hydra.searchpath`` folders).

    Hydra reports a YAML syntax error deep inside its loader as a long traceback, before any
    handler of ours runs; parsing the files first names the file and line instead."""
    folders = [CONF_DIR]
    for arg in argv:
        if arg.startswith("hydra.searchpath="):
            folders += [m for m in re.findall(r"file://([^,\]'\"]+)", arg) if os.path.isdir(m)]
    for folder in folders:
        for parent, _, files in os.walk(folder):
            for name in sorted(files):
                if not name.endswith((".yaml", ".yml")):
                    continue
                path = os.path.join(parent, name)
                try:
                    with open(path) as f:
                        yaml.safe_load(f)
                except yaml.YAMLError as err:
                    raise ConfigError(f"{path} is not valid YAML; fix it at the place below.\n{err}") from None


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # so that ${hydra:runtime.cwd} resolves
    return cfg


def missing_config_message(err: MissingConfigException) -> str:
    """``metrics=[pxapp]`` -> the group's configs with a close match, instead of Hydra's search path."""
    group, _, name = str(err.missing_cfg_file or "").rpartition("/")
    if not group:
        return str(err).splitlines()[0]
    folders = [os.path.join(f, group) for f in config_folders()]
    options = err.options or sorted({f[:-5] for d in folders if os.path.isdir(d) for f in os.listdir(d) if f.endswith(".yaml")})
    return (f"{group}: there is no config {name!r} (conf/{group}/{name}.yaml).{suggest(name, options)} "
            f"Available: {', '.join(options)} (e.g. {group}={options[0] if options else '<name>'}).")


def unknown_key_message(key: str, argv: list[str], config_name: str) -> str:
    """``trainer.max_epoch=1`` -> the close key of the composed config (not Hydra's ``+key=`` advice)."""
    override = next((a for a in argv if a.lstrip("~").split("=", 1)[0] == key), f"{key}=...")
    try:
        node: Any = _compose(config_name, [a for a in argv if a != override])
    except Exception:  # noqa: BLE001 - the rest of the command line has its own error: report the key alone
        node = None
    parts, path = key.split("."), []
    for part in parts[:-1]:
        if isinstance(node, DictConfig) and part in node and isinstance(node[part], DictConfig):
            node, path = node[part], path + [part]
        else:
            break
    missing = parts[len(path)]
    keys = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(missing, keys, n=1)
    prefix = ".".join(path) + "." if path else ""
    value = override.split("=", 1)[1] if "=" in override else "..."
    if close:
        return f"{key} is not a key of the {config_name} config. Did you mean {prefix}{close[0]}? (e.g. {prefix}{close[0]}={value})"
    where = f"`{prefix[:-1]}`" if path else "the top level"
    return (f"{key} is not a key of the {config_name} config ({where} has {', '.join(sorted(keys)) or 'no keys'}); "
            f"add a new key on purpose with +{override}.")


def preflight(config_name: str, argv: list[str]) -> None:
    """Compose the command's config as Hydra will, reporting Hydra's errors as ours, and make sure the
    run directory can be created. Skipped for Hydra's own flags (``-m``, ``--cfg``, ...)."""
    if any(a.startswith("-") for a in argv):
        return
    try:
        cfg = _compose(config_name, argv)
    except MissingConfigException as err:
        raise ConfigError(missing_config_message(err)) from None
    except ConfigCompositionException as err:
        match = re.match(r"Could not override '([^']+)'", str(err))
        if match and "not in struct" in str(err.__cause__):
            raise ConfigError(unknown_key_message(match.group(1), argv, config_name)) from None
        raise ConfigError(str(err).splitlines()[0] + " " + " ".join(str(err).splitlines()[1:2])) from None
    except OverrideParseException as err:
        raise ConfigError(f"{err.override!r} is not a valid override ({str(err).splitlines()[1]}); "
                          "write key=value, e.g. trainer.max_epochs=2.") from None
    for key in ("train_run", "name"):  # before any directory is created from them (name is built from train_run)
        if key in cfg:
            check_run_name(key, cfg[key])
    output_dir = cfg.paths.output_dir if "paths" in cfg and "output_dir" in cfg.paths else None
    if output_dir is not None:
        try:
            os.makedirs(str(output_dir), exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"cannot create the run directory {output_dir} ({err.strerror}): start the command from a "
                "writable folder or set paths.root=<a writable folder> (every output goes under it)."
            ) from None


def entry_help(prog: str, doc: str | None) -> str:
    """``--help``: a usage line, the entry point's docstring (its examples) and where to look next."""
    return "\n".join([
        f"usage: {prog} [key=value ...]", "", (doc or "").strip().replace("``", "`"), "",
        "Names to choose from: `reproduce list attributors|metrics|datasets|tables`.",
        f"The composed config: `{prog} --cfg job`; Hydra's own options: `{prog} --hydra-help`.",
    ]) + "\n"


def run_entry_point(main: Callable[[], Any], prog: str, config_name: str, doc: str | None = None,
                    shown: str | None = None) -> None:
    """Run a Hydra main: ``--help``/``--version`` answered here, config files parsed and the config
    composed first (see :func:`check_yaml_files`, :func:`preflight`), then Hydra's own run.
    ``prog`` names errors (``reproduce.train: error: ...``); ``shown`` is the command in the usage line."""
    argv = sys.argv[1:]
    if argv[:1] in (["--help"], ["-h"]):
        sys.stdout.write(entry_help(shown or f"python -m {prog}", doc))
        return
    if argv[:1] in (["--version"], ["-V"]):
        print(f"reproduce {__version__}")
        return
    with reported_errors(prog):
        check_yaml_files(argv)
        preflight(config_name, argv)
    main()
