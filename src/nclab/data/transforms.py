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
    if shift <= 0 and not flip:
        return x.contiguous()
    off = torch.randint(0, 2 * shift + 1, (2, B), generator=generator) if shift > 0 else torch.zeros(2, B, dtype=torch.long)
    cols = off[1][:, None] + torch.arange(W)                                # B x W, in the padded image
    if flip:
        f = torch.rand(B, generator=generator) < 0.5
        cols = torch.where(f[:, None], cols.flip(1), cols)
    # one gather of the padded images' flat pixels does both (~5x faster than advanced indexing)
    rows = off[0][:, None] + torch.arange(H)
    Wp = W + 2 * max(shift, 0)
    idx = (rows[:, :, None] * Wp + cols[:, None, :]).view(B, 1, H * W).expand(B, C, H * W).to(x.device)
    xp = torch.nn.functional.pad(x, (shift,) * 4) if shift > 0 else x
    return torch.gather(xp.reshape(B, C, -1), 2, idx).view(B, C, H, W)


def crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
               generator: torch.Generator, attempts: int = 10) -> torch.Tensor:
    """Boxes (top, left, h, w) in pixels, float64, of ``n`` random-resized crops (Szegedy et al.
    2015; torchvision's ``RandomResizedCrop`` sampling): area s H W with s ~ U(scale), aspect
    w / h = r with log r ~ U(log ratio), position uniform; the first of ``attempts`` draws that fits
    in the image, else the whole image. Boxes are continuous (not rounded to whole pixels)."""
    s = torch.empty(n, attempts, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
    logr = torch.empty(n, attempts, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                  generator=generator)
    pos = torch.rand(n, attempts, 2, dtype=torch.float64, generator=generator)
    area = s * (height * width)
    w = torch.sqrt(area * torch.exp(logr))
    h = torch.sqrt(area / torch.exp(logr))
    fits = (w <= width) & (h <= height)
    first = torch.where(fits.any(1), fits.double().argmax(1), -1)
    rows = torch.arange(n)
    pick = first.clamp_min(0)
    h, w, pos = h[rows, pick], w[rows, pick], pos[rows, pick]
    none = first < 0
    h[none], w[none] = float(height), float(width)
    return torch.stack([pos[:, 0] * (height - h), pos[:, 1] * (width - w), h, w], dim=1)


def _resize_weights(start: torch.Tensor, length: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """Bilinear interpolation matrices (n x out x size) taking the interval [start, start + length)
    of a ``size``-pixel axis to ``out`` pixels (pixel centres; the interval's edge pixels
    replicated, as when the crop is cut out first); a whole axis gives the identity exactly."""
    u = start[:, None] + (torch.arange(out, dtype=torch.float64) + 0.5) * (length[:, None] / out) - 0.5
    u = torch.minimum(torch.maximum(u, start[:, None]), (start + length - 1)[:, None]).clamp(0, size - 1)
    i0 = u.floor()
    frac = u - i0
    i0 = i0.long()
    i1 = (i0 + 1).clamp_max(size - 1)
    m = torch.zeros(len(start), out, size, dtype=torch.float64)
    m.scatter_add_(2, i0[:, :, None], (1 - frac)[:, :, None])
    m.scatter_add_(2, i1[:, :, None], frac[:, :, None])
    return m


def resized_crops(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box (top, left, h, w) resized to the image size, bilinearly: a separable
    product R_y x R_x^T per image (no antialiasing: boxes are at most the image size)."""
    B, C, H, W = x.shape
    ry = _resize_weights(boxes[:, 0], boxes[:, 2], H, H).to(x.device, x.dtype)
    rx = _resize_weights(boxes[:, 1], boxes[:, 3], W, W).to(x.device, x.dtype)
    return torch.matmul(torch.matmul(ry[:, None], x), rx[:, None].transpose(2, 3))


def affine_params(n: int, rotate: float, shear: float, zoom: tuple[float, float] | None,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image angles (degrees) of rotation ~ U(-rotate, rotate) and of shear ~ U(-shear, shear),
    and zoom factors ~ U(zoom) (1 without ``zoom``): one draw of n x 3 uniforms, float64."""
    u = torch.rand(n, 3, dtype=torch.float64, generator=generator)
    lo, hi = zoom if zoom is not None else (1.0, 1.0)
    return (2 * u[:, 0] - 1) * rotate, (2 * u[:, 1] - 1) * shear, lo + u[:, 2] * (hi - lo)


def affine_warp(x: torch.Tensor, angle: torch.Tensor, shear: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """Each image's content zoomed by ``zoom``, sheared along x by ``shear`` degrees, then rotated by
    ``angle`` degrees (counter-clockwise on screen) about the image centre, in pixel units (also
    for non-square images); bilinear, zero (background) outside. The sampling grid maps each
    output pixel centre back through the inverse map: angle 0, shear 0, zoom 1 give the image."""
    B, C, H, W = x.shape
    a, t = torch.deg2rad(angle), torch.tan(torch.deg2rad(shear))
    cos, sin = torch.cos(a), torch.sin(a)
    # forward map on (x right, y down) pixel offsets from the centre: M = R(-a) Sh(t) k
    # (R(-a) with y down is a counter-clockwise turn on screen)
    M = torch.stack([torch.stack([cos, cos * t + sin], -1), torch.stack([-sin, -sin * t + cos], -1)], -2)
    M = M * zoom[:, None, None]
    inv = torch.linalg.inv(M)
    D = torch.tensor([W / 2, H / 2], dtype=torch.float64)
    theta = torch.zeros(B, 2, 3, dtype=torch.float64)
    theta[:, :, :2] = inv * D[None, None, :] / D[None, :, None]     # normalised coordinates: D^-1 M^-1 D
    grid = torch.nn.functional.affine_grid(theta.to(x.dtype), [B, C, H, W], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros",
                                           align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of RGB (B x 1 x H x W), as torchvision's ``rgb_to_grayscale``; grayscale as is."""
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def adjust_color(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                 saturation: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (B x C x H x W) with per-image factors b, c, s (B-vectors), in this order
    (torchvision's ``adjust_brightness / contrast / saturation``): x <- clamp(b x);
    x <- clamp(c x + (1 - c) mean(gray(x))); x <- clamp(s x + (1 - s) gray(x)), gray the ITU-R
    601 luma. A factor of 1 leaves an image exactly unchanged; saturation leaves gray unchanged."""
    b, c, s = (f.to(x.device, x.dtype).view(-1, 1, 1, 1) for f in (brightness, contrast, saturation))
    x = (x * b).clamp_(0, 1)
    x = (x * c + (1 - c) * _gray(x).mean(dim=(1, 2, 3), keepdim=True)).clamp_(0, 1)
    if x.shape[1] > 1:
        x = (x * s + (1 - s) * _gray(x)).clamp_(0, 1)
    return x


def color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """:func:`adjust_color` with each image's factors drawn from U(1 - strength, 1 + strength)
    (torchvision's ``ColorJitter(strength, strength, strength)``, in a fixed order)."""
    f = torch.empty(3, x.shape[0], dtype=torch.float64).uniform_(1 - strength, 1 + strength, generator=generator)
    return adjust_color(x, f[0], f[1], f[2])


@dataclass(frozen=True)
class Augment:
    """The training augmentation of a run: random-resized crop (``crop_scale`` set), a random
    affine distortion (``rotate`` / ``shear`` degrees, ``zoom`` range; handwriting's classic
    augmentation), random shift by up to ``shift`` pixels, horizontal ``flip``, colour ``jitter``,
    applied in this order to float images in [0, 1]. Random numbers are drawn from one CPU generator in the
    same order, so a batch depends only on the generator's seed."""

    shift: int = 0
    flip: bool = False
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: float = 0.0
    rotate: float = 0.0
    shear: float = 0.0
    zoom: tuple[float, float] | None = None

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.crop_scale is not None:
            boxes = crop_boxes(x.shape[0], x.shape[2], x.shape[3], self.crop_scale, self.crop_ratio, generator)
            x = resized_crops(x, boxes)
        if self.rotate or self.shear or self.zoom is not None:
            x = affine_warp(x, *affine_params(x.shape[0], self.rotate, self.shear, self.zoom, generator))
        x = random_shift_flip(x, self.shift, self.flip, generator)
        if self.jitter > 0:
            x = color_jitter(x, self.jitter, generator)
        return x
