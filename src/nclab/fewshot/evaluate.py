"""``nclab.fewshot``: k-way n-shot accuracy of few-shot heads on frozen features.

For each shot, one set of seeded episodes (:class:`EpisodeSampler`) is shared by all heads.
Episodes are processed in chunks: the chunk's support and query rows are gathered from the
feature matrix into a small buffer, transformed there (L2 / centring), and every head is
fitted and evaluated on it batched over the chunk's episodes. The logistic head is iterative,
so it is instead fitted once on all episodes together (a handful of tensor calls per L-BFGS
step, whatever E) from the support Gram matrices alone (``LogisticHead.fit_gram``: W = S^T A
by the representer theorem); a second pass over the chunks forms W and scores the queries.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from nclab.errors import NclabError
from nclab.fewshot.bound import class_moments, episode_cdnv, pairwise_cdnv, transfer_bound_term
from nclab.fewshot.episodes import Episodes, EpisodeSampler
from nclab.fewshot.heads import EpisodeHead, LogisticHead, gram_rtol, make_head
from nclab.fewshot.stats import confidence_interval
from nclab.fewshot.transforms import apply_transform_, base_mean as _base_mean, check_transform

ROW_KEYS = ("way", "shot", "query", "head", "episodes", "mean", "std", "ci95", "ci95_t")


@dataclass
class FewshotResult:
    """Rows as returned by :func:`fewshot`, per-episode accuracies, the bound term per shot,
    and the episodes used (one :class:`Episodes` per shot)."""

    rows: list[dict]
    accuracies: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    bound: list[dict] = field(default_factory=list)
    episodes: dict[int, Episodes] = field(default_factory=dict)


def _features(features) -> torch.Tensor:
    x = features if torch.is_tensor(features) else torch.from_numpy(np.ascontiguousarray(features))
    if x.ndim != 2 or not x.is_floating_point():
        raise NclabError(f"features: expected a floating N x d matrix, got {x.dtype} shape {tuple(x.shape)}")
    return x


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


@contextlib.contextmanager
def _cpu_threads(x: torch.Tensor, num_threads: int | None):
    """Evaluation threads on CPU: yields the number of workers, ``num_threads`` or by default
    ``torch.get_num_threads()``, each running single-threaded torch ops (restored afterwards).

    Workers take whole chunks of episodes from a shared queue (:func:`_parallel`) instead of
    splitting each small op across OpenMP threads: per-chunk tensors are a few MB, and OpenMP
    fork/join per op both costs more than it saves and, when other processes compete for the
    cores, waits for time slices at every barrier (measured on a 2-core machine at load average
    2-7: ridge over 2,000 episodes 0.14 s with one thread, 0.3-52 s with two OpenMP threads).
    Independent workers have no barriers, so a busy machine only slows them down in proportion.
    """
    if x.device.type != "cpu":
        yield 1
        return
    before = torch.get_num_threads()
    workers = max(1, int(num_threads or before))
    torch.set_num_threads(1)
    try:
        yield workers
    finally:
        torch.set_num_threads(before)


def _parallel(fn, items, workers: int) -> list:
    """``[fn(i) for i in items]``, on ``workers`` threads taking items in turn (torch ops release
    the GIL); each thread runs single-threaded torch ops. Results do not depend on the schedule."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(i) for i in items]

    def run(i):
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)                       # OpenMP thread counts are per thread
        return fn(i)

    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(run, items))


def _single_threaded(fn, *args):
    torch.set_num_threads(1)                               # this thread's OpenMP count only
    return fn(*args)


def _row_norms_inverse(x: torch.Tensor, workers: int) -> torch.Tensor:
    """1 / max(||x_i||, 1e-12) for every row, in row blocks spread over the workers."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    step = max(1, -(-x.shape[0] // (4 * workers)))

    def block(lo):
        torch.linalg.vector_norm(x[lo:lo + step], dim=1, out=out[lo:lo + step])
        out[lo:lo + step].clamp_min_(1e-12).reciprocal_()
    _parallel(block, range(0, x.shape[0], step), workers)
    return out


def _chunk_size(way: int, per_class: int, d: int, itemsize: int) -> int:
    # ~4 MB gathered block: stays in cache while the heads read it, per worker
    return max(1, (4 << 20) // max(1, way * per_class * d * itemsize))


def evaluate_episodes(features, labels, episodes: Episodes, heads=("ncc", "ridge", "logistic"),
                      transform: str = "l2", base_mean=None, chunk_size: int | None = None,
                      _row_scale: torch.Tensor | None = None, _workers: int = 1) -> dict[str, np.ndarray]:
    """Per-episode accuracies (fractions) of each head on ``episodes``: ``{head name: E-vector}``.
    (Internal: ``_row_scale``, per-row factors of the features, as 1/||x|| for "l2"; ``_workers``,
    threads taking chunks of episodes, each with single-threaded torch ops.)"""
    x = _features(features)
    y = _labels(labels, x.shape[0])
    episodes.check(y)
    check_transform(transform, base_mean)
    mean = None if base_mean is None else torch.as_tensor(base_mean).to(device=x.device, dtype=x.dtype)
    heads = _head_list(heads)
    k, n, q, E = episodes.way, episodes.shot, episodes.query, episodes.n_episodes
    if int(episodes.indices.min()) < 0 or int(episodes.indices.max()) >= x.shape[0]:
        raise NclabError(f"episodes: row indices must lie in 0..{x.shape[0] - 1} (the feature rows)")
    if transform == "l2" and _row_scale is None:
        _row_scale = _row_norms_inverse(x, _workers)
        transform = "none"
    s = k * n
    # each episode's rows in one index vector: its support (class by class), then its queries
    rows = torch.from_numpy(np.concatenate([episodes.support.reshape(E, s), episodes.queries.reshape(E, k * q)],
                                           axis=1)).to(x.device)
    ys = torch.arange(k, device=x.device).repeat_interleave(n)
    yq = torch.arange(k, device=x.device).repeat_interleave(q)
    B = chunk_size or _chunk_size(k, n + q, x.shape[1], x.element_size())
    starts = range(0, E, B)
    direct = [(name, h) for name, h in heads if not isinstance(h, LogisticHead)]
    iterative = [(name, h) for name, h in heads if isinstance(h, LogisticHead)]
    correct = {name: torch.empty(E, dtype=torch.float64, device=x.device) for name, _ in heads}
    # Gathered rows go into one buffer per thread, allocated once: a fresh multi-MB tensor per
    # chunk costs page faults that take longer than the copy itself.
    local = threading.local()

    def gather(lo: int, width: int):
        """Rows ``rows[lo:lo + B, :width]`` as a chunk x width x d block, and their row scales."""
        idx = rows[lo:lo + B, :width]
        flat = idx.reshape(-1)
        size = B * rows.shape[1] * x.shape[1]
        if getattr(local, "buf", None) is None:
            local.buf = torch.empty(size, dtype=x.dtype, device=x.device)
        block = local.buf[:flat.numel() * x.shape[1]].view(flat.numel(), x.shape[1])
        torch.index_select(x, 0, flat, out=block)
        block = block.view(idx.shape[0], width, x.shape[1])
        if transform != "none":
            apply_transform_(block, transform, mean)
        scale = None if _row_scale is None else _row_scale.index_select(0, flat).view(idx.shape)
        return block, scale

    def direct_chunk(lo: int):
        block, scale = gather(lo, rows.shape[1])
        S, Q = block[:, :s], block[:, s:]
        pending = []
        for name, h in direct:
            pred = None
            if hasattr(h, "predict_scaled"):
                ones = scale is None
                a = torch.ones(S.shape[:2], dtype=x.dtype, device=x.device) if ones else scale[:, :s]
                c = torch.ones(Q.shape[:2], dtype=x.dtype, device=x.device) if ones else scale[:, s:]
                pred = h.predict_scaled(S, ys, k, Q, a, c)
            if pred is None:
                pending.append((name, h))
            else:
                correct[name][lo:lo + B] = (pred == yq).double().mean(1)
        if pending and scale is not None:
            block.mul_(scale[..., None])               # the rows themselves, for the other heads
        for name, h in pending:
            correct[name][lo:lo + B] = (h.fit(S, ys, n_classes=k).predict(Q) == yq).double().mean(1)

    def gram_chunk(lo: int) -> torch.Tensor:
        S, scale = gather(lo, s)
        K = torch.bmm(S, S.transpose(1, 2))
        return K if scale is None else K * (scale[:, :, None] * scale[:, None, :])

    def logits_chunk(lo: int):
        block, scale = gather(lo, rows.shape[1])
        S, Q = block[:, :s], block[:, s:]
        for name, h in iterative:
            A = h.dual_coef_[lo:lo + B]
            if scale is not None:
                A = A * scale[:, :s, None]
            coef = torch.bmm(A.transpose(1, 2).to(S.dtype), S)                          # A^T diag(a) S
            logits = torch.bmm(Q, coef.transpose(1, 2)).double()
            if scale is not None:
                logits *= scale[:, s:, None]
            logits += h.intercept_[lo:lo + B, None, :]
            correct[name][lo:lo + B] = (logits.argmax(-1) == yq).double().mean(1)

    if direct:
        _parallel(direct_chunk, starts, _workers)
    if iterative:
        K = torch.cat(_parallel(gram_chunk, starts, _workers))
        rtol = gram_rtol(x.dtype, s, x.shape[1])
        # L-BFGS on independent slices of episodes, one per worker: each slice stops on its own
        step = -(-E // _workers)
        for name, h in iterative:
            def fit_part(lo, h=h):
                part = type(h)(**{a: v for a, v in vars(h).items() if not a.endswith("_")})
                return part.fit_gram(K[lo:lo + step], ys, n_classes=k, rtol=rtol)
            parts = _parallel(fit_part, range(0, E, step), _workers)
            h.n_classes_ = k
            h.dual_coef_ = torch.cat([p.dual_coef_ for p in parts])
            h.intercept_ = torch.cat([p.intercept_ for p in parts])
            h.n_iter_ = max(p.n_iter_ for p in parts)
        # second pass: W = S^T diag(a) A per chunk, then the logits of the queries
        _parallel(logits_chunk, starts, _workers)
    return {name: correct[name].double().cpu().numpy() for name, _ in heads}


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
    check_transform(transform, base_mean)
    given = {}
    for s in episode_sets or ():
        given[s.shot] = s
    names = [name for name, _ in _head_list(heads)]
    if bound and "ncc" not in names:
        heads = tuple(heads) + ("ncc",)
    result = FewshotResult(rows=[])
    row_scale = None
    if transform == "l2":
        # 1 / ||x|| once per row (one read of N x d), applied to each gathered block while it is
        # in cache: cheaper than normalising every gathered row (E k (n + q) rows, several N)
        # and than writing a normalised copy of the whole matrix
        # (on a side thread, while the first episodes are sampled with NumPy)
        side = ThreadPoolExecutor(1)
        row_scale = side.submit(_single_threaded, _row_norms_inverse, x, 1)
        side.shutdown(wait=False)
        transform = "none"
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
        if isinstance(row_scale, Future):
            row_scale = row_scale.result()
        with _cpu_threads(x, num_threads) as workers:
            acc = evaluate_episodes(x, y, ep, heads, transform, base_mean, chunk_size, _row_scale=row_scale,
                                    _workers=workers)
        for name in names:
            result.accuracies[(n, name)] = acc[name]
            result.rows.append({"way": way, "shot": n, "query": query, "head": name, "episodes": ep.n_episodes,
                                **confidence_interval(acc[name])})
        if bound:
            feats = x if row_scale is None else x * row_scale[:, None]
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
    means, variances, _ = class_moments(x, y, int(y.max()) + 1)
    per_episode = episode_cdnv(pairwise_cdnv(means, variances), ep.classes(y))
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
    ``num_threads``: CPU threads for the evaluation (default ``torch.get_num_threads()``; see ``_cpu_threads``).
    Interval conventions: :mod:`nclab.fewshot.stats`.
    """
    return fewshot_report(features, labels, way, shot, query, episodes, heads, seed, transform, base_mean,
                          base_features, episode_sets, bound=False, chunk_size=chunk_size,
                          num_threads=num_threads).rows
