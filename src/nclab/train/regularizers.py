"""Loss regularisers switched on from the config: ``train.regularizers=[{gc: {alpha: 1e-6, probes: 1}}]``.

A regulariser is built by a factory registered under its name, called with the options of
its config entry, and then called once per training step as

    term = reg(model, x, features, logits, labels)      # a scalar tensor added to the loss

where ``x`` is the (augmented) input batch, ``features`` the penultimate embedding,
``logits`` the classifier output and ``labels`` the class ids of that batch. The loop logs each term's epoch mean as
``reg_<name>`` in metrics.jsonl. Optional hooks: ``aux_head(feature_dim)`` (a head the regulariser
trains, saved with the weights), ``validate(data)`` (checks against the prepared data before a run
writes anything) and ``bind(preprocess, class_names)`` (called once when training starts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from nclab.errors import NclabError, unknown_name
from nclab.metrics.gc import DISTRIBUTIONS, draw_probes, embedding_of, eval_mode


class Regularizer(Protocol):
    name: str

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, features: torch.Tensor,
                 logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor: ...


REGULARIZERS: dict[str, Callable[..., Regularizer]] = {}


def register_regularizer(name: str):
    def deco(factory):
        REGULARIZERS[name] = factory
        return factory
    return deco


def attach_aux_heads(model: nn.Module, regs: list[Regularizer]) -> None:
    """Give ``model.aux[name]`` the head of every regulariser that trains one (``aux_head``)."""
    for reg in regs:
        if hasattr(reg, "aux_head"):
            model.aux[reg.name] = reg.aux_head(model.feature_dim)


def build_regularizers(entries: list) -> list[Regularizer]:
    """``[{name: {option: value}}, ...]`` -> regulariser objects (errors name the entry)."""
    regs = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and len(entry) == 1):
            raise NclabError(f"train.regularizers[{i}]: expected {{name: {{options}}}}, got {entry!r}")
        (name, opts), = entry.items()
        if name not in REGULARIZERS:
            raise unknown_name(f"regularizer (train.regularizers[{i}])", name, REGULARIZERS)
        try:
            regs.append(REGULARIZERS[name](**(opts or {})))
        except (TypeError, ValueError) as e:
            raise NclabError(f"train.regularizers[{i}].{name}: {e}") from None
    return regs


@register_regularizer("gc")
class GCRegularizer:
    """Loss term alpha * GC(embedding, batch) from ``probes`` random projections per sample
    (Munn et al. 2024, explicit GC regularisation), differentiable by double back-propagation.

    The embedding of the batch is recomputed in eval mode (as when measuring: per-sample
    Jacobians, no running-statistics update, no dropout); the parameters still get the
    gradient of the estimate. Probes come from torch's default (CPU) generator, so the
    training loop's seeding makes them reproducible. ``sub_batch`` uses only
    the first that many samples of the batch.
    """

    name = "gc"

    def __init__(self, alpha: float, probes: int = 1, distribution: str = "gaussian",
                 output: str = "features", sub_batch: int | None = None):
        if distribution not in DISTRIBUTIONS:
            raise NclabError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
        if output not in ("features", "logits"):
            raise NclabError(f"output must be features or logits, got {output!r}")
        if int(probes) != probes or probes < 1:
            raise NclabError(f"probes must be a positive integer, got {probes!r}")
        if sub_batch is not None and sub_batch < 1:
            raise NclabError(f"sub_batch must be a positive integer, got {sub_batch!r}")
        self.alpha = float(alpha)
        self.probes = int(probes)
        self.distribution = distribution
        self.output = output
        self.sub_batch = sub_batch

    def __repr__(self) -> str:
        return (f"GCRegularizer(alpha={self.alpha}, probes={self.probes}, distribution={self.distribution!r}, "
                f"output={self.output!r}, sub_batch={self.sub_batch})")

    def estimate(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The differentiable k-probe estimate of GC(embedding, x) (without alpha)."""
        xb = (x if self.sub_batch is None else x[:self.sub_batch]).detach().requires_grad_(True)
        f = embedding_of(model, self.output)
        with eval_mode(model), torch.enable_grad():
            y = f(xb).flatten(1)
            B, D = y.shape
            P = draw_probes(B, self.probes, D, self.distribution, dtype=y.dtype, generator=None)
            total = y.new_zeros(())
            for k in range(self.probes):
                g, = torch.autograd.grad(y, xb, P[:, k].to(y.device), create_graph=True, retain_graph=True)
                total = total + g.pow(2).sum()
        return total / (B * self.probes)

    def __call__(self, model: nn.Module, x: torch.Tensor, features: torch.Tensor | None = None,
                 logits: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.alpha == 0:
            return torch.zeros((), device=x.device)
        return self.alpha * self.estimate(model, x)


def batch_cdnv(features: torch.Tensor, labels: torch.Tensor, min_per_class: int = 2, eps: float = 1e-8) -> torch.Tensor:
    """Differentiable CDNV of one batch (Galanti et al. 2022, eq. CDNV, plug-in form):

        V(i, j) = (var_i + var_j) / (2 ||mu_i - mu_j||^2 + eps),   var_c = (1/n_c) sum_{y=c} ||h - mu_c||^2,

    averaged over the unordered pairs i < j of the classes with at least ``min_per_class``
    samples in the batch (mu_c, n_c: their batch means and counts). A class seen once has var 0 by
    construction, not as an estimate, so it is left out. ``eps`` keeps coinciding means finite.
    Zero (with a gradient of zeros) when fewer than two classes qualify.
    """
    h = features.flatten(1)
    h = h.to(torch.promote_types(h.dtype, torch.float32))      # low-precision activations: ratio in >= fp32
    classes, inv, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    mu = torch.zeros(len(classes), h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, inv, h)
    mu = mu / counts[:, None].to(h.dtype)
    sq = torch.zeros(len(classes), dtype=h.dtype, device=h.device).index_add_(0, inv, (h - mu[inv]).pow(2).sum(1))
    var = sq / counts.to(h.dtype)
    keep = counts >= min_per_class
    mu, var = mu[keep], var[keep]
    if len(mu) < 2:
        return h.sum() * 0
    i, j = torch.triu_indices(len(mu), len(mu), 1, device=h.device)
    d2 = (mu[i] - mu[j]).pow(2).sum(1)
    return ((var[i] + var[j]) / (2 * d2 + eps)).mean()


class _BatchLabelTerm:
    """A regulariser strength * term(features, labels) of the batch's embedding and labels;
    subclasses set ``name`` and ``strength`` and define ``term``."""

    name: str
    strength: float

    def __call__(self, model: nn.Module, x: torch.Tensor, features: torch.Tensor, logits: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            raise NclabError(f"the {self.name} regulariser needs the batch labels")
        if self.strength == 0:
            return torch.zeros((), device=features.device)
        return self.strength * self.term(features, labels)


@register_regularizer("cdnv")
class CDNVRegularizer(_BatchLabelTerm):
    """Loss term strength * batch CDNV of the penultimate embedding (:func:`batch_cdnv`): an
    explicit push towards collapse (within-class variance small against the distances of the
    class means), the seed talk's open question ("does enforcing collapse help transfer?").

    Computed on each process's own batch (under DDP, on the per-rank batch); only classes with at
    least ``min_per_class`` samples in the batch enter, so the batch should hold several samples of
    some classes (batch size against the number of source classes).
    """

    name = "cdnv"

    def __init__(self, strength: float, min_per_class: int = 2, eps: float = 1e-8):
        if not (isinstance(strength, (int, float)) and strength >= 0):
            raise NclabError(f"strength must be a number >= 0, got {strength!r}")
        if int(min_per_class) != min_per_class or min_per_class < 2:
            raise NclabError(f"min_per_class must be an integer >= 2 (one sample has no variance), got {min_per_class!r}")
        if not eps > 0:
            raise NclabError(f"eps must be > 0, got {eps!r}")
        self.strength = float(strength)
        self.min_per_class = int(min_per_class)
        self.eps = float(eps)

    def __repr__(self) -> str:
        return f"CDNVRegularizer(strength={self.strength}, min_per_class={self.min_per_class}, eps={self.eps})"

    def term(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return batch_cdnv(features, labels, self.min_per_class, self.eps)


def batch_proto_loss(features: torch.Tensor, labels: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """Prototypical (nearest class mean) cross-entropy of one batch, on the features the few-shot
    NCC head sees (centred, here on the batch mean, then L2-normalised: z_i = CL2N(h_i)):

        logit_ic = -scale ||z_i - p_c||^2,   p_c = mean of the z_j with y_j = c, j != i,
        loss = mean over i of CE(logit_i, y_i),

    i.e. every sample is the query of an episode whose supports are the rest of the batch
    (leave-one-out prototypes for its own class, as in Snell et al. 2017 with the batch as the
    episode). Samples of classes seen once have no prototype of their own and are not queries
    (they still shape the other classes' prototype set); zero when none qualifies.
    """
    h = features.flatten(1)
    h = h.to(torch.promote_types(h.dtype, torch.float32))
    h = h - h.mean(0, keepdim=True)
    z = h / torch.linalg.vector_norm(h, dim=1, keepdim=True).clamp_min(1e-12)
    classes, inv, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(classes), z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, inv, z)
    protos = sums / counts[:, None].to(z.dtype)
    query = counts[inv] >= 2
    if not bool(query.any()):
        return h.sum() * 0
    zq, cq = z[query], inv[query]
    d2 = 1 - 2 * zq @ protos.T + protos.pow(2).sum(1)        # ||z - p||^2 to the full class means (||z|| = 1) ...
    own = (sums[cq] - zq) / (counts[cq] - 1)[:, None].to(z.dtype)
    d2 = d2.scatter(1, cq[:, None], (zq - own).pow(2).sum(1, keepdim=True))   # ... but its own class without it
    return torch.nn.functional.cross_entropy(-scale * d2, cq)


@register_regularizer("proto")
class ProtoRegularizer(_BatchLabelTerm):
    """Loss term strength * :func:`batch_proto_loss`: trains the embedding for the nearest-class-
    mean decision it is evaluated with (the episodic objective of Prototypical Networks and
    Meta-Baseline, with the batch as the episode) next to the classifier's cross-entropy. Needs
    several samples per class in each batch: use class-balanced batches (``train.batch_per_class``).
    """

    name = "proto"

    def __init__(self, strength: float, scale: float = 10.0):
        if not (isinstance(strength, (int, float)) and strength >= 0):
            raise NclabError(f"strength must be a number >= 0, got {strength!r}")
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise NclabError(f"scale must be a number > 0, got {scale!r}")
        self.strength, self.scale = float(strength), float(scale)

    def __repr__(self) -> str:
        return f"ProtoRegularizer(strength={self.strength}, scale={self.scale})"

    def term(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return batch_proto_loss(features, labels, self.scale)


def rotate_quarters(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Each image ``x[i]`` (N, C, H, H) turned by ``k[i]`` quarter turns (counter-clockwise, as
    :func:`torch.rot90` over the spatial dims); keeps ``x``'s memory format."""
    if x.shape[-1] != x.shape[-2]:
        raise NclabError(f"rotation needs square images, got {x.shape[-2]} x {x.shape[-1]}")
    out = x.clone()
    for q in range(1, 4):
        idx = (k == q).nonzero().flatten()
        if len(idx):
            out[idx] = torch.rot90(x[idx], q, dims=(-2, -1))
    return out


@register_regularizer("rotation")
class RotationRegularizer:
    """Self-supervised rotation prediction next to the classifier (Gidaris et al. 2019,
    "Boosting few-shot visual learning with self-supervision"): a linear head on the embedding,
    ``model.aux["rotation"]``, predicts by how many quarter turns an image was rotated, and

        term = strength * CE(head([f(x_i) for i < m] + [f(rot_{k_i}(x_i)) for i < m]), [0] * m + k),

    with m = round(fraction * batch) and k_i drawn uniformly from {1, 2, 3} (torch's default CPU
    generator, seeded and checkpointed by the loop, so a resumed run draws the same turns; under
    DDP each rank draws its own, so 1 and 2 processes rotate different images). The
    upright features are the batch's own, so the extra cost is one forward and backward of m
    images (fraction 0.5: about 1.5x a plain step). The rotated pass runs in train mode (batch
    statistics of the rotated images; running statistics updated).
    """

    name = "rotation"

    def __init__(self, strength: float, fraction: float = 0.5):
        if not (isinstance(strength, (int, float)) and strength >= 0):
            raise NclabError(f"strength must be a number >= 0, got {strength!r}")
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise NclabError(f"fraction must be a number in (0, 1], got {fraction!r}")
        self.strength, self.fraction = float(strength), float(fraction)

    def __repr__(self) -> str:
        return f"RotationRegularizer(strength={self.strength}, fraction={self.fraction})"

    @staticmethod
    def aux_head(feature_dim: int) -> nn.Module:
        return nn.Linear(feature_dim, 4)

    def __call__(self, model: nn.Module, x: torch.Tensor, features: torch.Tensor, logits: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.strength == 0:
            return torch.zeros((), device=x.device)
        m = max(1, round(self.fraction * len(x)))
        k = torch.randint(1, 4, (m,)).to(x.device)
        turned = rotate_quarters(x[:m].detach(), k)
        h = torch.cat([features[:m].flatten(1), model.features(turned).flatten(1)])
        target = torch.cat([torch.zeros_like(k), k])
        z = model.aux[self.name](h)
        return self.strength * nn.functional.cross_entropy(z.to(torch.promote_types(z.dtype, torch.float32)), target)


@register_regularizer("distill")
class DistillRegularizer:
    """Knowledge distillation from a finished run, the teacher (Hinton et al. 2015; the
    "born-again" generations of RFS, Tian et al. 2020: 64.82 / 82.14 against 62.02 / 79.64 on
mini-ImageNet 5-way 1- / 5-shot):

        term = strength * T^2 * KL(softmax(t / T) || softmax(s / T)),   mean over the batch,

    with s the student's logits and t the teacher's on the same augmented batch (the teacher in
    eval mode, frozen, no gradient). ``strength = 1`` weighs it like the cross-entropy (RFS uses
    0.5 and 0.5 for both, i.e. this at half the learning rate); ``T = 4`` as RFS.

    ``teacher``: the run directory (relative to the working directory, so an absolute path
    survives a resume from elsewhere) of a finished run trained on the same source classes in
    the same order (its data.json ``splits.train.class_names``), at the same image size and
    channels; its final weights (model.safetensors, safetensors only). Its backbone may differ
    from the student's. The batch, normalised with the student's preprocessing, is re-normalised
    exactly for the teacher's (an affine map per channel). The teacher is loaded at the start of
    training (:meth:`bind`), not when the student is loaded for evaluation, and is not part of
    the student's weights or checkpoints.
    """

    name = "distill"

    def __init__(self, teacher: str, strength: float = 1.0, temperature: float = 4.0):
        if not (isinstance(teacher, str) and teacher):
            raise NclabError(f"teacher must be the path of a finished run directory, got {teacher!r}")
        if not (isinstance(strength, (int, float)) and strength >= 0):
            raise NclabError(f"strength must be a number >= 0, got {strength!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise NclabError(f"temperature must be a number > 0, got {temperature!r}")
        self.teacher, self.strength, self.temperature = teacher, float(strength), float(temperature)
        self._net: nn.Module | None = None
        self._scale = self._shift = self._placed = None

    def __repr__(self) -> str:
        return f"DistillRegularizer(teacher={self.teacher!r}, strength={self.strength}, temperature={self.temperature})"

    @property
    def _where(self) -> str:
        return f"train.regularizers distill.teacher={self.teacher}"

    def _open(self, class_names: list[str], size: int, channels: int):
        """The teacher's RunDir, checked against the student's source classes and image size."""
        from nclab.train.rundir import RunDir
        where = self._where
        try:
            run = RunDir.open(self.teacher)
            theirs = run.data_info()["splits"]["train"]["class_names"]
            pre = run.preprocess()
        except NclabError as e:
            raise NclabError(f"{where}: {e}") from None
        if theirs != list(class_names):
            raise NclabError(f"{where}: the teacher was trained on other source classes ({len(theirs)} classes, "
                             f"first {theirs[:2]}) than this run ({len(class_names)}, first {list(class_names)[:2]}); "
                             f"expected the same classes in the same order")
        if (pre.image_size, pre.channels) != (size, channels):
            raise NclabError(f"{where}: the teacher sees {pre.channels} x {pre.image_size} px images, this run "
                             f"{channels} x {size} px; expected the same")
        if not run.weights_path.is_file():
            raise NclabError(f"{where}: {run.weights_path} is missing (the teacher has not finished training)")
        return run, pre

    def validate(self, data) -> None:
        """Refuse a missing or unfit teacher before anything is written (``data``: the student's
        :class:`~nclab.data.prepare.PreparedData`)."""
        self._open(data.splits["train"].class_names, data.image_shape[0], data.channels)

    def bind(self, preprocess, class_names: list[str]) -> None:
        """Load the teacher for a student normalising its images with ``preprocess``."""
        from nclab.train.checkpoint import load_weights
        from nclab.train.loop import build_model
        run, pre = self._open(class_names, preprocess.image_size, preprocess.channels)
        try:
            net = build_model(run.config(), pre, len(class_names))
        except NclabError as e:
            raise NclabError(f"{self._where}: {e}") from None
        load_weights(run.weights_path, net)
        self.set_teacher(net, pre, preprocess)

    def set_teacher(self, net: nn.Module, teacher_preprocess=None, student_preprocess=None) -> None:
        """Use ``net`` (frozen, in eval mode) as the teacher; with both preprocessings, the
        student's normalised batch is mapped to the teacher's normalisation first."""
        self._net, self._placed = net.eval().requires_grad_(False), None
        self._scale = self._shift = None
        if teacher_preprocess is None or student_preprocess is None:
            return
        # x_student = (u - m_s) / s_s  ->  x_teacher = (u - m_t) / s_t = x_student * s_s / s_t + (m_s - m_t) / s_t
        c = student_preprocess.channels
        ms, ss, mt, st = (torch.tensor(v, dtype=torch.float64).expand(c) for v in (
            student_preprocess.mean, student_preprocess.std, teacher_preprocess.mean, teacher_preprocess.std))
        if not (torch.equal(ms, mt) and torch.equal(ss, st)):
            self._scale, self._shift = (ss / st).view(1, c, 1, 1), ((ms - mt) / st).view(1, c, 1, 1)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for the student's (normalised) batch ``x``."""
        if self._net is None:
            raise NclabError("the distill regulariser has no teacher (call bind(preprocess, class_names) or set_teacher)")
        if self._placed != (x.device, x.dtype):
            fmt = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
                else torch.contiguous_format
            self._net.to(device=x.device, dtype=x.dtype, memory_format=fmt)
            if self._scale is not None:
                self._scale, self._shift = self._scale.to(x.device, x.dtype), self._shift.to(x.device, x.dtype)
            self._placed = (x.device, x.dtype)
        x = x.detach()
        if self._scale is not None:
            x = x * self._scale + self._shift
        return self._net(x)

    def __call__(self, model: nn.Module, x: torch.Tensor, features: torch.Tensor | None = None,
                 logits: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.strength == 0:
            return torch.zeros((), device=x.device)
        T = self.temperature
        dt = torch.promote_types(logits.dtype, torch.float32)
        s = nn.functional.log_softmax(logits.to(dt) / T, dim=1)
        t = nn.functional.log_softmax(self.teacher_logits(x).to(dt) / T, dim=1)
        return self.strength * T * T * nn.functional.kl_div(s, t, log_target=True, reduction="batchmean")
