"""Shapley values of image regions: MoXI's sampled estimator and an exact enumerator (the oracle).

phi(i) = sum_{S in N\\{i}} |S|! (n-|S|-1)! / n! [f(S + i) - f(S)]  (MoXI Eq. 1).

``sampled_shapley`` follows the MoXI code (``get_reward_full_shapley``): in each of ``n_rounds``
rounds one ratio r ~ U(0, 1) is shared by all players; for each player i a subset S of N\\{i} of
size floor((n-1) r) is drawn uniformly and the marginal f(S + i) - f(S) is recorded; the estimate
is the mean over rounds (2 n rounds forward passes). Drawing the size uniformly and then the subset
uniformly is the Shapley weighting, except that floor((n-1) r) never draws size n-1: the estimator
converges to the mean marginal over sizes 0..n-2, a bias of order 1/n (negligible at MoXI's 196
players, visible at 4). ``sizes="shapley"`` draws floor(n r) instead (sizes 0..n-1 uniformly),
which is unbiased for the Shapley value; ``sizes="moxi"`` (default) is the official scheme. The
draws come from
a CPU generator seeded by ``seed`` and are shared by all images of a batch, so an image's values
depend only on the image and the seed, never on its batch-mates.
"""

from __future__ import annotations

import torch

from reproduce.checks import check_choice
from reproduce.attributors.registry import register
from reproduce.attributors.games import Game
from reproduce.attributors.setgame import SetGameAttributor, SetGameResult
from reproduce.errors import InputError
from reproduce.models import Partition


def exact_shapley(game: Game, max_players: int = 16) -> torch.Tensor:
    """Exact Shapley values ``[B, n]`` by evaluating all 2^n subsets (2^n evaluations per image)."""
    n = game.num_players
    if n > max_players:
        raise InputError(
            f"Exact Shapley values enumerate 2^{n} subsets; {n} players exceed max_players={max_players}. "
            "Use fewer players (e.g. grid=(2, 4)) or shapley_sampling."
        )
    dev = game.device
    codes = torch.arange(2**n, device=dev)
    subsets = (codes[:, None] >> torch.arange(n, device=dev)) & 1 == 1  # [2^n, n], bit i = player i
    values = game(subsets.unsqueeze(0).expand(game.batch_size, -1, -1))  # [B, 2^n]
    size = subsets.sum(1).double()
    # |S|! (n - |S| - 1)! / n! for S not containing i (|S| <= n - 1)
    weight = torch.exp(torch.lgamma(size + 1) + torch.lgamma(n - size) - torch.lgamma(torch.tensor(n + 1.0, device=dev)))
    phi = torch.empty(game.batch_size, n, device=dev, dtype=torch.float64)
    for i in range(n):
        without = codes[~subsets[:, i]]
        marginal = values[:, without | (1 << i)].double() - values[:, without].double()
        phi[:, i] = (marginal * weight[without]).sum(1)
    return phi.to(values.dtype)


SIZE_SCHEMES = ("moxi", "shapley")


def shapley_draws(num_players: int, n_rounds: int, seed: int, sizes: str = "moxi") -> tuple[torch.Tensor, torch.Tensor]:
    """The random subsets of :func:`sampled_shapley`: ``without[R, n, n]`` (row i = S for player i,
    never containing i) and the subset size of each round ``[R]``; reproducible from ``seed``."""
    check_choice("sizes", sizes, SIZE_SCHEMES, error=InputError)
    n = num_players
    gen = torch.Generator().manual_seed(int(seed))
    ratio = torch.rand(n_rounds, generator=gen)
    size = torch.floor((n - 1 if sizes == "moxi" else n) * ratio).long().clamp_max(n - 1)
    scores = torch.rand(n_rounds, n, n, generator=gen)
    scores.diagonal(dim1=1, dim2=2).fill_(2.0)  # player i ranks last in its own row: never in S
    ranks = scores.argsort(-1).argsort(-1)
    return ranks < size[:, None, None], size


def sampled_shapley(game: Game, n_rounds: int = 200, seed: int = 0, sizes: str = "moxi") -> torch.Tensor:
    """Monte-Carlo Shapley values ``[B, n]`` (module docstring); 2 n ``n_rounds`` evaluations."""
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, int) or n_rounds < 1:
        raise InputError(f"n_rounds must be a positive integer, got {n_rounds!r}.")
    n, b = game.num_players, game.batch_size
    without, _ = shapley_draws(n, n_rounds, seed, sizes)
    with_i = without | torch.eye(n, dtype=torch.bool)
    keep = torch.cat([with_i, without], dim=1).reshape(-1, n).to(game.device)  # [R * 2n, n]
    # Evaluate in order of subset size: token dropping batches equal lengths together.
    by_size = torch.sort(keep.sum(1), stable=True).indices
    values = torch.empty(b, keep.shape[0], device=game.device)
    values[:, by_size] = game(keep[by_size].unsqueeze(0).expand(b, -1, -1)).to(values.dtype)
    values = values.view(b, n_rounds, 2, n)
    return (values[:, :, 0] - values[:, :, 1]).mean(1)


class _ShapleyAttributor(SetGameAttributor):
    """Paints each region with its Shapley value; ``order`` ranks players by value, descending
    (the order MoXI's paper uses for both insertion and deletion curves of this baseline)."""

    def estimate(self, game: Game) -> torch.Tensor:
        raise NotImplementedError

    def solve(self, x: torch.Tensor, target: torch.Tensor, partition: Partition) -> SetGameResult:
        phi = self.estimate(self.game(x, target, partition))
        values, order = torch.sort(phi, dim=1, descending=True, stable=True)
        n = partition.num_players
        return SetGameResult(
            order=order, values=values, player_scores=phi, labels=partition.labels,
            num_players=torch.full((x.shape[0],), n, device=x.device),
        )


@register("shapley_sampling")
class ShapleySampling(_ShapleyAttributor):
    """Sampled Shapley values of the regions (MoXI's "Shapley value" baseline, 200 rounds).

    Options: ``n_rounds`` (200), ``seed`` (0), ``sizes`` (``"moxi"``: the official subset-size
    draw; ``"shapley"``: the unbiased one, see the module docstring), plus the set-game options of
    :class:`~reproduce.attributors.setgame.SetGameAttributor`. Cost: 2 n ``n_rounds`` forwards.
    """

    smoke_options = {"grid": 2, "n_rounds": 2}

    def __init__(self, model, n_rounds: int = 200, seed: int = 0, sizes: str = "moxi", **options):
        super().__init__(model, **options)
        check_choice("sizes", sizes, SIZE_SCHEMES, error=InputError)
        self.sizes = sizes
        if isinstance(n_rounds, bool) or not isinstance(n_rounds, int) or n_rounds < 1:
            raise InputError(f"n_rounds must be a positive integer, got {n_rounds!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(f"seed must be an integer, got {seed!r}.")
        self.n_rounds = n_rounds
        self.seed = seed

    def config(self):
        return {**super().config(), "n_rounds": self.n_rounds, "seed": self.seed, "sizes": self.sizes}

    def estimate(self, game: Game) -> torch.Tensor:
        return sampled_shapley(game, self.n_rounds, self.seed, self.sizes)


@register("shapley_exact")
class ShapleyExact(_ShapleyAttributor):
    """Exact Shapley values of a few regions (2^n forwards per image): the oracle for sampling.

    The default grid is 2x4 (8 players, 256 forwards); ``max_players`` (16) guards against
    accidental exponential runs and is checked before any forward pass.
    """

    smoke_options = {"grid": 2}

    def __init__(self, model, grid=(2, 4), max_players: int = 16, **options):
        super().__init__(model, grid=grid, **options)
        if isinstance(max_players, bool) or not isinstance(max_players, int) or max_players < 1:
            raise InputError(f"max_players must be a positive integer, got {max_players!r}.")
        self.max_players = max_players

    def config(self):
        return {**super().config(), "max_players": self.max_players}

    def check_players(self, groups):
        for _, part in groups:
            if part.num_players > self.max_players:
                raise InputError(
                    f"shapley_exact would enumerate 2^{part.num_players} subsets (max_players="
                    f"{self.max_players}); use a coarser grid or shapley_sampling."
                )

    def estimate(self, game: Game) -> torch.Tensor:
        return exact_shapley(game, self.max_players)
