"""FunnyBirds' interventional metrics against hand-built scenes and models whose dependence on each
object is known, with every value computed by hand; agreement with scipy's Spearman; the metric on
the real synthetic benchmark; and the variant-accuracy metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

import reproduce.metrics as M
from reproduce.data.scene_render import KIND_DISTRACTOR, KIND_EVIDENCE
from reproduce.errors import InputError
from reproduce.metrics import AttributionBatch
from reproduce.metrics import intervention_scores as S
from reproduce.metrics.interventions import interventional_scores

SIZE = 16
# Three disjoint 4x4 squares (16 pixels each): a distractor D, the evidence E, a distractor F.
SQUARES = {"D": (0, 0), "E": (6, 6), "F": (12, 0)}


def square(y: int, x: int) -> torch.Tensor:
    m = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    m[y:y + 4, x:x + 4] = True
    return m


class ReadsRegions(nn.Module):
    """Class 0's logit = the sum of channel 0 over each region times its weight; class 1's = a bias.
    With objects of value 1 on a black background the dependence on each object is its weight * 16."""

    def __init__(self, weights: dict[str, float], bias: float = 10.0, classes: int = 2):
        super().__init__()
        self.w = sum(w * square(*SQUARES[k]).float() for k, w in weights.items())
        self.bias, self.classes = bias, classes

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.classes)
        out[:, 0] = (x[:, 0] * self.w).sum((1, 2))
        out[:, 1] = self.bias
        return out


def scene_batch(maps: torch.Tensor, kinds=(KIND_DISTRACTOR, KIND_EVIDENCE, KIND_DISTRACTOR), names="DEF") -> AttributionBatch:
    b = maps.shape[0]
    fp = torch.stack([square(*SQUARES[n]) for n in names])[None].expand(b, -1, -1, -1).clone()
    layers = torch.ones(b, len(names), 3, SIZE, SIZE)
    background = torch.zeros(b, 3, SIZE, SIZE)
    kinds = torch.tensor(kinds)[None].expand(b, -1).clone()
    images = S.compose(background, layers, fp, kinds > 0)
    return AttributionBatch(images=images, labels=torch.zeros(b, dtype=torch.long), targets=torch.zeros(b, dtype=torch.long),
                            maps=maps, extra={"object_masks": fp, "object_footprints": fp, "object_kinds": kinds,
                                              "object_layers": layers, "images_without_objects": background})


def region_map(*names: str, b: int = 1) -> torch.Tensor:
    return sum(square(*SQUARES[n]).float() for n in names)[None].expand(b, -1, -1).clone()


MODEL = ReadsRegions({"E": 1.0, "D": 0.1})  # logit 17.6; removing E: 1.6 (< 10: flips), D: 16, F: 17.6
SD_RHO = 1.5 / np.sqrt(3.0)  # masses (0, 16, 0) vs drops (1.6, 16, 0): rho with tied ranks


def scores(maps, model=MODEL, **knobs):
    return interventional_scores(model, scene_batch(maps), dilation=1, **knobs)


def test_the_evidence_mask_as_map_is_complete_and_undistracted():
    out = scores(region_map("E"))
    for key in ("csdc", "pc", "dc", "d", "com"):
        assert out[key].item() == 1.0, key
    assert out["sd"].item() == pytest.approx(0.5 * SD_RHO + 0.5)
    assert out["bi"].item() == 0.5  # D's removal lowers the logit by 1.6 >= 5 % of 17.6; F's by 0
    assert out["mx"].item() == pytest.approx((1 + 0.5 * SD_RHO + 0.5) / 2)
    assert out["threshold"].item() == pytest.approx(0.01)  # every threshold ties: the first wins


def test_a_map_on_an_irrelevant_distractor_fails_every_family():
    out = scores(region_map("F"))
    for key in ("csdc", "pc", "dc", "d", "com"):
        assert out[key].item() == 0.0, key
    assert out["sd"].item() == pytest.approx(-0.5 * SD_RHO + 0.5)
    assert out["bi"].item() == 0.5  # a property of the model, not of the map


def test_the_threshold_curve_and_the_joint_selection():
    """E and D each hold half of the map: flagged while 16 > t * 32, i.e. for every t < 0.5."""
    out = scores(region_map("E", "D"))
    t = out["pc_curve_x"]
    assert len(t) == 80 and t[0].item() == pytest.approx(0.01) and t[-1].item() == pytest.approx(0.5)
    below = t < 0.5 - 1e-12
    for key in ("csdc", "pc", "dc"):
        curve = out[f"{key}_curve"]
        assert torch.equal(curve[below], torch.ones(int(below.sum()), dtype=curve.dtype)), key
        assert curve[~below].tolist() == [0.0], key  # at t = 0.5 nothing is flagged
    assert torch.equal(out["d_curve"], torch.ones(80, dtype=torch.float64))  # F, the only irrelevant object, never flagged
    assert out["com"].item() == 1.0 and out["threshold"].item() < 0.5


def test_completeness_over_all_objects_removes_the_distractors_too():
    # Flagged {E, D}: preservation removes F (the model keeps class 0), deletion removes E and D.
    out = scores(region_map("E", "D"), completeness="all")
    assert out["pc"].item() == 1.0 and out["dc"].item() == 1.0
    # Flagged {D} only: preservation removes E and F -> the prediction flips: 0; deletion of D: 0.
    out = scores(region_map("D"), completeness="all")
    assert out["pc"].item() == 0.0 and out["dc"].item() == 0.0


def test_two_parts_a_model_that_reads_one_part_and_the_honest_map():
    """The class needs parts A and B, but the model reads only A: the ground-truth map covers both
    parts (csdc 1) yet flags B, whose removal changes nothing (distractibility 1 - 1/2); the map of
    what the model uses covers half the parts and is not distracted."""
    global SQUARES
    saved = dict(SQUARES)
    SQUARES.update(A=(6, 6), B=(6, 12))
    try:
        model = ReadsRegions({"A": 1.0})
        kinds = (KIND_DISTRACTOR, KIND_EVIDENCE, KIND_EVIDENCE)
        truth = interventional_scores(model, scene_batch(region_map("A", "B"), kinds, "DAB"), dilation=1)
        honest = interventional_scores(model, scene_batch(region_map("A"), kinds, "DAB"), dilation=1)
    finally:
        SQUARES.clear()
        SQUARES.update(saved)
    assert truth["csdc"].item() == 1.0 and honest["csdc"].item() == 0.5
    assert truth["d"].item() == 0.5 and honest["d"].item() == 1.0  # irrelevant: D and B
    assert truth["pc"].item() == honest["pc"].item() == 1.0 and truth["dc"].item() == honest["dc"].item() == 1.0
    # the joint selection prefers the honest map: (0.5 + 1 + 1)/3 + 1 > (1 + 1 + 1)/3 + 0.5
    assert honest["com"].item() == pytest.approx(((0.5 + 2) / 3 + 1) / 2)
    assert truth["com"].item() == pytest.approx((1 + 0.5) / 2)


def test_target_sensitivity_on_two_parts():
    """Class c = 1 of 3 has parts [A, B]; class 0 (= c - 1) shares A, class 2 (= c + 1) shares B. A
    model whose class-0 logit reads A and class-2 logit reads B agrees; maps that point at the
    shared part score 1, maps that swap them 0."""
    global SQUARES
    saved = dict(SQUARES)
    SQUARES.update(A=(6, 6), B=(6, 12))
    try:
        a, b = square(*SQUARES["A"]).float(), square(*SQUARES["B"]).float()

        class Shares(nn.Module):
            def forward(self, x):
                return torch.stack([(x[:, 0] * a).sum((1, 2)), 20 + 0.01 * (x[:, 0] * (a + b)).sum((1, 2)), (x[:, 0] * b).sum((1, 2))], 1)

        kinds = (KIND_DISTRACTOR, KIND_EVIDENCE, KIND_EVIDENCE)
        batch = scene_batch(region_map("A", "B"), kinds, "DAB")
        batch.labels[:], batch.targets[:] = 1, 1
        right = lambda images, targets, model=None: torch.stack([a if t == 0 else b for t in targets.tolist()])  # noqa: E731
        wrong = lambda images, targets, model=None: torch.stack([b if t == 0 else a for t in targets.tolist()])  # noqa: E731
        good = interventional_scores(Shares(), batch, explain=right, dilation=1, contrastivity=True)
        bad = interventional_scores(Shares(), batch, explain=wrong, dilation=1, contrastivity=True)
        metric = M.create_metric("interventions", Shares(), dilation=1, contrastivity=True)
        metric.update(batch, explain=right)
        rows = metric.per_image_states()["states"]  # TS per image: its hits of its two entries
        assert rows["ts"].tolist() == [2.0] and rows["ts_n"].tolist() == [2.0]
        assert metric.statistic({k: v.sum(0) for k, v in rows.items()})["ts"] == 1.0
    finally:
        SQUARES.clear()
        SQUARES.update(saved)
    assert good["ts"].item() == 1.0 and bad["ts"].item() == 0.0 and good["images_ts"].item() == 1
    assert good["sd"].item() == 1.0  # masses (0, 16, 16) and class-1 drops (0, 0.16, 0.16): same order
    assert good["mx"].item() == pytest.approx((good["com"].item() + 1.0 + 1.0) / 3)
    with pytest.raises(InputError, match="two evidence parts"):
        scores(region_map("E"), contrastivity=True)


def test_dilation_spreads_an_object_mask_by_a_max_pool():
    masks = square(6, 6)[None, None]
    maps = torch.zeros(1, SIZE, SIZE)
    maps[0, 5, 5] = 1.0  # one pixel diagonally next to the square's corner
    assert S.object_mass(maps, masks, dilation=1).item() == 0.0
    assert S.object_mass(maps, masks, dilation=3).item() == 1.0
    maps[0, 4, 4] = 1.0
    assert S.object_mass(maps, masks, dilation=5).item() == 2.0  # FunnyBirds' 5x5


def test_spearman_equals_scipy_with_ties_and_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (50, 6), generator=g).double()
    y = torch.randn(50, 6, generator=g).double()
    valid = torch.rand(50, 6, generator=g) > 0.3
    rho = S.spearman(x, y, valid)
    for i in range(50):
        v = valid[i].numpy()
        want = spearmanr(x[i].numpy()[v], y[i].numpy()[v]).statistic if v.sum() >= 2 else np.nan
        if np.isnan(want):
            assert torch.isnan(rho[i])
        else:
            assert rho[i].item() == pytest.approx(want, abs=1e-12)


def test_compose_paints_layers_bottom_to_top():
    background = torch.zeros(1, 1, 2, 2)
    layers = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1, 1).expand(1, 2, 1, 2, 2)
    fp = torch.tensor([[[True, True], [False, False]], [[False, True], [False, True]]])[None]
    both = S.compose(background, layers, fp, torch.tensor([[True, True]]))
    assert both[0, 0].tolist() == [[1.0, 2.0], [0.0, 2.0]]
    assert S.compose(background, layers, fp, torch.tensor([[True, False]]))[0, 0].tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_batches_and_the_metric_agree_with_the_functional_twin():
    maps = torch.cat([region_map("E"), region_map("F"), region_map("E", "D")])
    batch = scene_batch(maps)
    metric = M.create_metric("interventions", MODEL, dilation=1)
    for rows in (slice(0, 1), slice(1, 3)):
        metric.update(AttributionBatch(images=batch.images[rows], labels=batch.labels[rows], targets=batch.targets[rows],
                                       maps=batch.maps[rows], extra={k: v[rows] for k, v in batch.extra.items()}))
    pooled, twin = metric.compute(), interventional_scores(MODEL, batch, dilation=1)
    assert pooled.keys() == twin.keys()
    for key in pooled:
        torch.testing.assert_close(pooled[key], twin[key], msg=key)
    assert pooled["pc"].item() == pytest.approx(2 / 3) and pooled["csdc"].item() == pytest.approx(2 / 3)


def test_kind_codes_match_the_dataset():
    assert (S.KIND_EVIDENCE, S.KIND_DISTRACTOR) == (KIND_EVIDENCE, KIND_DISTRACTOR)


def test_missing_scenes_name_the_data_option():
    metric = M.create_metric("interventions", MODEL)
    with pytest.raises(Exception, match="original background.*interventions option"):
        metric.check_available({"masks"}, source="the 'synthetic' test split")


def test_on_the_benchmark_an_oracle_model_and_the_evidence_mask(tmp_path):
    """On real scenes (easy preset: full contrast, no occluder) a model whose class-c logit counts the
    pixels wearing class c's main colour (only the evidence does), with an extra "nothing" class at
    0.5, and the evidence mask as map: complete, undistracted, and the model background-independent."""
    from torch.utils.data import DataLoader

    from reproduce.data.shapes import PATTERNS
    from reproduce.data.synthetic import SyntheticShapes

    colours = torch.tensor([p.primary for p in PATTERNS[:6]], dtype=torch.float32) / 255

    class CountsClassColours(nn.Module):
        def forward(self, x):
            hits = ((x[:, None] - colours[None, :, :, None, None]).abs().amax(2) < 1e-4).sum((2, 3)).float()
            return torch.cat([hits, torch.full((len(x), 1), 0.5)], 1)

    ds = SyntheticShapes(root=str(tmp_path), split="test", sizes={"test": 24}, preset="easy", interventions=True)
    batch = next(iter(DataLoader(ds, batch_size=24)))
    extra = {k: batch[k] for k in M.interventions.SCENE_EXTRAS}
    ab = AttributionBatch(images=batch["image"], labels=batch["label"], targets=batch["label"],
                          maps=batch["mask"].float(), extra=extra)
    out = interventional_scores(CountsClassColours(), ab)
    for key in ("csdc", "pc", "dc", "d", "com", "bi"):
        assert out[key].item() == 1.0, key
    assert out["images_csdc"].item() == 24


def test_variant_accuracy_is_the_classifiers_accuracy_on_the_variant():
    model = ReadsRegions({"E": 1.0})
    batch = scene_batch(region_map("E", b=4))
    shifted = batch.images.clone()
    shifted[2:] = 0  # the evidence gone in two images: class 1 wins there
    batch.extra["images_mixed_rand"] = shifted
    metric = M.create_metric("variant_accuracy", nn.Identity(), classifier=model)
    metric.update(batch)
    out = metric.compute()
    assert out["accuracy"].item() == 0.5 and out["accuracy_clean"].item() == 1.0 and out["gap"].item() == 0.5
    rows = metric.per_image_states()["states"]  # per image, so COMET's claims pair the images between rows
    assert rows["correct"].tolist() == [1.0, 1.0, 0.0, 0.0] and rows["correct_clean"].tolist() == [1.0] * 4
    stored = M.VariantAccuracy.for_statistic({"name": "variant_accuracy", "classifier": "@explained"}, metric.config())
    assert stored.statistic({k: v[2:].sum(0) for k, v in rows.items()}) == {"accuracy": 0.0, "accuracy_clean": 1.0, "gap": 1.0}
    with pytest.raises(Exception, match=r"paired_variants=\[only_fg\]"):
        M.create_metric("variant_accuracy", model, variant="only_fg").check_available(set(), "the test split")


def test_a_resample_of_per_image_rows_selects_its_own_threshold_as_compute_would():
    """The scores are ratios of sums read at the jointly best threshold, no mean of per-image values:
    a bootstrap resample (images drawn with repetition) summed from the rows gives exactly what the
    metric reports on that resampled set, threshold re-selected (hand-built maps whose best
    thresholds differ: E alone ties everywhere -> 0.01; 30 % or 45 % of the mass on the irrelevant
    F flags it below t = 0.3 or 0.45, so those images want a threshold above)."""
    e, f = (square(*SQUARES[n]).float() for n in "EF")
    maps = torch.stack([e, 0.7 * e + 0.3 * f, 0.55 * e + 0.45 * f])
    batch = scene_batch(maps)
    batch.indices = torch.tensor([10, 11, 12])
    metric = M.create_metric("interventions", MODEL, dilation=1)
    metric.update(batch)
    rows = metric.per_image_states()["states"]
    draws = [[0, 1, 2], [0], [1], [2], [1, 1, 2], [0, 2, 2], [1, 2]]
    weights = torch.stack([torch.bincount(torch.tensor(s), minlength=3).double() for s in draws])  # [R, 3]
    sums = {k: torch.einsum("rb,b...->r...", weights, v) for k, v in rows.items()}
    got = metric.statistic_batch(sums)
    for r, picked in enumerate(draws):
        sub = torch.tensor(picked)
        resampled = AttributionBatch(images=batch.images[sub], labels=batch.labels[sub], targets=batch.targets[sub],
                                     maps=batch.maps[sub], extra={k: v[sub] for k, v in batch.extra.items()})
        want = interventional_scores(MODEL, resampled, dilation=1)
        for key, value in got.items():
            assert float(value[r]) == pytest.approx(float(want[key]), rel=1e-12, nan_ok=True), (picked, key)
    assert len({round(float(t), 6) for t in got["threshold"]}) >= 3  # the selection moves with the resample
    assert float(got["threshold"][1]) == pytest.approx(0.01) and 0.3 <= float(got["threshold"][2]) < 0.45
