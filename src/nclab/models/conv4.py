"""Conv-4 (Vinyals et al. 2016; Snell et al. 2017): four conv3x3-BN-ReLU-maxpool blocks.

``depth`` blocks of constant ``width``; the first ``pools`` of them (all by default) end with a 2x2
max-pool, so deeper variants (the per-layer collapse experiments of Galanti et al.'s effective
depth) keep a spatial map after the input has been pooled down.
"""

from __future__ import annotations

from torch import nn

from nclab.errors import NclabError
from nclab.models.base import Backbone, norm2d


class Conv4(Backbone):
    def __init__(self, in_channels: int = 1, width: int = 64, depth: int = 4, norm: str = "batch",
                 pools: int | None = None, image_size: int = 28):
        super().__init__()
        pools = depth if pools is None else pools
        if not 0 <= pools <= depth:
            raise NclabError(f"conv4 pools={pools}: expected 0..depth ({depth})")
        if image_size >> pools < 1:
            raise NclabError(f"conv4: {pools} max-pools shrink {image_size} px images to nothing; "
                             f"set model.options.pools <= {image_size.bit_length() - 1}")
        blocks, c = {}, in_channels
        for i in range(depth):
            layers = [nn.Conv2d(c, width, 3, padding=1, bias=(norm == "none")), norm2d(norm, width),
                      nn.ReLU(inplace=True)]
            if i < pools:
                layers.append(nn.MaxPool2d(2, ceil_mode=False))
            blocks[f"block{i + 1}"] = nn.Sequential(*layers)
            c = width
        self.stages = nn.ModuleDict(blocks)
        self.feature_dim = width
