"""Shared fixtures. The whole session uses one private cache folder (NCLAB_CACHE_DIR), so
tests never touch the user's cache and the glyphs are generated at most once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

_CACHE = os.environ.setdefault("NCLAB_CACHE_DIR", tempfile.mkdtemp(prefix="nclab-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def tiny_dataset(name: str = "tiny", classes: int = 12, per_class: int = 10, size: int = 16, seed: int = 0):
    """Random prototype images + noise, registered in-process only (fast loop tests)."""
    from nclab.data.base import Dataset
    rng = np.random.default_rng(seed)
    protos = rng.random((classes, size, size)) > 0.6
    imgs = np.concatenate([np.clip(protos[c] * 200 + rng.normal(0, 25, (per_class, size, size)), 0, 255)
                           for c in range(classes)]).astype(np.uint8)
    labels = np.repeat(np.arange(classes), per_class)
    n_src = classes // 2
    return Dataset(name, imgs, labels, [f"c{i:02d}" for i in range(classes)],
                   {"source": np.arange(n_src), "val": np.arange(n_src, n_src + 2),
                    "novel": np.arange(n_src + 2, classes)})


@pytest.fixture(scope="session")
def tiny_registered():
    """Register the ``tiny`` dataset for in-process runs; returns its name."""
    from nclab.data.registry import DATASETS, _ensure_readers
    _ensure_readers()
    DATASETS["tiny"] = lambda cfg: tiny_dataset()
    return "tiny"


@pytest.fixture(scope="session")
def rgb_registered():
    """Register ``tiny-rgb``: the tiny dataset's prototypes as mirror-asymmetric RGB images, on
    which a horizontal flip preserves the label (like natural images); returns its name."""
    from nclab.data.base import Dataset
    from nclab.data.registry import DATASETS, _ensure_readers
    base = tiny_dataset(seed=3)
    imgs = np.ascontiguousarray(np.stack([base.images, base.images[:, ::-1], 255 - base.images], axis=-1))
    _ensure_readers()
    DATASETS["tiny-rgb"] = lambda cfg: Dataset("tiny-rgb", imgs, base.labels, base.class_names,
                                               base.class_splits, flip=True)
    return "tiny-rgb"


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(_CACHE)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A cache folder of this test's own (``tmp_path/cache``), to inspect what a reader writes."""
    monkeypatch.setenv("NCLAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def cache_files(tmp_path):
    return sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "cache").rglob("*") if p.is_file())


def cache_entries(tmp_path):
    return sorted(p for p in (tmp_path / "cache").glob("datasets/*/*"))


class Crash(Exception):
    """Raised by :func:`crash_at`: a training process dying at an epoch's end (resume tests)."""


def crash_at(epoch: int):
    """An epoch callback that raises :class:`Crash` at ``epoch`` (after that epoch's training)."""
    def cb(ctx):
        if ctx.epoch == epoch:
            raise Crash()
    return cb
