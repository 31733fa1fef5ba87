"""Streaming per-class feature statistics, accumulated exactly in float64.

``ClassStats`` is a ``torchmetrics.Metric``: ``update(features, labels)`` per batch,
``compute()`` gives :class:`ClassMoments` (counts, class means, per-class summed squared
deviations and, optionally, the pooled within-class scatter
``S_W = sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``).

Why it is exact. Raw sums of squares ``sum h h^T - n mu mu^T`` cancel catastrophically when
features sit far from the origin (ReLU features) or when classes are collapsed. Each class
``c`` therefore carries its own reference shift ``s_c`` (the class mean of the first batch
that contains ``c``, or a fixed vector in the two-pass mode), and only shifted quantities are
summed: ``sum (h - s_y)``, ``sum ||h - s_y||^2`` and ``sum (h - s_y)(h - s_y)^T``. Since
``s_c`` is already within ``sigma / sqrt(n)`` of ``mu_c``, the final correction
``S_W = sum z z^T - sum_c (1/n_c) t_c t_c^T`` (``t_c = sum_{i in c} z_i``) removes only a
``1/n``-sized part: float64 keeps full precision whatever the offset or collapse level.
Merging two accumulators with different shifts moves both onto the merged class mean first,
which is the pairwise update of Chan, Golub & LeVeque (1979) written for shifted sums; counts
are int64 and add exactly.

``CentredPass`` is the second pass over the same data once the class means are known: exact
centred squared deviations, the quadratic forms ``v_k^T S_W v_k`` along a basis ``V`` (all
NC1 needs, so d = 100,000 never forms a d x d matrix), and nearest-class-centre agreement
with the network's own classifier (NC4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from nclab.errors import NclabError

__all__ = ["ClassMoments", "ClassStats", "CentredPass", "SCATTER_MAX_DIM", "class_moments"]

#: ``ClassStats(scatter="auto")`` keeps the d x d scatter up to this dimension (2 GiB of float64 at 16384).
SCATTER_MAX_DIM = 8192


@dataclass
class ClassMoments:
    """Exact class statistics: ``counts`` (C, int64), ``means`` (C x d), ``sqdev`` (C,) with
    ``sqdev_c = sum_{i in c} ||h_i - mu_c||^2``, and ``scatter`` (d x d pooled within-class
    scatter, unnormalised) or None. Classes with no samples have mean 0 and sqdev 0."""

    counts: Tensor
    means: Tensor
    sqdev: Tensor
    scatter: Tensor | None = None

    @property
    def n_samples(self) -> int:
        return int(self.counts.sum())

    @property
    def variances(self) -> Tensor:
        """Population variances Var_c = sqdev_c / n_c = E ||h - mu_c||^2 (0 for empty classes)."""
        return self.sqdev / self.counts.clamp(min=1).to(self.sqdev.dtype)


class _Workspace:
    """Reusable scratch tensors. A fresh multi-MiB temporary is mapped and page-faulted anew on
    every batch (measured ~10x slower than the arithmetic), so large temporaries are recycled."""

    def __init__(self) -> None:
        self._bufs: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        n = math.prod(shape)
        t = self._bufs.get(name)
        if t is None or t.numel() < n or t.dtype != dtype or t.device != device:
            t = self._bufs[name] = torch.empty(n, dtype=dtype, device=device)
        return t[:n].view(shape)


def _as_batch(features, labels, n_classes: int, dim: int, ws: _Workspace) -> tuple[Tensor, Tensor, Tensor]:
    """(features as float64 in a scratch buffer, labels as int64, features as given)."""
    h = torch.as_tensor(features)
    y = torch.as_tensor(labels)
    if h.ndim != 2 or h.shape[1] != dim:
        raise NclabError(f"features: expected a batch of shape (B, {dim}), got {tuple(h.shape)}")
    if not (h.is_floating_point()):
        raise NclabError(f"features: expected floating point values, got {h.dtype}")
    if y.ndim != 1 or y.shape[0] != h.shape[0]:
        raise NclabError(f"labels: expected {h.shape[0]} integer labels, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise NclabError(f"labels: expected integers, got {y.dtype}")
    y = y.to(device=h.device, dtype=torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise NclabError(f"labels: expected values in 0..{n_classes - 1}, got {int(y.min())}..{int(y.max())}")
    h64 = ws.get("h", tuple(h.shape), torch.float64, h.device).copy_(h)
    check_finite(h64)
    return h64, y, h


def check_finite(h: Tensor, offset: int = 0, what: str = "features") -> None:
    """Refuse NaN / inf. A float64 sum of finite float16/32 values cannot overflow, so one cheap
    reduction decides; the element-wise scan runs only to locate a problem."""
    if bool(torch.isfinite(h.sum(dtype=torch.float64))):
        return
    bad = ~torch.isfinite(h)
    if not bool(bad.any()):
        return                                   # finite values whose float64 sum overflowed
    row, col = (int(v) for v in bad.nonzero()[0])
    raise NclabError(f"{what}: {int(bad.sum())} non-finite values in this batch (first at row {row + offset}, "
                     f"column {col}); expected finite numbers")


class ClassStats(Metric):
    """Streaming per-class counts, means, squared deviations and pooled within-class scatter.

    Papyan, Han & Donoho 2020 (Sigma_W, class means); exact shifted accumulation and the
    Chan et al. 1979 pairwise merge (see module docstring).

    Args:
        n_classes: C; labels must lie in 0..C-1.
        dim: feature dimension d.
        scatter: accumulate the d x d scatter (one float64 GEMM per batch); ``"auto"`` keeps it
            when ``d <= SCATTER_MAX_DIM``. Without it NC1 needs a :class:`CentredPass`.
        shift: fixed (C x d) reference points, e.g. the class means of a first pass; this is
            the exact two-pass mode (see :meth:`second_pass`).

    Update cost is O(B d) (``index_add_``) plus the B d^2 scatter GEMM when enabled. States
    live on the device of the inputs. Under ``torch.distributed`` ``compute()`` all-gathers
    the states and merges them exactly; :meth:`merge_state` merges another instance.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, n_classes: int, dim: int, scatter: bool | str = "auto",
                 shift: Tensor | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._ws = _Workspace()
        if n_classes < 1 or dim < 1:
            raise NclabError(f"ClassStats: n_classes and dim must be positive, got {n_classes}, {dim}")
        if scatter == "auto":
            scatter = dim <= SCATTER_MAX_DIM
        self.n_classes, self.dim, self.with_scatter = int(n_classes), int(dim), bool(scatter)
        self.fixed_shift = shift is not None
        self.common_shift = None
        if shift is None:
            shift0 = torch.zeros(n_classes, dim, dtype=torch.float64)
        else:
            shift0 = torch.as_tensor(shift).to(torch.float64).clone()
            if shift0.shape == (dim,):                 # one reference point for all classes
                self.common_shift = shift0
                shift0 = shift0.expand(n_classes, dim).clone()
            if shift0.shape != (n_classes, dim):
                raise NclabError(f"ClassStats: shift must be {n_classes} x {dim} or {dim}, got {tuple(shift0.shape)}")
        # dist_reduce_fx=None: states are all-gathered and merged in _sync_dist (shifts differ per process).
        self.add_state("count", torch.zeros(n_classes, dtype=torch.int64), dist_reduce_fx=None)
        self.add_state("shift", shift0, dist_reduce_fx=None)
        self.add_state("sum", torch.zeros(n_classes, dim, dtype=torch.float64), dist_reduce_fx=None)
        self.add_state("sqsum", torch.zeros(n_classes, dtype=torch.float64), dist_reduce_fx=None)
        self.add_state("scatter", torch.zeros((dim, dim) if self.with_scatter else (0, 0), dtype=torch.float64),
                       dist_reduce_fx=None)

    # -- accumulation ---------------------------------------------------------------------------
    def update(self, features, labels) -> None:  # noqa: D102
        h, y, _ = _as_batch(features, labels, self.n_classes, self.dim, self._ws)
        if h.device != self.count.device:
            self.to(h.device)
            if self.common_shift is not None:
                self.common_shift = self.common_shift.to(h.device)
        if h.shape[0] == 0:
            return
        if not self.fixed_shift:
            fresh = self.count[y] == 0
            if bool(fresh.any()):
                # shift of a class seen for the first time: its mean in this batch
                cls, inv = torch.unique(y[fresh], return_inverse=True)
                tot = torch.zeros(len(cls), self.dim, dtype=torch.float64, device=h.device).index_add_(0, inv, h[fresh])
                num = torch.bincount(inv, minlength=len(cls)).to(torch.float64)
                self.shift[cls] = tot / num[:, None]
        if self.common_shift is not None:
            z = h.sub_(self.common_shift)
        else:
            z = h.sub_(torch.index_select(self.shift, 0, y, out=self._ws.get("g", tuple(h.shape), h.dtype, h.device)))
        self.count += torch.bincount(y, minlength=self.n_classes)
        self.sum.index_add_(0, y, z)
        self.sqsum.index_add_(0, y, torch.linalg.vector_norm(z, dim=1).square_())
        if self.with_scatter:
            self.scatter.addmm_(z.T, z)

    def compute(self) -> ClassMoments:
        """Class means ``s + t/n``; ``sqdev = sum ||z||^2 - ||t||^2/n``; ``S_W = sum z z^T - T^T diag(1/n) T``."""
        n = self.count.to(torch.float64)
        inv = torch.where(n > 0, 1.0 / n.clamp(min=1), torch.zeros_like(n))
        means = torch.where((n > 0)[:, None], self.shift + self.sum * inv[:, None], torch.zeros_like(self.sum))
        sqdev = (self.sqsum - (self.sum * self.sum).sum(1) * inv).clamp(min=0)
        scatter = None
        if self.with_scatter:
            scatter = self.scatter - self.sum.T @ (self.sum * inv[:, None])
            scatter = (scatter + scatter.T) / 2
        return ClassMoments(self.count.clone(), means, sqdev, scatter)

    def forward(self, features, labels) -> None:
        """Accumulate a batch (a per-batch value of class statistics is not meaningful)."""
        self.update(features, labels)

    def second_pass(self) -> "ClassStats":
        """A fresh accumulator whose shifts are this one's class means (exact two-pass mode)."""
        m = self.compute()
        return ClassStats(self.n_classes, self.dim, scatter=self.with_scatter, shift=m.means)

    # -- merging --------------------------------------------------------------------------------
    @staticmethod
    def _merge(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Exact merge of shifted accumulators: move every part onto the merged class mean."""
        count = sum(s["count"] for s in states)
        n = count.to(torch.float64)
        inv = torch.where(n > 0, 1.0 / n.clamp(min=1), torch.zeros_like(n))
        target = sum(s["shift"] * s["count"].to(torch.float64)[:, None] + s["sum"] for s in states) * inv[:, None]
        out = dict(count=count, shift=target, sum=torch.zeros_like(target),
                   sqsum=torch.zeros_like(states[0]["sqsum"]), scatter=torch.zeros_like(states[0]["scatter"]))
        for s in states:
            np_ = s["count"].to(torch.float64)
            delta = torch.where((np_ > 0)[:, None], s["shift"] - target, torch.zeros_like(target))
            # z_new = z + delta for every sample of the class
            out["sum"] += s["sum"] + np_[:, None] * delta
            out["sqsum"] += s["sqsum"] + 2 * (delta * s["sum"]).sum(1) + np_ * (delta * delta).sum(1)
            if s["scatter"].numel():
                cross = s["sum"].T @ delta
                out["scatter"] += s["scatter"] + cross + cross.T + delta.T @ (delta * np_[:, None])
        return out

    def _state(self) -> dict[str, Tensor]:
        return {k: getattr(self, k) for k in ("count", "shift", "sum", "sqsum", "scatter")}

    def merge_state(self, incoming_state) -> None:
        """Merge another ``ClassStats`` (or its state dict) into this one, exactly."""
        other = incoming_state._state() if isinstance(incoming_state, ClassStats) else dict(incoming_state)
        other = {k: v.to(self.count.device) for k, v in other.items()}
        if other["sum"].shape != self.sum.shape or other["scatter"].shape != self.scatter.shape:
            raise NclabError(f"ClassStats.merge_state: shapes differ "
                             f"({tuple(other['sum'].shape)} vs {tuple(self.sum.shape)})")
        for k, v in self._merge([self._state(), other]).items():
            setattr(self, k, v)
        self.fixed_shift, self.common_shift = False, None
        self._computed = None

    def _sync_dist(self, dist_sync_fn=None, process_group=None) -> None:
        from torchmetrics.utilities.distributed import gather_all_tensors
        dist_sync_fn = dist_sync_fn or gather_all_tensors
        group = process_group or self.process_group
        gathered = {k: dist_sync_fn(v, group=group) for k, v in self._state().items()}
        parts = [{k: gathered[k][p] for k in gathered} for p in range(len(gathered["count"]))]
        for k, v in self._merge(parts).items():
            setattr(self, k, v)


def _best_two(scores: Tensor, largest: bool) -> tuple[Tensor, Tensor]:
    """Per row of ``scores`` (B x C, C >= 1): the index of the best entry (max or min; the
    first on ties) and the margin to the second best (inf when C = 1). Overwrites ``scores``.
    On CPU through NumPy, whose row reductions are vectorised (~10-40x torch's arg-reductions
    on 1,024 x 1,000 float32 here)."""
    if scores.device.type == "cpu":
        a = scores.numpy()
        rows = np.arange(a.shape[0])
        best = a.argmax(1) if largest else a.argmin(1)
        top1 = a[rows, best].copy()
        a[rows, best] = -np.inf if largest else np.inf
        top2 = a.max(1) if largest else a.min(1)
        return torch.from_numpy(best), torch.from_numpy(top1 - top2 if largest else top2 - top1)
    best = scores.argmax(1) if largest else scores.argmin(1)
    top1 = scores.gather(1, best[:, None])[:, 0]
    top2 = scores.scatter_(1, best[:, None], -math.inf if largest else math.inf)
    top2 = top2.max(1).values if largest else top2.min(1).values
    return best, (top1 - top2 if largest else top2 - top1)


class NetworkArgmax:
    """The network's decisions argmax_c (w_c . h + b_c), exactly as float64 would decide them:
    logits in float32 with a rigorous bound of their rounding error (Higham's gamma_d for the
    dot product, plus rounding W, b and the sum: |err| <= ew ||h|| + eb); the samples whose best
    two logits are closer than twice the bound are recomputed in float64 as
    w_c . (h - mu_y) + (w_c . mu_y + b_c), from the centred features (nothing cancels).

    Args: means (K x d) of the classes in use, lookup (C: label -> row of means, -1 if unused),
    W (C x d), b (C or None)."""

    def __init__(self, means: Tensor, lookup: Tensor, W: Tensor, b: Tensor | None) -> None:
        dev = means.device
        self.mu = means.to(torch.float64)
        self.lookup = lookup
        W = W.to(dev, torch.float64)
        b = torch.zeros(W.shape[0], dtype=torch.float64, device=dev) if b is None else b.to(dev, torch.float64)
        self.Wt = W.T.contiguous()
        self.logit0 = self.mu @ W.T + b                                            # w_c . mu_y + b_c  (K x C)
        self.W32 = W.to(torch.float32).contiguous()
        self.b32 = b.to(torch.float32)
        u, d = 2.0 ** -24, W.shape[1]
        gamma = d * u / (1 - d * u)
        self.ew = 2 * (gamma + 4 * u) * float(W.norm(dim=1).max())
        self.eb = 2 * 3 * u * float(b.abs().max())

    def _to(self, device) -> None:
        for name in ("mu", "lookup", "Wt", "logit0", "W32", "b32"):
            setattr(self, name, getattr(self, name).to(device))

    def __call__(self, given: Tensor, k: Tensor, z: Tensor | None = None) -> Tensor:
        """Decisions for a batch ``given`` (B x d, any float dtype) whose classes' rows in
        ``means`` are ``k``; ``z`` = h - mu_y in float64 if already at hand."""
        if given.device != self.W32.device:
            self._to(given.device)

        def exact(rows):
            zr = z[rows] if z is not None else given[rows].to(torch.float64) - self.mu[k[rows]]
            return torch.argmax(zr @ self.Wt + self.logit0[k[rows]], dim=1)
        fast_ok = (given.dtype in (torch.float32, torch.float16, torch.bfloat16)
                   and torch.get_float32_matmul_precision() == "highest"
                   and not (given.is_cuda and torch.backends.cuda.matmul.allow_tf32))
        if not fast_ok:
            return exact(slice(None))
        h32 = given.to(torch.float32)
        logits = torch.addmm(self.b32[None, :], h32, self.W32.T)                 # B x C
        net, margin = _best_two(logits, largest=True)
        unsure = margin <= 2 * (self.ew * torch.linalg.vector_norm(h32, dim=1) + self.eb)
        if bool(unsure.any()):
            rows = unsure.nonzero().flatten()
            net[rows] = exact(rows)
        return net


class CentredPass(Metric):
    """Second pass given the class means: exact centred statistics, NC1 quadratic forms, NCC.

    For each sample with centred feature ``z = h - mu_y`` accumulates ``||z||^2`` per class
    (Galanti et al. 2022, Var(Q)), ``(z . v_k)^2`` for the columns ``v_k`` of ``basis``
    (``v_k^T S_W v_k``, Papyan et al. 2020 NC1 along the right singular vectors of M), and the
    nearest-class-centre prediction ``argmin_c ||h - mu_c||`` compared with the label (NCC
    accuracy) and with ``argmax_c (w_c . h + b_c)`` (NC4, Papyan et al. 2020).

    Everything comes from z and one GEMM ``z [Q | W^T]``: with M = (U S) Q^T and m_y Q = (U S)_y,
    ``(h - g) . m_c = (z Q + (U S)_y) . (U S)_c`` and ``W h = W z + (W mu_y)``; no quantity is
    formed from the raw (possibly far-from-origin) features, so nothing cancels.

    Args:
        means: (K x d) means of the K classes in use.
        classes: (K,) the original label of each row of ``means`` (other labels are refused).
        n_classes: total number of labels C (W has C rows).
        basis: (d x k) orthonormal Q with M = (U S) Q^T for the centred means M = means - centre;
            ``proj`` = U S (K x k). Q must span the rows of M (the full thin SVD basis).
        W, b: classifier (C x d, C) for NC4, or None.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, means: Tensor, classes: Tensor, n_classes: int, basis: Tensor, proj: Tensor,
                 W: Tensor | None = None, b: Tensor | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._ws = _Workspace()
        means = means.to(torch.float64)
        K, d = means.shape
        self.n_classes, self.k = int(n_classes), basis.shape[1]
        self.register_buffer("mu", means)
        proj = proj.to(means.device, torch.float64)
        self.register_buffer("proj", proj)
        self.register_buffer("m_sq", (proj * proj).sum(1))                # ||m_c||^2
        # float32 copies for the NCC scores, with a rigorous bound of their rounding error
        # (as for the logits below): a score whose top-2 margin is within it is redone in float64
        self.register_buffer("proj32", proj.to(torch.float32))
        self.register_buffer("m_sq32", self.m_sq.to(torch.float32))
        u, kk = 2.0 ** -24, proj.shape[1]
        gamma_k = kk * u / (1 - kk * u)
        # |fl32(m_sq_c - 2 P_c . a) - (m_sq_c - 2 P_c . a)| <= es ||a|| + em  (a = Q^T (h - g)):
        # 2 (gamma_k + 3u) ||P_c|| ||a|| for the rounded inputs and the dot product, plus the
        # rounding of m_sq and of the subtraction (3u (m_sq + 2 ||P_c|| ||a||)); doubled for margin
        pmax = float(proj.norm(dim=1).max()) if K else 0.0
        self.es = 2 * (2 * (gamma_k + 3 * u) + 6 * u) * pmax
        self.em = 2 * 3 * u * float(self.m_sq.max()) if K else 0.0
        dev = means.device
        lookup = torch.full((n_classes,), -1, dtype=torch.int64, device=dev)
        lookup[classes.to(device=dev, dtype=torch.int64)] = torch.arange(K, device=dev)
        self.register_buffer("lookup", lookup)
        self.register_buffer("classes", classes.to(device=dev, dtype=torch.int64))
        self.with_w = W is not None
        self.network = NetworkArgmax(means, lookup, W, b) if W is not None else None
        self.register_buffer("basis_t", basis.to(dev, torch.float64).T.contiguous())
        self.add_state("sqdev", torch.zeros(K, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("quad", torch.zeros(self.k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("ncc_correct", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("mismatch", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, features, labels) -> None:  # noqa: D102
        h, y, given = _as_batch(features, labels, self.n_classes, self.mu.shape[1], self._ws)
        if h.device != self.mu.device:
            self.to(h.device)
        if h.shape[0] == 0:
            return
        k = self.lookup[y]
        if bool((k < 0).any()):
            raise NclabError(f"labels: class {int(y[k < 0][0])} has no mean in this pass (it was empty in the first)")
        z = h.sub_(torch.index_select(self.mu, 0, k, out=self._ws.get("g", tuple(h.shape), h.dtype, h.device)))
        self.sqdev.index_add_(0, k, torch.linalg.vector_norm(z, dim=1).square_())
        # k x B = Q^T z^T: this orientation runs ~2x faster than z @ Q for a thin Q
        p = self.basis_t @ z.T
        self.quad += (p * p).sum(1)
        ncc = self.classes[self._ncc_argmin(p.add_(self.proj[k].T))]  # p + (U S)_y = Q^T (h - g)
        self.ncc_correct += (ncc == y).sum()
        if self.with_w:
            self.mismatch += (ncc != self.network(given, k, z)).sum()
        self.n += h.shape[0]

    def _ncc_argmin(self, a: Tensor) -> Tensor:
        """argmin_c ||h - mu_c||^2 = argmin_c (||m_c||^2 - 2 m_c . (h - g)) from a = Q^T (h - g)
        (k x B), exactly as float64 would decide it: scores in float32 (a K x k x B GEMM at twice
        the float64 rate), and the samples whose best two scores are closer than twice the
        rigorous error bound are rescored in float64."""
        exact = lambda cols: torch.argmin(self.m_sq[:, None] - 2 * (self.proj @ a[:, cols]), dim=0)  # noqa: E731
        if torch.get_float32_matmul_precision() != "highest" or (a.is_cuda and torch.backends.cuda.matmul.allow_tf32):
            return exact(slice(None))
        a32 = a.T.to(torch.float32)                                               # B x k
        score = torch.addmm(self.m_sq32[None, :], a32, self.proj32.T, alpha=-2)    # B x K
        best, margin = _best_two(score, largest=False)
        err = self.es * torch.linalg.vector_norm(a, dim=0) + self.em
        unsure = margin <= 2 * err
        if bool(unsure.any()):
            cols = unsure.nonzero().flatten()
            best[cols] = exact(cols)
        return best

    def compute(self) -> dict[str, Tensor]:
        """``sqdev`` (K,), ``quad`` (k,) = diag(Q^T S_W Q), ``n``, ``ncc_correct``, ``mismatch``."""
        return dict(sqdev=self.sqdev.clone(), quad=self.quad.clone(), n=self.n.clone(),
                    ncc_correct=self.ncc_correct.clone(), mismatch=self.mismatch.clone())


def class_moments(features, labels, n_classes: int) -> ClassMoments:
    """Exact class counts, means and squared deviations of in-memory features (one
    :class:`ClassStats` update: every class is shifted by its own mean, so nothing cancels).
    Local: never synchronised across processes, even under torch.distributed."""
    h = torch.as_tensor(features)
    stats = ClassStats(n_classes, h.shape[1] if h.ndim == 2 else 1, scatter=False, sync_on_compute=False)
    stats.update(h, labels)
    return stats.compute()

