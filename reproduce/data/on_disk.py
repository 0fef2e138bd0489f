"""What the real-data loaders share: the base class of datasets read from an official layout on disk
(:class:`OnDiskDataset`), decoding with PIL, one resize policy for images, masks and boxes, and
layout errors that show the expected tree.

A dataset read from disk declares its contract as class attributes: ``root_layout`` (the tree
expected under ``root``, shown in every layout error) and ``source`` (where to get the data). The
configuration check (:mod:`reproduce.runtime.validation`) reads them to refuse a missing root before
any work.

Resize policy (``resize=`` of every loader):

- ``"stretch"`` (default): the whole image is resized to ``size x size`` (bilinear, antialiased by
  PIL when shrinking); the aspect ratio is not kept, so every ground-truth pixel stays in frame and
  a box maps by ``x * size / width``, ``y * size / height``.
- ``"center_crop"``: the short side is resized to ``round(size / crop_pct)`` (timm/torchvision
  evaluation: 256 -> 224 for ``crop_pct=0.875``), then the central ``size x size`` is cut out.
  Boxes are clipped to the crop and can become empty (zero width or height) when the object lies
  outside it.

Masks are resized with nearest neighbour on the same geometry. Box convention: float
``(x0, y0, x1, y1)`` in pixels of the resized image, exclusive max.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from reproduce.checks import check_choice
from reproduce.data.base import ImageDataset
from reproduce.errors import ConfigError, DataError
from reproduce.models.data_config import DataConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
RESIZE_MODES = ("stretch", "center_crop")


def layout_error(dataset: str, problem: str, root: str | os.PathLike, tree: str, source: str) -> DataError:
    """One error for every malformed root: what is wrong, the tree that was expected, where to get it."""
    return DataError(
        f"{dataset}: {problem}\n"
        f"Expected this layout under root={str(root)!r}:\n{tree.rstrip()}\n"
        f"Get the data from {source}"
    )


def require_root(dataset: str, root: str | os.PathLike | None, tree: str, source: str) -> str:
    """The root as a string, or a :func:`layout_error` when it is not given or is not a folder."""
    if root is None or root == "":
        raise layout_error(dataset, "no root given: pass root=<folder>.", "<root>", tree, source)
    path = os.fspath(root)
    if not os.path.isdir(path):
        raise layout_error(dataset, f"root folder {path!r} does not exist.", path, tree, source)
    return path


def check_image_size(image_size: object) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer (e.g. 224), got {image_size!r}.")
    return image_size


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str) -> list[str]:
    """Sorted image file names in ``folder`` (hidden files and other extensions ignored)."""
    return sorted(n for n in os.listdir(folder) if is_image_file(n) and os.path.isfile(os.path.join(folder, n)))


def list_subfolders(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and os.path.isdir(os.path.join(folder, n)))


def read_rgb(path: str) -> Image.Image:
    """Decode an image file fully into RGB; a corrupt or unreadable file is a DataError naming it."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: PIL is lazy and would fail later, deep inside a transform
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(
            f"Cannot decode image file {path!r} ({type(err).__name__}: {err}). The file is corrupt or "
            "truncated: re-extract it from the dataset archive or delete it from the folder."
        ) from err


def image_size_of(path: str) -> tuple[int, int]:
    """(width, height) from the file header only; a DataError naming the file when unreadable."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"Cannot read the header of image file {path!r} ({err}); the file is corrupt.") from err


def npy_shape(path: str) -> tuple[int, ...]:
    """Shape stored in a ``.npy`` header, read without loading (or unpickling) the array."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(f)
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot read the .npy mask file {path!r} ({err}); the file is corrupt.") from err
    return tuple(int(s) for s in shape)


def load_npy_mask(path: str) -> np.ndarray:
    """A 2-D boolean mask from a ``.npy`` file (nonzero = foreground); never unpickles."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot load the .npy mask file {path!r} ({err}); the file is corrupt.") from err
    if array.ndim != 2:
        raise DataError(f"Mask file {path!r} has shape {array.shape}; a 2-D [H, W] mask is expected.")
    return array != 0


@dataclass(frozen=True)
class Resize:
    """The geometry that maps an original image, its masks and its boxes to ``size x size``."""

    size: int
    mode: str = "stretch"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        check_image_size(self.size)
        check_choice("resize", self.mode, RESIZE_MODES)
        if not (isinstance(self.crop_pct, (int, float)) and 0 < self.crop_pct <= 1):
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct!r} (0.875 = resize 256, crop 224).")

    def _plan(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(resized width, resized height, crop left, crop top)."""
        if self.mode == "stretch":
            return self.size, self.size, 0, 0
        short = round(self.size / self.crop_pct)
        scale = short / min(width, height)
        new_w, new_h = max(self.size, round(width * scale)), max(self.size, round(height * scale))
        return new_w, new_h, (new_w - self.size) // 2, (new_h - self.size) // 2

    def _apply(self, img: Image.Image, resample: Image.Resampling) -> Image.Image:
        new_w, new_h, left, top = self._plan(*img.size)
        if img.size != (new_w, new_h):
            img = img.resize((new_w, new_h), resample)
        if (new_w, new_h) != (self.size, self.size):
            img = img.crop((left, top, left + self.size, top + self.size))
        return img

    def image(self, img: Image.Image) -> torch.Tensor:
        """RGB PIL image -> float ``[3, size, size]`` in [0, 1]."""
        # NumPy for the conversion: a per-item torch op costs more than the decode in loader workers.
        out = np.asarray(self._apply(img, Image.Resampling.BILINEAR), dtype=np.float32) / np.float32(255.0)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))

    def mask(self, mask: np.ndarray) -> torch.Tensor:
        """Boolean ``[h, w]`` mask of the original image -> bool ``[size, size]`` (nearest)."""
        img = Image.fromarray(mask.astype(np.uint8) * 255)
        return torch.from_numpy(np.asarray(self._apply(img, Image.Resampling.NEAREST)) > 127)

    def box(self, box: Sequence[float], width: int, height: int) -> torch.Tensor:
        """``(x0, y0, x1, y1)`` in original pixels -> float ``[4]`` in resized pixels, clipped."""
        new_w, new_h, left, top = self._plan(width, height)
        sx, sy = new_w / width, new_h / height
        x0, y0, x1, y1 = (float(v) for v in box)
        out = torch.tensor([x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top], dtype=torch.float32)
        return out.clamp_(0.0, float(self.size))

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"image_size": self.size, "resize": self.mode}
        if self.mode == "center_crop":
            out["crop_pct"] = self.crop_pct
        return out


def mask_box(mask: torch.Tensor) -> torch.Tensor:
    """Tight float box ``(x0, y0, x1, y1)`` (exclusive max) of a bool ``[H, W]`` mask; zeros if empty.

    Computed in NumPy on the CPU: it runs once per item in data loading, where small torch ops
    cost milliseconds each on a busy CPU.
    """
    m = mask.detach().cpu().numpy()
    cols, rows = np.flatnonzero(m.any(0)), np.flatnonzero(m.any(1))
    if cols.size == 0:
        return torch.zeros(4)
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


def polygon_mask(points: Sequence[tuple[float, float]], width: int, height: int) -> np.ndarray:
    """Bool ``[height, width]`` mask of a polygon given in pixel coordinates (filled with PIL)."""
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in points], fill=255, outline=255)
    return np.array(img) > 0


def boxes_mask(boxes: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """Bool ``[height, width]`` union of boxes ``(x0, y0, x1, y1)`` (exclusive max, clipped)."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        c1, r1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
        mask[r0:r1, c0:c1] = True
    return mask


class OnDiskDataset(ImageDataset):
    """A dataset read from an official layout under ``root`` (CIFAR-10, CUB, ImageNet-9, ImageNet val).

    Subclasses set ``root_layout`` and ``source`` (see the module docstring); the registry sets
    ``registry_name``. The constructor checks the root and builds the resize policy, so a subclass
    starts from a root that exists.
    """

    registry_name: ClassVar[str] = ""
    root_layout: ClassVar[str] = ""
    source: ClassVar[str] = ""

    def __init__(self, root: str | os.PathLike | None, image_size: int, resize: str = "stretch",
                 crop_pct: float = 0.875, normalize: DataConfig | None = None):
        super().__init__(normalize)
        self.resizer = Resize(image_size, resize, crop_pct)
        self.image_size = image_size
        self.root = require_root(self.registry_name, root, self.root_layout, self.source)

    def _error(self, problem: str) -> DataError:
        """A :func:`layout_error` for this dataset's root."""
        return layout_error(self.registry_name, problem, self.root, self.root_layout, self.source)

    def _read_item(self, path: str, label: int, index: int) -> tuple[Image.Image, dict[str, Any]]:
        """The decoded file and the item's head (resized image, label, index); the caller adds its
        ground truth from the decoded image's size and returns ``self._finish(item)``."""
        img = read_rgb(path)
        return img, {"image": self.resizer.image(img), "label": label, "index": index}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": self.root, **self.resizer.describe()}
