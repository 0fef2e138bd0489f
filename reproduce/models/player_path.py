"""A path of nested player sets that a masker has already evaluated on a model.

A greedy search such as MoXI evaluates, at step k, the set made of its first k + 1 chosen players
(shown for insertion, hidden for deletion); the logits of those sets are exactly the points of the
patch insertion/deletion curve of its own ordering under the same masker and model. The search
hands them on as a :class:`PlayerPath` (an attributor's ``last_extras()["player_path"]``) so the
curve metric can read them instead of running the model again; the metric checks that every field
matches its own protocol before it does (:func:`reproduce.metrics.patch_curves.patch_curve`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PlayerPath:
    """Attributes:
        model: the model that was evaluated (the metric reuses only for the very same object).
        inputs: ``[B, C, H, W]`` the images, in the model's normalised space.
        grid: the patch grid of the players (row-major cells, as :class:`Partition.patch_grid`).
        removal: ``"token"`` (ViT token dropping) or ``"fill"``; ``fill``: the fill for ``"fill"``.
        mode: ``"insertion"`` (the first k players shown, the rest hidden) or ``"deletion"`` (the
            first k hidden).
        order: ``[B, n]`` the players, first chosen first; ``exact`` leading ones are greedy choices.
        logits: ``[B, e, K]``: row k holds the logits with the first k + 1 players of ``order``
            shown (insertion) or hidden (deletion), for k = 0..e-1.
    """

    model: nn.Module
    inputs: torch.Tensor
    grid: tuple[int, int]
    removal: str
    fill: str | float | None
    mode: str
    order: torch.Tensor
    logits: torch.Tensor
    exact: int

    @property
    def evaluated(self) -> int:
        """Prefix sizes 1..evaluated whose logits the path holds."""
        return int(self.logits.shape[1])
