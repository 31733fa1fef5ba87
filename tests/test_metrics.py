"""Collapse metrics: exact oracles, closed forms, invariances, float64 brute force, streaming merges."""

from __future__ import annotations

import datetime
import json
import math
import os

import numpy as np
import pytest
import torch

import nclab
from nclab.errors import NclabError
from nclab.metrics import ClassStats, cdnv, centred_pass, measure, measure_from_stats, ncc_accuracy, pair_stats
from nclab.metrics import collapse as collapse_mod
from nclab.metrics.stats import class_moments

REL = 1e-9


# --- brute-force float64 reference (two-pass NumPy, d x d pseudo-inverse) -------------------------

def reference(X, y, W=None, b=None, weighted=False, unbiased=False):
    X = np.asarray(X, dtype=np.float64)
    C = int(y.max()) + 1
    N = len(X)
    n = np.bincount(y, minlength=C).astype(np.float64)
    mu = np.stack([X[y == c].mean(0) for c in range(C)])
    g = (n[:, None] * mu).sum(0) / N if weighted else mu.mean(0)
    M = mu - g
    Xc = X - mu[y]
    Sw = Xc.T @ Xc / (N - C if unbiased else N)
    # Sigma_B^+ = (M^T M / C)^+ = C M^+ M^+^T: a d x d pseudo-inverse built from the SVD of M itself;
    # np.linalg.pinv(Sigma_B) would square the condition number (it is off by ~2e-9 at cond(M) = 5e3,
    # where this form agrees with an 80-bit long-double computation to 1e-12)
    Mp = np.linalg.pinv(M)
    Sb = M.T @ M / C
    out = dict(nc1=np.trace(Sw @ (C * Mp @ Mp.T)) / C,
               nc1_quotient=np.trace(Sw) / np.trace(Sb))
    var = np.array([(Xc[y == c] ** 2).sum(1).sum() for c in range(C)]) / (n - 1 if unbiased else n)
    D = ((mu[:, None] - mu[None]) ** 2).sum(-1)
    iu = np.triu_indices(C, 1)
    off = ~np.eye(C, dtype=bool)
    with np.errstate(divide="ignore"):
        sym = ((var[:, None] + var[None]) / (2 * D))[iu]
        asym = (var[:, None] / D)[off]
    with np.errstate(invalid="ignore"):                                        # inf - inf with coincident means
        out.update(cdnv=sym.mean(), cdnv_cov=sym.std() / sym.mean(), cdnv_asym=asym.mean(),
                   cdnv_asym_cov=asym.std() / asym.mean())
    s2 = np.array([(Xc[y == c] ** 2).sum() for c in range(C)]) / (n - 1)         # unbiased variances
    Dc = (D - (s2 / n)[:, None] - (s2 / n)[None])[iu]                          # corrected distances
    deb = ((s2[:, None] + s2[None]) / 2)[iu][Dc > 0] / Dc[Dc > 0]
    out.update(cdnv_debiased=deb.mean(), cdnv_debiased_excluded=int((Dc <= 0).sum()))
    J = (np.eye(C) - 1 / C) / np.sqrt(C - 1)

    def nc2(A):
        nr = np.linalg.norm(A, axis=1)
        cos = ((A @ A.T) / np.outer(nr, nr))[iu]
        G = A @ A.T
        etf = np.linalg.norm(G / np.linalg.norm(G) - J)
        return nr.std() / nr.mean(), cos.std(), np.abs(cos + 1 / (C - 1)).mean(), etf

    norms = np.linalg.norm(M, axis=1)
    out["nc2_equinorm"], out["nc2_equiangle"], out["nc2_maxangle"], out["nc2_etf_error"] = nc2(M)
    out["min_mean_distance_raw"] = np.sqrt(D[iu].min())
    out["min_mean_distance"] = out["min_mean_distance_raw"] / norms.mean()
    ncc = ((X[:, None, :] - mu[None]) ** 2).sum(-1).argmin(1)
    out["ncc_accuracy"] = np.mean(ncc == y)
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        b = np.zeros(C) if b is None else np.asarray(b, dtype=np.float64)
        out["nc2_equinorm_w"], out["nc2_equiangle_w"], out["nc2_maxangle_w"], out["nc2_etf_error_w"] = nc2(W)
        out["nc3"] = np.linalg.norm(W / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2
        Z = W @ M.T
        out["nc3_zhu"] = np.linalg.norm(Z / np.linalg.norm(Z) - J)
        out["nc4"] = np.mean(ncc != (X @ W.T + b).argmax(1))
    return out


def assert_matches(got, ref, rel=REL, keys=None):
    for k in keys or ref:
        assert got[k] == pytest.approx(ref[k], rel=rel, abs=1e-300), k


def etf_means(rng, C, d, r):
    E = np.sqrt(C / (C - 1)) * (np.eye(C) - 1 / C)
    Q, _ = np.linalg.qr(rng.standard_normal((d, C)))
    return r * E @ Q.T


def random_problem(rng, C=7, d=12, n_max=60, noise=0.7, with_w=True):
    n = rng.integers(5, n_max, C)
    y = rng.permutation(np.repeat(np.arange(C), n))
    mu = rng.standard_normal((C, d)) * 2 + 5.0                    # far from the origin on purpose
    A = rng.standard_normal((d, d)) * noise                        # anisotropic noise
    X = mu[y] + rng.standard_normal((len(y), d)) @ A
    W = rng.standard_normal((C, d)) if with_w else None
    b = rng.standard_normal(C) if with_w else None
    return X, y, W, b


# --- exact oracles and closed forms --------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_matches_float64_bruteforce(seed):
    rng = np.random.default_rng(seed)
    X, y, W, b = random_problem(rng)
    got = measure(X, y, W, b).to_dict()
    assert_matches(got, reference(X, y, W, b))
    assert got["n_samples"] == len(y) and got["n_classes"] == 7 and got["dim"] == 12


def test_conventions_weighted_mean_and_unbiased_variance():
    rng = np.random.default_rng(2)
    X, y, W, b = random_problem(rng)
    got = measure(X, y, W, b, global_mean="weighted", variance="unbiased").to_dict()
    assert_matches(got, reference(X, y, W, b, weighted=True, unbiased=True))
    assert got["global_mean"] == "weighted" and got["variance"] == "unbiased"
    with pytest.raises(NclabError, match="variance"):
        measure(X, y, variance="sample")


def test_ill_conditioned_means_cond_1e4():
    rng = np.random.default_rng(3)
    C, d = 20, 50
    # centred means with singular values spread over 4 decades: M = U diag(s) V^T, 1^T U = 0
    U = np.linalg.qr(np.concatenate([np.ones((C, 1)), rng.standard_normal((C, C - 1))], 1))[0][:, 1:]
    V = np.linalg.qr(rng.standard_normal((d, C - 1)))[0]
    A = 5 * U @ np.diag(np.logspace(0, -4, C - 1)) @ V.T + rng.standard_normal(d)
    y = np.repeat(np.arange(C), 60)
    X = A[y] + 1e-4 * rng.standard_normal((len(y), d))
    mu = np.stack([X[y == c].mean(0) for c in range(C)])
    s = np.linalg.svd(mu - mu.mean(0), compute_uv=False)
    assert s[0] / s[C - 2] > 5e3                                      # genuinely ill-conditioned
    got = measure(X, y).to_dict()
    assert got["nc1_rank"] == C - 1
    assert_matches(got, reference(X, y))
    # the acceptance check's construction (means A = G diag(logspace(0, -4, d)))
    A2 = rng.standard_normal((C, d)) @ np.diag(np.logspace(0, -4, d))
    X2 = A2[y] + 1e-3 * rng.standard_normal((len(y), d))
    assert_matches(measure(X2, y).to_dict(), reference(X2, y))
    # float32 features: float64 accumulation reproduces the float64 reference of the same values
    X32 = X.astype(np.float32)
    assert_matches(measure(X32, y).to_dict(), reference(X32.astype(np.float64), y), keys=["nc1", "cdnv"])


def test_etf_oracle_rotated_scaled_translated():
    rng = np.random.default_rng(4)
    C, d = 6, 20
    mu = etf_means(rng, C, d, r=3.0)
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mu = 2.5 * mu @ R + rng.standard_normal(d) * 10                  # rotate, scale, translate
    y = np.repeat(np.arange(C), 15)
    X = mu[y]
    M = mu - mu.mean(0)
    W = 0.3 * M
    rec = measure(X, y, W, -W @ mu.mean(0)).to_dict()              # bias undoes the translation
    for k in ["nc1", "nc1_quotient", "cdnv", "nc2_equinorm", "nc2_equiangle", "nc2_maxangle", "nc2_etf_error",
              "nc2_equinorm_w", "nc2_equiangle_w", "nc2_maxangle_w", "nc2_etf_error_w", "nc3", "nc3_zhu", "nc4"]:
        assert abs(rec[k]) < 1e-7, (k, rec[k])
    assert rec["ncc_accuracy"] == 1.0
    assert pair_stats(torch.as_tensor(M)).cos_mean == pytest.approx(-1 / (C - 1), abs=1e-12)
    # all pairwise distances of an ETF are equal: min distance / mean norm = sqrt(2 C / (C - 1))
    assert rec["min_mean_distance"] == pytest.approx(math.sqrt(2 * C / (C - 1)), rel=1e-12)


def test_closed_forms_isotropic_noise():
    rng = np.random.default_rng(5)
    C, d, r, s, n = 8, 40, 4.0, 0.5, 1500
    mu = etf_means(rng, C, d, r)
    y = np.repeat(np.arange(C), n)
    X = mu[y] + s * rng.standard_normal((len(y), d))
    rec = measure(X, y).to_dict()
    assert rec["nc1"] == pytest.approx(s ** 2 * (C - 1) ** 2 / (C * r ** 2), rel=0.03)
    assert rec["cdnv"] == pytest.approx(s ** 2 * d * (C - 1) / (2 * r ** 2 * C), rel=0.03)
    # the asymmetric mean over ordered pairs is the symmetric mean over unordered pairs (identity)
    assert rec["cdnv_asym"] == pytest.approx(rec["cdnv"], rel=1e-12)


def test_ncc_accuracy_with_given_means():
    rng = np.random.default_rng(23)
    X, y, _, _ = random_problem(rng)
    mu = np.stack([X[y == c].mean(0) for c in range(7)])
    assert ncc_accuracy(X, y, mu) == measure(X, y).ncc_accuracy
    # other means (test collapse: held-out samples against the training means): brute force
    other = mu + rng.standard_normal(mu.shape) * 2
    want = np.mean(((X[:, None, :] - other[None]) ** 2).sum(-1).argmin(1) == y)
    assert ncc_accuracy(X, y, other, chunk_rows=13) == want
    assert ncc_accuracy(X[y < 3], y[y < 3], other) == np.mean(
        ((X[y < 3][:, None, :] - other[None]) ** 2).sum(-1).argmin(1) == y[y < 3])
    with pytest.raises(NclabError, match="ncc_accuracy"):
        ncc_accuracy(X[:, :3], y, mu)


# --- the debiased CDNV ----------------------------------------------------------------------------

def _gaussian_classes(rng, C, p, scale):
    """Class means of isotropic unit-variance Gaussian classes in R^p, and their population CDNV
    (Var = p for every class: V_ij = 2p / (2 ||mu_i - mu_j||^2))."""
    mu = rng.standard_normal((C, p)) * scale
    D2 = ((mu[:, None] - mu[None]) ** 2).sum(-1)[np.triu_indices(C, 1)]
    return mu, float(np.mean(p / D2))


@pytest.mark.parametrize("n", [4, 16, 64])
def test_debiased_cdnv_is_unbiased_where_the_plug_in_is_not(n):
    # p = 64 and a population CDNV of ~0.3 (Var/D2 ~ 0.3): the corrected distance D_ij has relative
    # spread sqrt(4 D tau^2 + 2 p tau^4) / D ~ 0.1 at n = 4 (tau^2 = 2/n per coordinate), so the
    # Jensen bias of the ratio is ~1% and the mean over 200 draws of 10 classes (45 pairs each)
    # is well inside 5%. The plug-in's expectation at n = 4 is ~ (3/4) / (1 + 2 * 0.3 / 4) = 0.65
    # of the truth (variances shrink by (n-1)/n, distances grow by Var_i/n + Var_j/n).
    rng = np.random.default_rng(20)
    C, p = 10, 64
    mu, truth = _gaussian_classes(rng, C, p, 1.3)
    y = np.repeat(np.arange(C), n)
    deb, plug = [], []
    for _ in range(200):
        rec = measure(mu[y] + rng.standard_normal((len(y), p)), y)
        deb.append(rec.cdnv_debiased)
        plug.append(rec.cdnv)
        assert rec.cdnv_debiased_excluded == 0
    assert np.mean(deb) == pytest.approx(truth, rel=0.05)
    if n == 4:
        assert abs(np.mean(plug) / truth - 1) > 0.20
    # the plug-in converges to the truth only as n grows; the debiased value is flat in n
    assert abs(np.mean(deb) / truth - 1) < abs(np.mean(plug) / truth - 1)


def test_debiased_cdnv_leaves_out_and_counts_unresolved_pairs():
    rng = np.random.default_rng(21)
    C, p, n = 5, 8, 6
    mu = rng.standard_normal((C, p)) * 10
    y = np.repeat(np.arange(C), n)
    X = mu[y] + rng.standard_normal((len(y), p))
    # class 4 = class 3 moved by 1e-3: its sample mean is 1e-3 * sqrt(p) from class 3's, far
    # below the noise of a mean of 6 unit-variance samples (corrected distance < 0)
    X[y == 4] = X[y == 3] + 1e-3
    rec = measure(X, y)
    ref = reference(X, y)
    assert rec.cdnv_debiased_excluded == ref["cdnv_debiased_excluded"] == 1
    assert rec.cdnv_debiased == pytest.approx(ref["cdnv_debiased"], rel=1e-12)
    # the plug-in stays finite (distinct sample means) but is dominated by the unresolved pair
    assert math.isfinite(rec.cdnv) and rec.cdnv > 10 * rec.cdnv_debiased
    # an exact duplicate: the plug-in is infinite (coincident means), the debiased value finite
    X2, y2 = np.concatenate([X, X[y == 0]]), np.concatenate([y, np.full(n, C)])
    dup = measure(X2, y2).to_dict()
    assert dup["cdnv"] is None and dup["cdnv_debiased_excluded"] == 2
    assert dup["cdnv_debiased"] == pytest.approx(reference(X2, y2)["cdnv_debiased"], rel=1e-12)


def test_debiased_cdnv_undefined_below_two_samples_per_class():
    rng = np.random.default_rng(22)
    X, y, _, _ = random_problem(rng, C=4)
    X1, y1 = np.concatenate([X, X[:1] + 100]), np.concatenate([y, [4]])       # class 4: one sample
    d = measure(X1, y1).to_dict()
    assert d["cdnv_debiased"] is None and d["cdnv_debiased_excluded"] is None and d["cdnv"] is not None
    # every pair left out: no value, but a count
    # means 0.1 apart, s^2 = 2 per class: D = 0.01 - 2/2 - 2/2 < 0
    X2 = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0.1], [0, -1, 0.1]])
    d2 = measure(X2, np.array([0, 0, 1, 1])).to_dict()
    assert d2["cdnv_debiased"] is None and d2["cdnv_debiased_excluded"] == 1


# --- invariances ---------------------------------------------------------------------------------

def test_rotation_translation_scaling_permutation():
    rng = np.random.default_rng(6)
    X, y, W, b = random_problem(rng)
    base = measure(X, y).to_dict()
    d = X.shape[1]
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    moved = measure(3.7 * X @ R + rng.standard_normal(d) * 50, y).to_dict()
    for k in ["nc1", "nc1_quotient", "cdnv", "cdnv_cov", "cdnv_debiased", "nc2_equinorm", "nc2_equiangle",
              "nc2_maxangle", "nc2_etf_error", "min_mean_distance", "ncc_accuracy"]:
        assert moved[k] == pytest.approx(base[k], rel=1e-9), k
    perm = rng.permutation(7)
    permuted = measure(X, perm[y], W[np.argsort(perm)], b[np.argsort(perm)]).to_dict()
    full = measure(X, y, W, b).to_dict()
    for k in ["nc1", "cdnv", "cdnv_cov", "cdnv_asym_cov", "cdnv_debiased", "nc2_equiangle", "nc2_etf_error", "nc3",
              "nc3_zhu", "nc4"]:
        assert permuted[k] == pytest.approx(full[k], rel=1e-9), k


def _stats(X, y, C, splits, scatter=True):
    st = ClassStats(C, X.shape[1], scatter=scatter)
    for a, b in zip(splits[:-1], splits[1:]):
        st.update(torch.as_tensor(X[a:b]), torch.as_tensor(y[a:b]))
    return st


def _close(a, b, rel=1e-12):
    scale = max(float(b.abs().max()), 1e-300)
    return float((a - b).abs().max()) <= rel * scale


def test_any_batch_split_and_merge_give_the_same_statistics():
    rng = np.random.default_rng(7)
    X, y, W, b = random_problem(rng)
    N = len(y)
    one = _stats(X, y, 7, [0, N]).compute()
    for trial in range(3):
        cuts = sorted(set(rng.integers(1, N, 5).tolist()))
        m = _stats(X, y, 7, [0, *cuts, N]).compute()
        assert torch.equal(m.counts, one.counts)
        assert _close(m.means, one.means) and _close(m.sqdev, one.sqdev) and _close(m.scatter, one.scatter)
    # simulated 2-process run: halves accumulated separately (different shifts), merged exactly
    left, right = _stats(X[: N // 3], y[: N // 3], 7, [0, N // 3]), _stats(X[N // 3:], y[N // 3:], 7, [0, N - N // 3])
    left.merge_state(right)
    m = left.compute()
    assert _close(m.means, one.means) and _close(m.sqdev, one.sqdev) and _close(m.scatter, one.scatter)
    # the scatter path of measure_from_stats equals the two-pass in-memory measure()
    assert_matches(measure_from_stats(left, W, b).to_dict(), measure(X, y, W, b).to_dict(),
                   keys=["nc1", "nc1_quotient", "cdnv", "cdnv_cov", "cdnv_debiased", "nc2_etf_error", "nc3", "nc3_zhu"])


def test_exact_two_pass_mode_and_streaming_second_pass():
    rng = np.random.default_rng(8)
    X, y, W, b = random_problem(rng)
    first = _stats(X, y, 7, [0, 100, len(y)])
    second = first.second_pass()
    second.update(torch.as_tensor(X), torch.as_tensor(y))
    m1, m2 = first.compute(), second.compute()
    assert _close(m2.scatter, m1.scatter) and _close(m2.means, m1.means)
    assert float(second.sum.abs().max()) < 1e-9                     # shifts are the means: sums vanish
    # streaming two passes without a d x d scatter give the full record, NCC and NC4 included
    lite = _stats(X, y, 7, [0, 50, len(y)], scatter=False)
    cp = centred_pass(lite.compute(), W=W, b=b)
    for a in range(0, len(y), 64):
        cp.update(torch.as_tensor(X[a:a + 64]), torch.as_tensor(y[a:a + 64]))
    got = measure_from_stats(lite, W, b, centred=cp.compute()).to_dict()
    assert_matches(got, reference(X, y, W, b))


def _gloo_worker(rank, world, port, X, y, out):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        st = ClassStats(7, X.shape[1], scatter=True)
        part = slice(0, 150) if rank == 0 else slice(150, None)
        st.update(torch.as_tensor(X[part]), torch.as_tensor(y[part]))
        m = st.compute()                                            # all-gathers and merges the states
        if rank == 0:
            # in-memory measure() and class_moments() are local: one rank alone (a probe) must not
            # wait for the others in a collective, nor merge their data
            rec = measure(X, y).to_dict()
            n = int(class_moments(X, y, 7).counts.sum())
            torch.save(dict(counts=m.counts, means=m.means, sqdev=m.sqdev, scatter=m.scatter,
                            n_samples=rec["n_samples"], cdnv=rec["cdnv"], n=n), out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_all_reduce(tmp_path):
    import socket

    import torch.multiprocessing as mp
    rng = np.random.default_rng(9)
    X, y, _, _ = random_problem(rng)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "m.pt")
    mp.spawn(_gloo_worker, args=(2, port, X, y, out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    one = _stats(X, y, 7, [0, len(y)]).compute()
    assert torch.equal(got["counts"], one.counts)
    assert _close(got["means"], one.means) and _close(got["sqdev"], one.sqdev) and _close(got["scatter"], one.scatter)
    assert got["n_samples"] == got["n"] == len(y) and got["cdnv"] == measure(X, y).cdnv


# --- precision, dimensions, tiling ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_accumulate_in_float64(dtype):
    rng = np.random.default_rng(10)
    C, d, n = 6, 16, 400
    mu = rng.standard_normal((C, d)) * 2
    y = np.repeat(np.arange(C), n)
    X = mu[y] + 0.5 * rng.standard_normal((len(y), d))
    W = rng.standard_normal((C, d))
    Xh = torch.as_tensor(X).to(dtype)
    got = measure(Xh, y, W).to_dict()
    exact = reference(Xh.double().numpy(), y, W)                     # same (rounded) values in float64
    assert_matches(got, exact, keys=["nc1", "nc1_quotient", "cdnv", "nc2_etf_error", "nc3", "nc4"])
    assert got["dtype"] == str(dtype).replace("torch.", "")
    ref = reference(X, y, W)                                          # the unrounded data
    assert_matches(got, ref, rel=1e-3, keys=["nc1", "nc1_quotient", "cdnv", "nc3"])


def test_near_ties_in_network_decisions_are_decided_in_float64():
    rng = np.random.default_rng(11)
    C, d = 5, 30
    X, y, W, b = random_problem(rng, C=C, d=d)
    X = X.astype(np.float32)
    W[1] = W[0] + 1e-9 * rng.standard_normal(d)                      # rows 0 and 1 tie in float32
    b[1] = b[0]
    got = measure(X, y, W, b).to_dict()
    assert got["nc4"] == reference(X, y, W, b)["nc4"]


def test_near_ties_in_nearest_class_centre_are_decided_in_float64():
    rng = np.random.default_rng(12)
    C, d = 4, 40
    X, y, W, b = random_problem(rng, C=C, d=d)
    # samples within 1e-12 of the bisector of the final means of classes 0 and 1 (fixed point:
    # the samples move the means): their float32 NCC scores round either way; float64 decides
    y2 = np.concatenate([y, rng.integers(0, 2, 20)])
    perp0, eps = rng.standard_normal((20, d)), 1e-12 * rng.standard_normal((20, 1))
    X2 = np.concatenate([X, np.zeros((20, d))])
    for _ in range(30):
        mu = np.stack([X2[y2 == c].mean(0) for c in range(C)])
        e = mu[1] - mu[0]
        perp = perp0 - np.outer(perp0 @ e, e) / (e @ e)
        X2[len(X):] = (mu[0] + mu[1]) / 2 + 1e-3 * perp + eps * e
    got = measure(X2, y2, W, b).to_dict()
    ref = reference(X2, y2, W, b)
    assert got["ncc_accuracy"] == ref["ncc_accuracy"] and got["nc4"] == ref["nc4"]


def test_huge_dimension_by_isometric_embedding():
    rng = np.random.default_rng(12)
    X, y, W, b = random_problem(rng, C=5, d=8, n_max=12)
    D = 100_000
    E = np.linalg.qr(rng.standard_normal((D, 8)))[0].T                # 8 x D orthonormal rows
    small = measure(X, y, W, b).to_dict()
    big = measure(X @ E, y, W @ E, b).to_dict()
    assert big["dim"] == D
    for k in ["nc1", "nc1_quotient", "cdnv", "nc2_etf_error", "nc3", "nc3_zhu", "nc4", "ncc_accuracy"]:
        assert big[k] == pytest.approx(small[k], rel=1e-9), k


def test_exact_path_when_classes_exceed_dimension():
    rng = np.random.default_rng(13)
    X, y, W, b = random_problem(rng, C=40, d=6, n_max=20)
    got = measure(X, y, W, b).to_dict()
    assert got["nc1_rank"] == 6
    assert_matches(got, reference(X, y, W, b))


def test_tiled_pairs_equal_untiled_and_full_matrix(monkeypatch):
    rng = np.random.default_rng(14)
    X, y, W, b = random_problem(rng, C=11)
    full = measure(X, y, W, b).to_dict()
    monkeypatch.setattr(collapse_mod, "_tile_rows", lambda K, budget=0: 3)
    tiled = measure(X, y, W, b).to_dict()
    assert_matches(tiled, full, rel=1e-12, keys=["cdnv", "cdnv_cov", "cdnv_asym_cov", "cdnv_debiased", "nc2_equiangle",
                                                 "nc2_maxangle", "min_mean_distance", "nc3_zhu", "nc2_equiangle_w"])
    mu = np.stack([X[y == c].mean(0) for c in range(11)])
    var = np.array([((X[y == c] - mu[c]) ** 2).sum(1).mean() for c in range(11)])
    V = cdnv(var, mu, reduction="none").numpy()
    Dm = ((mu[:, None] - mu[None]) ** 2).sum(-1)
    iu = np.triu_indices(11, 1)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(V[iu], ((var[:, None] + var[None]) / (2 * Dm))[iu], rtol=1e-12)
    assert V[iu].mean() == pytest.approx(full["cdnv"], rel=1e-9)
    A = cdnv(var, mu, asymmetric=True, power=1.0, reduction="none").numpy()
    np.testing.assert_allclose(A[0, 1], var[0] / np.sqrt(Dm[0, 1]), rtol=1e-12)
    assert cdnv(var, mu, asymmetric=True, power=1.0) == pytest.approx(np.nanmean(A), rel=1e-9)


# --- guards --------------------------------------------------------------------------------------

def test_empty_classes_are_dropped_and_reported():
    rng = np.random.default_rng(15)
    X, y, W, b = random_problem(rng, C=5)
    y2 = np.where(y >= 2, y + 1, y)                                   # label 2 never occurs
    W2 = np.insert(W, [2, 5], rng.standard_normal((2, W.shape[1])), axis=0)    # rows for classes 2 and 6
    b2 = np.insert(b, [2, 5], -1e6)                                   # never chosen by the network
    got = measure(X, y2, W2, b2, n_classes=7).to_dict()
    assert got["classes_dropped"] == [2, 6] and got["n_classes"] == 5 and got["n_classes_total"] == 7
    assert_matches(got, measure(X, y, W, b).to_dict(), keys=["nc1", "cdnv", "nc2_etf_error", "nc3", "nc3_zhu", "nc4"])


def test_coincident_means_are_flagged():
    rng = np.random.default_rng(16)
    X, y, _, _ = random_problem(rng, C=4)
    X2 = np.concatenate([X, X[y == 1]])
    y2 = np.concatenate([y, np.full((y == 1).sum(), 4)])              # class 4 duplicates class 1
    rec = measure(X2, y2)
    assert rec.n_coincident_pairs == 1 and rec.coincident_pairs == [[1, 4]]
    assert rec.to_dict()["cdnv"] is None and math.isinf(rec.cdnv)
    assert math.isfinite(rec.nc1)


def test_bad_inputs_raise_one_line_errors():
    rng = np.random.default_rng(17)
    X, y, W, b = random_problem(rng, C=3)
    Xn = X.copy()
    Xn[37, 5] = np.nan
    with pytest.raises(NclabError, match=r"non-finite values .*row 37, column 5"):
        measure(Xn, y)
    with pytest.raises(NclabError, match="non-finite"):
        ClassStats(3, X.shape[1]).update(torch.as_tensor(Xn), torch.as_tensor(y))
    with pytest.raises(NclabError, match="labels"):
        measure(X, y[:-1])
    with pytest.raises(NclabError, match="W: expected 3 x"):
        measure(X, y, W[:, :-1])
    with pytest.raises(NclabError, match="at least 2 non-empty classes"):
        measure(X[y == 0], y[y == 0])
    for err in (NclabError("x"),):
        assert "\n" not in str(err)


# --- record and CLI ------------------------------------------------------------------------------

JSON_KEYS = {"n_samples", "n_classes", "dim", "cdnv", "cdnv_debiased", "cdnv_debiased_excluded", "nc1", "nc1_quotient", "nc2_equinorm", "nc2_equiangle",
             "nc2_maxangle", "nc2_etf_error", "min_mean_distance"}
W_KEYS = {"nc2_equinorm_w", "nc2_equiangle_w", "nc2_maxangle_w", "nc3", "nc4"}


def test_record_keys_and_python_entry_point():
    rng = np.random.default_rng(18)
    X, y, W, b = random_problem(rng, C=4)
    plain = nclab.measure(torch.as_tensor(X), torch.as_tensor(y)).to_dict()
    assert JSON_KEYS <= set(plain) and not (W_KEYS & set(plain))
    with_w = nclab.measure(X, y, W=W, b=b).to_dict()
    assert (JSON_KEYS | W_KEYS) <= set(with_w)
    json.dumps(with_w, allow_nan=False)                               # strict JSON


def test_cli_measure_table_and_json(tmp_path, capsys):
    from nclab.cli import main
    from nclab.featurefile import FeatureSet, save_features
    rng = np.random.default_rng(19)
    X, y, W, b = random_problem(rng, C=4)
    path = tmp_path / "F.npz"
    save_features(path, FeatureSet(X.astype(np.float32), y, [f"c{i}" for i in range(4)], W, b))
    out = tmp_path / "m.json"
    assert main(["measure", str(path), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "NC1" in table and "CDNV" in table
    data = json.loads(out.read_text())
    fs_rec = measure(X.astype(np.float32), y, W.astype(np.float32), b.astype(np.float32), n_classes=4).to_dict()
    assert list(data) == list(fs_rec) and data["nc1"] == pytest.approx(fs_rec["nc1"], rel=1e-12)
    bad = tmp_path / "bad.npz"
    Xb = X.astype(np.float32)
    Xb[3, 1] = np.inf
    np.savez(bad, features=Xb, labels=y)
    assert main(["measure", str(bad), "--json", str(tmp_path / "no.json")]) == 2
    assert "non-finite" in capsys.readouterr().err and not (tmp_path / "no.json").exists()
