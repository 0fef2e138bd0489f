"""MoXI (Sumiyasu et al., CVPR 2024): the group of patches that matters, found greedily.

With self-context Shapley values phi0(b) = f({b}) - f(empty) and interactions
I0(S, b) = f(S + b) - f(S) - f({b}) + f(empty), MoXI's insertion step
b_k = argmax phi0(b) + I0(S, b) equals argmax f(S + b): **Algorithm 1 is greedy forward selection
on f**. Deletion (Algorithm 2) chooses b_k = argmin f(N \\ (S + b)); it is implemented directly
(the weighted form of the paper's Eqs. 12-13 does not reduce to it as typeset).

Cost: step t evaluates only the n - t players not chosen yet, so a full ordering takes exactly
n(n+1)/2 forward passes (19,306 for 196 patches; the official code evaluates all n candidates at
every step, n^2 = 38,416). All images' candidates of a step form one batch: with token dropping they
all have the same length (|S| + 1 patches for insertion, n - |S| - 1 for deletion, plus CLS).

MoXI(-) ranks once by the self-context values without interactions: f({b}) descending
(insertion) or f(N \\ {b}) ascending (deletion): n passes.

Reward: log-odds of the target (``reward``). Ties go to the lowest player index.
"""

from __future__ import annotations

import torch

from reproduce.checks import check_choice
from reproduce.errors import InputError
from reproduce.attributors.registry import register
from reproduce.attributors.games import Game
from reproduce.attributors.greedy import GreedyResult, check_budget, greedy_select, rank_scores
from reproduce.attributors.setgame import SetGameAttributor, SetGameResult
from reproduce.models import Partition

MODES = ("insertion", "deletion")


def moxi_insertion(game: Game, budget: int | None = None) -> GreedyResult:
    """Algorithm 1: S_k = S_{k-1} + argmax_b f(S_{k-1} + b); ``values[:, k]`` = f(S_{k+1})."""
    return greedy_select(game, game.batch_size, game.num_players, budget or game.num_players, game.device, tail=False)


def moxi_deletion(game: Game, budget: int | None = None) -> GreedyResult:
    """Algorithm 2: S_k = S_{k-1} + argmin_b f(N \\ (S_{k-1} + b)); ``values`` = f(N \\ S_k)."""
    return greedy_select(
        lambda sets: game(~sets), game.batch_size, game.num_players, budget or game.num_players,
        game.device, maximize=False, tail=False,
    )


def moxi_minus(game: Game, mode: str = "insertion") -> tuple[torch.Tensor, torch.Tensor]:
    """MoXI(-): ``(order[B, n], values[B, n])`` ranked by f({b}) (insertion, descending) or by
    f(N \\ {b}) (deletion, ascending); ties keep the lower index first. n evaluations."""
    check_mode(mode)
    n = game.num_players
    single = torch.eye(n, dtype=torch.bool, device=game.device).unsqueeze(0).expand(game.batch_size, n, n)
    values = game(single if mode == "insertion" else ~single)
    sorted_values, order = torch.sort(values, dim=1, descending=mode == "insertion", stable=True)
    return order, sorted_values


def check_mode(mode: str) -> None:
    check_choice("mode", mode, MODES, error=InputError)


class _MoXIGreedy(SetGameAttributor):
    """Shared options: ``budget`` (None = full ordering of all n players) plus the set-game options."""

    mode = "insertion"
    smoke_options = {"grid": 2}

    def __init__(self, model, budget: int | None = None, **options):
        super().__init__(model, **options)
        if budget is not None:
            check_budget(budget, budget)  # type and sign now; against n once the players are known
        self.budget = budget

    def config(self):
        return {**super().config(), "mode": self.mode, "budget": self.budget}

    def check_players(self, groups):
        if self.budget is not None:
            for _, part in groups:
                check_budget(self.budget, part.num_players)

    def solve(self, x: torch.Tensor, target: torch.Tensor, partition: Partition) -> SetGameResult:
        game = self.game(x, target, partition)
        run = moxi_insertion if self.mode == "insertion" else moxi_deletion
        res = run(game, self.budget)
        n = partition.num_players
        return SetGameResult(
            order=res.order, values=res.values, player_scores=rank_scores(res.order, n),
            labels=partition.labels, num_players=torch.full((x.shape[0],), n, device=x.device),
        )


@register("moxi_insertion")
class MoXIInsertion(_MoXIGreedy):
    """MoXI pixel insertion (Algorithm 1). ``last_result.values[:, k]`` = f(S_{k+1})."""

    mode = "insertion"


@register("moxi_deletion")
class MoXIDeletion(_MoXIGreedy):
    """MoXI pixel deletion (Algorithm 2). ``last_result.values[:, k]`` = f(N \\ S_{k+1})."""

    mode = "deletion"


@register("moxi_minus")
class MoXIMinus(SetGameAttributor):
    """MoXI(-): self-context Shapley ranking without interactions (n forward passes).

    ``mode="insertion"`` ranks by f({b}) descending, ``"deletion"`` by f(N \\ {b}) ascending;
    ``last_result.values`` holds those values in ranked order.
    """

    smoke_options = {"grid": 2}

    def __init__(self, model, mode: str = "insertion", **options):
        super().__init__(model, **options)
        check_mode(mode)
        self.mode = mode

    def config(self):
        return {**super().config(), "mode": self.mode}

    def solve(self, x: torch.Tensor, target: torch.Tensor, partition: Partition) -> SetGameResult:
        order, values = moxi_minus(self.game(x, target, partition), self.mode)
        n = partition.num_players
        return SetGameResult(
            order=order, values=values, player_scores=rank_scores(order, n), labels=partition.labels,
            num_players=torch.full((x.shape[0],), n, device=x.device),
        )
