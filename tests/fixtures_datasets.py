"""Tiny copies of the real datasets' on-disk layouts, written into a tmp folder at test time.

Every image is a flat background with one coloured square; the square is also written as the
dataset's own ground truth (IN-9 ``.npy`` mask, CUB box + segmentation PNG, ImageNet CSV box), so a
test can check that masks and boxes land on the square after resizing. Nothing binary is committed.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from reproduce.data.imagenet9 import CLASS_FOLDERS

RED = (230, 20, 20)


def square_image(width: int, height: int, square: tuple[int, int, int, int], background=(20, 60, 200)) -> Image.Image:
    """RGB image of ``background`` with a red ``square`` = (x0, y0, x1, y1), exclusive max."""
    array = np.empty((height, width, 3), dtype=np.uint8)
    array[:] = background
    x0, y0, x1, y1 = square
    array[y0:y1, x0:x1] = RED
    return Image.fromarray(array)


def square_mask(width: int, height: int, square: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = square
    mask[y0:y1, x0:x1] = True
    return mask


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpeg", ".jpg"):
        img.save(path, quality=98, subsampling=0)
    else:
        img.save(path)


def in9_square(label: int, i: int) -> tuple[int, int, int, int]:
    """The foreground square of test image ``i`` of class ``label`` in a 32x32 IN-9 fixture."""
    x0, y0 = 2 + 2 * label, 4 + 6 * i
    return (x0, y0, x0 + 12, y0 + 10)


def write_imagenet9(
    root: Path, per_class: int = 2, size: int = 32, variants: tuple[str, ...] = ("original", "mixed_next")
) -> Path:
    """IN-9 layout: original/{train,val}/<class>/, bg_challenge/<variant>/val/<class>/, fg_mask.

    Test image ``n0{label}_{i}`` has its square at :func:`in9_square`; in ``mixed_next`` the same
    foreground sits on the (green) background of the next class's image, file
    ``fg_<id>_bg_<next id>.JPEG``.
    """
    for split in ("train", "val"):
        for label, folder in enumerate(CLASS_FOLDERS):
            for i in range(per_class):
                img = square_image(size, size, in9_square(label, i))
                _save(img, root / "original" / split / folder / f"n0{label}_{split}{i}.JPEG")
    bg = root / "bg_challenge"
    for label, folder in enumerate(CLASS_FOLDERS):
        for i in range(per_class):
            image_id, square = f"n0{label}_{i}", in9_square(label, i)
            mask_dir = bg / "fg_mask" / "val" / folder
            mask_dir.mkdir(parents=True, exist_ok=True)
            np.save(mask_dir / f"{image_id}.npy", square_mask(size, size, square))
            for variant in variants:
                if variant.startswith("mixed"):
                    next_id = f"n0{(label + 1) % 9}_{i}"
                    name, background = f"fg_{image_id}_bg_{next_id}.JPEG", (30, 160, 40)
                else:
                    name, background = f"{image_id}.JPEG", (20, 60, 200)
                _save(square_image(size, size, square, background), bg / variant / "val" / folder / name)
    return root


IMAGENET_WNIDS = {"n01440764": 0, "n02124075": 285, "n07920052": 967}  # tench, Egyptian cat, espresso


def imagenet_square(k: int) -> tuple[int, int, int, int]:
    return (4 + 3 * k, 6 + 2 * k, 24 + 3 * k, 18 + 2 * k)


def write_imagenet_val(root: Path, layout: str = "image_folder", width: int = 40, height: int = 30) -> list[dict]:
    """ILSVRC2012 val in one of the three layouts; one 40x30 image per wnid of IMAGENET_WNIDS.

    Each CSV row has the image's own-class box (the square), a second own-class box at the top
    left and a box of another class that a loader must ignore. Returns the written records.
    """
    records = []
    image_dir = root / os.path.join("ILSVRC", "Data", "CLS-LOC", "val") if layout == "kaggle" else root
    lines = ["ImageId,PredictionString"]
    for k, (wnid, index) in enumerate(IMAGENET_WNIDS.items()):
        image_id = f"ILSVRC2012_val_{k + 1:08d}"
        square = imagenet_square(k)
        folder = image_dir / wnid if layout == "image_folder" else image_dir
        _save(square_image(width, height, square), folder / f"{image_id}.JPEG")
        extra = (0, 0, 3, 3)
        lines.append(
            f"{image_id},{wnid} {' '.join(map(str, square))} {wnid} {' '.join(map(str, extra))} "
            f"n09999999 30 20 40 30"
        )
        records.append({"id": image_id, "wnid": wnid, "label": index, "square": square, "extra": extra})
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return records


CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")


def cub_square(image_id: int) -> tuple[int, int, int, int]:
    return (3 + image_id, 5, 21 + image_id, 20)


def write_cub(root: Path, per_class: int = 2, segmentations: bool = True, width: int = 40, height: int = 30) -> Path:
    """CUB_200_2011 metadata files, images/, and (optionally) segmentations/ with 3 classes.

    Image ids alternate train (odd) / test (even); the box and segmentation are the red square.
    """
    base = root / "CUB_200_2011"
    images, labels, split, boxes = [], [], [], []
    image_id = 0
    for c, folder in enumerate(CUB_CLASSES, start=1):
        for i in range(per_class):
            image_id += 1
            rel = f"{folder}/{folder.split('.', 1)[1]}_{i:04d}_{image_id}.jpg"
            x0, y0, x1, y1 = cub_square(image_id)
            _save(square_image(width, height, (x0, y0, x1, y1)), base / "images" / rel)
            if segmentations:
                seg = (square_mask(width, height, (x0, y0, x1, y1)) * 255).astype(np.uint8)
                seg[y0, x0:x1] = 102  # a soft edge (2 of 5 annotators) below the 0.5 threshold
                _save(Image.fromarray(seg), root / "segmentations" / (rel[:-4] + ".png"))
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {image_id % 2}")
            boxes.append(f"{image_id} {x0}.0 {y0}.0 {x1 - x0}.0 {y1 - y0}.0")
    (base / "classes.txt").write_text("\n".join(f"{c} {f}" for c, f in enumerate(CUB_CLASSES, start=1)) + "\n")
    for name, rows in (
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
    ):
        (base / name).write_text("\n".join(rows) + "\n")
    return root


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_labels(total: int, seed: int = 0) -> np.ndarray:
    """A shuffled label sequence (classes not in blocks), as in the real batches."""
    return np.random.default_rng(seed).permutation(np.arange(total) % 10)


def cifar_image(index: int) -> np.ndarray:
    """[3072] uint8 CIFAR row whose first red pixel encodes ``index`` (index < 256)."""
    row = np.full(3072, 128, dtype=np.uint8)
    row[0] = index
    return row


def write_cifar10(root: Path, per_batch: int = 6, test_size: int = 10) -> Path:
    """cifar-10-batches-py/ with 5 training batches of ``per_batch`` images and a test batch.

    Training image ``g`` (global order over data_batch_1..5) has label ``cifar_labels(5 * per_batch)[g]``
    and red value ``g`` at pixel (0, 0). Pickled like the official files: dicts with bytes keys.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    labels = cifar_labels(5 * per_batch)
    for b in range(5):
        ids = range(b * per_batch, (b + 1) * per_batch)
        batch = {
            b"batch_label": f"training batch {b + 1} of 5".encode(),
            b"labels": [int(labels[g]) for g in ids],
            b"data": np.stack([cifar_image(g) for g in ids]),
            b"filenames": [f"img_{g}.png".encode() for g in ids],
        }
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump(batch, f, protocol=2)
    test = {b"labels": [g % 10 for g in range(test_size)], b"data": np.stack([cifar_image(g) for g in range(test_size)])}
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(test, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}, f, protocol=2)
    return root
