"""Datasets: the embedded synthetic ground-truth benchmark and loaders for the papers' datasets."""

from reproduce.data.base import ImageDataset, stack_images
from reproduce.data.registry import available_datasets, create_dataset, register_dataset

__all__ = ["ImageDataset", "available_datasets", "create_dataset", "register_dataset", "stack_images"]
