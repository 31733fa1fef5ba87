"""The batch CDNV regulariser: equal to a float64 brute force of Galanti's CDNV over the classes
with >= min_per_class samples in the batch, exact gradients (gradcheck), oracles (collapsed
features give 0, invariance to scale / translation / rotation / class relabelling), the same value
as nclab.measure's plug-in CDNV, and its config entry in the registry and the training loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nclab.config import load_config
from nclab.errors import NclabError
from nclab.metrics import measure
from nclab.train.regularizers import CDNVRegularizer, batch_cdnv, build_regularizers


def brute_cdnv(h: np.ndarray, y: np.ndarray, min_per_class: int = 2, eps: float = 1e-8) -> float:
    """Loops in float64: classes with enough samples, 1/n variances, mean over pairs i < j."""
    h = h.astype(np.float64)
    stats = []
    for c in sorted(set(y.tolist())):
        hc = h[y == c]
        if len(hc) >= min_per_class:
            mu = hc.mean(0)
            stats.append((mu, float(((hc - mu) ** 2).sum(1).mean())))
    vals = [(vi + vj) / (2 * float(((mi - mj) ** 2).sum()) + eps) for (mi, vi), (mj, vj) in
            itertools.combinations(stats, 2)]
    return float(np.mean(vals)) if vals else 0.0


def _batch(seed=0, n=40, d=7, classes=9):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    y[-1] = classes - 1                                  # a singleton class, which the penalty leaves out
    y[:-1] = torch.remainder(y[:-1], classes - 1)
    h = torch.randn(n, d, generator=g, dtype=torch.float64) + 3 * torch.randn(classes, d, generator=g,
                                                                            dtype=torch.float64)[y]
    return h, y


@pytest.mark.parametrize("seed, min_per_class", [(0, 2), (1, 2), (2, 3), (3, 5)])
def test_equals_float64_brute_force(seed, min_per_class):
    h, y = _batch(seed)
    counts = torch.bincount(y)
    assert (counts == 1).any()                                             # some classes are left out
    got = batch_cdnv(h, y, min_per_class).item()
    assert got == pytest.approx(brute_cdnv(h.numpy(), y.numpy(), min_per_class), rel=1e-12)
    # float32 features: same value to float32 precision
    assert batch_cdnv(h.float(), y, min_per_class).item() == pytest.approx(got, rel=1e-5)


def test_gradient_is_exact():
    h, y = _batch(4, n=16, d=3, classes=4)
    h.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: batch_cdnv(f, y), (h,), eps=1e-6, atol=1e-8)


def test_oracles_and_invariances():
    h, y = _batch(5)
    v = batch_cdnv(h, y, eps=0).item()
    Q = torch.linalg.qr(torch.randn(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(2))
    assert batch_cdnv(3.7 * h @ Q + 11.0, perm[y], eps=0).item() == pytest.approx(v, rel=1e-10)
    # every sample at its class mean: zero
    means = torch.stack([h[y == c].mean(0) if (y == c).any() else torch.zeros(7, dtype=h.dtype) for c in range(9)])
    assert batch_cdnv(means[y], y).item() < 1e-28                          # rounding of equal values only
    # with all classes having >= 2 samples, the plug-in CDNV of nclab.measure (Galanti's symmetric form)
    keep = torch.isin(y, torch.nonzero(torch.bincount(y) >= 2).flatten())
    hk, yk = h[keep], torch.unique(y[keep], return_inverse=True)[1]
    assert measure(hk.numpy(), yk.numpy()).cdnv == pytest.approx(batch_cdnv(hk, yk, eps=0).item(), rel=1e-9)
    # fewer than two qualifying classes: 0, and a zero gradient
    one = h[:3].clone().requires_grad_(True)
    out = batch_cdnv(one, torch.tensor([0, 0, 1]))
    out.backward()
    assert out.item() == 0.0 and torch.count_nonzero(one.grad) == 0


def test_regulariser_entry_and_bad_options():
    reg, = build_regularizers(load_config(None, ["train.regularizers=[{cdnv: {strength: 0.5}}]"]).train.regularizers)
    h, y = _batch(6)
    assert reg(None, None, h, None, y).item() == pytest.approx(0.5 * brute_cdnv(h.numpy(), y.numpy()), rel=1e-12)
    for opts, words in [("{strength: -1}", "strength"), ("{strength: 1, min_per_class: 1}", "min_per_class"),
                        ("{strength: 1, eps: 0}", "eps"), ("{strength: 1, alpha: 2}", "alpha"), ("{}", "strength")]:
        cfg = load_config(None, [f"train.regularizers=[{{cdnv: {opts}}}]"])
        with pytest.raises(NclabError) as e:
            build_regularizers(cfg.train.regularizers)
        assert "train.regularizers[0].cdnv" in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_training_with_the_penalty_logs_it_and_lowers_batch_cdnv(tmp_path, tiny_registered):
    from nclab.experiments.training import train
    base = [f"data.name={tiny_registered}", "train.epochs=3", "train.batch_size=18", "trainer.progress=false",
            "trainer.threads=1", "model.options.width=16", "optim.lr=0.05"]
    plain = train(None, base, out=tmp_path / "plain")
    reg = train(None, base + ["train.regularizers=[{cdnv: {strength: 1.0}}]"], out=tmp_path / "reg")
    recs = reg.records()
    assert all(r["reg_cdnv"] > 0 for r in recs) and "reg_cdnv" not in plain.records()[-1]
    # the penalty changes training (its gradient reaches the weights)
    assert recs[-1]["loss"] != plain.records()[-1]["loss"]
