"""The in-memory dataset every reader produces, and its standard splits.

A dataset is a set of classes divided by class into *source* (pre-training), *val* and
*novel* (transfer) classes, like Omniglot's background / evaluation alphabets. Source
classes further keep a fixed per-class holdout: the *test* samples used to measure
collapse on unseen samples of seen classes. The four splits every command understands:

- ``train``: source classes, all samples but the holdout;
- ``test``: source classes, the holdout;
- ``val``, ``novel``: all samples of the val / novel classes.

Labels inside a split are local (0..C-1 over that split's classes, in the order of
``class_ids``), so ``train`` and ``test`` labels are the classifier's own outputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from nclab.errors import NclabError

CLASS_SPLITS = ("source", "val", "novel")
SPLITS = ("train", "test", "val", "novel")


@dataclass
class ImageSet:
    """uint8 images with integer labels and a per-class index.

    ``images`` is (N, H, W) for grayscale or (N, H, W, 3) for colour, foreground
    ("ink") bright: 255 = ink, 0 = background for glyph-like data.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    _index: list[np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8:
            raise NclabError(f"images must be uint8, got {self.images.dtype}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.images) != len(self.labels):
            raise NclabError(f"{len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise NclabError("labels out of range of class_names")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def class_index(self) -> list[np.ndarray]:
        """Sample indices of each class, ascending (computed once)."""
        if self._index is None:
            order = np.argsort(self.labels, kind="stable")
            bounds = np.searchsorted(self.labels[order], np.arange(self.n_classes + 1))
            self._index = [order[bounds[c]:bounds[c + 1]] for c in range(self.n_classes)]
        return self._index

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.n_classes)

    def take(self, idx: np.ndarray) -> "ImageSet":
        """The samples ``idx`` (labels unchanged)."""
        return ImageSet(self.images[idx], self.labels[idx], list(self.class_names))


@dataclass
class Dataset:
    """All images of a dataset with the division of its classes into source / val / novel.

    ``labels`` are global class ids; ``class_splits[s]`` lists the global ids of split s.
    ``groups[c]`` names the alphabet / script / superclass of class c when there is one.
    ``flip``: a horizontal flip preserves the label (natural images, not characters).
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    class_splits: dict[str, np.ndarray]
    groups: list[str] | None = None
    flip: bool = False
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.dtype != np.uint8:
            raise NclabError(f"{self.name}: images must be uint8, got {self.images.dtype}")
        if self.images.ndim not in (3, 4):
            raise NclabError(f"{self.name}: images must be (N,H,W) or (N,H,W,3), got {self.images.shape}")
        seen: set[int] = set()
        for s, ids in self.class_splits.items():
            ids = np.asarray(ids, dtype=np.int64)
            self.class_splits[s] = ids
            if seen & set(ids.tolist()):
                raise NclabError(f"{self.name}: split {s!r} shares classes with another split")
            seen |= set(ids.tolist())

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def channels(self) -> int:
        return 1 if self.images.ndim == 3 else self.images.shape[3]

    def class_set(self, split: str) -> ImageSet:
        """All samples of the classes of class split ``split`` with local labels."""
        if split not in self.class_splits:
            raise NclabError(f"dataset {self.name!r} has no class split {split!r}; it has {sorted(self.class_splits)}")
        ids = self.class_splits[split]
        local = np.full(len(self.class_names), -1, dtype=np.int64)
        local[ids] = np.arange(len(ids))
        sel = np.flatnonzero(local[self.labels] >= 0)
        return ImageSet(self.images[sel], local[self.labels[sel]], [self.class_names[i] for i in ids])

    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of images, labels, names and splits."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(self.labels.tobytes())
        h.update("\0".join(self.class_names).encode())
        for s in sorted(self.class_splits):
            h.update(s.encode() + self.class_splits[s].tobytes())
        return h.hexdigest()[:16]


def holdout_split(images: ImageSet, per_class: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed per-class holdout: (train_idx, test_idx) into ``images``.

    ``per_class`` >= 1 holds out that many samples of every class; 0 < per_class < 1 holds
    out that fraction (rounded, at least one). The choice depends only on the seed and the
    class index, so it is the same in every run of the same data.
    """
    train, test = [], []
    for c, idx in enumerate(images.class_index):
        n = len(idx)
        k = int(per_class) if per_class >= 1 else max(1, int(round(per_class * n)))
        if k >= n:
            raise NclabError(
                f"data.holdout={per_class}: class {images.class_names[c]!r} has only {n} samples, "
                f"expected more than {k} so that some remain for training")
        rng = np.random.default_rng([seed, c])
        perm = rng.permutation(idx)
        test.append(np.sort(perm[:k]))
        train.append(np.sort(perm[k:]))
    return np.concatenate(train), np.concatenate(test)
