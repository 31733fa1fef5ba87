"""Neural-collapse metrics NC1-NC4, CDNV and ETF geometry, from exact float64 class statistics.

Notation (../shared/SCIENCE.md): K classes in use, class means mu_c, global mean g
(unweighted mean of the class means by default, or the sample mean), centred means
m_c = mu_c - g stacked as M (K x d) with thin SVD M = U S V^T, within-class covariance
Sigma_W = S_W / N and between-class covariance Sigma_B = M^T M / K.

Every metric is a pure function of those statistics. ``measure`` runs two chunked passes over
in-memory features (class sums; then exact centred deviations, the NC1 quadratic forms
v_k^T S_W v_k and the nearest-class-centre decisions) and returns a :class:`CollapseRecord`.
``measure_from_stats`` does the same from a streaming :class:`~nclab.metrics.stats.ClassStats`.

Normalisations (documented choices): standard deviations are population (1/n) ones;
``min_mean_distance`` is min_{i<j} ||mu_i - mu_j|| divided by the mean centred-mean norm
mean_c ||m_c||; pairs of means closer than ``coincide_rtol`` times that norm are "coincident":
reported, and CDNV is then infinite (null in JSON).

Two CDNV estimators (../shared/SCIENCE.md section 6): ``cdnv`` is the plug-in one every public
implementation uses (1/n variances, distances of the sample means), whose expectation depends
on the samples per class; ``cdnv_debiased`` corrects both parts so that splits with different
class sizes can be compared (:func:`pair_stats`).
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import Tensor

from nclab.errors import NclabError
from nclab.metrics.stats import CentredPass, ClassMoments, ClassStats, check_finite
from nclab.parallel import parallel_map

__all__ = [
    "CollapseRecord", "MeanGeometry", "PairStats", "measure", "measure_from_stats", "centred_pass",
    "mean_geometry", "nc1_pinv", "nc1_quotient", "cdnv", "pair_stats", "equinorm", "equiangularity",
    "max_angle", "etf_error", "nc3", "nc3_zhu", "ncc_accuracy", "ncc_mismatch",
]

_EPS = float(torch.finfo(torch.float64).eps)


# --- between-class geometry ----------------------------------------------------------------------

@dataclass
class MeanGeometry:
    """Centred class means and their SVD: M = U diag(S) Vh, rank r = #{S_k > tol}."""

    g: Tensor
    M: Tensor
    U: Tensor
    S: Tensor
    Vh: Tensor
    rank: int
    tol: float


def mean_geometry(means: Tensor, counts: Tensor | None = None, global_mean: str = "unweighted",
                  rtol: float | None = None) -> MeanGeometry:
    """Centre the class means (g = mean of the means, or the count-weighted sample mean) and take
    the thin SVD of M. tol = rtol * S_max with rtol = max(K, d) * eps64 by default (the
    ``numpy.linalg.matrix_rank`` convention). Papyan et al. 2020, Sigma_B = M^T M / K.

    LAPACK runs single-threaded here on CPU: its divide-and-conquer SVD is a long chain of small
    BLAS calls whose thread barriers cost far more than they save when the cores are shared
    (the 1,000 x 2,048 SVD of the benchmark was profiled at 24 s inside a 2-thread run on the
    shared machine, 0.5 s in isolation)."""
    means = means.to(torch.float64)
    if global_mean == "unweighted":
        g = means.mean(0)
    elif global_mean == "weighted":
        w = counts.to(torch.float64)
        g = (w[:, None] * means).sum(0) / w.sum()
    else:
        raise NclabError(f"global_mean: expected 'unweighted' or 'weighted', got {global_mean!r}")
    M = means - g
    K, d = M.shape
    with _intraop_threads(1 if M.device.type == "cpu" else None):
        if K < d:
            # Householder QR of the tall M^T = Q R (backward stable, BLAS-3), then the SVD of the
            # K x K triangle R = U_r S V_r^T: M = V_r S (Q U_r)^T. Same singular values to
            # eps ||M|| as a direct SVD, at a fraction of the cost for d >> K.
            Q, R = torch.linalg.qr(M.T)
            Ur, S, Vrh = torch.linalg.svd(R)
            U, Vh = Vrh.T, (Q @ Ur).T
        else:
            U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    rtol = max(K, d) * _EPS if rtol is None else float(rtol)
    tol = rtol * float(S[0]) if S.numel() else 0.0
    return MeanGeometry(g, M, U, S, Vh, int((S > tol).sum()), tol)


# --- NC1 -----------------------------------------------------------------------------------------

def nc1_pinv(quad: Tensor, S: Tensor, rank: int) -> float:
    """NC1 = Tr(Sigma_W Sigma_B^+) / K = sum_{k<r} (v_k^T Sigma_W v_k) / s_k^2 (Papyan et al. 2020).

    ``quad[k] = v_k^T Sigma_W v_k`` along the right singular vectors of M, ``S`` its singular
    values (Sigma_B = V diag(S^2/K) V^T, so Sigma_B^+ = V diag(K/S^2) V^T); only the r directions
    above the tolerance enter, and no d x d pseudo-inverse is ever formed."""
    r = int(rank)
    return float((quad[:r] / S[:r] ** 2).sum())


def nc1_quotient(trace_w: float, S: Tensor, K: int) -> float:
    """Tr Sigma_W / Tr Sigma_B with Tr Sigma_B = sum_k s_k^2 / K (trace form of NC1)."""
    return float(trace_w) / (float((S ** 2).sum()) / K)


# --- pairwise statistics over class means / classifier rows (tiled) -----------------------------

class _Moments:
    """Running count / mean / M2 merged tile by tile (Chan et al. 1979)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2, self.abs = 0, 0.0, 0.0, 0.0

    def add(self, v: Tensor) -> None:
        nb = v.numel()
        if nb == 0:
            return
        mb = float(v.mean())
        m2b = float(((v - mb) ** 2).sum())
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.abs += float(v.abs().sum())
        self.n = n

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else float("nan")

    @property
    def cov(self) -> float:
        return self.std / self.mean if self.n and self.mean != 0 else float("nan")

    @property
    def abs_mean(self) -> float:
        return self.abs / self.n if self.n else float("nan")


@dataclass
class PairStats:
    """Reductions over unordered pairs i < j of rows A_i (and, with variances, CDNV).

    ``cos_std`` = equiangularity, ``maxangle`` = mean |cos + 1/(K-1)|, ``min_dist`` = min ||A_i - A_j||.
    ``cdnv_*`` are mean and CoV of the symmetric V_ij (unordered pairs) and of the asymmetric
    Var_i / ||A_i - A_j||^p (ordered pairs); ``coincident`` lists pairs with distance <= tol.
    ``cdnv_debiased_mean`` is the debiased CDNV over the pairs with a positive corrected distance,
    ``cdnv_debiased_excluded`` the number of pairs left out (see :func:`pair_stats`)."""

    cos_mean: float
    cos_std: float
    maxangle: float
    min_dist: float
    coincident: list[tuple[int, int]] = field(default_factory=list)
    n_coincident: int = 0
    cdnv_mean: float = float("nan")
    cdnv_cov: float = float("nan")
    cdnv_asym_mean: float = float("nan")
    cdnv_asym_cov: float = float("nan")
    cdnv_debiased_mean: float = float("nan")
    cdnv_debiased_excluded: int | None = None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _tile_rows(K: int, budget: int = 1 << 22) -> int:
    return max(1, min(K, budget // max(K, 1)))


def pair_stats(A: Tensor, variances: Tensor | None = None, power: float = 2.0, coincide_tol: float = 0.0,
               max_listed: int = 100, debias: tuple[Tensor, Tensor] | None = None) -> PairStats:
    """One tiled sweep over all pairs: Gram blocks A[i0:i1] A[i0:]^T (never a K x K matrix for
    large K). Squared distances ||a_i||^2 + ||a_j||^2 - 2 a_i.a_j are recomputed from the
    difference vector wherever that sum cancels (distance^2 < 1e-4 of the squared norms), so
    every distance keeps float64 relative accuracy.

    CDNV (Galanti et al. 2022): V_ij = (Var_i + Var_j) / (2 ||mu_i - mu_j||^p), p = ``power`` (2);
    asymmetric form (Galanti et al. 2023, arXiv 2212.12532): Var_i / ||mu_i - mu_j||^p.

    Debiased CDNV (``debias`` = (s^2, n): unbiased variances s_c^2 = sum ||h - mu_c||^2 / (n_c - 1)
    and class sizes n_c; ../shared/SCIENCE.md section 6): E ||mu^_i - mu^_j||^2 = ||mu_i - mu_j||^2
    + Var_i/n_i + Var_j/n_j, so D_ij = ||mu^_i - mu^_j||^2 - s_i^2/n_i - s_j^2/n_j is unbiased for the
    squared distance, and V_ij = (s_i^2 + s_j^2) / (2 D_ij^(p/2)) is averaged over the pairs with
    D_ij > 0. D_ij <= 0 happens for (nearly) coincident class means, whose distance the samples
    cannot resolve; those pairs are left out (counted in ``cdnv_debiased_excluded``) rather than
    clamped, which would give an unbounded V. The ratio of unbiased parts keeps a small bias of
    order Var(D_ij) / D_ij^2 (Jensen)."""
    A = A.to(torch.float64)
    K = A.shape[0]
    if K < 2:
        raise NclabError(f"pairwise statistics need at least 2 classes, got {K}")
    sq = (A * A).sum(1)
    norm = sq.sqrt()
    ideal = -1.0 / (K - 1)
    cos_m, dev_m, sym_m, asym_m, deb_m = _Moments(), _Moments(), _Moments(), _Moments(), _Moments()
    if debias is not None:
        s2 = debias[0].to(A.device, torch.float64)
        corr = s2 / debias[1].to(A.device, torch.float64)            # s_c^2 / n_c
        excluded = 0
    min_d2 = math.inf
    coincident: list[tuple[int, int]] = []
    n_coinc = 0
    rows = _tile_rows(K)
    tol2 = coincide_tol ** 2
    for i0 in range(0, K, rows):
        i1 = min(K, i0 + rows)
        G = A[i0:i1] @ A[i0:].T
        ii = torch.arange(i0, i1, device=A.device)[:, None]
        jj = torch.arange(i0, K, device=A.device)[None, :]
        upper = jj > ii
        scale = sq[i0:i1, None] + sq[None, i0:]
        D = scale - 2 * G
        fix = upper & (D < 1e-4 * scale)
        if bool(fix.any()):
            fi, fj = fix.nonzero(as_tuple=True)
            diff = A[i0 + fi] - A[i0 + fj]
            D[fi, fj] = (diff * diff).sum(1)
        D = D.clamp(min=0)[upper]
        nrm = norm[i0:i1, None] * norm[None, i0:]
        ok = upper & (nrm > 0)
        cosv = (G[ok] / nrm[ok])
        cos_m.add(cosv)
        dev_m.add(cosv - ideal)
        if D.numel():
            min_d2 = min(min_d2, float(D.min()))
        close = D <= tol2
        if bool(close.any()):
            pi, pj = (ii.expand_as(upper)[upper][close], jj.expand_as(upper)[upper][close])
            n_coinc += int(close.sum())
            room = max(0, max_listed - len(coincident))
            coincident += [(int(a), int(c)) for a, c in zip(pi[:room], pj[:room])]
        if variances is not None:
            far = ~close
            den = D[far] ** (power / 2)
            vi = variances[i0:i1, None].expand_as(upper)[upper][far]
            vj = variances[None, i0:].expand_as(upper)[upper][far]
            sym_m.add((vi + vj) / (2 * den))
            asym_m.add(torch.cat([vi / den, vj / den]))
        if debias is not None:
            Dc = D - (corr[i0:i1, None] + corr[None, i0:])[upper]
            keep = Dc > 0
            excluded += int((~keep).sum())
            deb_m.add((s2[i0:i1, None] + s2[None, i0:])[upper][keep] / (2 * Dc[keep] ** (power / 2)))
    out = PairStats(cos_mean=cos_m.mean, cos_std=cos_m.std, maxangle=dev_m.abs_mean, min_dist=math.sqrt(min_d2),
                    coincident=coincident, n_coincident=n_coinc)
    if variances is not None:
        if n_coinc:
            out.cdnv_mean = out.cdnv_asym_mean = math.inf
        else:
            out.cdnv_mean, out.cdnv_cov = sym_m.mean, sym_m.cov
            out.cdnv_asym_mean, out.cdnv_asym_cov = asym_m.mean, asym_m.cov
    if debias is not None:
        out.cdnv_debiased_mean = deb_m.mean if deb_m.n else math.nan        # every pair left out
        out.cdnv_debiased_excluded = excluded
    return out


def cdnv(variances: Tensor, means: Tensor, *, asymmetric: bool = False, power: float = 2.0,
         reduction: str = "mean") -> float | Tensor:
    """Class-distance-normalised variance (Galanti et al. 2022; asymmetric: arXiv 2212.12532).

    V_ij = (Var_i + Var_j) / (2 ||mu_i - mu_j||^p), or Var_i / ||mu_i - mu_j||^p when
    ``asymmetric``; Var_c = E ||h - mu_c||^2 over class c. ``reduction``: "mean" over unordered
    (ordered when asymmetric) pairs, "cov" the coefficient of variation, "none" the full K x K
    matrix (diagonal NaN; refused beyond 4096 classes)."""
    variances = torch.as_tensor(variances, dtype=torch.float64)
    means = torch.as_tensor(means, dtype=torch.float64)
    if reduction == "none":
        K = means.shape[0]
        if K > 4096:
            raise NclabError(f"cdnv: reduction='none' builds a {K} x {K} matrix; "
                             "use 'mean' or 'cov' beyond 4096 classes")
        # row by row from the difference vectors: exact distances, memory K x d
        den = torch.stack([((means - means[i]) ** 2).sum(1) for i in range(K)]) ** (power / 2)
        num = variances[:, None].expand(K, K) if asymmetric else (variances[:, None] + variances[None, :]) / 2
        V = num / den
        V.fill_diagonal_(float("nan"))
        return V
    ps = pair_stats(means - means.mean(0), variances, power)
    if reduction == "mean":
        return ps.cdnv_asym_mean if asymmetric else ps.cdnv_mean
    if reduction == "cov":
        return ps.cdnv_asym_cov if asymmetric else ps.cdnv_cov
    raise NclabError(f"cdnv: reduction must be 'mean', 'cov' or 'none', got {reduction!r}")


# --- NC2 -----------------------------------------------------------------------------------------

def equinorm(A: Tensor) -> float:
    """NC2 equinorm: std_c ||a_c|| / mean_c ||a_c|| (population std; Papyan et al. 2020)."""
    n = torch.as_tensor(A, dtype=torch.float64).norm(dim=1)
    return float(n.std(correction=0) / n.mean())


def equiangularity(A: Tensor) -> float:
    """NC2 equiangularity: std over pairs c != c' of cos(a_c, a_c') (Papyan et al. 2020)."""
    return pair_stats(torch.as_tensor(A, dtype=torch.float64)).cos_std


def max_angle(A: Tensor) -> float:
    """NC2 max-angle: mean over pairs c != c' of |cos(a_c, a_c') + 1/(K-1)| (Papyan et al. 2020)."""
    return pair_stats(torch.as_tensor(A, dtype=torch.float64)).maxangle


def _etf_error_general(A: Tensor, B: Tensor) -> float:
    """|| A B^T / ||A B^T||_F - (I - 11^T/K)/sqrt(K-1) ||_F via its expansion
    2 - 2 (tr(A B^T) - (1^T A)(B^T 1)/K) / (||A B^T||_F sqrt(K-1)); resolves errors down to ~1e-8."""
    K, d = A.shape
    if d <= K:
        fro2 = float(((A.T @ A) * (B.T @ B)).sum())
    else:
        fro2 = 0.0
        rows = _tile_rows(K)
        for i0 in range(0, K, rows):
            P = A[i0:i0 + rows] @ B.T
            fro2 += float((P * P).sum())
    inner = float((A * B).sum()) - float(A.sum(0) @ B.sum(0)) / K
    return math.sqrt(max(0.0, 2 - 2 * inner / (math.sqrt(fro2) * math.sqrt(K - 1))))


def etf_error(M: Tensor, S: Tensor | None = None) -> float:
    """NC2 ETF error || M M^T/||M M^T||_F - (I - 11^T/K)/sqrt(K-1) ||_F (Papyan et al. 2020).

    When the rows of M sum to zero (centred by the unweighted mean), M M^T lives on 1^perp and
    the error is exactly sum_{k<K} (s_k^2/||s^2|| - 1/sqrt(K-1))^2 over the singular values
    (padded with zeros), computed without cancellation; otherwise the general expansion."""
    M = torch.as_tensor(M, dtype=torch.float64)
    K = M.shape[0]
    if float(M.sum(0).norm()) > 1e-10 * float(M.norm()):
        return _etf_error_general(M, M)
    S = torch.linalg.svdvals(M) if S is None else S
    s2 = S ** 2
    lam = s2 / s2.norm()
    lam = torch.cat([lam, lam.new_zeros(max(0, K - 1 - len(lam)))])[: K - 1]
    return math.sqrt(float(((lam - 1 / math.sqrt(K - 1)) ** 2).sum()))


# --- NC3 / NC4 -----------------------------------------------------------------------------------

def nc3(W: Tensor, M: Tensor) -> float:
    """NC3 (self-duality) || W/||W||_F - M/||M||_F ||_F^2 (Papyan et al. 2020)."""
    W = torch.as_tensor(W, dtype=torch.float64)
    M = torch.as_tensor(M, dtype=torch.float64)
    return float(((W / W.norm() - M / M.norm()) ** 2).sum())


def nc3_zhu(W: Tensor, M: Tensor) -> float:
    """NC3 of Zhu et al. 2021: || W M^T/||W M^T||_F - (I - 11^T/K)/sqrt(K-1) ||_F."""
    return _etf_error_general(torch.as_tensor(W, dtype=torch.float64), torch.as_tensor(M, dtype=torch.float64))


def ncc_accuracy(features, labels, means, chunk_rows: int = 4096) -> float:
    """Fraction of samples whose nearest class mean is their own: argmin_c ||h - mu_c|| = y (the
    NCC rule of Galanti et al. 2022). With the class means of the training samples and held-out
    samples of the same classes, this is test collapse. float64 scores ||m_c||^2 - 2 (h - g).m_c
    with m_c = mu_c - g and g the mean of the means, so far-from-origin features cancel nothing."""
    mu = torch.as_tensor(np.asarray(means) if not isinstance(means, Tensor) else means).to(torch.float64)
    X, y = _to_tensor(features, "features"), _to_tensor(labels, "labels")
    if X.ndim != 2 or X.shape[1] != mu.shape[1] or y.shape != (len(X),) or len(X) == 0:
        raise NclabError(f"ncc_accuracy: expected N x {mu.shape[1]} features and N labels, "
                         f"got {tuple(X.shape)} and {tuple(y.shape)}")
    g = mu.mean(0)
    m = (mu - g).to(X.device)
    m_sq = (m * m).sum(1)
    correct = 0
    for i in range(0, len(X), chunk_rows):
        h = X[i:i + chunk_rows].to(torch.float64) - g.to(X.device)
        pred = torch.argmin(m_sq[None, :] - 2 * h @ m.T, dim=1)
        correct += int((pred == y[i:i + chunk_rows].to(pred.device)).sum())
    return correct / len(X)


def ncc_mismatch(ncc_pred: Tensor, net_pred: Tensor) -> float:
    """NC4: fraction of samples whose nearest class centre differs from argmax_c (w_c.h + b_c)."""
    return float((torch.as_tensor(ncc_pred) != torch.as_tensor(net_pred)).double().mean())


# --- the record ----------------------------------------------------------------------------------

_W_KEYS = ("nc2_equinorm_w", "nc2_equiangle_w", "nc2_maxangle_w", "nc2_etf_error_w", "nc3", "nc3_zhu", "nc4")


@dataclass
class CollapseRecord:
    """Collapse statistics of one feature set; ``to_dict()`` gives exactly the JSON keys.

    Classifier keys (``*_w``, ``nc3``, ``nc3_zhu``, ``nc4``) are present only when W was given;
    undefined values (CDNV with coincident means, NCC without a second pass) are None.

    ``cdnv`` is the plug-in estimate (1/n variances, distances of the sample means; its value
    depends on the samples per class); ``cdnv_debiased`` uses unbiased variances and squared
    mean distances minus s_i^2/n_i + s_j^2/n_j, averaged over the pairs whose corrected distance
    is positive; ``cdnv_debiased_excluded`` counts the pairs left out (:func:`pair_stats`). Both
    debiased keys are None when a class has fewer than 2 samples (no unbiased variance), and
    ``cdnv_debiased`` is None when every pair was left out. Use the debiased value to compare
    splits with different class sizes (train 16 per class against test 4, say)."""

    n_samples: int
    n_classes: int
    dim: int
    cdnv: float
    cdnv_cov: float
    cdnv_asym: float
    cdnv_asym_cov: float
    cdnv_debiased: float | None
    cdnv_debiased_excluded: int | None
    nc1: float
    nc1_quotient: float
    nc1_rank: int
    nc1_tol: float
    nc2_equinorm: float
    nc2_equiangle: float
    nc2_maxangle: float
    nc2_etf_error: float
    min_mean_distance: float
    min_mean_distance_raw: float
    ncc_accuracy: float | None
    nc2_equinorm_w: float | None = None
    nc2_equiangle_w: float | None = None
    nc2_maxangle_w: float | None = None
    nc2_etf_error_w: float | None = None
    nc3: float | None = None
    nc3_zhu: float | None = None
    nc4: float | None = None
    has_classifier: bool = False
    classes_dropped: list[int] = field(default_factory=list)
    coincident_pairs: list[list[int]] = field(default_factory=list)
    n_coincident_pairs: int = 0
    n_classes_total: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    global_mean: str = "unweighted"
    variance: str = "biased"
    cdnv_power: float = 2.0

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            if f.name == "has_classifier" or (f.name in _W_KEYS and not self.has_classifier):
                continue
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            out[f.name] = v
        return out


# --- assembling ----------------------------------------------------------------------------------

def _options(global_mean: str, variance: str, power: float) -> None:
    if global_mean not in ("unweighted", "weighted"):
        raise NclabError(f"global_mean: expected 'unweighted' or 'weighted', got {global_mean!r}")
    if variance not in ("biased", "unbiased"):
        raise NclabError(f"variance: expected 'biased' or 'unbiased', got {variance!r}")
    if not power > 0:
        raise NclabError(f"cdnv_power: expected a positive exponent, got {power}")


def _used(moments: ClassMoments) -> tuple[Tensor, list[int]]:
    used = (moments.counts > 0).nonzero().flatten()
    dropped = (moments.counts == 0).nonzero().flatten().tolist()
    if len(used) < 2:
        raise NclabError(f"labels: need at least 2 non-empty classes, got {len(used)}")
    return used, dropped


def _classifier(W, b, C: int, d: int, device) -> tuple[Tensor | None, Tensor | None]:
    if W is None:
        if b is not None:
            raise NclabError("b: a bias was given without W")
        return None, None
    W = torch.as_tensor(np.asarray(W) if not isinstance(W, Tensor) else W).to(device=device, dtype=torch.float64)
    if W.shape != (C, d):
        raise NclabError(f"W: expected {C} x {d} (classes x dim), got {tuple(W.shape)}")
    if b is not None:
        b = torch.as_tensor(np.asarray(b) if not isinstance(b, Tensor) else b).to(device=device, dtype=torch.float64)
        if b.shape != (C,):
            raise NclabError(f"b: expected {C} entries, got shape {tuple(b.shape)}")
    if not bool(torch.isfinite(W).all()) or (b is not None and not bool(torch.isfinite(b).all())):
        raise NclabError("W / b: non-finite values; expected finite numbers")
    return W, b


def centred_pass(moments: ClassMoments, geometry: MeanGeometry | None = None, W=None, b=None,
                 global_mean: str = "unweighted", rtol: float | None = None, **metric_kwargs) -> CentredPass:
    """The second-pass accumulator matching ``moments`` (feed it the same data again);
    ``metric_kwargs`` go to the torchmetrics ``Metric`` (e.g. ``sync_on_compute``)."""
    used, _ = _used(moments)
    geo = geometry or mean_geometry(moments.means[used], moments.counts[used], global_mean, rtol)
    C, d = moments.means.shape
    W, b = _classifier(W, b, C, d, moments.means.device)
    return CentredPass(moments.means[used], used, C, basis=geo.Vh.T.contiguous(), proj=geo.U * geo.S, W=W, b=b,
                       **metric_kwargs)


def _record(moments: ClassMoments, geo: MeanGeometry, quad: Tensor, sqdev: Tensor, ncc: dict | None,
            W: Tensor | None, *, variance: str, power: float, coincide_rtol: float, dtype: str,
            global_mean: str) -> CollapseRecord:
    used, dropped = _used(moments)
    n = moments.counts[used].to(torch.float64)
    N, K, d = int(n.sum()), len(used), moments.means.shape[1]
    if variance == "unbiased":
        if bool((n < 2).any()):
            c = int(used[(n < 2).nonzero()[0, 0]])
            raise NclabError(f"variance='unbiased' needs >= 2 samples per class; class {c} has 1")
        var, n_w = sqdev / (n - 1), N - K
    else:
        var, n_w = sqdev / n, N
    sigma_quad = quad / n_w
    norms = geo.M.norm(dim=1)
    mean_norm = float(norms.mean())
    # the debiased CDNV needs an unbiased variance, so at least 2 samples in every class
    debias = (sqdev / (n - 1), n) if bool((n >= 2).all()) else None
    ps = pair_stats(geo.M, var, power, coincide_tol=coincide_rtol * mean_norm, debias=debias)
    rec = CollapseRecord(
        n_samples=N, n_classes=K, dim=d,
        cdnv=ps.cdnv_mean, cdnv_cov=ps.cdnv_cov, cdnv_asym=ps.cdnv_asym_mean, cdnv_asym_cov=ps.cdnv_asym_cov,
        cdnv_debiased=ps.cdnv_debiased_mean, cdnv_debiased_excluded=ps.cdnv_debiased_excluded,
        nc1=nc1_pinv(sigma_quad, geo.S, geo.rank), nc1_quotient=nc1_quotient(float(sqdev.sum()) / n_w, geo.S, K),
        nc1_rank=geo.rank, nc1_tol=geo.tol,
        nc2_equinorm=equinorm(geo.M), nc2_equiangle=ps.cos_std, nc2_maxangle=ps.maxangle,
        nc2_etf_error=etf_error(geo.M, geo.S),
        min_mean_distance=ps.min_dist / mean_norm, min_mean_distance_raw=ps.min_dist,
        ncc_accuracy=None if ncc is None else float(ncc["ncc_correct"]) / N,
        classes_dropped=dropped, coincident_pairs=[[int(used[i]), int(used[j])] for i, j in ps.coincident],
        n_coincident_pairs=ps.n_coincident, n_classes_total=moments.means.shape[0], dtype=dtype,
        device=str(moments.means.device), global_mean=global_mean, variance=variance, cdnv_power=float(power))
    if W is not None:
        Wu = W[used]
        pw = pair_stats(Wu)
        rec.has_classifier = True
        rec.nc2_equinorm_w, rec.nc2_equiangle_w, rec.nc2_maxangle_w = equinorm(Wu), pw.cos_std, pw.maxangle
        rec.nc2_etf_error_w = _etf_error_general(Wu, Wu)
        rec.nc3, rec.nc3_zhu = nc3(Wu, geo.M), nc3_zhu(Wu, geo.M)
        rec.nc4 = None if ncc is None else float(ncc["mismatch"]) / N
    return rec


def measure_from_stats(stats: ClassStats | ClassMoments, W=None, b=None, *, centred: dict | None = None,
                       global_mean: str = "unweighted", variance: str = "biased", rtol: float | None = None,
                       cdnv_power: float = 2.0, coincide_rtol: float = 1e-10) -> CollapseRecord:
    """Collapse record from streaming statistics. NC1 needs the scatter (``ClassStats(scatter=True)``)
    or ``centred``, the ``compute()`` of the :func:`centred_pass` fed the same data (which also
    gives NCC accuracy and NC4; without it they are None)."""
    _options(global_mean, variance, cdnv_power)
    mom = stats.compute() if isinstance(stats, ClassStats) else stats
    used, _ = _used(mom)
    geo = mean_geometry(mom.means[used], mom.counts[used], global_mean, rtol)
    C, d = mom.means.shape
    Wt, _b = _classifier(W, b, C, d, mom.means.device)
    if centred is not None:
        quad, sqdev = centred["quad"], centred["sqdev"]
    elif mom.scatter is not None:
        quad = ((geo.Vh @ mom.scatter) * geo.Vh).sum(1)
        sqdev = mom.sqdev[used]
    else:
        raise NclabError("measure_from_stats: NC1 needs ClassStats(scatter=True) or a centred second pass")
    return _record(mom, geo, quad, sqdev, centred, Wt, variance=variance, power=cdnv_power,
                   coincide_rtol=coincide_rtol, dtype="float64", global_mean=global_mean)


@contextlib.contextmanager
def _intraop_threads(n: int | None):
    """Temporarily set torch's CPU intra-op threads (None: leave as is)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _to_tensor(a, what: str) -> Tensor:
    if isinstance(a, Tensor):
        return a
    arr = np.asarray(a)
    if arr.dtype == object:
        raise NclabError(f"{what}: expected a numeric array, got dtype object")
    return torch.from_numpy(np.ascontiguousarray(arr))


def measure(features, labels, W=None, b=None, *, n_classes: int | None = None, global_mean: str = "unweighted",
            variance: str = "biased", rtol: float | None = None, cdnv_power: float = 2.0,
            coincide_rtol: float = 1e-10, chunk_rows: int | None = None,
            num_threads: int | None = None) -> CollapseRecord:
    """All collapse metrics of in-memory features (N x d, any float dtype, numpy or torch) with
    labels (N ints), optionally the classifier W (C x d) and bias b (C).

    Two chunked float64 passes: (1) class counts and sums (:class:`ClassStats`); (2) exact centred
    deviations, the NC1 quadratic forms along the right singular vectors of M, and the NCC /
    network decisions (:class:`CentredPass`). Cost ~ N d (K + C) flops; memory ~ chunk + K d.
    Options: ``global_mean`` ('unweighted' | 'weighted'), ``variance`` ('biased' 1/n |
    'unbiased' 1/(n-1)), ``rtol`` (relative SVD tolerance for the rank of M), ``cdnv_power``,
    ``coincide_rtol``, ``n_classes`` (C when some classes may be empty), ``chunk_rows``.

    Parallelism on CPU: ``num_threads`` workers (default ``torch.get_num_threads()``) with
    single-threaded torch ops (:mod:`nclab.parallel`). Each chunk is a handful of cache-resident,
    memory-bound operations plus thin GEMMs, for which intra-op thread barriers cost more than they
    save (and ~10x more when the cores are shared with other processes; BENCHMARKS.md). Pass 1
    (class sums, d-wide state) gives every n-th chunk to worker n and merges the workers' sums in
    order; pass 2 (the GEMMs) hands chunks out from a queue and adds the small per-chunk states in
    chunk order. Either way the result does not depend on thread timing."""
    _options(global_mean, variance, cdnv_power)
    X = _to_tensor(features, "features")
    y = _to_tensor(labels, "labels")
    if X.ndim != 2:
        raise NclabError(f"features: expected N x d, got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        raise NclabError(f"features: expected floating point values, got {X.dtype}")
    if y.ndim != 1 or len(y) != len(X):
        raise NclabError(f"labels: expected {len(X)} integer labels, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise NclabError(f"labels: expected integers, got {y.dtype}")
    if len(X) == 0:
        raise NclabError("features: no samples")
    y = y.to(device=X.device, dtype=torch.int64)
    if int(y.min()) < 0:
        raise NclabError(f"labels: expected values >= 0, got {int(y.min())}")
    N, d = X.shape
    top = int(y.max()) + 1
    C = n_classes if n_classes is not None else (int(np.shape(W)[0]) if W is not None else top)
    if top > C:
        raise NclabError(f"labels: expected values in 0..{C - 1}, got {top - 1}")
    Wt, bt = _classifier(W, b, C, d, X.device)
    # chunks of ~4 MiB of float64 stay in cache through the few element-wise passes of an update
    # and are recycled by the allocator (larger ones are mapped and page-faulted afresh each time);
    # when the per-chunk GEMMs dominate (large d, K or C) up to 1,024 rows (16 MiB) keep them at
    # full rate (256-row chunks ran ~1.5x slower at d=2,048, C=1,000; measured single-threaded)
    rows = chunk_rows or max(16, (1 << 19) // max(d, C), min(1024, (1 << 21) // max(d, C)))
    n_workers = max(1, int(num_threads or torch.get_num_threads())) if X.device.type == "cpu" else 1
    starts = list(range(0, N, rows))

    def run(make):
        """Feed chunk j to accumulator j % n_workers (its own thread), then merge in worker order."""
        accs = [make() for _ in range(n_workers)]

        def work(w):
            for i in starts[w::n_workers]:
                accs[w].update(X[i:i + rows], y[i:i + rows])

        with _intraop_threads(1 if X.device.type == "cpu" else None):
            parallel_map(work, range(n_workers), n_workers)
        for a in accs[1:]:
            accs[0].merge_state(a)
        return accs[0]

    def run_queued(make):
        """Chunks from a shared queue (a worker slowed by another process takes fewer), each
        accumulated alone; the per-chunk states (small: per-class sums) are added in chunk order,
        so the result does not depend on which worker took which chunk."""
        local = threading.local()

        def chunk(i):
            acc = getattr(local, "acc", None)
            if acc is None:
                acc = local.acc = make()
            acc.reset()
            acc.update(X[i:i + rows], y[i:i + rows])
            return acc, {name: getattr(acc, name).clone() for name in acc._defaults}

        with _intraop_threads(1 if X.device.type == "cpu" else None):
            parts = parallel_map(chunk, starts, n_workers)
        final = parts[0][0]
        for name in final._defaults:
            total = parts[0][1][name]
            for _, state in parts[1:]:
                total = total + state[name]
            setattr(final, name, total)
        return final

    # pass 1 needs only class sums: one common shift (first chunk's mean) keeps them exact.
    # sync_on_compute=False: these features are all the data; under torch.distributed (a probe on
    # rank 0 of a DDP run) the accumulators must not all-gather other processes' states.
    shift = X[:rows].to(torch.float64).mean(0)
    try:
        first = run(lambda: ClassStats(C, d, scatter=False, shift=shift, sync_on_compute=False))
    except NclabError:
        for i in starts:                                   # name the row of the whole array
            check_finite(X[i:i + rows], offset=i)
        raise
    mom = first.compute()
    used, _ = _used(mom)
    geo = mean_geometry(mom.means[used], mom.counts[used], global_mean, rtol)
    second = run_queued(lambda: centred_pass(mom, geo, Wt, bt, sync_on_compute=False))
    res = second.compute()
    return _record(mom, geo, res["quad"], res["sqdev"], res, Wt, variance=variance, power=cdnv_power,
                   coincide_rtol=coincide_rtol, dtype=str(X.dtype).replace("torch.", ""), global_mean=global_mean)
