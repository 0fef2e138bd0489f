"""Train-split augmentation and the label-permutation sanity check: train batches only, seeded by
(seed, epoch, index), torchvision's draws, ground truth moved with the pixels."""

from __future__ import annotations

import pytest
import torch
from torchvision import transforms as T

from reproduce.data.augment import PRESETS, Augmentation, item_generator, parse_recipe
from reproduce.errors import ConfigError
from reproduce.lit.datamodule import AugmentedDataset, EpochSeededSampler, ImageDataModule
from reproduce.models.data_config import DataConfig

SIZES = {"train": 48, "val": 16, "test": 16}


def module(tmp_path, **kw) -> ImageDataModule:
    options = {"root": str(tmp_path), "sizes": SIZES, "preset": "easy"}
    dm = ImageDataModule("synthetic", options=options, batch_size=16, seed=kw.pop("seed", 0), **kw)
    dm.set_data_config(DataConfig(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), input_size=(3, 64, 64)))
    return dm


def epoch_batches(dm: ImageDataModule, epoch: int) -> list[dict]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_train_batches_are_augmented_and_evaluation_batches_never(tmp_path):
    plain, augmented = module(tmp_path, augment="none"), module(tmp_path, augment="light")
    first, second = epoch_batches(plain, 0)[0], epoch_batches(augmented, 0)[0]
    assert torch.equal(first["index"], second["index"])  # same shuffle: only the pixels differ
    assert not torch.equal(first["image"], second["image"])
    for stage in ("val", "test"):
        ours = next(iter(getattr(augmented, f"{stage}_dataloader")()))
        theirs = next(iter(getattr(plain, f"{stage}_dataloader")()))
        assert torch.equal(ours["image"], theirs["image"]) and torch.equal(ours["mask"], theirs["mask"])
    assert torch.equal(augmented.dataset("train")[3]["image"], plain.dataset("train")[3]["image"])  # the split stays clean


def test_augmentation_is_seeded_by_seed_epoch_and_index(tmp_path):
    a, b = module(tmp_path, augment="light"), module(tmp_path, augment="light")
    e0, again = epoch_batches(a, 0), epoch_batches(b, 0)
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(e0, again))
    e1 = epoch_batches(a, 1)
    by_index = lambda batches: {int(i): img for b in batches for i, img in zip(b["index"], b["image"])}  # noqa: E731
    first, later = by_index(e0), by_index(e1)
    assert sum(not torch.equal(first[i], later[i]) for i in first) > 0.5 * len(first)  # new draws each epoch
    other = by_index(epoch_batches(module(tmp_path, augment="light", seed=1), 0))
    assert sum(not torch.equal(first[i], other[i]) for i in first) > 0.5 * len(first)
    # an item's augmentation depends on (seed, epoch, index) only, not on order, batch or worker
    ds = AugmentedDataset(a.dataset("train"), a.train_augmentation(), seed=0)
    assert torch.equal(ds[(1, 7)]["image"], later[7])
    assert torch.equal(ds[(1, 7)]["image"], a.train_augmentation()(a.dataset("train")[7], item_generator(0, 1, 7))["image"])


def test_loader_workers_give_the_same_batches(tmp_path):
    dm = module(tmp_path, augment="light")
    dm.num_workers = 2
    with_workers = epoch_batches(dm, 2)
    dm.num_workers = 0
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(with_workers, epoch_batches(dm, 2)))


def test_the_comet_recipe_draws_what_torchvision_draws():
    """On [0, 1] images with a black fill, the recipe equals torchvision's RandomCrop(padding),
    RandomHorizontalFlip, RandomRotation(nearest) under the same seed."""
    image = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(1))
    reference = T.Compose([T.RandomCrop(24, padding=16), T.RandomHorizontalFlip(), T.RandomRotation(15)])
    ours = Augmentation("comet")
    for seed in range(6):
        torch.manual_seed(seed)
        want = reference(image)
        got = ours({"image": image}, torch.Generator().manual_seed(seed))["image"]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("recipe", ["light", [{"random_crop": {"padding": 3}}, {"hflip": {}}, {"rotation": {"degrees": 15}}],
                                    [{"rotation": {"degrees": 40, "fill": "mean"}}]])
def test_masks_parts_and_box_move_with_the_pixels(recipe):
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[3:9, 11:18] = True
    parts = torch.stack([mask, torch.zeros_like(mask)])
    parts[1, 12:15, 2:6] = True
    image = torch.stack([mask.float(), parts[1].float(), torch.ones(20, 20)])
    aug = Augmentation(recipe)  # black = 0 in this (unnormalised) space
    for seed in range(8):
        out = aug({"image": image, "mask": mask, "parts": parts, "box": torch.zeros(4)}, torch.Generator().manual_seed(seed))
        assert torch.equal(out["image"][0] == 1, out["mask"]) and torch.equal(out["image"][1] == 1, out["parts"][1])
        ys, xs = torch.nonzero(out["mask"], as_tuple=True)
        assert out["box"].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        inside = out["image"][2] == 1  # pixels from outside take the fill (0 here)
        assert out["mask"][~inside].sum() == 0


def test_fill_black_is_the_normalised_black_pixel():
    cfg = DataConfig(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), input_size=(3, 8, 8))
    black = cfg.normalize(torch.zeros(3, 1, 1))
    out = Augmentation([{"random_crop": {"padding": 8}}], black=black)({"image": torch.zeros(3, 8, 8) + 7}, torch.Generator().manual_seed(3))
    corner_in_padding = (out["image"] != 7).all(0)
    assert corner_in_padding.any()
    torch.testing.assert_close(out["image"][:, corner_in_padding], black.view(3, 1).expand(3, int(corner_in_padding.sum())))


def test_sampler_hands_each_item_its_epoch():
    sampler = EpochSeededSampler(5, seed=0, with_epoch=True)
    sampler.set_epoch(3)
    keys = list(sampler)
    assert sorted(i for _, i in keys) == list(range(5)) and {e for e, _ in keys} == {3}
    plain = EpochSeededSampler(5, seed=0)
    plain.set_epoch(3)
    assert [i for _, i in keys] == list(plain)  # the same shuffle, with the epoch attached


def test_label_permutation_relabels_the_training_split_only(tmp_path):
    plain, permuted = module(tmp_path), module(tmp_path, train_label_permutation_seed=5)
    truth = [plain.dataset("train")[i]["label"] for i in range(48)]
    shuffled = [permuted.dataset("train")[i]["label"] for i in range(48)]
    assert sorted(truth) == sorted(shuffled) and sum(a != b for a, b in zip(truth, shuffled)) > 24
    again = module(tmp_path, train_label_permutation_seed=5)
    assert [again.dataset("train")[i]["label"] for i in range(48)] == shuffled
    assert torch.equal(permuted.dataset("train")[0]["image"], plain.dataset("train")[0]["image"])
    for stage in ("val", "test"):
        assert [permuted.dataset(stage)[i]["label"] for i in range(16)] == [plain.dataset(stage)[i]["label"] for i in range(16)]
    assert next(iter(permuted.train_dataloader()))["label"].tolist() != next(iter(plain.train_dataloader()))["label"].tolist()


@pytest.mark.parametrize(
    "recipe, fragment",
    [
        ("heavy", "augment must be one of"),
        ([{"random_crop": {}}], "padding"),
        ([{"blur": {}}], "augment step"),
        ([{"hflip": {"p": 2}}], "hflip.p"),
        ([{"rotation": {"degrees": 15, "fill": "white"}}], "fill"),
        ([{"random_crop": {"padding": 4, "size": 3}}], "unknown"),
        ({"random_crop": {"padding": 4}}, "list of steps"),
    ],
)
def test_bad_recipes_fail_when_the_data_module_is_built(tmp_path, recipe, fragment):
    with pytest.raises(ConfigError, match=fragment):
        module(tmp_path, augment=recipe)


def test_presets_parse():
    assert [op for op, _ in parse_recipe("comet")] == ["random_crop", "hflip", "rotation"]
    assert parse_recipe("none") == [] and not Augmentation(None) and set(PRESETS) == {"none", "light", "comet"}
