"""Turning stored uint8 images into network inputs, and the training augmentation.

The same :class:`Preprocess` is saved in every run directory (``preprocess.json``) and used
by ``nclab features`` and every probe, so features are always computed with exactly the
run's own size, channels, normalisation and ink convention.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields

import numpy as np
import torch

from nclab.errors import NclabError


@dataclass
class Preprocess:
    """uint8 (N,H,W[,C]) with bright ink -> float (N,C,H,W), (x/255 - mean) / std per channel."""

    image_size: int
    channels: int
    mean: list[float]
    std: list[float]
    ink: str = "bright"           # stored images: foreground (ink) bright, background dark

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "preprocess") -> "Preprocess":
        """Rebuild from :meth:`to_dict` (a run's preprocess.json), checking every field."""
        if not isinstance(d, dict):
            raise NclabError(f"{where}: expected a JSON object with {', '.join(f.name for f in fields(cls))}")
        missing = [f.name for f in fields(cls) if f.name not in d and f.default is MISSING]
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if missing or unknown:
            raise NclabError(f"{where}: " + (f"missing key {missing[0]!r}" if missing else f"unknown key {unknown[0]!r}"))
        size, channels, mean, std = d["image_size"], d["channels"], d["mean"], d["std"]

        def whole(v, low):
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        def numbers(v, positive):
            return (isinstance(v, list) and len(v) in (1, channels if whole(channels, 1) else 1) and
                    all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
                        and (a > 0 or not positive) for a in v))
        for key, ok, expected in (("image_size", whole(size, 1), "an integer >= 1"),
                                  ("channels", whole(channels, 1), "an integer >= 1"),
                                  ("mean", numbers(mean, False), "a list of one finite number per channel"),
                                  ("std", numbers(std, True), "a list of one positive number per channel"),
                                  ("ink", isinstance(d.get("ink", "bright"), str), "a string")):
            if not ok:
                raise NclabError(f"{where}: {key}={d[key]!r:.60}: expected {expected}")
        return cls(**d)

    @classmethod
    def fit(cls, images: np.ndarray, chunk: int = 8192) -> "Preprocess":
        """Per-channel mean / std of uint8 images (float64, chunked; population std)."""
        c = 1 if images.ndim == 3 else images.shape[3]
        s = np.zeros(c)
        s2 = np.zeros(c)
        n = 0
        for i in range(0, len(images), chunk):
            a = images[i:i + chunk].reshape(-1, c).astype(np.float64) / 255.0
            s += a.sum(0)
            s2 += (a * a).sum(0)
            n += len(a)
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean ** 2, 1e-12))
        return cls(image_size=int(images.shape[1]), channels=c, mean=mean.tolist(), std=std.tolist())

    def to_chw(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N,H,W) or (N,H,W,C) -> uint8 tensor (N,C,H,W) (no copy for grayscale)."""
        t = torch.as_tensor(images)
        return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Float (N,C,H,W) in [0,1] -> normalised, on x's device and dtype."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def __call__(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images -> normalised float32 network input (N,C,H,W)."""
        return self.normalize(self.to_chw(images).float().div_(255.0))


def random_shift_flip(x: torch.Tensor, shift: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero padding = background, then a random
    crop back to size, as in the standard pad-and-crop) and, if ``flip``, random horizontal flips.

    All random numbers come from ``generator`` on the CPU, so the result depends only on its
    seed, not on the device or on which process computes it.
    """
    B, C, H, W = x.shape
    if shift > 0:
        off = torch.randint(0, 2 * shift + 1, (2, B), generator=generator)
        xp = torch.nn.functional.pad(x, (shift, shift, shift, shift))
        rows = (off[0][:, None] + torch.arange(H)).to(x.device)            # B x H
        cols = (off[1][:, None] + torch.arange(W)).to(x.device)            # B x W
        b = torch.arange(B, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        f = (torch.rand(B, generator=generator) < 0.5).to(x.device)
        x = torch.where(f.view(B, 1, 1, 1), x.flip(3), x)
    return x.contiguous()
