"""Conv-4 (Vinyals et al. 2016; Snell et al. 2017): four conv3x3-BN-ReLU-maxpool blocks."""

from __future__ import annotations

from torch import nn

from nclab.models.base import Backbone, norm2d


class Conv4(Backbone):
    def __init__(self, in_channels: int = 1, width: int = 64, depth: int = 4, norm: str = "batch"):
        super().__init__()
        blocks, c = {}, in_channels
        for i in range(depth):
            blocks[f"block{i + 1}"] = nn.Sequential(
                nn.Conv2d(c, width, 3, padding=1, bias=(norm == "none")), norm2d(norm, width),
                nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=False))
            c = width
        self.stages = nn.ModuleDict(blocks)
        self.feature_dim = width
