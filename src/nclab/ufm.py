"""The unconstrained features model (UFM): features, classifier and bias as free float64 variables.

    min_{W, H, b}  (1/N) sum_i loss(W h_i + b, y_i) + lambda_W/2 ||W||_F^2 + lambda_H/2 ||H||_F^2
                   + lambda_b/2 ||b||^2

(Mixon et al. 2020; Zhu et al. 2021, eq. 5). H holds one row per sample (N x d), W one row per
class (K x d). ``loss`` is the cross-entropy or nclab's training MSE ||z - e_y||^2 summed over
the K outputs (Han, Papyan & Donoho 2022). Classes are balanced (n per class) or of any sizes,
e.g. K_A majority classes of n_A samples and K_B minority classes of n_B (Fang et al. 2021);
the classifier is learned or fixed to a simplex ETF (Zhu et al. 2021, Sec. 5). Minimised by
L-BFGS (default) or full-batch gradient descent from a seeded initialisation, with the
gradient in closed form; the collapse metrics (:func:`nclab.measure`) are recorded at log-spaced
iterations.

:func:`global_minimiser` gives the known global minimisers in closed form (balanced classes),
:func:`minority_collapse` sweeps the imbalance ratio R = n_A / n_B for a learned and a fixed
simplex-ETF classifier.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import brentq, minimize
from threadpoolctl import threadpool_limits
from torch import Tensor

from nclab.errors import NclabError, unknown_name
from nclab.metrics.collapse import CollapseRecord, measure
from nclab.models.heads import simplex_etf
from nclab.parallel import cpu_workers, parallel_map

__all__ = ["LOSSES", "HEADS", "OPTIMIZERS", "RATIOS", "UFMResult", "MinorityCollapseResult", "simulate",
           "global_minimiser", "imbalanced_sizes", "minority_collapse", "row_geometry", "tied_accuracy"]

LOSSES = ("ce", "mse")
HEADS = ("learned", "etf")
OPTIMIZERS = ("lbfgs", "gd")
RATIOS = (1, 2, 5, 10, 20, 50, 100, 1000)       # Fang et al. 2021, Fig. 3 range of R = n_A / n_B

# the collapse metrics kept in every history record (the keys of CollapseRecord.to_dict())
TRACKED = ("cdnv", "nc1", "nc1_quotient", "nc2_equinorm", "nc2_equiangle", "nc2_maxangle", "nc2_etf_error",
           "nc2_equinorm_w", "nc2_equiangle_w", "nc2_maxangle_w", "nc2_etf_error_w", "nc3", "nc4",
           "min_mean_distance", "ncc_accuracy")


# --- closed forms --------------------------------------------------------------------------------

def global_minimiser(n_classes: int, n_per_class: int, dim: int, *, loss: str = "ce", lambda_W: float = 5e-4,
                     lambda_H: float = 5e-4, lambda_b: float = 0.0, bias: bool = True, head: str = "learned",
                     etf_scale: float = 1.0) -> dict | None:
    """The global minimiser of the balanced UFM (K classes of n samples) in closed form, or None
    where no closed form is known here (unequal classes, MSE with a regularised bias or a fixed
    head, d too small). Returns ``w_norm`` (every ||w_k||), ``h_norm`` (every class mean ||h_k||),
    ``bias`` (every b_k; None if any constant works), ``structure`` and ``source``.
    Every minimiser has h_{k,i} = h_k (NC1 = 0) and, with a learned head, h_k = sqrt(lambda_W /
    (n lambda_H)) w_k (balance of the two weight decays at a fixed product W H).

    CE, learned head, d >= K - 1 (Zhu et al. 2021, Thm 3.1): W and the class means form a
    simplex ETF, b = b 1 (b = 0 when lambda_b > 0). On that family logits are c rho^2 and
    -c rho^2/(K-1) with rho = ||w_k||, c = sqrt(lambda_W / (n lambda_H)), and the objective is
    log(1 + (K-1) exp(-c K rho^2/(K-1))) + K lambda_W rho^2; its minimiser is

        rho^2 = (K-1)/K sqrt(n lambda_H / lambda_W) log((K-1)(1-beta)/beta),  beta = (K-1) sqrt(n lambda_W lambda_H)

    when K sqrt(n lambda_W lambda_H) < 1, and W = H = 0 otherwise (weight decay wins).

    MSE, learned head (Tirer & Bruna 2022, Sec. 3: the bias-free and the unregularised-bias UFM;
    their 1/2-scaled loss is ours with lambda/2): with s = sqrt(n lambda_W lambda_H), the product
    Z = W [h_1 .. h_K] solves min (1/K)||Z - T||^2 + s ||Z||_* (the weight decays at a fixed Z are
    s ||Z||_*), so Z = z T with z = 1 - K s/2 (0 when K s/2 >= 1, W = H = 0):
    without bias T = I, W W^T = z sqrt(n lambda_H/lambda_W) I (an orthogonal frame, d >= K);
    with an unregularised bias T = I - 11^T/K (a simplex ETF, d >= K - 1), b = 1/K, and
    ||w_k||^2 = z sqrt(n lambda_H/lambda_W) (K-1)/K.

    CE, fixed simplex-ETF head of row norm s (Zhu et al. 2021, Sec. 5): every feature is
    h_i = tau w_{y_i}/s, each sample alone minimising (1/N) CE + lambda_H/2 ||h||^2, so
    (s K/(K-1)) t/(1+t) = N lambda_H tau with t = (K-1) exp(-s K tau/(K-1)) (one root)."""
    K, n = int(n_classes), int(n_per_class)
    b_ce = None if bias and lambda_b == 0 else 0.0            # CE: b = b 1 for any b when it is free
    if loss == "ce" and head == "learned" and dim >= K - 1:
        s = math.sqrt(n * lambda_W * lambda_H)
        if K * s >= 1:
            return _minimiser(0.0, 0.0, b_ce, "zero (weight decay exceeds the loss)", "Zhu et al. 2021, Thm 3.1")
        beta = (K - 1) * s
        rho2 = (K - 1) / K * math.sqrt(n * lambda_H / lambda_W) * math.log((K - 1) * (1 - beta) / beta)
        return _minimiser(math.sqrt(rho2), math.sqrt(lambda_W / (n * lambda_H) * rho2), b_ce, "simplex ETF",
                          "Zhu et al. 2021, Thm 3.1")
    if loss == "mse" and head == "learned" and (not bias or lambda_b == 0) and dim >= (K - 1 if bias else K):
        s = math.sqrt(n * lambda_W * lambda_H)
        z = max(0.0, 1 - K * s / 2)
        frac = (K - 1) / K if bias else 1.0
        structure = ("simplex ETF" if bias else "orthogonal frame") if z > 0 else "zero (weight decay exceeds the loss)"
        return _minimiser(math.sqrt(z * math.sqrt(n * lambda_H / lambda_W) * frac),
                          math.sqrt(z * math.sqrt(lambda_W / (n * lambda_H)) * frac),
                          1.0 / K if bias else 0.0, structure, "Tirer & Bruna 2022, Sec. 3")
    if loss == "ce" and head == "etf" and dim >= K - 1:
        a, rate = etf_scale * K / (K - 1), K * n * lambda_H
        tau = brentq(lambda x: a * _softmax_other(K, a * x) - rate * x, 0.0, a / rate, xtol=1e-15, rtol=1e-15)
        return _minimiser(float(etf_scale), tau, b_ce, "features along the fixed simplex ETF",
                          "Zhu et al. 2021, Sec. 5")
    return None


def _softmax_other(K: int, margin: float) -> float:
    """t/(1+t) with t = (K-1) exp(-margin): the probability off the true class."""
    t = (K - 1) * math.exp(-margin)
    return t / (1 + t)


def _minimiser(w_norm: float, h_norm: float, b: float | None, structure: str, source: str) -> dict:
    return {"w_norm": w_norm, "h_norm": h_norm, "bias": b, "structure": structure, "source": source}


def imbalanced_sizes(k_major: int, n_major: int, k_minor: int, n_minor: int) -> list[int]:
    """Class sizes of Fang et al. 2021: K_A majority classes of n_A samples, then K_B minority of n_B."""
    return [int(n_major)] * int(k_major) + [int(n_minor)] * int(k_minor)


# --- geometry of groups of classes --------------------------------------------------------------

def row_geometry(A: Tensor) -> dict:
    """Mean row norm and the mean / max cosine over pairs of rows of A (None for one row)."""
    A = A.to(torch.float64)
    norms = A.norm(dim=1)
    out = {"norm": float(norms.mean()), "cos": None, "cos_max": None}
    if len(A) > 1:
        U = A / norms.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
        G = U @ U.T
        off = G[~torch.eye(len(A), dtype=torch.bool)]
        out["cos"], out["cos_max"] = float(off.mean()), float(off.max())
    return out


def tied_accuracy(logits: Tensor, labels: Tensor, rtol: float = 1e-6) -> Tensor:
    """Per-sample expected accuracy of argmax under random tie-breaking: 1/m when the true class is
    one of the m classes whose logit is within rtol * max|z| of the sample's maximum, else 0.
    Collapsed minority rows give exactly equal logits in exact arithmetic and equal to the
    solver's precision in float64, where a plain argmax would be decided by rounding."""
    tie = rtol * float(logits.abs().max())
    top = logits >= logits.max(1, keepdim=True).values - tie
    return top.gather(1, labels[:, None]).squeeze(1).double() / top.sum(1)


# --- the simulator -------------------------------------------------------------------------------

@dataclass
class UFMResult:
    """One minimisation: final variables, the final collapse record, the history and the
    geometry of all / majority / minority classes. ``to_dict()``: the final metrics under the keys
    of ``nclab.measure(...).to_dict()``, plus ``ufm`` (settings, optimisation, geometry, the
    closed-form minimiser when known) and ``history`` (one record per logged iteration)."""

    settings: dict
    class_sizes: list[int]
    H: Tensor
    W: Tensor
    b: Tensor | None
    labels: Tensor
    record: CollapseRecord | None
    history: list[dict]
    iterations: int
    objective: float
    loss: float
    grad_norm: float
    converged: bool
    seconds: float
    geometry: dict = field(default_factory=dict)
    theory: dict | None = None

    def group(self, classes) -> dict:
        """Geometry of a group of classes: mean row norm ``w_norm`` and pairwise cosine ``w_cos``
        (``w_cos_max``) of their classifier rows, the same of their class means (``h_norm``,
        ``h_cos``), their training accuracy (:func:`tied_accuracy`) and mean margin z_y - max_{j != y} z_j."""
        classes = torch.as_tensor(list(classes))
        K = len(self.class_sizes)
        sizes = torch.as_tensor(self.class_sizes, dtype=self.H.dtype)
        means = torch.zeros(K, self.H.shape[1], dtype=self.H.dtype).index_add_(0, self.labels, self.H) / sizes[:, None]
        logits = self.H @ self.W.T + (0 if self.b is None else self.b)
        rows, mus = row_geometry(self.W[classes]), row_geometry(means[classes])
        mask = torch.isin(self.labels, classes)
        z, t = logits[mask], self.labels[mask]
        margin = z.gather(1, t[:, None]).squeeze(1) - z.scatter(1, t[:, None], -math.inf).max(1).values
        accuracy = tied_accuracy(logits, self.labels)[mask].mean().item()
        return {"classes": len(classes), "w_norm": rows["norm"], "w_cos": rows["cos"], "w_cos_max": rows["cos_max"],
                "h_norm": mus["norm"], "h_cos": mus["cos"], "accuracy": accuracy, "margin": float(margin.mean())}

    def to_dict(self) -> dict:
        summary = {"settings": self.settings, "class_sizes": self.class_sizes, "iterations": self.iterations,
                   "objective": self.objective, "loss": self.loss, "grad_norm": self.grad_norm,
                   "converged": self.converged, "seconds": self.seconds,
                   "w_norms": self.W.norm(dim=1).tolist(), "bias": None if self.b is None else self.b.tolist(),
                   "geometry": self.geometry, "theory": self.theory}
        return {**(self.record.to_dict() if self.record is not None else {}), "ufm": summary,
                "history": self.history}


def _check(settings: dict, sizes: list[int]) -> None:
    s = settings
    if s["loss"] not in LOSSES:
        raise unknown_name("ufm loss", s["loss"], LOSSES)
    if s["head"] not in HEADS:
        raise unknown_name("ufm head", s["head"], HEADS)
    if s["optimizer"] not in OPTIMIZERS:
        raise unknown_name("ufm optimizer", s["optimizer"], OPTIMIZERS)
    if s["n_classes"] < 2:
        raise NclabError(f"n_classes: expected at least 2 classes, got {s['n_classes']}")
    if s["dim"] < 1:
        raise NclabError(f"dim: expected a positive feature dimension, got {s['dim']}")
    if len(sizes) != s["n_classes"]:
        raise NclabError(f"n_per_class: expected one size per class ({s['n_classes']}), got {len(sizes)}")
    if min(sizes) < 1:
        raise NclabError(f"n_per_class: expected at least 1 sample per class, got {min(sizes)}")
    for key in ("lambda_W", "lambda_H", "lambda_b"):
        if not (math.isfinite(s[key]) and s[key] >= 0):
            raise NclabError(f"{key}: expected a finite weight decay >= 0, got {s[key]}")
    if s["lr"] is not None and not (math.isfinite(s["lr"]) and s["lr"] > 0):
        raise NclabError(f"lr: expected a positive step size, got {s['lr']}")
    if s["max_iter"] < 1:
        raise NclabError(f"max_iter: expected at least 1 iteration, got {s['max_iter']}")
    if not s["tol"] >= 0:
        raise NclabError(f"tol: expected a gradient-norm tolerance >= 0, got {s['tol']}")
    if not (math.isfinite(s["init_scale"]) and s["init_scale"] > 0):
        raise NclabError(f"init_scale: expected a positive scale, got {s['init_scale']}")
    if not (math.isfinite(s["etf_scale"]) and s["etf_scale"] > 0):
        raise NclabError(f"etf_scale: expected a positive row norm, got {s['etf_scale']}")
    if s["records"] < 1:
        raise NclabError(f"records: expected at least 1 logged iteration, got {s['records']}")


def _sizes(n_classes: int, n_per_class) -> list[int]:
    sizes = [n_per_class] * int(n_classes) if np.ndim(n_per_class) == 0 else list(n_per_class)
    if any(isinstance(v, bool) or int(v) != v for v in sizes):
        raise NclabError(f"n_per_class: expected whole numbers of samples, got {n_per_class!r}")
    return [int(v) for v in sizes]


def log_iterations(max_iter: int, records: int) -> list[int]:
    """0 and ~``records`` log-spaced iterations in 1..max_iter (distinct, increasing)."""
    its = np.unique(np.round(np.logspace(0, math.log10(max_iter), records)).astype(int))
    return [0] + [int(i) for i in its if 1 <= i <= max_iter]


class _Problem:
    """The UFM objective of one flat float64 vector x = [H (N x d), W (K x d, when learned), b (K,
    when used)], with its gradient in closed form: with G = dloss/dZ for the logits Z = H W^T + 1 b^T
    (softmax(Z) - Y for CE, 2 (Z - Y) for MSE, over N),
    grad_H = G W + lambda_H H, grad_W = G^T H + lambda_W W, grad_b = G^T 1 + lambda_b b."""

    def __init__(self, y: Tensor, K: int, d: int, loss: str, lams: tuple[float, float, float], W_fixed: Tensor | None,
                 bias: bool):
        self.y, self.K, self.d, self.N, self.loss = y, K, d, len(y), loss
        self.lam_W, self.lam_H, self.lam_b = lams
        self.W_fixed, self.bias = W_fixed, bias
        self.Y = F.one_hot(y, K).to(torch.float64)
        self.size = self.N * d + (K * d if W_fixed is None else 0) + (K if bias else 0)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        nH = self.N * self.d
        H = x[:nH].view(self.N, self.d)
        W = x[nH:nH + self.K * self.d].view(self.K, self.d) if self.W_fixed is None else self.W_fixed
        b = x[-self.K:] if self.bias else None
        return H, W, b

    def __call__(self, x: Tensor) -> tuple[float, float, Tensor]:
        """(objective, mean loss, gradient) at x."""
        H, W, b = self.split(x)
        Z = H @ W.T if b is None else torch.addmm(b, H, W.T)
        if self.loss == "ce":
            logp = torch.log_softmax(Z, 1)
            data = -logp.gather(1, self.y[:, None]).sum() / self.N
            G = (logp.exp() - self.Y) / self.N
        else:
            R = Z - self.Y
            data = (R * R).sum() / self.N
            G = 2 * R / self.N
        obj = data + self.lam_H / 2 * (H * H).sum()
        grads = [G @ W + self.lam_H * H]
        if self.W_fixed is None:
            obj = obj + self.lam_W / 2 * (W * W).sum()
            grads.append(G.T @ H + self.lam_W * W)
        if b is not None:
            obj = obj + self.lam_b / 2 * (b * b).sum()
            grads.append(G.sum(0) + self.lam_b * b)
        return float(obj), float(data), torch.cat([g.reshape(-1) for g in grads])


def simulate(n_classes: int = 10, dim: int = 32, n_per_class: int | Sequence[int] = 20, *, loss: str = "ce",
             lambda_W: float = 5e-4, lambda_H: float = 5e-4, lambda_b: float = 0.0, bias: bool = True,
             head: str = "learned", etf_scale: float = 1.0, optimizer: str = "lbfgs", lr: float | None = None,
             max_iter: int | None = None, tol: float = 1e-8, seed: int = 0, init_scale: float = 1.0,
             records: int = 30) -> UFMResult:
    """Minimise the UFM objective (module docstring) and measure collapse along the way.

    ``n_per_class``: one size for all classes, or one per class (see :func:`imbalanced_sizes`).
    ``head``: "learned" or "etf" (W = ``etf_scale`` x :func:`nclab.models.heads.simplex_etf`,
    frozen; lambda_W then plays no part). ``optimizer``: "lbfgs" (SciPy's L-BFGS-B, whose line
    search satisfies the strong Wolfe conditions; default ``max_iter`` 10,000) or "gd" (full-batch
    gradient descent with step ``lr``, default 0.5; ``max_iter`` 100,000). Stops when the gradient
    2-norm over all free variables is <= ``tol`` (``converged``), when L-BFGS can no longer
    decrease the objective in float64, or after ``max_iter`` iterations. Initialisation: H and W
    with N(0, init_scale^2 / d) entries (rows of norm ~init_scale), b = 0, from ``seed``. The
    collapse metrics are recorded at iteration 0, ~``records`` log-spaced iterations and the last.

    SciPy rather than ``torch.optim.LBFGS``: the first torch optimiser of a process imports
    torch._dynamo (4-6 s on the 2-core machine), longer than a whole default run. The products are
    small (N x d x K), so torch and SciPy's BLAS run single-threaded: on the shared 2-core machine
    OpenBLAS threads made the default CE / MSE runs 2-4x slower (0.9 / 2.1 s against 1.4-2.5 /
    11.5 s at load 8)."""
    for name, v in (("n_classes", n_classes), ("dim", dim), ("max_iter", max_iter), ("records", records)):
        if v is not None and (isinstance(v, bool) or int(v) != v):
            raise NclabError(f"{name}: expected a whole number, got {v!r}")
    sizes = _sizes(n_classes, n_per_class)
    if lr is not None and optimizer == "lbfgs":
        raise NclabError("lr: a step size is for optimizer 'gd'; L-BFGS chooses its steps by line search")
    lr = 0.5 if lr is None else float(lr)
    max_iter = (10_000 if optimizer == "lbfgs" else 100_000) if max_iter is None else int(max_iter)
    settings = {"n_classes": int(n_classes), "dim": int(dim), "loss": loss, "lambda_W": float(lambda_W),
                "lambda_H": float(lambda_H), "lambda_b": float(lambda_b), "bias": bool(bias), "head": head,
                "etf_scale": float(etf_scale), "optimizer": optimizer, "lr": lr if optimizer == "gd" else None,
                "max_iter": max_iter, "tol": float(tol), "seed": int(seed), "init_scale": float(init_scale),
                "records": int(records)}
    _check(settings, sizes)
    K, d = settings["n_classes"], settings["dim"]
    y = torch.repeat_interleave(torch.arange(K), torch.as_tensor(sizes))
    W_fixed = simplex_etf(K, d, seed=int(seed), dtype=torch.float64) * etf_scale if head == "etf" else None
    problem = _Problem(y, K, d, loss, (float(lambda_W), float(lambda_H), float(lambda_b)), W_fixed, bool(bias))
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.zeros(problem.size, dtype=torch.float64)
    n_init = problem.N * d + (K * d if W_fixed is None else 0)
    x[:n_init] = torch.randn(n_init, generator=gen, dtype=torch.float64) * (init_scale / math.sqrt(d))

    history: list[dict] = []
    schedule = set(log_iterations(max_iter, records))

    def evaluate(it: int, x: Tensor) -> tuple[float, float, Tensor, float]:
        obj, data, grad = problem(x)
        g = float(grad.norm())
        if not (math.isfinite(obj) and math.isfinite(g)):
            hint = f" (lr {lr} too large?)" if optimizer == "gd" else ""
            raise NclabError(f"ufm: the objective diverged at iteration {it}{hint}")
        return obj, data, grad, g

    def log(it: int, x: Tensor) -> tuple[float, float, Tensor, float]:
        out = evaluate(it, x)
        history.append(_snapshot(it, out[0], out[1], out[3], *problem.split(x), y, K))
        return out

    start = time.perf_counter()
    with cpu_workers(torch.device("cpu"), 1), threadpool_limits(1, user_api="blas"):
        obj, data, grad, g = log(0, x)
        it = 0
        if optimizer == "lbfgs" and g > tol:
            def fun(v):
                obj, _, grad = problem(torch.from_numpy(v))
                return obj, grad.numpy()

            def callback(intermediate_result):
                nonlocal it
                it += 1
                if it in schedule:
                    log(it, torch.from_numpy(intermediate_result.x.copy()))

            # gtol bounds the gradient's largest entry: <= tol / sqrt(P) implies a 2-norm <= tol;
            # ftol = 0 runs until the objective stops decreasing in float64
            out = minimize(fun, x.numpy(), jac=True, method="L-BFGS-B", callback=callback,
                           options={"maxiter": max_iter, "maxfun": 20 * max_iter, "ftol": 0.0,
                                    "gtol": tol / math.sqrt(problem.size)})
            x = torch.from_numpy(out.x)
        elif optimizer == "gd":
            while it < max_iter and g > tol:
                x = x - lr * grad
                it += 1
                obj, data, grad, g = evaluate(it, x)
                if it in schedule:
                    log(it, x)
        if history[-1]["iteration"] != it:
            log(it, x)
        obj, data, g = (history[-1][k] for k in ("objective", "loss", "grad_norm"))
        seconds = time.perf_counter() - start
        H, W, b = (None if v is None else v.clone() for v in problem.split(x))
        record = _measure(H, y, W, b, K)
    theory = global_minimiser(K, sizes[0], d, loss=loss, lambda_W=lambda_W, lambda_H=lambda_H, lambda_b=lambda_b,
                              bias=bias, head=head, etf_scale=etf_scale) if len(set(sizes)) == 1 else None
    result = UFMResult(settings, sizes, H, W, b, y, record, history, it, obj, data, g, g <= tol, seconds,
                       theory=theory)
    result.geometry = _geometry(result)
    return result


def _measure(H: Tensor, y: Tensor, W: Tensor, b: Tensor | None, K: int) -> CollapseRecord | None:
    """The collapse record, or None when the class means coincide (the zero minimiser): the
    ratios of NC1 / NC2 are then undefined."""
    if float(H.norm()) == 0 or float(W.norm()) == 0:
        return None
    return measure(H, y, W, b, n_classes=K)


def _snapshot(it: int, obj: float, data: float, g: float, H: Tensor, W: Tensor, b: Tensor | None, y: Tensor,
              K: int) -> dict:
    rec = _measure(H, y, W, b, K)
    rows = row_geometry(W)
    logits = H @ W.T + (0 if b is None else b)
    d = rec.to_dict() if rec is not None else {}
    return {"iteration": it, "objective": obj, "loss": data, "grad_norm": g,
            "train_acc": tied_accuracy(logits, y).mean().item(), **{k: d.get(k) for k in TRACKED},
            "w_norms": W.norm(dim=1).tolist(), "w_cos_mean": rows["cos"], "w_cos_max": rows["cos_max"]}


def _geometry(result: UFMResult) -> dict:
    """:meth:`UFMResult.group` of all classes and, with unequal sizes, of the majority (largest)
    and minority (smallest) classes."""
    sizes = result.class_sizes
    out = {"all": result.group(range(len(sizes)))}
    if min(sizes) < max(sizes):
        out["majority"] = result.group([c for c, n in enumerate(sizes) if n == max(sizes)])
        out["minority"] = result.group([c for c, n in enumerate(sizes) if n == min(sizes)])
    return out


# --- minority collapse ---------------------------------------------------------------------------

@dataclass
class MinorityCollapseResult:
    """One row per (R, head): minority / majority classifier-row cosine and norm, class-mean
    cosine and norm, training accuracy and margin, and the optimisation's end state."""

    settings: dict
    rows: list[dict]

    def to_dict(self) -> dict:
        return {"settings": self.settings, "rows": self.rows}


def minority_collapse(ratios: Sequence[float] = RATIOS, *, k_major: int = 5, k_minor: int = 5, n_minor: int = 1,
                      heads: Sequence[str] = HEADS, bias: bool = False, workers: int | None = None,
                      **options) -> MinorityCollapseResult:
    """Minority collapse in the UFM (Fang et al. 2021, PNAS, Sec. 3 / Thm 5, there for the
    norm-constrained layer-peeled model): K_A = ``k_major`` classes of n_A = R n_B samples and
    K_B = ``k_minor`` classes of n_B = ``n_minor``, for each R in ``ratios`` and each head
    ("learned", or the fixed simplex ETF that prevents it: Zhu et al. 2021; Yang et al. 2022).
    As R grows the minority rows of a learned classifier turn towards one direction (mean
    pairwise cosine -> 1). No bias by default, as in the layer-peeled model. ``options`` go to
    :func:`simulate` (dim, loss, lambdas, seed, ...); the runs share ``workers`` threads (default:
    torch's thread count), each single-threaded, so the rows do not depend on the schedule."""
    for h in heads:
        if h not in HEADS:
            raise unknown_name("ufm head", h, HEADS)
    if k_major < 1 or k_minor < 1:
        raise NclabError(f"minority collapse needs >= 1 majority and >= 1 minority class, got {k_major} and {k_minor}")
    if n_minor < 1:
        raise NclabError(f"n_minor: expected at least 1 sample per minority class, got {n_minor}")
    sizes = {}
    for r in ratios:
        n_major = r * n_minor
        if not (math.isfinite(r) and r >= 1 and n_major == int(n_major)):
            raise NclabError(f"imbalance ratio {r}: expected R >= 1 with R x n_minor ({n_minor}) a whole number")
        sizes[r] = imbalanced_sizes(k_major, int(n_major), k_minor, n_minor)
    jobs = [(r, h) for r in ratios for h in heads]

    def run(job):
        r, h = job
        res = simulate(k_major + k_minor, n_per_class=sizes[r], head=h, bias=bias, **options)
        groups = {"major": res.group(range(k_major)), "minor": res.group(range(k_major, k_major + k_minor))}
        return {"ratio": r, "head": h, "n_major": sizes[r][0], "n_minor": n_minor,
                **{f"{g}_{k}": v for g, stats in groups.items() for k, v in stats.items() if k != "classes"},
                "iterations": res.iterations, "grad_norm": res.grad_norm, "converged": res.converged,
                "seconds": res.seconds}

    with cpu_workers(torch.device("cpu"), workers) as n:
        rows = parallel_map(run, jobs, n)
    settings = {"ratios": list(ratios), "k_major": k_major, "k_minor": k_minor, "n_minor": n_minor,
                "heads": list(heads), "bias": bias, **options}
    return MinorityCollapseResult(settings, rows)
