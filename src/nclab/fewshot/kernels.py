"""Compiled CPU kernel for scoring few-shot queries (Numba; imported on first CPU use).

Scoring a query of an episode against the episode's k class weights is 15-75 small dot
products of length d per slot. Done with tensor ops, each slot's query rows and weight rows
are first copied out of the feature matrix into a buffer for a batched product; on a CPU those
copies, and the per-chunk op overheads, cost more than the arithmetic. This kernel reads the
rows where they are and keeps the running scores in registers (four queries against one
weight row at a time), so each query row is read once per weight row from cache and nothing
is written but one count per slot: 1.5-2x faster than the gather-and-``matmul`` loop on this
project's 2-core machine (see BENCHMARKS.md). ``nogil``: the worker threads of
:mod:`nclab.parallel` run it side by side on chunks of slots.

Floating-point: sums may be reassociated (vectorised), so scores differ from a BLAS product
by rounding only; a prediction changes only at an exact tie of two classes.
"""

from __future__ import annotations

import numba
import numpy as np

_FLAGS = {"reassoc", "contract", "nsz", "arcp"}       # vectorised sums and FMA; NaN and inf kept


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def score_slots(x, rows, inv, W, wrows, bias, labels, hits, lo, hi):  # pragma: no cover - compiled
    """For slots p in [lo, hi): hits[p] = #{i : argmax_c (x[rows[p, i]] . W[wrows[p, c]]
    + bias[p, c] * inv[p, i]) == labels[p]} (first maximum on ties)."""
    q = rows.shape[1]
    k = wrows.shape[1]
    d = x.shape[1]
    s = np.empty((q, k), dtype=x.dtype)
    zero = x.dtype.type(0)
    for p in range(lo, hi):
        for c in range(k):
            w = W[wrows[p, c]]
            b = bias[p, c]
            i = 0
            while i + 4 <= q:
                x0 = x[rows[p, i]]
                x1 = x[rows[p, i + 1]]
                x2 = x[rows[p, i + 2]]
                x3 = x[rows[p, i + 3]]
                a0 = zero
                a1 = zero
                a2 = zero
                a3 = zero
                for t in range(d):
                    wt = w[t]
                    a0 += x0[t] * wt
                    a1 += x1[t] * wt
                    a2 += x2[t] * wt
                    a3 += x3[t] * wt
                s[i, c] = a0 + b * inv[p, i]
                s[i + 1, c] = a1 + b * inv[p, i + 1]
                s[i + 2, c] = a2 + b * inv[p, i + 2]
                s[i + 3, c] = a3 + b * inv[p, i + 3]
                i += 4
            while i < q:
                x0 = x[rows[p, i]]
                a0 = zero
                for t in range(d):
                    a0 += x0[t] * w[t]
                s[i, c] = a0 + b * inv[p, i]
                i += 1
        count = 0
        for i in range(q):
            best = 0
            for c in range(1, k):
                if s[i, c] > s[i, best]:
                    best = c
            if best == labels[p]:
                count += 1
        hits[p] = count


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def gram_rows(x, rows, scale, K, lo, hi):  # pragma: no cover - compiled
    """For episodes e in [lo, hi): K[e] = diag(a) X_e X_e^T diag(a), X_e = x[rows[e]] (s x d),
    a = scale[rows[e]]; dot products accumulated in x's dtype (as a BLAS product would), K in
    float64. Symmetric: each pair computed once, four rows against one at a time."""
    s = rows.shape[1]
    d = x.shape[1]
    zero = x.dtype.type(0)
    for e in range(lo, hi):
        i = 0
        while i < s:
            m = min(4, s - i)
            x0 = x[rows[e, i]]
            x1 = x[rows[e, i + 1]] if m > 1 else x0
            x2 = x[rows[e, i + 2]] if m > 2 else x0
            x3 = x[rows[e, i + 3]] if m > 3 else x0
            for j in range(i + m):
                y = x[rows[e, j]]
                a0 = zero
                a1 = zero
                a2 = zero
                a3 = zero
                for t in range(d):
                    yt = y[t]
                    a0 += x0[t] * yt
                    a1 += x1[t] * yt
                    a2 += x2[t] * yt
                    a3 += x3[t] * yt
                acc = (a0, a1, a2, a3)
                for u in range(m):
                    if j <= i + u:
                        v = float(acc[u]) * float(scale[rows[e, i + u]]) * float(scale[rows[e, j]])
                        K[e, i + u, j] = v
                        K[e, j, i + u] = v
            i += m

