"""``QUICK=1``: a preview of a table in a quarter to a half of its time, with wider intervals.

:func:`quick_spec` turns a table spec into its preview. A spec may say how, in an optional block::

    quick:
      eval_images: 32                   # replaces the table's eval_images
      seeds: [0]                        # replaces the seeds
      overrides: [...]                  # appended to the spec's overrides (e.g. a smaller data split)
      train_overrides: [...]            # appended to train_overrides (e.g. fewer epochs)
      rows: {<row label>: {eval_images: 12, attributor_options: {n_masks: 200}}}  # merged into that row
      drop_rows: [<row label>, ...]     # rows left out of the preview

Without the block (and for every image count the block does not set) each image count is multiplied
by :data:`IMAGES_FACTOR`, never below :data:`MIN_PREVIEW_IMAGES` (so that every cell still has an
interval). Every model the preview trains is trained briefly (:data:`QUICK_TRAIN`, after the model's
own overrides): training is a large part of a full table's time (Table 3: 21 of 44 one-thread
minutes), so the preview's models are weaker than the full run's and its verdicts preview the
pipeline, not the papers' claims. The preview is named ``<name>_quick``, so its models, cells and
results never mix with the full run's; claims read the preview's cells when the report runs with
``quick=true``. Measured on the 2-core machine (README "What was run"): Table 3 7.1 min against
27.3, the MoXI tables 6.7 against 14.9 (``moxi_photos``' 8 photos are already at the minimum, so its
preview is the full table).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from reproduce.checks import suggest
from reproduce.errors import ConfigError
from reproduce.runtime.intervals import MIN_IMAGES

IMAGES_FACTOR = 0.25
MIN_PREVIEW_IMAGES = MIN_IMAGES
# One epoch on a random quarter of the training batches, whatever the model's own recipe says.
QUICK_TRAIN = ("trainer.max_epochs=1", "++trainer.limit_train_batches=0.25")  # ++: the trainer config has no such key
QUICK_FIELDS = ("eval_images", "seeds", "overrides", "train_overrides", "rows", "drop_rows")
SUFFIX = "_quick"


def _fewer(images: int) -> int:
    return max(MIN_PREVIEW_IMAGES, int(math.ceil(images * IMAGES_FACTOR))) if images > MIN_PREVIEW_IMAGES else images


def quick_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """The preview of the table spec ``raw`` (see the module docstring); ``raw`` is not changed."""
    spec = copy.deepcopy(raw)
    block = spec.pop("quick", None) or {}
    name = spec.get("name", "?")
    unknown = [k for k in block if k not in QUICK_FIELDS]
    if unknown:
        raise ConfigError(f"table {name!r}: quick has unknown field(s) {unknown}; fields: {list(QUICK_FIELDS)}."
                          f"{suggest(unknown[0], QUICK_FIELDS)}")
    labels = [r.get("label") for r in spec.get("rows") or []]
    for label in [*(block.get("rows") or {}), *(block.get("drop_rows") or [])]:
        if label not in labels:
            raise ConfigError(f"table {name!r}: quick names row {label!r}, which the table does not have.{suggest(label, labels)}")
    spec["name"] = f"{name}{SUFFIX}"
    spec["title"] = f"QUICK preview (fewer images, wider intervals): {spec.get('title', name)}"
    spec["eval_images"] = block.get("eval_images", _fewer(int(spec.get("eval_images", 200))))
    if "seeds" in block:
        spec["seeds"] = list(block["seeds"])
    for key in ("overrides", "train_overrides"):
        if block.get(key):
            spec[key] = [*(spec.get(key) or []), *block[key]]
    for model in (spec.get("models") or {}).values():
        if isinstance(model, dict) and model.get("train") is not None:
            model["train"] = [*model["train"], *QUICK_TRAIN]
    dropped = set(block.get("drop_rows") or [])
    rows = []
    for row in spec.get("rows") or []:
        if row.get("label") in dropped:
            continue
        changes = (block.get("rows") or {}).get(row.get("label")) or {}
        if "eval_images" in row and "eval_images" not in changes:
            row["eval_images"] = _fewer(int(row["eval_images"]))
        for key, value in changes.items():  # option mappings merge one level deep
            row[key] = {**(row.get(key) or {}), **value} if isinstance(value, dict) else value
        rows.append(row)
    spec["rows"] = rows
    spec["paper"] = {k: v for k, v in (spec.get("paper") or {}).items() if k not in dropped}
    return spec
