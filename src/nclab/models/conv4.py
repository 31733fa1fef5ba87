"""Conv-4 (Vinyals et al. 2016; Snell et al. 2017): four conv3x3-BN-ReLU-maxpool blocks."""

from __future__ import annotations

from torch import nn

from nclab.errors import NclabError
from nclab.models.base import Backbone, norm2d


class Conv4(Backbone):
    """``width``: the channels of every block, or a list of per-block channels (e.g.
    [64, 64, 128, 256]: a wider last block gives wider features at little cost, since it runs at
    the smallest resolution); ``depth``: the number of blocks when ``width`` is one number."""

    def __init__(self, in_channels: int = 1, width: int | list = 64, depth: int = 4, norm: str = "batch"):
        super().__init__()
        widths = [width] * depth if isinstance(width, int) else list(width)
        if not widths or not all(isinstance(w, int) and w > 0 for w in widths):
            raise NclabError(f"width must be a positive integer or a list of them, got {width!r}")
        blocks, c = {}, in_channels
        for i, w in enumerate(widths):
            blocks[f"block{i + 1}"] = nn.Sequential(
                nn.Conv2d(c, w, 3, padding=1, bias=(norm == "none")), norm2d(norm, w),
                nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=False))
            c = w
        self.stages = nn.ModuleDict(blocks)
        self.feature_dim = c
