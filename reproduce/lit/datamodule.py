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


class ImageDataModule(L.LightningDataModule):
    """Train/val/test splits of one registered dataset.

    Args:
        name: registry name (``synthetic``, ``imagenet9``, ...).
        options: keyword arguments of the dataset shared by every split (root, sizes, seed, ...).
        split_options: per-split extra arguments, e.g. ``{"test": {"background": "shifted"}}``.
        batch_size / eval_batch_size: per-process batch sizes (under DDP each process gets this many).
        num_workers: loader worker processes (0 = in the main process).
        seed: shuffling seed (re-seeded per epoch, see :class:`EpochSeededSampler`).
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
        self.data_config: DataConfig | None = None
        self.datasets: dict[str, Dataset] = {}

    def set_data_config(self, data_config: DataConfig) -> None:
        self.data_config = data_config

    def dataset(self, stage: str) -> Dataset:
        """Build (once) the dataset behind ``stage`` in ``train``/``val``/``test``."""
        if stage not in self.datasets:
            split = self.splits[stage]
            kwargs = {**self.options, **self.split_options.get(stage, {})}
            ds = create_dataset(self.name, split=split, normalize=self.data_config, **kwargs)
            for key, want in self.expected.items():
                have = getattr(ds, key, None)
                if want is not None and have is not None and int(have) != int(want):
                    raise ConfigError(
                        f"data.{key}={want} but the {self.name!r} {split} split has {key}={have}; "
                        f"set data.{key}={have} (the model is built from it)."
                    )
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
        return DataLoader(
            ds,
            batch_size=self.batch_size if stage == "train" else self.eval_batch_size,
            sampler=EpochSeededSampler(len(ds), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
