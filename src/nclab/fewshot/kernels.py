"""Compiled CPU kernels of the few-shot engine (Numba; imported on first CPU use).

On a CPU, few-shot evaluation is many small products over rows picked at random from a large
feature matrix. Done with tensor ops, every episode's rows are first copied into a buffer for a
batched product, and those copies and the per-op overheads cost more than the arithmetic. These
kernels read the rows where they are, keep running sums in registers, and write only results:

- :func:`score_slots`: a slot's queries against its episode's class weights, counting hits;
- :func:`centroids`: class centroids of scaled support rows;
- :func:`gram_rows`: support Gram matrices (each pair once);
- :func:`ridge_rows`: ridge regression per episode (Gram, Cholesky solve, weights) while the
  support rows are in cache, the small solves of eight episodes at once in SIMD lanes.

Products run in register blocks of three rows by five (:func:`_dots3x5`: 8 loads per 15
multiply-adds). With ``l2`` (the default transform), a kernel takes the norm of each row it reads
from the row itself, while it is in cache, instead of a pass over all N rows beforehand.

Measured against the gather-and-``matmul`` loops they replace: BENCHMARKS.md. ``nogil``: the
worker threads of :mod:`nclab.parallel` run them side by side on chunks. Floating point: sums
may be reassociated (vectorised), so values differ from a BLAS product by rounding only and a
prediction changes only at an exact tie of two classes; NaN and inf propagate as usual.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_FLAGS = {"reassoc", "contract", "nsz", "arcp"}       # vectorised sums and FMA; NaN and inf kept


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False, inline="always")
def _norm(sq):  # pragma: no cover - compiled
    """max(sqrt(sq), 1e-12) for a squared norm sq: 1 / this is the "l2" transform's row scale
    (as in the engine's row-norm pass)."""
    return max(np.sqrt(sq), 1e-12)


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False, inline="always")
def _inverse_norm(xr):  # pragma: no cover - compiled
    """1 / max(||xr||, 1e-12) in xr's dtype: the "l2" row scale of row xr."""
    sq = xr.dtype.type(0)
    for u in range(xr.shape[0]):
        sq += xr[u] * xr[u]
    return xr.dtype.type(1.0 / _norm(sq))


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False, inline="always")
def _dots3x5(x0, x1, x2, w0, w1, w2, w3, w4):  # pragma: no cover - compiled
    """The 15 dot products of rows x0..x2 with rows w0..w4, and ||x0||^2..||x2||^2, accumulated
    in x's dtype: one pass over d with all 18 sums in registers (the register block of the
    kernels; sums of a repeated row, or not used by the caller, are left out by the compiler)."""
    z = x0.dtype.type(0)
    a0 = a1 = a2 = a3 = a4 = z
    b0 = b1 = b2 = b3 = b4 = z
    c0 = c1 = c2 = c3 = c4 = z
    n0 = n1 = n2 = z
    for t in range(x0.shape[0]):
        y0 = x0[t]
        y1 = x1[t]
        y2 = x2[t]
        v0 = w0[t]
        v1 = w1[t]
        v2 = w2[t]
        v3 = w3[t]
        v4 = w4[t]
        a0 += y0 * v0
        a1 += y0 * v1
        a2 += y0 * v2
        a3 += y0 * v3
        a4 += y0 * v4
        b0 += y1 * v0
        b1 += y1 * v1
        b2 += y1 * v2
        b3 += y1 * v3
        b4 += y1 * v4
        c0 += y2 * v0
        c1 += y2 * v1
        c2 += y2 * v2
        c3 += y2 * v3
        c4 += y2 * v4
        n0 += y0 * y0
        n1 += y1 * y1
        n2 += y2 * y2
    return ((a0, a1, a2, a3, a4), (b0, b1, b2, b3, b4), (c0, c1, c2, c3, c4)), (n0, n1, n2)


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def score_slots(x, idx, n, order, scale, l2, W, bias, hits, lo, hi):  # pragma: no cover - compiled
    """Query hits of the slots order[lo:hi] (slot s = e k + j: class position j of episode e,
    whose rows are idx[e, j], n support rows then q queries): hits[s] = #{i : argmax_c
    (x_i . W[e k + c] + bias[e k + c] m_i) == j} (first maximum on ties) for the queries x_i,
    m_i = 1 / scale[row i] or, with ``l2``, max(||x_i||, 1e-12) taken from the row here. Register
    blocks of three query rows by five weight rows (a short last block repeats a row; more than
    five classes take passes of five, the norms coming from the first)."""
    k = idx.shape[1]
    q = idx.shape[2] - n
    sc = np.empty((q, k), dtype=x.dtype)
    m = np.empty(q, dtype=x.dtype)
    one = x.dtype.type(1)
    for p in range(lo, hi):
        slot = order[p]
        e = slot // k
        rows = idx[e, slot - e * k, n:]
        Wb = W[e * k:(e + 1) * k]
        bb = bias[e * k:(e + 1) * k]
        for c in range(0, k, 5):
            cs = (c, min(c + 1, k - 1), min(c + 2, k - 1), min(c + 3, k - 1), min(c + 4, k - 1))
            for i in range(0, q, 3):
                ii = (i, min(i + 1, q - 1), min(i + 2, q - 1))
                dots, sq = _dots3x5(x[rows[ii[0]]], x[rows[ii[1]]], x[rows[ii[2]]],
                                    Wb[cs[0]], Wb[cs[1]], Wb[cs[2]], Wb[cs[3]], Wb[cs[4]])
                if c == 0:
                    for u in range(3):
                        m[ii[u]] = _norm(sq[u]) if l2 else one / scale[rows[ii[u]]]
                for u in range(3):
                    for v in range(5):
                        sc[ii[u], cs[v]] = dots[u][v] + bb[cs[v]] * m[ii[u]]
        count = 0
        for i in range(q):
            best = 0
            for c in range(1, k):
                if sc[i, c] > sc[i, best]:
                    best = c
            if best == slot - e * k:
                count += 1
        hits[slot] = count


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def _gram_one(x, r, scale, l2, a, K):  # pragma: no cover - compiled
    """K = diag(a) X X^T diag(a) for the rows X = x[r] (s x d) and their scales a (written to
    ``a``): a_t = scale[r[t]] or, with ``l2``, 1 / max(||x_t||, 1e-12) from the diagonal of
    X X^T. Dot products accumulated in x's dtype (as a BLAS product would), K in float64; the
    lower triangle in blocks of three rows against five (pairs at a block edge twice)."""
    s = r.shape[0]
    for t in range(s):
        a[t] = 1.0 if l2 else float(scale[r[t]])
    for j in range(0, s, 5):                       # column blocks of five rows w, row blocks of three
        js = (j, min(j + 1, s - 1), min(j + 2, s - 1), min(j + 3, s - 1), min(j + 4, s - 1))
        w0 = x[r[js[0]]]
        w1 = x[r[js[1]]]
        w2 = x[r[js[2]]]
        w3 = x[r[js[3]]]
        w4 = x[r[js[4]]]
        for i in range(j, s, 3):                   # rows i >= j: the lower triangle, by blocks
            ii = (i, min(i + 1, s - 1), min(i + 2, s - 1))
            dots, _ = _dots3x5(x[r[ii[0]]], x[r[ii[1]]], x[r[ii[2]]], w0, w1, w2, w3, w4)
            for u in range(3):
                for v in range(5):
                    if js[v] <= ii[u]:
                        K[ii[u], js[v]] = float(dots[u][v])
    if l2:
        for t in range(s):
            a[t] = float(x.dtype.type(1.0 / _norm(x.dtype.type(K[t, t]))))
    for t in range(s):
        for u in range(t + 1):
            v = K[t, u] * a[t] * a[u]
            K[t, u] = v
            K[u, t] = v


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def gram_rows(x, rows, scale, K, lo, hi):  # pragma: no cover - compiled
    """For episodes e in [lo, hi): K[e] = diag(a) X_e X_e^T diag(a), X_e = x[rows[e]], a = scale[rows[e]]."""
    a = np.empty(rows.shape[1])
    for e in range(lo, hi):
        _gram_one(x, rows[e], scale, False, a, K[e])


# The small dense solves of ridge_rows run on eight episodes at once, one per SIMD lane: arrays
# of shape (..., 8) float64 hold a lane vector in their last axis, and the two intrinsics below
# work on such vectors, numbered in the flat data of an array (vector v = elements 8 v .. 8 v + 7).
# (Numba leaves LLVM's straight-line vectoriser off, and the loop vectoriser does not pay off on
# loops of eight; these emit the <8 x double> operations directly, on any x86-64 or other CPU.)
_LANES = 8
_V8 = ir.VectorType(ir.DoubleType(), _LANES)


def _v8_base(context, builder, aryty, value):
    return builder.bitcast(context.make_array(aryty)(context, builder, value).data, _V8.as_pointer())


@intrinsic
def _lanes_fnma(typingctx, dst, d, a, a0, astep, b, b0, bstep, n):
    """dst[d] -= sum_{m < n} a[a0 + m astep] * b[b0 + m bstep], lane by lane (vectors of 8
    float64, numbered as above; products added in order, each with one rounding or fused)."""
    def codegen(context, builder, sig, args):
        pd = _v8_base(context, builder, sig.args[0], args[0])
        pa = _v8_base(context, builder, sig.args[2], args[2])
        pb = _v8_base(context, builder, sig.args[5], args[5])
        dptr = builder.gep(pd, [args[1]])
        acc = cgutils.alloca_once(builder, _V8)
        builder.store(builder.load(dptr, align=8), acc)
        with cgutils.for_range(builder, args[8]) as loop:
            m = loop.index
            va = builder.load(builder.gep(pa, [builder.add(args[3], builder.mul(m, args[4]))]), align=8)
            vb = builder.load(builder.gep(pb, [builder.add(args[6], builder.mul(m, args[7]))]), align=8)
            builder.store(builder.fsub(builder.load(acc), builder.fmul(va, vb, flags=("contract",)),
                                       flags=("contract",)), acc)
        builder.store(builder.load(acc), dptr, align=8)
        return context.get_dummy_value()
    return types.void(dst, d, a, a0, astep, b, b0, bstep, n), codegen


@intrinsic
def _lanes_mul(typingctx, dst, d, a, a0):
    """dst[d] *= a[a0], lane by lane (vectors of 8 float64, numbered as above)."""
    def codegen(context, builder, sig, args):
        dptr = builder.gep(_v8_base(context, builder, sig.args[0], args[0]), [args[1]])
        va = builder.load(builder.gep(_v8_base(context, builder, sig.args[2], args[2]), [args[3]]), align=8)
        builder.store(builder.fmul(builder.load(dptr, align=8), va), dptr, align=8)
        return context.get_dummy_value()
    return types.void(dst, d, a, a0), codegen


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def _ridge_solve(K, shot, alpha, intercept, L, R, rm, inv):  # pragma: no cover - compiled
    """The dual ridge coefficients of :func:`ridge_rows` for _LANES episodes at once, K[:, :, l]
    the (s x s) Gram matrix of lane l: R[:, :, l] = H (H K H + alpha I)^{-1} H (T - mean T)
    (s x k) and rm[:, l] = K 1 / s (0 without ``intercept``), by Cholesky in float64 (L: s x s
    x 8, lower half used; inv: s x 8, 1 / diag(L))."""
    s = K.shape[0]
    k = R.shape[1]
    G = _LANES
    ym = (2.0 * shot - s) / s if intercept else 0.0
    rm[:] = 0.0
    if intercept:
        for i in range(s):
            for j in range(s):
                for l in range(G):
                    rm[i, l] += K[i, j, l]
        rm /= s
    tm = np.zeros(G)
    for i in range(s):
        for l in range(G):
            tm[l] += rm[i, l] / s
    for i in range(s):                                       # L = H K H + alpha I (lower half)
        for j in range(i + 1):
            for l in range(G):
                L[i, j, l] = K[i, j, l] - rm[i, l] - rm[j, l] + tm[l]
        for l in range(G):
            L[i, i, l] += alpha
    for j in range(s):                                       # Cholesky, in place, row j of L
        _lanes_fnma(L, j * s + j, L, j * s, 1, L, j * s, 1, j)
        for l in range(G):
            L[j, j, l] = np.sqrt(L[j, j, l])
            inv[j, l] = 1.0 / L[j, j, l]
        for i in range(j + 1, s):
            _lanes_fnma(L, i * s + j, L, i * s, 1, L, j * s, 1, j)
            _lanes_mul(L, i * s + j, inv, j)
    for t in range(s):
        for c in range(k):
            for l in range(G):
                R[t, c, l] = (1.0 if t // shot == c else -1.0) - ym
    for i in range(s):                                       # L y = T - mean T
        for c in range(k):
            _lanes_fnma(R, i * k + c, L, i * s, 1, R, c, k, i)
            _lanes_mul(R, i * k + c, inv, i)
    for i in range(s - 1, -1, -1):                           # L^T z = y
        for c in range(k):
            _lanes_fnma(R, i * k + c, L, (i + 1) * s + i, s, R, (i + 1) * k + c, k, s - 1 - i)
            _lanes_mul(R, i * k + c, inv, i)
    if intercept:
        for c in range(k):
            for l in range(G):
                mean = 0.0
                for i in range(s):
                    mean += R[i, c, l]
                mean /= s
                for i in range(s):
                    R[i, c, l] -= mean


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False, inline="always")
def _coef4(f, t, m, c, dtype):  # pragma: no cover - compiled
    """f[t:t + 4, c] in ``dtype``, rows past t + m counting with 0."""
    z = dtype(0)
    return (dtype(f[t, c]), dtype(f[t + 1, c]) if m > 1 else z, dtype(f[t + 2, c]) if m > 2 else z,
            dtype(f[t + 3, c]) if m > 3 else z)


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False, inline="always")
def _axpy4(o, x0, x1, x2, x3, a, first):  # pragma: no cover - compiled
    """o (=, or += when not ``first``) a0 x0 + a1 x1 + a2 x2 + a3 x3."""
    a0, a1, a2, a3 = a
    if first:
        for u in range(x0.shape[0]):
            o[u] = a0 * x0[u] + a1 * x1[u] + a2 * x2[u] + a3 * x3[u]
    else:
        for u in range(x0.shape[0]):
            o[u] += a0 * x0[u] + a1 * x1[u] + a2 * x2[u] + a3 * x3[u]


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False, inline="always")
def _axpy4x5(o0, o1, o2, o3, o4, x0, x1, x2, x3, g, first):  # pragma: no cover - compiled
    """_axpy4 for five outputs at once (coefficients g[c]): one read of the four rows."""
    (a0, a1, a2, a3), (b0, b1, b2, b3), (c0, c1, c2, c3), (d0, d1, d2, d3), (e0, e1, e2, e3) = g
    if first:
        for u in range(x0.shape[0]):
            y0 = x0[u]
            y1 = x1[u]
            y2 = x2[u]
            y3 = x3[u]
            o0[u] = a0 * y0 + a1 * y1 + a2 * y2 + a3 * y3
            o1[u] = b0 * y0 + b1 * y1 + b2 * y2 + b3 * y3
            o2[u] = c0 * y0 + c1 * y1 + c2 * y2 + c3 * y3
            o3[u] = d0 * y0 + d1 * y1 + d2 * y2 + d3 * y3
            o4[u] = e0 * y0 + e1 * y1 + e2 * y2 + e3 * y3
    else:
        for u in range(x0.shape[0]):
            y0 = x0[u]
            y1 = x1[u]
            y2 = x2[u]
            y3 = x3[u]
            o0[u] += a0 * y0 + a1 * y1 + a2 * y2 + a3 * y3
            o1[u] += b0 * y0 + b1 * y1 + b2 * y2 + b3 * y3
            o2[u] += c0 * y0 + c1 * y1 + c2 * y2 + c3 * y3
            o3[u] += d0 * y0 + d1 * y1 + d2 * y2 + d3 * y3
            o4[u] += e0 * y0 + e1 * y1 + e2 * y2 + e3 * y3


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False, inline="always")
def _combine(x, r, f, out, spare):  # pragma: no cover - compiled
    """out[c] = sum_t f[t, c] x[r[t]] for every column c of f: the rows four at a time and the
    outputs five at a time (a single output alone), so each row is read about once per five
    outputs and each output written once per four rows; ``spare`` (5 x d) stands in for the
    missing outputs of a last group of fewer than five."""
    s = r.shape[0]
    k = f.shape[1]
    dt = out.dtype.type
    for t in range(0, s, 4):
        m = min(4, s - t)
        x0 = x[r[t]]
        x1 = x[r[t + 1]] if m > 1 else x0
        x2 = x[r[t + 2]] if m > 2 else x0
        x3 = x[r[t + 3]] if m > 3 else x0
        if k == 1:
            _axpy4(out[0], x0, x1, x2, x3, _coef4(f, t, m, 0, dt), t == 0)
            continue
        for c in range(0, k, 5):
            g = (_coef4(f, t, m, c, dt), _coef4(f, t, m, min(c + 1, k - 1), dt), _coef4(f, t, m, min(c + 2, k - 1), dt),
                 _coef4(f, t, m, min(c + 3, k - 1), dt), _coef4(f, t, m, min(c + 4, k - 1), dt))
            _axpy4x5(out[c], out[c + 1] if c + 1 < k else spare[1], out[c + 2] if c + 2 < k else spare[2],
                     out[c + 3] if c + 3 < k else spare[3], out[c + 4] if c + 4 < k else spare[4],
                     x0, x1, x2, x3, g, t == 0)


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def ridge_rows(x, rows, scale, l2, shot, alpha, intercept, W, b, lo, hi):  # pragma: no cover - compiled
    """Ridge regression to {-1, 1} one-hot targets for episodes e in [lo, hi), whose support
    rows[e] (s = k * shot) are class by class, row i scaled by a_i = scale[i] (with ``l2``:
    1 / max(||x_i||, 1e-12), from the Gram matrix's diagonal); the dual solution of
    :meth:`nclab.fewshot.heads.RidgeHead.fit_gram` for each episode while its rows are in cache:
    K = diag(a) X X^T diag(a); A = H (H K H + alpha I)^{-1} H (T - mean T) by Cholesky (float64);
    W[e k + c] = sum_t A[t, c] a_t x_t; b[e, c] = mean(T_c) - (1/s) 1^T K A_c (b = 0 and H = I
    without ``intercept``). Episodes go in groups of _LANES: their Gram matrices, one batched
    solve (:func:`_ridge_solve`), then their weights (the group's rows, ~0.5 MB at s = 25 and
    d = 640, still in the core's L2 cache)."""
    s = rows.shape[1]
    k = s // shot
    G = _LANES
    K = np.empty((s, s, G))
    L = np.empty((s, s, G))
    R = np.empty((s, k, G))
    rm = np.empty((s, G))
    inv = np.empty((s, G))
    a = np.empty((G, s))
    f = np.empty((s, k))
    spare = np.empty((5, x.shape[1]), W.dtype)
    ym = (2.0 * shot - s) / s if intercept else 0.0
    for e0 in range(lo, hi, G):
        g = min(G, hi - e0)
        for l in range(G):
            if l < g:
                _gram_one(x, rows[e0 + l], scale, l2, a[l], K[:, :, l])
            else:                                            # lanes past the end: K = I
                K[:, :, l] = 0.0
                for i in range(s):
                    K[i, i, l] = 1.0
        _ridge_solve(K, shot, alpha, intercept, L, R, rm, inv)
        for l in range(g):
            e = e0 + l
            r = rows[e]
            for c in range(k):
                v = 0.0
                for i in range(s):
                    v += rm[i, l] * R[i, c, l]
                b[e, c] = ym - v if intercept else 0.0
            for t in range(s):
                for c in range(k):
                    f[t, c] = R[t, c, l] * a[l, t]
            _combine(x, r, f, W[e * k:(e + 1) * k], spare)


@numba.njit(nogil=True, fastmath=_FLAGS, cache=True, boundscheck=False)
def centroids(x, idx, n, order, scale, l2, cosine, W, b, lo, hi):  # pragma: no cover - compiled
    """Class centroids of the slots order[lo:hi] (slot s = e k + j, its support rows
    idx[e, j, :n]): W[s] = mean_t a_t x_t over the support rows x_t, a_t = scale[row t] or, with
    ``l2``, 1 / max(||x_t||, 1e-12); b[s] = -||W[s]||^2 / 2; with ``cosine``, W[s] / ||W[s]||
    and b[s] = 0."""
    k = idx.shape[1]
    d = x.shape[1]
    f = np.empty((n, 1))
    for p in range(lo, hi):
        slot = order[p]
        e = slot // k
        r = idx[e, slot - e * k, :n]
        for t in range(n):
            f[t, 0] = (float(_inverse_norm(x[r[t]])) if l2 else float(scale[r[t]])) / n
        _combine(x, r, f, W[slot:slot + 1], W[:0])
        sq = 0.0
        for u in range(d):
            sq += float(W[slot, u]) * float(W[slot, u])
        if cosine:
            inv = W.dtype.type(1.0 / _norm(sq))
            for u in range(d):
                W[slot, u] *= inv
            b[slot] = 0.0
        else:
            b[slot] = -sq / 2
