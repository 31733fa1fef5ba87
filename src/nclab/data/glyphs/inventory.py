"""Which characters become glyph classes: candidates the fonts draw, minus homoglyphs.

A candidate (:func:`scripts.is_candidate`) is kept when at least ``MIN_FACES`` faces draw
it (a glyph other than .notdef with a non-empty outline), so samples of every class vary in
face. Homoglyphs are found by rendering, not by a list. Each candidate is drawn in its
*reference face* (the first face of ``fonts.FACES`` that draws it: DejaVu Sans for most)
as a canonical raster: ink box centred and scaled to ``fonts.FILL`` of a ``CANON_SIZE``
square, the normalisation every sample gets before its distortion. The raster is compared
by its edges, which carry the shape whatever the amount of ink: with g(x) the forward
differences (horizontal and vertical) of x blurred by a Gaussian of ``CANON_SIGMA`` pixels,

    D(i, j) = ||g(x_i) - g(x_j)||^2 / ((||g(x_i)||^2 + ||g(x_j)||^2) / 2)

(0 for the same picture, 2 for unrelated edges, up to 4 for opposite ones). Candidates are
visited in code point order and one is kept iff ``D >= THRESHOLD`` to every kept one, so
the rule is deterministic and the earlier block wins: Latin "A" stays while Greek Alpha and
Cyrillic A go; "l" / "I", "T" / DOWN TACK, "p" / rho, "W" / "w" (the same picture once
the ink box is normalised) keep only the first. ``THRESHOLD`` = 0.3 sits between such
pairs (D <= 0.2) and distinct letters such as "C" / "G", "E" / "F", "S" / Cyrillic BE
(D >= 0.44). Characters whose NFKC form differs never become candidates.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from nclab.data.glyphs import fonts, scripts

MIN_FACES = 2
CANON_SIZE = 32
CANON_SIGMA = 1.0
THRESHOLD = 0.3


@dataclass(frozen=True)
class Inventory:
    """The kept classes in code point order, with the faces that draw each one."""

    codepoints: tuple[int, ...]
    faces: tuple[tuple[int, ...], ...]          # indices into fonts.FACES, per class
    scripts: tuple[str, ...]
    n_candidates: int
    n_dropped_homoglyphs: int

    def __len__(self) -> int:
        return len(self.codepoints)


def drawing_faces(min_faces: int = MIN_FACES) -> dict[int, tuple[int, ...]]:
    """Candidate code point -> indices of the faces that draw it, for candidates with >= min_faces faces."""
    maps = [fonts.face_charmap(f) for f in fonts.FACES]
    pool = sorted({cp for m in maps for cp in m if scripts.is_candidate(cp)})
    out = {}
    for cp in pool:
        faces = tuple(fi for fi, f in enumerate(fonts.FACES) if cp in maps[fi] and fonts.has_outline(cp, f))
        if len(faces) >= min_faces:
            out[cp] = faces
    return out


def edge_features(rasters: np.ndarray, sigma: float = CANON_SIGMA) -> np.ndarray:
    """g(x): (n, 2 * H * W) forward differences of the Gaussian-blurred rasters (n, H, W)."""
    blurred = gaussian_filter(rasters.astype(np.float32), (0, sigma, sigma), mode="constant")
    gx = np.diff(blurred, axis=2, append=0.0)
    gy = np.diff(blurred, axis=1, append=0.0)
    return np.concatenate([gx.reshape(len(rasters), -1), gy.reshape(len(rasters), -1)], axis=1)


def edge_distance(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """D(a, b) = ||f_a - g_b||^2 / ((||f_a||^2 + ||g_b||^2) / 2) for all rows a of f, b of g."""
    sf = np.einsum("ij,ij->i", f, f)[:, None]
    sg = np.einsum("ij,ij->i", g, g)[None, :]
    return np.maximum(sf + sg - 2.0 * (f @ g.T), 0.0) / ((sf + sg) / 2.0)


def reference_rasters(faces: dict[int, tuple[int, ...]]) -> dict[int, np.ndarray]:
    """Canonical raster of each code point in its reference face (the first face that draws ink)."""
    out = {}
    for cp, fis in faces.items():
        for fi in fis:
            r = fonts.rasterize(cp, fonts.FACES[fi], CANON_SIZE)
            if r is not None:
                out[cp] = r
                break
    return out


def select_classes(dist: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Greedy in index order: keep i iff dist[i, k] >= threshold for every kept k. Returns kept indices."""
    keep = np.zeros(len(dist), bool)
    for i in range(len(dist)):
        keep[i] = not (dist[i, :i][keep[:i]] < threshold).any()
    return np.flatnonzero(keep)


@functools.lru_cache(maxsize=1)
def build_inventory() -> Inventory:
    """The glyph classes (computed once per process; a few seconds)."""
    faces = drawing_faces()
    refs = reference_rasters(faces)
    cps = sorted(refs)
    feats = edge_features(np.stack([refs[cp] for cp in cps]))
    kept = select_classes(edge_distance(feats, feats))
    kcps = tuple(cps[i] for i in kept)
    return Inventory(codepoints=kcps, faces=tuple(faces[cp] for cp in kcps),
                     scripts=tuple(scripts.script_of(cp) for cp in kcps),
                     n_candidates=len(cps), n_dropped_homoglyphs=len(cps) - len(kept))
