"""Leading term of Galanti et al.'s few-shot transfer bound from measured CDNV.

Galanti, Gyorgy, Hutter (ICLR 2022), Prop. 5: for k-way n-shot NCC,

    E Err <= (k - 1) * (1 + 1/n) * Avg_{i != j} V(Q_i, Q_j) + ...,
    V(Q_i, Q_j) = (Var(Q_i) + Var(Q_j)) / (2 ||mu_i - mu_j||^2),   Var(Q) = E ||f(x) - mu(Q)||^2.

The m / (m - n) factor and the complexity terms are left out (the "leading term").
Each class's mean and population variance (1/n_c) are computed once from *all* its samples
(the class distribution, not the episode's few shots); an episode's Avg CDNV is the mean of
V over the unordered pairs of its k classes, and the term reported for a setting is the
mean over its episodes (equal to the term of the mean, the term being linear).
"""

from __future__ import annotations

import numpy as np
import torch


def class_moments(features, labels, n_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class means (C x d), population variances E||h - mu_c||^2 (C) and counts, in float64."""
    x = torch.as_tensor(features)
    y = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels, device=x.device).long()
    C = int(n_classes if n_classes is not None else int(y.max()) + 1)
    counts = torch.bincount(y, minlength=C).to(torch.float64)
    n = counts.clamp_min(1)
    step = 8192                      # float64 copies of one chunk at a time, not of the whole matrix
    sums = torch.zeros(C, x.shape[1], dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], step):
        sums.index_add_(0, y[i:i + step], x[i:i + step].to(torch.float64))
    means = sums / n[:, None]
    sq = torch.zeros(C, dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], step):   # second, centred pass: no cancellation in E||h||^2 - ||mu||^2
        yc = y[i:i + step]
        sq.index_add_(0, yc, (x[i:i + step].to(torch.float64) - means[yc]).square().sum(1))
    variances = sq / n
    return means, variances, counts


def pairwise_cdnv(means: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """C x C matrix V_ij = (Var_i + Var_j) / (2 ||mu_i - mu_j||^2) (diagonal: 0)."""
    d2 = torch.cdist(means, means, compute_mode="donot_use_mm_for_euclid_dist").square()
    V = (variances[:, None] + variances[None, :]) / (2 * d2)
    V.fill_diagonal_(0)
    return V


def episode_cdnv(V: torch.Tensor, classes) -> torch.Tensor:
    """Avg CDNV over the unordered class pairs of each episode; ``classes`` is E x k class ids."""
    c = torch.as_tensor(np.asarray(classes), device=V.device).long()
    k = c.shape[1]
    sub = V[c[:, :, None], c[:, None, :]]                    # E x k x k, zero diagonal
    return sub.sum((1, 2)) / (k * (k - 1))


def transfer_bound_term(way: int, shot: int, avg_cdnv: float) -> float:
    """(k - 1) * (1 + 1/n) * Avg CDNV (Galanti et al. 2022, Prop. 5, leading term)."""
    return (way - 1) * (1 + 1 / shot) * avg_cdnv
