"""Learning-rate schedules: warm-up, multistep drops and where COMET's milestones count from."""

from __future__ import annotations

import pytest

from reproduce.errors import ConfigError
from reproduce.lit.optim import lr_factor

COMET = {"name": "multistep", "warmup_epochs": 2, "milestones": [80, 120, 160], "gamma": 0.2}


def _drops(cfg, epochs=200, steps=10):
    """Epochs (0-based) whose first step has a lower rate than the step before."""
    factors = [lr_factor(s, steps, epochs * steps, cfg) for s in range(epochs * steps)]
    return [s // steps for s in range(1, len(factors)) if factors[s] < factors[s - 1] - 1e-12]


def test_comet_milestones_count_from_the_end_of_the_warm_up():
    assert _drops(COMET) == [80, 120, 160]  # counted from step 0 (the old behaviour)
    assert _drops({**COMET, "milestones_from": "warmup_end"}) == [82, 122, 162]  # as the released code
    assert lr_factor(0, 10, 2000, COMET) == pytest.approx(1 / 20) and lr_factor(19, 10, 2000, COMET) == 1.0
    with pytest.raises(ConfigError, match="milestones_from"):
        lr_factor(0, 10, 2000, {**COMET, "milestones_from": "warmup"})  # rejected before training


def test_comet_module_config_uses_the_code_origin():
    from omegaconf import OmegaConf

    from reproduce.runtime.paths import CONF_DIR

    module = OmegaConf.load(f"{CONF_DIR}/module/comet.yaml")
    assert module.scheduler.milestones_from == "warmup_end"
    assert "/work/" not in open(f"{CONF_DIR}/module/comet.yaml").read()  # no path outside the repository
