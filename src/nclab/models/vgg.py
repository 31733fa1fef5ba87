"""VGG (Simonyan & Zisserman 2015), the CIFAR variant with batch norm: conv3x3-BN-ReLU layers in
five stages, each ending with a 2x2 max-pool, and no fully connected layers before the head
(the 512-d globally pooled map is the embedding). Munn et al. 2024 use VGG-13 on CIFAR-10.

Channels per stage 64-128-256-512-512 (times ``width / 64``); layers per stage by depth:
11: 1-1-2-2-2, 13: 2-2-2-2-2, 16: 2-2-3-3-3, 19: 2-2-4-4-4. A stage whose input is already
1 px wide skips its pool (small images, e.g. 28 px glyphs, keep a 1x1 map).
"""

from __future__ import annotations

from torch import nn

from nclab.errors import NclabError
from nclab.models.base import Backbone, norm2d

LAYERS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
CHANNELS = (64, 128, 256, 512, 512)


class VGG(Backbone):
    def __init__(self, in_channels: int = 3, depth: int = 13, width: int = 64, norm: str = "batch",
                 image_size: int = 32):
        super().__init__()
        if depth not in LAYERS:
            raise NclabError(f"vgg depth={depth}: expected one of {', '.join(map(str, LAYERS))}")
        stages, c, size = {}, in_channels, image_size
        for i, (n, base) in enumerate(zip(LAYERS[depth], CHANNELS)):
            w = max(1, base * width // 64)
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=(norm == "none")), norm2d(norm, w), nn.ReLU(inplace=True)]
                c = w
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            stages[f"stage{i + 1}"] = nn.Sequential(*layers)
        self.stages = nn.ModuleDict(stages)
        self.feature_dim = c
