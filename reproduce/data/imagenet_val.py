"""The ImageNet-1k (ILSVRC2012) validation set, labelled with the standard 1000-class index.

Accepted layouts (``root`` is the folder named below)::

    <root>/n01440764/*.JPEG ... n15075141/*.JPEG      "val prepared as ImageFolder" (any subset
                                                      of the 1000 wnid folders)
    <root>/ILSVRC2012_val_*.JPEG + LOC_val_solution.csv    flat, labels from the CSV
    <root>/LOC_val_solution.csv + <root>/ILSVRC/Data/CLS-LOC/val/*.JPEG   Kaggle download

The class index is the position of the wnid in the sorted list of the 1000 ILSVRC2012 wnids, the
index every pretrained ImageNet model uses; the wnids and class names come from timm's bundled
``ImageNetInfo`` (offline). ``num_classes`` is always 1000, so a subset of class folders keeps the
labels of pretrained models.

Boxes: when ``LOC_val_solution.csv`` is available (always for the flat layouts; for the
ImageFolder layout pass ``solution_csv=``), items carry ``box`` = the box enclosing all boxes of the
image's own class and ``mask`` = the union of those boxes (a box-level, not pixel-level, mask).
CSV coordinates are taken as ``x0 y0 x1 y1`` pixels of the original image.
"""

from __future__ import annotations

import csv
import functools
import os
import re
from typing import Any

from timm.data import ImageNetInfo

from reproduce.data.on_disk import OnDiskDataset, boxes_mask, list_images, list_subfolders
from reproduce.data.registry import register_dataset
from reproduce.errors import DataError
from reproduce.models.data_config import DataConfig

_SOURCE = (
    "https://image-net.org/download.php (ILSVRC2012 validation images; sort them into wnid folders "
    "with the devkit labels) or https://www.kaggle.com/c/imagenet-object-localization-challenge "
    "(ILSVRC/Data/CLS-LOC/val + LOC_val_solution.csv)"
)
_LAYOUT = """<root>/n01440764/ILSVRC2012_val_00000293.JPEG ...   (ImageFolder: one folder per wnid)
  or <root>/ILSVRC2012_val_00000001.JPEG ... + <root>/LOC_val_solution.csv
  or <root>/LOC_val_solution.csv + <root>/ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_*.JPEG
LOC_val_solution.csv: header ImageId,PredictionString; rows
  ILSVRC2012_val_00000001,n01751748 x0 y0 x1 y1 [n01751748 x0 y0 x1 y1 ...]"""
WNID = re.compile(r"^n\d{8}$")
KAGGLE_VAL = os.path.join("ILSVRC", "Data", "CLS-LOC", "val")
CSV_NAME = "LOC_val_solution.csv"


@functools.lru_cache(maxsize=1)
def _imagenet_info() -> tuple[tuple[str, ...], tuple[str, ...]]:
    info = ImageNetInfo()  # reads timm's bundled synset files: offline
    names = tuple(info.index_to_description(i) for i in range(info.num_classes()))
    return tuple(info.label_names()), names


def imagenet_wnids() -> list[str]:
    """The 1000 ILSVRC2012 wnids in class-index order (sorted), from timm's bundled files."""
    return list(_imagenet_info()[0])


def imagenet_class_names() -> list[str]:
    """Human-readable names of the 1000 classes, in class-index order (e.g. 285 = Egyptian cat)."""
    return list(_imagenet_info()[1])


def read_solution_csv(path: str) -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
    """``LOC_val_solution.csv`` -> {image id: [(wnid, (x0, y0, x1, y1)), ...]}."""
    out: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as err:
        raise DataError(f"Cannot read {path!r} ({err}).") from err
    if not rows or [c.strip() for c in rows[0][:2]] != ["ImageId", "PredictionString"]:
        raise DataError(f"{path!r} must start with the header 'ImageId,PredictionString'.")
    for line, row in enumerate(rows[1:], start=2):
        tokens = row[1].split() if len(row) > 1 else []
        if len(row) < 2 or not tokens or len(tokens) % 5:
            raise DataError(f"{path!r} line {line}: expected 'ImageId,wnid x0 y0 x1 y1 ...', got {row!r}.")
        try:
            out[row[0].strip()] = [
                (tokens[i], tuple(float(v) for v in tokens[i + 1 : i + 5]))  # type: ignore[misc]
                for i in range(0, len(tokens), 5)
            ]
        except ValueError as err:
            raise DataError(f"{path!r} line {line}: box coordinates must be numbers ({err}).") from err
    return out


@register_dataset("imagenet_val")
class ImageNetVal(OnDiskDataset):
    """ILSVRC2012 validation images (see the module docstring for layouts, labels and boxes).

    Args:
        root: the image folder (ImageFolder or flat) or the Kaggle download folder.
        image_size, resize, crop_pct: resize policy of :mod:`reproduce.data.on_disk`;
            ``resize="center_crop"`` reproduces the usual 256 -> 224 evaluation crop.
        solution_csv: ``LOC_val_solution.csv`` for boxes (found automatically beside flat images).
        normalize: the model's data config to return normalised images; [0, 1] when None.
    """

    num_classes = 1000
    root_layout = _LAYOUT
    source = _SOURCE

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        image_size: int = 224,
        resize: str = "stretch",
        crop_pct: float = 0.875,
        solution_csv: str | os.PathLike | None = None,
        normalize: DataConfig | None = None,
    ):
        super().__init__(root, image_size, resize, crop_pct, normalize)
        wnids = imagenet_wnids()
        self.wnids = wnids
        self.class_names = imagenet_class_names()
        index = {w: i for i, w in enumerate(wnids)}

        folders = list_subfolders(self.root)
        csv_path = os.fspath(solution_csv) if solution_csv else None
        if any(WNID.match(f) for f in folders):
            self.layout = "image_folder"
            self.samples = self._scan_folders(folders, index)
        else:
            image_dir = self.root
            if not list_images(image_dir) and os.path.isdir(os.path.join(self.root, KAGGLE_VAL)):
                image_dir = os.path.join(self.root, KAGGLE_VAL)
                self.layout = "kaggle"
            else:
                self.layout = "flat"
            names = list_images(image_dir)
            if not names:
                raise self._error(f"found neither wnid folders nor ILSVRC2012_val_*.JPEG files in {image_dir!r}.")
            csv_path = csv_path or os.path.join(self.root, CSV_NAME)
            if not os.path.isfile(csv_path):
                raise self._error(
                    f"the images are not in wnid folders, so their labels must come from {csv_path!r}, which is missing."
                )
            self.samples = [(os.path.join(image_dir, n), -1) for n in names]
        if csv_path and not os.path.isfile(csv_path):
            raise self._error(f"solution_csv {csv_path!r} does not exist.")
        self.boxes = self._attach_csv(read_solution_csv(csv_path), index) if csv_path else []
        self.has_boxes = self.has_masks = csv_path is not None

    def _scan_folders(self, folders: list[str], index: dict[str, int]) -> list[tuple[str, int]]:
        unknown = [f for f in folders if f not in index]
        if unknown:
            raise self._error(f"folders {unknown[:5]} are not ImageNet-1k wnids (n########).")
        samples = []
        for wnid in folders:
            names = list_images(os.path.join(self.root, wnid))
            if not names:
                raise self._error(f"class folder {wnid}/ holds no image files.")
            samples += [(os.path.join(self.root, wnid, n), index[wnid]) for n in names]
        return samples

    def _attach_csv(
        self, solution: dict[str, list[tuple[str, tuple[float, float, float, float]]]], index: dict[str, int]
    ) -> list[list[tuple[float, float, float, float]]]:
        """Labels (flat layouts) and own-class boxes of every image from the solution CSV."""
        boxes, missing = [], []
        for i, (path, label) in enumerate(self.samples):
            image_id = os.path.splitext(os.path.basename(path))[0]
            rows = solution.get(image_id)
            if rows is None:
                missing.append(image_id)
                continue
            if label < 0:
                if rows[0][0] not in index:
                    raise self._error(f"the CSV labels {image_id} with {rows[0][0]!r}, not an ImageNet-1k wnid.")
                label = index[rows[0][0]]
                self.samples[i] = (path, label)
            own = [box for wnid, box in rows if wnid == self.wnids[label]]
            if not own:
                raise self._error(f"the CSV has no {self.wnids[label]} box for {image_id} (folder label).")
            boxes.append(own)
        if missing:
            raise self._error(f"{len(missing)} images have no row in the solution CSV, e.g. {missing[:3]}.")
        return boxes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        img, item = self._read_item(path, label, index)
        if self.boxes:
            own = self.boxes[index]
            enclosing = (min(b[0] for b in own), min(b[1] for b in own), max(b[2] for b in own), max(b[3] for b in own))
            item["mask"] = self.resizer.mask(boxes_mask(own, img.width, img.height))
            item["box"] = self.resizer.box(enclosing, img.width, img.height)
        return self._finish(item)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layout": self.layout}
