"""Where generated and converted datasets are cached: ``$NCLAB_CACHE_DIR`` or the user cache folder.

The cache holds *areas*: ``datasets/<kind>`` (decoded datasets, and ``datasets/features``: the
features of runs' splits), ``extracted`` (archives unpacked), ``glyphs`` (the generated default
dataset) and a few small files. :func:`cache_areas` takes stock of them and :func:`clear_cache`
removes some (``nclab cache``); everything in them is rebuilt on the next use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from nclab.errors import NclabError


def cache_dir() -> Path:
    """The cache root; ``NCLAB_CACHE_DIR`` overrides the platform's user cache folder."""
    env = os.environ.get("NCLAB_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir("nclab"))


@dataclass(frozen=True)
class CacheArea:
    name: str                  # datasets/omniglot, datasets/features, extracted, glyphs, a file's name
    path: Path
    entries: int               # entries of a folder (1 for a file)
    bytes: int                 # on disk
    last_used: float | None    # the newest entry's mtime (a cache hit touches dataset / feature entries)


def _disk_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk (allocated blocks where the system reports them: an extracted archive of
    small files takes several times its files' sizes)."""
    st = os.lstat(path)
    return st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size


def _tree_bytes(path: Path) -> int:
    if not path.is_dir():
        return _disk_bytes(path)
    total = 0
    for folder, _, files in os.walk(path):
        for f in files:
            try:
                total += _disk_bytes(os.path.join(folder, f))
            except OSError:                 # removed meanwhile (an eviction, another process)
                pass
    return total


def _area(name: str, path: Path) -> CacheArea:
    if not path.is_dir():
        return CacheArea(name, path, 1, _disk_bytes(path), path.lstat().st_mtime)
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]      # not entries being written
    return CacheArea(name, path, len(entries), _tree_bytes(path),
                     max((p.lstat().st_mtime for p in entries), default=None))


def cache_areas() -> list[CacheArea]:
    """The areas of the cache folder (none when it does not exist yet), by name."""
    root = cache_dir()
    if not root.is_dir():
        return []
    areas = []
    for p in root.iterdir():
        if p.name.startswith("."):
            continue
        if p.name == "datasets" and p.is_dir():
            areas += [_area(f"datasets/{k.name}", k) for k in p.iterdir() if not k.name.startswith(".")]
        else:
            areas.append(_area(p.name, p))
    return sorted(areas, key=lambda a: a.name)


def clear_cache(names: list[str] | None = None) -> list[CacheArea]:
    """Remove the named areas (all with ``names=None``); return what was removed. An unknown name
    is refused before anything is removed. Each area is first renamed away (one atomic step), so a
    process that looks it up meanwhile finds it whole or not at all, and builds its entry again."""
    areas = {a.name: a for a in cache_areas()}
    if names is not None:
        unknown = [n for n in names if n.strip("/") not in areas]
        if unknown:
            have = ", ".join(areas) or "none: the cache is empty"
            raise NclabError(f"cache area {unknown[0]!r} is not in {cache_dir()}: expected one of {have}")
        areas = {n: areas[n] for n in dict.fromkeys(n.strip("/") for n in names)}
    for a in areas.values():
        if a.path.is_dir():
            gone = Path(tempfile.mkdtemp(prefix=f".{a.path.name}.", suffix=".removing", dir=a.path.parent))
            os.replace(a.path, gone / a.path.name)
            shutil.rmtree(gone, ignore_errors=True)
        else:
            a.path.unlink(missing_ok=True)
    root = cache_dir()
    for left in [*root.glob(".*.removing"), *root.glob("datasets/.*.removing")]:   # an interrupted clear
        shutil.rmtree(left, ignore_errors=True)
    return list(areas.values())
