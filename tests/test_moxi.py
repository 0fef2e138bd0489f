"""MoXI and MoXI(-): greedy orderings against toy games, naive loops on real models, pass counts."""

from __future__ import annotations

import json

import pytest
import torch

from reproduce.attributors import create
from reproduce.attributors.moxi import moxi_deletion, moxi_insertion, moxi_minus
from reproduce.attributors.games import FunctionGame, reward_from_logits
from reproduce.errors import InputError
from reproduce.models import ModelAdapter, count_passes, create_model

VALUES = torch.tensor([[0.5, 3.0, -1.0, 2.0, 0.0, 1.5], [4.0, -0.5, 2.5, 0.25, 1.0, 3.5]])


def additive_game() -> FunctionGame:
    return FunctionGame(lambda keep: (keep.float() * VALUES[:, None]).sum(-1), batch_size=2, num_players=6)


def test_insertion_on_an_additive_game_takes_players_in_value_order():
    game = additive_game()
    res = moxi_insertion(game)
    expected = VALUES.argsort(1, descending=True)
    assert torch.equal(res.order, expected)
    assert torch.allclose(res.values[:, :5], VALUES.gather(1, expected).cumsum(1)[:, :5])
    assert res.values[:, 5].isnan().all()  # the forced last step (one player left) is not evaluated
    assert game.evaluations == 6 * 7 // 2 - 1


def test_deletion_on_an_additive_game_removes_the_most_valuable_first():
    res = moxi_deletion(additive_game())
    expected = VALUES.argsort(1, descending=True)
    assert torch.equal(res.order, expected)
    assert torch.allclose(res.values[:, :5], (VALUES.sum(1, keepdim=True) - VALUES.gather(1, expected).cumsum(1))[:, :5])


def test_moxi_and_moxi_minus_agree_on_an_additive_game():
    for mode, run in (("insertion", moxi_insertion), ("deletion", moxi_deletion)):
        game = additive_game()
        order, _ = moxi_minus(game, mode)
        assert game.evaluations == 6
        assert torch.equal(order, run(additive_game()).order)


def redundancy_game() -> FunctionGame:
    """SET-SUM in miniature: players 0 and 1 show the same digit (5, counted once), 2 shows a 4,
    3 a 1. The best pair is {0, 2} (or {1, 2}): 9. MoXI(-) takes the two copies of the 5: 5."""

    def f(keep):
        k = keep.float()
        return 5 * torch.maximum(k[..., 0], k[..., 1]) + 4 * k[..., 2] + k[..., 3]

    return FunctionGame(f, batch_size=1, num_players=4)


def test_moxi_finds_the_informative_group_where_moxi_minus_takes_redundant_copies():
    game = redundancy_game()
    moxi = moxi_insertion(game)
    assert moxi.order[0, :2].tolist() == [0, 2] and moxi.values[0, 1] == 9
    minus, _ = moxi_minus(game, "insertion")
    assert sorted(minus[0, :2].tolist()) == [0, 1]
    keep = torch.zeros(1, 1, 4, dtype=torch.bool)
    keep[0, 0, minus[0, :2]] = True
    assert game.fn(keep).item() == 5


def test_deletion_mode_of_moxi_minus_ranks_by_f_without_the_player_ascending():
    game = redundancy_game()
    order, values = moxi_minus(game, "deletion")
    # f(N \ {b}) = 10, 10, 6, 9: ascending, ties by index
    assert order.tolist() == [[2, 3, 0, 1]] and values.tolist() == [[6, 9, 10, 10]]
    with pytest.raises(InputError, match="mode"):
        moxi_minus(game, "both")


def naive_choices(fn, n: int, order: torch.Tensor, mode: str):
    """At each step of ``order``, argmax/argmin over candidates evaluated one at a time."""
    choices, values = [], []
    chosen: list[int] = []
    for t in range(order.numel()):
        pick, best = None, None
        for b in range(n):  # ascending: a strict improvement is needed, so ties keep the lowest b
            if b in chosen:
                continue
            subset = set(chosen) | {b}
            score = fn(sorted(subset) if mode == "insertion" else sorted(set(range(n)) - subset))
            if best is None or (score > best if mode == "insertion" else score < best):
                pick, best = b, score
        choices.append(pick)
        values.append(best)
        chosen.append(int(order[t]))
    return choices, values


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
def test_each_step_is_the_naive_argmax_on_a_vit_with_token_dropping(vit, images, mode):
    x, target = images[:1], torch.tensor([2])
    adapter = ModelAdapter(vit)
    a = create(f"moxi_{mode}", vit, budget=3)
    a.attribute(x, target)
    assert isinstance(a.masker_for(a.partitions(x, target)[0][1]), type(a.token_masker))

    def f(keep):
        with torch.no_grad():
            logits = adapter.forward_tokens(x, torch.tensor([keep], dtype=torch.long))
        return reward_from_logits(logits[:, None], target)[0, 0].item()

    prefix = a.last_result.order[0, : a.last_result.exact]
    choices, values = naive_choices(f, 64, prefix, mode)
    assert choices == prefix.tolist()
    assert values == pytest.approx(a.last_result.values[0].tolist(), abs=1e-4)


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
def test_each_step_is_the_naive_argmax_on_a_cnn_with_fill(cnn, images, mode):
    x, target = images[2:3], torch.tensor([4])
    a = create(f"moxi_{mode}", cnn, grid=4, budget=5)
    a.attribute(x, target)

    def f(keep):
        mask = torch.zeros(16)
        mask[keep] = 1
        pixels = mask.view(1, 1, 4, 4).repeat_interleave(16, 2).repeat_interleave(16, 3)
        with torch.no_grad():
            logits = cnn(x * pixels)  # fill "mean" = 0 in normalised space
        return reward_from_logits(logits[:, None], target)[0, 0].item()

    prefix = a.last_result.order[0, : a.last_result.exact]
    choices, values = naive_choices(f, 16, prefix, mode)
    assert choices == prefix.tolist()
    assert values == pytest.approx(a.last_result.values[0].tolist(), abs=1e-4)


@pytest.fixture
def small_vit():
    torch.manual_seed(1)
    return create_model("vit_micro_p8", num_classes=5, img_size=32).eval()  # 4x4 token grid


@pytest.mark.parametrize("name", ["moxi_insertion", "moxi_deletion"])
def test_moxi_spends_n_n_plus_1_over_2_passes_less_the_forced_last_step(small_vit, name):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    a = create(name, small_vit)
    with count_passes(small_vit) as counter:
        a.attribute(x, torch.tensor([0, 3]))
    assert counter.forward == 2 * (16 * 17 // 2 - 1)
    assert a.last_cost["forward_per_image"] == 135
    assert a.last_result.values[:, -1].isnan().all() and a.last_result.exact == 16


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
@pytest.mark.parametrize("net", ["vit", "cnn"])
def test_budgeted_prefix_equals_the_full_greedy_prefix_and_costs_the_first_steps(request, images, mode, net):
    # ViT: token dropping on its 4x4 token grid (32x32 inputs); CNN: fill on a 2x4 grid
    model = request.getfixturevalue("small_vit" if net == "vit" else "cnn")
    options = {} if net == "vit" else {"grid": (2, 4)}
    n, budget = (16, 4) if net == "vit" else (8, 3)
    x = images[:2, :, :32, :32] if net == "vit" else images[:2]
    target = torch.tensor([1, 4])
    full = create(f"moxi_{mode}", model, **options)
    full.attribute(x, target)
    part = create(f"moxi_{mode}", model, budget=budget, **options)
    with count_passes(model) as counter:
        maps = part.attribute(x, target)
    res = part.last_result
    assert counter.forward == 2 * sum(n - t for t in range(budget))
    assert res.exact == budget and res.order.shape == (2, n)
    assert torch.equal(res.order[:, :budget], full.last_result.order[:, :budget])
    assert torch.allclose(res.values, full.last_result.values[:, :budget], atol=1e-5)
    assert sorted(res.order[0].tolist()) == list(range(n))  # the tail orders every other player
    # the tail is ordered by the last step's values f(S_{k-1} + b), recomputed here one by one
    game = part.game(x, target, part.partitions(x, target)[0][1])
    keep = torch.zeros(2, n - budget, n, dtype=torch.bool)
    for i in range(2):
        keep[i, :, res.order[i, : budget - 1]] = True
        keep[i, torch.arange(n - budget), res.order[i, budget:]] = True
    with torch.no_grad():
        tail_values = game(keep if mode == "insertion" else ~keep)
    steps = tail_values[:, 1:] - tail_values[:, :-1]
    assert (steps <= 1e-5).all() if mode == "insertion" else (steps >= -1e-5).all()
    assert torch.equal(maps.flatten(1).amax(1), torch.full((2,), float(n)))  # n - rank over all players


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
def test_moxi_minus_spends_n_passes(small_vit, mode):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    a = create("moxi_minus", small_vit, mode=mode)
    with count_passes(small_vit) as counter:
        a.attribute(x, 1)
    assert counter.forward == 2 * 16


@pytest.mark.parametrize("name", ["moxi_insertion", "moxi_deletion"])
def test_batch_results_equal_per_image_results(small_vit, name):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    target = torch.tensor([0, 4, 2])
    a = create(name, small_vit)
    maps = a.attribute(x, target)
    batch = a.last_result
    for i in range(3):
        single = create(name, small_vit)
        assert torch.equal(single.attribute(x[i : i + 1], target[i : i + 1]), maps[i : i + 1])
        assert torch.equal(single.last_result.order, batch.order[i : i + 1])
        assert torch.allclose(single.last_result.values, batch.values[i : i + 1], atol=1e-5, equal_nan=True)


def test_map_paints_n_minus_rank_and_order_api_returns_the_ordering(small_vit):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    a = create("moxi_insertion", small_vit)
    order = a.order(x, 0)
    maps = a.attribute(x, 0)
    assert torch.equal(order, a.last_result.order)
    first, last = order[0, 0].item(), order[0, -1].item()
    assert maps[0, (first // 4) * 8, (first % 4) * 8].item() == 16
    assert maps[0, (last // 4) * 8, (last % 4) * 8].item() == 1
    assert a.config()["mode"] == "insertion" and a.config()["reward"] == "log_odds"


# --- the curve metrics read MoXI's own path ---------------------------------------------------------
def _batch_with_path(model, x, mode, **options):
    from reproduce.metrics import AttributionBatch

    with torch.no_grad():
        labels = model(x).argmax(-1)
    a = create(f"moxi_{mode}", model, **options)
    maps = a.attribute(x, labels)
    return AttributionBatch(images=x, labels=labels, targets=labels, maps=maps), a.last_extras()


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
@pytest.mark.parametrize("net", ["vit", "cnn"])
def test_patch_curve_from_the_path_equals_the_recomputed_one_with_fewer_passes(request, images, mode, net):
    from reproduce.metrics import AttributionBatch, create_metric

    model = request.getfixturevalue("small_vit" if net == "vit" else "cnn")
    x = images[:2, :, :32, :32] if net == "vit" else images[:2]
    grid = {} if net == "vit" else {"grid": (2, 4)}
    batch, extras = _batch_with_path(model, x, mode, **grid)
    n = 16 if net == "vit" else 8
    assert extras["player_path"].evaluated == n - 1 and extras["player_path"].exact == n
    with_path = AttributionBatch(images=x, labels=batch.labels, targets=batch.labels, maps=batch.maps, extra=extras)
    for score in ("accuracy", "softmax"):
        fresh, reused = (create_metric(f"patch_{mode}", model, score=score, **grid) for _ in range(2))
        fresh.update(batch)
        reused.update(with_path)
        a, b = fresh.compute(), reused.compute()
        if score == "accuracy":
            assert torch.equal(a["curve"], b["curve"])
        else:
            assert torch.allclose(a["curve"], b["curve"], atol=1e-5)
        assert (a["reused"], b["reused"]) == (0, 1)
        # recomputed: k = 1..n (k = 0 prepended for accuracy, evaluated for softmax); reused: only k = n
        # (the forced last greedy step is not evaluated) and the evaluated k = 0
        k0 = 0 if score == "accuracy" else 1
        assert (a["forward_per_image"], b["forward_per_image"]) == (n + k0, 1 + k0)


def test_budget_metric_reuses_a_budgeted_path_and_a_foreign_path_is_ignored(small_vit, images):
    from reproduce.metrics import AttributionBatch, create_metric

    x = images[:2, :, :32, :32]
    batch, extras = _batch_with_path(small_vit, x, "insertion", budget=4)
    with_path = AttributionBatch(images=x, labels=batch.labels, targets=batch.labels, maps=batch.maps, extra=extras)
    fresh, reused = (create_metric("accuracy_at_budget", small_vit, budgets=(0.25,)) for _ in range(2))
    fresh.update(batch)
    reused.update(with_path)
    assert fresh.compute()["accuracy_shown_25"] == reused.compute()["accuracy_shown_25"]
    assert reused.compute()["forward_per_image"] == 0 and reused.compute()["reused"] == 1
    other = create_model("vit_micro_p8", num_classes=5, img_size=32).eval()  # same architecture, another object
    foreign = create_metric("accuracy_at_budget", other, budgets=(0.25,))
    foreign.update(with_path)
    assert foreign.compute()["reused"] == 0 and foreign.compute()["forward_per_image"] == 1


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
def test_per_image_rows_are_the_same_numbers_whether_reused_or_evaluated(small_vit, images, mode):
    """The rows a table bootstraps (curve per image, scores at a budget) do not depend on which path
    produced them; only the reuse diagnostics differ, per image."""
    from reproduce.metrics import AttributionBatch, create_metric

    x = images[:3, :, :32, :32]
    batch, extras = _batch_with_path(small_vit, x, mode)
    indices = torch.tensor([7, 2, 5])
    plain = AttributionBatch(images=x, labels=batch.labels, targets=batch.labels, maps=batch.maps, indices=indices)
    with_path = AttributionBatch(images=x, labels=batch.labels, targets=batch.labels, maps=batch.maps, indices=indices,
                                 extra=extras)
    budget_mode = {"mode": mode, "budgets": (0.25, 0.5)}
    for name, options in ((f"patch_{mode}", {"score": "accuracy"}), (f"patch_{mode}", {"score": "softmax"}),
                          ("accuracy_at_budget", budget_mode)):
        fresh, reused = (create_metric(name, small_vit, **options) for _ in range(2))
        fresh.update(plain)
        reused.update(with_path)
        a, b = fresh.per_image_states(), reused.per_image_states()
        assert a["indices"].tolist() == b["indices"].tolist() == [2, 5, 7]
        values = "curve_sum" if name.startswith("patch") else "score_sum"
        assert torch.allclose(a["states"][values], b["states"][values], rtol=0, atol=1e-5), name
        if options.get("score") != "softmax":
            assert torch.equal(a["states"][values], b["states"][values]), name  # accuracy: bit for bit
        assert a["states"]["reused_sum"].tolist() == [0.0] * 3 and b["states"]["reused_sum"].tolist() == [1.0] * 3
        assert (a["states"]["passes_sum"] > b["states"]["passes_sum"]).all()
        for metric, states in ((fresh, a), (reused, b)):  # the stored rows give the reported numbers
            reported = {k: float(v) for k, v in metric.compute().items() if v.dim() == 0}
            sums = {k: v.sum(0) for k, v in states["states"].items()}
            assert metric.statistic(sums) == pytest.approx(reported, abs=1e-12)
            # a table rebuilds it model-free: the ViT's token grid and removal come from the config
            rebuilt = type(metric).for_statistic({"name": name, **options}, json.loads(json.dumps(metric.config())))
            assert rebuilt.statistic(sums) == pytest.approx(reported, abs=1e-12)
