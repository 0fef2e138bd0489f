"""A LightningDataModule over any dataset registered in ``reproduce.data``.

Images are normalised with the data config of the model being trained or evaluated (it travels
with the model), so "0 in normalised space" always means the model's mean colour.

Training views (train split only, never val/test): ``augment`` (a recipe of
:mod:`reproduce.data.augment`, seeded per ``(seed, epoch, index)``: the train sampler hands each
item its epoch, so loader workers and DDP processes draw the same augmentation for it) and
``train_label_permutation_seed`` (the data-randomisation sanity check: training labels are a seeded
permutation of the true ones).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reproduce.data import create_dataset
from reproduce.data.augment import Augmentation, item_generator
from reproduce.data.registry import dataset_class, has_splits
from reproduce.checks import check_choice, check_int
from reproduce.errors import ConfigError
from reproduce.models import DataConfig


class EpochSeededSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch), so a run resumed from a checkpoint sees
    exactly the batches an uninterrupted run would have seen (Lightning calls ``set_epoch``, also
    through its DDP wrapper). ``with_epoch=True`` yields ``(epoch, index)`` pairs for
    :class:`AugmentedDataset`."""

    def __init__(self, size: int, seed: int, with_epoch: bool = False):
        self.size, self.seed, self.epoch, self.with_epoch = size, seed, 0, with_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        return iter([(self.epoch, i) for i in order] if self.with_epoch else order)

    def __len__(self) -> int:
        return self.size


class DatasetView(Dataset):
    """A dataset made from ``base`` that keeps its facts (num_classes, has_masks, ...): an attribute
    the view does not set comes from ``base``. ``own``: the view's attributes, never looked up in
    ``base`` (they are missing only while unpickling, which must not recurse into ``base``)."""

    own: tuple[str, ...] = ("base",)

    def __getattr__(self, name: str):
        if name in self.own:
            raise AttributeError(name)
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.base)


class PairedDataset(DatasetView):
    """Items of ``base`` plus, under ``key``, the image of the same index in ``variant`` (e.g. the
    background-shifted test set, for robustness metrics); labels must agree."""

    own = ("base", "variants")

    def __init__(self, base: Dataset, variants: dict[str, Dataset]):
        for key, variant in variants.items():
            if len(variant) != len(base):
                raise ConfigError(f"The {key} variant has {len(variant)} images but the test split has {len(base)}.")
        self.base, self.variants = base, variants

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]
        for key, variant in self.variants.items():
            other = variant[index]
            if other["label"] != item["label"]:
                raise ConfigError(f"The {key} variant disagrees with the test split on the label of image {index}.")
            item[key] = other["image"]
        return item


class ItemSubset(DatasetView):
    """Some items of a dataset, keeping its facts (num_classes, has_masks, ...)."""

    own = ("base", "indices")

    def __init__(self, base: Dataset, indices: list[int]):
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.base[self.indices[index]]


class AugmentedDataset(DatasetView):
    """``base`` indexed by ``(epoch, index)``: item ``index`` augmented with a generator seeded by
    ``(seed, epoch, index)`` (a plain ``index`` reads the item unaugmented)."""

    own = ("base", "augmentation", "seed")

    def __init__(self, base: Dataset, augmentation: Augmentation, seed: int):
        self.base, self.augmentation, self.seed = base, augmentation, seed

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        if not isinstance(key, tuple):
            return self.base[key]
        epoch, index = key
        return self.augmentation(self.base[index], item_generator(self.seed, epoch, index))


class RelabelledDataset(DatasetView):
    """``base`` with item ``i`` labelled ``labels[i]`` (the label-permutation sanity check)."""

    own = ("base", "new_labels")

    def __init__(self, base: Dataset, labels: list[int]):
        self.base, self.new_labels = base, list(labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.base[index], "label": self.new_labels[index]}


def labels_of(ds: Dataset) -> list[int]:
    """The label of every item, without decoding images where the dataset lists them."""
    if isinstance(ds, ItemSubset):
        base = labels_of(ds.base)
        return [base[i] for i in ds.indices]
    if hasattr(ds, "labels") and len(ds.labels) == len(ds):
        return [int(v) for v in ds.labels]
    if hasattr(ds, "samples") and len(ds.samples) == len(ds):
        return [int(label) for _, label in ds.samples]
    return [int(ds[i]["label"]) for i in range(len(ds))]


def permuted_labels(labels: list[int], seed: int) -> list[int]:
    """A seeded permutation of ``labels`` (class counts kept, each image's own label forgotten)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    return [labels[j] for j in order]


def fold_indices(size: int, index: int, count: int, seed: int) -> list[int]:
    """Fold ``index`` of ``count`` disjoint folds of a seeded permutation of ``range(size)``."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[index * size // count:(index + 1) * size // count])


class ImageDataModule(L.LightningDataModule):
    """Train/val/test splits of one registered dataset.

    Args:
        name: registry name (``synthetic``, ``imagenet9``, ...).
        options: keyword arguments of the dataset shared by every split (root, sizes, seed, ...).
        split_options: per-split extra arguments, e.g. ``{"test": {"background": "mixed_rand"}}``.
        batch_size / eval_batch_size: per-process batch sizes (under DDP each process gets this many).
        num_workers: loader worker processes (0 = in the main process).
        seed: shuffling seed (re-seeded per epoch, see :class:`EpochSeededSampler`).
        bg_shift: dataset options that give the background-shift variant of the test split
            (synthetic: ``{"background": "mixed_next"}``, ImageNet-9: ``{"variant": "mixed_next"}``);
            after :meth:`enable_bg_shift`, test items carry its image as ``images_bg_shift``.
        limits: keep only the first N items of a stage, e.g. ``{"test": 200}``.
        train_fold: train on one of ``count`` disjoint folds of the training split,
            ``{"index": 0, "count": 2, "seed": 10007}`` (the super-pixel paper's stability protocol:
            two models trained on disjoint halves of the data).
        num_classes / image_size: what the configs downstream (model size, head) assume; checked
            against the dataset when it is built.
        augment: train-split augmentation, a preset (``none``, ``light``, ``comet``) or a step list
            (:mod:`reproduce.data.augment`); never applied to val or test.
        train_label_permutation_seed: when an integer, the training labels are a permutation of the
            true labels seeded by it (the data-randomisation sanity check); val/test keep theirs.
        variants: the ImageNet-9 test variants by name -> the dataset options that give each
            (synthetic: ``{mixed_rand: {background: mixed_rand}}``, ImageNet-9: ``{variant: ...}``).
        paired_variants: variants whose image of the same index every test item also carries, as
            ``images_<variant>`` (e.g. the explained model's accuracy on ``mixed_rand``).
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
        augment: str | list[dict[str, Any]] | None = None,
        train_label_permutation_seed: int | None = None,
        variants: dict[str, dict[str, Any]] | None = None,
        paired_variants: list[str] | None = None,
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
        self._init_views(augment, train_label_permutation_seed, variants, paired_variants)

    def _init_views(self, augment: Any, permutation_seed: Any, variants: Any, paired: Any) -> None:
        Augmentation(augment)  # a bad recipe fails here, before any data is built
        self.augment = augment
        self.train_label_permutation_seed = check_int(
            "data.train_label_permutation_seed", permutation_seed, minimum=0, allow_none=True)
        self.variants = {str(k): dict(v or {}) for k, v in (variants or {}).items()}
        for name in paired or ():
            check_choice("data.paired_variants entry", name, self.variants)
            self.test_pairs[f"images_{name}"] = self.variants[name]

    def request_extras(self, keys: set[str]) -> None:
        """Make the test split carry the batch extras ``keys`` it can: ``images_<variant>`` pairs a
        variant of ``variants``; a key the dataset class offers behind a switch (its
        ``optional_extras``, e.g. the synthetic benchmark's ``interventions``) turns that switch on."""
        offered = getattr(dataset_class(self.name), "optional_extras", {})
        for key in keys:
            if key.startswith("images_") and key[len("images_"):] in self.variants:
                self.test_pairs[key] = self.variants[key[len("images_"):]]
            for option, extras in offered.items():
                if key in extras:
                    self.split_options.setdefault("test", {})[option] = True
        self.datasets.pop("test", None)

    def provided_extras(self) -> set[str]:
        """Batch extras the test split provides: the dataset's own (``extras``), the paired
        variants' images, and ``images_bg_shift`` when the config defines it."""
        keys = set(getattr(self.dataset("test"), "extras", ()))
        keys |= {k for k in self.test_pairs if k != "images_bg_shift"}
        if self.bg_shift:
            keys.add("images_bg_shift")
        return keys

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
                switches = getattr(dataset_class(self.name), "optional_extras", {})  # a pair brings its image only
                variants = {
                    key: create_dataset(self.name, normalize=self.data_config,
                                        **{k: v for k, v in {**kwargs, **extra}.items() if k not in switches})
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
            if stage == "train" and self.train_label_permutation_seed is not None:
                ds = RelabelledDataset(ds, permuted_labels(labels_of(ds), self.train_label_permutation_seed))
            self.datasets[stage] = ds
        return self.datasets[stage]

    @property
    def num_classes(self) -> int:
        return int(self.dataset("test").num_classes)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), None: ("train", "val", "test")}
        for s in wanted.get(stage, ("test",)):
            self.dataset(s)

    def train_augmentation(self) -> Augmentation:
        """The train recipe; its black fill is the normalised colour of a black pixel."""
        black = self.data_config.normalize(torch.zeros(3, 1, 1)) if self.data_config is not None else None
        return Augmentation(self.augment, black=black)

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(stage)
        augmentation = self.train_augmentation() if stage == "train" else None
        if augmentation:
            ds = AugmentedDataset(ds, augmentation, self.seed)
        sampler: Sampler | None = EpochSeededSampler(len(ds), self.seed, with_epoch=bool(augmentation)) if shuffle else None
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
