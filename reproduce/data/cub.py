"""CUB-200-2011 (Wah et al. 2011): 200 bird species with boxes and, optionally, segmentations.

Layout (``root`` holds ``CUB_200_2011/``; ``root`` may also be ``CUB_200_2011`` itself)::

    <root>/CUB_200_2011/
    ├── images.txt               <image_id> <class folder>/<file>.jpg
    ├── image_class_labels.txt   <image_id> <class_id, 1-based>
    ├── train_test_split.txt     <image_id> <1 = train, 0 = test>
    ├── bounding_boxes.txt       <image_id> <x> <y> <width> <height>   (original pixels)
    ├── classes.txt              <class_id> <class folder>
    └── images/<class folder>/<file>.jpg
    <root>/segmentations/<class folder>/<file>.png    optional, the separate segmentations.tgz,
                                                     beside CUB_200_2011/ (or inside it)

Splits: the official ``train`` (5,994 images) and ``test`` (5,794). Label = class_id - 1.
Items carry ``box`` (the bird's box rescaled to the resized image) and, only when the segmentation
folder exists, ``mask`` = segmentation >= ``mask_threshold`` * 255 (the PNGs are soft: the average
of several annotators).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from reproduce.checks import check_choice
from reproduce.data.on_disk import OnDiskDataset
from reproduce.data.registry import register_dataset
from reproduce.errors import ConfigError, DataError
from reproduce.models.data_config import DataConfig

_SOURCE = (
    "https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz; segmentations.tgz for "
    "masks; mirror https://data.caltech.edu/records/65de6-vzc57)"
)
_LAYOUT = """<root>/CUB_200_2011/
├── images.txt, image_class_labels.txt, train_test_split.txt, bounding_boxes.txt, classes.txt
└── images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg ...
<root>/segmentations/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.png ... (optional)"""
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")
SPLITS = ("train", "test")


def _read_table(path: str, columns: int) -> dict[int, list[str]]:
    """``<id> <v1> ... <v{columns-1}>`` lines -> {id: [v1, ...]}; a DataError naming the bad line."""
    out: dict[int, list[str]] = {}
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                key = int(parts[0])
            except (ValueError, IndexError):
                key = -1
            if len(parts) != columns or key < 0:
                raise DataError(
                    f"{path!r} line {line_no}: expected {columns} space-separated fields starting with an "
                    f"integer id, got {line.rstrip()!r}."
                )
            out[key] = parts[1:]
    return out


def _segmentation_file(folder: str, rel: str) -> str:
    """The segmentation mask of image ``rel`` (``<class>/<name>.jpg``) in ``folder``."""
    return os.path.join(folder, os.path.splitext(rel)[0] + ".png")


@register_dataset("cub200")
class CUB200(OnDiskDataset):
    """CUB-200-2011 (see the module docstring for layout, splits, boxes and masks).

    Args:
        root: folder containing ``CUB_200_2011/`` (or that folder itself).
        split: ``train`` or ``test``.
        image_size, resize, crop_pct: resize policy of :mod:`reproduce.data.on_disk`.
        mask_threshold: fraction of 255 at which a soft segmentation pixel counts as bird.
        normalize: the model's data config to return normalised images; [0, 1] when None.
    """

    has_boxes = True
    root_layout = _LAYOUT
    source = _SOURCE

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "test",
        image_size: int = 224,
        resize: str = "stretch",
        crop_pct: float = 0.875,
        mask_threshold: float = 0.5,
        normalize: DataConfig | None = None,
    ):
        self.split = check_choice("split", split, SPLITS)
        if not (isinstance(mask_threshold, (int, float)) and 0 < mask_threshold <= 1):
            raise ConfigError(f"mask_threshold must be in (0, 1], got {mask_threshold!r}.")
        self.mask_threshold = float(mask_threshold)
        super().__init__(root, image_size, resize, crop_pct, normalize)
        base = os.path.join(self.root, "CUB_200_2011")
        self.base = base if os.path.isdir(base) else self.root
        missing = [f for f in (*FILES, "images") if not os.path.exists(os.path.join(self.base, f))]
        if len(missing) == len(FILES) + 1 and self.base == self.root:
            raise self._error(f"root holds no CUB_200_2011/ folder (and is not one itself): {self.root!r}.")
        if missing:
            raise self._error(f"missing {missing} in {self.base!r}.")

        tables = {f: _read_table(os.path.join(self.base, f), n) for f, n in zip(FILES, (2, 2, 2, 5, 2))}
        classes = tables["classes.txt"]
        if sorted(classes) != list(range(1, len(classes) + 1)):
            raise self._error("classes.txt must number the classes 1..K without gaps.")
        self.num_classes = len(classes)
        self.class_folders = [classes[k][0] for k in range(1, self.num_classes + 1)]
        self.class_names = [folder.split(".", 1)[-1].replace("_", " ") for folder in self.class_folders]

        ids = set(tables["images.txt"])
        for name in FILES[1:4]:
            if set(tables[name]) != ids:
                raise self._error(f"{name} does not list the same image ids as images.txt.")
        want = "1" if split == "train" else "0"
        self.samples: list[tuple[str, int]] = []
        self.boxes: list[tuple[float, float, float, float]] = []
        self.relpaths: list[str] = []
        for image_id in sorted(ids):
            if tables["train_test_split.txt"][image_id][0] != want:
                continue
            label = int(tables["image_class_labels.txt"][image_id][0]) - 1
            if not 0 <= label < self.num_classes:
                raise self._error(f"image {image_id} has class id {label + 1}, outside classes.txt.")
            x, y, w, h = (float(v) for v in tables["bounding_boxes.txt"][image_id])
            rel = tables["images.txt"][image_id][0]
            self.relpaths.append(rel)
            self.samples.append((os.path.join(self.base, "images", rel), label))
            self.boxes.append((x, y, x + w, y + h))
        if not self.samples:
            raise self._error(f"train_test_split.txt marks no image as {split} ({want}).")
        absent = [rel for (path, _), rel in zip(self.samples, self.relpaths) if not os.path.isfile(path)]
        if absent:
            raise self._error(f"{len(absent)} images listed in images.txt are missing under images/, e.g. {absent[:3]}.")

        self.segmentation_dir = self._segmentation_folder()
        self.has_masks = self.segmentation_dir is not None

    def _segmentation_folder(self) -> str | None:
        """The ``segmentations/`` folder beside or inside ``CUB_200_2011/`` (None without one), checked
        to hold a mask for every image of the split."""
        beside, inside = os.path.join(os.path.dirname(self.base), "segmentations"), os.path.join(self.base, "segmentations")
        folder = next((d for d in (beside, inside) if os.path.isdir(d)), None)
        if folder is None:
            return None
        absent = [rel for rel in self.relpaths if not os.path.isfile(_segmentation_file(folder, rel))]
        if absent:
            raise self._error(
                f"the segmentation folder {folder!r} exists but lacks {len(absent)} masks, "
                f"e.g. {[os.path.splitext(r)[0] + '.png' for r in absent[:3]]}."
            )
        return folder

    def _segmentation_path(self, rel: str) -> str:
        assert self.segmentation_dir is not None
        return _segmentation_file(self.segmentation_dir, rel)

    def __len__(self) -> int:
        return len(self.samples)

    def _read_mask(self, index: int, width: int, height: int) -> np.ndarray:
        path = self._segmentation_path(self.relpaths[index])
        try:
            with Image.open(path) as seg:
                grey = np.array(seg.convert("L"))
        except OSError as err:
            raise DataError(f"Cannot decode segmentation {path!r} ({err}); re-extract segmentations.tgz.") from err
        if grey.shape != (height, width):
            raise DataError(
                f"Segmentation {path!r} is {grey.shape[0]}x{grey.shape[1]} but its image is {height}x{width}; "
                f"re-extract segmentations.tgz from {self.source}."
            )
        return grey >= self.mask_threshold * 255

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        img, item = self._read_item(path, label, index)
        item["box"] = self.resizer.box(self.boxes[index], img.width, img.height)
        if self.has_masks:
            item["mask"] = self.resizer.mask(self._read_mask(index, img.width, img.height))
        return self._finish(item)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "split": self.split,
            "mask_threshold": self.mask_threshold if self.has_masks else None,
        }
