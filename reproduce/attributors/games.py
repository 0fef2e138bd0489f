"""Set games over image regions: f(S) for every subset S of the players, from a model or a function.

A *set game* gives every subset S of the players (image regions) a number f(S): the classifier's
reward for the target class when it sees only the regions in S. Conventions used throughout:

- Players are the regions of a :class:`~reproduce.models.Partition` (patch grid, super-pixels, SMDL
  sub-regions), numbered ``0..n-1``; a subset is a boolean ``keep[B, M, n]`` (M subsets per image).
- A game is any callable ``game(keep[B, M, n]) -> values[B, M]`` with ``batch_size``,
  ``num_players`` and ``device`` attributes (:class:`Game`); :class:`SetGame` is the one backed by
  a model, and tests use games written as plain functions (:class:`FunctionGame`).
- Hidden players are removed by a masker: token dropping (ViT, players = token grid; MoXI's
  masking) or fill (any model; 0 in normalised space = the mean colour unless ``fill`` says
  otherwise).
- Rewards come from logits and are computed stably: ``log_odds`` = log p/(1-p) = z_y -
  logsumexp_{c != y} z_c (MoXI's default), or ``log_prob``, ``prob``, ``logit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn

from reproduce.errors import InputError
from reproduce.models import FillMasker, Partition

REWARDS = ("log_odds", "log_prob", "prob", "logit")


def reward_from_logits(logits: torch.Tensor, target: torch.Tensor, kind: str = "log_odds") -> torch.Tensor:
    """Reward of class ``target[b]`` from ``logits[B, M, K]`` -> ``[B, M]``.

    ``log_odds`` never forms p/(1-p): it is z_y minus the logsumexp of the other logits, which is
    exact in float32 even when p rounds to 1.
    """
    check_reward(kind)
    b, m, k = logits.shape
    idx = target.view(b, 1, 1).expand(b, m, 1)
    z_y = logits.gather(-1, idx).squeeze(-1)
    if kind == "logit":
        return z_y
    if kind == "log_odds":
        if k < 2:
            raise InputError("The log-odds reward needs at least two classes; use reward='logit'.")
        return z_y - torch.logsumexp(logits.scatter(-1, idx, float("-inf")), dim=-1)
    log_p = z_y - torch.logsumexp(logits, dim=-1)
    return log_p if kind == "log_prob" else log_p.exp()


def check_reward(kind: str) -> None:
    if kind not in REWARDS:
        raise InputError(f"Unknown reward {kind!r}: use one of {REWARDS}.")


# --- games --------------------------------------------------------------------------------------
class Game(Protocol):
    """What the set-game algorithms need: ``game(keep[B, M, n] bool) -> values[B, M]``."""

    batch_size: int
    num_players: int
    device: torch.device

    def __call__(self, keep: torch.Tensor) -> torch.Tensor: ...


@dataclass
class FunctionGame:
    """A game from a plain function of the keep masks (tests, toy games without images)."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int
    num_players: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    evaluations: int = 0  # subsets evaluated per image, the analogue of forward passes

    def __call__(self, keep: torch.Tensor) -> torch.Tensor:
        self.evaluations += keep.shape[1]
        return self.fn(keep)


class SetGame:
    """f(S) = reward of ``target`` on ``inputs`` showing only the players in S.

    Subsets are evaluated in chunks of at most ``max_rows`` (image, subset) rows per masker call
    (the masker then splits its own forward batches); only the subsets asked for are evaluated.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        partition: Partition,
        masker: Callable[[torch.Tensor, Partition, torch.Tensor], torch.Tensor],
        reward: str = "log_odds",
        max_rows: int = 4096,
    ):
        check_reward(reward)
        if partition.labels.shape[0] != inputs.shape[0]:
            raise InputError(
                f"The partition has {partition.labels.shape[0]} label maps for {inputs.shape[0]} images."
            )
        self.model = model
        self.inputs = inputs
        self.target = target
        self.partition = partition
        self.masker = masker
        self.reward = reward
        self.max_rows = max_rows

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def num_players(self) -> int:
        return self.partition.num_players

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def logits(self, keep: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, M, K]`` of the subsets ``keep[B, M, n]``."""
        b, m, n = keep.shape
        if b != self.batch_size or n != self.num_players:
            raise InputError(f"keep must be [{self.batch_size}, M, {self.num_players}], got {tuple(keep.shape)}.")
        per_call = max(1, self.max_rows // b)
        outs = [self.masker(self.inputs, self.partition, keep[:, s : s + per_call]) for s in range(0, m, per_call)]
        return torch.cat(outs, dim=1)

    def logits_on(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits ``[R, M, K]`` of the subsets ``keep[R, M, n]`` of the batch's images ``images[R]``
        (any images, repeats allowed: searches that evaluate different candidates per image)."""
        r, m, n = keep.shape
        if images.shape != (r,) or n != self.num_players:
            raise InputError(f"keep must be [R, M, {self.num_players}] for R = len(images), got {tuple(keep.shape)}.")
        per_call = max(1, self.max_rows // m)
        outs = []
        for s in range(0, r, per_call):
            idx = images[s : s + per_call]
            part = Partition(labels=self.partition.labels[idx], num_players=n, grid=self.partition.grid)
            outs.append(self._masker_on(idx)(self.inputs[idx], part, keep[s : s + per_call]))
        return torch.cat(outs, dim=0)

    def _masker_on(self, idx: torch.Tensor):
        """The masker for a selection of images: a per-image fill tensor is selected with them."""
        fill = getattr(self.masker, "fill", None)
        if isinstance(self.masker, FillMasker) and isinstance(fill, torch.Tensor) and fill.dim() == 4 and fill.shape[0] > 1:
            return FillMasker(self.masker.adapter.model, fill=fill[idx], max_batch=self.masker.max_batch,
                              blur_sigma=self.masker.blur_sigma)
        return self.masker

    def __call__(self, keep: torch.Tensor) -> torch.Tensor:
        return reward_from_logits(self.logits(keep), self.target, self.reward)


