"""The shared perturbation machinery: rank pixels or patches, build masked copies, score them.

Insertion/deletion, patch curves (MoXI), accuracy at budget, average highest confidence and
fidelity all reduce to: "for each image, evaluate the model on M masked copies and read a score".
This module does that once, batched on the device:

- :func:`rank_descending` turns importance values ``[B, N]`` into ranks (0 = most important).
  **Ties** keep raster order: among equal values the lower flat index (row-major, top-left first)
  ranks first (a stable descending sort). Xplique reverses an ascending ``argsort`` instead, so its
  ties come out in an unspecified (in practice reverse) order; continuous maps have no ties.
  :func:`rank_descending_random_ties` breaks ties by a seeded random order per image instead (the
  fidelity default), so that a budget that cuts through a region of equal values takes a random
  part of it rather than its top rows.
- :func:`fraction_counts` gives the number of features flipped at each of ``steps + 1`` evenly
  spaced fractions, ``floor(t * N / steps)`` in exact integer arithmetic (the same counts as
  Xplique's ``np.linspace(0, N, steps + 1, dtype=int32)`` at the sizes checked in the tests,
  without relying on float rounding).
- :class:`Perturber` evaluates keep masks built chunk by chunk from the ranks (so the
  ``[B, M, H, W]`` masks of all steps never sit in memory at once) through the shared maskers:
  :class:`~reproduce.models.masking.FillMasker` for pixels or patches on any model and
  :class:`~reproduce.models.masking.TokenDropMasker` for ViT patches.
- :func:`target_scores` reads softmax probability, logit or correctness from the logits.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.checks import check_choice, choice_error
from reproduce.errors import ConfigError, InputError
from reproduce.metrics.base import check_finite
from reproduce.metrics.sample_rng import per_sample
from reproduce.models import FillMasker, ModelAdapter, Partition, TokenDropMasker, inference_state
from reproduce.models.masking import FILL_CHOICES

SCORES = ("softmax", "logit", "accuracy")
REMOVALS = ("auto", "fill", "token")


def check_steps(steps: int, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ConfigError(f"{name} must be a positive integer (e.g. 10 as Xplique, or 100), got {steps!r}.")
    return steps


def check_fill(fill: str | float) -> str | float:
    if isinstance(fill, bool) or not (fill in FILL_CHOICES or isinstance(fill, (int, float))):
        raise choice_error("baseline", fill, FILL_CHOICES, also="a number in the normalised space ('mean' = 0 there)")
    return float(fill) if isinstance(fill, (int, float)) else fill


def rank_descending(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``[B, N]`` of ``values`` ``[B, N]`` in descending order (0 = largest; ties by index)."""
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(values.shape[1], device=values.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def rank_descending_random_ties(values: torch.Tensor, indices: torch.Tensor | None, seed: int) -> torch.Tensor:
    """Ranks ``[B, N]`` like :func:`rank_descending`, ties broken by a random order per image.

    The tie order of image ``i`` is a permutation drawn from a generator seeded by ``(seed,
    indices[i])`` (:mod:`reproduce.metrics.sample_rng`; ``indices=None``: the batch positions), so it
    never depends on batch-mates and a rerun reproduces it. Values are sorted stably after the random
    permutation: the result is the descending order with equal values in random order.
    """
    b, n = values.shape
    rows = torch.arange(b, device=values.device) if indices is None else indices.to(values.device)
    shuffle = per_sample(rows, seed, lambda g: torch.randperm(n, generator=g, device=values.device), values.device)
    shuffled = values.gather(1, shuffle)
    order = shuffle.gather(1, torch.sort(shuffled, dim=1, descending=True, stable=True).indices)
    positions = torch.arange(n, device=values.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def fraction_counts(n: int, steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``floor(t * n / steps)`` for ``t = 0..steps``: features flipped at each step."""
    t = torch.arange(steps + 1, dtype=torch.long, device=device)
    return torch.div(t * n, steps, rounding_mode="floor")


def trapezoid_auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under curves sampled at evenly spaced points of [0, 1] (trapezoid rule, last dim).

    Equals the mean of the per-step trapezoids, as Xplique computes it; linear, so the AUC of the
    mean curve is the mean of the per-image AUCs.
    """
    if curves.shape[-1] < 2:
        raise InputError("A curve needs at least two points to have an area.")
    return (curves[..., :-1] + curves[..., 1:]).mean(-1) / 2


def patch_scores(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Mean of each map over the cells of a ``grid`` ``[B, gh*gw]`` (row-major, as Partition)."""
    b, h, w = maps.shape
    gh, gw = grid
    if h % gh or w % gw:
        raise ConfigError(f"A {gh}x{gw} patch grid does not divide {h}x{w} maps; choose a grid whose sides divide the image.")
    pooled = F.avg_pool2d(maps[:, None].float(), kernel_size=(h // gh, w // gw))
    return pooled.reshape(b, gh * gw)


def target_scores(logits: torch.Tensor, classes: torch.Tensor, score: str) -> torch.Tensor:
    """Per-row scores ``[B, M]`` from logits ``[B, M, K]`` for one class per image ``[B]``.

    ``softmax``: probability of the class; ``logit``: its logit; ``accuracy``: 1 where the argmax
    equals the class (pass the labels as ``classes``), else 0.
    """
    idx = classes.long().view(-1, 1, 1).expand(-1, logits.shape[1], 1)
    if score == "logit":
        return logits.gather(2, idx).squeeze(2).float()
    if score == "softmax":
        return torch.softmax(logits.float(), dim=-1).gather(2, idx).squeeze(2)
    if score == "accuracy":
        return (logits.argmax(-1) == classes.view(-1, 1)).float()
    raise choice_error("score", score, SCORES)


def resolve_removal(model: nn.Module, removal: str) -> str:
    """``auto`` -> token dropping for ViTs (MoXI's masking), fill for every other model."""
    check_choice("removal", removal, REMOVALS)
    adapter = ModelAdapter(model)
    if removal == "auto":
        return "token" if adapter.is_vit else "fill"
    if removal == "token":
        adapter.require_vit("removal='token'")
    return removal


class Perturber:
    """Evaluate a model on masked copies of each image, ``max_batch`` rows per forward pass.

    Args:
        model: the classifier (run in eval mode with frozen parameters, restored afterwards).
        fill: what hidden pixels become (see :class:`~reproduce.models.masking.FillMasker`).
        removal: ``"fill"`` (any model) or ``"token"`` (ViT; keep masks are over the token grid).
        max_batch: rows per forward pass.
        indices: dataset indices of the batch rows, to name samples whose logits are NaN/Inf.
    """

    def __init__(self, model: nn.Module, *, fill: str | float = "mean", removal: str = "fill",
                 max_batch: int = 256, blur_sigma: float = 5.0, indices: torch.Tensor | None = None):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch must be a positive integer, got {max_batch!r}.")
        self.model = model
        self.removal = removal
        self.max_batch = max_batch
        self.indices = indices
        self.masker = TokenDropMasker(model, max_batch=max_batch) if removal == "token" else \
            FillMasker(model, fill=fill, max_batch=max_batch, blur_sigma=blur_sigma)

    def logits(self, x: torch.Tensor, num_masks: int, keep: Callable[[int, int], torch.Tensor],
               partition: Partition | None = None) -> torch.Tensor:
        """Logits ``[B, M, K]`` of ``x`` seen through ``keep(start, stop)`` for masks ``start..stop``.

        ``keep`` returns ``[B, stop - start, H, W]`` pixel masks, or ``[B, stop - start, P]`` player
        masks when a ``partition`` is given (required for token removal). True/1 = visible.
        """
        rows = max(1, self.max_batch // x.shape[0])
        outs = []
        with inference_state(self.model), torch.no_grad():
            for start in range(0, num_masks, rows):
                k = keep(start, min(num_masks, start + rows))
                if partition is None:
                    outs.append(self.masker.forward_pixels(x, k))
                else:
                    outs.append(self.masker(x, partition, k))
        logits = torch.cat(outs, dim=1)
        indices = self.indices if self.indices is not None else torch.arange(x.shape[0])
        check_finite(logits, indices, "Model outputs on masked inputs", "check the model on these samples")
        return logits

    def ranked_logits(self, x: torch.Tensor, ranks: torch.Tensor, counts: torch.Tensor, *, reveal: bool,
                      partition: Partition | None = None) -> torch.Tensor:
        """Logits ``[B, S, K]`` with the ``counts[s]`` top-ranked features shown (``reveal``) or hidden.

        ``ranks`` ``[B, N]`` ranks pixels (``N = H*W``) or the players of ``partition``.
        """
        b = x.shape[0]
        spatial = x.shape[-2:] if partition is None else None

        def keep(start: int, stop: int) -> torch.Tensor:
            top = ranks[:, None, :] < counts[start:stop].to(ranks.device)[None, :, None]  # [B, m, N]
            visible = top if reveal else ~top
            return visible.reshape(b, stop - start, *spatial) if spatial is not None else visible

        return self.logits(x, int(counts.numel()), keep, partition)
