"""Mean accuracy over episodes and its 95% confidence intervals.

std uses ddof = 1 (the sample standard deviation, as ``scipy.stats.sem``), for both forms:

    ci95   = 1.96 * std / sqrt(E)                        (normal approximation)
    ci95_t = t_{0.975, E-1} * std / sqrt(E)              (Student t, E - 1 degrees of freedom)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st

from nclab.errors import NclabError


def confidence_interval(accuracies) -> dict[str, float]:
    """``{mean, std, ci95, ci95_t}`` of per-episode accuracies (fractions in [0, 1])."""
    a = np.asarray(accuracies, dtype=np.float64).reshape(-1)
    E = a.size
    if E < 2:
        raise NclabError(f"few-shot episodes: a confidence interval needs at least 2 episodes, got {E}")
    std = float(a.std(ddof=1))
    se = std / math.sqrt(E)
    return {"mean": float(a.mean()), "std": std, "ci95": 1.96 * se,
            "ci95_t": float(_st.t.ppf(0.975, E - 1)) * se}
