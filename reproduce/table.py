"""``python -m reproduce.table table=<name>``: reproduce one paper table end to end.

Trains or reuses the models the table needs, evaluates every cell not yet on disk (a killed run
resumes where it stopped), then writes ``results/<name>.csv``, ``results/<name>.md`` and figures,
and logs them to one W&B group (offline by default).

Sharding: ``python -m reproduce.table -m table=table3 shard.count=2 shard.index=0,1
hydra/launcher=joblib_local`` evaluates the cells in two processes (or SLURM jobs with
``hydra/launcher=submitit_slurm``); then ``python -m reproduce.table table=table3 assemble_only=true``
writes the table from every shard's cells.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from reproduce.runtime.paths import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="table")
def main(cfg: DictConfig) -> None:
    from reproduce.runtime.table_publish import publish
    from reproduce.runtime.table_runner import run_table
    from reproduce.runtime.table_spec import TableSpec
    from reproduce.runtime.config_hash import to_plain
    from reproduce.runtime.validation import reported_errors, validate_table

    with reported_errors("reproduce.table"):
        validate_table(cfg)
        root = str(cfg.paths.root)
        seconds = None
        if not cfg.assemble_only:
            run = run_table(cfg.table, root, shard=(int(cfg.shard.index), int(cfg.shard.count)),
                            logger=str(cfg.run_logger), progress_bar=bool(cfg.progress_bar), smoke=bool(cfg.smoke))
            seconds = run.seconds
        if cfg.assemble and int(cfg.shard.count) > 1:
            # One shard sees only its own cells: a table from it would be partial.
            print(f"[reproduce.table] shard {int(cfg.shard.index)}/{int(cfg.shard.count)} done; assemble with "
                  f"`python -m reproduce.table table={cfg.table.name} assemble_only=true`.")
        elif cfg.assemble:
            publish(TableSpec.from_config(to_plain(cfg.table)), root, wandb_mode=cfg.wandb_mode, seconds=seconds)


if __name__ == "__main__":
    from reproduce.runtime.validation import run_entry_point

    run_entry_point(main, "reproduce.table")
