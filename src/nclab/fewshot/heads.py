"""Few-shot heads in the scikit-learn manner, batched over E episodes at once.

Every head takes ``support`` (E x s x d), ``support_labels`` (E x s, or s shared by all
episodes; ints 0..k-1, every class present in every episode) and ``query`` (E x m x d).
Constructor arguments are stored verbatim, ``fit`` sets trailing-underscore attributes
and returns ``self``, ``predict`` returns E x m labels. Tensors stay on the inputs'
device. Each head agrees with its scikit-learn counterpart fitted episode by episode
(tests/test_fewshot_heads.py): NCC ~ ``NearestCentroid``, ridge ~ ``RidgeClassifier``,
logistic ~ ``LogisticRegression``, 1-NN ~ ``KNeighborsClassifier(1)``.
"""

from __future__ import annotations

import torch

from nclab.errors import NclabError, unknown_name


def _as_tensor(x, like: torch.Tensor | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if like is not None:
        t = t.to(like.device)
    return t


class EpisodeHead:
    """Shared input checks; subclasses implement ``fit`` and ``decision_function``."""

    def _prepare(self, support, support_labels, n_classes: int | None = None):
        S = _as_tensor(support)
        if not S.is_floating_point() or S.ndim != 3:
            raise NclabError(f"{type(self).__name__}.fit: support must be a floating E x s x d tensor, "
                             f"got {S.dtype} shape {tuple(S.shape)}")
        y = _as_tensor(support_labels, S).long()
        if y.ndim == 1:
            y = y.expand(S.shape[0], -1)
        if y.shape != S.shape[:2]:
            raise NclabError(f"{type(self).__name__}.fit: support_labels must be E x s = {tuple(S.shape[:2])}, "
                             f"got {tuple(y.shape)}")
        k = int(n_classes) if n_classes is not None else int(y.max()) + 1
        Y = torch.nn.functional.one_hot(y, k).to(S.dtype)              # E x s x k
        counts = Y.sum(1)
        if bool((counts == 0).any()):
            raise NclabError(f"{type(self).__name__}.fit: every episode needs support samples of all {k} classes")
        self.n_classes_ = k
        return S, y, Y, counts

    def predict(self, query) -> torch.Tensor:
        """E x m predicted labels: argmax of the decision function (first class on ties)."""
        return self.decision_function(query).argmax(-1)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({args})"


class NCCHead(EpisodeHead):
    """Nearest class centre: mu_c = mean of the support of class c; predict
    argmin_c ||q - mu_c||^2 (``metric="euclidean"``) or argmax_c cos(q, mu_c) (``"cosine"``).
    Galanti et al. 2022 (the NCC rule); Snell et al. 2017 (prototypes)."""

    def __init__(self, metric: str = "euclidean"):
        self.metric = metric

    def fit(self, support, support_labels, n_classes: int | None = None) -> "NCCHead":
        if self.metric not in ("euclidean", "cosine"):
            raise unknown_name("NCC metric", self.metric, ("euclidean", "cosine"))
        S, _, Y, counts = self._prepare(support, support_labels, n_classes)
        self.centroids_ = torch.bmm(Y.transpose(1, 2), S) / counts[..., None]    # E x k x d
        return self

    def decision_function(self, query) -> torch.Tensor:
        """E x m x k: -||q - mu_c||^2 (euclidean) or cos(q, mu_c) (cosine)."""
        Q = _as_tensor(query, self.centroids_).to(self.centroids_.dtype)
        mu = self.centroids_
        if self.metric == "cosine":
            from nclab.fewshot.transforms import l2_normalize
            return torch.bmm(l2_normalize(Q), l2_normalize(mu).transpose(1, 2))
        return self._half_scores(Q) - Q.square().sum(-1, keepdim=True)

    def _half_scores(self, Q: torch.Tensor) -> torch.Tensor:
        mu = self.centroids_
        return torch.baddbmm(mu.square().sum(-1)[:, None, :], Q, mu.transpose(1, 2), beta=-1, alpha=2)

    def predict(self, query) -> torch.Tensor:
        if self.metric == "cosine":
            return super().predict(query)
        # ||q||^2 is the same for every class: argmax_c 2 q.mu_c - ||mu_c||^2 suffices
        return self._half_scores(_as_tensor(query, self.centroids_).to(self.centroids_.dtype)).argmax(-1)


class RidgeHead(EpisodeHead):
    """Ridge regression to one-hot targets in {-1, 1}, closed form (as ``RidgeClassifier``):

        min_{W, b} ||Y - X W - 1 b^T||_F^2 + alpha ||W||_F^2,    b unpenalised (fit_intercept=True),

    solved on centred X, Y: primal (Xc^T Xc + alpha I) W = Xc^T Yc when d <= s (d x d),
    dual W = Xc^T (Xc Xc^T + alpha I)^{-1} Yc otherwise (s x s), by batched Cholesky in float64;
    b = mean(Y) - mean(X) W. Predict argmax_c (q W + b)_c. Galanti et al. 2022 (experiments).
    With targets in {-1, 1} instead of {0, 1}, W doubles and b shifts: the same predictions,
    and decision values equal to scikit-learn's. Fitted: ``coef_`` E x k x d (scikit-learn's
    k x d per episode), ``intercept_`` E x k."""

    def __init__(self, alpha: float = 1.0, fit_intercept: bool = True, solver: str = "auto"):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver

    def check_alpha(self) -> None:
        """The penalty must be positive (the dual system is then positive definite)."""
        if not self.alpha > 0:
            raise NclabError(f"RidgeHead: alpha must be > 0, got {self.alpha!r}")

    def fit(self, support, support_labels, n_classes: int | None = None) -> "RidgeHead":
        self.check_alpha()
        if self.solver not in ("auto", "primal", "dual"):
            raise unknown_name("ridge solver", self.solver, ("auto", "primal", "dual"))
        S, _, Y, _ = self._prepare(support, support_labels, n_classes)
        T = 2 * Y - 1
        if self.fit_intercept:
            xm, ym = S.mean(1, keepdim=True), T.mean(1, keepdim=True)
            T = T - ym
            if self.solver == "primal" or (self.solver == "auto" and S.shape[2] <= S.shape[1]):
                S = S - xm
        E, s, d = S.shape
        primal = self.solver == "primal" or (self.solver == "auto" and d <= s)
        if primal:
            St = S.transpose(1, 2)
            A = torch.bmm(St, S).double()
            rhs = torch.bmm(St, T).double()
        else:
            # centring through the Gram matrix (Kc = H K H, H = I - 11^T/s) avoids a copy of S
            A = torch.bmm(S, S.transpose(1, 2)).double()
            if self.fit_intercept:
                A = A - A.mean(1, keepdim=True) - A.mean(2, keepdim=True) + A.mean((1, 2), keepdim=True)
            rhs = T.double()
        A.diagonal(dim1=1, dim2=2).add_(float(self.alpha))
        sol = torch.cholesky_solve(rhs, torch.linalg.cholesky(A)).to(S.dtype)
        if primal:
            coef = sol.transpose(1, 2).contiguous()                                    # E x k x d
        else:
            coef = torch.bmm(sol.transpose(1, 2), S)                                   # A^T S (- (A^T 1) xm^T)
            if self.fit_intercept:
                coef -= sol.sum(1)[:, :, None] * xm
        self.coef_ = coef
        self.intercept_ = ((ym - torch.bmm(xm, coef.transpose(1, 2))).squeeze(1) if self.fit_intercept
                           else torch.zeros_like(coef[:, :, 0]))
        return self

    def fit_gram(self, K, support_labels, n_classes: int | None = None) -> "RidgeHead":
        """Fit from the support Gram matrix K = S S^T (E x s x s) alone, in the dual form (any
        d; the same solution as the primal one): with H = I - 11^T/s (when fitting the intercept),
        A = H (H K H + alpha I)^{-1} H T, so W = S^T A, and b = mean(T) - (1/s) 1^T K A
        (= mean(T) - mean(S) W). Sets ``dual_coef_`` (A, E x s x k) and ``intercept_``; no ``coef_``."""
        self.check_alpha()
        K = _as_tensor(K).double()
        _, _, Y, _ = self._prepare(K, support_labels, n_classes)
        T = 2 * Y - 1
        if self.fit_intercept:
            ym = T.mean(1, keepdim=True)
            A = K - K.mean(1, keepdim=True) - K.mean(2, keepdim=True) + K.mean((1, 2), keepdim=True)
        else:
            ym, A = torch.zeros_like(T[:, :1]), K.clone()
        A.diagonal(dim1=1, dim2=2).add_(float(self.alpha))
        sol = torch.cholesky_solve(T - ym, torch.linalg.cholesky(A))
        if self.fit_intercept:
            sol -= sol.mean(1, keepdim=True)                  # exactly H A (= A up to rounding)
        self.dual_coef_ = sol
        self.intercept_ = ((ym - torch.bmm(K.mean(1, keepdim=True), sol)).squeeze(1) if self.fit_intercept
                           else torch.zeros_like(sol[:, 0]))
        return self

    def decision_function(self, query) -> torch.Tensor:
        """E x m x k: q W + b."""
        Q = _as_tensor(query, self.coef_).to(self.coef_.dtype)
        return torch.baddbmm(self.intercept_[:, None, :], Q, self.coef_.transpose(1, 2))


def gram_coordinates(K: torch.Tensor, rtol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates of s points with Gram matrix K (E x s x s) in an orthonormal basis of their span:

        K = U diag(lam) U^T,   Z = U lam^{1/2} (so Z Z^T = K),   P = U lam^{-1/2},

    so that the basis is B = S^T P and a query's coordinates are (q S^T) P. Directions with
    lam <= rtol * max(lam) are dropped (zero columns of Z and P). Computed in float64.
    """
    lam, U = torch.linalg.eigh(K.double())
    keep = lam > rtol * lam[:, -1:].clamp_min(torch.finfo(torch.float64).tiny)
    root = lam.clamp_min(0).sqrt()
    Z = U * torch.where(keep, root, torch.zeros_like(root))[:, None, :]
    P = U * torch.where(keep, 1 / root.where(keep, torch.ones_like(root)), torch.zeros_like(root))[:, None, :]
    return Z, P


def gram_rtol(dtype: torch.dtype, s: int, d: int) -> float:
    """Relative eigenvalue cut-off for a Gram matrix of s vectors in R^d computed in ``dtype``."""
    return 10 * max(s, d) * torch.finfo(dtype).eps


def span_coordinates(support, query=None):
    """Exact coordinates of the support rows, and of the queries' projections, in an
    orthonormal basis B = S^T P of the span of the support rows (:func:`gram_coordinates`;
    float64). Any head whose weights lie in the support span (ridge, L2 logistic: representer
    theorem) or that depends on distances to support points (NCC, 1-NN) predicts the same from
    (Z, Zq) as from (S, Q). Returns (Z, Zq, P)."""
    S = _as_tensor(support).double()
    Z, P = gram_coordinates(torch.bmm(S, S.transpose(1, 2)), gram_rtol(torch.float64, S.shape[1], S.shape[2]))
    Zq = None
    if query is not None:
        Q = _as_tensor(query, S).double()
        Zq = torch.bmm(torch.bmm(Q, S.transpose(1, 2)), P)
    return Z, Zq, P


class LogisticHead(EpisodeHead):
    """Multinomial logistic regression with an L2 penalty, as scikit-learn's
    ``LogisticRegression(C=C)`` (lbfgs, intercept fitted and not penalised):

        min_{W, b} C * sum_i -log softmax(x_i W + b)_{y_i} + 1/2 ||W||_F^2.

    RFS (Tian et al. 2020) uses C = 1 on L2-normalised features. By the representer theorem
    W = S^T A (A = ``dual_coef_``), so when d > s the problem is solved on the s-dimensional
    exact coordinates of the support span (:func:`gram_coordinates` of K = S S^T), in float64,
    by batched L-BFGS with Armijo backtracking, to a max-abs gradient (of the objective / C)
    below ``tol`` (1e-5 leaves the probabilities within ~1e-5 of the optimum). The products
    with the d-dimensional features (S S^T, S^T A, q W) are done in the input dtype.
    With k = 2 scikit-learn fits the binary model (one w, penalty ||w||^2 / 2); the symmetric
    softmax model with C / 2 has exactly the same optimum, so that is what is solved."""

    def __init__(self, C: float = 1.0, max_iter: int = 500, tol: float = 1e-5, memory: int = 10):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.memory = memory

    def fit(self, support, support_labels, n_classes: int | None = None) -> "LogisticHead":
        S = _as_tensor(support)
        if S.ndim == 3 and S.shape[2] > S.shape[1]:
            self.fit_gram(torch.bmm(S, S.transpose(1, 2)), support_labels, n_classes,
                          rtol=gram_rtol(S.dtype, S.shape[1], S.shape[2]))
            self.coef_ = torch.bmm(self.dual_coef_.transpose(1, 2).to(S.dtype), S)           # A^T S: E x k x d
            return self
        S, _, Y, _ = self._prepare(S, support_labels, n_classes)
        W, self.intercept_, self.n_iter_ = self._solve(S.double(), Y)
        self.coef_ = W.transpose(1, 2).contiguous()
        self.dual_coef_ = None
        return self

    def fit_gram(self, K, support_labels, n_classes: int | None = None, rtol: float | None = None) -> "LogisticHead":
        """Fit from the support Gram matrix K = S S^T (E x s x s) alone: sets ``dual_coef_``
        (A, E x s x k, with W = S^T A) and ``intercept_``; no ``coef_``."""
        K = _as_tensor(K)
        _, _, Y, _ = self._prepare(K, support_labels, n_classes)
        Z, P = gram_coordinates(K, rtol if rtol is not None else gram_rtol(K.dtype, K.shape[1], K.shape[1]))
        Wz, self.intercept_, self.n_iter_ = self._solve(Z, Y)
        self.dual_coef_ = torch.bmm(P, Wz)
        return self

    def _solve(self, Z: torch.Tensor, Y: torch.Tensor):
        if not self.C > 0:
            raise NclabError(f"LogisticHead: C must be > 0, got {self.C!r}")
        C = self.C / 2 if Y.shape[2] == 2 else self.C
        return _fit_softmax(Z, Y.double(), C, self.max_iter, self.tol, self.memory)

    def decision_function(self, query) -> torch.Tensor:
        """E x m x k logits q W + b (float64)."""
        Q = _as_tensor(query, self.coef_)
        return torch.bmm(Q, self.coef_.to(Q.dtype).transpose(1, 2)).double() + self.intercept_[:, None, :]

    def predict_proba(self, query) -> torch.Tensor:
        """E x m x k class probabilities softmax(q W + b)."""
        return torch.softmax(self.decision_function(query), dim=-1)


def _softmax_objective(Zt: torch.Tensor, Yt: torch.Tensor, C: float):
    """f(theta) = sum_i CE(W^T z_i + b, y_i) + ||W||^2 / (2C) (scikit-learn's objective divided
    by C: the same minimiser) and its gradient; theta = [W^T | b] as E x k x (r+1), with
    classes in the middle axis so the softmax reduces over a strided axis (faster for small k)."""
    Z = Zt.transpose(1, 2)

    def fg(theta: torch.Tensor):
        Wt, b = theta[:, :, :-1], theta[:, :, -1:]
        logits = torch.baddbmm(b, Wt, Zt)                                          # E x k x s
        lse = torch.logsumexp(logits, dim=1, keepdim=True)
        f = lse.sum((1, 2)) - (logits * Yt).sum((1, 2)) + Wt.square().sum((1, 2)) / (2 * C)
        R = torch.exp(logits - lse) - Yt
        g = torch.cat([torch.bmm(R, Z) + Wt / C, R.sum(2, keepdim=True)], dim=2)
        return f, g
    return fg


def _fit_softmax(Z: torch.Tensor, Y: torch.Tensor, C: float, max_iter: int, tol: float, memory: int):
    """Batched L-BFGS (Nocedal & Wright 2006, Alg. 7.4) with per-episode Armijo backtracking.
    Z: E x s x r, Y: E x s x k one-hot. Returns W (E x r x k), b (E x k), iterations."""
    E, s, r = Z.shape
    k = Y.shape[2]
    fg = _softmax_objective(Z.transpose(1, 2).contiguous(), Y.transpose(1, 2).contiguous(), C)
    theta = torch.zeros(E, k, r + 1, dtype=torch.float64, device=Z.device)
    f, g = fg(theta)
    hist: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    dims = (1, 2)
    active = g.abs().amax(dims) > tol
    it = 0
    while it < max_iter and bool(active.any()):
        it += 1
        q = g.clone()
        alphas = []
        for sv, yv, rho in reversed(hist):
            a = rho * (sv * q).sum(dims)
            q -= a[:, None, None] * yv
            alphas.append(a)
        if hist:
            sv, yv, _ = hist[-1]
            gamma = (sv * yv).sum(dims) / (yv * yv).sum(dims).clamp_min(1e-300)
        else:
            gamma = 1 / g.square().sum(dims).sqrt().clamp_min(1.0)
        q *= gamma[:, None, None]
        for (sv, yv, rho), a in zip(hist, reversed(alphas)):
            beta = rho * (yv * q).sum(dims)
            q += (a - beta)[:, None, None] * sv
        direction = -q
        gd = (g * direction).sum(dims)
        bad = gd >= 0                                      # not a descent direction: fall back to -g
        if bool(bad.any()):
            direction = torch.where(bad[:, None, None], -g, direction)
            gd = torch.where(bad, -(g * g).sum(dims), gd)
        direction = direction * active[:, None, None]
        t = torch.ones(E, dtype=torch.float64, device=Z.device)
        for _ in range(30):
            new = theta + t[:, None, None] * direction
            fn, gn = fg(new)
            ok = (fn <= f + 1e-4 * t * gd) | ~active
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 2)
        else:
            # no sufficient decrease within 2^-30 of the step: at the float64 floor, stop there
            new = torch.where(ok[:, None, None], new, theta)
            fn, gn = fg(new)
            active = active & ok
        sv, yv = new - theta, gn - g
        sy = (sv * yv).sum(dims)
        rho = torch.where(sy > 1e-12 * (yv * yv).sum(dims), 1 / sy.where(sy != 0, torch.ones_like(sy)),
                          torch.zeros_like(sy))              # rho = 0 makes a pair a no-op
        hist.append((sv, yv, rho))
        if len(hist) > memory:
            hist.pop(0)
        # converged, or no longer decreasing in float64
        active = active & (gn.abs().amax(dims) > tol) & (f - fn > 1e-15 * f.abs())
        theta, f, g = new, fn, gn
    return theta[:, :, :-1].transpose(1, 2), theta[:, :, -1], it


class NearestNeighbourHead(EpisodeHead):
    """1-nearest neighbour: the label of argmin_j ||q - s_j||^2 (``metric="euclidean"``) or
    argmax_j cos(q, s_j) (``"cosine"``) over the support samples."""

    def __init__(self, metric: str = "euclidean"):
        self.metric = metric

    def fit(self, support, support_labels, n_classes: int | None = None) -> "NearestNeighbourHead":
        if self.metric not in ("euclidean", "cosine"):
            raise unknown_name("1-NN metric", self.metric, ("euclidean", "cosine"))
        S, y, _, _ = self._prepare(support, support_labels, n_classes)
        self.support_, self.support_labels_ = S, y
        return self

    def neighbour_scores(self, query) -> torch.Tensor:
        """E x m x s: -||q - s_j||^2 or cos(q, s_j)."""
        S = self.support_
        Q = _as_tensor(query, S).to(S.dtype)
        if self.metric == "cosine":
            from nclab.fewshot.transforms import l2_normalize
            return torch.bmm(l2_normalize(Q), l2_normalize(S).transpose(1, 2))
        scores = torch.baddbmm(S.square().sum(-1)[:, None, :], Q, S.transpose(1, 2), beta=-1, alpha=2)
        return scores - Q.square().sum(-1, keepdim=True)

    def predict(self, query) -> torch.Tensor:
        nearest = self.neighbour_scores(query).argmax(-1)
        return self.support_labels_.gather(1, nearest)

    def decision_function(self, query) -> torch.Tensor:
        """E x m x k: the best neighbour score within each class."""
        sc = self.neighbour_scores(query)
        idx = self.support_labels_[:, None, :].expand_as(sc)
        out = torch.full(sc.shape[:2] + (self.n_classes_,), -torch.inf, dtype=sc.dtype, device=sc.device)
        return out.scatter_reduce(2, idx, sc, reduce="amax")


HEADS = {
    "ncc": lambda: NCCHead("euclidean"),
    "ncc-cosine": lambda: NCCHead("cosine"),
    "ridge": lambda: RidgeHead(alpha=1.0),
    "logistic": lambda: LogisticHead(C=1.0),
    "1nn": lambda: NearestNeighbourHead("euclidean"),
}


def make_head(name: str) -> EpisodeHead:
    """A head with its default options from its name: ncc, ncc-cosine, ridge, logistic, 1nn."""
    if name not in HEADS:
        raise unknown_name("few-shot head", name, HEADS)
    return HEADS[name]()
