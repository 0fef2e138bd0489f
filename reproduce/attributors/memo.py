"""Attributions that later evaluations of the same model, images and targets reuse.

A table explains the same test images with the same reference model in many rows: the super-pixel
table's model B computes the same integrated gradients (or SmoothGrad copies) for each of its five
segmenter rows, since grouping comes after the base method. An :class:`AttributionMemo` keeps such
intermediate results across those rows; each cell loads its models afresh, so an entry is keyed by
the weights' content (:func:`weights_digest`), not by the model object.
"""

from __future__ import annotations

import hashlib
import itertools

import torch
from torch import nn


def weights_digest(model: nn.Module) -> str:
    """A digest of the names, shapes, dtypes and every value of ``model``'s parameters and buffers:
    equal for equal weights whichever object holds them, and different after any in-place change."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class AttributionMemo:
    """Tensors computed for ``(key, model weights, images, targets)``; a request with an equal key,
    equal weights and equal images and targets (compared exactly) is answered from here. ``key`` names
    the computation (e.g. the base method and its options). The oldest entries are dropped beyond
    ``max_bytes`` of stored tensors."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self.entries: list[tuple[str, str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.hits = 0
        self.misses = 0

    def _bytes(self) -> int:
        return sum(t.numel() * t.element_size() for entry in self.entries for t in entry[2:])

    def get(self, key: str, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        digest = weights_digest(model)
        for seen_key, seen_digest, seen, seen_targets, value in self.entries:
            if (seen_key == key and seen_digest == digest and seen.shape == images.shape
                    and seen.device == images.device and seen_targets.shape == targets.shape
                    and torch.equal(seen, images) and torch.equal(seen_targets, targets)):
                self.hits += 1
                return value
        self.misses += 1
        return None

    def put(self, key: str, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, value: torch.Tensor) -> None:
        self.entries.append((key, weights_digest(model), images.detach().clone(), targets.detach().clone(), value.detach()))
        while len(self.entries) > 1 and self._bytes() > self.max_bytes:
            del self.entries[0]
