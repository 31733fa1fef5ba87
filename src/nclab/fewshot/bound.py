"""Leading term of Galanti et al.'s few-shot transfer bound from measured CDNV.

Galanti, Gyorgy, Hutter (ICLR 2022), Prop. 5: for k-way n-shot NCC,

    E Err <= (k - 1) * (1 + 1/n) * Avg_{i != j} V(Q_i, Q_j) + ...,
    V(Q_i, Q_j) = (Var(Q_i) + Var(Q_j)) / (2 ||mu_i - mu_j||^2),   Var(Q) = E ||f(x) - mu(Q)||^2.

The m / (m - n) factor and the complexity terms are left out (the "leading term").
Each class's mean and population variance (1/n_c) are computed once from *all* its samples
(the class distribution, not the episode's few shots) by :func:`nclab.metrics.stats.class_moments`,
and V by the one CDNV function :func:`nclab.metrics.cdnv`; an episode's Avg CDNV is the mean of
V over the pairs of its k classes, and the term reported for a setting is the mean over its
episodes (equal to the term of the mean, the term being linear).
"""

from __future__ import annotations

import numpy as np
import torch

from nclab.metrics.collapse import cdnv
from nclab.metrics.stats import class_moments


def class_cdnv_matrix(features, labels) -> torch.Tensor:
    """C x C matrix V_ij of the classes of ``labels`` (0..C-1) on all their samples (diagonal NaN)."""
    y = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).long()
    mom = class_moments(features, y, int(y.max()) + 1)
    return cdnv(mom.variances, mom.means, reduction="none")


def episode_cdnv(V: torch.Tensor, classes) -> torch.Tensor:
    """Avg CDNV over the class pairs of each episode; ``classes`` is E x k class ids, ``V`` the
    matrix of :func:`class_cdnv_matrix` (its diagonal is never read)."""
    c = torch.as_tensor(np.asarray(classes), device=V.device).long()
    k = c.shape[1]
    off = ~torch.eye(k, dtype=torch.bool, device=V.device)
    sub = V[c[:, :, None], c[:, None, :]]                    # E x k x k
    return sub[:, off].sum(1) / (k * (k - 1))


def transfer_bound_term(way: int, shot: int, avg_cdnv: float) -> float:
    """(k - 1) * (1 + 1/n) * Avg CDNV (Galanti et al. 2022, Prop. 5, leading term)."""
    return (way - 1) * (1 + 1 / shot) * avg_cdnv
