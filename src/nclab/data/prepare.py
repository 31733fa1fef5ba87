"""From a data config to the four standard splits (train / test / val / novel) in memory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nclab.config import DataConfig
from nclab.data.base import SPLITS, Dataset, ImageSet, holdout_split
from nclab.data.registry import load_dataset
from nclab.errors import NclabError


@dataclass
class PreparedData:
    name: str
    splits: dict[str, ImageSet]
    flip: bool
    fingerprint: str

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.splits["train"].image_shape

    @property
    def channels(self) -> int:
        shape = self.image_shape
        return 1 if len(shape) == 2 else shape[2]

    @property
    def num_source_classes(self) -> int:
        return self.splits["train"].n_classes


def source_subset(source: ImageSet, n: int | None, seed: int) -> ImageSet:
    """The first ``n`` source classes of a seeded permutation (nested: l < l' keeps l's classes)."""
    if n is None or n == source.n_classes:
        return source
    if not 2 <= n <= source.n_classes:
        raise NclabError(f"data.source_classes={n}: expected 2..{source.n_classes} (the source classes available)")
    keep = np.sort(np.random.default_rng([seed, 7]).permutation(source.n_classes)[:n])
    remap = np.full(source.n_classes, -1)
    remap[keep] = np.arange(n)
    sel = np.flatnonzero(remap[source.labels] >= 0)
    return ImageSet(source.images[sel], remap[source.labels[sel]], [source.class_names[c] for c in keep])


def split_dataset(ds: Dataset, cfg: DataConfig) -> PreparedData:
    source = source_subset(ds.class_set("source"), cfg.source_classes, cfg.seed)
    if source.n_classes < 2:
        raise NclabError(f"dataset {ds.name!r}: needs at least 2 source classes, has {source.n_classes}")
    tr, te = holdout_split(source, cfg.holdout, cfg.seed)
    splits = {"train": source.take(tr), "test": source.take(te)}
    for s in ("val", "novel"):
        if s in ds.class_splits and len(ds.class_splits[s]):
            splits[s] = ds.class_set(s)
        else:
            empty = np.zeros((0,) + ds.image_shape, dtype=np.uint8)
            splits[s] = ImageSet(empty, np.zeros(0, np.int64), [])
    assert tuple(splits) == SPLITS
    return PreparedData(ds.name, splits, ds.flip, ds.fingerprint())


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Load the dataset named in ``cfg`` and cut it into the standard splits."""
    return split_dataset(load_dataset(cfg), cfg)
