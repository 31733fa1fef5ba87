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
def _gram_one(x, r, scale, K):  # pragma: no cover - compiled
    """K = diag(a) X X^T diag(a) for the rows X = x[r] (s x d), a = scale[r]: dot products
    accumulated in x's dtype (as a BLAS product would), K in float64; each pair computed once,
    four rows against one at a time."""
    s = r.shape[0]
    d = x.shape[1]
    zero = x.dtype.type(0)
    i = 0
    while i < s:
        m = min(4, s - i)
        x0 = x[r[i]]
        x1 = x[r[i + 1]] if m > 1 else x0
        x2 = x[r[i + 2]] if m > 2 else x0
        x3 = x[r[i + 3]] if m > 3 else x0
        for j in range(i + m):
            y = x[r[j]]
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
                    v = float(acc[u]) * float(scale[r[i + u]]) * float(scale[r[j]])
                    K[i + u, j] = v
                    K[j, i + u] = v
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
