"""ResNet-12 as in RFS (Tian et al. 2020; Lee et al. 2019): 64-160-320-640 channels, 4 residual
blocks of three conv3x3-BN-LeakyReLU(0.1) layers with a 1x1 shortcut and a 2x2 max-pool each."""

from __future__ import annotations

import torch
from torch import nn

from nclab.models.base import Backbone, conv3x3, norm2d


class Block12(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str, drop_rate: float, slope: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(cin, cout), norm2d(norm, cout), nn.LeakyReLU(slope),
            conv3x3(cout, cout), norm2d(norm, cout), nn.LeakyReLU(slope),
            conv3x3(cout, cout), norm2d(norm, cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), norm2d(norm, cout))
        self.act = nn.LeakyReLU(slope)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)    # ceil: 28 -> 14 -> 7 -> 4 -> 2
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.pool(self.act(self.body(x) + self.shortcut(x))))


class ResNet12(Backbone):
    def __init__(self, in_channels: int = 3, channels: tuple | list = (64, 160, 320, 640),
                 norm: str = "batch", drop_rate: float = 0.0):
        super().__init__()
        stages, c = {}, in_channels
        for i, w in enumerate(channels):
            stages[f"layer{i + 1}"] = Block12(c, w, norm, drop_rate)
            c = w
        self.stages = nn.ModuleDict(stages)
        self.feature_dim = c
