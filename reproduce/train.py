"""``python -m reproduce.train [experiment=...] [key=value ...]``: train and test one model.

Examples:
    python -m reproduce.train experiment=quickstart_cnn
    python -m reproduce.train model=vit_micro_p8 trainer.max_epochs=10 logger=csv
Re-running the same command resumes from the run's ``last.ckpt`` (see ``resume`` in conf/train.yaml).
A config mistake is reported as one ``reproduce.train: error: ...`` line naming the fix (exit status 2).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from reproduce.runtime.paths import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from reproduce.runtime.training import fit
    from reproduce.runtime.validation import reported_errors

    with reported_errors("reproduce.train"):
        result = fit(cfg)  # validates the config (runtime/validation.py) before any work
    summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items()))
    print(f"[reproduce.train] {cfg.name}: {summary or 'no test metrics'} ({result.seconds:.0f} s)")
    print(f"[reproduce.train] best checkpoint: {result.best_checkpoint}")
    return result.metrics.get("test/acc")


if __name__ == "__main__":
    from reproduce.runtime.validation import run_entry_point

    run_entry_point(main, "reproduce.train")
