"""Feature transforms applied before a few-shot head (Wang et al. 2019, SimpleShot: L2N, CL2N).

``"l2"``: x / ||x||; ``"center"``: x - m with m the mean feature of the *base* (source)
classes; ``"center+l2"`` (CL2N): centre, then normalise; ``"none"``.

:func:`power_transform` (sign(x) |x|^beta, elementwise) goes before any of them, on the target
and the base features alike (Hu et al. 2021's power transform, signed for features that can be
negative, e.g. after a LeakyReLU).
"""

from __future__ import annotations

import numbers

import torch

from nclab.errors import NclabError, unknown_name

TRANSFORMS = ("none", "l2", "center", "center+l2")


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||, eps) along the last axis."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


def center(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """x - m, with m the base-class mean feature."""
    return x - mean


def power_transform(x, beta: float) -> torch.Tensor:
    """Signed power normalisation sign(x) |x|^beta, elementwise (Perronnin et al. 2010's power
    normalisation; on non-negative features Hu et al. 2021's power transform with eps = 0). It
    shrinks the large entries relative to the small ones, making features closer to Gaussian per
    class, which nearest-mean heads assume; beta = 1 is the identity. A new tensor, x's dtype."""
    check_power(beta)
    x = torch.as_tensor(x)
    return x.sign() * x.abs().pow(beta)


def check_power(beta) -> None:
    """``beta`` is a finite number in (0, 1]."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 < beta <= 1:
        raise NclabError(f"power transform beta: expected a number in (0, 1] (0.5 in Hu et al. 2021), got {beta!r}")


def base_mean(base_features) -> torch.Tensor:
    """Mean feature of the base (source) classes' samples, in float64: m = (1/N) sum_i h_i."""
    f = torch.as_tensor(base_features)
    return f.to(torch.float64).mean(dim=0)


def check_transform(name: str, mean, dim: int | None = None) -> None:
    """``name`` is a transform; the centring ones have a finite base mean of ``dim`` entries."""
    if name not in TRANSFORMS:
        raise unknown_name("feature transform", name, TRANSFORMS)
    if name.startswith("center"):
        if mean is None:
            raise NclabError(f"feature transform {name!r} needs the base-class mean (pass base_mean or base_features)")
        m = torch.as_tensor(mean)
        if dim is not None and tuple(m.shape) != (dim,):
            raise NclabError(f"base_mean: expected {dim} entries (one per feature), got shape {tuple(m.shape)}")
        if not bool(torch.isfinite(m).all()):
            raise NclabError("base_mean: non-finite values (NaN or inf in the base features?); expected finite numbers")


def apply_transform_(x: torch.Tensor, name: str, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Apply transform ``name`` to ``x`` (..., d) in place and return it (for gathered episode buffers)."""
    if name.startswith("center"):
        x.sub_(mean.to(device=x.device, dtype=x.dtype))
    if name.endswith("l2"):
        x.div_(torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(1e-12))
    return x
