"""Backbone + head: the network g o f that is pre-trained on the source classes."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """``features(x)`` = f(x) (penultimate, pooled); ``forward(x)`` = g(f(x)) (logits).

    ``aux`` holds the heads of auxiliary training objectives on f (e.g. the rotation
    regulariser's); empty, it adds nothing to the weights."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux = nn.ModuleDict()

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits, or ``(features, logits)`` with ``return_features`` (one pass; goes through
        ``forward`` so that DDP / Fabric wrappers see it)."""
        h = self.backbone(x)
        z = self.head(h)
        return (h, z) if return_features else z

    def intermediate(self, x: torch.Tensor, layers: list[str] | None = None,
                     pooled: bool = False) -> dict[str, torch.Tensor]:
        return self.backbone.intermediate(x, layers, pooled)
