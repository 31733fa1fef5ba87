"""The feature file ``F.npz`` that ``nclab features`` writes and ``measure`` / ``fewshot`` / ``gc`` read.

Keys: ``features`` (N x d float32), ``labels`` (N int64, 0..C-1), ``class_names`` (C str);
``W`` (C x d) and ``b`` (C) when the split's classes are the classifier's own classes.
Loaded without pickle (``allow_pickle=False``), so a file can never run code.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nclab.atomic import atomic_path
from nclab.errors import NclabError, check_finite


@dataclass
class FeatureSet:
    features: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    W: np.ndarray | None = None
    b: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def validate(self, where: str = "features") -> "FeatureSet":
        f, y = self.features, self.labels
        if f.ndim != 2:
            raise NclabError(f"{where}: 'features' must be N x d, got shape {f.shape}")
        check_finite(f, f"{where}: 'features'")
        if y.ndim != 1 or len(y) != len(f):
            raise NclabError(f"{where}: 'labels' must be a vector of {len(f)} ints, got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise NclabError(f"{where}: 'labels' must be integers, got {y.dtype}")
        C = self.n_classes
        if len(y) and (y.min() < 0 or y.max() >= C):
            raise NclabError(f"{where}: 'labels' must lie in 0..{C - 1} (one per class name), got {y.min()}..{y.max()}")
        if self.W is not None:
            if self.W.shape != (C, f.shape[1]):
                raise NclabError(f"{where}: 'W' must be {C} x {f.shape[1]} (classes x dim), got {self.W.shape}")
            if self.b is not None and self.b.shape != (C,):
                raise NclabError(f"{where}: 'b' must have {C} entries, got shape {self.b.shape}")
        return self


def save_features(path: str | Path, fs: FeatureSet) -> None:
    """Write ``fs`` to ``path`` atomically."""
    fs.validate(str(path))
    arrays = dict(features=np.asarray(fs.features, dtype=np.float32),
                  labels=np.asarray(fs.labels, dtype=np.int64),
                  class_names=np.asarray(fs.class_names, dtype=str))
    if fs.W is not None:
        arrays["W"] = np.asarray(fs.W, dtype=np.float32)
        if fs.b is not None:
            arrays["b"] = np.asarray(fs.b, dtype=np.float32)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_features(path: str | Path) -> FeatureSet:
    """Read and check a feature file; any problem is one line naming the file."""
    p = Path(path)
    if not p.is_file():
        raise NclabError(f"{p}: no such feature file (expected an .npz written by `nclab features`)")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            if not {"features", "labels"} <= keys:
                raise NclabError(f"{p}: expected keys 'features' and 'labels', found {sorted(keys)}")
            feats = z["features"]
            labels = z["labels"]
            names = z["class_names"] if "class_names" in keys else None
            W = z["W"] if "W" in keys else None
            b = z["b"] if "b" in keys else None
    except NclabError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise NclabError(f"{p}: not a readable .npz feature file ({e})") from None
    if not np.issubdtype(feats.dtype, np.floating):
        raise NclabError(f"{p}: 'features' must be floating point, got {feats.dtype}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise NclabError(f"{p}: 'labels' must be a vector of integers, got {labels.dtype} shape {labels.shape}")
    if names is not None:
        if names.ndim != 1:
            raise NclabError(f"{p}: 'class_names' must be a vector of names, got shape {names.shape}")
        names = [str(s) for s in names]
    else:
        top = int(labels.max()) + 1 if len(labels) else 0
        if top > len(labels):          # one name per class up to the largest label: not 10^9 of them
            raise NclabError(f"{p}: no 'class_names', and the largest label {top - 1} exceeds the number of "
                             f"samples ({len(labels)}); expected labels 0..C-1 with C <= N, or a 'class_names' array")
        names = [str(i) for i in range(top)]
    for key, a in (("W", W), ("b", b)):
        if a is not None and not (np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all()):
            raise NclabError(f"{p}: {key!r} must hold finite floating-point numbers")
    return FeatureSet(feats, labels, names, W, b).validate(str(p))
