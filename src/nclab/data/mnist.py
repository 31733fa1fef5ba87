"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017) from their IDX files,
gzipped or not: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

10 classes of 28x28 grayscale, already ink-bright (digits / garments bright on black).
These sets serve neural-collapse studies on the training classes, so every class is a
source class (val and novel empty); the official train (60,000) and test (10,000) parts are
pooled in that order (``meta["parts"]``) and the per-class holdout of
:func:`nclab.data.base.holdout_split` supplies the *test* split.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from nclab.config import DataConfig
from nclab.data.base import Dataset
from nclab.data.cached import cached_arrays, file_signature
from nclab.data.class_lists import FASHION_MNIST_CLASSES, MNIST_CLASSES
from nclab.data.registry import register_dataset
from nclab.data.resize import resize_area
from nclab.errors import NclabError

FILES = {("train", "images"): "train-images-idx3-ubyte", ("train", "labels"): "train-labels-idx1-ubyte",
         ("test", "images"): "t10k-images-idx3-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}
# MD5 of the uncompressed IDX files of the official releases (compressed copies differ by
# gzip header: Debian re-compresses them).
MD5 = {
    "mnist": {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
              "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
              "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
              "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
    "fashion-mnist": {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                      "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
                      "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
                      "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
}
DEFAULT_ROOTS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}


def read_idx_bytes(path: Path) -> bytes:
    """The (decompressed) bytes of an IDX file."""
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise NclabError(f"{path}: corrupt or truncated file ({type(e).__name__}: {e})") from None


def read_idx(path: Path, ndim: int, raw: bytes | None = None) -> np.ndarray:
    """A uint8 IDX array (magic 0x0000 08 ndim, big-endian int32 dims, then the data)."""
    raw = read_idx_bytes(path) if raw is None else raw
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise NclabError(f"{path}: not a uint8 IDX file with {ndim} dimension(s) "
                         f"(expected magic 00 00 08 {ndim:02x}, got {raw[:4].hex(' ') or 'nothing'})")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise NclabError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if len(raw) != head + int(np.prod(dims)):
        raise NclabError(f"{path}: {len(raw) - head} data bytes, expected {int(np.prod(dims))} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _find(root: Path, base: str) -> Path:
    for name in (base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise NclabError(f"{root}: missing {base}[.gz] (IDX files {', '.join(FILES.values())})")


def _read(cfg: DataConfig, name: str, class_names: list[str]) -> Dataset:
    root = cfg.root or DEFAULT_ROOTS.get(name)
    if not root:
        raise NclabError(f"data.root: {name} needs the folder holding the IDX files {', '.join(FILES.values())}")
    root = Path(root)
    if not root.is_dir():
        raise NclabError(f"{root}: {name} data folder not found")
    paths = {k: _find(root, v) for k, v in FILES.items()}
    raw = {k: read_idx_bytes(p) for k, p in paths.items()}
    md5_ok = {FILES[k]: hashlib.md5(b).hexdigest() == MD5[name][FILES[k]] for k, b in raw.items()}
    images, labels, parts = [], [], {}
    for part in ("train", "test"):
        im = read_idx(paths[part, "images"], 3, raw[part, "images"])
        lab = read_idx(paths[part, "labels"], 1, raw[part, "labels"]).astype(np.int64)
        if len(im) != len(lab):
            raise NclabError(f"{paths[part, 'labels']}: {len(lab)} labels, expected {len(im)} "
                             f"(one per image of {paths[part, 'images'].name})")
        if len(lab) and lab.max() >= len(class_names):
            raise NclabError(f"{paths[part, 'labels']}: label {int(lab.max())} out of range, "
                             f"expected 0..{len(class_names) - 1}")
        images.append(im)
        labels.append(lab)
        parts[part] = len(lab)
    images, labels = np.concatenate(images), np.concatenate(labels)
    size = cfg.image_size
    if size is not None and size != images.shape[1]:
        if size < 1:
            raise NclabError(f"data.image_size: expected a positive size, got {size}")
        images = cached_arrays(name, {"size": size, "files": file_signature(paths.values())},
                               lambda: {"images": resize_area(images, size)})["images"]
    bad = [f for f, ok in md5_ok.items() if not ok]
    checksum = f"differs from the official MD5 of {', '.join(bad)}" if bad else "ok (official MD5)"
    del raw
    counts = np.bincount(labels, minlength=len(class_names))
    checks = {"checksum": checksum, "labels_in_range": True, "class_lists_complete": True,
              "samples_per_class": [int(counts.min()), int(counts.max())]}
    meta = {"layout": "idx", "root": str(root), "parts": parts, "image_size": int(images.shape[1]),
            "ink": "bright (native)", "checks": checks,
            "splits": "all classes are source; val and novel are empty"}
    ids = np.arange(len(class_names))
    return Dataset(name=name, images=np.ascontiguousarray(images), labels=labels, class_names=list(class_names),
                   class_splits={"source": ids, "val": ids[:0], "novel": ids[:0]},
                   groups=None, flip=False, meta=meta)


@register_dataset("mnist")
def read_mnist(cfg: DataConfig) -> Dataset:
    """MNIST digits 0-9 (LeCun et al. 1998), train + test pooled, all classes source."""
    return _read(cfg, "mnist", MNIST_CLASSES)


@register_dataset("fashion-mnist")
def read_fashion_mnist(cfg: DataConfig) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017), train + test pooled, all classes source; default root
    /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist)."""
    return _read(cfg, "fashion-mnist", FASHION_MNIST_CLASSES)
