"""Shapley values: the exact enumerator against closed forms, the sampler against the enumerator."""

from __future__ import annotations

import itertools

import pytest
import torch

from reproduce.attributors import create
from reproduce.attributors.games import FunctionGame
from reproduce.attributors.shapley import exact_shapley, sampled_shapley, shapley_draws
from reproduce.errors import InputError
from reproduce.models import count_passes

VALUES = torch.tensor([[3.0, -1.0, 0.5, 2.0, 0.0, 1.5], [1.0, 1.0, -2.0, 0.25, 4.0, -0.5]])


def additive_game() -> FunctionGame:
    return FunctionGame(lambda keep: (keep.float() * VALUES[:, None]).sum(-1), batch_size=2, num_players=6)


def interaction_game() -> FunctionGame:
    """Additive part plus a pair that only pays together and a squared term (all players interact)."""

    def f(keep):
        k = keep.float()
        total = (k * VALUES[:, None]).sum(-1)
        return total + 4.0 * k[..., 1] * k[..., 4] + 0.2 * total**2

    return FunctionGame(f, batch_size=2, num_players=6)


def brute_force_shapley(f, n: int) -> torch.Tensor:
    """Textbook permutation definition: mean marginal over all n! orders (independent oracle)."""
    phi = torch.zeros(2, n)
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        keep = torch.zeros(1, 1, n, dtype=torch.bool)
        before = f(keep.expand(2, 1, n))[:, 0]
        for i in perm:
            keep = keep.clone()
            keep[..., i] = True
            after = f(keep.expand(2, 1, n))[:, 0]
            phi[:, i] += after - before
            before = after
    return phi / len(perms)


def test_exact_shapley_of_an_additive_game_is_the_player_values():
    game = additive_game()
    assert torch.allclose(exact_shapley(game), VALUES, atol=1e-6)
    assert game.evaluations == 2**6


def test_exact_shapley_matches_the_permutation_definition_and_efficiency():
    game = interaction_game()
    phi = exact_shapley(game)
    assert torch.allclose(phi, brute_force_shapley(game.fn, 6), atol=1e-4)
    full, empty = game.fn(torch.ones(2, 1, 6, dtype=torch.bool))[:, 0], game.fn(torch.zeros(2, 1, 6, dtype=torch.bool))[:, 0]
    assert torch.allclose(phi.sum(1), full - empty, atol=1e-4)


def test_glove_game_closed_form():
    # f = 1 iff players 0 and 1 are both present: each gets 1/2, the dummies 0.
    game = FunctionGame(lambda k: (k[..., 0] & k[..., 1]).float(), 1, 5)
    assert torch.allclose(exact_shapley(game), torch.tensor([[0.5, 0.5, 0, 0, 0]]), atol=1e-6)


def test_sampling_is_exact_on_an_additive_game_for_every_round_count():
    # every marginal f(S + i) - f(S) of an additive game is v_i, whatever S was drawn
    for rounds in (1, 7):
        assert torch.allclose(sampled_shapley(additive_game(), rounds, seed=3), VALUES, atol=1e-5)


def test_unbiased_sampling_converges_to_the_exact_values():
    exact = exact_shapley(interaction_game())
    errors = []
    for rounds in (16, 256, 4096):
        err = [(sampled_shapley(interaction_game(), rounds, seed=s, sizes="shapley") - exact).pow(2).mean().sqrt()
               for s in range(4)]
        errors.append(torch.stack(err).mean().item())
    assert errors[1] < errors[0] / 2 and errors[2] < errors[1] / 2, errors
    assert errors[2] < 0.05 * exact.abs().max().item()


def test_moxi_sizes_converge_to_the_mean_marginal_over_sizes_below_n_minus_1():
    """The official draw floor((n-1) r) never uses |S| = n-1: its limit is this, not phi."""
    game = interaction_game()
    n = 6
    target = torch.zeros(2, n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        per_size = []
        for s in range(n - 1):
            m = []
            for sub in itertools.combinations(others, s):
                keep = torch.zeros(1, 2, n, dtype=torch.bool)
                keep[0, 0, list(sub)] = True
                keep[0, 1, list(sub) + [i]] = True
                v = game.fn(keep.expand(2, 2, n))
                m.append(v[:, 1] - v[:, 0])
            per_size.append(torch.stack(m).mean(0))
        target[:, i] = torch.stack(per_size).mean(0)
    est = torch.stack([sampled_shapley(game, 4096, seed=s) for s in range(4)]).mean(0)
    assert (est - target).abs().max() < 0.05 * target.abs().max()
    assert (target - exact_shapley(game)).abs().max() > 0.1  # the bias is real at n = 6


def test_draws_follow_the_scheme_and_depend_only_on_the_seed():
    without, sizes = shapley_draws(7, 50, seed=11)
    assert torch.equal(without.sum(-1), sizes[:, None].expand(50, 7))
    assert not without.diagonal(dim1=1, dim2=2).any()
    assert int(sizes.max()) <= 5  # floor(6 r) < 6
    again, _ = shapley_draws(7, 50, seed=11)
    assert torch.equal(without, again)
    assert not torch.equal(without, shapley_draws(7, 50, seed=12)[0])
    with pytest.raises(InputError, match="sizes"):
        shapley_draws(7, 5, 0, sizes="uniform")


def test_sampled_shapley_attributor_counts_2_n_rounds_passes_and_is_batch_independent(cnn, images):
    a = create("shapley_sampling", cnn, grid=2, n_rounds=5, seed=1)
    with count_passes(cnn) as counter:
        maps = a.attribute(images, 2)
    assert counter.forward == 3 * 2 * 4 * 5
    assert a.last_cost["forward_per_image"] == 2 * 4 * 5
    alone = create("shapley_sampling", cnn, grid=2, n_rounds=5, seed=1).attribute(images[1:2], 2)
    assert torch.allclose(alone, maps[1:2], atol=1e-4)
    # the map paints each quadrant with its value; order ranks values descending
    res = a.last_result
    assert torch.allclose(maps[:, 0, 0], res.player_scores[:, 0]) and torch.allclose(maps[:, -1, -1], res.player_scores[:, 3])
    assert torch.equal(res.order, torch.sort(res.player_scores, dim=1, descending=True, stable=True).indices)


def test_exact_attributor_satisfies_efficiency_on_a_real_model(vit, images):
    a = create("shapley_exact", vit, grid=2, reward="logit")
    with count_passes(vit) as counter:
        a.attribute(images[:1], 0)
    assert counter.forward == 2**4
    fill = torch.zeros_like(images[:1])
    with torch.no_grad():
        gap = vit(images[:1])[0, 0] - vit(fill)[0, 0]
    assert a.last_result.player_scores.sum().item() == pytest.approx(gap.item(), abs=1e-4)


def test_exact_attributor_refuses_too_many_players_before_any_forward(cnn, images):
    with count_passes(cnn) as counter, pytest.raises(InputError, match="2\\^64"):
        create("shapley_exact", cnn, grid=8).attribute(images, 0)
    assert counter.forward == 0
