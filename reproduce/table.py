"""``python -m reproduce.table table=<name>`` (or ``reproduce table table=<name>``): reproduce one paper
table end to end.

Trains or reuses the models the table needs, evaluates every cell not yet on disk (a killed run
resumes where it stopped; a cell is reused while its config and models are unchanged), then writes
``results/<name>.csv``, ``results/<name>.md`` and figures, and logs them to one W&B group (offline by
default). Every model and cell config is composed and validated before the first model trains.

Examples:
    python -m reproduce.table table=table3
    python -m reproduce.table table=moxi smoke=true          # tiny settings, under outputs/smoke and results/smoke
    python -m reproduce.table table=table3 recompute="Grad-CAM"   # one row again (or recompute=true: every cell)
    python -m reproduce.table table=table3 assemble_only=true
    python -m reproduce.table table=table3 quick=true        # a preview: fewer images, results/table3_quick.*

Sharding: ``python -m reproduce.table -m table=table3 shard.count=2 shard.index=0,1
hydra/launcher=joblib_local`` evaluates the cells in two processes (or SLURM jobs with
``hydra/launcher=submitit_slurm``); then ``python -m reproduce.table table=table3 assemble_only=true``
writes the table from every shard's cells.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from reproduce.runtime.cli_errors import reported_errors, run_entry_point
from reproduce.runtime.paths import CONF_DIR

PROG = "reproduce.table"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="table")
def main(cfg: DictConfig) -> None:
    # Lightning is imported here, not at the top: `--help`, `--version` and config errors answer in
    # a fraction of the seconds that importing it takes.
    from reproduce.runtime.table_publish import publish
    from reproduce.runtime.table_runner import run_table
    from reproduce.runtime.validation import validate_table

    with reported_errors(PROG):
        spec = validate_table(cfg)  # the spec is built once, here, and passed down
        root, smoke = str(cfg.paths.root), bool(cfg.smoke)
        seconds = None
        if not cfg.assemble_only:
            recompute = OmegaConf.to_container(cfg.recompute) if OmegaConf.is_config(cfg.recompute) else cfg.recompute
            run = run_table(spec, root, shard=(int(cfg.shard.index), int(cfg.shard.count)), logger=str(cfg.run_logger),
                            progress_bar=bool(cfg.progress_bar), smoke=smoke, recompute=recompute,
                            verbose=bool(cfg.verbose))
            seconds = run.seconds
        if cfg.assemble and int(cfg.shard.count) > 1:
            # One shard sees only its own cells: a table from it would be partial.
            flags = (" smoke=true" if smoke else "") + (" quick=true" if cfg.quick else "")
            print(f"[{PROG}] shard {int(cfg.shard.index)}/{int(cfg.shard.count)} done; assemble with "
                  f"`python -m reproduce.table table={cfg.table.name}{flags} assemble_only=true`.")
        elif cfg.assemble:
            publish(spec, root, wandb_mode=cfg.wandb_mode, seconds=seconds, smoke=smoke)


if __name__ == "__main__":
    run_entry_point(main, PROG, "table", __doc__)
