"""Datasets: the embedded synthetic ground-truth benchmark and loaders for the papers' datasets."""

from reproduce.data.base import ImageDataset, stack_images
from reproduce.data.registry import available_datasets, create_dataset, register_dataset


def load_photo(*args, **kwargs):
    """A bundled real photo normalised for a model: see :func:`reproduce.data.photos.load_photo`."""
    from reproduce.data.photos import load_photo as _load_photo

    return _load_photo(*args, **kwargs)


def photo_names(*args, **kwargs):
    from reproduce.data.photos import photo_names as _photo_names

    return _photo_names(*args, **kwargs)


__all__ = ["ImageDataset", "available_datasets", "create_dataset", "load_photo", "photo_names", "register_dataset", "stack_images"]
