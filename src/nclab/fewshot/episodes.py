"""Seeded k-way n-shot q-query episodes, sampled as index arrays, saved and loaded as ``.npz``.

An episode picks ``way`` distinct classes and, in each, ``shot + query`` distinct samples;
the first ``shot`` of each class are the support set, the rest the queries. A whole set is
one ``E x way x (shot + query)`` array of row indices into the feature matrix, so the same
tasks can be replayed on another model's features of the same split (Chen et al. 2019,
"A closer look at few-shot classification": evaluate every method on identical episodes).
"""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nclab.atomic import atomic_path
from nclab.errors import NclabError, check_memory

FORMAT = "nclab-episodes"
VERSION = 1


def labels_digest(labels) -> str:
    """SHA-256 of the label vector (as int64): identifies the sample order episodes index into."""
    y = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
    return hashlib.sha256(y.tobytes()).hexdigest()


@dataclass(frozen=True)
class Episodes:
    """A set of episodes: ``indices[e, j, :shot]`` are the support rows of class slot ``j``
    of episode ``e`` (label ``j`` within the episode), ``indices[e, j, shot:]`` its queries."""

    indices: np.ndarray
    way: int
    shot: int
    query: int
    seed: int | None
    labels_sha256: str

    @property
    def n_episodes(self) -> int:
        return int(self.indices.shape[0])

    @property
    def support(self) -> np.ndarray:
        """E x way x shot row indices."""
        return self.indices[:, :, : self.shot]

    @property
    def queries(self) -> np.ndarray:
        """E x way x query row indices."""
        return self.indices[:, :, self.shot:]

    def classes(self, labels) -> np.ndarray:
        """E x way original class labels of each episode's class slots."""
        return np.asarray(labels)[self.indices[:, :, 0]]

    def check(self, labels, where: str = "episodes") -> "Episodes":
        """Check that these episodes index ``labels`` as they did when they were sampled."""
        labels = np.asarray(labels)
        if labels_digest(labels) != self.labels_sha256:
            raise NclabError(f"{where}: episodes were sampled on other labels (sha256 {self.labels_sha256[:12]}...), "
                             f"not on these {len(labels)} samples; sample new episodes for this feature set")
        return self


def _distinct(rng: np.random.Generator, population: np.ndarray, count: int) -> np.ndarray:
    """Row r: ``count`` distinct uniform integers in ``[0, population[r])``, in random order.

    Rows with ``count**2 <= population`` use rejection (i.i.d. draws, redraw rows with a
    repeat; acceptance >= e^-1/2), which is exact: conditioned on being distinct, every
    ordered tuple is equally likely. Other rows take the first ``count`` of a random permutation.
    """
    population = np.asarray(population, dtype=np.int64)
    out = np.empty((len(population), count), dtype=np.int64)
    fast = count * count <= population
    rows = np.flatnonzero(fast)
    # one scalar bound when all rows share it: the same stream as the per-row bounds, ~4x faster
    uniform = population.size > 0 and bool((population == population[0]).all())
    small = population.size > 0 and int(population.max()) < 1 << 15
    while rows.size:
        high = int(population[0]) if uniform else population[rows, None]
        draw = rng.integers(0, high, size=(rows.size, count))
        s = np.sort(draw.astype(np.int16) if small else draw, axis=1)      # only to find repeats
        repeat = (s[:, 1:] == s[:, :-1]).any(axis=1)
        if rows.size == len(out):
            out = draw                                     # every row drawn: keep the array, fix repeats
        else:
            ok = ~repeat
            out[rows[ok]] = draw[ok]
        rows = rows[repeat]
    if not fast.all():
        for p in np.unique(population[~fast]):
            r = np.flatnonzero(~fast & (population == p))
            out[r] = np.argsort(rng.random((r.size, int(p))), axis=1)[:, :count]
    return out


_RECENT: OrderedDict = OrderedDict()       # (labels sha256, way, shot, query, episodes, seed) -> Episodes
_RECENT_LOCK = threading.Lock()
_RECENT_SIZE = 8                            # sets kept, and at most this many bytes in all:
_RECENT_MAX_BYTES = 128 << 20


class EpisodeSampler:
    """Seeded sampler of ``episodes`` k-way n-shot q-query tasks over a label vector.

    The random stream is ``numpy.random.default_rng([seed, way, shot, query])``: the same
    arguments and labels always give the same episodes, and settings never share tasks by accident.
    The last few sets sampled are kept (read-only, keyed by the labels' SHA-256 and the
    arguments), so evaluating several heads or models, or every epoch, on the same tasks
    samples them once.
    """

    def __init__(self, way: int = 5, shot: int = 1, query: int = 15, episodes: int = 2000, seed: int = 0):
        self.way = way
        self.shot = shot
        self.query = query
        self.episodes = episodes
        self.seed = seed

    def _check_args(self) -> None:
        for name, low in (("way", 2), ("shot", 1), ("query", 1), ("episodes", 1), ("seed", 0)):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
                raise NclabError(f"few-shot {name}: expected an integer >= {low}, got {v!r}")
        # the index array (int64) and the sampler's draws of the same size
        check_memory(16 * int(self.episodes) * int(self.way) * (int(self.shot) + int(self.query)),
                     f"few-shot episodes: {self.episodes} episodes of {self.way} x {self.shot + self.query} rows")

    def sample(self, labels) -> Episodes:
        """Sample the episodes; ``labels`` is the N-vector of class ids of the feature rows."""
        self._check_args()
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise NclabError(f"labels: expected a vector of integer class ids, got {labels.dtype} shape {labels.shape}")
        k, per = int(self.way), int(self.shot) + int(self.query)
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        if len(classes) < k:
            raise NclabError(f"labels: {k}-way episodes need at least {k} classes, found {len(classes)}")
        small = counts < per
        if small.any():
            c = int(np.flatnonzero(small)[0])
            raise NclabError(f"labels: class {int(classes[c])} has {int(counts[c])} samples, fewer than "
                             f"shot + query = {self.shot} + {self.query} = {per} ({int(small.sum())} such classes)")
        digest = labels_digest(labels)
        key = (digest, k, int(self.shot), int(self.query), int(self.episodes), int(self.seed))
        with _RECENT_LOCK:
            if key in _RECENT:
                _RECENT.move_to_end(key)
                return _RECENT[key]
        rng = np.random.default_rng([int(self.seed), k, int(self.shot), int(self.query)])
        E = int(self.episodes)
        slots = _distinct(rng, np.full(E, len(classes)), k)                       # E x k class positions
        local = _distinct(rng, counts[slots].reshape(-1), per).reshape(E, k, per)  # within-class offsets
        indices = order[starts[slots][:, :, None] + local]
        indices.setflags(write=False)
        episodes = Episodes(indices=indices, way=k, shot=int(self.shot), query=int(self.query),
                            seed=int(self.seed), labels_sha256=digest)
        if indices.nbytes <= _RECENT_MAX_BYTES:
            with _RECENT_LOCK:
                _RECENT[key] = episodes
                while len(_RECENT) > _RECENT_SIZE or sum(e.indices.nbytes for e in _RECENT.values()) > _RECENT_MAX_BYTES:
                    _RECENT.popitem(last=False)
        return episodes


def save_episodes(path: str | Path, sets: list[Episodes]) -> None:
    """Write episode sets (one per shot, say) to one ``.npz`` atomically: arrays
    ``indices_0, indices_1, ...`` and a JSON ``meta`` string (no pickle)."""
    if not sets:
        raise NclabError(f"{path}: no episode sets to save")
    digests = {s.labels_sha256 for s in sets}
    if len(digests) != 1:
        raise NclabError(f"{path}: episode sets to save in one file must index the same labels")
    meta = {"format": FORMAT, "version": VERSION, "labels_sha256": digests.pop(),
            "sets": [{"way": s.way, "shot": s.shot, "query": s.query, "episodes": s.n_episodes, "seed": s.seed}
                     for s in sets]}
    arrays = {f"indices_{i}": np.ascontiguousarray(s.indices, dtype=np.int64) for i, s in enumerate(sets)}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)


def load_episodes(path: str | Path) -> list[Episodes]:
    """Read episode sets written by :func:`save_episodes`; problems are one line naming the file."""
    p = Path(path)
    if not p.is_file():
        raise NclabError(f"{p}: no such episodes file")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise NclabError(f"{p}: not an nclab episodes file (no 'meta' entry; keys {sorted(z.files)})")
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise NclabError(f"{p}: expected format {FORMAT!r} version {VERSION}, "
                                 f"got {meta.get('format')!r} version {meta.get('version')!r}")
            sets = []
            for i, m in enumerate(meta["sets"]):
                idx = z[f"indices_{i}"]
                want = (m["episodes"], m["way"], m["shot"] + m["query"])
                if idx.shape != want or not np.issubdtype(idx.dtype, np.integer):
                    raise NclabError(f"{p}: 'indices_{i}' must be an integer array of shape {want}, "
                                     f"got {idx.dtype} {idx.shape}")
                sets.append(Episodes(indices=idx.astype(np.int64), way=int(m["way"]), shot=int(m["shot"]),
                                     query=int(m["query"]), seed=m.get("seed"),
                                     labels_sha256=str(meta["labels_sha256"])))
    except NclabError:
        raise
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise NclabError(f"{p}: not a readable episodes file ({type(e).__name__}: {e})") from None
    return sets
