"""The maps an evaluation's test step already computed, so that no map is explained twice."""

from __future__ import annotations

import weakref

import torch
from torch import nn


class MapCache:
    """Maps computed in the current test step, per model: a request for the same images (or their
    leading rows: a map never depends on its batch-mates) with the same targets is answered from here
    instead of explaining again. Holds at most ``size`` entries; cleared at every batch."""

    def __init__(self, size: int = 8):
        self.size = size
        # A weak reference per entry, compared by identity: keying on id(model) alone let a new model
        # (e.g. the next randomised copy of a sanity check) reuse a freed model's id and its maps.
        self.entries: list[tuple[weakref.ref, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.hits = 0

    def clear(self) -> None:
        self.entries.clear()

    def get(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        n = images.shape[0]
        for key, seen, seen_targets, maps in self.entries:
            if (key() is model and seen.shape[0] >= n and seen.shape[1:] == images.shape[1:]
                    and torch.equal(seen[:n], images) and torch.equal(seen_targets[:n], targets)):
                self.hits += 1
                return maps[:n]
        return None

    def put(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor) -> None:
        self.entries.append((weakref.ref(model), images, targets, maps.detach()))
        del self.entries[:-self.size]
