"""The set-game core: rewards, maskers, pass counting, greedy selection and bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch

from reproduce.attributors import create
from reproduce.attributors.games import FunctionGame, SetGame, reward_from_logits
from reproduce.attributors.greedy import greedy_select, lazy_greedy_select, rank_scores
from reproduce.attributors.setgame import partitions_by_size
from reproduce.errors import ConfigError, InputError
from reproduce.models import FillMasker, ModelAdapter, Partition, TokenDropMasker, count_passes, create_model


def test_rewards_match_their_definitions():
    logits = torch.tensor([[[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]]])
    target = torch.tensor([1])
    p = logits.softmax(-1)[..., 1]
    assert torch.allclose(reward_from_logits(logits, target, "log_odds"), torch.log(p / (1 - p)), atol=1e-6)
    assert torch.allclose(reward_from_logits(logits, target, "log_prob"), p.log(), atol=1e-6)
    assert torch.allclose(reward_from_logits(logits, target, "prob"), p, atol=1e-6)
    assert torch.equal(reward_from_logits(logits, target, "logit"), logits[..., 1])
    with pytest.raises(InputError, match="reward"):
        reward_from_logits(logits, target, "odds")


def test_log_odds_is_stable_where_p_rounds_to_one():
    # p = 1 - 2e-87 is 1.0 in float32, so log(p / (1 - p)) would be inf; the stable form is exact.
    logits = torch.tensor([[[200.0, 0.0, 0.0]]])
    assert reward_from_logits(logits, torch.tensor([0]), "log_odds").item() == pytest.approx(200 - math.log(2), abs=1e-4)


def test_token_drop_with_every_token_is_the_stock_forward(vit, images):
    part = Partition.patch_grid(3, 64, 64, (8, 8))
    game = SetGame(vit, images, torch.zeros(3, dtype=torch.long), part, TokenDropMasker(vit), reward="logit")
    with torch.no_grad():
        full = game.logits(torch.ones(3, 1, 64, dtype=torch.bool))[:, 0]
        assert torch.allclose(full, vit(images), atol=1e-5)


def test_token_drop_with_uneven_subset_sizes_per_image_matches_forward_tokens(vit, images):
    # image 0 has sizes (5, 5, 7), image 1 (5, 7, 7): no size forms an [images, subsets] block
    keep = torch.zeros(2, 3, 64, dtype=torch.bool)
    sizes = [[5, 5, 7], [5, 7, 7]]
    for i in range(2):
        for j, k in enumerate(sizes[i]):
            keep[i, j, torch.randperm(64, generator=torch.Generator().manual_seed(10 * i + j))[:k]] = True
    with torch.no_grad():
        logits = TokenDropMasker(vit, max_batch=2)(images[:2], Partition.patch_grid(2, 64, 64, 8), keep)
        adapter = ModelAdapter(vit)
        for i in range(2):
            for j in range(3):
                one = adapter.forward_tokens(images[i : i + 1], keep[i, j].nonzero().view(1, -1))
                assert torch.allclose(logits[i, j], one[0], atol=1e-5)


def test_set_game_counts_one_pass_per_subset_and_image(cnn, images):
    part = Partition.patch_grid(3, 64, 64, 4)
    game = SetGame(cnn, images, torch.zeros(3, dtype=torch.long), part, FillMasker(cnn), max_rows=8)
    keep = torch.rand(3, 7, 16) > 0.5
    with torch.no_grad(), count_passes(cnn) as counter:
        values = game(keep)
    assert values.shape == (3, 7) and counter.forward == 21
    # the chunked evaluation (max_rows=8 -> 2 subsets per call) equals one masker call
    with torch.no_grad():
        direct = reward_from_logits(FillMasker(cnn)(images, part, keep), game.target)
    assert torch.allclose(values, direct, atol=1e-5)


def test_masker_auto_picks_token_drop_only_on_the_token_grid(vit, cnn):
    grid_part = Partition.patch_grid(1, 64, 64, 8)
    coarse = Partition.patch_grid(1, 64, 64, 4)
    auto_vit = create("moxi_insertion", vit)
    assert isinstance(auto_vit.masker_for(grid_part), TokenDropMasker)
    assert isinstance(auto_vit.masker_for(coarse), FillMasker)
    assert isinstance(create("moxi_insertion", cnn).masker_for(coarse), FillMasker)
    assert isinstance(create("moxi_insertion", vit, masker="fill").masker_for(grid_part), FillMasker)


def test_token_drop_on_a_cnn_or_off_grid_is_an_input_error(vit, cnn):
    with pytest.raises(InputError, match="Vision Transformer"):
        create("moxi_insertion", cnn, masker="token_drop")
    with pytest.raises(InputError, match="token"):
        create("moxi_insertion", vit, masker="token_drop", grid=4)


def _no_pass_before_error(model, fn):
    """Run ``fn`` expecting an InputError and return the forward passes it made first."""
    with count_passes(model) as counter, pytest.raises(InputError) as err:
        fn()
    return counter.forward, str(err.value)


def test_grid_that_does_not_divide_the_image_fails_before_any_forward(cnn, images):
    passes, msg = _no_pass_before_error(cnn, lambda: create("moxi_insertion", cnn, grid=5).attribute(images, 0))
    assert passes == 0 and "does not divide" in msg


def test_empty_region_set_fails_before_any_forward(cnn, images):
    empty = lambda x: torch.empty(x.shape[0], 0, 0, dtype=torch.long)  # noqa: E731
    passes, msg = _no_pass_before_error(cnn, lambda: create("moxi_insertion", cnn, regions=empty).attribute(images, 0))
    assert passes == 0 and "labels" in msg
    with pytest.raises(InputError, match="non-empty"):
        partitions_by_size(torch.empty(2, 0, 0, dtype=torch.long))


def test_budget_larger_than_the_regions_fails_before_any_forward(cnn, images):
    passes, msg = _no_pass_before_error(cnn, lambda: create("moxi_insertion", cnn, grid=4, budget=17).attribute(images, 0))
    assert passes == 0 and "exceeds the 16 regions" in msg
    with pytest.raises(InputError, match="positive"):
        create("moxi_deletion", cnn, budget=0)


def test_bad_options_are_named():
    model = create_model("resnet10t_os16", num_classes=3)
    with pytest.raises(InputError, match="grid"):
        create("moxi_insertion", model, grid=(2, 0))
    with pytest.raises(InputError, match="masker"):
        create("moxi_insertion", model, masker="zero")
    with pytest.raises(InputError, match="fill"):
        create("moxi_insertion", model, fill="grey")
    with pytest.raises(InputError, match="either grid or regions"):
        create("moxi_insertion", model, grid=2, regions=lambda x: x[:, 0].long())


def test_greedy_select_breaks_ties_towards_the_lowest_index():
    game = FunctionGame(lambda keep: keep.sum(-1).float(), batch_size=2, num_players=5)
    res = greedy_select(game, 2, 5, 5, torch.device("cpu"))
    assert res.order.tolist() == [[0, 1, 2, 3, 4]] * 2
    assert res.values.tolist() == [[1, 2, 3, 4, 5]] * 2
    assert game.evaluations == 5 + 4 + 3 + 2 + 1  # only the players not chosen yet


def test_greedy_select_records_named_parts_of_the_objective():
    weights = torch.tensor([1.0, 3.0, 2.0])

    def objective(sets):
        a = (sets.float() * weights).sum(-1)
        return {"total": a - sets.sum(-1), "a": a}

    res = greedy_select(objective, 1, 3, 2, torch.device("cpu"))
    assert res.order.tolist() == [[1, 2]]
    assert res.terms["a"].tolist() == [[3.0, 5.0]] and res.values.tolist() == [[2.0, 3.0]]


def facility_location(batch: int, n: int, seed: int = 0):
    """F(S) = sum_j max_{i in S} w_ij: monotone submodular, so lazy greedy must match exhaustive."""
    w = torch.rand(batch, n, 24, generator=torch.Generator().manual_seed(seed))
    calls = {"rows": 0}

    def objective(sets, images=None):
        rows = w if images is None else w[images]
        calls["rows"] += sets.shape[0] * sets.shape[1]
        return {"total": (sets.float()[..., None] * rows[:, None]).amax(2).sum(-1), "size": sets.sum(-1).float()}

    return objective, calls


@pytest.mark.parametrize("width", [1, 3])
def test_lazy_greedy_equals_exhaustive_on_a_submodular_game_with_fewer_evaluations(width):
    objective, calls = facility_location(3, 16)
    exhaustive = greedy_select(objective, 3, 16, 15, torch.device("cpu"))
    spent = calls["rows"]
    lazy = lazy_greedy_select(objective, 3, 16, 15, torch.device("cpu"), width=width)
    assert torch.equal(lazy.order, exhaustive.order)
    assert torch.allclose(lazy.values, exhaustive.values)
    assert torch.equal(lazy.terms["size"], exhaustive.terms["size"])
    assert calls["rows"] - spent == pytest.approx(3 * lazy.evaluations) and lazy.evaluations < exhaustive.evaluations
    assert spent == 3 * exhaustive.evaluations


def test_lazy_greedy_with_every_candidate_per_round_is_exhaustive_even_without_submodularity():
    # F(S) = (sum w)^2 is supermodular: stale gains are lower bounds, lazy with a small width can
    # stop early; re-scoring every candidate at once makes each step the exhaustive argmax again.
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5, -1.0, 2.5]])

    def objective(sets, images=None):
        return (sets.float() * (w if images is None else w[images])[:, None]).sum(-1) ** 2

    exhaustive = greedy_select(objective, 1, 6, 5, torch.device("cpu"))
    lazy = lazy_greedy_select(objective, 1, 6, 5, torch.device("cpu"), width=6)
    assert torch.equal(lazy.order, exhaustive.order) and torch.allclose(lazy.values, exhaustive.values)


def test_greedy_select_rejects_non_finite_objectives():
    game = FunctionGame(lambda keep: torch.full(keep.shape[:2], float("nan")), 1, 3)
    with pytest.raises(Exception, match="NaN"):
        greedy_select(game, 1, 3, 3, torch.device("cpu"))


def test_rank_scores_paint_earlier_players_hotter():
    order = torch.tensor([[2, 0], [1, 3]])
    assert rank_scores(order, 4).tolist() == [[1, 0, 2, 0], [0, 2, 0, 1]]


def test_regions_with_different_counts_are_solved_per_count_and_padded(cnn, images):
    # image 0: two halves; images 1 and 2: four quadrants
    halves = (torch.arange(64) >= 32).long().view(1, 64).expand(64, 64)
    quads = Partition.patch_grid(1, 64, 64, 2).labels[0]
    labels = torch.stack([halves, quads, quads])
    a = create("moxi_insertion", cnn, regions=lambda x: labels)
    maps = a.attribute(images, 1)
    res = a.last_result
    assert res.num_players.tolist() == [2, 4, 4]
    assert res.order[0, 2:].tolist() == [-1, -1] and (res.order[1:] >= 0).all()
    assert torch.isnan(res.values[0, 2:]).all()
    alone = create("moxi_insertion", cnn, regions=lambda x: labels[:1])
    assert torch.equal(alone.attribute(images[:1], 1), maps[:1])
    assert alone.last_result.order.tolist() == [res.order[0, :2].tolist()]


def test_regions_by_segmenter_name(cnn, images):
    from reproduce.attributors.segmenters import Segmenter

    options = {"n_segments": 6, "compactness": 100}
    a = create("moxi_minus", cnn, regions="slic", region_options=options)
    a.attribute(images[:2], 0)
    labels = Segmenter("slic", options)(images[:2], a.adapter.data_config)
    counts = [len(torch.unique(lab)) for lab in labels]
    assert a.last_result.num_players.tolist() == counts
    assert a.config()["regions"] == "segmenter:slic" and a.config()["region_options"] == options
    with pytest.raises(ConfigError, match="segmenter"):
        create("moxi_minus", cnn, regions="slico")
    with pytest.raises(InputError, match="region_options"):
        create("moxi_minus", cnn, region_options=options)
