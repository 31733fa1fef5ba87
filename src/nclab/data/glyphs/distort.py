"""Turning a clean master raster into a "hand-drawn" sample: batched random distortions.

Each sample is its (Gaussian-blurred) master raster m warped by a random affine map plus a
smooth elastic displacement, then cut at a random ink level, which sets the stroke width:

    q(p) = A^{-1} (p - t) + e(p),     A = R(theta) [[1, s], [0, 1]] diag(z * a, z / a)
    y(p) = clip((x(p) - tau(p)) / (EDGE * max x) + 1/2, 0, 1),   x(p) = m(q(p)),
    tau(p) = level * max x * (1 + clip(n(p), -1/2, 1/2))

for output position p in [-1, 1]^2 (``grid_sample`` coordinates): rotation theta, shear s,
scale z, aspect a, translation t. The elastic displacement e (in the spirit of Simard et
al. 2003) and the pressure noise n are Catmull-Rom upsampled from 4x4 grids of Gaussian
noise. Cutting a blurred stroke at a lower level gives a thicker stroke (Gaussian blur +
level set, as in signed-distance font rendering), and n makes the width vary along the
stroke like pen pressure. Parameters are drawn with numpy from a per-class generator, the
grid is built elementwise, and the torch ops used are per output pixel, so the result does
not depend on the thread count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MAX_ROTATION = np.deg2rad(15.0)
MAX_SHEAR = 0.25
SCALE = (0.8, 1.05)
MAX_LOG_ASPECT = 0.15
MAX_SHIFT = 0.1                       # in [-1, 1] coordinates: 5 % of the side
NOISE_GRID = 4
ELASTIC_AMPLITUDE = (0.02, 0.05)      # std of the displacement noise, [-1, 1] coordinates
PRESSURE_AMPLITUDE = 0.25             # std of the relative ink-level noise n(p), clipped to +-0.5
LEVEL = (0.18, 0.45)                  # ink level (fraction of the peak): low = thick strokes
EDGE = 0.25                           # width of the antialiased edge, in fractions of the peak


@dataclass
class DistortionParams:
    """Per-sample random parameters (n samples)."""

    angle: np.ndarray          # (n,) radians
    shear: np.ndarray          # (n,)
    scale: np.ndarray          # (n,)
    log_aspect: np.ndarray     # (n,)
    shift: np.ndarray          # (n, 2) x, y
    level: np.ndarray          # (n,)
    noise: np.ndarray          # (n, 3, G, G): elastic x, y (scaled) and pressure (scaled)


def draw_params(rng: np.random.Generator, n: int) -> DistortionParams:
    """Draw the parameters of n samples from ``rng`` (a fixed sequence of draws)."""
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION, n)
    shear = rng.uniform(-MAX_SHEAR, MAX_SHEAR, n)
    scale = rng.uniform(*SCALE, n)
    log_aspect = rng.uniform(-MAX_LOG_ASPECT, MAX_LOG_ASPECT, n)
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, (n, 2))
    level = rng.uniform(*LEVEL, n)
    amp = np.stack([rng.uniform(*ELASTIC_AMPLITUDE, n)] * 2 + [np.full(n, PRESSURE_AMPLITUDE)], axis=1)
    noise = rng.standard_normal((n, 3, NOISE_GRID, NOISE_GRID)) * amp[:, :, None, None]
    return DistortionParams(angle, shear, scale, log_aspect, shift, level, noise)


def concat_params(parts: list[DistortionParams]) -> DistortionParams:
    return DistortionParams(*[np.concatenate([getattr(p, f) for p in parts])
                              for f in DistortionParams.__dataclass_fields__])


def cubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) Catmull-Rom interpolation weights from n_in knots spanning [-1, 1]
    (knots at both ends) to the n_out pixel centres; rows sum to 1."""
    t = ((np.arange(n_out) * 2 + 1) / n_out - 1 + 1) / 2 * (n_in - 1)     # knot coordinate
    d = np.abs(t[:, None] - np.arange(n_in)[None, :])
    w = np.where(d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1,
                 np.where(d < 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0.0))
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_fields(noise: np.ndarray, size: int) -> np.ndarray:
    """(n, k, size, size) fields W g W^T from (n, k, G, G) knot values g (W: :func:`cubic_weights`)."""
    w = cubic_weights(noise.shape[-1], size)                                 # (size, G)
    g = noise.astype(np.float32)
    # Summed term by term rather than by BLAS: the same rounding on any thread count.
    half = sum(w[None, None, :, k, None] * g[:, :, k, None, :] for k in range(g.shape[-1]))
    return sum(half[..., j, None] * w[None, None, None, :, j] for j in range(g.shape[-1]))


def sampling_grid(p: DistortionParams, fields: np.ndarray, size: int) -> torch.Tensor:
    """(n, size, size, 2) source coordinates q(p) for ``grid_sample`` (align_corners=False)."""
    c, s = np.cos(p.angle), np.sin(p.angle)
    zx, zy = p.scale * np.exp(p.log_aspect), p.scale * np.exp(-p.log_aspect)
    # A = R @ Shear @ diag(zx, zy); its inverse in closed form.
    a11, a12 = c * zx, (c * p.shear - s) * zy
    a21, a22 = s * zx, (s * p.shear + c) * zy
    det = a11 * a22 - a12 * a21
    inv = (np.stack([a22, -a12, -a21, a11], axis=1) / det[:, None]).astype(np.float32)
    shift = p.shift.astype(np.float32)
    axis = (np.arange(size, dtype=np.float32) * 2 + 1) / size - 1        # pixel centres in [-1, 1]
    px = axis[None, None, :] - shift[:, 0, None, None]
    py = axis[None, :, None] - shift[:, 1, None, None]
    qx = inv[:, 0, None, None] * px + inv[:, 1, None, None] * py + fields[:, 0]
    qy = inv[:, 2, None, None] * px + inv[:, 3, None, None] * py + fields[:, 1]
    return torch.from_numpy(np.stack([qx, qy], axis=-1))


def distort(masters: torch.Tensor, params: DistortionParams, out_size: int) -> np.ndarray:
    """Samples (n, out_size, out_size) uint8, ink 255, from blurred masters (n, 1, M, M) in [0, 1]."""
    fields = smooth_fields(params.noise, out_size)
    grid = sampling_grid(params, fields, out_size)
    x = F.grid_sample(masters, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    peak = x.amax(dim=(1, 2), keepdim=True)
    tau = torch.from_numpy(params.level.astype(np.float32))[:, None, None] * peak * (1 + torch.from_numpy(fields[:, 2]).clamp(-0.5, 0.5))
    y = torch.clamp((x - tau) / (EDGE * peak) + 0.5, 0.0, 1.0)
    return torch.round(y * 255.0).to(torch.uint8).numpy()
