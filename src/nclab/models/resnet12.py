"""ResNet-12 as in RFS (Tian et al. 2020; Lee et al. 2019): 64-160-320-640 channels, 4 residual
blocks of three conv3x3-BN-LeakyReLU(0.1) layers with a 1x1 shortcut and a 2x2 max-pool each;
optional dropout after each block, or (``dropblock_size``) DropBlock after the last two, as RFS."""

from __future__ import annotations

import torch
from torch import nn

from nclab.errors import NclabError
from nclab.models.base import Backbone, conv3x3, norm2d


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al. 2018): zero ``size`` x ``size`` blocks of each feature map, block
    centres drawn with rate gamma = (1 - keep) / size^2 * f^2 / (f - size + 1)^2 (f the map size),
    then rescale by (#units / #kept). As RFS, keep = max(1 - rate t / ramp, 1 - rate) after t
    training steps (the ``steps`` buffer, saved with the weights so that a resumed run continues
    the ramp)."""

    def __init__(self, rate: float, size: int, ramp: int = 40000):
        super().__init__()
        self.rate, self.size, self.ramp = rate, size, ramp
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate <= 0:
            return x
        self.steps += 1
        keep = max(1.0 - self.rate * float(self.steps) / self.ramp, 1.0 - self.rate)
        B, C, H, W = x.shape
        s = min(self.size, H, W)
        gamma = (1 - keep) / s ** 2 * H * W / ((H - s + 1) * (W - s + 1))
        centres = torch.rand(B, C, H - s + 1, W - s + 1, device=x.device) < gamma
        # a block starting at each centre c covers c..c+s-1: unit p is dropped if a centre lies in p-s+1..p
        mask = 1 - nn.functional.max_pool2d(nn.functional.pad(centres.to(x.dtype), (s - 1,) * 4), s, stride=1)
        return x * mask * (mask.numel() / mask.float().sum().clamp_min(1))   # float sum: exact in bf16 too


class Block12(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str, drop_rate: float, dropblock_size: int = 0, slope: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(cin, cout), norm2d(norm, cout), nn.LeakyReLU(slope),
            conv3x3(cout, cout), norm2d(norm, cout), nn.LeakyReLU(slope),
            conv3x3(cout, cout), norm2d(norm, cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), norm2d(norm, cout))
        self.act = nn.LeakyReLU(slope)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)    # ceil: 28 -> 14 -> 7 -> 4 -> 2
        if dropblock_size and drop_rate > 0:
            self.drop = DropBlock(drop_rate, dropblock_size)
        else:
            self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.pool(self.act(self.body(x) + self.shortcut(x))))


class ResNet12(Backbone):
    def __init__(self, in_channels: int = 3, channels: tuple | list = (64, 160, 320, 640),
                 norm: str = "batch", drop_rate: float = 0.0, dropblock_size: int = 0):
        super().__init__()
        if not 0 <= drop_rate < 1 or dropblock_size < 0:
            raise NclabError(f"drop_rate must be in [0, 1) and dropblock_size >= 0, got {drop_rate}, {dropblock_size}")
        stages, c = {}, in_channels
        for i, w in enumerate(channels):
            # RFS: dropout after the first two blocks, DropBlock after the last two
            stages[f"layer{i + 1}"] = Block12(c, w, norm, drop_rate, dropblock_size if i >= len(channels) - 2 else 0)
            c = w
        self.stages = nn.ModuleDict(stages)
        self.feature_dim = c
