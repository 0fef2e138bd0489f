"""``python -m reproduce.evaluate attributor=<name> metrics=[...] [train_run=... | checkpoint=...]``.

Evaluates one attributor on a trained model over the test split of a dataset and writes
``outputs/evaluate/<name>/result.json`` (plus ``overlays.png``); logs to W&B offline by default.
The config is validated first; a mistake is reported as one ``reproduce.evaluate: error: ...`` line.

Examples:
    python -m reproduce.evaluate attributor=gradcam train_run=quickstart_cnn metrics=[pxap,pointing_game]
    python -m reproduce.evaluate model=efficientnet_lite0_imagenet checkpoint=null data=photos \\
        attributor=integrated_gradients metrics=[insertion,deletion]
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from reproduce.runtime.paths import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from reproduce.runtime.evaluation import evaluate_cell
    from reproduce.runtime.validation import reported_errors, validate_evaluate

    with reported_errors("reproduce.evaluate"):
        validate_evaluate(cfg)
        result = evaluate_cell(cfg)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:  # under strategy=ddp every rank runs this; one summary is enough
        return
    print(f"[reproduce.evaluate] {cfg.name}: {result['evaluated_images']} images")
    for key, value in sorted(result["scalars"].items()):
        arrow = {"higher": "(higher is better)", "lower": "(lower is better)"}.get(result["directions"].get(key), "")
        print(f"  {key:45s} {value:10.4f} {arrow}")


if __name__ == "__main__":
    from reproduce.runtime.validation import run_entry_point

    run_entry_point(main, "reproduce.evaluate")
