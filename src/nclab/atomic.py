"""Atomic file output: write to a temporary file in the target folder, then rename.

A crash at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nclab.errors import NclabError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_dir(parent: Path, name: str) -> Path:
    """A fresh hidden folder in ``parent`` (usual permissions) to be renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def publish_dir(tmp: Path, dest: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``dest``. If another process published ``dest``
    first (same content by construction: a cache entry), keep theirs; ``tmp`` is then left for
    the caller to remove."""
    try:
        os.replace(tmp, dest)
    except OSError:
        if not dest.is_dir():
            raise


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and check we can write there."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NclabError(f"{p}: cannot create output folder (a file of that name exists)") from None
    except OSError as e:
        raise NclabError(f"{p}: cannot create output folder ({e.strerror})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise NclabError(f"{p}: output folder is not writable")
    return p


def check_target(path: str | os.PathLike) -> Path:
    """Refuse, before any work is done for it, an output path that cannot become a file: a
    folder, or a path through a file."""
    target = Path(path)
    if target.is_dir():
        raise NclabError(f"{target}: is a folder; expected the path of a file to write")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NclabError(f"{target}: {parent} is a file, not a folder")
            break
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    ``suffix`` keeps an extension on the temporary name for writers that insist on one
    (``np.savez`` appends ``.npz`` otherwise).
    """
    target = check_target(path)
    folder = ensure_writable_dir(target.parent if str(target.parent) else ".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + suffix, dir=folder)
    except OSError as e:
        raise NclabError(f"{target}: cannot write here ({e.strerror})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())        # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``writer(fh)`` on a binary file handle that becomes ``path`` on success."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer(fh)
