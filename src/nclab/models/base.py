"""What every backbone provides: named stages, pooled penultimate features, intermediate outputs."""

from __future__ import annotations

import torch
from torch import nn

from nclab.errors import NclabError


class Backbone(nn.Module):
    """A feature extractor made of named stages followed by global average pooling.

    Subclasses fill ``self.stages`` (an ``nn.ModuleDict`` in forward order) and set
    ``self.feature_dim``. ``forward(x)`` returns the pooled penultimate features (B x d);
    ``intermediate(x)`` returns every stage's output, the per-layer probes' input.
    """

    feature_dim: int
    stages: nn.ModuleDict

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=(2, 3)) if h.dim() == 4 else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages.values():
            x = stage(x)
        return self.pool(x)

    @property
    def layer_names(self) -> list[str]:
        return list(self.stages.keys())

    def intermediate(self, x: torch.Tensor, layers: list[str] | None = None,
                     pooled: bool = False) -> dict[str, torch.Tensor]:
        """Outputs of the named stages (all by default); ``pooled`` averages spatial maps."""
        want = set(self.layer_names if layers is None else layers)
        unknown = want - set(self.layer_names)
        if unknown:
            raise NclabError(f"unknown layers {sorted(unknown)}; valid: {self.layer_names}")
        out = {}
        for name, stage in self.stages.items():
            x = stage(x)
            if name in want:
                out[name] = self.pool(x) if pooled else x
            if len(out) == len(want):
                break
        return out


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def norm2d(kind: str, channels: int) -> nn.Module:
    """``batch`` (default), ``group`` (32 groups or fewer) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise NclabError(f"norm must be batch, group or none, got {kind!r}")
