"""ResNet-18, CIFAR variant (He et al. 2016): 3x3 stem without max-pool, stages 64-128-256-512."""

from __future__ import annotations

import torch
from torch import nn

from nclab.models.base import Backbone, conv3x3, norm2d


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), norm2d(norm, cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), norm2d(norm, cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm2d(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet18(Backbone):
    def __init__(self, in_channels: int = 3, width: int = 64, blocks: tuple | list = (2, 2, 2, 2),
                 norm: str = "batch"):
        super().__init__()
        stages = {"stem": nn.Sequential(conv3x3(in_channels, width), norm2d(norm, width), nn.ReLU(inplace=True))}
        c = width
        for i, n in enumerate(blocks):
            w = width * 2 ** i
            layers = [BasicBlock(c if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1, norm)
                      for j in range(n)]
            stages[f"layer{i + 1}"] = nn.Sequential(*layers)
            c = w
        self.stages = nn.ModuleDict(stages)
        self.feature_dim = c
