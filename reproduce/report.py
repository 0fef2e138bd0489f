"""``python -m reproduce.report``: the claims scoreboard and every table in ``results/REPORT.md``.

Validates every claim of ``conf/claims/`` first (a claim naming a table, row or column that does not
exist, a direction other than higher/lower or a margin of the wrong sign fails here, naming the
claim), then judges each claim from the table cells on disk (claims of tables not run yet say "not
run"), and logs the scoreboard to W&B (offline by default) as one run of the group ``report``.

Examples:
    python -m reproduce.report                     # after `make reproduce-all`
    python -m reproduce.report claim_files=[moxi,smdl]  # only these papers' claims
    python -m reproduce.report quick=true          # judge the QUICK=1 previews
    python -m reproduce.report tables=[interventions]  # the tables shown besides those the claims name
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from reproduce.runtime.paths import CONF_DIR

PROG = "reproduce.report"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
def main(cfg: DictConfig) -> None:
    from reproduce.checks import check_bool, check_choice
    from reproduce.errors import ConfigError
    from reproduce.runtime.report import build_report
    from reproduce.runtime.cli_errors import reported_errors
    from reproduce.runtime.validation import WANDB_MODES

    with reported_errors(PROG):
        names = {}
        for key, example in (("claim_files", "[moxi, smdl]"), ("tables", "[table3, interventions]")):
            value = OmegaConf.to_container(cfg[key]) if cfg.get(key) is not None else None
            if value is not None and (not isinstance(value, list) or not all(isinstance(c, str) for c in value)):
                raise ConfigError(f"{key} must be a list of names such as {example}, got {value!r}.")
            names[key] = value
        check_choice("wandb_mode", cfg.wandb_mode, WANDB_MODES)
        report = build_report(str(cfg.paths.root), names["claim_files"], quick=check_bool("quick", cfg.quick),
                              wandb_mode=str(cfg.wandb_mode), figures=check_bool("figures", cfg.figures),
                              tables=names["tables"])
    print(f"[{PROG}] wrote {report.path}: " + ", ".join(f"{k} {n}" for k, n in report.counts.items()))


if __name__ == "__main__":
    from reproduce.runtime.cli_errors import run_entry_point

    run_entry_point(main, PROG, "report", __doc__)
