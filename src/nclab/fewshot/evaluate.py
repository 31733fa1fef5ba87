"""``nclab.fewshot``: k-way n-shot accuracy of few-shot heads on frozen features.

For each shot, one set of seeded episodes (:class:`EpisodeSampler`) is shared by all heads.
The engine (:class:`_Engine`) turns every linear head into per-episode class weights and scores
the queries class by class, with compiled kernels on CPU (:mod:`nclab.fewshot.kernels`) and
gathers + batched products elsewhere; other heads are fitted on gathered blocks of episodes.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from nclab.errors import NclabError, check_finite
from nclab.fewshot import warmup
from nclab.fewshot.bound import class_cdnv_matrix, episode_cdnv, transfer_bound_term
from nclab.fewshot.episodes import Episodes, EpisodeSampler
from nclab.fewshot.heads import EpisodeHead, LogisticHead, NCCHead, RidgeHead, gram_rtol, make_head
from nclab.fewshot.stats import confidence_interval
from nclab.fewshot.transforms import apply_transform_, base_mean as _base_mean, check_transform
from nclab.parallel import background, cpu_workers, empty, parallel_map, scratch

ROW_KEYS = ("way", "shot", "query", "head", "episodes", "mean", "std", "ci95", "ci95_t")


@dataclass
class FewshotResult:
    """Rows as returned by :func:`fewshot`, per-episode accuracies, the bound term per shot,
    and the episodes used (one :class:`Episodes` per shot)."""

    rows: list[dict]
    accuracies: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    bound: list[dict] = field(default_factory=list)
    episodes: dict[int, Episodes] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Rows, bound rows and per-episode accuracies (keyed ``"head/shot"``) as plain JSON data."""
        return {"results": self.rows, "bound": self.bound,
                "per_episode": {f"{h}/{n}": [round(float(a), 6) for a in acc]
                                for (n, h), acc in self.accuracies.items()}}


def _features(features, finite: bool = True) -> torch.Tensor:
    """The feature matrix as a float32 / float64 tensor, checked: N x d (d >= 1), finite."""
    x = features if torch.is_tensor(features) else torch.from_numpy(np.ascontiguousarray(features))
    if x.ndim != 2 or not x.is_floating_point() or x.shape[1] == 0:
        raise NclabError(f"features: expected a floating N x d matrix with d >= 1, got {x.dtype} shape {tuple(x.shape)}")
    if finite:
        check_finite(x)
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _labels(labels, n: int) -> np.ndarray:
    y = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise NclabError(f"labels: expected {n} integer class ids (one per feature row), got {y.dtype} shape {y.shape}")
    return y


def _head_list(heads) -> list[tuple[str, EpisodeHead]]:
    if isinstance(heads, (str, EpisodeHead)):
        heads = (heads,)
    out = []
    for h in heads:
        out.append((h, make_head(h)) if isinstance(h, str) else (getattr(h, "name", repr(h)), h))
    if not out:
        raise NclabError("few-shot heads: expected at least one head")
    return out


def _row_norms_inverse(x: torch.Tensor, workers: int) -> torch.Tensor:
    """1 / max(||x_i||, 1e-12) for every row, in row blocks spread over the workers."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    step = max(1, -(-x.shape[0] // (4 * workers)))

    def block(lo):
        torch.linalg.vector_norm(x[lo:lo + step], dim=1, out=out[lo:lo + step])
        out[lo:lo + step].clamp_min_(1e-12).reciprocal_()
    parallel_map(block, range(0, x.shape[0], step), workers)
    return out


def _chunk_size(rows_per_item: int, d: int, itemsize: int) -> int:
    """Items per chunk for ~4 MB of gathered rows: a block that stays in cache, per worker."""
    return max(1, (4 << 20) // max(1, rows_per_item * d * itemsize))


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(a, b)``; on CPU through NumPy's ``matmul`` (zero-copy views), whose BLAS runs
    the skinny per-episode products here (15-75 x d by d x k) ~3x faster than torch's batched
    GEMM (measured on this project's 2-core AVX-512 machine: 5.4 vs 17 us for 75 x 640 x 5)."""
    if a.device.type == "cpu" and a.dtype == b.dtype and a.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))
    return torch.bmm(a, b)


_TENSOR_SCORING = False      # tests set True to check the CPU kernel against the tensor-op path
_FUSED_RIDGE_MAX = 128       # support size up to which ridge runs in one compiled pass per episode


def _fresh(head: EpisodeHead) -> EpisodeHead:
    """An unfitted copy of ``head`` with the same constructor arguments (scikit-learn's
    convention: they are the attributes without a trailing underscore), else a shallow copy."""
    try:
        return type(head)(**{a: v for a, v in vars(head).items() if not a.endswith("_")})
    except TypeError:
        return copy.copy(head)


def _kernels_on(x: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels evaluate ``x`` now: on CPU, once compiled for its dtype
    (:mod:`nclab.fewshot.warmup`; until then, and on GPUs or in tests, tensor ops)."""
    return x.device.type == "cpu" and not _TENSOR_SCORING and warmup.ready(x.dtype)


def _path(head: EpisodeHead, kernels: bool, support_size: int) -> str:
    """How the engine evaluates ``head``: "ncc" (class centroids), "ridge" (one compiled pass
    per episode: CPU kernels and supports up to _FUSED_RIDGE_MAX rows), "gram" (fitted from the
    support Gram matrices: logistic, and dual ridge otherwise), or "generic" (any other head,
    fitted on the gathered rows). The first three predict argmax_c q.w_c + b_c with w_c in the
    span of the support rows."""
    if isinstance(head, NCCHead) and head.metric in ("euclidean", "cosine"):
        return "ncc"
    if isinstance(head, RidgeHead) and head.solver != "primal":
        return "ridge" if kernels and support_size <= _FUSED_RIDGE_MAX else "gram"
    return "gram" if isinstance(head, LogisticHead) else "generic"


def _needs_row_scale(heads, kernels: bool, support_size: int) -> bool:
    """Whether the engine reads the "l2" factors 1 / ||x_i|| of all rows for these heads: the
    compiled CPU kernels (NCC, ridge) take the norms from the rows they read; the tensor path,
    logistic and generic heads use the factors."""
    return not kernels or any(_path(h, kernels, support_size) in ("gram", "generic") for _, h in heads)


class _Engine:
    """Accuracies of every head on a set of episodes of the rows of ``x``, each row i seen as
    ``scale[i] * x[i]``: with ``l2``, scale[i] = 1 / max(||x_i||, 1e-12) (the L2 normalisation
    without a normalised copy), else 1.

    Linear heads (NCC, dual ridge, logistic) come down to per-episode class weights W (k x d)
    and offsets b, a query q being predicted as argmax_c q.w_c + b_c / scale(q) (the scale of a
    query multiplies all its scores, so it can move to the offsets). On a CPU the cost of this
    task is reading rows of a large matrix at random, so the work is arranged for locality:

    1. NCC centroids are weighted sums of support rows, taken slot by slot in class order so
       that each class's rows are read from memory about once;
    2. ridge is solved episode by episode while its support rows are in cache (Gram matrix,
       Cholesky, W); logistic is solved by batched L-BFGS from the support Gram matrices
       K = diag(a) S S^T diag(a) (its weights lie in the support span: W = S^T diag(a) A);
    3. the queries, 3/4 of the rows, are scored in class order too: all the episode slots of a
       class (its queries against their episode's weights) one after another.

    On CPU each step is a compiled kernel reading rows in place (``_kernels``), which with ``l2``
    takes each row's norm from the row itself while it is in cache (no pass over all N rows);
    elsewhere (GPUs) the rows are gathered and multiplied with tensor ops. Other heads (1-NN,
    custom heads) are fitted on gathered, scaled blocks of whole episodes. Every episode is
    computed on its own: results do not depend on the chunking or the number of workers.
    """

    def __init__(self, x: torch.Tensor, labels: np.ndarray, episodes: Episodes, workers: int,
                 chunk_size: int | None, l2: bool, scale=None, kernels: bool = False):
        self.x, self.workers, self.chunk, self.l2, self._scale = x, workers, chunk_size, l2, scale
        self.kernels = kernels               # decided once per evaluation: every step takes one path
        if x.device.type == "cpu":
            self.x_np = x.contiguous().numpy()
        self.k, self.n, self.q, self.E = episodes.way, episodes.shot, episodes.query, episodes.n_episodes
        self.idx_np = np.array(episodes.indices, dtype=np.int64)                           # a writable copy
        idx = torch.from_numpy(self.idx_np).to(x.device)
        self.support = idx[:, :, :self.n]                                                 # E x k x n
        self.queries = idx[:, :, self.n:]                                                 # E x k x q
        # slots (episode e, class position j) are numbered e * k + j; the kernels take them in
        # class order (by_class), so that consecutive slots read rows of the same class
        self.by_class = np.argsort(np.asarray(labels)[self.idx_np[:, :, 0]].reshape(-1), kind="stable")

    # -- helpers ------------------------------------------------------------------------------
    @property
    def scale(self) -> torch.Tensor:
        """The row factors as a vector, computed on first use (by the ``scale`` function given, if
        any): the paths that are not compiled kernels need them."""
        if callable(self._scale):
            self._scale = self._scale()
        if self._scale is None:
            self._scale = (_row_norms_inverse(self.x, self.workers) if self.l2 else
                           torch.ones(self.x.shape[0], dtype=self.x.dtype, device=self.x.device))
        self._scale = self._scale.to(self.x.dtype)
        return self._scale

    def _kernel_scale(self) -> np.ndarray:
        """The ``scale`` argument of the kernels: unused with ``l2`` (they norm the rows they read)."""
        return np.empty(0, self.x_np.dtype) if self.l2 else self.scale.contiguous().numpy()

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``x[idx]`` (unscaled) as idx.shape + (d,), in a scratch buffer of this thread."""
        flat = idx.reshape(-1)
        out = scratch("rows", (flat.numel(), self.x.shape[1]), self.x.dtype, self.x.device)
        torch.index_select(self.x, 0, flat, out=out)
        return out.view(*idx.shape, self.x.shape[1])

    def _steps(self, total: int, rows_per_item: int) -> range:
        """Chunk starts over ``total`` items of ``rows_per_item`` rows each (~4 MB gathered)."""
        size = self.chunk or _chunk_size(rows_per_item, self.x.shape[1], self.x.element_size())
        return range(0, total, max(1, size))

    def _bag_sums(self, idx: torch.Tensor, weights: torch.Tensor, out: torch.Tensor, post=None) -> None:
        """``out[r] = sum_t weights[r, t] * x[idx[r, t]]`` for the rows r of idx (B x m), in
        chunks over the workers; ``post(lo, sums)`` may transform each chunk in place first."""
        w = weights.to(self.x.dtype)

        def chunk(lo):
            sums = torch.nn.functional.embedding_bag(idx[lo:lo + step], self.x, mode="sum",
                                                     per_sample_weights=w[lo:lo + step])
            if post is not None:
                post(lo, sums)
            out[lo:lo + step].copy_(sums)
        step = self._steps(idx.shape[0], idx.shape[1] * 4).step
        parallel_map(chunk, range(0, idx.shape[0], step), self.workers)

    def _gram(self, idx: torch.Tensor, K: torch.Tensor) -> None:
        """K[e] = diag(a) X_e X_e^T diag(a) in float64 for the rows idx[e] (B x s) of each episode."""
        if self.kernels:
            from nclab.fewshot.kernels import gram_rows
            gram_rows(self.x_np, idx.numpy(), self.scale.numpy(), K.numpy(), 0, idx.shape[0])
            return
        S = self._gather(idx)
        a = self.scale[idx].double()
        torch.mul(_bmm(S, S.transpose(1, 2)).double(), a[:, :, None] * a[:, None, :], out=K)

    def _combine(self, idx: torch.Tensor, coef: torch.Tensor, out: torch.Tensor) -> None:
        """out[e k + c] = sum_t coef[e, t, c] x[idx[e, t]] (coef B x s x k; out B k x d)."""
        S = self._gather(idx)
        k = coef.shape[2]
        out.view(-1, k, out.shape[1]).copy_(_bmm(coef.transpose(1, 2).to(self.x.dtype), S))

    # -- the heads ------------------------------------------------------------------------------
    def ncc_weights(self, metric: str):
        """(W, b) per slot: W the class centroids of the scaled support rows, b = -||w||^2 / 2
        (euclidean: argmax 2 q.w - ||w||^2), or W / ||W|| with b = 0 (cosine)."""
        k, n, E = self.k, self.n, self.E
        W = empty((E * k, self.x.shape[1]), self.x.dtype, self.x.device)
        if self.kernels:
            from nclab.fewshot.kernels import centroids
            b = torch.zeros(E * k, dtype=torch.float64)
            args = (self.x_np, self.idx_np, n, self.by_class, self._kernel_scale(), self.l2, metric == "cosine",
                    W.numpy(), b.numpy())
            B = self._steps(E * k, n * 4).step
            parallel_map(lambda lo: centroids(*args, lo, min(lo + B, E * k)), range(0, E * k, B), self.workers)
            return W, b.to(self.x.dtype)
        b = torch.zeros(E * k, dtype=self.x.dtype, device=self.x.device)

        def post(lo, sums):
            if metric == "cosine":
                sums.div_(torch.linalg.vector_norm(sums, dim=1, keepdim=True).clamp_min_(1e-12))
            else:
                b[lo:lo + sums.shape[0]] = sums.square().sum(1).mul_(-0.5)
        idx = self.support.reshape(E * k, n)
        self._bag_sums(idx, self.scale[idx] / n, W, post)
        return W, b

    def gram(self) -> torch.Tensor:
        """E x s x s support Gram matrices K = diag(a) S S^T diag(a) of the episodes, float64."""
        E, s = self.E, self.k * self.n
        sup = self.support.reshape(E, s)
        K = empty((E, s, s), torch.float64, self.x.device)
        B = self._steps(E, s).step
        parallel_map(lambda lo: self._gram(sup[lo:lo + B], K[lo:lo + B]), range(0, E, B), self.workers)
        return K

    def gram_fit(self, head: EpisodeHead, K: torch.Tensor):
        """Fit ``head`` (ridge, logistic) from K on one slice of episodes per worker (an
        iterative solver stops on each slice on its own; batched ops on many episodes cost
        less per episode than on cache-sized chunks); W = A^T diag(a) S, chunk by chunk."""
        E, k, s, d = self.E, self.k, self.k * self.n, self.x.shape[1]
        ys = torch.arange(k, device=K.device).repeat_interleave(self.n)
        sup = self.support.reshape(E, s)
        W = empty((E * k, d), self.x.dtype, self.x.device)
        b = torch.empty(E, k, dtype=torch.float64, device=self.x.device)
        B = self._steps(E, s).step
        head.n_classes_ = k

        def fit(part, lo, hi):
            if isinstance(part, LogisticHead):
                return part.fit_gram(K[lo:hi], ys, n_classes=k, rtol=gram_rtol(self.x.dtype, s, d))
            return part.fit_gram(K[lo:hi], ys, n_classes=k)

        def combine(lo, A):
            idx = sup[lo:lo + B]
            self._combine(idx, A * self.scale[idx].to(A.dtype)[:, :, None], W[lo * k:(lo + B) * k])

        step = -(-E // self.workers)
        parts = parallel_map(lambda lo: fit(_fresh(head), lo, lo + step), range(0, E, step), self.workers)
        if isinstance(head, LogisticHead):
            head.n_iter_ = max(p.n_iter_ for p in parts)
        A = torch.cat([p.dual_coef_ for p in parts])                                       # E x s x k
        b.copy_(torch.cat([p.intercept_ for p in parts]))
        parallel_map(lambda lo: combine(lo, A[lo:lo + B]), range(0, E, B), self.workers)
        return W, b.reshape(-1).to(W.dtype)

    def ridge_fused(self, head: RidgeHead):
        """Ridge on CPU, episode by episode in one compiled pass while the support rows are in
        cache (:func:`nclab.fewshot.kernels.ridge_rows`: Gram, Cholesky solve, W, b)."""
        from nclab.fewshot.kernels import _LANES, ridge_rows
        head.check_alpha()
        E, k, s, d = self.E, self.k, self.k * self.n, self.x.shape[1]
        sup = self.support.reshape(E, s).contiguous().numpy()
        W = empty((E * k, d), self.x.dtype, self.x.device)
        b = torch.empty(E, k, dtype=torch.float64)
        Wn, bn = W.numpy(), b.numpy()
        B = -(-self._steps(E, s).step // _LANES) * _LANES          # whole groups of episodes solved side by side
        scale = self._kernel_scale()
        parallel_map(lambda lo: ridge_rows(self.x_np, sup, scale, self.l2, self.n, float(head.alpha),
                                           bool(head.fit_intercept), Wn, bn, lo, min(lo + B, E)),
                     range(0, E, B), self.workers)
        head.n_classes_ = k
        return W, b.reshape(-1).to(W.dtype)

    def score_queries(self, forms: dict) -> dict[str, torch.Tensor]:
        """Per-episode accuracy of argmax_c q.w_c + b_c / scale(q) for each head's (W, b), one
        row per slot e k + c. On CPU, the compiled kernel takes the slots in class order
        (:func:`nclab.fewshot.kernels.score_slots`); elsewhere, gathers and a product."""
        E, k, q = self.E, self.k, self.q
        out = {}
        for name, (W, b) in forms.items():
            hits = self._count_hits(W, b)
            out[name] = hits.view(E, k).sum(1).double() / (k * q)
        return out

    def _count_hits(self, W: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """hits[e k + j] = #{queries x of slot (e, j) : argmax_c x.W[e k + c] + bias[e k + c] / scale(x) == j}."""
        E, k, q, d = self.E, self.k, self.q, W.shape[1]
        P = E * k
        hits = torch.empty(P, dtype=torch.int64, device=self.x.device)
        if self.kernels:
            from nclab.fewshot.kernels import score_slots
            args = (self.x_np, self.idx_np, self.n, self.by_class, self._kernel_scale(), self.l2,
                    W.contiguous().numpy(), bias.contiguous().numpy(), hits.numpy())
            G = self.chunk or 64
            parallel_map(lambda lo: score_slots(*args, lo, min(lo + G, P)), range(0, P, G), self.workers)
            return hits
        rows = self.queries.reshape(P, q)
        inv = self.scale[rows].reciprocal_()
        j = torch.arange(P, device=rows.device) % k
        first = (torch.arange(P, device=rows.device) - j)[:, None] + torch.arange(k, device=rows.device)

        def chunk(lo):
            Q = self._gather(rows[lo:lo + G])                                               # g x q x d
            r = first[lo:lo + G].reshape(-1)
            Wg = torch.index_select(W, 0, r, out=scratch("weights", (r.numel(), d), W.dtype, W.device))
            scores = _bmm(Q, Wg.view(-1, k, d).transpose(1, 2))                            # g x q x k
            scores.addcmul_(bias[first[lo:lo + G]][:, None, :], inv[lo:lo + G, :, None])
            torch.sum(scores.argmax(-1) == j[lo:lo + G, None], dim=1, out=hits[lo:lo + G])
        G = self._steps(P, q).step
        parallel_map(chunk, range(0, P, G), self.workers)
        return hits

    def generic(self, heads) -> dict[str, torch.Tensor]:
        """Heads fitted on gathered blocks of whole episodes (rows scaled in the block)."""
        E, k, n, q = self.E, self.k, self.n, self.q
        rows = torch.cat([self.support.reshape(E, k * n), self.queries.reshape(E, k * q)], dim=1)
        ys = torch.arange(k, device=self.x.device).repeat_interleave(n)
        yq = torch.arange(k, device=self.x.device).repeat_interleave(q)
        out = {name: torch.empty(E, dtype=torch.float64, device=self.x.device) for name, _ in heads}

        def chunk(lo):
            idx = rows[lo:lo + B]
            block = self._gather(idx)
            block.mul_(self.scale[idx][..., None])
            S, Q = block[:, :k * n], block[:, k * n:]
            for name, h in heads:                 # a fresh copy per chunk: workers fit side by side
                out[name][lo:lo + B] = (_fresh(h).fit(S, ys, n_classes=k).predict(Q) == yq).double().mean(1)
        B = self._steps(E, k * (n + q)).step
        parallel_map(chunk, range(0, E, B), self.workers)
        return out

    def run(self, heads) -> dict[str, torch.Tensor]:
        forms, generic = {}, []
        path = {name: _path(h, self.kernels, self.k * self.n) for name, h in heads}
        if _needs_row_scale(heads, self.kernels, self.k * self.n):
            self.scale              # computed here: worker threads read it, and must not start a pool of their own
        K = self.gram() if "gram" in path.values() else None
        for name, h in heads:
            if path[name] == "ncc":
                forms[name] = self.ncc_weights(h.metric)
            elif path[name] == "ridge":
                forms[name] = self.ridge_fused(h)
            elif path[name] == "gram":
                forms[name] = self.gram_fit(h, K)
            else:
                generic.append((name, h))
        acc = self.score_queries(forms) if forms else {}
        if generic:
            acc.update(self.generic(generic))
        return acc


def evaluate_episodes(features, labels, episodes: Episodes, heads=("ncc", "ridge", "logistic"),
                      transform: str = "l2", base_mean=None, chunk_size: int | None = None,
                      _row_scale=None, _workers: int = 1, _checked: bool = False,
                      _kernels: bool | None = None) -> dict[str, np.ndarray]:
    """Per-episode accuracies (fractions) of each head on ``episodes``: ``{head name: E-vector}``.
    (Internal: ``_row_scale``, a function returning 1/max(||x_i||, 1e-12) for all rows, to share
    it between calls with "l2"; ``_workers``, threads taking chunks of episodes, each with
    single-threaded torch ops; ``_checked``, the features were checked finite by the caller;
    ``_kernels``, the caller's decision for the compiled kernels.)"""
    x = _features(features, finite=not _checked)
    y = _labels(labels, x.shape[0])
    episodes.check(y)
    check_transform(transform, base_mean, x.shape[1])
    heads = _head_list(heads)
    if int(episodes.indices.min()) < 0 or int(episodes.indices.max()) >= x.shape[0]:
        raise NclabError(f"episodes: row indices must lie in 0..{x.shape[0] - 1} (the feature rows)")
    if transform.startswith("center"):
        x = _transformed(x, transform, base_mean)
    kernels = _kernels_on(x) if _kernels is None else _kernels
    acc = _Engine(x, y, episodes, _workers, chunk_size, l2=transform == "l2", scale=_row_scale,
                  kernels=kernels).run(heads)
    return {name: acc[name].cpu().numpy() for name, _ in heads}


def fewshot_report(features, labels, way: int = 5, shot: int | Sequence[int] = (1, 5), query: int = 15,
                   episodes: int = 2000, heads=("ncc", "ridge", "logistic"), seed: int = 0,
                   transform: str = "l2", base_mean=None, base_features=None,
                   episode_sets: Sequence[Episodes] | None = None, bound: bool = False,
                   chunk_size: int | None = None, num_threads: int | None = None) -> FewshotResult:
    """Like :func:`fewshot`, returning a :class:`FewshotResult` (rows, per-episode accuracies,
    episodes and, with ``bound=True``, the transfer-bound term per shot next to the NCC error)."""
    x = _features(features)
    y = _labels(labels, x.shape[0])
    shots = [shot] if isinstance(shot, (int, np.integer)) else list(shot)
    if not shots:
        raise NclabError("few-shot shot: expected at least one shot count")
    if base_mean is None and base_features is not None:
        base_mean = _base_mean(base_features)
    check_transform(transform, base_mean, x.shape[1])
    given = {}
    for s in episode_sets or ():
        given[s.shot] = s
    names = [name for name, _ in _head_list(heads)]
    if bound and "ncc" not in names:
        heads = tuple(heads) + ("ncc",)
    result = FewshotResult(rows=[])
    kernels = _kernels_on(x)                 # one decision for the whole call (the kernels may become ready meanwhile)
    with cpu_workers(x.device, num_threads) as workers:
        row_scale = None
        if transform == "l2":
            # No normalised copy of the matrix: the CPU kernels norm each row they read while it is
            # in cache; the other paths (GPUs, logistic's weights, 1-NN, custom heads, the bound)
            # apply 1 / ||x||, computed once per row (one read of N x d) on a pool thread while the
            # first episodes are sampled with NumPy, or on first use when the episodes are given.
            if bound or any(_needs_row_scale(_head_list(heads), kernels, way * n) for n in shots):
                row_scale = (functools.cache(lambda: _row_norms_inverse(x, workers)) if all(n in given for n in shots)
                             else background(_row_norms_inverse, x, 1).result)
        elif transform != "none":
            x = _transformed(x, transform, base_mean)           # centring: one transformed copy
            transform, base_mean = "none", None
        for n in shots:
            if n in given:
                ep = given[n].check(y)
                if (ep.way, ep.query) != (way, query):
                    raise NclabError(f"episodes for {n}-shot are {ep.way}-way {ep.query}-query, expected {way}-way {query}-query")
                if ep.n_episodes != episodes:
                    raise NclabError(f"episodes for {n}-shot hold {ep.n_episodes} episodes, expected {episodes}")
            else:
                ep = EpisodeSampler(way, n, query, episodes, seed).sample(y)
            result.episodes[n] = ep
            acc = evaluate_episodes(x, y, ep, heads, transform, base_mean, chunk_size, _row_scale=row_scale,
                                    _workers=workers, _checked=True, _kernels=kernels)
            for name in names:
                result.accuracies[(n, name)] = acc[name]
                result.rows.append({"way": way, "shot": n, "query": query, "head": name, "episodes": ep.n_episodes,
                                    **confidence_interval(acc[name])})
            if bound:
                feats = x if row_scale is None else x * row_scale()[:, None]
                result.bound.append(_bound_row(feats, y, ep, acc["ncc"]))
    return result


def _transformed(x: torch.Tensor, transform: str, base_mean) -> torch.Tensor:
    out = torch.empty_like(x)
    mean = None if base_mean is None else torch.as_tensor(base_mean).to(device=x.device, dtype=x.dtype)
    for lo in range(0, x.shape[0], 8192):
        out[lo:lo + 8192] = x[lo:lo + 8192]
        apply_transform_(out[lo:lo + 8192], transform, mean)
    return out


def _bound_row(x: torch.Tensor, y: np.ndarray, ep: Episodes, ncc_acc) -> dict:
    """Galanti et al.'s leading term for this setting, on the features the heads saw."""
    per_episode = episode_cdnv(class_cdnv_matrix(x, y), ep.classes(y))
    avg = float(per_episode.mean())
    term = transfer_bound_term(ep.way, ep.shot, avg)
    finite = np.isfinite(avg)             # two classes with equal means: CDNV is infinite
    return {"shot": ep.shot, "way": ep.way, "bound_term": term if finite else None,
            "avg_cdnv": avg if finite else None, "ncc_error": float(1 - np.mean(ncc_acc))}


def fewshot(features, labels, way: int = 5, shot: int | Sequence[int] = (1, 5), query: int = 15,
            episodes: int = 2000, heads=("ncc", "ridge", "logistic"), seed: int = 0, transform: str = "l2",
            base_mean=None, base_features=None, episode_sets: Sequence[Episodes] | None = None,
            chunk_size: int | None = None, num_threads: int | None = None) -> list[dict]:
    """k-way n-shot q-query accuracy of each head, one row per (shot, head):
    ``{way, shot, query, head, episodes, mean, std, ci95, ci95_t}`` (fractions in [0, 1]).

    ``features`` N x d (NumPy or torch; the device follows it), ``labels`` N class ids.
    ``heads``: names (ncc, ncc-cosine, ridge, logistic, 1nn) or head objects.
    ``transform``: "l2" (default, as RFS), "none", "center" or "center+l2" (SimpleShot CL2N;
    these need ``base_mean`` or ``base_features``, the base classes' features).
    ``episode_sets``: previously saved :class:`Episodes` (one per shot) to replay instead of sampling.
    ``num_threads``: CPU threads for the evaluation (default ``torch.get_num_threads()``; see :mod:`nclab.parallel`).
    Interval conventions: :mod:`nclab.fewshot.stats`.
    """
    return fewshot_report(features, labels, way, shot, query, episodes, heads, seed, transform, base_mean,
                          base_features, episode_sets, bound=False, chunk_size=chunk_size,
                          num_threads=num_threads).rows
