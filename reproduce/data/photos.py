"""Real photos that ship with installed packages, labelled with ImageNet-1k classes and boxes.

Nothing is downloaded: the files come from scikit-image (``chelsea``, ``coffee``, ``astronaut``,
``rocket``), scikit-learn (``china``, ``flower``: the files behind ``load_sample_images``),
matplotlib (``grace_hopper``, via ``cbook.get_sample_data``) and imgaug (``quokka``). imgaug is read
as files only (never imported: it is installed with ``pip install --no-deps imgaug==0.4.0`` and its
import needs old dependencies); without it the quokka is skipped with a warning.

Labels, boxes and notes live in ``assets/photos.json``: boxes are in pixels of the original image
(exclusive max) and are rescaled with the resize policy of :mod:`reproduce.data.on_disk`.
``approximate`` marks photos whose subject has no exact ImageNet-1k class (the note says which
class was chosen and why). The quokka's box and outline polygon come from imgaug's own
``quokka_annotations.json``; it is the only photo with a ``mask``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import warnings
from typing import Any

import torch
from torch import nn

from reproduce.data.base import ImageDataset
from reproduce.data.on_disk import Resize, polygon_mask, read_rgb
from reproduce.data.imagenet_val import imagenet_class_names
from reproduce.data.registry import register_dataset
from reproduce.errors import ConfigError, DataError, InputError
from reproduce.models.data_config import DataConfig, data_config_of

CATALOGUE = os.path.join(os.path.dirname(__file__), "assets", "photos.json")
INSTALL_HINT = {
    "skimage": "pip install scikit-image",
    "sklearn": "pip install scikit-learn",
    "matplotlib": "pip install matplotlib",
    "imgaug": "pip install --no-deps imgaug==0.4.0",
}


@functools.lru_cache(maxsize=1)
def _catalogue() -> dict[str, dict[str, Any]]:
    with open(CATALOGUE) as f:
        return json.load(f)["photos"]


def _entry(name: str) -> dict[str, Any]:
    photos = _catalogue()
    if name not in photos:
        raise ConfigError(f"Unknown photo {name!r}; the bundled photos are {list(photos)}.")
    return photos[name]


def _package_dir(package: str) -> str | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _file_path(name: str) -> str | None:
    entry = _entry(name)
    if entry["package"] == "matplotlib":
        if _package_dir("matplotlib") is None:
            return None
        from matplotlib import cbook

        return os.fspath(cbook.get_sample_data(entry["file"], asfileobj=False))
    base = _package_dir(entry["package"])
    return None if base is None else os.path.join(base, entry["file"])


def photo_path(name: str) -> str:
    """Path of a bundled photo; a DataError with the install command when its package is absent."""
    entry = _entry(name)
    path = _file_path(name)
    if path is None or not os.path.isfile(path):
        raise DataError(
            f"Photo {name!r} comes with the package {entry['package']!r} ({entry['file']}), which is not "
            f"installed or lacks the file: {INSTALL_HINT[entry['package']]}."
        )
    return path


def photo_names(available_only: bool = True) -> list[str]:
    """Names of the bundled photos, in catalogue order (by default only those installed here)."""
    names = list(_catalogue())
    if not available_only:
        return names
    return [n for n in names if (p := _file_path(n)) is not None and os.path.isfile(p)]


def _annotations(name: str) -> dict[str, Any] | None:
    entry = _entry(name)
    if "annotations" not in entry:
        return None
    path = os.path.join(os.path.dirname(photo_path(name)), entry["annotations"])
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot read the annotations of photo {name!r} at {path!r} ({err}).") from err


def photo_info(name: str) -> dict[str, Any]:
    """Catalogue entry with the resolved ``path``, ``box`` and (quokka) ``polygon`` [(x, y), ...]."""
    info = dict(_entry(name))
    info["path"] = photo_path(name)
    annotations = _annotations(name)
    if annotations is not None:
        b = annotations["bounding_boxes"][0]
        info["box"] = [b["x1"], b["y1"], b["x2"], b["y2"]]
        info["polygon"] = [(p["x"], p["y"]) for p in annotations["polygons"][0]["keypoints"]]
    return info


def _read(name: str) -> tuple[Any, dict[str, Any]]:
    info = photo_info(name)
    img = read_rgb(info["path"])
    if list(img.size) != list(info["size"]):
        raise DataError(
            f"Photo {name!r} at {info['path']!r} is {img.size[0]}x{img.size[1]}, but its box in photos.json was "
            f"drawn on a {info['size'][0]}x{info['size'][1]} image: the package changed the file; redraw the box."
        )
    return img, info


def _data_config(model_or_data_config: Any) -> DataConfig:
    if isinstance(model_or_data_config, DataConfig):
        return model_or_data_config
    if isinstance(getattr(model_or_data_config, "data_config", None), DataConfig):  # ModelAdapter
        return model_or_data_config.data_config
    if isinstance(model_or_data_config, nn.Module):
        return data_config_of(model_or_data_config)
    raise InputError(
        f"load_photo needs a model, a ModelAdapter or a DataConfig to normalise for, got "
        f"{type(model_or_data_config).__name__}."
    )


def load_photo(name: str, model_or_data_config: Any, size: int = 224, resize: str = "stretch") -> torch.Tensor:
    """Photo ``name`` as ``[1, 3, size, size]``, normalised with the model's mean/std."""
    config = _data_config(model_or_data_config)
    img, _ = _read(name)
    return config.normalize(Resize(size, resize).image(img)).unsqueeze(0)


@register_dataset("photos")
class Photos(ImageDataset):
    """The bundled photos as a dataset (labels are ImageNet-1k indices; every item has a ``box``).

    Args:
        names: photos to include; None = every installed photo (a missing imgaug skips the quokka
            with a warning).
        image_size, resize, crop_pct: resize policy of :mod:`reproduce.data.on_disk`.
        masks: add ``mask`` (the outline polygon); only photos with an outline qualify (the quokka),
            and ``names=None`` then selects those.
        normalize: the model's data config to return normalised images; [0, 1] when None.
    """

    num_classes = 1000
    has_boxes = True

    def __init__(
        self,
        names: list[str] | tuple[str, ...] | None = None,
        image_size: int = 224,
        resize: str = "stretch",
        crop_pct: float = 0.875,
        masks: bool = False,
        normalize: DataConfig | None = None,
    ):
        super().__init__(normalize)
        self.resizer = Resize(image_size, resize, crop_pct)
        self.image_size = image_size
        self.has_masks = bool(masks)
        if names is None:
            available = photo_names()
            skipped = [n for n in photo_names(available_only=False) if n not in available]
            if skipped:
                hints = sorted({INSTALL_HINT[_entry(n)["package"]] for n in skipped})
                warnings.warn(f"Photos {skipped} skipped: their packages are not installed ({'; '.join(hints)}).")
            names = [n for n in available if not masks or "annotations" in _entry(n)]
        if isinstance(names, str) or not names:
            raise ConfigError(f"names must be a non-empty list of photo names from {photo_names(False)}, got {names!r}.")
        for name in names:
            photo_path(name)  # unknown name or missing package: fail now, not at the first item
            if masks and "annotations" not in _entry(name):
                raise ConfigError(f"Photo {name!r} has no outline polygon, so masks=True cannot include it.")
        self.names = list(names)
        self.class_names = imagenet_class_names()

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img, info = _read(self.names[index])
        item: dict[str, Any] = {
            "image": self.resizer.image(img),
            "label": int(info["label"]),
            "index": index,
            "box": self.resizer.box(info["box"], img.width, img.height),
        }
        if self.has_masks:
            item["mask"] = self.resizer.mask(polygon_mask(info["polygon"], img.width, img.height))
        return self._finish(item)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "names": list(self.names), **self.resizer.describe()}
