"""Area (box) resampling of uint8 image batches: every output pixel is the mean of the input
area it covers, with fractional coverage at the edges (as OpenCV ``INTER_AREA`` and
``torch.nn.functional.interpolate(mode="area")`` for integer ratios, but exact for any ratio).

Output pixel i of a length-n -> length-m resize covers the input interval
[i n/m, (i+1) n/m); its value is sum_j |[j, j+1) intersect that interval| * x_j / (n/m).
The 2-D resize applies this along rows and columns: ``Y = A_h X A_w^T``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from nclab.errors import NclabError


@lru_cache(maxsize=64)
def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 weights of the 1-D area resize; each row sums to 1."""
    s = n_in / n_out
    edges = np.arange(n_out + 1) * s
    j = np.arange(n_in)[None, :]
    overlap = np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j)
    w = np.clip(overlap, 0.0, None) / s
    w.setflags(write=False)
    return w


def resize_area(images: np.ndarray, size: int | tuple[int, int], chunk: int = 1024) -> np.ndarray:
    """Resize uint8 images (N, H, W) or (N, H, W, C) to ``size`` x ``size`` by area averaging.

    Rounded to the nearest integer; deterministic (float64, fixed chunking). Returns the
    input unchanged (no copy) when it already has the requested size.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if images.ndim not in (3, 4):
        raise NclabError(f"expected (N,H,W) or (N,H,W,C) images, got shape {images.shape}")
    n, h, w = images.shape[:3]
    if (h, w) == (out_h, out_w):
        return images
    a_h, a_w_t = area_matrix(h, out_h), area_matrix(w, out_w).T
    out = np.empty((n, out_h, out_w) + images.shape[3:], dtype=np.uint8)
    for i in range(0, n, chunk):
        x = images[i:i + chunk].astype(np.float64)
        if x.ndim == 4:                                 # channels to the front for the matmuls
            x = x.transpose(0, 3, 1, 2)
        y = a_h @ x @ a_w_t
        if y.ndim == 4:
            y = y.transpose(0, 2, 3, 1)
        np.clip(np.rint(y), 0, 255, out=y)
        out[i:i + chunk] = y.astype(np.uint8)
    return out
