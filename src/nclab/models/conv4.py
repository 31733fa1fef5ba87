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
    """``width``: the channels of every block, or a list of per-block channels (e.g.
    [64, 64, 128, 256]: a wider last block gives wider features at little cost, since it runs at
    the smallest resolution); ``depth``: the number of blocks when ``width`` is one number; the
    first ``pools`` blocks (all by default) end with a 2x2 max-pool."""

    def __init__(self, in_channels: int = 1, width: int | list = 64, depth: int = 4, norm: str = "batch",
                 pools: int | None = None, image_size: int = 28):
        super().__init__()
        widths = [width] * depth if isinstance(width, int) else list(width)
        if not widths or not all(isinstance(w, int) and w > 0 for w in widths):
            raise NclabError(f"width must be a positive integer or a list of them, got {width!r}")
        depth = len(widths)
        pools = depth if pools is None else pools
        if not 0 <= pools <= depth:
            raise NclabError(f"conv4 pools={pools}: expected 0..depth ({depth})")
        if image_size >> pools < 1:
            raise NclabError(f"conv4: {pools} max-pools shrink {image_size} px images to nothing; "
                             f"set model.options.pools <= {image_size.bit_length() - 1}")
        blocks, c = {}, in_channels
        for i, w in enumerate(widths):
            layers = [nn.Conv2d(c, w, 3, padding=1, bias=(norm == "none")), norm2d(norm, w),
                      nn.ReLU(inplace=True)]
            if i < pools:
                layers.append(nn.MaxPool2d(2, ceil_mode=False))
            blocks[f"block{i + 1}"] = nn.Sequential(*layers)
            c = w
        self.stages = nn.ModuleDict(blocks)
        self.feature_dim = c
