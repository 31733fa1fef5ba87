"""Dataset readers by name: ``data.name=glyphs`` picks the reader registered as "glyphs"."""

from __future__ import annotations

from collections.abc import Callable

from nclab.config import DataConfig
from nclab.data.base import Dataset
from nclab.errors import unknown_name

Reader = Callable[[DataConfig], Dataset]
DATASETS: dict[str, Reader] = {}


def register_dataset(name: str) -> Callable[[Reader], Reader]:
    """Decorator: register ``reader(cfg: DataConfig) -> Dataset`` under ``name``."""
    def deco(fn: Reader) -> Reader:
        DATASETS[name] = fn
        return fn
    return deco


def _ensure_readers() -> None:
    # Importing the reader modules registers them; kept lazy so `nclab --help` stays fast.
    from nclab.data import cifar, folder, glyphs, miniimagenet, mnist, omniglot  # noqa: F401


def dataset_names() -> list[str]:
    _ensure_readers()
    return sorted(DATASETS)


def load_dataset(cfg: DataConfig) -> Dataset:
    """Read / generate the dataset named by ``cfg.name``."""
    _ensure_readers()
    if cfg.name not in DATASETS:
        raise unknown_name("dataset", cfg.name, DATASETS)
    return DATASETS[cfg.name](cfg)
