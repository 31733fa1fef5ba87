"""CIFAR-FS (Bertinetto et al. 2019) and FC-100 (Oreshkin et al. 2018): CIFAR-100 divided
into 64 / 16 / 20 classes, resp. 12 / 4 / 4 superclasses (60 / 20 / 20 classes), 32x32 RGB;
and CIFAR-10 (all ten classes source classes, :func:`read_cifar10`).

Read from either

- the official CIFAR-100 python release ``cifar-100-python/{train,test,meta}`` (``data.root``
  is that folder, the folder holding it, or ``cifar-100-python.tar.gz``): train and test
  parts pooled per class (600 images), split by the lists in :mod:`nclab.data.class_lists`;
- the MetaOptNet / RFS pickles ``CIFAR_FS_{train,val,test}.pickle`` (``FC100_...`` for
  FC-100) or ``{train,val,test}.pickle``: train -> source, val -> val, test -> novel.

All pickles go through :mod:`nclab.data.safe_pickle`. ``data.image_size`` other than 32
area-resizes (cached).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nclab.config import DataConfig
from nclab.data import safe_pickle
from nclab.data.archive import resolve_root
from nclab.data.base import Dataset
from nclab.data.cached import cached_arrays, file_digest, file_signature
from nclab.data.class_lists import CIFAR100_CLASSES, CIFAR100_SUPERCLASS_OF, CIFAR_FS, FC100
from nclab.data.registry import register_dataset
from nclab.data.resize import resize_area
from nclab.data.split_pickles import find_split_pickles, read_split_pickles
from nclab.errors import NclabError

# MD5 of the official release files (as torchvision checks them).
CIFAR100_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                "meta": "7973b15100ade9c7d40fb424638fde48"}
NATIVE_SIZE = 32


def _release_folder(root: Path) -> Path | None:
    for folder in (root / "cifar-100-python", root):
        if all((folder / f).is_file() for f in ("train", "test", "meta")):
            return folder
    return None


def _dict_pickle(path: Path, keys: tuple[str, ...]) -> dict:
    obj = safe_pickle.load(path)
    if not isinstance(obj, dict):
        raise NclabError(f"{path}: expected a dict with keys {', '.join(keys)}, got {type(obj).__name__}")
    obj = safe_pickle.as_str_keys(obj)
    for k in keys:
        if k not in obj:
            raise NclabError(f"{path}: no key {k!r}; expected the CIFAR-100 python release keys {', '.join(keys)}")
    return obj


def _names(path: Path, obj: dict, key: str) -> list[str]:
    vals = obj[key]
    if not isinstance(vals, (list, tuple)) or not all(isinstance(v, (str, bytes)) for v in vals):
        raise NclabError(f"{path}: {key!r} must be a list of names")
    return [v.decode("latin1") if isinstance(v, bytes) else v for v in vals]


def read_cifar100_release(folder: Path) -> dict:
    """Pooled train + test of the official release: images (N, 32, 32, 3), fine / coarse labels, names."""
    meta_path = folder / "meta"
    meta = _dict_pickle(meta_path, ("fine_label_names", "coarse_label_names"))
    fine_names = _names(meta_path, meta, "fine_label_names")
    coarse_names = _names(meta_path, meta, "coarse_label_names")
    images, fine, coarse = [], [], []
    for part in ("train", "test"):
        path = folder / part
        d = _dict_pickle(path, ("data", "fine_labels", "coarse_labels"))
        data = d["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise NclabError(f"{path}: 'data' is {desc}, expected uint8 N x 3072 (3 x 32 x 32 planes)")
        for key, n_names, out in (("fine_labels", len(fine_names), fine), ("coarse_labels", len(coarse_names), coarse)):
            try:
                lab = np.asarray(d[key], dtype=np.int64)
            except (TypeError, ValueError):
                raise NclabError(f"{path}: {key!r} must be a list of integers") from None
            if lab.shape != (len(data),):
                raise NclabError(f"{path}: {key!r} has {lab.size} entries, expected {len(data)} (one per image)")
            if len(lab) and (lab.min() < 0 or lab.max() >= n_names):
                bad = int(lab.min() if lab.min() < 0 else lab.max())
                raise NclabError(f"{path}: {key} value {bad} out of range, expected 0..{n_names - 1} ({meta_path})")
            out.append(lab)
        images.append(data.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE).transpose(0, 2, 3, 1))
    fine_l, coarse_l = np.concatenate(fine), np.concatenate(coarse)
    groups = [""] * len(fine_names)
    for f, c in zip(*np.unique(np.stack([fine_l, coarse_l]), axis=1)):
        if groups[f] and groups[f] != coarse_names[c]:
            raise NclabError(f"{folder}: class {fine_names[f]!r} has two superclasses in coarse_labels")
        groups[f] = coarse_names[c]
    return {"images": np.ascontiguousarray(np.concatenate(images)), "labels": fine_l,
            "class_names": fine_names, "groups": groups}


def _class_splits(lists: dict[str, list[str]], names: list[str], where: Path) -> dict[str, np.ndarray]:
    index = {n: i for i, n in enumerate(names)}
    out = {}
    for split, classes in lists.items():
        missing = [c for c in classes if c not in index]
        if missing:
            raise NclabError(f"{where}: the standard {split} list names class {missing[0]!r}, which the data lacks")
        out[split] = np.array([index[c] for c in classes], dtype=np.int64)
    return out


def _resized(images: np.ndarray, size: int | None, kind: str, sources: list[Path]) -> np.ndarray:
    if size is None or size == images.shape[1]:
        return images
    if size < 1:
        raise NclabError(f"data.image_size: expected a positive size, got {size}")
    return cached_arrays(kind, {"size": size, "files": file_signature(sources)},
                         lambda: {"images": resize_area(images, size)})["images"]


def _read(cfg: DataConfig, name: str, lists: dict[str, list[str]], pickle_patterns: list[str]) -> Dataset:
    if not cfg.root:
        raise NclabError(f"data.root: {name} needs the folder of the CIFAR-100 python release or of the split pickles")
    root = Path(cfg.root)
    if not root.exists():
        raise NclabError(f"{root}: {name} data folder not found")
    root = resolve_root(root)
    checks: dict = {}
    folder = _release_folder(root)
    if folder is not None:
        sources = [folder / f for f in ("train", "test", "meta")]
        d = read_cifar100_release(folder)
        images, labels, names, groups = d["images"], d["labels"], d["class_names"], d["groups"]
        class_splits = _class_splits(lists, names, folder / "meta")
        md5_ok = {f: file_digest(folder / f, "md5") == m for f, m in CIFAR100_MD5.items()}
        checks["checksum"] = "ok (official MD5)" if all(md5_ok.values()) else (
            "differs from the official MD5 of " + ", ".join(f for f, ok in md5_ok.items() if not ok))
        meta = {"layout": "cifar-100-python", "root": str(folder)}
    else:
        files = find_split_pickles(root, pickle_patterns)
        if files is None:
            raise NclabError(f"{root}: expected cifar-100-python/{{train,test,meta}} or "
                             f"{pickle_patterns[0].format('{train,val,test}')} ({name})")
        sources = list(files.values())
        images, labels, names, class_splits, meta = read_split_pickles(files, CIFAR100_CLASSES)
        groups = [CIFAR100_SUPERCLASS_OF.get(n, "") for n in names]
        standard = {s: sorted(v) for s, v in lists.items()}
        checks["class_lists_standard"] = {s: sorted(names[i] for i in class_splits[s]) for s in class_splits} == standard
        checks["checksum"] = "unknown (no published checksums for the split pickles)"
    checks["labels_in_range"] = bool(labels.min() >= 0 and labels.max() < len(names))
    checks["class_lists_complete"] = True                # missing classes raise above
    counts = np.bincount(labels, minlength=len(names))
    checks["samples_per_class"] = [int(counts.min()), int(counts.max())]
    images = _resized(images, cfg.image_size, name, sources)
    meta.update(checks=checks, image_size=int(images.shape[1]))
    return Dataset(name=name, images=images, labels=labels, class_names=list(names), class_splits=class_splits,
                   groups=list(groups), flip=True, meta=meta)


@register_dataset("cifar-fs")
def read_cifar_fs(cfg: DataConfig) -> Dataset:
    """CIFAR-FS: CIFAR-100 classes, 64 source / 16 val / 20 novel (Bertinetto et al. 2019)."""
    return _read(cfg, "cifar-fs", CIFAR_FS, ["CIFAR_FS_{}.pickle", "{}.pickle"])


@register_dataset("fc100")
def read_fc100(cfg: DataConfig) -> Dataset:
    """FC-100: CIFAR-100 superclasses, 60 source / 20 val / 20 novel classes (Oreshkin et al. 2018)."""
    return _read(cfg, "fc100", FC100, ["FC100_{}.pickle", "{}.pickle"])


# --- CIFAR-10 -----------------------------------------------------------------------------------

CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
# MD5 of the official python release files (as torchvision checks them).
CIFAR10_MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
               "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
               "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
               "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"}


@register_dataset("cifar10")
def read_cifar10(cfg: DataConfig) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009), the official python release ``cifar-10-batches-py/``
    (``data.root`` is that folder, the folder holding it, or ``cifar-10-python.tar.gz``).

    A within-task dataset like MNIST: all 10 classes are source classes (val and novel empty);
    the five training batches and the test batch are pooled in that order (6,000 images per
    class, ``meta["parts"]``) and the per-class holdout (``data.holdout``, e.g. 1000) supplies
    the *test* split.
    """
    if not cfg.root:
        raise NclabError("data.root: cifar10 needs the folder of the CIFAR-10 python release (cifar-10-batches-py)")
    root = Path(cfg.root)
    if not root.exists():
        raise NclabError(f"{root}: cifar10 data folder not found")
    root = resolve_root(root)
    folder = next((f for f in (root / "cifar-10-batches-py", root)
                   if all((f / n).is_file() for n in (*CIFAR10_FILES, "batches.meta"))), None)
    if folder is None:
        raise NclabError(f"{root}: expected cifar-10-batches-py/{{data_batch_1..5,test_batch,batches.meta}} (cifar10)")
    meta_path = folder / "batches.meta"
    names = _names(meta_path, _dict_pickle(meta_path, ("label_names",)), "label_names")
    images, labels, parts = [], [], {}
    for part in CIFAR10_FILES:
        path = folder / part
        d = _dict_pickle(path, ("data", "labels"))
        data = d["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise NclabError(f"{path}: 'data' is {desc}, expected uint8 N x 3072 (3 x 32 x 32 planes)")
        try:
            lab = np.asarray(d["labels"], dtype=np.int64)
        except (TypeError, ValueError):
            raise NclabError(f"{path}: 'labels' must be a list of integers") from None
        if lab.shape != (len(data),):
            raise NclabError(f"{path}: 'labels' has {lab.size} entries, expected {len(data)} (one per image)")
        if len(lab) and (lab.min() < 0 or lab.max() >= len(names)):
            raise NclabError(f"{path}: label {int(lab.min() if lab.min() < 0 else lab.max())} out of range, "
                             f"expected 0..{len(names) - 1} ({meta_path})")
        images.append(data.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE).transpose(0, 2, 3, 1))
        labels.append(lab)
        parts[part] = len(lab)
    images_a, labels_a = np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)
    md5_ok = {f: file_digest(folder / f, "md5") == m for f, m in CIFAR10_MD5.items()}
    counts = np.bincount(labels_a, minlength=len(names))
    checks = {"checksum": "ok (official MD5)" if all(md5_ok.values()) else
              "differs from the official MD5 of " + ", ".join(f for f, ok in md5_ok.items() if not ok),
              "samples_per_class": [int(counts.min()), int(counts.max())]}
    sources = [folder / f for f in (*CIFAR10_FILES, "batches.meta")]
    images_a = _resized(images_a, cfg.image_size, "cifar10", sources)
    meta = {"layout": "cifar-10-batches-py", "root": str(folder), "parts": parts, "checks": checks,
            "image_size": int(images_a.shape[1])}
    return Dataset(name="cifar10", images=images_a, labels=labels_a, class_names=list(names),
                   class_splits={"source": np.arange(len(names))}, flip=True, meta=meta)
