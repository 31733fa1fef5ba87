"""The batch prototypical loss: equal to a float64 brute force (leave-one-out prototypes on
centred, L2-normalised features), exact gradients, invariances (scale, translation, rotation,
class relabelling, batch order), its registry entry, and a class-balanced training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nclab.config import load_config
from nclab.errors import NclabError
from nclab.train.regularizers import batch_proto_loss, build_regularizers


def brute_proto(h: np.ndarray, y: np.ndarray, scale: float) -> float:
    """Loops in float64: each sample of a class seen twice or more is a query against the means
    of the other samples of every class (its own class without it)."""
    z = h.astype(np.float64) - h.mean(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    classes = sorted(set(y.tolist()))
    losses = []
    for i in range(len(y)):
        if (y == y[i]).sum() < 2:
            continue
        logits = []
        for c in classes:
            members = [j for j in range(len(y)) if y[j] == c and j != i]
            p = z[members].mean(0)
            logits.append(-scale * float(((z[i] - p) ** 2).sum()))
        logits = np.array(logits)
        m = logits.max()
        losses.append(m + np.log(np.exp(logits - m).sum()) - logits[classes.index(int(y[i]))])
    return float(np.mean(losses)) if losses else 0.0


def _batch(seed=0, n=30, d=6, classes=7):
    g = torch.Generator().manual_seed(seed)
    y = torch.remainder(torch.randint(0, classes, (n,), generator=g), classes - 1)
    y[-1] = classes - 1                                                      # a singleton class
    h = torch.randn(n, d, generator=g, dtype=torch.float64) + 2 * torch.randn(classes, d, generator=g,
                                                                            dtype=torch.float64)[y]
    return h, y


@pytest.mark.parametrize("seed, scale", [(0, 10.0), (1, 1.0), (2, 30.0)])
def test_equals_float64_brute_force(seed, scale):
    h, y = _batch(seed)
    got = batch_proto_loss(h, y, scale).item()
    assert got == pytest.approx(brute_proto(h.numpy(), y.numpy(), scale), rel=1e-10)
    assert batch_proto_loss(h.float(), y, scale).item() == pytest.approx(got, rel=1e-4)


def test_gradient_is_exact():
    h, y = _batch(3, n=12, d=3, classes=4)
    h.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: batch_proto_loss(f, y, 5.0), (h,), eps=1e-6, atol=1e-7)


def test_invariances_and_oracles():
    h, y = _batch(4)
    v = batch_proto_loss(h, y).item()
    Q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    relabel = torch.randperm(7, generator=torch.Generator().manual_seed(2))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(3))
    assert batch_proto_loss(2.5 * h @ Q + 4.0, relabel[y]).item() == pytest.approx(v, rel=1e-10)
    assert batch_proto_loss(h[order], y[order]).item() == pytest.approx(v, rel=1e-10)
    # well-separated, tight classes: the loss goes to 0 as the scale grows; with scale -> 0 it is log(#classes)
    centres = torch.eye(6, dtype=torch.float64)[:4] * 10
    yy = torch.arange(4).repeat_interleave(3)
    tight = centres[yy] + 1e-3 * torch.randn(12, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert batch_proto_loss(tight, yy, 100.0).item() < 1e-6
    assert batch_proto_loss(tight, yy, 1e-9).item() == pytest.approx(np.log(4), rel=1e-6)
    # only singletons: no query, zero loss and a zero gradient
    one = h[:3].clone().requires_grad_(True)
    out = batch_proto_loss(one, torch.tensor([0, 1, 2]))
    out.backward()
    assert out.item() == 0.0 and torch.count_nonzero(one.grad) == 0


def test_regulariser_entry_and_bad_options():
    reg, = build_regularizers(load_config(None, ["train.regularizers=[{proto: {strength: 0.5, scale: 4}}]"]).train.regularizers)
    h, y = _batch(6)
    assert reg(None, None, h, None, y).item() == pytest.approx(0.5 * brute_proto(h.numpy(), y.numpy(), 4.0), rel=1e-10)
    for opts, words in [("{strength: -1}", "strength"), ("{strength: 1, scale: 0}", "scale"), ("{}", "strength")]:
        cfg = load_config(None, [f"train.regularizers=[{{proto: {opts}}}]"])
        with pytest.raises(NclabError) as e:
            build_regularizers(cfg.train.regularizers)
        assert "train.regularizers[0].proto" in str(e.value) and words in str(e.value)


def test_class_balanced_training_logs_the_term_and_lowers_it(tmp_path, tiny_registered):
    from nclab.experiments.training import train
    base = [f"data.name={tiny_registered}", "train.epochs=3", "train.batch_size=20", "trainer.progress=false",
            "trainer.threads=1", "model.options.width=16", "optim.lr=0.05", "train.batch_per_class=5"]
    plain = train(None, base, out=tmp_path / "plain")
    reg = train(None, base + ["train.regularizers=[{proto: {strength: 1.0}}]"], out=tmp_path / "reg")
    recs = reg.records()
    assert all(r["reg_proto"] > 0 for r in recs) and recs[-1]["reg_proto"] < recs[0]["reg_proto"]
    assert recs[-1]["loss"] != plain.records()[-1]["loss"]
