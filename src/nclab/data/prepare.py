"""From a data config to the four standard splits (train / test / val / novel) in memory."""

from __future__ import annotations

import dataclasses
import math
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


def train_counts(cfg: DataConfig, n_classes: int) -> list[int] | None:
    """Train samples kept per class: ``train_per_class`` for every class, or with
    ``imbalance_ratio`` R the first K_A = ``majority_classes`` (default C // 2) classes keep
    n_A = ``train_per_class`` and the others n_B = n_A / R (Fang et al. 2021's K_A + K_B classes
    of n_A and n_B samples). None: keep every sample."""
    n_a, ratio, k_a = cfg.train_per_class, cfg.imbalance_ratio, cfg.majority_classes
    if n_a is None:
        if ratio is not None or k_a is not None:
            raise NclabError("data.imbalance_ratio / data.majority_classes need data.train_per_class "
                             "(n_A, the samples kept per majority class)")
        return None
    if n_a < 1:
        raise NclabError(f"data.train_per_class={n_a}: expected at least 1 sample per class")
    if ratio is None:
        if k_a is not None:
            raise NclabError("data.majority_classes needs data.imbalance_ratio (R = n_A / n_B)")
        return [n_a] * n_classes
    if not (math.isfinite(ratio) and ratio >= 1):
        raise NclabError(f"data.imbalance_ratio={ratio}: expected R = n_A / n_B >= 1")
    n_b = n_a / ratio
    if abs(n_b - round(n_b)) > 1e-9 * n_b or round(n_b) < 1:
        raise NclabError(f"data.imbalance_ratio={ratio:g}: n_A / R = {n_a} / {ratio:g} = {n_b:g} is not a whole "
                         f"number >= 1 of minority samples (choose data.train_per_class as a multiple of R)")
    k_a = n_classes // 2 if k_a is None else k_a
    if not 1 <= k_a <= n_classes - 1:
        raise NclabError(f"data.majority_classes={k_a}: expected 1..{n_classes - 1} (of {n_classes} source classes)")
    return [n_a] * k_a + [int(round(n_b))] * (n_classes - k_a)


def per_class_subset(images: ImageSet, counts: list[int], seed: int) -> np.ndarray:
    """Rows of ``images`` keeping the first ``counts[c]`` samples of a seeded permutation of each
    class c (ascending): nested, so a smaller count keeps a subset of a larger one's samples."""
    rows = []
    for c, idx in enumerate(images.class_index):
        if counts[c] > len(idx):
            raise NclabError(f"data.train_per_class: class {images.class_names[c]!r} has {len(idx)} train samples, "
                             f"fewer than the {counts[c]} asked for")
        rows.append(np.sort(np.random.default_rng([seed, c, 13]).permutation(idx)[:counts[c]]))
    return np.concatenate(rows)


def with_val_as_source(ds: Dataset) -> Dataset:
    """``ds`` with its val classes appended to its source classes and no val classes left
    (``data.trainval``: pre-training on train + val, as MetaOptNet's "trainval" results)."""
    val = ds.class_splits.get("val", np.zeros(0, np.int64))
    if not len(val):
        raise NclabError(f"data.trainval=true: dataset {ds.name!r} has no val classes to add to its source classes")
    splits = {**ds.class_splits, "source": np.concatenate([ds.class_splits["source"], val]), "val": val[:0]}
    return dataclasses.replace(ds, class_splits=splits)


def split_dataset(ds: Dataset, cfg: DataConfig) -> PreparedData:
    if cfg.trainval:
        ds = with_val_as_source(ds)
    source = source_subset(ds.class_set("source"), cfg.source_classes, cfg.seed)
    if source.n_classes < 2:
        raise NclabError(f"dataset {ds.name!r}: needs at least 2 source classes, has {source.n_classes}")
    tr, te = holdout_split(source, cfg.holdout, cfg.seed)
    splits = {"train": source.take(tr), "test": source.take(te)}
    counts = train_counts(cfg, source.n_classes)
    if counts is not None:                  # the test split (the holdout) stays balanced
        splits["train"] = splits["train"].take(per_class_subset(splits["train"], counts, cfg.seed))
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
