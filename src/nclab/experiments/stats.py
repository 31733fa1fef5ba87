"""Statistics the experiments report: seed intervals, rank correlations with bootstrap intervals,
and reshaping of the tidy records table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.stats


def seed_interval(values: Sequence[float]) -> dict:
    """Mean over pre-training seeds and the Student-t 95% half-width, t(0.975, n-1) s / sqrt(n)
    (s with ddof 1; None for a single seed)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": None, "ci95_t": None, "n": 0}
    half = float(scipy.stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    return {"mean": float(v.mean()), "ci95_t": half, "n": n}


def fmt_interval(iv: dict, scale: float = 1.0, digits: int = 3) -> str:
    """``0.152 ± 0.011 (n=3)``; a single seed gives the value alone."""
    if iv["mean"] is None:
        return "n/a"
    s = f"{iv['mean'] * scale:.{digits}f}"
    if iv["ci95_t"] is not None:
        s += f" ± {iv['ci95_t'] * scale:.{digits}f}"
    return s + f" (n={iv['n']})"


def spearman(x: Sequence[float], y: Sequence[float]) -> dict:
    """Spearman's rank correlation with its two-sided p-value (None with fewer than 3 pairs or
    a constant input)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None, "n": int(len(x))}
    r = scipy.stats.spearmanr(x, y)
    return {"rho": float(r.statistic), "p": float(r.pvalue), "n": int(len(x))}


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (scipy.stats.rankdata's default)."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    first = np.concatenate(([True], s[1:] != s[:-1]))
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(a)))
    ranks = np.empty(len(a))
    ranks[order] = (starts + (counts + 1) / 2)[np.cumsum(first) - 1]
    return ranks


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho as the Pearson correlation of average ranks (scipy.stats.spearmanr's
    statistic, without its per-call overhead: the bootstrap calls this thousands of times)."""
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    return float(rx @ ry / math.sqrt((rx @ rx) * (ry @ ry)))


def bootstrap_spearman(x: Sequence[float], y: Sequence[float], groups: Sequence | None = None,
                       resamples: int = 2000, seed: int = 0) -> dict:
    """Spearman's rho with a percentile bootstrap 95% interval. ``groups`` (e.g. the seed of each
    point) resamples whole groups, keeping dependent points together."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    out = spearman(x, y)
    if out["rho"] is None:
        return {**out, "lo": None, "hi": None}
    rng = np.random.default_rng(seed)
    g = np.arange(len(x)) if groups is None else pd.factorize(np.asarray(groups))[0]
    members = [np.flatnonzero(g == k) for k in range(g.max() + 1)]
    rhos = []
    for _ in range(resamples):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        xs, ys = x[idx], y[idx]
        if np.ptp(xs) > 0 and np.ptp(ys) > 0:
            rhos.append(rank_correlation(xs, ys))
    lo, hi = np.percentile(rhos, [2.5, 97.5]) if rhos else (None, None)
    return {**out, "lo": None if lo is None else float(lo), "hi": None if hi is None else float(hi)}


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, epoch) and one column per metric, from the tidy table; the run's
    parameter columns are kept."""
    if table.empty:
        return table
    index = [c for c in table.columns if c not in ("metric", "value")]
    out = table.pivot_table(index=index, columns="metric", values="value", aggfunc="first", dropna=False)
    out.columns.name = None
    return out.reset_index()


def final_rows(w: pd.DataFrame, require: str | None = None) -> pd.DataFrame:
    """The last epoch of every run (with ``require``: the last epoch where that metric exists)."""
    if require is not None:
        w = w[w[require].notna()] if require in w.columns else w.iloc[0:0]
    return w.sort_values("epoch").groupby("run", sort=False).tail(1)
