"""Generating the glyph images, and caching them on disk under a key of their parameters.

Sample j of class c is master raster (c, face_j) distorted by :mod:`distort`, with
face_j = perm_c[j mod n_faces(c)] cycling through a random permutation of the faces
that draw c. All randomness of class c comes from ``np.random.default_rng([seed, cp])``
(cp = its code point), so a class's samples are the same whichever subset of classes is
generated, and the same parameters and seed give bitwise-identical arrays.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from nclab.atomic import atomic_path
from nclab.data.cache import cache_dir
from nclab.data.glyphs import distort, fonts, scripts
from nclab.data.glyphs.inventory import Inventory, build_inventory
from nclab.errors import NclabError, check_memory

# Bump whenever a change alters the generated arrays (fonts rule, inventory, distortions).
GENERATOR_VERSION = 1
_CHUNK_PIXELS = 256 * 20 * 32 * 32    # master pixels per distortion batch (~20 MB float32)
MASTER_SIGMA = 0.7


@dataclass
class GlyphArrays:
    """Generated samples: ``images`` (N, S, S) uint8 with ink 255, ``labels`` (N,) class ids
    into ``codepoints`` (C,), samples grouped by class in class order."""

    images: np.ndarray
    labels: np.ndarray
    codepoints: np.ndarray

    @property
    def scripts(self) -> list[str]:
        return [scripts.script_of(int(cp)) for cp in self.codepoints]

    @property
    def class_names(self) -> list[str]:
        return [scripts.class_name(int(cp)) for cp in self.codepoints]


def _check(image_size: int, samples_per_class: int, max_classes: int | None) -> None:
    if not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise NclabError(f"data.image_size={image_size!r}: expected an integer >= 8 for glyphs")
    if not isinstance(samples_per_class, (int, np.integer)) or samples_per_class < 1:
        raise NclabError(f"data.samples_per_class={samples_per_class!r}: expected an integer >= 1")
    if max_classes is not None and max_classes < 1:
        raise NclabError(f"max_classes={max_classes!r}: expected an integer >= 1 or None")
    check_memory(samples_per_class * image_size ** 2,       # one class already (before the inventory is built)
                 f"glyphs at data.image_size={image_size}, data.samples_per_class={samples_per_class}")


def select(inv: Inventory, script_names: list[str] | None = None, max_classes: int | None = None) -> list[int]:
    """Indices of the inventory classes to generate: those of ``script_names`` (all if None),
    thinned to ``max_classes`` evenly spaced ones (so a small subset still spans the scripts)."""
    idx = list(range(len(inv)))
    if script_names is not None:
        unknown = sorted(set(script_names) - set(inv.scripts))
        if unknown:
            raise NclabError(f"glyph scripts {unknown}: unknown; valid: {sorted(set(inv.scripts))}")
        idx = [i for i in idx if inv.scripts[i] in set(script_names)]
    if max_classes is not None and max_classes < len(idx):
        pick = np.unique(np.linspace(0, len(idx) - 1, max_classes).round().astype(int))
        idx = [idx[i] for i in pick]
    return idx


def master_size(image_size: int) -> int:
    """Side of the master rasters: 32 up to 32 px output, 64 above (edges come from the level cut)."""
    return 32 if image_size <= 32 else 64


def blurred_master(cp: int, face: fonts.Face, size: int) -> np.ndarray | None:
    """Master raster blurred by a Gaussian of MASTER_SIGMA * size / 32 pixels (see :mod:`distort`)."""
    r = fonts.rasterize(cp, face, size)
    return None if r is None else gaussian_filter(r, MASTER_SIGMA * size / 32, mode="constant")


def generate_glyphs(image_size: int = 28, samples_per_class: int = 20, seed: int = 0, *,
                    script_names: list[str] | None = None, max_classes: int | None = None) -> GlyphArrays:
    """Render the glyph dataset (no cache): ``samples_per_class`` distorted samples of every class."""
    _check(image_size, samples_per_class, max_classes)
    inv = build_inventory()
    classes = select(inv, script_names, max_classes)
    check_memory(len(classes) * samples_per_class * image_size ** 2,
                 f"glyphs at data.image_size={image_size}, data.samples_per_class={samples_per_class}")
    m = master_size(image_size)
    n = samples_per_class
    images = np.empty((len(classes) * n, image_size, image_size), np.uint8)
    step = max(1, _CHUNK_PIXELS // (n * m * m))
    for start in range(0, len(classes), step):
        chunk = classes[start:start + step]
        rasters, params = [], []
        for i in chunk:
            cp = inv.codepoints[i]
            rng = np.random.default_rng([seed, cp])
            masters = {}
            for fi in rng.permutation(np.asarray(inv.faces[i])):
                r = blurred_master(cp, fonts.FACES[int(fi)], m)
                if r is not None:
                    masters[int(fi)] = r
            order = list(masters.values())
            rasters.extend(order[j % len(order)] for j in range(n))
            params.append(distort.draw_params(rng, n))
        out = distort.distort(torch.from_numpy(np.stack(rasters))[:, None], distort.concat_params(params), image_size)
        images[start * n:(start + len(chunk)) * n] = out
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), n)
    return GlyphArrays(images, labels, np.asarray([inv.codepoints[i] for i in classes], np.int64))


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of this package's source files: any change to the generator's code gives new
    cache keys, so a cache written by other code is never read as this code's output (a
    forgotten GENERATOR_VERSION bump once left stale arrays in use)."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def cache_key(image_size: int, samples_per_class: int, seed: int,
              script_names: list[str] | None = None, max_classes: int | None = None) -> str:
    """File name of the cached arrays: every parameter, the generator version, its source code,
    and the versions of the libraries that render (matplotlib: fonts) and distort (torch)."""
    params = {"version": GENERATOR_VERSION, "source": source_digest(), "torch": torch.__version__,
              "matplotlib": matplotlib.__version__, "image_size": int(image_size),
              "samples_per_class": int(samples_per_class), "seed": int(seed),
              "scripts": sorted(script_names) if script_names is not None else None, "max_classes": max_classes}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return f"glyphs-v{GENERATOR_VERSION}-{image_size}px-{samples_per_class}x-seed{seed}-{digest}.npz"


def _read_cache(path: Path, image_size: int, samples_per_class: int) -> GlyphArrays | None:
    """The cached arrays, or None if the file is missing or not a complete, consistent cache."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arr = GlyphArrays(z["images"], z["labels"], z["codepoints"])
            version = int(z["version"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    c = len(arr.codepoints)
    ok = (version == GENERATOR_VERSION and arr.images.dtype == np.uint8
          and arr.images.shape == (c * samples_per_class, image_size, image_size)
          and np.array_equal(arr.labels, np.repeat(np.arange(c), samples_per_class)))
    return arr if ok else None


def load_glyphs(image_size: int = 28, samples_per_class: int = 20, seed: int = 0, *,
                script_names: list[str] | None = None, max_classes: int | None = None,
                folder: str | Path | None = None) -> GlyphArrays:
    """The glyph arrays from the cache (``folder``, default ``cache_dir()/glyphs``), generated
    and written atomically on a miss; an unreadable or inconsistent cache file is regenerated."""
    _check(image_size, samples_per_class, max_classes)
    path = Path(folder if folder is not None else cache_dir() / "glyphs") / cache_key(
        image_size, samples_per_class, seed, script_names, max_classes)
    arr = _read_cache(path, image_size, samples_per_class)
    if arr is not None:
        return arr
    arr = generate_glyphs(image_size, samples_per_class, seed, script_names=script_names, max_classes=max_classes)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, images=arr.images, labels=arr.labels, codepoints=arr.codepoints,
                 version=np.int64(GENERATOR_VERSION))
    return arr
