"""ImageNet-9 (IN-9) from the Backgrounds Challenge (Xiao et al., ICLR 2021), split as in COMET.

Layout (``root`` is the folder that holds ``bg_challenge/`` and the training data)::

    <root>/
    ├── original/                         training data, original.tar.gz of the challenge README
    │   ├── train/00_dog/*.JPEG ... 08_fish/*.JPEG
    │   └── val/00_dog/*.JPEG ...   08_fish/*.JPEG
    └── bg_challenge/                     test sets, backgrounds_challenge_data.tar.gz (release v1.0)
        ├── original/val/<class>/*.JPEG
        ├── mixed_next/val/<class>/*.JPEG   (also mixed_rand, mixed_same, only_fg, no_fg,
        │                                    only_bg_b, only_bg_t)
        └── fg_mask/val/<class>/<image>.npy  binary foreground masks, one per test image

This is the layout read by the challenge's own scripts (``in9_eval.py`` reads
``<data-path>/<variation>/val``; ``challenge_eval.py`` pairs ``fg_mask/val/<class>/X.npy`` with
``original/val/<class>/X.JPEG``). The other training tarballs (``mixed_rand.tar.gz``, ...) unpack
to ``<variant>/train`` and ``<variant>/val`` beside ``original/`` and are read the same way;
``in9l`` (the larger IN-9L training set) is assumed to unpack to ``in9l/train`` and ``in9l/val``.

Splits (COMET): ``train`` = ``<variant>/train``, ``val`` = ``<variant>/val`` (both default to
``original``), ``test`` = ``bg_challenge/<variant>/val``. Test items carry ``mask`` (the foreground
mask, resized with nearest neighbour) and ``box`` (tight box of the resized mask). Masks are found
by file name: an image ``X.JPEG`` uses ``X.npy``; mixed images named
``fg_<foreground id>_bg_<background id>.JPEG`` use ``<foreground id>.npy`` (the foreground is pasted
at its original place, so ``mixed_next`` gets the same mask as ``original``). For the variants
without a foreground (``no_fg``, ``only_bg_b``, ``only_bg_t``) the mask marks where the removed
object was. The mixed-file naming is inferred from third-party loaders of this archive; plain
names (``X.JPEG`` in every variant) work too.

Labels: ``label_order="sorted"`` (default) = sorted folder order (00_dog = 0 ... 08_fish = 8);
``label_order="comet"`` = the ``os.listdir`` order of the COMET code, needed only to reuse its
checkpoints.
"""

from __future__ import annotations

import os
from typing import Any

from reproduce.checks import check_choice
from reproduce.data.on_disk import (
    OnDiskDataset,
    image_size_of,
    list_images,
    list_subfolders,
    load_npy_mask,
    mask_box,
    npy_shape,
)
from reproduce.data.registry import register_dataset
from reproduce.errors import DataError
from reproduce.models.data_config import DataConfig

CLASS_FOLDERS = (
    "00_dog",
    "01_bird",
    "02_wheeled vehicle",
    "03_reptile",
    "04_carnivore",
    "05_insect",
    "06_musical instrument",
    "07_primate",
    "08_fish",
)
# os.listdir order on the COMET authors' machine (research digest A6): label i = COMET_ORDER[i].
COMET_ORDER = (
    "06_musical instrument",
    "00_dog",
    "08_fish",
    "01_bird",
    "04_carnivore",
    "02_wheeled vehicle",
    "07_primate",
    "05_insect",
    "03_reptile",
)
TEST_VARIANTS = ("original", "mixed_next", "mixed_rand", "mixed_same", "only_fg", "no_fg", "only_bg_b", "only_bg_t")
TRAIN_VARIANTS = (*TEST_VARIANTS, "in9l")
SPLITS = ("train", "val", "test")
LABEL_ORDERS = ("sorted", "comet")

_SOURCE = (
    "https://github.com/MadryLab/backgrounds_challenge (test sets: release v1.0, "
    "backgrounds_challenge_data.tar.gz -> bg_challenge/; training data: the README's links, "
    "e.g. original.tar.gz -> original/train, original/val)"
)
_LAYOUT = """<root>/
├── original/train/00_dog/*.JPEG ... 08_fish/     (split="train")
├── original/val/00_dog/*.JPEG ... 08_fish/       (split="val")
└── bg_challenge/
    ├── <variant>/val/00_dog/*.JPEG ... 08_fish/  (split="test"; variant = original, mixed_next, ...)
    └── fg_mask/val/00_dog/<image>.npy ...        (2-D binary masks, same size as the images)
class folders: """ + ", ".join(CLASS_FOLDERS)


def foreground_id(file_name: str) -> str:
    """The original test image a (possibly mixed) IN-9 file shows the foreground of."""
    stem = os.path.splitext(file_name)[0]
    if stem.startswith("fg_") and "_bg_" in stem:
        return stem[len("fg_") : stem.index("_bg_")]
    return stem


@register_dataset("imagenet9")
class ImageNet9(OnDiskDataset):
    """ImageNet-9 / Backgrounds Challenge images; see the module docstring for layout and splits.

    Args:
        root: folder containing ``bg_challenge/`` (test) and ``original/`` (train/val).
        split: ``train``, ``val`` or ``test``.
        variant: ``original`` (default), ``mixed_next``, ``mixed_rand``, ``mixed_same``,
            ``only_fg``, ``no_fg``, ``only_bg_b``, ``only_bg_t`` (``in9l`` for train/val only).
        image_size: output side (the archive's images are 224x224).
        label_order: ``sorted`` (default) or ``comet``.
        resize, crop_pct: resize policy of :mod:`reproduce.data.on_disk`.
        normalize: the model's data config to return normalised images; [0, 1] when None.
    """

    num_classes = 9
    root_layout = _LAYOUT
    source = _SOURCE

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "test",
        variant: str = "original",
        image_size: int = 224,
        label_order: str = "sorted",
        resize: str = "stretch",
        crop_pct: float = 0.875,
        normalize: DataConfig | None = None,
    ):
        self.split = check_choice("split", split, SPLITS)
        self.variant = check_choice("variant", variant, TEST_VARIANTS if split == "test" else TRAIN_VARIANTS)
        self.label_order = check_choice("label_order", label_order, LABEL_ORDERS)
        super().__init__(root, image_size, resize, crop_pct, normalize)
        self.class_folders = list(COMET_ORDER if label_order == "comet" else CLASS_FOLDERS)
        self.class_names = [folder.split("_", 1)[1] for folder in self.class_folders]
        self.has_masks = self.has_boxes = split == "test"

        if split == "test":
            self.image_dir = os.path.join(self.root, "bg_challenge", variant, "val")
            self.mask_dir = os.path.join(self.root, "bg_challenge", "fg_mask", "val")
        else:
            self.image_dir = os.path.join(self.root, variant, split)
            self.mask_dir = None
        self.samples = self._scan_images()
        self.mask_paths = self._scan_masks(self.mask_dir) if self.mask_dir else []

    def _scan_images(self) -> list[tuple[str, int]]:
        where = os.path.relpath(self.image_dir, self.root)
        if not os.path.isdir(self.image_dir):
            raise self._error(f"split={self.split!r}, variant={self.variant!r} needs the folder {where}/, which is missing.")
        present = set(list_subfolders(self.image_dir))
        missing = [c for c in CLASS_FOLDERS if c not in present]
        unknown = sorted(present - set(CLASS_FOLDERS))
        if missing or unknown:
            raise self._error(
                f"{where}/ must hold exactly the 9 class folders; missing: {missing}, unexpected: {unknown}."
            )
        samples = []
        for label, folder in enumerate(self.class_folders):
            names = list_images(os.path.join(self.image_dir, folder))
            if not names:
                raise self._error(f"class folder {where}/{folder}/ holds no image files.")
            samples += [(os.path.join(self.image_dir, folder, n), label) for n in names]
        return samples

    def _scan_masks(self, mask_dir: str) -> list[str]:
        """One mask per test image, all 2-D with one shape that matches the images."""
        if not os.path.isdir(mask_dir):
            raise self._error("split='test' needs the foreground masks bg_challenge/fg_mask/val/, which is missing.")
        paths, missing, shapes = [], [], {}
        for image_path, _ in self.samples:
            folder = os.path.basename(os.path.dirname(image_path))
            path = os.path.join(mask_dir, folder, foreground_id(os.path.basename(image_path)) + ".npy")
            if not os.path.isfile(path):
                missing.append(os.path.relpath(path, self.root))
                continue
            paths.append(path)
            shapes.setdefault(npy_shape(path), []).append(os.path.relpath(path, self.root))
        if missing:
            raise self._error(f"{len(missing)} test images have no foreground mask, e.g. {missing[:3]}.")
        width, height = image_size_of(self.samples[0][0])
        bad = {s: p for s, p in shapes.items() if s != (height, width)}
        if bad:
            shape, files = next(iter(bad.items()))
            raise self._error(
                f"foreground masks must be 2-D arrays of the image size {height}x{width}; "
                f"{len(files)} have shape {shape}, e.g. {files[:3]}."
            )
        return paths

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        img, item = self._read_item(path, label, index)
        if self.mask_paths:
            raw = load_npy_mask(self.mask_paths[index])
            if raw.shape != (img.height, img.width):
                raise DataError(
                    f"Mask {self.mask_paths[index]!r} is {raw.shape[0]}x{raw.shape[1]} but its image {path!r} "
                    f"is {img.height}x{img.width}; re-extract bg_challenge/ from {self.source}."
                )
            item["mask"] = self.resizer.mask(raw)
            item["box"] = mask_box(item["mask"])
        return self._finish(item)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "split": self.split,
            "variant": self.variant,
            "label_order": self.label_order,
            "class_folders": list(self.class_folders),
        }
