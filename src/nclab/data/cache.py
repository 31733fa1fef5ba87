"""Where generated and converted datasets are cached: ``$NCLAB_CACHE_DIR`` or the user cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """The cache root; ``NCLAB_CACHE_DIR`` overrides the platform's user cache folder."""
    env = os.environ.get("NCLAB_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir("nclab"))
