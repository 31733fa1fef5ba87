"""Any image tree as a dataset: every leaf folder (no subfolders) holding images is a class,
named by its path relative to the root (``a/b/c``), classes sorted by name, files sorted.

- :func:`load_image_folder` reads such a tree as an :class:`~nclab.data.base.ImageSet`,
  converted to grayscale or RGB and optionally area-resized, pixel values untouched (no
  polarity change): ``nclab features RUN --folder DIR`` applies the run's own preprocessing.
- the ``folder`` reader (``data.name=folder data.root=DIR``) makes it a :class:`Dataset`:
  all classes are source unless ``data.split=FILE`` names a split file, one ``class,split``
  (or ``class<TAB>split``) row per class, split in source / val / novel (train / val / test
  also accepted); classes the file does not list are left out. Grayscale when every image
  is grayscale, else RGB; horizontal flips allowed for RGB only. Cached like the other readers.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nclab.config import DataConfig
from nclab.data.archive import resolve_root
from nclab.data.base import Dataset, ImageSet
from nclab.data.cached import cached_arrays, file_signature
from nclab.data.imageio import IMAGE_SUFFIXES, read_images
from nclab.data.registry import register_dataset
from nclab.errors import NclabError

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
SPLIT_ALIASES = {"source": "source", "train": "source", "val": "val", "novel": "novel", "test": "novel"}


def image_tree(root: str | os.PathLike) -> dict[str, list[Path]]:
    """{class name (leaf folder relative to root, posix): sorted image files}, sorted by class."""
    root = Path(root)
    if not root.is_dir():
        raise NclabError(f"{root}: image folder not found")
    classes: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if dirnames:
            continue
        files = sorted(Path(dirpath) / f for f in filenames
                       if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES))
        if files:
            classes[Path(dirpath).relative_to(root).as_posix()] = files
    if not classes or "." in classes:
        raise NclabError(f"{root}: expected class subfolders holding images (class = leaf folder)")
    return dict(sorted(classes.items()))


def _channels(paths: list[Path]) -> int:
    """1 if every image is grayscale (read from the headers only), else 3."""
    for p in paths:
        try:
            with Image.open(p) as im:
                gray = im.mode in GRAY_MODES or (im.mode == "P" and _gray_palette(im))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise NclabError(f"{p}: corrupt or truncated image, expected a readable image file ({e})") from None
        if not gray:
            return 3
    return 1


def _gray_palette(im: Image.Image) -> bool:
    pal = np.asarray(im.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    return bool(len(pal)) and bool((pal == pal[:, :1]).all())


def _load(tree: dict[str, list[Path]], image_size: int | None, channels: int) -> ImageSet:
    if channels not in (1, 3):
        raise NclabError(f"channels: expected 1 (grayscale) or 3 (RGB), got {channels}")
    if image_size is not None and image_size < 1:
        raise NclabError(f"image_size: expected a positive size, got {image_size}")
    paths = [p for files in tree.values() for p in files]
    labels = np.repeat(np.arange(len(tree)), [len(f) for f in tree.values()])
    return ImageSet(read_images(paths, channels, image_size), labels, list(tree))


def load_image_folder(root: str | os.PathLike, image_size: int | None, channels: int) -> ImageSet:
    """Every image under the leaf folders of ``root`` (class = leaf folder, sorted), as uint8
    grayscale (``channels=1``, N x H x W) or RGB (3, N x H x W x 3), area-resized to
    ``image_size`` x ``image_size`` if given (else all images must share one size).
    No polarity change."""
    return _load(image_tree(resolve_root(root)), image_size, channels)


def read_split_file(path: Path, classes: list[str]) -> dict[str, list[str]]:
    """{source / val / novel: class names} from a ``class,split`` file; every class must exist."""
    if not path.is_file():
        raise NclabError(f"data.split: split file {path} not found; expected class,split rows")
    known = set(classes)
    out: dict[str, list[str]] = {"source": [], "val": [], "novel": []}
    seen: dict[str, int] = {}
    text = path.read_text()
    dialect = csv.excel_tab if "\t" in text and "," not in text else csv.excel
    for ln, row in enumerate(csv.reader(text.splitlines(), dialect), start=1):
        row = [c.strip() for c in row]
        if not row or not row[0] or row[0].startswith("#") or (ln == 1 and row[:2] == ["class", "split"]):
            continue
        if len(row) != 2 or row[1].lower() not in SPLIT_ALIASES:
            raise NclabError(f"{path}:{ln}: expected class,split with split in source/val/novel, got {','.join(row)!r}")
        name = row[0].strip("/")
        if name not in known:
            raise NclabError(f"{path}:{ln}: class {name!r} is not a leaf folder of the data")
        if name in seen:
            raise NclabError(f"{path}:{ln}: class {name!r} already listed on line {seen[name]}")
        seen[name] = ln
        out[SPLIT_ALIASES[row[1].lower()]].append(name)
    return out


@register_dataset("folder")
def read_folder(cfg: DataConfig) -> Dataset:
    """An image tree (class = leaf folder); ``data.split=FILE`` assigns classes to splits."""
    if not cfg.root:
        raise NclabError("data.root: the folder reader needs the root of an image tree (class = leaf folder)")
    root = Path(cfg.root)
    if not root.exists():
        raise NclabError(f"{root}: image folder not found")
    root = resolve_root(root)
    tree = image_tree(root)
    if cfg.split:
        lists = read_split_file(Path(cfg.split), list(tree))
        keep = sorted(c for v in lists.values() for c in v)
        tree = {c: tree[c] for c in keep}
    else:
        lists = {"source": list(tree), "val": [], "novel": []}
    paths = [p for files in tree.values() for p in files]
    channels = _channels(paths)
    key = {"size": cfg.image_size, "channels": channels, "classes": list(tree),
           "files": file_signature([root / c for c in tree] + ([Path(cfg.split)] if cfg.split else []))}
    arrays = cached_arrays("folder", key, lambda: {"images": _load(tree, cfg.image_size, channels).images})
    names = list(tree)
    index = {c: i for i, c in enumerate(names)}
    labels = np.repeat(np.arange(len(names)), [len(f) for f in tree.values()])
    class_splits = {s: np.array([index[c] for c in v], dtype=np.int64) for s, v in lists.items()}
    counts = np.bincount(labels, minlength=len(names))
    meta = {"layout": "image folder", "root": str(root), "split_file": cfg.split, "channels": channels,
            "checks": {"checksum": "unknown (no checksums for an image folder)", "labels_in_range": True,
                       "class_lists_complete": True, "samples_per_class": [int(counts.min()), int(counts.max())]}}
    groups = [c.rsplit("/", 1)[0] if "/" in c else "" for c in names]
    return Dataset(name="folder", images=arrays["images"], labels=labels, class_names=names,
                   class_splits=class_splits, groups=groups if any(groups) else None,
                   flip=channels == 3, meta=meta)
