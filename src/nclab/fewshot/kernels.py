"""Compiled CPU kernels of the few-shot engine (Numba; imported on first CPU use).

On a CPU, few-shot evaluation is many small products over rows picked at random from a large
feature matrix. Done with tensor ops, every episode's rows are first copied into a buffer for a
batched product, and those copies and the per-op overheads cost more than the arithmetic. These
kernels read the rows where they are, keep running sums in registers, and write only results:

- :func:`score_slots`: a slot's queries against its episode's class weights, counting hits
  (register blocks of four queries by two weight rows);
- :func:`centroids`: class centroids of scaled support rows;
- :func:`gram_rows`: support Gram matrices (each pair once);
- :func:`ridge_rows`: ridge regression per episode (Gram, Cholesky solve, weights) while the
  support rows are in cache.

Measured against the gather-and-``matmul`` loops they replace: BENCHMARKS.md. ``nogil``: the
worker threads of :mod:`nclab.parallel` run them side by side on chunks. Floating point: sums
may be reassociated (vectorised), so values differ from a BLAS product by rounding only and a
prediction changes only at an exact tie of two classes; NaN and inf propagate as usual.
"""

from __future__ import annotations

import numba
import numpy as np

_FLAGS = {"reassoc", "contract", "nsz", "arcp"}       # vectorised sums and FMA; NaN and inf kept


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False, inline="always")
def _dots4x2(x0, x1, x2, x3, w, v):  # pragma: no cover - compiled
    """The eight dot products of rows x0..x3 with rows w and v, accumulated in x's dtype: one
    pass over d with all eight sums in registers (the register block of the kernels below)."""
    zero = x0.dtype.type(0)
    a0 = zero
    a1 = zero
    a2 = zero
    a3 = zero
    e0 = zero
    e1 = zero
    e2 = zero
    e3 = zero
    for t in range(x0.shape[0]):
        wt = w[t]
        vt = v[t]
        a0 += x0[t] * wt
        a1 += x1[t] * wt
        a2 += x2[t] * wt
        a3 += x3[t] * wt
        e0 += x0[t] * vt
        e1 += x1[t] * vt
        e2 += x2[t] * vt
        e3 += x3[t] * vt
    return (a0, a1, a2, a3), (e0, e1, e2, e3)


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def score_slots(x, rows, inv, W, wrows, bias, labels, hits, lo, hi):  # pragma: no cover - compiled
    """For slots p in [lo, hi): hits[p] = #{i : argmax_c (x[rows[p, i]] . W[wrows[p, c]]
    + bias[p, c] * inv[p, i]) == labels[p]} (first maximum on ties). Register blocks of four
    query rows by two weight rows (an odd last class or a short last block is computed twice
    rather than branching in the inner loop)."""
    q = rows.shape[1]
    k = wrows.shape[1]
    s = np.empty((q, k), dtype=x.dtype)
    for p in range(lo, hi):
        c = 0
        while c < k:
            c2 = min(c + 1, k - 1)
            w = W[wrows[p, c]]
            v = W[wrows[p, c2]]
            b = bias[p, c]
            b2 = bias[p, c2]
            i = 0
            while i < q:
                i1 = min(i + 1, q - 1)
                i2 = min(i + 2, q - 1)
                i3 = min(i + 3, q - 1)
                x0 = x[rows[p, i]]
                x1 = x[rows[p, i1]]
                x2 = x[rows[p, i2]]
                x3 = x[rows[p, i3]]
                (a0, a1, a2, a3), (e0, e1, e2, e3) = _dots4x2(x0, x1, x2, x3, w, v)
                s[i, c] = a0 + b * inv[p, i]
                s[i1, c] = a1 + b * inv[p, i1]
                s[i2, c] = a2 + b * inv[p, i2]
                s[i3, c] = a3 + b * inv[p, i3]
                s[i, c2] = e0 + b2 * inv[p, i]
                s[i1, c2] = e1 + b2 * inv[p, i1]
                s[i2, c2] = e2 + b2 * inv[p, i2]
                s[i3, c2] = e3 + b2 * inv[p, i3]
                i += 4
            c += 2
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
def _gram_one(x, r, scale, K):  # pragma: no cover - compiled
    """K = diag(a) X X^T diag(a) for the rows X = x[r] (s x d), a = scale[r]: dot products
    accumulated in x's dtype (as a BLAS product would), K in float64; each pair computed once
    (up to a block edge), four rows against two at a time."""
    s = r.shape[0]
    i = 0
    while i < s:
        m = min(4, s - i)
        x0 = x[r[i]]
        x1 = x[r[i + 1]] if m > 1 else x0
        x2 = x[r[i + 2]] if m > 2 else x0
        x3 = x[r[i + 3]] if m > 3 else x0
        for j in range(0, i + m, 2):                   # two rows y, z at a time (z = y at the end)
            j2 = min(j + 1, i + m - 1)
            y = x[r[j]]
            z = x[r[j2]]
            acc_y, acc_z = _dots4x2(x0, x1, x2, x3, y, z)
            for jj, acc in ((j, acc_y), (j2, acc_z)):
                for u in range(m):
                    if jj <= i + u:
                        v = float(acc[u]) * float(scale[r[i + u]]) * float(scale[r[jj]])
                        K[i + u, jj] = v
                        K[jj, i + u] = v
        i += m


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def gram_rows(x, rows, scale, K, lo, hi):  # pragma: no cover - compiled
    """For episodes e in [lo, hi): K[e] = diag(a) X_e X_e^T diag(a), X_e = x[rows[e]], a = scale[rows[e]]."""
    for e in range(lo, hi):
        _gram_one(x, rows[e], scale, K[e])


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def ridge_rows(x, rows, scale, shot, alpha, intercept, W, b, lo, hi):  # pragma: no cover - compiled
    """Ridge regression to {-1, 1} one-hot targets for episodes e in [lo, hi), whose support
    rows[e] (s = k * shot) are class by class, rows scaled by ``scale``; the dual solution of
    :meth:`nclab.fewshot.heads.RidgeHead.fit_gram` for each episode while its rows are in cache:
    K = diag(a) X X^T diag(a); A = H (H K H + alpha I)^{-1} H (T - mean T) by Cholesky (float64);
    W[e k + c] = sum_t A[t, c] a_t x_t; b[e, c] = mean(T_c) - (1/s) 1^T K A_c (b = 0 and H = I
    without ``intercept``)."""
    s = rows.shape[1]
    d = x.shape[1]
    k = s // shot
    K = np.empty((s, s))
    L = np.empty((s, s))
    R = np.empty((s, k))
    rm = np.empty(s)
    acc = np.empty((k, d), dtype=W.dtype)
    ym = (2.0 * shot - s) / s if intercept else 0.0
    for e in range(lo, hi):
        r = rows[e]
        _gram_one(x, r, scale, K)
        tm = 0.0
        for i in range(s):
            v = 0.0
            for j in range(s):
                v += K[i, j]
            rm[i] = v / s if intercept else 0.0
            tm += rm[i]
        tm /= s
        for i in range(s):
            for j in range(s):
                L[i, j] = K[i, j] - rm[i] - rm[j] + tm
            L[i, i] += alpha
        for j in range(s):                                   # Cholesky, L lower triangular, in place
            v = L[j, j]
            for m in range(j):
                v -= L[j, m] * L[j, m]
            v = np.sqrt(v)
            L[j, j] = v
            for i in range(j + 1, s):
                u = L[i, j]
                for m in range(j):
                    u -= L[i, m] * L[j, m]
                L[i, j] = u / v
        for t in range(s):
            for c in range(k):
                R[t, c] = (1.0 if t // shot == c else -1.0) - ym
        for c in range(k):                                   # L y = R, then L^T z = y
            for i in range(s):
                v = R[i, c]
                for m in range(i):
                    v -= L[i, m] * R[m, c]
                R[i, c] = v / L[i, i]
            for i in range(s - 1, -1, -1):
                v = R[i, c]
                for m in range(i + 1, s):
                    v -= L[m, i] * R[m, c]
                R[i, c] = v / L[i, i]
            if intercept:
                mean = 0.0
                for i in range(s):
                    mean += R[i, c]
                mean /= s
                for i in range(s):
                    R[i, c] -= mean
            v = 0.0
            for i in range(s):
                v += rm[i] * R[i, c]
            b[e, c] = ym - v if intercept else 0.0
        acc[:] = 0
        for t in range(s):
            xr = x[r[t]]
            a = scale[r[t]]
            for c in range(k):
                f = W.dtype.type(R[t, c] * a)
                for u in range(d):
                    acc[c, u] += f * xr[u]
        for c in range(k):
            for u in range(d):
                W[e * k + c, u] = acc[c, u]


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def centroids(x, rows, scale, cosine, W, b, lo, hi):  # pragma: no cover - compiled
    """For p in [lo, hi): W[p] = mean_t scale[rows[p, t]] x[rows[p, t]] (a class centroid of
    scaled rows) and b[p] = -||W[p]||^2 / 2; with ``cosine``, W[p] / ||W[p]|| and b[p] = 0."""
    n = rows.shape[1]
    d = x.shape[1]
    acc = np.empty(d, dtype=W.dtype)
    for p in range(lo, hi):
        acc[:] = 0
        for t in range(n):
            xr = x[rows[p, t]]
            f = W.dtype.type(scale[rows[p, t]] / n)
            for u in range(d):
                acc[u] += f * xr[u]
        sq = 0.0
        for u in range(d):
            sq += float(acc[u]) * float(acc[u])
        if cosine:
            inv = W.dtype.type(1.0 / max(np.sqrt(sq), 1e-12))
            for u in range(d):
                W[p, u] = acc[u] * inv
            b[p] = 0.0
        else:
            for u in range(d):
                W[p, u] = acc[u]
            b[p] = -sq / 2
