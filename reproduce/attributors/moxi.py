"""MoXI (Sumiyasu et al., CVPR 2024): the group of patches that matters, found greedily.

With self-context Shapley values phi0(b) = f({b}) - f(empty) and interactions
I0(S, b) = f(S + b) - f(S) - f({b}) + f(empty), MoXI's insertion step
b_k = argmax phi0(b) + I0(S, b) equals argmax f(S + b): **Algorithm 1 is greedy forward selection
on f**. Deletion (Algorithm 2) chooses b_k = argmin f(N \\ (S + b)); it is implemented directly
(the weighted form of the paper's Eqs. 12-13 does not reduce to it as typeset).

Cost: step t evaluates only the n - t players not chosen yet, and the last step of a full
ordering (one player left: no choice) is not evaluated, so a full ordering takes n(n+1)/2 - 1
forward passes (19,305 for 196 patches; the official code evaluates all n candidates at every
step, n^2 = 38,416). All images' candidates of a step form one batch: with token dropping they all
have the same length (|S| + 1 patches for insertion, n - |S| - 1 for deletion, plus CLS).

Budget: with ``budget=k < n`` the search stops after k steps, sum_{t<k} (n - t) passes, and the
other n - k players (the *tail*) are ordered by the values f(S_{k-1} + b) (insertion, descending)
or f(N \\ (S_{k-1} + b)) (deletion, ascending) that the last step has already computed: the map
ranks every player, but only the first k are greedy choices (``last_result.exact == k``). Reported
numbers that read only the first k players of the order (accuracy with k patches shown or hidden)
are exactly those of the full search; curves beyond k are not.

Reuse: the logits of every chosen prefix (the points of MoXI's own patch insertion/deletion curve
under the same masker and model) are handed on as ``last_extras()["player_path"]``
(:class:`~reproduce.models.player_path.PlayerPath`); the patch-curve metrics read them instead of
running the model again when their protocol matches.

MoXI(-) ranks once by the self-context values without interactions: f({b}) descending
(insertion) or f(N \\ {b}) ascending (deletion): n passes.

Reward: log-odds of the target (``reward``). Ties go to the lowest player index.
"""

from __future__ import annotations

import torch

from reproduce.checks import check_choice
from reproduce.errors import InputError
from reproduce.attributors.registry import register
from reproduce.attributors.games import Game, reward_from_logits
from reproduce.attributors.greedy import GreedyResult, check_budget, greedy_select, rank_scores
from reproduce.attributors.setgame import SetGameAttributor, SetGameResult
from reproduce.models import Partition
from reproduce.models.player_path import PlayerPath

MODES = ("insertion", "deletion")


def moxi_insertion(game: Game, budget: int | None = None) -> GreedyResult:
    """Algorithm 1: S_k = S_{k-1} + argmax_b f(S_{k-1} + b); ``values[:, k]`` = f(S_{k+1})."""
    return _greedy(game, budget, "insertion")


def moxi_deletion(game: Game, budget: int | None = None) -> GreedyResult:
    """Algorithm 2: S_k = S_{k-1} + argmin_b f(N \\ (S_{k-1} + b)); ``values`` = f(N \\ S_k)."""
    return _greedy(game, budget, "deletion")


def _greedy(game: Game, budget: int | None, mode: str) -> GreedyResult:
    """The search with the tail ordered and the forced last step skipped (module docstring); a game
    with ``logits`` (a :class:`SetGame`) also records the chosen sets' logits (``terms["logits"]``)."""
    insertion = mode == "insertion"

    def objective(sets: torch.Tensor):
        shown = sets if insertion else ~sets
        if not hasattr(game, "logits"):
            return game(shown)
        logits = game.logits(shown)
        return {"total": reward_from_logits(logits, game.target, game.reward), "logits": logits}

    n = game.num_players
    return greedy_select(objective, game.batch_size, n, budget or n, game.device, maximize=insertion,
                         tail=True, evaluate_forced=False)


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
    """Shared options: ``budget`` (None = full ordering of all n players; k: k greedy steps and the
    tail ordered by the last step's values) plus the set-game options."""

    mode = "insertion"
    smoke_options = {"grid": 2}

    @classmethod
    def smoke_config(cls, options):
        # A budgeted search stays budgeted on the smoke grid's 4 players (a budget above them is an error).
        smoke = super().smoke_config(options)
        if smoke.get("budget") is not None:
            smoke["budget"] = min(int(smoke["budget"]), 2)
        return smoke

    def __init__(self, model, budget: int | None = None, **options):
        super().__init__(model, **options)
        if budget is not None:
            check_budget(budget, budget)  # type and sign now; against n once the players are known
        self.budget = budget
        self._path: PlayerPath | None = None

    def config(self):
        return {**super().config(), "mode": self.mode, "budget": self.budget}

    def check_players(self, groups):
        if self.budget is not None:
            for _, part in groups:
                check_budget(self.budget, part.num_players)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._path = None
        return super()._attribute(x, target)

    def solve(self, x: torch.Tensor, target: torch.Tensor, partition: Partition) -> SetGameResult:
        game = self.game(x, target, partition)
        res = (moxi_insertion if self.mode == "insertion" else moxi_deletion)(game, self.budget)
        n = partition.num_players
        logits = res.terms.pop("logits")
        if partition.grid is not None:  # a patch grid is one group: the whole batch
            self._path = self._player_path(x, partition, res.order, logits, res.exact)
        return SetGameResult(
            order=res.order, values=res.values, player_scores=rank_scores(res.order, n),
            labels=partition.labels, num_players=torch.full((x.shape[0],), n, device=x.device), exact=res.exact,
        )

    def _player_path(self, x, partition, order, logits, exact) -> PlayerPath | None:
        evaluated = int(torch.isfinite(logits).all(-1).all(0).sum())  # the forced last step is NaN
        token = self.masker_for(partition) is self.token_masker
        if not token and isinstance(self.fill, torch.Tensor):
            return None  # a tensor fill cannot be compared with a metric's fill option
        return PlayerPath(model=self.model, inputs=x, grid=partition.grid, removal="token" if token else "fill",
                          fill=None if token else self.fill, mode=self.mode, order=order,
                          logits=logits[:, :evaluated], exact=exact)

    def last_extras(self) -> dict[str, PlayerPath]:
        """``{"player_path": PlayerPath}`` of the last batch: the logits of every chosen prefix
        (empty when the players were not a patch grid)."""
        return {} if self._path is None else {"player_path": self._path}


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
