"""Few-shot heads: batched heads equal scikit-learn fitted episode by episode, plus the
conformance checks every head passes (batching, label permutation, dtype, constructor args)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid

from nclab.errors import NclabError
from nclab.fewshot import (LogisticHead, NCCHead, NearestNeighbourHead, RidgeHead, gram_coordinates, make_head,
                           span_coordinates)


def episodes(E=12, k=5, n=5, m=15, d=64, sep=0.6, seed=0, normalise=True):
    """E episodes of k Gaussian classes (means sep * N(0, I)), support E x kn x d, query E x km x d."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((E, k, 1, d)) * sep
    S = (mu + rng.standard_normal((E, k, n, d))).reshape(E, k * n, d)
    Q = (mu + rng.standard_normal((E, k, m, d))).reshape(E, k * m, d)
    if normalise:
        S /= np.linalg.norm(S, axis=-1, keepdims=True)
        Q /= np.linalg.norm(Q, axis=-1, keepdims=True)
    return S, Q, np.repeat(np.arange(k), n), np.repeat(np.arange(k), m)


def per_episode(make, S, ys, Q, method="predict"):
    return np.stack([getattr(make().fit(S[e], ys), method)(Q[e]) for e in range(len(S))])


ALL_HEADS = [NCCHead(), NCCHead("cosine"), RidgeHead(), LogisticHead(), NearestNeighbourHead()]
SHAPES = [(5, 5, 64), (5, 1, 64), (5, 5, 8), (2, 3, 16)]        # (k, n, d): dual and primal, 1-shot, binary


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # sklearn's 1-shot variance estimate
@pytest.mark.parametrize("k,n,d", SHAPES)
def test_ncc_equals_sklearn_nearest_centroid(k, n, d):
    S, Q, ys, _ = episodes(k=k, n=n, d=d)
    pred = NCCHead().fit(torch.tensor(S), torch.tensor(ys)).predict(torch.tensor(Q)).numpy()
    assert np.array_equal(pred, per_episode(NearestCentroid, S, ys, Q))


def test_ncc_cosine_equals_numpy():
    S, Q, ys, _ = episodes(normalise=False)
    mu = np.stack([[S[e, ys == c].mean(0) for c in range(5)] for e in range(len(S))])
    cos = np.einsum("emd,ekd->emk", Q, mu) / np.linalg.norm(Q, axis=-1)[..., None] / np.linalg.norm(mu, axis=-1)[:, None]
    head = NCCHead("cosine").fit(torch.tensor(S), torch.tensor(ys))
    assert np.allclose(head.decision_function(torch.tensor(Q)).numpy(), cos, atol=1e-12)
    assert np.array_equal(head.predict(torch.tensor(Q)).numpy(), cos.argmax(-1))


@pytest.mark.parametrize("k,n,d", SHAPES)
def test_ridge_equals_sklearn_ridge_classifier(k, n, d):
    S, Q, ys, _ = episodes(k=k, n=n, d=d)
    head = RidgeHead(alpha=0.7).fit(torch.tensor(S), torch.tensor(ys))
    make = lambda: RidgeClassifier(alpha=0.7)  # noqa: E731
    assert np.array_equal(head.predict(torch.tensor(Q)).numpy(), per_episode(make, S, ys, Q))
    dec = head.decision_function(torch.tensor(Q)).numpy()
    ref = per_episode(make, S, ys, Q, "decision_function")
    if k == 2:          # scikit-learn keeps one column (class 1); ours has the pair (-f, f)
        assert np.allclose(dec[..., 1], ref, atol=1e-10) and np.allclose(dec[..., 0], -ref, atol=1e-10)
    else:               # same {-1, 1} targets and intercept: identical decision values
        assert np.allclose(dec, ref, atol=1e-10)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("k,n,d", SHAPES)
def test_ridge_gram_fit_equals_feature_fit(k, n, d, fit_intercept):
    """From K = S S^T alone: W = S^T A and the intercept equal the fit on the features."""
    S, _, ys, _ = episodes(k=k, n=n, d=d)
    St = torch.tensor(S)
    head = RidgeHead(alpha=0.7, fit_intercept=fit_intercept)
    ref = RidgeHead(alpha=0.7, fit_intercept=fit_intercept).fit(St, torch.tensor(ys))
    g = head.fit_gram(St @ St.transpose(1, 2), torch.tensor(ys), n_classes=k)
    W = (g.dual_coef_.transpose(1, 2) @ St)
    assert torch.allclose(W, ref.coef_, atol=1e-10)
    assert torch.allclose(g.intercept_, ref.intercept_, atol=1e-10)
    if not fit_intercept:
        assert bool((g.intercept_ == 0).all())


def test_ridge_primal_and_dual_agree():
    S, Q, ys, _ = episodes(d=40, n=5)
    a = RidgeHead(solver="primal").fit(torch.tensor(S), torch.tensor(ys)).decision_function(torch.tensor(Q))
    b = RidgeHead(solver="dual").fit(torch.tensor(S), torch.tensor(ys)).decision_function(torch.tensor(Q))
    assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("k,n,d", SHAPES)
def test_logistic_probabilities_match_sklearn(k, n, d):
    S, Q, ys, _ = episodes(k=k, n=n, d=d)
    head = LogisticHead(C=1.0).fit(torch.tensor(S), torch.tensor(ys))
    make = lambda: LogisticRegression(C=1.0, tol=1e-10, max_iter=10000)  # noqa: E731
    proba = head.predict_proba(torch.tensor(Q)).numpy()
    ref = per_episode(make, S, ys, Q, "predict_proba")
    assert np.abs(proba - ref).max() < 1e-3
    assert np.array_equal(head.predict(torch.tensor(Q)).numpy(), per_episode(make, S, ys, Q))


def test_logistic_float32_and_other_C_match_sklearn():
    S, Q, ys, _ = episodes(d=128, sep=1.0)
    head = LogisticHead(C=10.0).fit(torch.tensor(S, dtype=torch.float32), torch.tensor(ys))
    proba = head.predict_proba(torch.tensor(Q, dtype=torch.float32)).numpy()
    ref = per_episode(lambda: LogisticRegression(C=10.0, tol=1e-10, max_iter=10000), S, ys, Q, "predict_proba")
    assert np.abs(proba - ref).max() < 1e-3


def test_logistic_gram_fit_equals_feature_fit():
    S, Q, ys, _ = episodes(d=64)
    St, Qt = torch.tensor(S), torch.tensor(Q)
    a = LogisticHead().fit(St, torch.tensor(ys))
    b = LogisticHead().fit_gram(St @ St.transpose(1, 2), torch.tensor(ys))
    logits_b = Qt @ (b.dual_coef_.transpose(1, 2) @ St).transpose(1, 2) + b.intercept_[:, None]
    assert torch.allclose(a.decision_function(Qt), logits_b, atol=1e-9)


@pytest.mark.parametrize("k,n,d", SHAPES)
def test_one_nn_equals_sklearn(k, n, d):
    S, Q, ys, _ = episodes(k=k, n=n, d=d)
    pred = NearestNeighbourHead().fit(torch.tensor(S), torch.tensor(ys)).predict(torch.tensor(Q)).numpy()
    assert np.array_equal(pred, per_episode(lambda: KNeighborsClassifier(1), S, ys, Q))


def test_span_coordinates_are_an_isometry():
    S, Q, _, _ = episodes(d=64)
    Z, Zq, P = span_coordinates(torch.tensor(S), torch.tensor(Q))
    St, Qt = torch.tensor(S), torch.tensor(Q)
    assert torch.allclose(Z @ Z.transpose(1, 2), St @ St.transpose(1, 2), atol=1e-12)      # Gram preserved
    assert torch.allclose(Zq @ Z.transpose(1, 2), Qt @ St.transpose(1, 2), atol=1e-12)     # q.s preserved
    B = St.transpose(1, 2) @ P
    assert torch.allclose(B.transpose(1, 2) @ B, torch.eye(B.shape[2], dtype=B.dtype).expand_as(P), atol=1e-9)


def test_gram_coordinates_drop_null_directions():
    rng = np.random.default_rng(3)
    S = torch.tensor(rng.standard_normal((4, 10, 3)))            # rank 3 < 10 points
    Z, P = gram_coordinates(S @ S.transpose(1, 2), rtol=1e-12)
    assert torch.allclose(Z @ Z.transpose(1, 2), S @ S.transpose(1, 2), atol=1e-12)
    assert int((Z.abs().sum(1) > 0).sum(1).max()) == 3


# --- conformance: every head -------------------------------------------------------------------

@pytest.mark.parametrize("head", ALL_HEADS, ids=repr)
def test_batching_invariance(head):
    """Fitting E episodes at once equals fitting each alone."""
    S, Q, ys, _ = episodes(E=6)
    together = type(head)(**vars(head)).fit(torch.tensor(S), torch.tensor(ys)).predict(torch.tensor(Q))
    alone = torch.cat([type(head)(**vars(head)).fit(torch.tensor(S[e:e + 1]), torch.tensor(ys))
                       .predict(torch.tensor(Q[e:e + 1])) for e in range(len(S))])
    assert torch.equal(together, alone)


@pytest.mark.parametrize("head", ALL_HEADS, ids=repr)
def test_label_permutation_equivariance(head):
    S, Q, ys, _ = episodes(E=6)
    perm = np.array([3, 0, 4, 1, 2])
    a = type(head)(**vars(head)).fit(torch.tensor(S), torch.tensor(ys)).predict(torch.tensor(Q)).numpy()
    b = type(head)(**vars(head)).fit(torch.tensor(S), torch.tensor(perm[ys])).predict(torch.tensor(Q)).numpy()
    assert np.array_equal(perm[a], b)


@pytest.mark.parametrize("head", ALL_HEADS, ids=repr)
def test_float32_inputs_and_constructor_args(head):
    S, Q, ys, _ = episodes(E=4)
    fresh = type(head)(**vars(head))
    params = dict(vars(fresh))
    pred = fresh.fit(torch.tensor(S, dtype=torch.float32), torch.tensor(ys)).predict(torch.tensor(Q, dtype=torch.float32))
    assert pred.shape == (4, Q.shape[1]) and pred.dtype == torch.int64 and pred.device == torch.device("cpu")
    assert {k: v for k, v in vars(fresh).items() if not k.endswith("_")} == params     # fit adds only k_ attributes
    assert repr(fresh).startswith(type(head).__name__ + "(")


def test_missing_class_in_support_is_a_user_error():
    S, _, ys, _ = episodes(E=2)
    with pytest.raises(NclabError, match="all 6 classes"):
        NCCHead().fit(torch.tensor(S), torch.tensor(ys), n_classes=6)


def test_make_head_names():
    assert isinstance(make_head("ridge"), RidgeHead) and make_head("ncc-cosine").metric == "cosine"
    with pytest.raises(NclabError, match="unknown few-shot head 'rigde'.*ridge"):
        make_head("rigde")
