"""Part coverage (COMET's feature coverage) on hand-built 8x8 maps and two-part masks with
hand-computed values: both region rules, the covered rule at its boundary, ties, the functional twin,
the per-image statistic, and the errors (no parts, wrong part count, empty part, bad options)."""

from __future__ import annotations

import pytest
import torch

import reproduce.metrics as M
from reproduce.errors import ConfigError, InputError
from reproduce.metrics import AttributionBatch
from reproduce.metrics.part_coverage import part_coverage, part_fractions, top_region

# Part 1 = row 0, part 2 = row 7 (8 pixels each, 64 pixels in all).
PARTS = torch.zeros(3, 2, 8, 8, dtype=torch.bool)
PARTS[:, 0, 0, :] = True
PARTS[:, 1, 7, :] = True


def hand_maps() -> torch.Tensor:
    """Three maps whose top 16 pixels (25 %) are, with no tie at the boundary:
    A: part 1 (10), 6 pixels of part 2 (9), 2 background pixels (8) -> fractions (1, 0.75);
    B: part 1 (10), a background row (5)                             -> fractions (1, 0);
    C: part 2 (10), 4 pixels of part 1 (9), 4 background pixels (8)  -> fractions (0.5, 1)."""
    maps = torch.zeros(3, 8, 8)
    maps[0, 0, :], maps[0, 7, :6], maps[0, 3, :2] = 10, 9, 8
    maps[1, 0, :], maps[1, 3, :] = 10, 5
    maps[2, 7, :], maps[2, 0, :4], maps[2, 3, :4] = 10, 9, 8
    return maps


def batch(maps=None, parts=PARTS, indices=(10, 11, 12)) -> AttributionBatch:
    maps = hand_maps() if maps is None else maps
    b = maps.shape[0]
    extra = {} if parts is None else {"parts": parts[:b]}
    return AttributionBatch(images=torch.zeros(b, 3, 8, 8), labels=torch.zeros(b, dtype=torch.long),
                            targets=torch.zeros(b, dtype=torch.long), maps=maps, indices=torch.tensor(indices[:b]),
                            extra=extra)


def scores(maps=None, **knobs) -> dict[str, float]:
    metric = M.create_metric("part_coverage", **knobs)
    metric.update(batch(maps))
    return {k: float(v) for k, v in metric.compute().items()}


def test_top_fraction_region_on_hand_built_maps():
    got = scores(fraction=0.25)
    assert got["coverage"] == pytest.approx(100 * 2 / 3)            # A and C (C's part 1 at exactly 0.5)
    assert got["min_fraction"] == pytest.approx((0.75 + 0 + 0.5) / 3)
    assert got["part1_fraction"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert got["part2_fraction"] == pytest.approx((0.75 + 0 + 1) / 3)
    assert got["region_fraction"] == pytest.approx(0.25)
    assert scores(fraction=0.25, min_covered=0.6)["coverage"] == pytest.approx(100 / 3)  # C's 0.5 no longer counts
    # A 10 % budget = round(6.4) = 6 pixels: A and B keep 6 pixels of part 1 only, C 6 of part 2.
    small = scores(fraction=0.1)
    assert small["coverage"] == 0.0 and small["part1_fraction"] == pytest.approx((6 / 8 + 6 / 8 + 0) / 3)
    assert small["part2_fraction"] == pytest.approx(6 / 8 / 3)


def test_threshold_region_is_the_methods_own_size():
    # Min-max: A's part 2 pixels sit at 0.9, its background pixels at 0.8; B's row at 0.5; C as A.
    got = scores(region="threshold", threshold=0.85)
    assert got["coverage"] == pytest.approx(100 * 2 / 3)
    assert got["part2_fraction"] == pytest.approx((0.75 + 0 + 1) / 3)
    assert got["region_fraction"] == pytest.approx((14 + 8 + 12) / (3 * 64))
    assert scores(region="threshold", threshold=0.85, map_normalization="none", maps=hand_maps() / 10) == got
    with pytest.raises(InputError, match="leave \\[0, 1\\]"):
        scores(region="threshold", map_normalization="none")


def test_ties_are_broken_inside_the_budget():
    flat = torch.ones(1, 8, 8)
    # Raster order: the first 16 pixels are rows 0-1, so part 1 is whole and part 2 untouched.
    raster = top_region(flat, fraction=0.25, tie_break="raster")
    assert raster.sum() == 16 and torch.equal(part_fractions(raster, PARTS[:1]), torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    # Random order: exactly 16 pixels, the same ones for the same dataset index and seed, others for another seed.
    one = top_region(flat, fraction=0.25, indices=torch.tensor([4]))
    assert one.sum() == 16 and torch.equal(one, top_region(flat, fraction=0.25, indices=torch.tensor([4])))
    assert not torch.equal(one, top_region(flat, fraction=0.25, indices=torch.tensor([4]), seed=1))


def test_the_ground_truth_mask_covers_every_part_and_random_maps_none():
    oracle = PARTS.any(1).float()
    metric = M.create_metric("part_coverage", fraction=0.25)
    metric.update(batch(oracle))
    assert float(metric.compute()["coverage"]) == 100.0
    noise = M.create_metric("part_coverage")
    noise.update(batch(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))))
    assert float(noise.compute()["coverage"]) < 100.0


def test_functional_twin_and_per_image_statistic_agree_with_the_metric():
    assert part_coverage(hand_maps(), PARTS, fraction=0.25, indices=torch.tensor([10, 11, 12])).tolist() == [True, False, True]
    metric = M.create_metric("part_coverage", fraction=0.25)
    metric.update(batch())
    states = metric.per_image_states()["states"]
    assert states["covered"].tolist() == [1.0, 0.0, 1.0]
    assert states["fraction_sum"].tolist() == [[1.0, 0.75], [1.0, 0.0], [0.5, 1.0]]
    only_b = metric.statistic({name: rows[1] for name, rows in states.items()})
    assert only_b["coverage"] == 0.0 and only_b["part2_fraction"] == 0.0 and only_b["part1_fraction"] == 1.0
    batched = metric.statistic_batch({name: rows for name, rows in states.items()})  # each "resample" = one image
    assert batched["coverage"].tolist() == [100.0, 0.0, 100.0]


def test_missing_wrong_or_empty_parts_fail_clearly():
    metric = M.create_metric("part_coverage")
    with pytest.raises(ConfigError, match="data=synthetic_two_part"):
        metric.check_available({"masks"}, source="the 'synthetic' test split")
    metric.check_available({"extra:parts"})
    with pytest.raises(InputError, match="data=synthetic_two_part"):
        metric.update(batch(parts=None))
    with pytest.raises(InputError, match=r"\(3, 3, 8, 8\) \(parts=3\)"):
        M.create_metric("part_coverage", parts=3).update(batch())
    empty = PARTS.clone()
    empty[1, 1] = False
    with pytest.raises(InputError, match=r"samples \[11\] have an empty part"):
        metric.update(batch(parts=empty))


@pytest.mark.parametrize("knobs, message", [
    ({"region": "topk"}, "region must be one of"),
    ({"fraction": 0}, "fraction must lie in"),
    ({"min_covered": 1.5}, "min_covered must lie in"),
    ({"region": "threshold", "threshold": 1.0}, "threshold must lie in"),
    ({"parts": 0}, "parts must be"),
    ({"tie_break": "first"}, "tie_break must be one of"),
])
def test_bad_options_are_config_errors(knobs, message):
    with pytest.raises(ConfigError, match=message):
        M.create_metric("part_coverage", **knobs)
