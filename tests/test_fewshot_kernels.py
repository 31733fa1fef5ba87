"""Compiled few-shot kernels against float64 NumPy references, at shapes that exercise every
edge of their register blocking (k not a multiple of 5, q not a multiple of 3, s = 1, 2, 3, 7),
with the row scales given and, with ``l2``, computed by the kernels from the rows."""

import numpy as np
import pytest
import torch

from nclab.fewshot.heads import RidgeHead
from nclab.fewshot.kernels import centroids, gram_rows, ridge_rows, score_slots

RNG = np.random.default_rng(0)
X = RNG.standard_normal((300, 24)).astype(np.float32)
SCALE = (1 / np.linalg.norm(X, axis=1)).astype(np.float32)
X64 = X.astype(np.float64) * SCALE[:, None].astype(np.float64)


def scale_arg(l2):
    """The kernels' ``scale`` argument: ignored with l2 (an empty array shows it is not read)."""
    return np.empty(0, np.float32) if l2 else SCALE


@pytest.mark.parametrize("s", [1, 2, 3, 4, 7, 25])
def test_gram_rows_equals_float64_reference(s):
    rows = RNG.integers(0, 300, (5, s))
    K = np.full((5, s, s), np.nan)
    gram_rows(X, rows, SCALE, K, 0, 5)
    ref = X64[rows] @ X64[rows].transpose(0, 2, 1)
    assert np.allclose(K, ref, rtol=1e-5, atol=1e-6) and np.array_equal(K, K.transpose(0, 2, 1))


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("k,q", [(2, 1), (3, 5), (5, 15), (6, 8), (11, 16)])
def test_score_slots_counts_argmax_hits(k, q, l2):
    E, n = 8, 2
    idx = RNG.integers(0, 300, (E, k, n + q))
    W = RNG.standard_normal((E * k, 24)).astype(np.float32)
    bias = RNG.standard_normal(E * k).astype(np.float32)
    order = RNG.permutation(E * k)                            # slots in any order, in two chunks
    hits = np.full(E * k, -1)
    for lo, hi in ((0, 5), (5, E * k)):
        score_slots(X, idx, n, order, scale_arg(l2), l2, W, bias, hits, lo, hi)
    e, j = np.divmod(np.arange(E * k), k)
    rows = idx[e, j, n:]                                                           # P x q
    blocks = W.reshape(E, k, -1)[e].astype(np.float64)                              # P x k x d
    scores = np.einsum("pid,pcd->pic", X[rows].astype(np.float64), blocks)
    scores += bias.reshape(E, k)[e][:, None, :] / SCALE[rows][:, :, None]
    assert np.array_equal(hits, (scores.argmax(-1) == j[:, None]).sum(1))


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("n", [1, 3, 5, 9])
@pytest.mark.parametrize("cosine", [False, True])
def test_centroids_are_means_of_scaled_rows(cosine, n, l2):
    E, k = 6, 5
    idx = RNG.integers(0, 300, (E, k, n + 2))
    order = RNG.permutation(E * k)
    W = np.full((E * k, 24), np.nan, np.float32)
    b = np.full(E * k, np.nan)
    centroids(X, idx, n, order, scale_arg(l2), l2, cosine, W, b, 0, E * k)
    mu = X64[idx[:, :, :n]].mean(2).reshape(E * k, -1)
    if cosine:
        assert np.allclose(W, mu / np.linalg.norm(mu, axis=1, keepdims=True), atol=1e-6) and (b == 0).all()
    else:
        assert np.allclose(W, mu, atol=1e-6) and np.allclose(b, -(mu ** 2).sum(1) / 2, atol=1e-6)


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("k,n", [(5, 1), (5, 5), (3, 4), (2, 3), (7, 2)])
def test_ridge_rows_equals_ridge_head(k, n, intercept, l2):
    E, s = 20, k * n              # episodes 1..19: two groups of 8 solved side by side and 3 more
    rows = RNG.integers(0, 300, (E, s))
    W = np.full((E * k, 24), np.nan, np.float32)
    b = np.full((E, k), np.nan)
    ridge_rows(X, rows, scale_arg(l2), l2, n, 0.7, intercept, W, b, 1, E)
    ref = RidgeHead(alpha=0.7, fit_intercept=intercept).fit(torch.tensor(X64[rows]), torch.arange(k).repeat_interleave(n))
    assert np.allclose(W.reshape(E, k, -1)[1:], ref.coef_.numpy()[1:], atol=1e-5)
    assert np.allclose(b[1:], ref.intercept_.numpy()[1:], atol=1e-6)
    assert np.isnan(W[:k]).all() and np.isnan(b[0]).all()          # episode 0 is outside [lo, hi)
