"""Feature transforms applied before a few-shot head (Wang et al. 2019, SimpleShot: L2N, CL2N).

``"l2"``: x / ||x||; ``"center"``: x - m with m the mean feature of the *base* (source)
classes; ``"center+l2"`` (CL2N): centre, then normalise; ``"none"``.
"""

from __future__ import annotations

import torch

from nclab.errors import NclabError, unknown_name

TRANSFORMS = ("none", "l2", "center", "center+l2")


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||, eps) along the last axis."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


def center(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """x - m, with m the base-class mean feature."""
    return x - mean


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
