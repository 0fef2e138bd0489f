"""``python -m reproduce.evaluate attributor=<name> metrics=[...] [train_run=... | checkpoint=...]`` (or
``reproduce evaluate ...``): evaluate one attributor on a trained model.

Explains the test images of a dataset (``eval_images`` of them that pass ``samples``, at most
``per_class`` per class) and writes ``outputs/evaluate/<name>/result.json`` (plus ``overlays.png``);
logs to W&B offline by default. A result is reused while its config and the content of every model it
used are unchanged (``recompute=true`` forces it). The config is validated first; a mistake is
reported as one ``reproduce.evaluate: error: ...`` line.

Examples:
    python -m reproduce.evaluate attributor=gradcam train_run=quickstart_cnn metrics=[pxap,pointing_game]
    python -m reproduce.evaluate attributor=rise train_run=quickstart_cnn samples=correct eval_images=50 per_class=10
    python -m reproduce.evaluate model=efficientnet_lite0_imagenet checkpoint=null data=photos \\
        attributor=integrated_gradients metrics=[insertion,deletion]
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from reproduce.runtime.cli_errors import reported_errors, run_entry_point
from reproduce.runtime.paths import CONF_DIR

PROG = "reproduce.evaluate"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    # Lightning is imported here, not at the top: `--help`, `--version` and config errors answer in
    # a fraction of the seconds that importing it takes.
    from lightning.pytorch.utilities import rank_zero_only

    from reproduce.runtime.console import summary_lines, where_things_went
    from reproduce.runtime.evaluation import result_path_of, run_cell
    from reproduce.runtime.validation import validate_evaluate

    with reported_errors(PROG):
        validate_evaluate(cfg)
        run = run_cell(cfg)
    if rank_zero_only.rank != 0:  # under strategy=ddp every rank runs this; one summary is enough
        return
    result, out = run.result, str(cfg.paths.output_dir)
    print(f"[{PROG}] {run.describe(result_path_of(cfg))}")
    asked = result.get("requested_images")
    n = result["evaluated_images"]
    print(f"[{PROG}] {cfg.name}: {n}{f' of {asked}' if asked is not None and n < asked else ''} images "
          f"(samples={result['samples']}); proportions in %:")
    for line in summary_lines(result):
        print(line)
    figures = [os.path.join(out, f) for f in ("overlays.png", "stability.png")]
    for line in where_things_went(PROG, out, [result_path_of(cfg), *figures]):
        print(line)


if __name__ == "__main__":
    run_entry_point(main, PROG, "evaluate", __doc__)
