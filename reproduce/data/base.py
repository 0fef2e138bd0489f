"""What every dataset in ``reproduce.data`` returns, so models, metrics and runners can rely on it.

An item is a dict:

- ``image``: float tensor ``[3, H, W]``; in [0, 1], or in the model's normalised space when the
  dataset was built with ``normalize=model_data_config``;
- ``label``: int class index; ``index``: int position in the split;
- ``mask`` (datasets with localisation ground truth): bool ``[H, W]``, the discriminative evidence;
- ``parts`` (two-part data): bool ``[P, H, W]``, one mask per part;
- ``box`` (datasets with boxes): float ``[4]`` = (x0, y0, x1, y1) in pixels, exclusive max.

Keys are constant within a dataset (``has_masks``/``has_parts``/``has_boxes`` say which exist), so
the default collate works.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from reproduce.models.data_config import DataConfig


class ImageDataset(Dataset):
    num_classes: int = 0
    class_names: list[str] = []
    image_size: int = 0
    has_masks: bool = False
    has_parts: bool = False
    has_boxes: bool = False

    def __init__(self, normalize: DataConfig | None = None):
        self.normalize = normalize

    def _finish(self, item: dict[str, Any]) -> dict[str, Any]:
        """Apply the optional normalisation; subclasses build items with images in [0, 1]."""
        if self.normalize is not None:
            item["image"] = self.normalize.normalize(item["image"])
        return item

    def describe(self) -> dict[str, Any]:
        """Facts recorded with every result that uses this dataset."""
        return {
            "dataset": type(self).__name__,
            "size": len(self),
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "has_masks": self.has_masks,
        }


def stack_images(items: list[dict[str, Any]]) -> torch.Tensor:
    return torch.stack([it["image"] for it in items])
