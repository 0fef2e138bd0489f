"""The evaluation's map cache answers only for the very model object that computed the maps."""

from __future__ import annotations

import gc

import torch
from torch import nn

from reproduce.lit.map_cache import MapCache


def test_a_new_model_that_reuses_a_freed_models_id_gets_no_cached_maps():
    # Sanity checks explain with one randomised copy after another: each copy is freed before the
    # next is built, so CPython usually gives the next one the same id(). Keyed on id() alone, the
    # cache returned the first copy's maps for every later copy (every MPRT step looked the same).
    cache, images, targets = MapCache(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    model = nn.Linear(4, 4)
    cache.put(model, images, targets, torch.ones(2, 8, 8))
    assert cache.get(model, images, targets) is not None and cache.get(model, images[:1], targets[:1]).shape == (1, 8, 8)
    freed, entry = id(model), cache.entries[0][0]
    del model
    gc.collect()
    assert entry() is None  # the cache keeps no freed model alive, and a dead entry matches nothing
    reused = None
    for _ in range(200):  # find a new model at the freed address, if the allocator gives one
        candidate = nn.Linear(4, 4)
        if id(candidate) == freed:
            reused = candidate
            break
    other = reused if reused is not None else nn.Linear(4, 4)
    assert cache.get(other, images, targets) is None


def test_the_same_model_with_weights_changed_in_place_gets_no_cached_maps():
    # MPRT re-randomises one copy in place between its steps: keyed on the object alone, every step
    # after the first was served the first step's maps (curves constant, full == mean).
    cache, images, targets = MapCache(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    cache.put(model, images, targets, torch.ones(2, 8, 8))
    assert cache.get(model, images, targets) is not None
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert cache.get(model, images, targets) is None
    cache.put(model, images, targets, torch.zeros(2, 8, 8))
    model.load_state_dict(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).state_dict())
    assert cache.get(model, images, targets) is None
    model[1].running_mean = torch.zeros(4)  # a replaced buffer
    assert cache.get(model, images, targets) is None
