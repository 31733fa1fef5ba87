"""Disk cache of decoded / resized dataset arrays, keyed by the reader's parameters and the
identity (path, size, mtime) of its source files.

A cache entry is one uncompressed ``.npz`` under ``cache_dir()/datasets/<kind>/``, written
atomically: a crash leaves no entry or a whole one. An unreadable entry is rebuilt; an
unwritable cache folder only costs speed (a warning), never the load.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from nclab.atomic import atomic_path
from nclab.data.cache import cache_dir
from nclab.errors import NclabError

CACHE_VERSION = 1


def file_signature(paths: Iterable[str | os.PathLike]) -> list[list]:
    """[resolved path, size, mtime_ns] of each file: changes whenever a source file does."""
    sig = []
    for p in paths:
        st = os.stat(p)
        sig.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return sig


def cache_path(kind: str, params: dict) -> Path:
    blob = json.dumps({"v": CACHE_VERSION, "kind": kind, **params}, sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:24]
    return cache_dir() / "datasets" / kind / f"{key}.npz"


def cached_arrays(kind: str, params: dict, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays ``build()`` returns, read from the cache when an entry for ``params`` exists."""
    path = cache_path(kind, params)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            pass                                        # unreadable entry: rebuild it below
    arrays = build()
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
    except (NclabError, OSError) as e:
        warnings.warn(f"could not cache {kind} arrays in {path.parent}: {e}", stacklevel=2)
    return arrays


def json_array(obj) -> np.ndarray:
    """A JSON-able object as a 0-d str array (npz-safe metadata without pickle)."""
    return np.array(json.dumps(obj))


def from_json_array(a: np.ndarray):
    return json.loads(str(a[()]))
