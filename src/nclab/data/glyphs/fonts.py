"""The font faces glyphs are drawn from, and rasterising one character in one face.

All faces ship with matplotlib (``mpl-data/fonts/ttf``): DejaVu Sans / Sans Mono / Serif in
four styles each, STIX General in four styles and the Computer Modern text faces. The
Computer Modern files use TeX's font encoding, so only their letters and digits (which sit
at their ASCII code points) are taken from them; STIX "NonUnicode", the STIX size variants,
the two one-purpose "Display" faces and LastResort (a box for every code point) are left out.

A raster is the glyph scaled so that the longer side of its ink bounding box is
``fill * size`` pixels, centred on the ink bounding box in a ``size x size`` canvas,
float32 in [0, 1] with ink = 1. Samples are distorted copies of these masters, so every
(character, face) pair is rasterised once per master size.
"""

from __future__ import annotations

import functools
import os
import string
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.ft2font import FT2Font, LoadFlags

_TEX_ALNUM = frozenset(map(ord, string.ascii_letters + string.digits))
_TEX_LETTERS = frozenset(map(ord, string.ascii_letters))


@dataclass(frozen=True)
class Face:
    """A font file, optionally limited to a set of code points (TeX-encoded fonts)."""

    file: str
    only: frozenset[int] | None = None

    @property
    def name(self) -> str:
        return self.file.removesuffix(".ttf")


FACES: tuple[Face, ...] = (
    Face("DejaVuSans.ttf"), Face("DejaVuSans-Bold.ttf"),
    Face("DejaVuSans-Oblique.ttf"), Face("DejaVuSans-BoldOblique.ttf"),
    Face("DejaVuSansMono.ttf"), Face("DejaVuSansMono-Bold.ttf"),
    Face("DejaVuSansMono-Oblique.ttf"), Face("DejaVuSansMono-BoldOblique.ttf"),
    Face("DejaVuSerif.ttf"), Face("DejaVuSerif-Bold.ttf"),
    Face("DejaVuSerif-Italic.ttf"), Face("DejaVuSerif-BoldItalic.ttf"),
    Face("STIXGeneral.ttf"), Face("STIXGeneralBol.ttf"),
    Face("STIXGeneralItalic.ttf"), Face("STIXGeneralBolIta.ttf"),
    Face("cmr10.ttf", _TEX_ALNUM), Face("cmb10.ttf", _TEX_ALNUM), Face("cmss10.ttf", _TEX_ALNUM),
    Face("cmti10.ttf", _TEX_ALNUM), Face("cmtt10.ttf", _TEX_ALNUM), Face("cmmi10.ttf", _TEX_LETTERS),
)

FILL = 0.8                      # longer side of the ink box / canvas side in a master raster
_PROBE_PT = 64.0                # size at which a glyph's box is measured before the final render


def font_dir() -> str:
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@functools.lru_cache(maxsize=None)
def _font(file: str) -> FT2Font:
    return FT2Font(os.path.join(font_dir(), file))


def face_charmap(face: Face) -> frozenset[int]:
    """Code points the face maps to a glyph other than .notdef."""
    ft = _font(face.file)
    cps = {cp for cp, gid in ft.get_charmap().items() if gid != 0}
    return frozenset(cps & face.only if face.only is not None else cps)


def has_outline(cp: int, face: Face) -> bool:
    """Whether ``face`` draws ``cp`` with a non-empty outline (cheap: no rasterising)."""
    ft = _font(face.file)
    ft.set_size(_PROBE_PT, 72)
    x0, y0, x1, y1 = ft.load_char(cp, flags=LoadFlags.NO_HINTING).bbox
    return x1 > x0 and y1 > y0


def _draw(ft: FT2Font, cp: int, pt: float) -> np.ndarray:
    """The glyph at ``pt`` points (72 dpi: 1 pt = 1 px) on a buffer with a generous margin."""
    ft.set_size(pt, 72)
    glyph = ft.load_char(cp, flags=LoadFlags.NO_HINTING)
    x0, y0, x1, y1 = glyph.bbox                       # 26.6 fixed point pixels
    w, h = (x1 - x0) // 64 + 1, (y1 - y0) // 64 + 1
    margin = max(w, h) // 2 + 4
    img = np.zeros((h + 2 * margin, w + 2 * margin), np.uint8)
    ft.draw_glyph_to_bitmap(img, margin, margin, glyph, antialiased=True)
    return img


def _ink_box(img: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(img.any(axis=1))
    cols = np.flatnonzero(img.any(axis=0))
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def rasterize(cp: int, face: Face, size: int, fill: float = FILL) -> np.ndarray | None:
    """Master raster of ``chr(cp)`` in ``face``: (size, size) float32, ink 1; None if the glyph has no ink.

    The glyph's outline box is measured at a probe size, then the glyph is drawn at the
    point size that makes the box's longer side ``fill * size`` pixels, so no resampling
    blurs the master. The ink (which lies inside the outline box) is centred.
    """
    ft = _font(face.file)
    ft.set_size(_PROBE_PT, 72)
    x0, y0, x1, y1 = ft.load_char(cp, flags=LoadFlags.NO_HINTING).bbox
    extent = max(x1 - x0, y1 - y0) / 64.0
    if extent <= 0:
        return None
    img = _draw(ft, cp, _PROBE_PT * fill * size / extent)
    box = _ink_box(img)
    if box is None:
        return None
    glyph = img[box[0]:box[1], box[2]:box[3]]
    h, w = min(glyph.shape[0], size), min(glyph.shape[1], size)
    top, left = (glyph.shape[0] - h) // 2, (glyph.shape[1] - w) // 2
    glyph = glyph[top:top + h, left:left + w]
    out = np.zeros((size, size), np.float32)
    r, c = (size - h) // 2, (size - w) // 2
    out[r:r + h, c:c + w] = glyph / np.float32(255.0)
    return out
