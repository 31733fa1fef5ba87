"""Disk cache of arrays: decoded / resized datasets, keyed by the reader's parameters and the
identity (path, size, mtime) of its source files, and the features of a run's splits
(:func:`nclab.extract.features_of_split`, keyed by the network's weights and what else they depend
on; bounded in size, least recently used first).

A cache entry is a folder of ``.npy`` files (one per array) under
``cache_dir()/datasets/<kind>/<key>/``, written to a temporary folder and renamed into place:
a crash leaves no entry or a whole one. ``.npy`` rather than ``.npz`` because reading a
plain ``.npy`` goes straight from the file into the array (a 1.3 GB mini-ImageNet entry reads
2-3x faster than a zip member). An unreadable entry is rebuilt; an
unwritable cache folder only costs speed (a warning), never the load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from nclab.atomic import make_temp_dir, publish_dir
from nclab.data.cache import cache_dir
from nclab.errors import NclabError

CACHE_VERSION = 1
DATASET_CACHE_GB = 32.0


def cache_limit(env: str, default_gb: float, off: str) -> int:
    """Bytes from the environment variable ``env`` (GiB, default ``default_gb``; 0: ``off``)."""
    raw = os.environ.get(env)
    if raw is None:
        return int(default_gb * 2**30)
    try:
        gb = float(raw)
    except ValueError:
        gb = math.nan
    if not (math.isfinite(gb) and gb >= 0):
        raise NclabError(f"{env}={raw!r}: expected a size in GiB >= 0 (0: {off})")
    return int(gb * 2**30)


def dataset_cache_limit() -> int:
    """Bytes the decoded datasets of one kind (``datasets/<kind>``) may hold:
    ``NCLAB_DATASET_CACHE_GB`` (GiB, default DATASET_CACHE_GB; 0: decode on every load). Entries
    are keyed by the size and mtime of their source files, so a dataset copied or downloaded again
    leaves its old entry behind: the bound lets the least recently used go."""
    return cache_limit("NCLAB_DATASET_CACHE_GB", DATASET_CACHE_GB, "decode datasets on every load")


def file_signature(paths: Iterable[str | os.PathLike]) -> list[list]:
    """[resolved path, size, mtime_ns] of each file: changes whenever a source file does."""
    sig = []
    for p in paths:
        st = os.stat(p)
        sig.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return sig


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest (``md5``, ``sha256``, ...) of a file, read in 1 MiB blocks (published checksums)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_path(kind: str, params: dict) -> Path:
    """The entry folder of ``kind`` for ``params``."""
    blob = json.dumps({"v": CACHE_VERSION, "kind": kind, **params}, sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:24]
    return cache_dir() / "datasets" / kind / key


def _read_entry(path: Path) -> dict[str, np.ndarray] | None:
    files = sorted(path.glob("*.npy"))
    if not files:
        return None
    try:
        return {f.stem: np.load(f, allow_pickle=False) for f in files}
    except (OSError, ValueError, EOFError):
        return None


def _write_entry(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path.parent, path.name)
    try:
        for name, a in arrays.items():
            with open(tmp / f"{name}.npy", "wb") as fh:
                np.save(fh, a, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
        if path.exists():                               # an unreadable old entry
            shutil.rmtree(path, ignore_errors=True)
        publish_dir(tmp, path)                          # a concurrent writer may have won
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_arrays(kind: str, params: dict, build: Callable[[], dict[str, np.ndarray]],
                  limit_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The arrays ``build()`` returns, read from the cache when an entry for ``params`` exists.
    ``limit_bytes``: the entries of ``kind`` may hold at most this much; the least recently used
    ones go first (0: nothing is cached; None: :func:`dataset_cache_limit`)."""
    if limit_bytes is None:
        limit_bytes = dataset_cache_limit()
    path = cache_path(kind, params)
    if path.is_dir():
        arrays = _read_entry(path)
        if arrays is not None:
            with contextlib.suppress(OSError):
                os.utime(path)                          # recently used
            return arrays
    arrays = build()
    if limit_bytes == 0:
        return arrays
    try:
        _write_entry(path, arrays)
        _evict(path.parent, limit_bytes, keep=path)
    except OSError as e:
        warnings.warn(f"could not cache {kind} arrays in {path.parent}: {e}", stacklevel=2)
    return arrays


def _entry_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.npy"))


def _evict(folder: Path, limit_bytes: int, keep: Path) -> None:
    """Remove the least recently used entries of ``folder`` (not ``keep``, nor folders being
    written) until the rest hold at most ``limit_bytes``."""
    entries = [(d.stat().st_mtime, _entry_bytes(d), d) for d in folder.iterdir()
               if d.is_dir() and d != keep and not d.name.startswith(".")]
    total = _entry_bytes(keep) + sum(size for _, size, _ in entries)
    for _, size, d in sorted(entries):
        if total <= limit_bytes:
            break
        shutil.rmtree(d, ignore_errors=True)
        total -= size


def json_array(obj) -> np.ndarray:
    """A JSON-able object as a 0-d str array (npz-safe metadata without pickle)."""
    return np.array(json.dumps(obj))


def from_json_array(a: np.ndarray):
    return json.loads(str(a[()]))
