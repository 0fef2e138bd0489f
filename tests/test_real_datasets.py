"""Real-dataset loaders on tiny fixtures in the official layouts, and the bundled photos."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from fixtures_datasets import (
    CIFAR_NAMES,
    CUB_CLASSES,
    cifar_labels,
    cub_square,
    in9_square,
    write_cifar10,
    write_cub,
    write_imagenet9,
    write_imagenet_val,
)

from reproduce.data import create_dataset
from reproduce.data.on_disk import Resize, mask_box
from reproduce.data.imagenet9 import CLASS_FOLDERS, COMET_ORDER
from reproduce.errors import ConfigError, DataError, InputError
from reproduce.models import DataConfig


def red(image: torch.Tensor) -> torch.Tensor:
    """Bool [H, W]: pixels of the fixtures' red square (JPEG and resizing blur only the edges)."""
    r, g, b = image
    return (r > 0.6) & (g < 0.4) & (b < 0.4)


def assert_mask_on_square(item: dict) -> None:
    """The mask covers the drawn square and little else (1-pixel resampling border allowed)."""
    mask, square = item["mask"], red(item["image"])
    assert mask.dtype == torch.bool and mask.shape == item["image"].shape[1:]
    assert (mask & square).sum() >= 0.9 * square.sum()
    assert (mask & ~square).sum() <= 0.25 * mask.sum()


def scaled(box, sx: float, sy: float) -> torch.Tensor:
    x0, y0, x1, y1 = box
    return torch.tensor([x0 * sx, y0 * sy, x1 * sx, y1 * sy])


# --------------------------------------------------------------------------------------- ImageNet-9


@pytest.fixture(scope="module")
def in9_root(tmp_path_factory):
    return write_imagenet9(tmp_path_factory.mktemp("in9"))


def test_imagenet9_test_items_follow_the_item_format_and_sorted_labels(in9_root):
    ds = create_dataset("imagenet9", root=in9_root, split="test", image_size=64)
    assert len(ds) == 18 and ds.num_classes == 9 and ds.has_masks and ds.has_boxes
    assert ds.class_names[6] == "musical instrument"
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"image", "label", "index", "mask", "box"}
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 64, 64)
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        assert item["box"].dtype == torch.float32 and item["box"].shape == (4,)
        folder = os.path.basename(os.path.dirname(ds.samples[i][0]))
        assert item["label"] == CLASS_FOLDERS.index(folder) and item["index"] == i


def test_imagenet9_comet_label_order(in9_root):
    ds = create_dataset("imagenet9", root=in9_root, split="test", label_order="comet", image_size=32)
    assert ds.class_folders == list(COMET_ORDER)
    assert ds.class_names[0] == "musical instrument" and ds.class_names[8] == "reptile"
    for path, label in ds.samples:
        assert COMET_ORDER[label] == os.path.basename(os.path.dirname(path))
    first_instrument = next(i for i, (p, _) in enumerate(ds.samples) if "06_musical instrument" in p)
    assert ds[first_instrument]["label"] == 0


def test_imagenet9_masks_and_boxes_land_on_the_foreground_after_resizing(in9_root):
    ds = create_dataset("imagenet9", root=in9_root, split="test", image_size=64)
    for i in range(len(ds)):
        item = ds[i]
        assert_mask_on_square(item)
        stem = os.path.basename(ds.samples[i][0])[: -len(".JPEG")]
        label, k = int(stem[2]), int(stem.split("_")[1])
        expected = scaled(in9_square(label, k), 2.0, 2.0)  # 32 -> 64, nearest-neighbour mask
        assert torch.equal(item["box"], expected)
        assert torch.equal(item["box"], mask_box(item["mask"]))


def test_imagenet9_mixed_next_item_gets_the_mask_of_its_original_image(in9_root):
    original = create_dataset("imagenet9", root=in9_root, split="test", variant="original", image_size=48)
    mixed = create_dataset("imagenet9", root=in9_root, split="test", variant="mixed_next", image_size=48)
    assert len(mixed) == len(original)
    for i in range(len(original)):
        a, b = original[i], mixed[i]
        assert os.path.basename(mixed.samples[i][0]).startswith("fg_" + os.path.basename(original.samples[i][0])[:-5])
        assert a["label"] == b["label"]
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["box"], b["box"])
        assert not torch.allclose(a["image"], b["image"])  # the background did change
        assert_mask_on_square(b)


def test_imagenet9_train_and_val_come_from_original_without_masks(in9_root):
    for split in ("train", "val"):
        ds = create_dataset("imagenet9", root=in9_root, split=split, image_size=32)
        assert len(ds) == 18 and not ds.has_masks and not ds.has_boxes
        assert set(ds[0]) == {"image", "label", "index"}
        assert all(f"{os.sep}original{os.sep}{split}{os.sep}" in p for p, _ in ds.samples)
    assert ds.describe()["split"] == "val" and ds.describe()["variant"] == "original"


def test_imagenet9_missing_root_shows_the_layout_and_the_source(tmp_path):
    for root in (None, tmp_path / "nowhere"):
        with pytest.raises(DataError) as err:
            create_dataset("imagenet9", root=root)
        message = str(err.value)
        assert "bg_challenge/" in message and "fg_mask/val" in message
        assert "github.com/MadryLab/backgrounds_challenge" in message


def test_imagenet9_malformed_roots_fail_at_construction(in9_root, tmp_path):
    with pytest.raises(DataError, match=r"bg_challenge/mixed_rand/val/.*missing[\s\S]*Expected this layout"):
        create_dataset("imagenet9", root=in9_root, split="test", variant="mixed_rand")

    root = shutil.copytree(in9_root, tmp_path / "in9")
    shutil.rmtree(root / "bg_challenge" / "original" / "val" / "03_reptile")
    with pytest.raises(DataError, match=r"missing: \['03_reptile'\][\s\S]*class folders: 00_dog"):
        create_dataset("imagenet9", root=root, split="test")

    for f in (root / "original" / "val" / "05_insect").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"original/val/05_insect/ holds no image files"):
        create_dataset("imagenet9", root=root, split="val")

    root = shutil.copytree(in9_root, tmp_path / "in9_no_masks")
    shutil.rmtree(root / "bg_challenge" / "fg_mask")
    with pytest.raises(DataError, match=r"fg_mask/val/, which is missing"):
        create_dataset("imagenet9", root=root, split="test")


def test_imagenet9_mask_of_the_wrong_size_fails_at_construction(in9_root, tmp_path):
    root = shutil.copytree(in9_root, tmp_path / "in9")
    np.save(root / "bg_challenge" / "fg_mask" / "val" / "08_fish" / "n08_1.npy", np.zeros((16, 16), dtype=bool))
    with pytest.raises(DataError, match=r"2-D arrays of the image size 32x32; 1 have shape \(16, 16\)[\s\S]*Expected"):
        create_dataset("imagenet9", root=root, split="test")


def test_imagenet9_corrupt_image_names_the_file_when_read(in9_root, tmp_path):
    root = shutil.copytree(in9_root, tmp_path / "in9")
    bad = root / "bg_challenge" / "original" / "val" / "08_fish" / "n08_1.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    ds = create_dataset("imagenet9", root=root, split="test")
    with pytest.raises(DataError, match=r"n08_1\.JPEG.*corrupt"):
        ds[len(ds) - 1]


def test_imagenet9_rejects_unknown_options(in9_root):
    for options in ({"variant": "mixed"}, {"split": "dev"}, {"label_order": "listdir"}, {"variant": "in9l"},
                    {"image_size": 0}, {"resize": "pad"}):
        with pytest.raises(ConfigError):
            create_dataset("imagenet9", root=in9_root, **options)


# ------------------------------------------------------------------------------------- ImageNet val


def test_imagenet_val_image_folder_uses_the_standard_1000_class_index(tmp_path):
    records = write_imagenet_val(tmp_path, "image_folder")
    os.remove(tmp_path / "LOC_val_solution.csv")
    ds = create_dataset("imagenet_val", root=tmp_path, image_size=32)
    assert ds.num_classes == 1000 and len(ds.class_names) == 1000 and ds.class_names[285] == "Egyptian cat"
    assert not ds.has_boxes and ds.describe()["layout"] == "image_folder"
    assert [ds[i]["label"] for i in range(len(ds))] == [r["label"] for r in records] == [0, 285, 967]
    assert set(ds[0]) == {"image", "label", "index"} and ds[0]["image"].shape == (3, 32, 32)


@pytest.mark.parametrize("layout", ["flat", "kaggle", "image_folder"])
def test_imagenet_val_boxes_from_the_solution_csv(tmp_path, layout):
    records = write_imagenet_val(tmp_path, layout)  # 40x30 images
    csv = tmp_path / "LOC_val_solution.csv" if layout == "image_folder" else None
    ds = create_dataset("imagenet_val", root=tmp_path, image_size=80, solution_csv=csv)
    assert ds.has_boxes and ds.has_masks and len(ds) == 3 and ds.describe()["layout"] == layout
    for i, rec in enumerate(records):
        item = ds[i]
        assert item["label"] == rec["label"]
        # enclosing box of the two own-class boxes; the other class's box is ignored
        x0, y0 = min(rec["square"][0], rec["extra"][0]), min(rec["square"][1], rec["extra"][1])
        enclosing = (x0, y0, rec["square"][2], rec["square"][3])
        assert torch.allclose(item["box"], scaled(enclosing, 2.0, 80 / 30))
        union = item["mask"]
        sq = scaled(rec["square"], 2.0, 80 / 30).round().long()
        assert union[sq[1] : sq[3], sq[0] : sq[2]].all() and union[:8, :6].all()
        assert not union[70:, 70:].any()


def test_imagenet_val_center_crop_clips_boxes_to_the_crop(tmp_path):
    records = write_imagenet_val(tmp_path, "flat")
    ds = create_dataset("imagenet_val", root=tmp_path, image_size=28, resize="center_crop", crop_pct=0.875)
    # 40x30 -> 43x32 (short side round(28 / 0.875) = 32), then the central 28x28 crop at (7, 2)
    sx, sy, left, top = 43 / 40, 32 / 30, (43 - 28) // 2, (32 - 28) // 2
    for i, rec in enumerate(records):
        x0, y0 = min(rec["square"][0], rec["extra"][0]), min(rec["square"][1], rec["extra"][1])
        x1, y1 = rec["square"][2], rec["square"][3]
        expected = torch.tensor([x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top]).clamp(0, 28)
        assert torch.allclose(ds[i]["box"], expected, atol=1e-5)


def test_imagenet_val_layout_errors(tmp_path):
    write_imagenet_val(tmp_path / "a", "image_folder")
    os.makedirs(tmp_path / "a" / "n99999999")
    with pytest.raises(DataError, match=r"\['n99999999'\] are not ImageNet-1k wnids[\s\S]*LOC_val_solution.csv"):
        create_dataset("imagenet_val", root=tmp_path / "a")

    write_imagenet_val(tmp_path / "b", "flat")
    os.remove(tmp_path / "b" / "LOC_val_solution.csv")
    with pytest.raises(DataError, match=r"LOC_val_solution.csv.*missing[\s\S]*image-net.org"):
        create_dataset("imagenet_val", root=tmp_path / "b")

    write_imagenet_val(tmp_path / "c", "flat")
    csv = tmp_path / "c" / "LOC_val_solution.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DataError, match=r"1 images have no row in the solution CSV, e.g. \['ILSVRC2012_val_00000003'\]"):
        create_dataset("imagenet_val", root=tmp_path / "c")

    with pytest.raises(DataError, match=r"does not exist[\s\S]*Expected this layout"):
        create_dataset("imagenet_val", root=tmp_path / "missing")


# ------------------------------------------------------------------------------------------- CUB


def test_cub_items_labels_splits_boxes_and_masks(tmp_path):
    write_cub(tmp_path)  # 3 classes x 2 images, odd ids train, even ids test, 40x30 images
    train = create_dataset("cub200", root=tmp_path, split="train", image_size=40)
    test = create_dataset("cub200", root=tmp_path / "CUB_200_2011", split="test", image_size=60)
    assert len(train) == 3 and len(test) == 3 and test.num_classes == 3
    assert test.class_names[0] == "Black footed Albatross" and train.has_masks and train.has_boxes
    assert [train[i]["label"] for i in range(3)] == [0, 1, 2]  # ids 1, 3, 5 -> classes 1, 2, 3
    assert [test[i]["label"] for i in range(3)] == [0, 1, 2]  # ids 2, 4, 6
    for i, image_id in enumerate((2, 4, 6)):
        item = test[i]
        assert set(item) == {"image", "label", "index", "box", "mask"}
        assert item["image"].shape == (3, 60, 60) and item["mask"].shape == (60, 60)
        assert torch.allclose(item["box"], scaled(cub_square(image_id), 60 / 40, 2.0))
        assert_mask_on_square(item)
        # the soft top row (102/255 < 0.5) is not bird; with threshold 0.4 it is
        assert mask_box(item["mask"])[1] == pytest.approx(12.0)
    soft = create_dataset("cub200", root=tmp_path, split="test", image_size=60, mask_threshold=0.4)
    assert mask_box(soft[0]["mask"])[1] == pytest.approx(10.0)


def test_cub_without_segmentations_has_boxes_only(tmp_path):
    write_cub(tmp_path, segmentations=False)
    ds = create_dataset("cub200", root=tmp_path, split="test", image_size=32)
    assert not ds.has_masks and set(ds[0]) == {"image", "label", "index", "box"}


def test_cub_layout_errors(tmp_path):
    write_cub(tmp_path)
    base = tmp_path / "CUB_200_2011"
    os.remove(sorted((base / "images" / CUB_CLASSES[1]).iterdir())[0])  # image 3, a training image
    with pytest.raises(DataError, match=r"1 images listed in images.txt are missing[\s\S]*vision.caltech.edu"):
        create_dataset("cub200", root=tmp_path, split="train")
    write_cub(tmp_path)  # restore
    os.remove(sorted((tmp_path / "segmentations" / CUB_CLASSES[2]).iterdir())[0])  # image 5
    with pytest.raises(DataError, match=r"lacks 1 masks, e.g. \['003.Sooty_Albatross/Sooty_Albatross_0000_5.png'\]"):
        create_dataset("cub200", root=tmp_path, split="train")
    write_cub(tmp_path)
    os.remove(base / "bounding_boxes.txt")
    with pytest.raises(DataError, match=r"missing \['bounding_boxes.txt'\][\s\S]*Expected this layout"):
        create_dataset("cub200", root=tmp_path)


def test_cub_corrupt_image_names_the_file_when_read(tmp_path):
    write_cub(tmp_path)
    bad = sorted((tmp_path / "CUB_200_2011" / "images" / CUB_CLASSES[0]).iterdir())[1]  # id 2, test
    bad.write_bytes(b"truncated")
    ds = create_dataset("cub200", root=tmp_path, split="test")
    with pytest.raises(DataError, match=bad.name):
        ds[0]


# ----------------------------------------------------------------------------------------- CIFAR-10


def test_cifar10_comet_split_takes_the_first_images_of_each_class_as_val(tmp_path):
    write_cifar10(tmp_path, per_batch=6)  # 30 training images, 3 per class, shuffled labels
    labels = cifar_labels(30)
    val = create_dataset("cifar10", root=tmp_path, split="val", val_per_class=2)
    train = create_dataset("cifar10", root=tmp_path, split="train", val_per_class=2)
    test = create_dataset("cifar10", root=tmp_path, split="test")
    assert (len(val), len(train), len(test)) == (20, 10, 10)
    assert val.class_names == CIFAR_NAMES

    def global_ids(ds):
        return [round(float(ds[i]["image"][0, 0, 0]) * 255) for i in range(len(ds))]

    expected_val = [g for g in range(30) if list(labels[:g]).count(labels[g]) < 2]
    assert global_ids(val) == expected_val
    assert global_ids(train) == [g for g in range(30) if g not in expected_val]
    assert [val[i]["label"] for i in range(len(val))] == [int(labels[g]) for g in expected_val]
    item = test[3]
    assert set(item) == {"image", "label", "index"} and item["image"].shape == (3, 32, 32) and item["label"] == 3


def test_cifar10_resize_and_normalize(tmp_path):
    write_cifar10(tmp_path)
    config = DataConfig(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), input_size=(3, 64, 64))
    raw = create_dataset("cifar10", root=tmp_path, split="test", image_size=64)[0]["image"]
    normed = create_dataset("cifar10", root=tmp_path, split="test", image_size=64, normalize=config)[0]["image"]
    assert raw.shape == (3, 64, 64)
    assert torch.allclose(normed, (raw - 0.5) / 0.25)


def test_cifar10_refuses_pickles_that_reference_other_globals(tmp_path):
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match=r"posix.getcwd is not allowed|getcwd is not allowed"):
        create_dataset("cifar10", root=tmp_path, split="test")


def test_cifar10_missing_files(tmp_path):
    write_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError, match=r"missing \['data_batch_3'\][\s\S]*data_batch_1, data_batch_2[\s\S]*toronto"):
        create_dataset("cifar10", root=tmp_path, split="train")
    assert len(create_dataset("cifar10", root=tmp_path, split="test")) == 10  # the test split needs no training batch
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        create_dataset("cifar10", root=tmp_path / "none")


# ------------------------------------------------------------------------------------- Resize policy


def test_resize_policies_map_boxes_and_masks_consistently():
    from fixtures_datasets import square_image, square_mask

    square = (10, 4, 30, 16)
    img, mask = square_image(40, 20, square), square_mask(40, 20, square)
    for policy in (Resize(32, "stretch"), Resize(32, "center_crop", crop_pct=1.0)):
        image, resized = policy.image(img), policy.mask(mask)
        box = policy.box(square, 40, 20)
        # bilinear image and nearest mask agree away from the square's 1-pixel resampling border
        inner = torch.zeros_like(resized)
        x0, y0, x1, y1 = box.round().long().tolist()
        inner[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = True
        assert red(image)[inner].all() and resized[inner].all()
        assert (red(image) ^ resized).sum() <= 2 * (x1 - x0 + y1 - y0)
        assert torch.allclose(box, mask_box(resized), atol=1.0)
    assert torch.allclose(Resize(32, "stretch").box(square, 40, 20), torch.tensor([8.0, 6.4, 24.0, 25.6]))
    # center_crop, crop_pct=1: 40x20 -> 64x32, crop left = 16: the square (16..48, 6.4..25.6) is clipped
    expected = torch.tensor([0.0, 6.4, 32.0, 25.6])
    assert torch.allclose(Resize(32, "center_crop", crop_pct=1.0).box(square, 40, 20), expected)


# ------------------------------------------------------------------------------------------- Photos


def test_every_bundled_photo_loads_offline_with_a_box_inside_the_image():
    from timm.data import ImageNetInfo

    from reproduce.data.photos import photo_info, photo_names

    info = ImageNetInfo()
    names = photo_names()
    assert {"chelsea", "coffee", "astronaut", "rocket", "china", "flower", "grace_hopper"} <= set(names)
    ds = create_dataset("photos", image_size=64)
    assert ds.names == names and ds.num_classes == 1000
    for i, name in enumerate(names):
        entry, item = photo_info(name), ds[i]
        assert entry["label_name"] == info.index_to_description(entry["label"])
        x0, y0, x1, y1 = entry["box"]
        w, h = entry["size"]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert item["image"].shape == (3, 64, 64) and item["label"] == entry["label"]
        assert torch.allclose(item["box"], scaled(entry["box"], 64 / w, 64 / h))


def test_quokka_outline_mask_lies_in_its_box():
    from reproduce.data.photos import photo_names

    if "quokka" not in photo_names():
        pytest.skip("imgaug is not installed (pip install --no-deps imgaug==0.4.0)")
    ds = create_dataset("photos", masks=True, image_size=96)
    assert ds.names == ["quokka"] and ds.has_masks
    item = ds[0]
    tight, box = mask_box(item["mask"]), item["box"]
    assert torch.allclose(tight, box, atol=1.5)  # the polygon touches all four sides of its box
    assert 0.5 < item["mask"][int(box[1]) : int(box[3]), int(box[0]) : int(box[2])].float().mean() < 0.95
    with pytest.raises(ConfigError, match="no outline polygon"):
        create_dataset("photos", names=["chelsea"], masks=True)


def test_missing_imgaug_skips_the_quokka_with_a_warning(monkeypatch):
    import reproduce.data.photos as photos

    real = photos._package_dir
    monkeypatch.setattr(photos, "_package_dir", lambda package: None if package == "imgaug" else real(package))
    with pytest.warns(UserWarning, match=r"\['quokka'\] skipped.*pip install --no-deps imgaug==0.4.0"):
        ds = create_dataset("photos", image_size=32)
    assert "quokka" not in ds.names and len(ds.names) == 7
    with pytest.raises(DataError, match="pip install --no-deps imgaug"):
        create_dataset("photos", names=["quokka"])


def test_a_photo_that_changed_size_invalidates_its_box(monkeypatch):
    import reproduce.data.photos as photos

    catalogue = {name: dict(entry) for name, entry in photos._catalogue().items()}
    catalogue["coffee"]["size"] = [640, 480]
    monkeypatch.setattr(photos, "_catalogue", lambda: catalogue)
    with pytest.raises(DataError, match=r"'coffee'.*is 600x400.*drawn on a 640x480 image"):
        create_dataset("photos", names=["coffee"])[0]


def test_photo_errors():
    from reproduce.data.photos import load_photo

    with pytest.raises(ConfigError, match="Unknown photo 'dog'"):
        load_photo("dog", DataConfig((0.5,) * 3, (0.5,) * 3, (3, 224, 224)))
    with pytest.raises(InputError, match="model, a ModelAdapter or a DataConfig"):
        load_photo("chelsea", "imagenet")


def test_efficientnet_lite0_recognises_chelsea_and_coffee_through_the_loader():
    from reproduce.data.photos import load_photo, photo_info
    from reproduce.models import create_model

    model = create_model("efficientnet_lite0_imagenet").eval()
    batch = torch.cat([load_photo(name, model) for name in ("chelsea", "coffee")])
    assert batch.shape == (2, 3, 224, 224)
    with torch.no_grad():
        predicted = model(batch).argmax(1).tolist()
    assert predicted == [photo_info("chelsea")["label"], photo_info("coffee")["label"]] == [285, 967]


def test_every_dataset_read_from_disk_declares_its_layout_and_source():
    """The contract validation reads (class attributes, not module globals): every registered
    dataset with a ``root`` read from disk names its expected tree and where to get the data."""
    from reproduce.data.on_disk import OnDiskDataset
    from reproduce.data.registry import DATASETS, dataset_class

    on_disk = {n for n in DATASETS.names() if issubclass(dataset_class(n), OnDiskDataset)}
    assert on_disk == {"cifar10", "cub200", "imagenet9", "imagenet_val"}
    for name in on_disk:
        cls = dataset_class(name)
        assert cls.registry_name == name and "<root>" in cls.root_layout and "http" in cls.source
    with pytest.raises(DataError, match=r"(?s)no root given.*CUB_200_2011/.*caltech"):
        create_dataset("cub200", split="test")
