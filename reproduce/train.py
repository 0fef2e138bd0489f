"""``python -m reproduce.train [experiment=...] [key=value ...]`` (or ``reproduce train ...``): train and
test one model.

Examples:
    python -m reproduce.train experiment=quickstart_cnn
    python -m reproduce.train model=vit_micro_p8 trainer.max_epochs=10 logger=csv
    python -m reproduce.train experiment=quickstart_cnn verbose=true    # Lightning's own messages too
Re-running the same command resumes from the run's ``last.ckpt`` (see ``resume`` in conf/train.yaml).
A config mistake is reported as one ``reproduce.train: error: ...`` line naming the fix (exit status 2).
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from reproduce.runtime.cli_errors import reported_errors, run_entry_point
from reproduce.runtime.paths import CONF_DIR

PROG = "reproduce.train"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Lightning is imported here, not at the top: `--help`, `--version` and config errors answer in
    # a fraction of the seconds that importing it takes.
    from reproduce.runtime.console import where_things_went
    from reproduce.runtime.training import fit

    with reported_errors(PROG):
        result = fit(cfg)  # validates the config (runtime/validation.py) before any work
    summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items()))
    reused = " (finished earlier: reused; delete run.json to test again)" if result.reused else ""
    print(f"[{PROG}] {cfg.name}: {summary or 'no test metrics'} ({result.seconds:.0f} s){reused}")
    for line in where_things_went(PROG, result.run_dir, [result.best_checkpoint, result.last_checkpoint,
                                                         os.path.join(result.run_dir, "run.json")]):
        print(line)
    return result.metrics.get("test/acc")


if __name__ == "__main__":
    run_entry_point(main, PROG, "train", __doc__)
