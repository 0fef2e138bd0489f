"""The maps an evaluation's test step already computed, so that no map is explained twice."""

from __future__ import annotations

import itertools
import weakref

import torch
from torch import nn


def weights_stamp(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Identity and in-place version of every parameter and buffer of ``model``.

    A sanity check re-randomises *one* copy of the model in place between its steps (same object),
    so the model object alone does not say which weights computed a map; every in-place write
    (``copy_``, ``load_state_dict``) bumps a tensor's version counter, and replacing a tensor changes
    its identity."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple((id(t), t._version) for t in tensors)


class MapCache:
    """Maps computed in the current test step, per model and weights: a request for the same images
    (or their leading rows: a map never depends on its batch-mates) with the same targets is answered
    from here instead of explaining again. Holds at most ``size`` entries; cleared at every batch."""

    def __init__(self, size: int = 8):
        self.size = size
        # A weak reference per entry, compared by identity: keying on id(model) alone let a new model
        # (e.g. the next randomised copy of a sanity check) reuse a freed model's id and its maps. The
        # weights' stamp catches the same object with changed weights (the next MPRT step).
        self.entries: list[tuple[weakref.ref, tuple, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.hits = 0

    def clear(self) -> None:
        self.entries.clear()

    def get(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        n, stamp = images.shape[0], None
        for key, seen_stamp, seen, seen_targets, maps in self.entries:
            if key() is not model or seen.shape[0] < n or seen.shape[1:] != images.shape[1:]:
                continue
            stamp = weights_stamp(model) if stamp is None else stamp
            if seen_stamp == stamp and torch.equal(seen[:n], images) and torch.equal(seen_targets[:n], targets):
                self.hits += 1
                return maps[:n]
        return None

    def put(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor) -> None:
        self.entries.append((weakref.ref(model), weights_stamp(model), images, targets, maps.detach()))
        del self.entries[:-self.size]
