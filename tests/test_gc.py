"""Geometric complexity: closed forms, unbiasedness, chunking, eval mode, the regulariser."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from nclab.errors import NclabError
from nclab.metrics import gc as gcmod
from nclab.metrics.gc import (DISTRIBUTIONS, GCResult, cdnv_from_features, draw_probes,
                              gc_report, geometric_collapse, geometric_complexity, per_sample_gc)
from nclab.train.regularizers import GCRegularizer, build_regularizers


class SmallConvNet(nn.Module):
    """A Classifier-shaped conv net: ``features`` (pooled, 16-d) and logits; BN and dropout."""

    def __init__(self, act=nn.ReLU, classes: int = 4):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), act(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), act(), nn.Dropout(0.3),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, classes)

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.features(x))


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen, dtype=m.running_mean.dtype) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen, dtype=m.running_var.dtype) + 0.5)


@pytest.fixture
def convnet():
    torch.manual_seed(0)
    model = SmallConvNet().double()
    _randomise_bn(model, torch.Generator().manual_seed(1))
    x = torch.randn(24, 1, 10, 10, dtype=torch.float64)
    return model, x


# --- closed forms ------------------------------------------------------------------------------

def test_linear_map_exact_equals_frobenius_norm():
    torch.manual_seed(0)
    f = nn.Linear(30, 7).double()
    x = torch.randn(50, 30, dtype=torch.float64)
    r = geometric_complexity(f, x)
    truth = float((f.weight.detach() ** 2).sum())
    assert r.exact and r.se == 0 and r.n_samples == 50 and r.out_dim == 7
    assert r.value == pytest.approx(truth, rel=1e-12)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("out_dims", [None, 3])
def test_linear_map_estimator_mean_is_unbiased(distribution, out_dims):
    torch.manual_seed(1)
    A = torch.randn(6, 12, dtype=torch.float64)
    x = torch.randn(16, 12, dtype=torch.float64)
    truth = float((A ** 2).sum())
    ests = np.array([geometric_complexity(lambda z: z @ A.T, x, probes=2, seed=s, distribution=distribution,
                                          out_dims=out_dims).value for s in range(300)])
    se = ests.std(ddof=1) / math.sqrt(len(ests))
    assert abs(ests.mean() - truth) < 3 * se
    assert ests.std() > 0                                       # really random


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_reported_se_matches_closed_form_variance(distribution):
    # For f = A x: Var ||A^T v||^2 = 2 ||A A^T||_F^2 (Gaussian), minus 2 sum_k (A A^T)_kk^2 (Rademacher)
    torch.manual_seed(2)
    A = torch.randn(5, 9, dtype=torch.float64)
    x = torch.randn(400, 9, dtype=torch.float64)
    G = A @ A.T
    var = 2 * float((G ** 2).sum()) - (2 * float((G.diagonal() ** 2).sum()) if distribution == "rademacher" else 0)
    probes = 4
    r = geometric_complexity(lambda z: z @ A.T, x, probes=probes, seed=3, distribution=distribution)
    assert r.se == pytest.approx(math.sqrt(var / (len(x) * probes)), rel=0.15)


def test_elementwise_nonlinearities_closed_form():
    torch.manual_seed(3)
    x = torch.randn(40, 8, dtype=torch.float64)
    # f(x) = sin(x): J = diag(cos x), ||J||_F^2 = sum_j cos^2 x_j
    assert geometric_complexity(torch.sin, x).value == pytest.approx(float((x.cos() ** 2).sum(1).mean()), rel=1e-12)
    # f(x) = tanh(B x): J = diag(1 - tanh^2(B x)) B, ||J||_F^2 = sum_k (1 - tanh^2(b_k . x))^2 ||b_k||^2
    B = torch.randn(5, 8, dtype=torch.float64)
    s = 1 - torch.tanh(x @ B.T) ** 2
    truth = float((s ** 2 * (B ** 2).sum(1)).sum(1).mean())
    assert geometric_complexity(lambda z: torch.tanh(z @ B.T), x).value == pytest.approx(truth, rel=1e-12)


def test_maps_that_ignore_x_have_zero_gc():
    x = torch.randn(6, 4)
    w = nn.Parameter(torch.randn(3))
    for f in (lambda z: torch.ones(len(z), 3), lambda z: w.expand(len(z), 3) * 2):
        for probes, out_chunk in ((None, 1), (None, 2), (2, 1), (2, 2)):
            r = geometric_complexity(f, x, probes=probes, out_chunk=out_chunk)
            assert r.value == 0 and r.out_dim == 3


def test_multidimensional_outputs_are_flattened():
    torch.manual_seed(4)
    A = torch.randn(12, 10, dtype=torch.float64)
    x = torch.randn(7, 10, dtype=torch.float64)
    r = geometric_complexity(lambda z: (z @ A.T).reshape(-1, 3, 4), x)
    assert r.out_dim == 12 and r.value == pytest.approx(float((A ** 2).sum()), rel=1e-12)


# --- estimator on a conv net, chunking, seeding ------------------------------------------------

def test_estimator_unbiased_on_conv_net(convnet):
    model, x = convnet
    exact = geometric_complexity(model.features, x).value
    runs = [geometric_complexity(model.features, x, probes=2, seed=s) for s in range(60)]
    vals = np.array([r.value for r in runs])
    emp_se = vals.std(ddof=1) / math.sqrt(len(vals))
    assert abs(vals.mean() - exact) < 3 * emp_se
    # the reported per-run standard error describes the spread of the runs
    assert np.mean([r.se for r in runs]) == pytest.approx(vals.std(ddof=1), rel=0.35)


def test_chunked_equals_unchunked(convnet, monkeypatch):
    model, x = convnet
    ref_exact = geometric_complexity(model.features, x, sample_chunk=len(x)).value
    ref_est = geometric_complexity(model.features, x, probes=3, seed=7, sample_chunk=len(x))
    monkeypatch.setattr(gcmod, "PROBE_BLOCK", 5)               # chunks straddle probe blocks
    ref_est_small_blocks = geometric_complexity(model.features, x, probes=3, seed=7, sample_chunk=len(x))
    for sample_chunk, out_chunk in itertools.product([1, 7, len(x)], [1, 5]):
        e = geometric_complexity(model.features, x, sample_chunk=sample_chunk, out_chunk=out_chunk)
        assert e.value == pytest.approx(ref_exact, rel=1e-12)
        r = geometric_complexity(model.features, x, probes=3, seed=7, sample_chunk=sample_chunk,
                                 out_chunk=out_chunk)
        assert (r.value, r.se) == pytest.approx((ref_est_small_blocks.value, ref_est_small_blocks.se), rel=1e-12)
    assert ref_est.value != ref_est_small_blocks.value          # the block size is what fixes the stream


def test_same_seed_same_number(convnet):
    model, x = convnet
    a = geometric_complexity(model.features, x, probes=2, seed=11)
    b = geometric_complexity(model.features, x, probes=2, seed=11)
    c = geometric_complexity(model.features, x, probes=2, seed=12)
    assert a == b and a.value != c.value


def test_result_unpacks_as_value_and_se():
    r = geometric_complexity(nn.Linear(4, 3), torch.randn(10, 4), probes=2, seed=0)
    value, se = r
    assert isinstance(r, GCResult) and (value, se) == (r.value, r.se) and r[0] == r.value and r[1] == r.se
    assert len(r) == 2 and r.to_dict()["gc"] == r.value and r.to_dict()["gc_se"] == r.se


def test_probe_distributions_have_identity_second_moment():
    for distribution, out_dims in itertools.product(DISTRIBUTIONS, [None, 2]):
        v = draw_probes(20000, 1, 5, distribution, out_dims, torch.Generator().manual_seed(0), torch.float64)[:, 0]
        second = v.T @ v / len(v)
        assert torch.allclose(second, torch.eye(5, dtype=torch.float64), atol=0.08), (distribution, out_dims)
    sphere = draw_probes(10, 2, 7, "sphere", generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(sphere.norm(dim=-1), torch.full((10, 2), math.sqrt(7), dtype=torch.float64))


def test_bad_arguments():
    f, x = nn.Linear(3, 2), torch.randn(4, 3)
    with pytest.raises(NclabError):
        geometric_complexity(f, x, probes=0)
    with pytest.raises(NclabError):
        geometric_complexity(f, x, probes=2, distribution="cauchy")
    with pytest.raises(NclabError):
        geometric_complexity(f, x, out_dims=1)                    # subsampling needs probes
    with pytest.raises(NclabError):
        geometric_complexity(f, torch.zeros(4, 3, dtype=torch.uint8))
    with pytest.raises(NclabError):
        geometric_complexity(lambda z: z.sum(0, keepdim=True), x)  # not a batch -> batch map


# --- eval mode ---------------------------------------------------------------------------------

def test_measuring_uses_eval_mode_and_restores_flags(convnet):
    model, x = convnet
    model.train()
    model.backbone[1].eval()                                     # mixed flags must come back as they were
    flags = {name: m.training for name, m in model.named_modules()}
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    batched = geometric_complexity(model.features, x).value
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())   # running stats untouched
    # per-sample Jacobians in eval mode: one sample at a time gives the same value
    model.eval()
    one_by_one = np.mean([geometric_complexity(model.features, x[i:i + 1]).value for i in range(len(x))])
    assert batched == pytest.approx(one_by_one, rel=1e-12)


def test_train_mode_batchnorm_would_couple_samples(convnet):
    # the reason for eval mode: the batch-coupled "Jacobian" of a train-mode net differs
    model, x = convnet
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0

    def coupled(z):                                              # a plain function: no module to put in eval
        return model.features(z)
    a = geometric_complexity(coupled, x, sample_chunk=len(x)).value
    b = geometric_complexity(model.features, x).value
    assert abs(a - b) / b > 1e-3


# --- per class, geometric collapse, CDNV -------------------------------------------------------

def test_gc_report_against_brute_force():
    torch.manual_seed(5)
    W = torch.randn(4, 6, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    C, n = 3, 10
    centres = torch.randn(C, 6, dtype=torch.float64) * 3
    labels = torch.arange(C).repeat_interleave(n)
    x = centres[labels] + torch.randn(C * n, 6, dtype=torch.float64)

    def f(z):
        return torch.tanh(z @ W.T + bias)
    rep = gc_report(f, x, labels, class_names=["a", "b", "c"])
    # brute force: per-sample Jacobians one at a time with torch.autograd.functional.jacobian
    per = np.array([float((torch.autograd.functional.jacobian(f, x[i]) ** 2).sum()) for i in range(len(x))])
    h = f(x).detach().numpy()
    y = labels.numpy()
    mu = np.stack([h[y == c].mean(0) for c in range(C)])
    gcs = np.array([per[y == c].mean() for c in range(C)])
    var = np.array([((h[y == c] - mu[c]) ** 2).sum(1).mean() for c in range(C)])
    pairs = list(itertools.combinations(range(C), 2))
    geo = np.mean([(gcs[i] + gcs[j]) / (2 * ((mu[i] - mu[j]) ** 2).sum()) for i, j in pairs])
    cdnv = np.mean([(var[i] + var[j]) / (2 * ((mu[i] - mu[j]) ** 2).sum()) for i, j in pairs])
    assert rep.gc.value == pytest.approx(per.mean(), rel=1e-10)
    assert rep.class_gc == pytest.approx(gcs.tolist(), rel=1e-10)
    assert rep.class_counts == [n] * C
    assert rep.geometric_collapse == pytest.approx(geo, rel=1e-10)
    assert rep.cdnv == pytest.approx(cdnv, rel=1e-10)
    d = rep.to_dict()
    assert {"gc", "gc_se", "exact", "probes", "n_samples", "geometric_collapse", "cdnv"} <= set(d)


def test_geometric_collapse_and_cdnv_invariances():
    torch.manual_seed(6)
    h = torch.randn(30, 5, dtype=torch.float64)
    y = torch.arange(3).repeat(10)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    base = cdnv_from_features(h, y, 3)
    assert cdnv_from_features(h @ Q.T * 2.5 + 1.0, y, 3) == pytest.approx(base, rel=1e-12)   # rotate, scale, shift
    means = torch.randn(3, 5, dtype=torch.float64)
    g = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert geometric_collapse(g * 4, means * 2) == pytest.approx(geometric_collapse(g, means), rel=1e-12)
    perm = torch.tensor([2, 0, 1])
    assert geometric_collapse(g[perm], means[perm]) == pytest.approx(geometric_collapse(g, means), rel=1e-12)


def test_per_sample_outputs_are_the_embedding(convnet):
    model, x = convnet
    ps = per_sample_gc(model.features, x, probes=1)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(ps.outputs, model.features(x))
    assert ps.mean_var is None and ps.values.shape == (len(x),)


# --- the regulariser ---------------------------------------------------------------------------

class TinyNet(nn.Module):
    def __init__(self, d_in=5, d_hid=6, d_feat=3, classes=3):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(d_in, d_hid), nn.Tanh(), nn.Linear(d_hid, d_feat), nn.Tanh())
        self.head = nn.Linear(d_feat, classes)

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.features(x))


def test_build_from_config_entry():
    regs = build_regularizers([{"gc": {"alpha": 1e-6, "probes": 1}}])
    assert len(regs) == 1 and isinstance(regs[0], GCRegularizer) and regs[0].name == "gc"
    assert regs[0].alpha == 1e-6 and regs[0].probes == 1
    with pytest.raises(NclabError, match="gc"):
        build_regularizers([{"gc": {"alpha": 1e-6, "probs": 1}}])


def test_regulariser_gradient_matches_finite_differences():
    torch.manual_seed(7)
    model = TinyNet().double()
    x = torch.randn(8, 5, dtype=torch.float64)
    reg = GCRegularizer(alpha=0.7, probes=2)

    def value():
        torch.manual_seed(123)                                   # the same probes every time
        return reg(model, x, None, None)

    model.zero_grad()
    value().backward()
    eps = 1e-6
    for p in model.parameters():
        grad = torch.zeros_like(p) if p.grad is None else p.grad     # the head does not enter GC(features)
        for idx in itertools.islice(np.ndindex(*p.shape), 0, None, 3):
            with torch.no_grad():
                old = p[idx].item()
                p[idx] = old + eps
                up = value().item()
                p[idx] = old - eps
                down = value().item()
                p[idx] = old
            assert grad[idx].item() == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)


def test_regulariser_estimates_gc_and_leaves_model_state_alone(convnet):
    model, x = convnet
    model.train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    exact = geometric_complexity(model.features, x).value
    torch.manual_seed(0)
    vals = np.array([GCRegularizer(alpha=2.0, probes=2)(model, x, None, None).item() / 2.0 for _ in range(60)])
    assert abs(vals.mean() - exact) < 3 * vals.std(ddof=1) / math.sqrt(len(vals))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())
    assert GCRegularizer(alpha=0.0)(model, x, None, None).item() == 0.0


def _train(alpha: float, steps: int = 60) -> float:
    torch.manual_seed(0)
    model = TinyNet(d_in=10, d_hid=32, d_feat=8, classes=4)
    x = torch.randn(128, 10)
    y = torch.randint(0, 4, (128,))
    reg = GCRegularizer(alpha=alpha, probes=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        idx = torch.arange(32 * (step % 4), 32 * (step % 4 + 1))
        feats = model.features(x[idx])
        logits = model.head(feats)
        loss = nn.functional.cross_entropy(logits, y[idx]) + reg(model, x[idx], feats, logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return geometric_complexity(model.features, x).value


def test_training_with_large_alpha_lowers_gc():
    plain, regularised = _train(0.0), _train(1.0)
    assert regularised < 0.5 * plain
