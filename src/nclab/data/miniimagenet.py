"""mini-ImageNet (Vinyals et al. 2016, split of Ravi & Larochelle 2017): 100 ImageNet classes x
600 images, 64 source / 16 val / 20 novel classes, 84x84 RGB. Read from

- ``images/`` plus ``{train,val,test}.csv`` (rows ``filename,label``, label = WordNet id);
- the same CSVs over a class-folder tree ``<root>/<wnid>/<filename>``;
- split folders without CSVs, ``<root>/{train,val,test}/<wnid>/<image>`` (files sorted);
- the RFS pickles ``miniImageNet_category_split_train_phase_train.pickle``,
  ``..._val.pickle``, ``..._test.pickle`` (keys ``data``, ``labels``, ``catname2label``),
  through :mod:`nclab.data.safe_pickle`.

``data.image_size`` (default 84) area-resizes. Decoding 60,000 JPEGs runs on a thread pool
(PIL decodes without the GIL); the decoded array is cached (atomic ``.npz`` keyed by the CSVs'
and image folders' size / mtime and the image size), so later loads are one file read.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from nclab.config import DataConfig
from nclab.data.archive import resolve_root
from nclab.data.base import Dataset
from nclab.data.cached import cached_arrays, file_signature
from nclab.data.class_lists import MINI_IMAGENET_COUNTS
from nclab.data.imageio import read_images
from nclab.data.registry import register_dataset
from nclab.data.resize import resize_area
from nclab.data.split_pickles import FILE_SPLITS, read_split_pickles
from nclab.errors import NclabError

DEFAULT_SIZE = 84
RFS_FILES = {"train": "miniImageNet_category_split_train_phase_train.pickle",
             "val": "miniImageNet_category_split_val.pickle",
             "test": "miniImageNet_category_split_test.pickle"}


def _read_csv(path: Path) -> list[tuple[str, str, int]]:
    """(filename, label, line number) rows of a Ravi & Larochelle split CSV."""
    rows = []
    with open(path, newline="") as fh:
        for ln, row in enumerate(csv.reader(fh), start=1):
            if not row or (ln == 1 and [c.strip().lower() for c in row] == ["filename", "label"]):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise NclabError(f"{path}:{ln}: expected a row filename,label, got {','.join(row)!r}")
            rows.append((row[0].strip(), row[1].strip(), ln))
    if not rows:
        raise NclabError(f"{path}: no rows; expected filename,label rows")
    return rows


def _listing(folder: Path, memo: dict[Path, frozenset]) -> frozenset:
    """File names in ``folder``: one directory read instead of a stat per image (60,000 stats
    cost seconds on a busy disk, also when the decoded arrays come from the cache)."""
    if folder not in memo:
        try:
            memo[folder] = frozenset(os.listdir(folder))
        except OSError:
            memo[folder] = frozenset()
    return memo[folder]


def _csv_layout(root: Path):
    """Paths, labels, class names, class splits of the CSV layouts (not yet decoded)."""
    paths, labels, names, class_splits, where = [], [], [], {}, {}
    images_dir = root / "images"
    listings: dict[Path, frozenset] = {}
    for split, f in FILE_SPLITS:
        csv_path = root / f"{f}.csv"
        start = len(names)
        index: dict[str, int] = {}
        for fname, label, ln in _read_csv(csv_path):
            if label not in index:
                if label in where:
                    raise NclabError(f"{csv_path}:{ln}: class {label!r} is also in {where[label]}; "
                                     "expected disjoint class splits")
                where[label] = csv_path.name
                index[label] = len(names)
                names.append(label)
            p = images_dir / fname
            if fname not in _listing(images_dir, listings):
                alt = root / label / fname
                if fname not in _listing(alt.parent, listings):
                    raise NclabError(f"{csv_path}:{ln}: image {fname!r} not found as {p} or {alt}")
                p = alt
            paths.append(p)
            labels.append(index[label])
        class_splits[split] = np.arange(start, len(names))
    return paths, np.array(labels, dtype=np.int64), names, class_splits


def _folder_layout(root: Path):
    """Paths, labels, class names, class splits of ``<root>/{train,val,test}/<wnid>/<image>``."""
    from nclab.data.folder import image_tree
    paths, labels, names, class_splits = [], [], [], {}
    for split, f in FILE_SPLITS:
        start = len(names)
        for wnid, files in image_tree(root / f).items():
            if wnid in names:
                raise NclabError(f"{root / f / wnid}: class {wnid!r} is in two split folders; expected disjoint splits")
            paths += files
            labels += [len(names)] * len(files)
            names.append(wnid)
        class_splits[split] = np.arange(start, len(names))
    return paths, np.array(labels, dtype=np.int64), names, class_splits


def _decode(paths: list[Path], size: int) -> dict[str, np.ndarray]:
    return {"images": read_images(paths, channels=3, size=size)}


@register_dataset("mini-imagenet")
def read_mini_imagenet(cfg: DataConfig) -> Dataset:
    """mini-ImageNet, 64 / 16 / 20 classes (Ravi & Larochelle 2017), RGB, default 84x84."""
    if not cfg.root:
        raise NclabError("data.root: mini-imagenet needs the folder with images/ and train/val/test.csv, "
                         "or the RFS miniImageNet_category_split_*.pickle files")
    root = Path(cfg.root)
    if not root.exists():
        raise NclabError(f"{root}: mini-imagenet data folder not found")
    root = resolve_root(root)
    size = cfg.image_size or DEFAULT_SIZE
    if size < 1:
        raise NclabError(f"data.image_size: expected a positive size, got {size}")
    checks: dict = {}
    csv_layout = all((root / f"{f}.csv").is_file() for _, f in FILE_SPLITS)
    if csv_layout or all((root / f).is_dir() for _, f in FILE_SPLITS):
        layout = "csv" if csv_layout else "split folders"
        paths, labels, names, class_splits = (_csv_layout if csv_layout else _folder_layout)(root)
        csvs = [root / f"{f}.csv" for _, f in FILE_SPLITS] if csv_layout else []
        folders = sorted({p.parent for p in paths})
        key = {"layout": layout, "size": size, "files": file_signature(csvs + folders)}
        images = cached_arrays("mini-imagenet", key, lambda: _decode(paths, size))["images"]
        meta = {"layout": layout, "root": str(root)}
        checks["checksum"] = "unknown (no published checksums for the images)"
    else:
        files = {s: root / RFS_FILES[f] for s, f in FILE_SPLITS}
        missing = [p for p in files.values() if not p.is_file()]
        if len(missing) == len(files):
            raise NclabError(f"{root}: expected train.csv, val.csv, test.csv (with images/ or class folders), "
                             "train/ val/ test/ class folders, or the RFS miniImageNet_category_split_*.pickle "
                             "files (mini-imagenet)")
        if missing:
            raise NclabError(f"{missing[0]}: missing; expected all three RFS split pickles")
        images, labels, names, class_splits, meta = read_split_pickles(files)
        if images.shape[1] != size:
            images = cached_arrays("mini-imagenet", {"layout": "pickles", "size": size,
                                                    "files": file_signature(list(files.values()))},
                                   lambda: {"images": resize_area(images, size)})["images"]
        checks["checksum"] = "unknown (no published checksums for the split pickles)"
    counts = np.bincount(labels, minlength=len(names))
    checks.update(labels_in_range=bool(labels.min() >= 0 and labels.max() < len(names)),
                  class_lists_complete=True,
                  standard_counts={s: len(v) for s, v in class_splits.items()} == MINI_IMAGENET_COUNTS,
                  samples_per_class=[int(counts.min()), int(counts.max())])
    meta.update(checks=checks, image_size=size)
    return Dataset(name="mini-imagenet", images=images, labels=labels, class_names=names,
                   class_splits=class_splits, groups=None, flip=True, meta=meta)
