"""Classifier heads: a linear layer (with or without bias), a cosine classifier and a fixed
simplex-ETF classifier."""

from __future__ import annotations

import math

import torch
from torch import nn

from nclab.errors import NclabError


def simplex_etf(n_classes: int, dim: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Rows of a simplex equiangular tight frame in R^dim (C x d), unit norm, cos = -1/(C-1).

    W = sqrt(C/(C-1)) Q U^T, with Q (C x (C-1)) an orthonormal basis of the sum-zero subspace and
    U (d x (C-1)) a random orthonormal embedding, so W W^T = C/(C-1) (I - 11^T/C)
    (Papyan et al. 2020; fixed-ETF classifier of Zhu et al. 2021). Needs d >= C-1.
    """
    C = n_classes
    if C < 2:
        raise NclabError("a simplex ETF needs at least 2 classes")
    if dim < C - 1:
        raise NclabError(f"a simplex ETF of {C} classes needs feature dim >= {C - 1}, got {dim}")
    g = torch.Generator().manual_seed(seed)
    centred = torch.eye(C, dtype=torch.float64) - 1.0 / C
    Q, _ = torch.linalg.qr(centred[:, : C - 1])                      # spans the sum-zero subspace
    U, _ = torch.linalg.qr(torch.randn(dim, C - 1, generator=g, dtype=torch.float64))
    return (math.sqrt(C / (C - 1)) * Q @ U.T).to(dtype)


class ETFHead(nn.Module):
    """Logits h -> scale * W h with W a frozen simplex ETF (a buffer, never trained)."""

    def __init__(self, in_features: int, n_classes: int, scale: float = 1.0, seed: int = 0):
        super().__init__()
        self.register_buffer("weight", simplex_etf(n_classes, in_features, seed) * scale)
        self.bias = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight.T.to(h.dtype)


class CosineHead(nn.Module):
    """Logits h -> s cos(w_c, h): a cosine classifier with a learned scale s (initially
    ``scale``), as in Baseline++ (Chen et al. 2019) and Meta-Baseline (Chen et al. 2021). It
    trains features for the cosine geometry that few-shot NCC on L2-normalised features uses."""

    def __init__(self, in_features: int, n_classes: int, scale: float = 10.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))      # nn.Linear's initialisation
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * nn.functional.linear(nn.functional.normalize(h, dim=1),
                                                 nn.functional.normalize(self.weight, dim=1))

    def linear_weight(self) -> torch.Tensor:
        """W with W h = s |h| cos(w_c, h): the same decisions as the logits, as a linear map."""
        return self.scale * nn.functional.normalize(self.weight, dim=1)


def make_head(kind: str, in_features: int, n_classes: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, n_classes, bias=True)
    if kind == "linear_nobias":
        return nn.Linear(in_features, n_classes, bias=False)
    if kind == "cosine":
        return CosineHead(in_features, n_classes)
    if kind == "etf":
        return ETFHead(in_features, n_classes)
    raise KeyError(kind)
