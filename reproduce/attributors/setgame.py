"""Set-game attributors: the base class shared by Shapley values, MoXI and SMDL, and their results.

The games themselves (f(S) from a model, rewards) are in :mod:`reproduce.attributors.games`, the
greedy searches in :mod:`reproduce.attributors.greedy`. ``masker="auto"`` picks token dropping
exactly when it applies (a ViT whose players are its token grid), fill otherwise.

Ordering methods return a :class:`SetGameResult`: ``order[B, k]`` (players, most important first),
``values[B, k]`` (the objective of the set chosen at each step) and ``player_scores[B, n]`` (what
the attribution map paints: ``k - rank`` for ordered players, 0 otherwise, as MoXI's and SMDL's
heatmaps; Shapley methods paint the values themselves).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from reproduce.attributors.base import Attributor
from reproduce.attributors.games import SetGame, check_reward
from reproduce.attributors.segmenters import Segmenter
from reproduce.errors import InputError
from reproduce.models import FillMasker, Partition, TokenDropMasker

MASKERS = ("auto", "token_drop", "fill")


# --- results ------------------------------------------------------------------------------------
@dataclass
class SetGameResult:
    """What a set-game attributor computed for the last batch (``attributor.last_result``).

    Images with fewer players than others in the batch (super-pixels) are padded: ``order`` with -1,
    ``values``/``player_scores``/``terms`` with NaN.
    """

    order: torch.Tensor  # [B, k] long: players, most important first
    values: torch.Tensor  # [B, k]: objective at each step (greedy) / value of the ranked player
    player_scores: torch.Tensor  # [B, n]: the value painted on each player's region
    labels: torch.Tensor  # [B, H, W]: the partition (player of every pixel)
    num_players: torch.Tensor  # [B] long
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # [B, k, ...] extra per-step series
    exact: int | None = None  # leading entries of order that are greedy choices (None: all, or a ranking)

    def paint(self) -> torch.Tensor:
        """The attribution maps ``[B, H, W]``: each pixel gets its player's score."""
        flat = self.labels.flatten(1)
        return self.player_scores.gather(1, flat).view_as(self.labels)


def merge_results(batch: int, parts: list[tuple[torch.Tensor, SetGameResult]]) -> SetGameResult:
    """Scatter per-group results (``(image indices, result)``) back into one padded batch."""
    if len(parts) == 1 and len(parts[0][0]) == batch:
        return parts[0][1]
    first = parts[0][1]
    dev = first.order.device

    def padded(name_of: Callable[[SetGameResult], torch.Tensor], fill: float) -> torch.Tensor:
        width = max(name_of(r).shape[1] for _, r in parts)
        ref = name_of(first)
        out = torch.full((batch, width, *ref.shape[2:]), fill, device=dev, dtype=ref.dtype)
        for idx, r in parts:
            v = name_of(r)
            out[idx, : v.shape[1]] = v
        return out

    labels = torch.empty((batch, *first.labels.shape[1:]), dtype=torch.long, device=dev)
    num = torch.empty(batch, dtype=torch.long, device=dev)
    for idx, r in parts:
        labels[idx] = r.labels
        num[idx] = r.num_players
    return SetGameResult(
        order=padded(lambda r: r.order, -1),
        values=padded(lambda r: r.values, float("nan")),
        player_scores=padded(lambda r: r.player_scores, float("nan")),
        labels=labels,
        num_players=num,
        terms={name: padded(lambda r, name=name: r.terms[name], float("nan")) for name in first.terms},
        exact=first.exact,
    )


# --- players ------------------------------------------------------------------------------------
def check_grid(grid: Any, name: str = "grid") -> tuple[int, int] | None:
    if grid is None:
        return None
    if isinstance(grid, int) and not isinstance(grid, bool):
        grid = (grid, grid)
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 2
        or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)
    ):
        raise InputError(f"{name} must be a positive int or a pair (rows, cols) of them, got {grid!r}.")
    return int(grid[0]), int(grid[1])


def partitions_by_size(labels: torch.Tensor) -> list[tuple[torch.Tensor, Partition]]:
    """Group images by region count: ``[(image indices, Partition)]`` (one group when all agree).

    Algorithms batch images whose games have the same number of players; super-pixel maps differ
    per image, so each count is solved as its own batch.
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3 or labels.numel() == 0:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise InputError(f"Regions must be a non-empty label map [B, H, W], got {shape}; give every pixel a region.")
    counts = torch.tensor([int(torch.unique(lab).numel()) for lab in labels])
    groups = []
    for c in torch.unique(counts).tolist():
        idx = (counts == c).nonzero().flatten().to(labels.device)
        groups.append((idx, Partition.from_labels(labels[idx])))
    return groups


class SetGameAttributor(Attributor):
    """Base of attributors that play a set game over image regions.

    Options shared by all of them:
        grid: player grid (int or (rows, cols)); ``None`` = the ViT token grid, or 16-pixel
            patches for other models (MoXI's patch size: 14x14 at 224, 4x4 at 64).
        regions: instead of a grid, a super-pixel segmenter name (``"slic"``, ``"quickshift"``,
            ``"felzenszwalb"``, ``"watershed"``: :mod:`reproduce.attributors.segmenters`, cached)
            or a function ``inputs[B,C,H,W] -> labels[B,H,W]``; images with different region
            counts are solved in separate batches and padded in :attr:`last_result`.
        region_options: parameters of the named segmenter.
        masker: ``"auto"`` (token dropping for a ViT whose players are its token grid, fill
            otherwise), ``"token_drop"`` or ``"fill"``.
        fill: what hidden pixels become with the fill masker (``"mean"`` = 0 in normalised space,
            ``"black"``, ``"blur"``, a number or a tensor).
        reward: ``"log_odds"`` (default), ``"log_prob"``, ``"prob"`` or ``"logit"``.
        max_batch: rows per forward pass.

    After :meth:`attribute`, :attr:`last_result` holds the :class:`SetGameResult`; :meth:`order`
    returns the ordering directly. :meth:`config` records every option.
    """

    def __init__(
        self,
        model: nn.Module,
        grid: int | tuple[int, int] | None = None,
        regions: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        region_options: dict[str, Any] | None = None,
        masker: str = "auto",
        fill: str | float | torch.Tensor = "mean",
        reward: str = "log_odds",
        max_batch: int = 256,
        normalize: str | None = None,
    ):
        super().__init__(model, normalize=normalize)
        self.grid = check_grid(grid)
        if regions is not None and self.grid is not None:
            raise InputError("Give either grid or regions, not both.")
        if isinstance(regions, str):
            regions = _segmenter_regions(Segmenter(regions, region_options), self.adapter)
        elif region_options:
            raise InputError("region_options only apply when regions names a segmenter (e.g. regions='slic').")
        if regions is not None and not callable(regions):
            raise InputError(
                f"regions must be a segmenter name or a function inputs -> labels [B, H, W], got {type(regions).__name__}."
            )
        if masker not in MASKERS:
            raise InputError(f"Unknown masker {masker!r}: use one of {MASKERS}.")
        check_reward(reward)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"max_batch must be a positive integer, got {max_batch!r}.")
        self.regions = regions
        self.region_options = dict(region_options or {})
        self.masker_kind = masker
        self.fill = fill
        self.reward = reward
        self.max_batch = max_batch
        self.fill_masker = FillMasker(model, fill=fill, max_batch=max_batch)  # validates fill
        self.token_masker = None
        if masker == "token_drop":
            self.token_masker = TokenDropMasker(model, max_batch=max_batch)  # InputError on a non-ViT
            if regions is not None or (self.grid is not None and self.grid != self.adapter.token_grid):
                raise InputError(
                    f"masker='token_drop' needs the players to be the {self.adapter.token_grid} token "
                    "grid; leave grid/regions unset or use masker='fill'."
                )
        elif masker == "auto" and self.adapter.is_vit:
            self.token_masker = TokenDropMasker(model, max_batch=max_batch)
        self.last_result: SetGameResult | None = None

    # --- configuration ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Every option of this attributor, JSON-friendly (callables and tensors by name/shape)."""
        return {
            "method": self.name,
            "grid": list(self.grid) if self.grid else None,
            "regions": describe_value(self.regions),
            "region_options": dict(self.region_options),
            "masker": self.masker_kind,
            "fill": describe_value(self.fill),
            "reward": self.reward,
            "max_batch": self.max_batch,
            "normalize": self.normalize,
        }

    # --- players and games ------------------------------------------------------------------
    def resolve_grid(self, height: int, width: int) -> tuple[int, int]:
        if self.grid is not None:
            return self.grid
        if self.adapter.is_vit:
            return self.adapter.token_grid
        return max(1, height // 16), max(1, width // 16)

    def partitions(self, x: torch.Tensor, target: torch.Tensor) -> list[tuple[torch.Tensor, Partition]]:
        """The players of every image, grouped by count (see :func:`partitions_by_size`)."""
        b, _, h, w = x.shape
        if self.regions is not None:
            labels = self.regions(x)
            if isinstance(labels, torch.Tensor) and labels.dim() == 3 and labels.shape != (b, h, w):
                raise InputError(f"regions returned labels of shape {tuple(labels.shape)}, expected {(b, h, w)}.")
            return partitions_by_size(labels.to(x.device) if isinstance(labels, torch.Tensor) else labels)
        part = Partition.patch_grid(b, h, w, self.resolve_grid(h, w), device=x.device)
        return [(torch.arange(b, device=x.device), part)]

    def masker_for(self, partition: Partition):
        """Token dropping where it applies (see ``masker``), the fill masker otherwise."""
        if self.token_masker is not None and partition.grid == self.adapter.token_grid:
            return self.token_masker
        if self.masker_kind == "token_drop":
            self.token_masker.check_partition(partition)  # raises with the fix
        return self.fill_masker

    def game(self, x: torch.Tensor, target: torch.Tensor, partition: Partition) -> SetGame:
        masker = self.masker_for(partition)
        # Fill builds [rows, H, W] pixel masks per call: one forward batch at a time bounds memory.
        # Token dropping only indexes tokens, and larger calls let it group equal lengths.
        rows = 16 * self.max_batch if masker is self.token_masker else self.max_batch
        return SetGame(self.model, x, target, partition, masker, self.reward, max_rows=rows)

    # --- the contract -----------------------------------------------------------------------
    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        groups = self.partitions(x, target)
        self.check_players(groups)
        with self.solving_context(x):
            parts = [(idx, self.solve(x[idx], target[idx], part)) for idx, part in groups]
        self.last_result = merge_results(x.shape[0], parts)
        return self.last_result.paint().to(x.dtype)

    def check_players(self, groups: list[tuple[torch.Tensor, Partition]]) -> None:
        """Hook for option checks that need the player count (run before any game is played)."""

    def solving_context(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        """Hook: a context held while the games are solved (e.g. other networks in eval mode)."""
        return contextlib.nullcontext()

    def solve(self, x: torch.Tensor, target: torch.Tensor, partition: Partition) -> SetGameResult:
        raise NotImplementedError

    def order(self, inputs: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        """The players of each image, most important first: ``LongTensor[B, k]``.

        Runs :meth:`attribute` (same checks, pass counting and ``last_result``); map pixels to
        players with ``last_result.labels``.
        """
        self.attribute(inputs, target)
        return self.last_result.order


def _segmenter_regions(segmenter: Segmenter, adapter) -> Callable[[torch.Tensor], torch.Tensor]:
    def regions(x: torch.Tensor) -> torch.Tensor:
        return segmenter(x, adapter.data_config)

    regions.__name__ = f"segmenter:{segmenter.name}"
    return regions


def describe_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, nn.Module):
        return type(value).__name__
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return value
