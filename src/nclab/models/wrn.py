"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016): pre-activation blocks, widths 16k-32k-64k."""

from __future__ import annotations

import torch
from torch import nn

from nclab.errors import NclabError
from nclab.models.base import Backbone, conv3x3, norm2d


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float, norm: str):
        super().__init__()
        self.bn1, self.conv1 = norm2d(norm, cin), conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = norm2d(norm, cout), conv3x3(cout, cout)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        h = self.conv1(a)
        h = self.conv2(self.drop(torch.relu(self.bn2(h))))
        return h + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(Backbone):
    def __init__(self, in_channels: int = 3, depth: int = 28, widen: int = 4, dropout: float = 0.0,
                 norm: str = "batch"):
        super().__init__()
        if (depth - 4) % 6:
            raise NclabError(f"WRN depth must be 6n+4 (e.g. 16, 22, 28, 40), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        stages = {"stem": conv3x3(in_channels, widths[0])}
        c = widths[0]
        for i, w in enumerate(widths[1:]):
            stages[f"group{i + 1}"] = nn.Sequential(*[
                WideBlock(c if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1, dropout, norm)
                for j in range(n)])
            c = w
        stages["final"] = nn.Sequential(norm2d(norm, c), nn.ReLU(inplace=True))
        self.stages = nn.ModuleDict(stages)
        self.feature_dim = c
