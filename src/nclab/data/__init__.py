"""Datasets: readers by name, the in-memory image store and its standard splits."""

from nclab.data.base import CLASS_SPLITS, SPLITS, Dataset, ImageSet, holdout_split
from nclab.data.registry import DATASETS, dataset_names, load_dataset, register_dataset

__all__ = ["CLASS_SPLITS", "SPLITS", "DATASETS", "Dataset", "ImageSet", "dataset_names",
           "holdout_split", "load_dataset", "register_dataset"]
