"""The synthetic ground-truth benchmark on the easy preset (the scenes as before the difficulty knobs):
exact masks, determinism, cache safety, the two-part and background-shift variants, and input
validation. The knobs, the shortcut variant and the interventions: test_synthetic_variants.py."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency
from torch.utils.data import DataLoader

from reproduce.data import create_dataset
from reproduce.data.registry import has_splits
from reproduce.data.shapes import ALL_PATTERNS, BACKGROUND_RANGE, DISTRACTOR_PATTERNS, PATTERNS, SHAPE_NAMES
from reproduce.data.scenes import distractor_pool, draw_layout
from reproduce.data.synthetic import SyntheticShapes
from reproduce.errors import ConfigError
from reproduce.models.data_config import DataConfig


def make(tmp_path, n=48, split="test", **kw) -> SyntheticShapes:
    return SyntheticShapes(root=str(tmp_path), split=split, sizes={split: n}, **{"preset": "easy", **kw})


def all_arrays(ds: SyntheticShapes) -> list[np.ndarray]:
    return [np.asarray(ds.images_uint8), np.asarray(ds.labels), ds._masks, ds._boxes]


def changed_pixels(ds: SyntheticShapes, i: int) -> torch.Tensor:
    return (ds.render(i) != ds.render(i, remove="evidence")).any(0)


# ---- item format ---------------------------------------------------------------------------------
def test_item_format_and_metadata(tmp_path):
    ds = make(tmp_path, n=12)
    item = ds[3]
    assert set(item) == {"image", "label", "index", "mask", "box"}
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].shape == (64, 64) and item["mask"].dtype == torch.bool
    assert item["box"].shape == (4,) and item["box"].dtype == torch.float32
    assert item["index"] == 3 and 0 <= item["label"] < 6
    assert ds.num_classes == 6 and ds.image_size == 64 and len(ds) == 12
    assert ds.class_names[:3] == ["red_disk", "blue_striped_square", "green_checkered_triangle"]
    assert ds.has_masks and ds.has_boxes and not ds.has_parts
    assert ds.describe()["cache_key"] == ds.cache_key and ds.describe()["size"] == 12
    with pytest.raises(IndexError):
        ds[12]


def test_render_redraws_the_cached_image(tmp_path):
    ds = make(tmp_path, n=10)
    for i in range(len(ds)):
        assert torch.equal(ds.render(i), ds[i]["image"])


def test_normalize_uses_the_model_data_config(tmp_path):
    cfg = DataConfig(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), input_size=(3, 64, 64))
    plain, normed = make(tmp_path, n=4), make(tmp_path, n=4, normalize=cfg)
    torch.testing.assert_close(normed[2]["image"], cfg.normalize(plain[2]["image"]))
    assert torch.equal(normed[2]["mask"], plain[2]["mask"])


def test_default_collate_batches_items(tmp_path):
    batch = next(iter(DataLoader(make(tmp_path, n=8), batch_size=4)))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["mask"].shape == (4, 64, 64)
    assert batch["box"].shape == (4, 4) and batch["label"].shape == (4,)
    batch = next(iter(DataLoader(make(tmp_path, n=8, variant="two_part"), batch_size=4)))
    assert batch["parts"].shape == (4, 2, 64, 64) and batch["parts"].dtype == torch.bool


def test_registry_names(tmp_path):
    ds = create_dataset("synthetic", root=str(tmp_path), split="val", sizes={"val": 6})
    assert isinstance(ds, SyntheticShapes) and ds.split == "val" and not ds.has_parts
    two = create_dataset("synthetic_two_part", root=str(tmp_path), split="val", sizes={"val": 6})
    assert two.variant == "two_part" and two.has_parts and two.split == "val"
    assert has_splits("synthetic") and has_splits("synthetic_two_part")
    assert two.class_names[0] == "red_disk+blue_striped_square"


# ---- determinism and cache -------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b = make(tmp_path / "a", seed=3), make(tmp_path / "b", seed=3)
    with open(a.cache_path, "rb") as fa, open(b.cache_path, "rb") as fb:
        assert fa.read() == fb.read()
    other = make(tmp_path / "c", seed=4)
    assert other.cache_key != a.cache_key
    assert not np.array_equal(other.images_uint8, a.images_uint8)
    assert not np.array_equal(other.labels, a.labels)


def test_cache_hit_skips_generation_and_returns_identical_data(tmp_path, monkeypatch):
    first = make(tmp_path)

    def fail(self):
        raise AssertionError("cache miss: generated again")

    monkeypatch.setattr(SyntheticShapes, "_generate", fail)
    second = make(tmp_path)
    for x, y in zip(all_arrays(first), all_arrays(second)):
        assert np.array_equal(x, y)


def test_regeneration_after_deleting_the_cache_is_identical(tmp_path):
    first = make(tmp_path)
    with open(first.cache_path, "rb") as f:
        original = f.read()
    os.remove(first.cache_path)
    second = make(tmp_path)
    with open(second.cache_path, "rb") as f:
        assert f.read() == original


def test_cache_key_covers_every_generation_parameter(tmp_path):
    base = dict(split="test", variant="single", background="original", num_classes=6, image_size=64, seed=0)
    changes = dict(
        split="val", variant="two_part", background="mixed_next", num_classes=5, image_size=72, seed=1,
        preset="hard", evidence_scale=[0.8, 1.0], contrast=[0.5, 1.0], occlusion=0.3, occlusion_rate=0.5,
        distractors=[0, 2], confusers=0.3, label_noise=0.1, rho=0.9,
    )
    keys = {make(tmp_path, n=6, **base).cache_key, make(tmp_path, n=7, **base).cache_key}
    for name, value in changes.items():
        kw = {**base, name: value}
        keys.add(make(tmp_path, n=6, **kw).cache_key)
    assert len(keys) == 2 + len(changes)
    assert len(os.listdir(tmp_path)) == len(keys)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "foreign_file"])
def test_damaged_cache_is_detected_and_regenerated(tmp_path, caplog, damage):
    first = make(tmp_path)
    path = first.cache_path
    with open(path, "rb") as f:
        original = f.read()
    if damage == "truncate":
        broken = original[: len(original) // 2]
    elif damage == "flip_byte":
        mid = len(original) // 2
        broken = original[:mid] + bytes([original[mid] ^ 0xFF]) + original[mid + 1:]
    else:
        broken = b"not a cache file"
    with open(path, "wb") as f:
        f.write(broken)
    with caplog.at_level(logging.WARNING, logger="reproduce.data.synthetic"):
        again = make(tmp_path)
    assert "regenerating" in caplog.text
    for x, y in zip(all_arrays(first), all_arrays(again)):
        assert np.array_equal(x, y)
    with open(path, "rb") as f:
        assert f.read() == original
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]  # no temp files left behind


def test_sizes_from_a_hydra_config(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    sizes = omegaconf.OmegaConf.create({"test": 5})
    assert len(SyntheticShapes(root=str(tmp_path), split="test", sizes=sizes)) == 5


def test_default_root_follows_reproduce_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path))
    ds = SyntheticShapes(split="val", sizes={"val": 4})
    assert os.path.dirname(ds.cache_path) == str(tmp_path / "synthetic")
    assert os.path.exists(ds.cache_path)


def test_unwritable_root_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="REPRODUCE_CACHE"):
        make(blocker / "cache")


def test_splits_are_independent_and_prefix_stable(tmp_path):
    small, large = make(tmp_path, n=30), make(tmp_path, n=60)
    assert np.array_equal(large.images_uint8[:30], small.images_uint8)
    assert np.array_equal(large.labels[:30], small.labels)
    train = make(tmp_path, n=30, split="train")
    assert not np.array_equal(train.images_uint8, small.images_uint8)


# ---- ground truth ------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["single", "two_part"])
def test_mask_is_exactly_the_pixels_the_evidence_changes(tmp_path, variant):
    ds = make(tmp_path, n=40, variant=variant)
    for i in range(len(ds)):
        mask = ds[i]["mask"]
        assert mask.sum() >= 40  # the smallest evidence still covers a visible area
        assert torch.equal(changed_pixels(ds, i), mask), f"image {i}"


@pytest.mark.parametrize("variant", ["single", "two_part"])
def test_box_is_the_tight_box_of_the_mask(tmp_path, variant):
    ds = make(tmp_path, n=40, variant=variant)
    for i in range(len(ds)):
        item = ds[i]
        ys, xs = torch.nonzero(item["mask"], as_tuple=True)
        expected = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert torch.equal(item["box"], expected)


def test_evidence_wears_the_class_design(tmp_path):
    ds = make(tmp_path, n=36)
    for i in range(len(ds)):
        (obj,) = ds.scene(i)["evidence"]
        assert f"{obj['pattern']}_{obj['shape']}" == ds.class_names[ds[i]["label"]]
        # every evidence pixel carries one of the two colours of the class pattern
        pattern = PATTERNS[ds[i]["label"]]
        pixels = ds.images_uint8[i][:, ds[i]["mask"].numpy()].T
        allowed = np.array([pattern.primary, pattern.secondary])
        assert (pixels[:, None, :] == allowed[None]).all(-1).any(-1).all()


def test_labels_balanced_and_in_range(tmp_path):
    ds = make(tmp_path, n=60, num_classes=5)
    labels = np.asarray(ds.labels)
    assert labels.min() >= 0 and labels.max() < 5
    assert np.bincount(labels, minlength=5).tolist() == [12] * 5
    for start in range(0, 60, 5):  # balanced within every block of K images
        assert sorted(labels[start:start + 5]) == list(range(5))


def test_object_colours_never_match_the_background():
    """The guarantee behind exact masks: every colour of every pattern leaves the background range."""
    lo, hi = BACKGROUND_RANGE
    for p in ALL_PATTERNS:
        for colour in (p.primary, p.secondary):
            assert any(c < lo or c > hi for c in colour), p.name


@pytest.mark.parametrize("variant", ["single", "two_part"])
def test_distractors_never_wear_a_class_design(tmp_path, variant):
    ds = make(tmp_path, n=60, variant=variant)
    class_shapes = set(SHAPE_NAMES[: ds.num_classes])
    distractor_patterns = {p.name for p in DISTRACTOR_PATTERNS}
    assert not distractor_patterns & {p.name for p in PATTERNS}
    counts = []
    for i in range(len(ds)):
        distractors = ds.scene(i)["distractors"]
        counts.append(len(distractors))
        for d in distractors:
            assert d["shape"] in class_shapes and d["pattern"] in distractor_patterns
    assert min(counts) >= 1 and max(counts) <= 3
    # distractors never take a class's main colour (black/white texture colours are shared)
    assert not {p.primary for p in PATTERNS} & {p.primary for p in DISTRACTOR_PATTERNS}


def test_distractor_designs_are_independent_of_the_label():
    """Chi-square over 3000 scenes: distractor shape and pattern tell nothing about the label; in
    particular the label's own shape does appear on distractors."""
    k = 6
    layout = draw_layout(seed=0, split="train", variant="single", num_classes=k, n=3000)
    dis = layout.objects
    labels = np.broadcast_to(layout.labels[:, None], dis.drawn.shape)
    dis.drawn = dis.drawn & (layout.kinds != 1)
    first = len(PATTERNS)
    for attr, values in ((dis.shape, k), (dis.pattern - first, len(DISTRACTOR_PATTERNS))):
        table = np.zeros((k, values))
        np.add.at(table, (labels[dis.drawn], attr[dis.drawn]), 1)
        assert table.min() > 0
        assert chi2_contingency(table).pvalue > 0.01
    assert len(distractor_pool(k)) == k * len(DISTRACTOR_PATTERNS)


# ---- two-part variant --------------------------------------------------------------------------------
def test_two_part_invariants(tmp_path):
    ds = make(tmp_path, n=40, variant="two_part", num_classes=5)
    k = ds.num_classes
    for i in range(len(ds)):
        item = ds[i]
        parts, c = item["parts"], item["label"]
        assert parts.shape == (2, 64, 64)
        assert parts[0].any() and parts[1].any()
        assert not (parts[0] & parts[1]).any()
        assert torch.equal(parts[0] | parts[1], item["mask"])
        scene = ds.scene(i)["evidence"]
        assert [e["shape"] for e in scene] == [SHAPE_NAMES[c], SHAPE_NAMES[(c + 1) % k]]
        for p, part_type in enumerate((c, (c + 1) % k)):  # part p is painted in its type's pattern
            pixels = ds.images_uint8[i][:, parts[p].numpy()].T
            allowed = np.array([PATTERNS[part_type].primary, PATTERNS[part_type].secondary])
            assert (pixels[:, None, :] == allowed[None]).all(-1).any(-1).all()


def test_two_part_each_part_fits_two_classes_and_the_pair_one(tmp_path):
    ds = make(tmp_path, n=6, variant="two_part")
    pairs = [frozenset(name.split("+")) for name in ds.class_names]
    assert all(len(p) == 2 for p in pairs) and len(set(pairs)) == ds.num_classes
    for design in set().union(*pairs):  # a single part is consistent with exactly two classes
        assert sum(design in p for p in pairs) == 2


# ---- background-shift variant ------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["single", "two_part"])
def test_mixed_next_keeps_evidence_and_takes_the_next_background(tmp_path, variant):
    own = make(tmp_path, n=30, variant=variant)
    shifted = make(tmp_path, n=30, variant=variant, background="mixed_next")
    n = len(own)
    assert np.array_equal(own.labels, shifted.labels)
    for i in range(n):
        a, b = own[i], shifted[i]
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["box"], b["box"])
        if own.has_parts:
            assert torch.equal(a["parts"], b["parts"])
        next_background = own.render((i + 1) % n, remove="evidence")
        expected = torch.where(a["mask"], a["image"], next_background)
        assert torch.equal(b["image"], expected), f"image {i}"
        assert torch.equal(shifted.render(i), b["image"])
        assert shifted.scene(i)["distractors"] == own.scene((i + 1) % n)["distractors"]
    # the background really changed: outside the masks of both images, shifted i == own i+1 != own i
    i = 0
    outside = ~(own[0]["mask"] | own[1]["mask"])
    assert torch.equal(shifted[i]["image"][:, outside], own[1]["image"][:, outside])
    assert not torch.equal(shifted[i]["image"][:, outside], own[0]["image"][:, outside])


# ---- image size ------------------------------------------------------------------------------------------
def test_224_pixels_same_scenes_with_exact_masks(tmp_path):
    big = make(tmp_path, n=4, image_size=224, variant="two_part")
    small = make(tmp_path, n=4, image_size=64, variant="two_part")
    assert big[0]["image"].shape == (3, 224, 224) and big[0]["parts"].shape == (2, 224, 224)
    for i in range(len(big)):
        assert torch.equal(changed_pixels(big, i), big[i]["mask"])
        # geometry is drawn in units of the image side: the same scene at both resolutions
        torch.testing.assert_close(big[i]["box"] / 224, small[i]["box"] / 64, atol=2 / 64, rtol=0)
    assert np.array_equal(big.labels, small.labels)


# ---- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"split": "dev"}, "split"),
        ({"variant": "three_part"}, "variant"),
        ({"background": "shifted"}, "background"),
        ({"preset": "medium"}, "preset"),
        ({"num_classes": 9}, "num_classes=9 exceeds"),
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 2, "variant": "two_part"}, "no single part"),
        ({"num_classes": 6.0}, "num_classes"),
        ({"image_size": 16}, "image_size"),
        ({"image_size": 64.0}, "image_size"),
        ({"sizes": {"test": 0}}, "sizes['test']"),
        ({"sizes": {"dev": 10}}, "split in sizes"),
        ({"sizes": [100]}, "sizes must be a dict"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"normalize": (0.5, 0.5)}, "normalize"),
        ({"root": 3}, "root"),
    ],
)
def test_bad_input_raises_config_error_before_any_work(tmp_path, kwargs, fragment):
    kwargs = {"root": str(tmp_path / "cache"), **kwargs}
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        SyntheticShapes(**kwargs)
    assert not (tmp_path / "cache").exists()
