"""Few-shot split pickles as MetaOptNet (Lee et al. 2019) and RFS (Tian et al. 2020) ship them:
one pickle per class split, a dict with ``data`` (N, H, W, 3) uint8 and ``labels`` (N ints),
optionally ``catname2label`` (class name -> label). Python-2 era files: latin-1 strings,
bytes keys. Read with :mod:`nclab.data.safe_pickle` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nclab.data import safe_pickle
from nclab.errors import NclabError

FILE_SPLITS = (("source", "train"), ("val", "val"), ("novel", "test"))


def find_split_pickles(root: Path, patterns: list[str]) -> dict[str, Path] | None:
    """{class split: file} for the first pattern (``{}`` = train / val / test) with all three files."""
    for pat in patterns:
        files = {s: root / pat.format(f) for s, f in FILE_SPLITS}
        if all(p.is_file() for p in files.values()):
            return files
    return None


def read_split_pickle(path: Path) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """(images (N, H, W, 3) uint8, labels (N,) int64, catname2label or None) of one file."""
    obj = safe_pickle.load(path)
    if not isinstance(obj, dict):
        raise NclabError(f"{path}: expected a dict with keys 'data' and 'labels', got {type(obj).__name__}")
    obj = safe_pickle.as_str_keys(obj)
    for key in ("data", "labels"):
        if key not in obj:
            raise NclabError(f"{path}: no key {key!r}; expected keys 'data' (N x H x W x 3 uint8) and 'labels'")
    data = obj["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 4 or data.shape[3] != 3:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise NclabError(f"{path}: 'data' is {desc}, expected uint8 N x H x W x 3")
    try:
        labels = np.asarray(obj["labels"])
    except (TypeError, ValueError):
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise NclabError(f"{path}: 'labels' must be {len(data)} integers (one per image), got "
                         f"{labels.dtype} {labels.shape}")
    if len(labels) and labels.min() < 0:
        raise NclabError(f"{path}: label {int(labels.min())} out of range, expected labels >= 0")
    cat = obj.get("catname2label")
    if cat is not None:
        if not isinstance(cat, dict):
            raise NclabError(f"{path}: 'catname2label' must map class names to labels")
        cat = {(k.decode("latin1") if isinstance(k, bytes) else str(k)): int(v) for k, v in cat.items()}
    return data, labels.astype(np.int64), cat


def read_split_pickles(files: dict[str, Path], names: list[str] | None = None):
    """Pool the three files: (images, labels, class_names, class_splits, info).

    Classes are (split, raw label) pairs in file order train, val, test and ascending label.
    When the raw labels are global (no label in two files) and ``names`` is given, class
    ``l`` is named ``names[l]``; ``catname2label`` names classes when present; otherwise
    ``"<file split>/<label>"``.
    """
    parts = {s: read_split_pickle(p) for s, p in files.items()}
    shapes = {parts[s][0].shape[1:] for s in parts}
    if len(shapes) != 1:
        raise NclabError(f"{files['source'].parent}: the split pickles hold images of different sizes {sorted(shapes)}")
    raw = {s: np.unique(parts[s][1]) for s in parts}
    all_raw = np.concatenate(list(raw.values()))
    global_labels = len(np.unique(all_raw)) == len(all_raw)
    images, labels, class_names, class_splits = [], [], [], {}
    for s, f in FILE_SPLITS:
        data, lab, cat = parts[s]
        inv = {v: k for k, v in (cat or {}).items()}
        start = len(class_names)
        for lbl in raw[s]:
            if lbl in inv:
                class_names.append(inv[lbl])
            elif global_labels and names is not None:
                if lbl >= len(names):
                    raise NclabError(f"{files[s]}: label {int(lbl)} out of range, expected 0..{len(names) - 1}")
                class_names.append(names[lbl])
            else:
                class_names.append(f"{f}/{int(lbl)}")
        class_splits[s] = np.arange(start, len(class_names))
        images.append(data)
        labels.append(start + np.searchsorted(raw[s], lab))
    if len(set(class_names)) != len(class_names):
        raise NclabError(f"{files['source'].parent}: the split pickles name a class twice across train/val/test")
    info = {"layout": "split pickles", "files": {s: str(p) for s, p in files.items()},
            "global_labels": bool(global_labels)}
    return np.concatenate(images), np.concatenate(labels), class_names, class_splits, info
