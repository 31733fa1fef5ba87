"""Geometric complexity of an embedding, its per-class form, geometric collapse, and the GC regulariser.

Munn, Dherin, Gonzalvo (NeurIPS 2024), eq. GC (a discrete Dirichlet energy):

    GC(f, D) = (1/|D|) sum_{x in D} ||d f(x) / d x||_F^2

Exact: every output direction e_k gives one row of J = df/dx by a vector-Jacobian product
(``||J||_F^2 = sum_k ||J^T e_k||^2``). Estimated: for random v with E[v v^T] = I,
``||J||_F^2 = E ||J^T v||^2``, one vector-Jacobian product per probe and sample. Both are
batched over samples: ``f`` maps a batch (B, ...) to (B, ...) and row i of the output must
depend on row i of the input only, which is why modules are put in eval mode while measuring
(train-mode batch-norm couples the samples of a batch; dropout would make f random).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from nclab.data.loader import seed_int
from nclab.errors import NclabError, check_finite
from nclab.metrics.collapse import cdnv
from nclab.metrics.stats import class_moments

DISTRIBUTIONS = ("gaussian", "rademacher", "sphere")
PROBE_BLOCK = 1024      # probes are drawn per block of this many samples: results do not depend on chunking


# --- the measurement ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GCResult:
    """GC and its standard error; unpacks and indexes as ``(value, se)``.

    ``se`` is the Monte-Carlo standard error of the probe estimate given the samples (0 when
    exact). With two or more probes it comes from the spread of the probes of each sample;
    with one probe from the spread across samples, which is conservative (it also counts the
    sample-to-sample variation of ||J||_F^2).
    """

    value: float
    se: float
    exact: bool
    probes: int | None
    n_samples: int
    out_dim: int
    distribution: str | None = None
    out_dims: int | None = None

    def __iter__(self) -> Iterator[float]:
        return iter((self.value, self.se))

    def __getitem__(self, i: int) -> float:
        return (self.value, self.se)[i]

    def __len__(self) -> int:
        return 2

    def to_dict(self) -> dict:
        return {"gc": self.value, "gc_se": self.se, "exact": self.exact, "probes": self.probes,
                "n_samples": self.n_samples, "out_dim": self.out_dim,
                "distribution": self.distribution, "out_dims": self.out_dims}


@dataclass
class PerSampleGC:
    """What one pass over the samples gives: per-sample ||J_i||_F^2 (or its probe mean), the
    per-sample variance of that mean (None when exact or with one probe), and f(x_i)."""

    values: torch.Tensor            # (N,) float64
    mean_var: torch.Tensor | None   # (N,) float64: Var of values[i] over the probes
    outputs: torch.Tensor           # (N, D) detached outputs f(x)
    exact: bool
    probes: int | None
    distribution: str | None
    out_dims: int | None


def _modules_of(f: Callable) -> list[nn.Module]:
    if isinstance(f, nn.Module):
        return [f]
    owner = getattr(f, "__self__", None)         # a bound method such as model.features
    return [owner] if isinstance(owner, nn.Module) else []


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode inside the block; each one's own flag restored after."""
    flags = [(m, m.training) for top in modules for m in top.modules()]
    try:
        for m, _ in flags:
            m.training = False
        yield
    finally:
        for m, was in flags:
            m.training = was


def _block_generator(seed: int, block: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_int(seed, block))


def draw_probes(n: int, probes: int, dim: int, distribution: str = "gaussian", out_dims: int | None = None,
                generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n, probes, dim)`` random vectors with E[v v^T] = I (on CPU).

    gaussian N(0, I); rademacher +-1; sphere sqrt(dim) * uniform on the unit sphere. With
    ``out_dims = m < dim`` each vector lives on its own random subset of m coordinates and is
    scaled by sqrt(dim / m), so ||J^T v||^2 = (dim / m) ||J_S^T v_S||^2 stays unbiased.
    """
    if distribution not in DISTRIBUTIONS:
        raise NclabError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    m = dim if out_dims is None else int(out_dims)
    if not 1 <= m <= dim:
        raise NclabError(f"out_dims must lie in 1..{dim}, got {out_dims}")
    shape = (n, probes, m)
    if distribution == "gaussian":
        v = torch.randn(shape, generator=generator, dtype=dtype)
    elif distribution == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1
    else:
        g = torch.randn(shape, generator=generator, dtype=dtype)
        v = g * (math.sqrt(m) / g.norm(dim=-1, keepdim=True))
    if m == dim:
        return v
    idx = torch.rand((n, probes, dim), generator=generator).argsort(dim=-1)[..., :m]
    full = torch.zeros((n, probes, dim), dtype=dtype)
    return full.scatter_(-1, idx, v * math.sqrt(dim / m))


class _ProbeSource:
    """Probes of samples [start, stop) drawn block by block, so chunking does not change them."""

    def __init__(self, seed: int, probes: int, dim: int, distribution: str, out_dims: int | None,
                 dtype: torch.dtype, n: int):
        self.args = (seed, probes, dim, distribution, out_dims, dtype, n)
        self._cache: tuple[int, torch.Tensor] | None = None

    def _block(self, b: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != b:
            seed, probes, dim, distribution, out_dims, dtype, n = self.args
            size = min(PROBE_BLOCK, n - b * PROBE_BLOCK)
            self._cache = (b, draw_probes(size, probes, dim, distribution, out_dims,
                                          _block_generator(seed, b), dtype))
        return self._cache[1]

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        parts, i = [], start
        while i < stop:
            b = i // PROBE_BLOCK
            j = min(stop, (b + 1) * PROBE_BLOCK)
            parts.append(self._block(b)[i - b * PROBE_BLOCK:j - b * PROBE_BLOCK])
            i = j
        return torch.cat(parts).transpose(0, 1)           # (probes, B, dim)


def _vjp_sq_norms(y: torch.Tensor, x: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``||J_i^T v_{k,i}||^2`` for directions V (K, B, D): a (K, B) tensor.

    K = 1 is one backward pass; K > 1 vmaps the backward (``is_grads_batched``), which pays
    off on GPUs but was slower than a loop on CPU (measured: benchmarks/bench_gc.py).
    """
    if not y.requires_grad:                              # f does not depend on anything: J = 0
        return torch.zeros(V.shape[:2], dtype=torch.float64, device=V.device)
    if V.shape[0] == 1:
        g, = torch.autograd.grad(y, x, V[0], retain_graph=True, allow_unused=True)
        g = torch.zeros_like(x) if g is None else g
        return g.detach().flatten(1).pow(2).sum(1, dtype=torch.float64)[None]
    g, = torch.autograd.grad(y, x, V, retain_graph=True, is_grads_batched=True, allow_unused=True)
    g = x.new_zeros((len(V),) + x.shape) if g is None else g
    return g.detach().flatten(2).pow(2).sum(2, dtype=torch.float64)


def per_sample_gc(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, probes: int | None = None, *,
                  seed: int = 0, distribution: str = "gaussian", out_dims: int | None = None,
                  sample_chunk: int = 128, out_chunk: int = 1) -> PerSampleGC:
    """||d f(x_i) / d x_i||_F^2 for every sample (exact when ``probes`` is None), plus f(x).

    ``sample_chunk`` samples are embedded at a time and ``out_chunk`` output directions (or
    probes) share one backward pass: together they bound memory. Modules reachable from
    ``f`` (a module, or a bound method of one) are in eval mode meanwhile.
    """
    if not torch.is_floating_point(x):
        raise NclabError(f"x must be a floating-point tensor, got {x.dtype}")
    if probes is not None and (int(probes) != probes or probes < 1):
        raise NclabError(f"probes must be a positive integer or None (exact), got {probes!r}")
    if probes is None and out_dims is not None:
        raise NclabError("out_dims subsamples output dimensions of the estimator; give probes too")
    if not isinstance(seed, int) or seed < 0:
        raise NclabError(f"seed must be an integer >= 0, got {seed!r}")
    if sample_chunk < 1 or out_chunk < 1:
        raise NclabError(f"sample_chunk and out_chunk must be >= 1, got {sample_chunk}, {out_chunk}")
    n = len(x)
    if n == 0:
        raise NclabError("x has no samples")
    check_finite(x.flatten(1), "x")
    values, mean_vars, outputs = [], [], []
    source = None
    with eval_mode(*_modules_of(f)), torch.enable_grad():
        for start in range(0, n, sample_chunk):
            xb = x[start:start + sample_chunk].detach().requires_grad_(True)
            y = f(xb)
            if y.shape[0] != len(xb):
                raise NclabError(f"f must map a batch of {len(xb)} samples to {len(xb)} outputs, got shape "
                                 f"{tuple(y.shape)}")
            y = y.flatten(1)
            check_finite(y.detach(), "f(x) (diverged weights?)", offset=start)
            B, D = y.shape
            if probes is None:
                total = torch.zeros(B, dtype=torch.float64, device=y.device)
                for k0 in range(0, D, out_chunk):
                    k = torch.arange(k0, min(D, k0 + out_chunk), device=y.device)
                    V = torch.zeros((len(k), B, D), dtype=y.dtype, device=y.device)
                    V[torch.arange(len(k), device=y.device), :, k] = 1
                    total += _vjp_sq_norms(y, xb, V).sum(0)
                values.append(total)
            else:
                if source is None:
                    source = _ProbeSource(seed, int(probes), D, distribution, out_dims, y.dtype, n)
                P = source(start, start + B).to(y.device)
                q = torch.cat([_vjp_sq_norms(y, xb, P[k0:k0 + out_chunk]) for k0 in range(0, len(P), out_chunk)])
                values.append(q.mean(0))
                if len(q) > 1:
                    mean_vars.append(q.var(0, correction=1) / len(q))
            outputs.append(y.detach())
    check_finite(torch.cat(values), "per-sample GC (the Jacobian of f overflows)")
    return PerSampleGC(values=torch.cat(values), mean_var=torch.cat(mean_vars) if mean_vars else None,
                       outputs=torch.cat(outputs), exact=probes is None,
                       probes=None if probes is None else int(probes),
                       distribution=None if probes is None else distribution, out_dims=out_dims)


def _summarise(ps: PerSampleGC, values: torch.Tensor, mean_var: torch.Tensor | None) -> GCResult:
    n = len(values)
    if ps.exact:
        se = 0.0
    elif mean_var is not None:
        se = float(mean_var.sum().sqrt()) / n
    else:
        se = float(values.std(correction=1)) / math.sqrt(n) if n > 1 else float("nan")
    return GCResult(value=float(values.mean()), se=se, exact=ps.exact, probes=ps.probes, n_samples=n,
                    out_dim=ps.outputs.shape[1], distribution=ps.distribution, out_dims=ps.out_dims)


def geometric_complexity(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, probes: int | None = None,
                         *, seed: int = 0, distribution: str = "gaussian", out_dims: int | None = None,
                         sample_chunk: int = 128, out_chunk: int = 1) -> GCResult:
    """GC(f, x) = mean_i ||d f(x_i) / d x_i||_F^2 (Munn et al. 2024, eq. GC), with its standard error.

    ``probes=None``: exact, from all output directions. ``probes=k``: unbiased estimate from k
    random projections per sample (``distribution`` gaussian | rademacher | sphere), each on
    ``out_dims`` random output coordinates when given; seeded, so the same ``seed`` gives the
    same number whatever the chunking. ``f`` is any callable (e.g. ``model.features``) mapping
    a batch to a batch. Returns a :class:`GCResult`, which also unpacks as ``(value, se)``.
    """
    ps = per_sample_gc(f, x, probes, seed=seed, distribution=distribution, out_dims=out_dims,
                       sample_chunk=sample_chunk, out_chunk=out_chunk)
    return _summarise(ps, ps.values, ps.mean_var)


# --- per class, geometric collapse, CDNV ---------------------------------------------------------

def geometric_collapse(class_gc: torch.Tensor, means: torch.Tensor) -> float:
    """Avg_{i<j} (GC_i + GC_j) / (2 ||mu_i - mu_j||^2): CDNV with the class variances replaced by
    per-class GC (Munn et al. 2024, geometric collapse)."""
    return float(cdnv(torch.as_tensor(class_gc, dtype=torch.float64), torch.as_tensor(means, dtype=torch.float64)))


def cdnv_from_features(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Avg_{i<j} (Var_i + Var_j) / (2 ||mu_i - mu_j||^2), Var_c = mean ||h - mu_c||^2
    (Galanti et al. 2022, eq. CDNV), in float64 from the features of the same samples."""
    mom = class_moments(features.flatten(1), labels, n_classes)
    return float(cdnv(mom.variances, mom.means))


@dataclass
class GCReport:
    """GC of a set of labelled samples, per class, and the geometric collapse beside CDNV."""

    gc: GCResult
    class_gc: list[float]
    class_gc_se: list[float]
    class_counts: list[int]
    geometric_collapse: float
    cdnv: float
    class_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**self.gc.to_dict(), "geometric_collapse": self.geometric_collapse, "cdnv": self.cdnv,
                "class_gc": self.class_gc, "class_gc_se": self.class_gc_se, "class_counts": self.class_counts,
                "class_names": self.class_names}


def gc_report(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor,
              probes: int | None = None, *, n_classes: int | None = None, class_names: list[str] | None = None,
              seed: int = 0, distribution: str = "gaussian", out_dims: int | None = None,
              sample_chunk: int = 128, out_chunk: int = 1) -> GCReport:
    """One pass over labelled samples: GC, per-class GC_c, geometric collapse and CDNV of f(x)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (len(x),):
        raise NclabError(f"labels must be a vector of {len(x)} class ids, got shape {tuple(labels.shape)}")
    if len(labels) == 0:
        raise NclabError("x has no samples")
    C = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    if int(labels.min()) < 0 or int(labels.max()) >= C:
        raise NclabError(f"labels must lie in 0..{C - 1}, got {int(labels.min())}..{int(labels.max())}")
    if C > len(labels):                     # some class is empty (and C may be huge): say so before any work
        raise NclabError(f"every class 0..{C - 1} needs samples, and there are only {len(labels)} samples")
    ps = per_sample_gc(f, x, probes, seed=seed, distribution=distribution, out_dims=out_dims,
                       sample_chunk=sample_chunk, out_chunk=out_chunk)
    labels = labels.to(ps.values.device)
    per_class = [(labels == c).nonzero().flatten() for c in range(C)]
    if any(len(idx) == 0 for idx in per_class):
        raise NclabError(f"every class 0..{C - 1} needs samples; empty: "
                         f"{[c for c, idx in enumerate(per_class) if len(idx) == 0]}")
    parts = [_summarise(ps, ps.values[idx], None if ps.mean_var is None else ps.mean_var[idx])
             for idx in per_class]
    class_gc = torch.tensor([p.value for p in parts], dtype=torch.float64)
    mom = class_moments(ps.outputs.flatten(1), labels, C)
    return GCReport(gc=_summarise(ps, ps.values, ps.mean_var), class_gc=class_gc.tolist(),
                    class_gc_se=[p.se for p in parts], class_counts=[len(i) for i in per_class],
                    geometric_collapse=geometric_collapse(class_gc, mom.means),
                    cdnv=float(cdnv(mom.variances, mom.means)), class_names=list(class_names or []))


# --- the embedding whose GC is measured ------------------------------------------------------------

def embedding_of(model: nn.Module, output: str = "features") -> Callable[[torch.Tensor], torch.Tensor]:
    """The map whose GC is measured: ``model.features`` (the penultimate embedding) or the logits."""
    if output == "features":
        if not hasattr(model, "features"):
            raise NclabError(f"{type(model).__name__} has no .features(x); use output='logits' or pass a callable")
        return model.features
    if output == "logits":
        return model
    raise NclabError(f"output must be 'features' or 'logits', got {output!r}")


__all__ = ["DISTRIBUTIONS", "GCReport", "GCResult", "PerSampleGC", "cdnv_from_features",
           "draw_probes", "embedding_of", "eval_mode", "gc_report", "geometric_collapse",
           "geometric_complexity", "per_sample_gc"]
