"""Which test images an evaluation explains: ``eval_images`` images that pass the ``samples`` filter,
at most ``per_class`` per class, in a seeded order.

- ``samples=all`` without ``per_class``: the first ``eval_images`` test images (the historical rule,
  kept so that existing numbers do not move; no model pass is needed).
- otherwise: the test split is visited in a random order seeded by ``sampling_seed``; a prediction
  pass of the explained model (batched, no gradients) keeps the images that pass the filter
  (``correct``: prediction = label; ``misclassified``: prediction != label) until ``eval_images``
  are chosen, taking at most ``per_class`` of each class. The chosen dataset indices are evaluated in
  ascending order. The reported accuracy is then the top-1 accuracy over the images the pass visited
  (a seeded random sample of the test split, all of it when ``eval_images`` is null), since the
  explained images all pass the filter by construction.

A filter that keeps no image is an error naming the filter and the model's predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from reproduce.errors import DataError


@dataclass
class Selection:
    indices: list[int] | None     # dataset indices to evaluate (None: every test image)
    rule: dict[str, Any]          # samples, eval_images, per_class, seed, order
    pool: int                     # test images the rule chose from
    scanned: int                  # images the prediction pass visited
    chosen: int                   # images selected
    accuracy: float | None = None  # top-1 (%) over the scanned images, when a prediction pass ran
    visited: list[tuple[int, bool]] | None = None  # (dataset index, correct) of each scanned image, when it ran

    def record(self) -> dict[str, Any]:
        return {**self.rule, "pool": self.pool, "scanned": self.scanned, "chosen": self.chosen,
                **({"scanned_accuracy": self.accuracy} if self.accuracy is not None else {})}


def select_test_images(model: nn.Module, dataset: Dataset, *, samples: str = "all", eval_images: int | None = None,
                       per_class: int | None = None, seed: int = 0, batch_size: int = 64,
                       num_workers: int = 0) -> Selection:
    pool = len(dataset)
    rule = {"samples": samples, "eval_images": eval_images, "per_class": per_class, "seed": seed}
    if samples == "all" and per_class is None:
        n = pool if eval_images is None else min(int(eval_images), pool)
        indices = None if n == pool else list(range(n))
        return Selection(indices, {**rule, "order": "first"}, pool, 0, n)
    order = torch.randperm(pool, generator=torch.Generator().manual_seed(seed)).tolist()
    loader = DataLoader(Subset(dataset, order), batch_size=batch_size, num_workers=num_workers)
    want = pool if eval_images is None else int(eval_images)
    taken: dict[int, int] = {}
    chosen: list[int] = []
    visited: list[tuple[int, bool]] = []
    scanned = correct = 0
    device = next(model.parameters()).device
    for batch in loader:
        labels = batch["label"]
        keep = torch.ones_like(labels, dtype=torch.bool)
        if samples != "all":
            with torch.no_grad():
                preds = model(batch["image"].to(device)).argmax(-1).cpu()
            hits = preds == labels
            correct += int(hits.sum())
            keep = hits if samples == "correct" else ~hits
            names = batch["index"].tolist() if "index" in batch else order[scanned:scanned + len(labels)]
            visited += zip(names, hits.tolist())
        for i in range(len(labels)):
            position = scanned + i
            label = int(labels[i])
            if keep[i] and (per_class is None or taken.get(label, 0) < per_class) and len(chosen) < want:
                chosen.append(order[position])
                taken[label] = taken.get(label, 0) + 1
        scanned += len(labels)
        if len(chosen) >= want:
            break
    accuracy = 100.0 * correct / scanned if samples != "all" and scanned else None
    if not chosen:
        raise DataError(_empty_message(samples, scanned, accuracy))
    return Selection(sorted(chosen), {**rule, "order": "seeded"}, pool, scanned, len(chosen), accuracy,
                     visited if samples != "all" else None)


def _empty_message(samples: str, scanned: int, accuracy: float | None) -> str:
    if samples == "correct":
        what, fix = "the model classifies none correctly", "train it longer or use samples=all"
    else:
        what, fix = "the model classifies every one correctly", "use samples=all or a harder test split"
    return (f"samples={samples} kept 0 of {scanned} test images: {what} (accuracy {accuracy or 0.0:.1f} %). "
            f"Nothing to explain: {fix}.")
