"""A LightningDataModule over any dataset registered in ``reproduce.data``.

Images are normalised with the data config of the model being trained or evaluated (it travels
with the model), so "0 in normalised space" always means the model's mean colour.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reproduce.data import create_dataset
from reproduce.data.registry import has_splits
from reproduce.errors import ConfigError
from reproduce.models import DataConfig


class EpochSeededSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch), so a run resumed from a checkpoint sees
    exactly the batches an uninterrupted run would have seen (Lightning calls ``set_epoch``)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


class PairedDataset(Dataset):
    """Items of ``base`` plus, under ``key``, the image of the same index in ``variant`` (e.g. the
    background-shifted test set, for robustness metrics); labels must agree."""

    def __init__(self, base: Dataset, variants: dict[str, Dataset]):
        for key, variant in variants.items():
            if len(variant) != len(base):
                raise ConfigError(f"The {key} variant has {len(variant)} images but the test split has {len(base)}.")
        self.base, self.variants = base, variants

    def __getattr__(self, name: str):  # dataset facts (num_classes, has_masks, ...) come from base
        if name in ("base", "variants"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]
        for key, variant in self.variants.items():
            other = variant[index]
            if other["label"] != item["label"]:
                raise ConfigError(f"The {key} variant disagrees with the test split on the label of image {index}.")
            item[key] = other["image"]
        return item


class ItemSubset(Dataset):
    """Some items of a dataset, keeping its facts (num_classes, has_masks, ...)."""

    def __init__(self, base: Dataset, indices: list[int]):
        self.base, self.indices = base, list(indices)

    def __getattr__(self, name: str):
        if name in ("base", "indices"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.base[self.indices[index]]


def fold_indices(size: int, index: int, count: int, seed: int) -> list[int]:
    """Fold ``index`` of ``count`` disjoint folds of a seeded permutation of ``range(size)``."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[index * size // count:(index + 1) * size // count])


class ImageDataModule(L.LightningDataModule):
    """Train/val/test splits of one registered dataset.

    Args:
        name: registry name (``synthetic``, ``imagenet9``, ...).
        options: keyword arguments of the dataset shared by every split (root, sizes, seed, ...).
        split_options: per-split extra arguments, e.g. ``{"test": {"background": "shifted"}}``.
        batch_size / eval_batch_size: per-process batch sizes (under DDP each process gets this many).
        num_workers: loader worker processes (0 = in the main process).
        seed: shuffling seed (re-seeded per epoch, see :class:`EpochSeededSampler`).
        bg_shift: dataset options that give the background-shift variant of the test split
            (synthetic: ``{"background": "shifted"}``, ImageNet-9: ``{"variant": "mixed_next"}``);
            after :meth:`enable_bg_shift`, test items carry its image as ``images_bg_shift``.
        limits: keep only the first N items of a stage, e.g. ``{"test": 200}``.
        train_fold: train on one of ``count`` disjoint folds of the training split,
            ``{"index": 0, "count": 2, "seed": 10007}`` (the super-pixel paper's stability protocol:
            two models trained on disjoint halves of the data).
        num_classes / image_size: what the configs downstream (model size, head) assume; checked
            against the dataset when it is built.
    """

    def __init__(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        split_options: dict[str, dict[str, Any]] | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        splits: dict[str, str] | None = None,
        num_classes: int | None = None,
        image_size: int | None = None,
        bg_shift: dict[str, Any] | None = None,
        limits: dict[str, int] | None = None,
        train_fold: dict[str, int] | None = None,
    ):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"data.batch_size must be a positive integer, got {batch_size!r}.")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers!r}.")
        self.name = name
        self.options = dict(options or {})
        self.split_options = {k: dict(v) for k, v in (split_options or {}).items()}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.splits = {"train": "train", "val": "val", "test": "test", **(splits or {})}
        self.expected = {"num_classes": num_classes, "image_size": image_size}
        self.bg_shift = dict(bg_shift) if bg_shift else None
        self.test_pairs: dict[str, dict[str, Any]] = {}
        self.limits = dict(limits or {})
        self.train_fold = dict(train_fold) if train_fold else None
        if self.train_fold is not None:
            idx, count = self.train_fold.get("index"), self.train_fold.get("count")
            if not (isinstance(count, int) and count >= 2 and isinstance(idx, int) and 0 <= idx < count):
                raise ConfigError(
                    f"data.train_fold needs integers 0 <= index < count with count >= 2, got {train_fold!r}."
                )
        for stage, n in self.limits.items():
            if n is not None and (not isinstance(n, int) or n < 1):
                raise ConfigError(f"data.limits.{stage} must be a positive integer, got {n!r}.")
        self.data_config: DataConfig | None = None
        self.datasets: dict[str, Dataset] = {}
        self.test_indices: list[int] | None = None  # see restrict_test

    def set_data_config(self, data_config: DataConfig) -> None:
        self.data_config = data_config

    def enable_bg_shift(self) -> None:
        """Pair every test image with its background-shifted version (robustness metrics)."""
        if not self.bg_shift:
            raise ConfigError(
                f"The {self.name!r} data config defines no background-shift variant (data.bg_shift); "
                "drop background-shift robustness or use a dataset that has one (synthetic, imagenet9)."
            )
        self.test_pairs["images_bg_shift"] = self.bg_shift
        self.datasets.pop("test", None)

    def restrict_test(self, indices: list[int] | None) -> None:
        """Evaluate only these test items (positions in the test split, e.g. chosen by the runner's
        sampler); ``None``: every item."""
        self.test_indices = None if indices is None else list(indices)
        self.datasets.pop("test", None)

    def dataset(self, stage: str) -> Dataset:
        """Build (once) the dataset behind ``stage`` in ``train``/``val``/``test``."""
        if stage not in self.datasets:
            split = self.splits[stage]
            kwargs = {**self.options, **self.split_options.get(stage, {})}
            if has_splits(self.name):
                kwargs["split"] = split
            ds = create_dataset(self.name, normalize=self.data_config, **kwargs)
            for key, want in self.expected.items():
                have = getattr(ds, key, None)
                if want is not None and have is not None and int(have) != int(want):
                    raise ConfigError(
                        f"data.{key}={want} but the {self.name!r} {split} split has {key}={have}; "
                        f"set data.{key}={have} (the model is built from it)."
                    )
            if stage == "test" and self.test_pairs:
                variants = {
                    key: create_dataset(self.name, normalize=self.data_config, **{**kwargs, **extra})
                    for key, extra in self.test_pairs.items()
                }
                ds = PairedDataset(ds, variants)
            if stage == "train" and self.train_fold is not None:
                fold = self.train_fold
                ds = ItemSubset(ds, fold_indices(len(ds), fold["index"], fold["count"], fold.get("seed", 10007)))
            if self.limits.get(stage) and self.limits[stage] < len(ds):
                ds = ItemSubset(ds, range(self.limits[stage]))
            if stage == "test" and self.test_indices is not None:
                ds = ItemSubset(ds, self.test_indices)
            self.datasets[stage] = ds
        return self.datasets[stage]

    @property
    def num_classes(self) -> int:
        return int(self.dataset("test").num_classes)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), None: ("train", "val", "test")}
        for s in wanted.get(stage, ("test",)):
            self.dataset(s)

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(stage)
        sampler: Sampler | None = EpochSeededSampler(len(ds), self.seed) if shuffle else None
        if not shuffle and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Evaluation shards without the padding DistributedSampler adds, so every image is
            # counted exactly once and DDP results equal single-process ones.
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(ds, shuffle=False)
        return DataLoader(
            ds,
            batch_size=self.batch_size if stage == "train" else self.eval_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
