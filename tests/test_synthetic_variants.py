"""The synthetic benchmark's difficulty knobs, its shortcut variant with the ImageNet-9 test variants,
and its interventions (exact counterfactual renders, per-object masks and layers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reproduce.data import create_dataset
from reproduce.data.scene_knobs import PRESETS
from reproduce.data.scene_render import KIND_DISTRACTOR, KIND_EVIDENCE, render, visible
from reproduce.data.scenes import draw_layout
from reproduce.data.shapes import BACKGROUND_RANGE, NEUTRAL_GREY, PATTERNS
from reproduce.data.synthetic import INTERVENTION_EXTRAS, SyntheticShapes
from reproduce.errors import ConfigError
from reproduce.models.data_config import DataConfig


def make(tmp_path, n=40, split="test", **kw) -> SyntheticShapes:
    return SyntheticShapes(root=str(tmp_path), split=split, sizes={split: n}, **kw)


def changed(ds: SyntheticShapes, i: int, remove) -> torch.Tensor:
    return (ds.render(i) != ds.render(i, remove=remove)).any(0)


# ---- difficulty knobs ----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["single", "two_part"])
def test_hard_preset_masks_are_the_visible_evidence_and_an_occluder_never_hides_it(tmp_path, variant):
    ds = make(tmp_path, n=60, variant=variant)  # the default preset is hard
    occluded = 0
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(changed(ds, i, "evidence"), item["mask"]), f"image {i}"
        names = {o["name"] for o in ds.objects(i)}
        if "occluder" in names:
            occluded += 1
            hidden = changed(ds, i, "occluder") & ~item["mask"]
            assert hidden.any()  # the occluder covers evidence pixels ...
        if ds.has_parts:
            assert all(item["parts"][p].sum() >= 8 for p in range(2))  # ... but never a whole part
    assert 15 <= occluded <= 45  # occlusion_rate 0.5 (minus sides where it does not fit)


def test_visible_fraction_of_occluded_evidence_stays_above_half():
    """occlusion <= 0.5 enters the box from one side by at most half: over 1000 scenes per variant
    every evidence part keeps more than half of its pixels."""
    for variant in ("single", "two_part"):
        layout = draw_layout(0, "test", variant, 6, 1000, PRESETS["hard"])
        idx = np.arange(1000)
        _, footprints = render(layout, idx, 64)
        seen = visible(footprints, layout.objects.drawn[idx])[:, layout.evidence_slots].sum((2, 3))
        assert (seen / footprints[:, layout.evidence_slots].sum((2, 3))).min() > 0.5


def test_contrast_blends_each_object_into_the_background_under_it(tmp_path):
    ds = make(tmp_path, n=12, preset="easy", contrast=[0.5, 0.5])
    full = make(tmp_path, n=12, preset="easy")
    for i in range(len(ds)):
        m = ds[i]["mask"].numpy()
        under = ds.render(i, remove="evidence").numpy()[:, m] * 255
        pattern = full.images_uint8[i][:, m].astype(np.float64)  # contrast 1: the class colours
        assert np.array_equal(ds.images_uint8[i][:, m], np.rint(under + 0.5 * (pattern - under)).astype(np.uint8))
        lo, hi = BACKGROUND_RANGE  # every blended pixel still differs from the background under it
        assert ((ds.images_uint8[i][:, m] != np.rint(under).astype(np.uint8)).any(0)).all()
        assert lo <= under.min() and under.max() <= hi


def test_evidence_scale_scales_the_evidence(tmp_path):
    small = make(tmp_path, n=30, preset="easy", evidence_scale=[0.5, 0.5])
    big = make(tmp_path, n=30, preset="easy")
    ratio = [small.objects(i)[-1]["r"] / big.objects(i)[-1]["r"] for i in range(30)]
    np.testing.assert_allclose(ratio, 0.5)
    assert small[0]["mask"].sum() < 0.4 * big[0]["mask"].sum()


def test_distractor_count_follows_the_knob(tmp_path):
    layout = draw_layout(0, "test", "single", 6, 2000, PRESETS["hard"])
    counts = (layout.objects.drawn & (layout.kinds == KIND_DISTRACTOR)).sum(1) - layout.objects.drawn[:, -1]
    assert counts.min() == 2 and counts.max() == 5
    assert np.bincount(counts)[2:].min() > 350  # about uniform (500 each; a few slots find no room)
    none = make(tmp_path, n=10, preset="easy", distractors=[0, 0])
    assert all(o["kind"] == "evidence" for i in range(10) for o in none.objects(i))


def test_confusers_wear_a_class_colour_on_another_class_shape():
    from reproduce.data.scene_knobs import Difficulty

    layout = draw_layout(0, "test", "single", 6, 2000, Difficulty(confusers=0.5))
    objects, distractor = layout.objects, (layout.objects.drawn & (layout.kinds == KIND_DISTRACTOR))
    class_pattern = distractor & (objects.pattern < len(PATTERNS))
    assert 0.45 < class_pattern.sum() / distractor.sum() < 0.55
    assert (objects.shape[class_pattern] != objects.pattern[class_pattern]).all()  # never a class design
    assert (objects.pattern[class_pattern] < 6).all()
    plain = draw_layout(0, "test", "single", 6, 2000, Difficulty())
    assert not ((plain.objects.pattern < len(PATTERNS)) & (plain.kinds == KIND_DISTRACTOR)).any()


def test_label_noise_flips_training_labels_only(tmp_path):
    train = make(tmp_path, n=1000, split="train", preset="easy", label_noise=0.2)
    clean = make(tmp_path, n=1000, split="train", preset="easy")
    flipped = train.labels != train.clean_labels
    assert 0.16 < flipped.mean() < 0.24  # binomial(1000, 0.2): 3 sigma
    assert np.array_equal(train.clean_labels, clean.labels)
    assert [train[i]["label"] for i in range(5)] == train.labels[:5].tolist()
    # the scenes are the clean class's: the image does not change, only its label
    assert np.array_equal(train.images_uint8, clean.images_uint8)
    for split in ("val", "test"):
        ds = make(tmp_path, n=200, split=split, preset="easy", label_noise=0.2)
        assert np.array_equal(ds.labels, ds.clean_labels)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"rho": 1.5}, "rho"),
        ({"rho": -0.1}, "rho"),
        ({"occlusion": 0.7}, "occlusion <= 0.5"),
        ({"distractors": [2, 12]}, "hi <= 8"),
        ({"distractors": [3, 2]}, "lo <= hi"),
        ({"label_noise": 1.0}, "label_noise < 1"),
        ({"contrast": [0.1, 1.0]}, "0.2 <= lo"),
        ({"evidence_scale": [0.4, 1.0]}, "0.5 <= lo"),
        ({"evidence_scale": [1.0, 2.0]}, "hi <= 1.5"),
        ({"evidence_scale": 1.0}, "range"),
        ({"occlusion_rate": 1.5}, "occlusion_rate"),
        ({"confusers": -0.5}, "confusers"),
        ({"background": "mixed_up"}, "background"),
        ({"interventions": True, "background": "mixed_rand"}, "background='original'"),
    ],
)
def test_impossible_settings_fail_before_generation_naming_the_bound(tmp_path, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        SyntheticShapes(root=str(tmp_path / "cache"), **kwargs)
    assert not (tmp_path / "cache").exists()


# ---- shortcut variant and the ImageNet-9 test variants -------------------------------------------
def test_background_family_follows_the_class_with_probability_rho():
    from reproduce.data.scenes import draw_family

    labels = np.arange(6000) % 6
    for split in ("train", "val", "test"):
        family = draw_family(0, split, labels, 6, rho=0.9)
        assert abs((family == labels).mean() - (0.9 + 0.1 / 6)) < 0.015
    assert (draw_family(0, "test", labels, 6, rho=None) == -1).all()
    assert abs((draw_family(0, "test", labels, 6, rho=0.0) == labels).mean() - 1 / 6) < 0.02


def test_families_tint_the_background_so_its_mean_colour_tells_the_class(tmp_path):
    ds = create_dataset("synthetic_spurious", root=str(tmp_path), split="test", sizes={"test": 120})
    assert ds.rho == 0.9
    outside = [~ds[i]["mask"] for i in range(len(ds))]
    means = np.stack([ds.render(i, remove="evidence")[:, outside[i]].mean(1).numpy() for i in range(len(ds))])
    family = np.array([ds.scene(i)["family"] for i in range(len(ds))])
    centroids = np.stack([means[family == f].mean(0) for f in range(6)])
    nearest = np.argmin(((means[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == family).mean() > 0.95  # a nearest-tint rule reads the family ...
    assert (nearest == ds.labels).mean() > 0.8  # ... and through it, most labels


def test_imagenet9_variants_keep_label_mask_and_paste_the_evidence(tmp_path):
    kw = dict(n=60, rho=0.9)
    original = make(tmp_path, **kw)
    variants = {b: make(tmp_path, background=b, **kw) for b in ("mixed_rand", "mixed_same", "mixed_next", "only_fg", "only_bg_t")}
    for name, ds in variants.items():
        assert np.array_equal(ds.labels, original.labels)
        sources = ds.background_of()
        for i in range(0, 60, 7):
            a, b = original[i], ds[i]
            assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["box"], b["box"])
            m = a["mask"]
            if name == "only_bg_t":
                assert torch.equal(b["image"], original.render(i, remove="evidence"))
                continue
            assert torch.equal(b["image"][:, m], a["image"][:, m])  # the evidence pixels of image i
            if name == "only_fg":
                assert (b["image"][:, ~m] == NEUTRAL_GREY / 255).all()
            else:  # ... on the background (everything but the evidence) of another image
                j = int(sources[i])
                assert j != i and torch.equal(b["image"][:, ~m], original.render(j, remove="evidence")[:, ~m])
                if name == "mixed_same":
                    assert original.labels[j] == original.labels[i]
                if name == "mixed_next":
                    assert j == (i + 1) % 60
    rand = variants["mixed_rand"].background_of()
    assert np.mean(original.labels[rand] == original.labels) < 0.35  # random backgrounds (1/6 expected)


# ---- interventions ---------------------------------------------------------------------------------
def test_render_removes_exactly_the_named_objects(tmp_path):
    ds = make(tmp_path, n=30, variant="two_part", interventions=True)
    for i in range(len(ds)):
        objects = ds.objects(i)
        kinds = [o["kind"] for o in objects]
        assert kinds.count("evidence") == 2 and "distractor" in kinds
        everything = ds.render(i, remove=[o["index"] for o in objects])
        assert torch.equal(everything, ds.render(i, remove=["evidence", "distractors"]))
        texture = (everything * 255).round()
        lo, hi = BACKGROUND_RANGE
        assert texture.min() >= lo and texture.max() <= hi  # nothing but background is left
        visible_masks = ds[i]["object_masks"]
        for o in objects:  # one object's removal changes only pixels where it is visible
            assert not (changed(ds, i, o["name"]) & ~visible_masks[o["index"]]).any()
    with pytest.raises(ConfigError, match=r"has no object 'distractor7'.*evidence0"):
        ds.render(0, remove=["distractor7"])
    with pytest.raises(ConfigError, match="has no object 99"):
        ds.render(0, remove=[99])


def test_intervention_extras_compose_every_counterfactual_exactly(tmp_path):
    cfg = DataConfig(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), input_size=(3, 64, 64))
    ds = make(tmp_path, n=16, variant="two_part", interventions=True, normalize=cfg)
    assert ds.extras == INTERVENTION_EXTRAS
    g = torch.Generator().manual_seed(0)
    for i in range(len(ds)):
        item = ds[i]
        kinds, masks, fp = item["object_kinds"], item["object_masks"], item["object_footprints"]
        assert kinds.tolist().count(KIND_EVIDENCE) == 2 and torch.equal(masks[kinds == KIND_EVIDENCE], item["parts"])
        assert not masks[kinds == 0].any() and not fp[kinds == 0].any()
        assert not (masks & ~fp).any() and torch.equal(masks.any(0), fp.any(0))  # visible within full, same union
        assert not (masks.sum(0) > 1).any()  # visible masks never overlap
        real = torch.nonzero(kinds > 0).flatten()
        keep = torch.rand(len(real), generator=g) < 0.5
        composite = item["images_without_objects"].clone()
        for o in range(len(kinds)):  # paint the kept layers bottom to top
            if kinds[o] > 0 and keep[(real == o).nonzero()].item():
                composite = torch.where(fp[o], item["object_layers"][o], composite)
        removed = real[~keep].tolist()
        assert torch.equal(composite, cfg.normalize(ds.render(i, remove=removed))), f"image {i}"
        # the visible mask of an object is what its removal alone changes, when it sits on background
        for o in real.tolist():
            if not (fp[o] & fp[real[real != o]].any(0)).any():
                assert torch.equal(changed(ds, i, [o]), masks[o])


def test_intervention_extras_collate_and_are_off_by_default(tmp_path):
    plain = make(tmp_path, n=8)
    assert plain.extras == () and not set(INTERVENTION_EXTRAS) & set(plain[0])
    batch = next(iter(DataLoader(make(tmp_path, n=8, interventions=True), batch_size=4)))
    o = batch["object_kinds"].shape[1]
    assert o == 5 + 1 + 1  # hard preset: 5 distractor slots, the evidence, the occluder slot
    assert batch["object_masks"].shape == (4, o, 64, 64) and batch["object_layers"].shape == (4, o, 3, 64, 64)
    assert batch["images_without_objects"].shape == (4, 3, 64, 64) and batch["object_kinds"].dtype == torch.int64


def test_a_horizontal_flip_never_turns_a_class_design_into_another():
    """Why the light augmentation may flip the benchmark: 7 of the 8 shapes are mirror-symmetric;
    the crescent and the diagonal stripes mirror into designs no class wears."""
    from reproduce.data.shapes import SHAPE_NAMES, pattern_images, shape_masks

    centre = np.array([32.0]), np.array([32.0])
    masks = [shape_masks(np.array([s]), *centre, np.array([20.0]), 64)[0] for s in range(len(SHAPE_NAMES))]
    for s, mask in enumerate(masks):
        mirrored = mask[:, ::-1]
        assert SHAPE_NAMES[s] == "crescent" or np.array_equal(mirrored, mask)
        assert not any(np.array_equal(mirrored, other) for t, other in enumerate(masks) if t != s)
    looks = [pattern_images(np.array([p]), *centre, 64)[0] for p in range(len(PATTERNS))]
    for p, look in enumerate(looks):
        assert not any(np.array_equal(look[..., ::-1], other) for q, other in enumerate(looks) if q != p)


def test_the_examples_figure_is_written(tmp_path):
    from reproduce.viz.benchmark_examples import ROWS, benchmark_examples

    path = benchmark_examples(str(tmp_path / "examples.png"), images=2, root=str(tmp_path / "cache"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert {title for title, _ in ROWS} >= {"easy", "hard (default)", "mixed_rand", "only_fg", "only_bg_t"}
