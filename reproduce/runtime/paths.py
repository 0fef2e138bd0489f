"""Where things live: the Hydra configuration (``conf/`` at the root of the checkout, plus the folders
of ``hydra.searchpath`` inside a running app) and the folders a table writes.

A table ``<name>`` keeps its models in ``outputs/tables/<name>/models/``, its cells in
``outputs/tables/<name>/cells/`` and its assembled files in ``results/<name>.*``; a smoke run
(``smoke=true``, tiny settings) keeps all of them apart, under ``outputs/smoke/...`` and
``results/smoke/...``, so it can never be mistaken for, overwrite or block the real run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from reproduce.errors import ConfigError

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
SMOKE_TITLE = "SMOKE (tiny settings): not a result"
# A run name becomes a directory under outputs/<task>/: one path component of these characters.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+,-]*")


def slug(name: str) -> str:
    """``name`` made a safe run-directory name (what :func:`check_run_name` suggests)."""
    return re.sub(r"[^A-Za-z0-9._=+,-]+|\.{2,}", "_", str(name)).strip("._=+,-") or "run"


def check_run_name(key: str, name: Any) -> None:
    """A run name is one directory below ``outputs/<task>/``: no ``/``, no ``..``, no leading dot."""
    if isinstance(name, str) and RUN_NAME.fullmatch(name) and ".." not in name:
        return
    raise ConfigError(
        f"{key}={name!r} is not a plain run name (it becomes a directory under outputs/, so it may hold "
        f"letters, digits and . _ = + , - only, without '..' or '/'); refused, nothing was written. "
        f"Use e.g. {key}={slug(name)}."
    )


@dataclass(frozen=True)
class TableLayout:
    root: str
    name: str
    smoke: bool = False

    @property
    def task(self) -> str:
        """The ``task`` under ``outputs/`` of the table's runs (Hydra's ``paths.output_dir``)."""
        return f"smoke/tables/{self.name}" if self.smoke else f"tables/{self.name}"

    @property
    def table_dir(self) -> str:
        return os.path.join(self.root, "outputs", self.task)

    def cell_dir(self, key: str) -> str:
        return os.path.join(self.table_dir, "cells", key)

    def cell_result(self, key: str) -> str:
        return os.path.join(self.cell_dir(key), "result.json")

    @property
    def results_dir(self) -> str:
        return os.path.join(self.root, "results", "smoke") if self.smoke else os.path.join(self.root, "results")

    def result_file(self, suffix: str) -> str:
        return os.path.join(self.results_dir, f"{self.name}{suffix}")

    def title(self, title: str) -> str:
        return f"{SMOKE_TITLE}: {title}" if self.smoke else title


def searchpath_overrides() -> list[str]:
    """``hydra.searchpath=[...]`` of the running Hydra app (empty outside one or without it).

    The global config loader's repository predates the app's own ``hydra.searchpath``, so configs
    composed or listed inside the app (table cells, attributor names) must pass it again."""
    if not HydraConfig.initialized() or not HydraConfig.get().searchpath:
        return []
    return [f"hydra.searchpath=[{','.join(repr(str(p)) for p in HydraConfig.get().searchpath)}]"]


def config_folders() -> list[str]:
    """``conf/`` and the ``file://`` folders of the running app's ``hydra.searchpath``."""
    folders = [CONF_DIR]
    if HydraConfig.initialized():
        folders += [m for p in HydraConfig.get().searchpath or [] for m in re.findall(r"file://(.+)", str(p))]
    return folders


def group_options(group: str) -> list[str]:
    """Names of the configs of ``group`` (``conf/<group>/<name>.yaml``), plus those of the folders of
    ``hydra.searchpath`` when called inside a Hydra app (out-of-tree methods)."""
    names: set[str] = set()
    for folder in config_folders():
        path = os.path.join(folder, group)
        if os.path.isdir(path):
            names.update(f[:-5] for f in os.listdir(path) if f.endswith(".yaml"))
    if GlobalHydra.instance().is_initialized():
        loader = GlobalHydra.instance().config_loader()
        names.update(loader.get_group_options(group, overrides=searchpath_overrides()))
    return sorted(names)


def group_config(group: str, name: str) -> dict[str, Any] | None:
    """The plain contents of config ``<group>/<name>.yaml`` from the first folder that has it, read
    without composing (for groups whose configs have no defaults list, such as ``attributor``)."""
    for folder in reversed(config_folders()):  # searchpath folders override the package's own
        path = os.path.join(folder, group, f"{name}.yaml")
        if os.path.isfile(path):
            return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return None
