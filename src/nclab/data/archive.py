"""Safe extraction of dataset archives (.zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz).

Every member must land inside the target folder: absolute names, ``..`` components,
symbolic / hard links and device files are refused (``NclabError`` naming the archive and
the member) before anything is written. Extraction goes to a temporary folder that is
renamed onto the target only when complete, so a corrupt archive leaves nothing behind.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from nclab.atomic import make_temp_dir, publish_dir
from nclab.data.cache import cache_dir
from nclab.errors import NclabError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive(path: str | os.PathLike) -> bool:
    return Path(path).is_file() and str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _check_member(archive: Path, name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in p.parts:
        raise NclabError(f"{archive}: member {name!r} would be written outside the target folder; refusing the archive")


def _members_zip(archive: Path, zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        _check_member(archive, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise NclabError(f"{archive}: member {info.filename!r} is a symbolic link; refusing the archive")


def _members_tar(archive: Path, tf: tarfile.TarFile) -> None:
    for m in tf.getmembers():
        _check_member(archive, m.name)
        if m.issym() or m.islnk():
            raise NclabError(f"{archive}: member {m.name!r} is a link to {m.linkname!r}; refusing the archive")
        if not (m.isfile() or m.isdir()):
            raise NclabError(f"{archive}: member {m.name!r} is not a regular file or folder; refusing the archive")


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``archive`` into the new folder ``dest`` (atomically); return ``dest``."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise NclabError(f"{dest}: extraction target already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(dest.parent, dest.name)
    try:
        try:
            if str(archive).lower().endswith(".zip"):
                with zipfile.ZipFile(archive) as zf:
                    _members_zip(archive, zf)
                    zf.extractall(tmp)
            else:
                with tarfile.open(archive) as tf:
                    _members_tar(archive, tf)
                    tf.extractall(tmp, filter="data")
        except NclabError:
            raise
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise NclabError(f"{archive}: corrupt or truncated archive ({type(e).__name__}: {e})") from None
        publish_dir(tmp, dest)                          # a concurrent extraction may have won
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def extracted(archive: str | os.PathLike) -> Path:
    """The cached extraction of ``archive`` (extracted on first use, keyed by path/size/mtime).
    A new extraction replaces the ones of earlier versions of the same file (another size or
    mtime: a re-download), which would otherwise stay in the cache for good."""
    archive = Path(archive).resolve()
    st = archive.stat()
    at = hashlib.sha256(str(archive).encode()).hexdigest()[:8]
    version = hashlib.sha256(f"{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:12]
    dest = cache_dir() / "extracted" / f"{archive.name}-{at}-{version}"
    if dest.is_dir():
        return dest
    extract(archive, dest)
    for old in dest.parent.glob(f"{glob.escape(archive.name)}-{at}-*"):
        if old != dest and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return dest


def resolve_root(root: str | os.PathLike) -> Path:
    """A dataset root folder; an archive file is replaced by its (cached) extraction."""
    return extracted(root) if is_archive(root) else Path(root)
