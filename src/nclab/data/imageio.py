"""Decoding image files into uint8 arrays, in parallel, with one-line errors for bad files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nclab.data.resize import resize_area
from nclab.errors import NclabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read_image(path: str | os.PathLike, channels: int, size: int | None = None) -> np.ndarray:
    """One image as uint8 (H, W) for ``channels=1`` (PIL "L") or (H, W, 3) for 3, optionally
    area-resized to ``size`` x ``size`` (:func:`nclab.data.resize.resize_area`)."""
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            a = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise NclabError(f"{path}: missing image file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise NclabError(f"{path}: corrupt or truncated image, expected a readable image file ({e})") from None
    if size is not None and a.shape[:2] != (size, size):
        a = resize_area(a[None], size)[0]
    return a


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def read_images(paths: Sequence[str | os.PathLike], channels: int, size: int | None = None,
                workers: int | None = None) -> np.ndarray:
    """Decode ``paths`` into one (N, H, W[, 3]) uint8 array; threads (PIL decodes without the GIL).

    Without ``size`` all images must share the first image's size.
    """
    if not len(paths):
        raise NclabError("no images to read")
    first = read_image(paths[0], channels, size)
    out = np.empty((len(paths),) + first.shape, dtype=np.uint8)
    out[0] = first

    def work(i: int) -> None:
        a = read_image(paths[i], channels, size)
        if a.shape != first.shape:
            raise NclabError(f"{paths[i]}: image is {a.shape[1]}x{a.shape[0]}, expected "
                             f"{first.shape[1]}x{first.shape[0]} like {Path(paths[0]).name} (or set data.image_size)")
        out[i] = a

    with ThreadPoolExecutor(workers or _workers()) as pool:
        for _ in pool.map(work, range(1, len(paths)), chunksize=64):
            pass
    return out
