"""CIFAR-10 from the official "python version" batches, split as in the COMET code.

Layout (``root`` holds ``cifar-10-batches-py/``, as unpacked from cifar-10-python.tar.gz; ``root``
may also be that folder itself)::

    <root>/cifar-10-batches-py/
    ├── data_batch_1 ... data_batch_5    50,000 training images
    ├── test_batch                       10,000 test images
    └── batches.meta                     label_names

Splits (COMET): ``val`` = the first ``val_per_class`` (1,000) images of every class in training
order (data_batch_1 first), ``train`` = the remaining training images, ``test`` = ``test_batch``.

The batches are Python pickles. They are read with a restricted unpickler that only rebuilds
dicts, lists, strings and numpy arrays: the only globals it resolves are
``numpy...multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``,
``numpy...numeric._frombuffer`` and ``_codecs.encode`` (which re-saved Python 3 pickles use for
bytes), so a tampered file cannot run code. Only the seven file names above are ever opened.
"""

from __future__ import annotations

import codecs
import os
import pickle
from typing import Any

import numpy as np
from PIL import Image

from reproduce.checks import check_choice
from reproduce.data.on_disk import OnDiskDataset
from reproduce.data.registry import register_dataset
from reproduce.errors import ConfigError, DataError
from reproduce.models.data_config import DataConfig

_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz)"
_LAYOUT = """<root>/cifar-10-batches-py/
├── data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5
├── test_batch
└── batches.meta"""
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
SPLITS = ("train", "val", "test")

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array rebuild function, any version
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, "latin1"): str -> bytes only.
    ("_codecs", "encode"): codecs.encode,
}
try:  # pickle protocol 5 stores arrays through _frombuffer
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy < 2
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
_ALLOWED[("numpy.core.numeric", "_frombuffer")] = _frombuffer
_ALLOWED[("numpy._core.numeric", "_frombuffer")] = _frombuffer


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def read_batch(path: str) -> dict[str, Any]:
    """One CIFAR batch as a dict with str keys; a DataError naming the file when it is unreadable."""
    try:
        with open(path, "rb") as f:
            # latin1 decodes the Python 2 strings of the official files (as torchvision does).
            raw = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except Exception as err:  # noqa: BLE001 - damaged pickles raise Key/Index/Overflow/Memory/... errors too
        raise DataError(
            f"Cannot read the CIFAR-10 batch {path!r} ({type(err).__name__}: {err}); re-download "
            f"cifar-10-python.tar.gz from {_SOURCE}."
        ) from err
    if not isinstance(raw, dict):
        raise DataError(f"CIFAR-10 batch {path!r} holds a {type(raw).__name__}, not a dict.")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _images_and_labels(path: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise DataError(f"CIFAR-10 batch {path!r} must hold 'data' [N, 3072] uint8 and 'labels' [N].")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise DataError(f"CIFAR-10 batch {path!r}: {len(data)} images but {len(labels)} labels.")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def comet_val_indices(labels: np.ndarray, val_per_class: int) -> np.ndarray:
    """Boolean [N]: True for the first ``val_per_class`` images of each class, in order."""
    is_val = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        is_val[np.flatnonzero(labels == label)[:val_per_class]] = True
    return is_val


@register_dataset("cifar10")
class CIFAR10(OnDiskDataset):
    """CIFAR-10 with COMET's train/val/test split (see the module docstring).

    Args:
        root: folder containing ``cifar-10-batches-py/`` (or that folder itself).
        split: ``train``, ``val`` or ``test``.
        image_size: output side; 32 keeps the native images, larger sizes resize bilinearly.
        val_per_class: training images per class moved to ``val`` (COMET: 1000).
        normalize: the model's data config to return normalised images; [0, 1] when None.
    """

    num_classes = 10
    root_layout = _LAYOUT
    source = _SOURCE

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "test",
        image_size: int = 32,
        val_per_class: int = 1000,
        normalize: DataConfig | None = None,
    ):
        self.split = check_choice("split", split, SPLITS)
        if isinstance(val_per_class, bool) or not isinstance(val_per_class, int) or val_per_class < 0:
            raise ConfigError(f"val_per_class must be a non-negative integer (COMET: 1000), got {val_per_class!r}.")
        self.val_per_class = val_per_class
        super().__init__(root, image_size, "stretch", normalize=normalize)
        folder = os.path.join(self.root, FOLDER)
        self.folder = folder if os.path.isdir(folder) else self.root
        needed = ("batches.meta", *(("test_batch",) if split == "test" else TRAIN_FILES))
        missing = [f for f in needed if not os.path.isfile(os.path.join(self.folder, f))]
        if len(missing) == len(needed) and self.folder == self.root:
            problem = f"root holds no {FOLDER}/ folder (and is not one itself): {self.root!r}."
            raise self._error(problem)
        if missing:
            raise self._error(f"missing {missing} in {self.folder!r}.")

        names = read_batch(os.path.join(self.folder, "batches.meta")).get("label_names")
        if not isinstance(names, list) or len(names) != self.num_classes:
            raise DataError(f"{os.path.join(self.folder, 'batches.meta')!r} must list 10 label_names.")
        self.class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]

        if split == "test":
            images, labels = _images_and_labels(os.path.join(self.folder, "test_batch"))
        else:
            parts = [_images_and_labels(os.path.join(self.folder, f)) for f in TRAIN_FILES]
            images = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
            keep = comet_val_indices(labels, val_per_class)
            if split == "train":
                keep = ~keep
            images, labels = images[keep], labels[keep]
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataError(f"CIFAR-10 labels must be in 0..9, found {labels.min()}..{labels.max()}.")
        self.images = np.ascontiguousarray(images)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.resizer.image(Image.fromarray(self.images[index]))
        return self._finish({"image": image, "label": int(self.labels[index]), "index": index})

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "split": self.split,
            "val_per_class": self.val_per_class,
        }
