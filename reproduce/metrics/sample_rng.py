"""Randomness that depends only on (seed, dataset index), never on batch composition.

Stochastic metrics (random pixel dropping, mu-fidelity subsets, max-sensitivity noise) draw each
sample's randomness from its own generator on the sample's device, seeded by the metric seed and
the sample's dataset index. So a sample gets the same perturbation whatever its batch-mates, batch
size or process rank, and a rerun reproduces it.
"""

from __future__ import annotations

from typing import Callable

import torch

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads consecutive indices over the seed space
_MASK = (1 << 63) - 1


def sample_seed(seed: int, index: int) -> int:
    return (int(seed) * _MIX + int(index) * 0xBF58476D1CE4E5B9 + 1) & _MASK


def per_sample(indices: torch.Tensor, seed: int, draw: Callable[[torch.Generator], torch.Tensor],
               device: torch.device | str) -> torch.Tensor:
    """Stack ``draw(generator)`` over the samples, each generator seeded by (seed, index)."""
    out = []
    for index in indices.tolist():
        g = torch.Generator(device=device)
        g.manual_seed(sample_seed(seed, index))
        out.append(draw(g))
    return torch.stack(out)


def uniform(indices: torch.Tensor, seed: int, shape: tuple[int, ...], device: torch.device | str,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, *shape]`` uniform [0, 1) values, one generator per sample."""
    return per_sample(indices, seed, lambda g: torch.rand(shape, generator=g, device=device, dtype=dtype), device)
