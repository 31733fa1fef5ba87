"""Geometry of a group of classes: the statistics of minority collapse (Fang et al. 2021).

Under class imbalance (K_A majority classes of n_A samples, K_B minority classes of n_B) the
classifier rows of the minority classes turn towards one direction as R = n_A / n_B grows: their
mean pairwise cosine rises from -1/(K-1) (a simplex ETF) towards 1, and their norms shrink
("minority collapse", Fang, He, Long & Su 2021, PNAS). The same statistics of the centred class
means show whether the features follow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from nclab.errors import NclabError


def row_geometry(A) -> dict:
    """Rows a_1..a_m of A: mean norm (1/m) sum ||a_i||, and the mean / max over ordered pairs
    i != j of cos(a_i, a_j) = a_i.a_j / (||a_i|| ||a_j||) (None for a single row), in float64
    (Fang et al. 2021, the minority-collapse statistic)."""
    A = torch.as_tensor(np.asarray(A) if not isinstance(A, Tensor) else A).to(torch.float64)
    if A.ndim != 2 or len(A) == 0:
        raise NclabError(f"row_geometry: expected a non-empty m x d matrix, got shape {tuple(A.shape)}")
    norms = A.norm(dim=1)
    out = {"norm": float(norms.mean()), "cos": None, "cos_max": None}
    if len(A) > 1:
        U = A / norms.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
        G = U @ U.T
        off = G[~torch.eye(len(A), dtype=torch.bool)]
        out["cos"], out["cos_max"] = float(off.mean()), float(off.max())
    return out


def group_geometry(W, means, classes: Sequence[int]) -> dict:
    """Classifier rows and centred class means of the group ``classes``: ``w_norm``, ``w_cos``,
    ``w_cos_max`` of the rows W[classes]; ``h_norm``, ``h_cos``, ``h_cos_max`` of the rows of
    M = mu - mean_c mu_c (centred by the unweighted mean of *all* the class means) in the group."""
    W = torch.as_tensor(np.asarray(W), dtype=torch.float64)
    mu = torch.as_tensor(np.asarray(means), dtype=torch.float64)
    if W.ndim != 2 or mu.ndim != 2 or len(W) != len(mu):
        raise NclabError(f"group_geometry: expected K x d classifier rows and K x d' class means, got "
                         f"{tuple(W.shape)} and {tuple(mu.shape)}")
    idx = list(classes)
    if not idx or min(idx) < 0 or max(idx) >= len(W):
        raise NclabError(f"group_geometry: classes {idx} out of range 0..{len(W) - 1}")
    rows, centred = row_geometry(W[idx]), row_geometry((mu - mu.mean(0))[idx])
    return {"w_norm": rows["norm"], "w_cos": rows["cos"], "w_cos_max": rows["cos_max"],
            "h_norm": centred["norm"], "h_cos": centred["cos"], "h_cos_max": centred["cos_max"]}


def group_accuracy(logits, labels, classes: Sequence[int]) -> float | None:
    """Top-1 accuracy of argmax_c z_c over the samples whose label is in ``classes`` (None if none)."""
    z = np.asarray(logits)
    y = np.asarray(labels)
    mask = np.isin(y, list(classes))
    if not mask.any():
        return None
    return float((z[mask].argmax(1) == y[mask]).mean())
