"""train.ema: the moving average of the weights, against a float64 recursion over the live weights."""

import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nclab.errors import NclabError
from nclab.experiments.transfer import evaluate_transfer
from nclab.extract import features_of_split, load_run
from nclab.train.checkpoint import latest_checkpoint
from nclab.train.ema import WeightAverage, ema_decay
from nclab.train.run import start_run

# 6 classes x 6 training images, batches of 20 (drop_last): one optimiser step per epoch, so the
# network an epoch callback sees after epoch t is the one after step t.
BASE = ["train.epochs=3", "train.batch_size=20", "trainer.progress=false", "trainer.threads=1", "optim.lr=0.1",
        "model.options.width=16", "model.options.norm=batch", "trainer.channels_last=true"]


def _snapshots(store):
    def cb(ctx):
        store.append({k: v.detach().clone() for k, v in ctx.model.state_dict().items()})
    return cb


def _reference(live: list[dict], decay: float) -> list[dict]:
    """avg_0 = live_0; avg_t = d_t avg_{t-1} + (1 - d_t) live_t in float64; integer buffers copied."""
    out = [{k: v.double() if v.is_floating_point() else v for k, v in live[0].items()}]
    for t in range(1, len(live)):
        d = min(decay, (1 + t) / (10 + t))
        out.append({k: d * out[-1][k] + (1 - d) * v.double() if v.is_floating_point() else v
                    for k, v in live[t].items()})
    return out


def test_decay_warms_up_then_holds():
    assert ema_decay(0.999, 1) == pytest.approx(2 / 11) and ema_decay(0.999, 10) == pytest.approx(11 / 20)
    assert ema_decay(0.9, 1000) == 0.9 and ema_decay(0.2, 2) == 0.2


def test_average_of_a_module_follows_the_recursion():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    avg = WeightAverage(net, 0.3)
    assert not any(p.requires_grad for p in avg.module.parameters()) and not avg.module.training
    live = [{k: v.clone() for k, v in net.state_dict().items()}]
    for step in range(1, 6):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net.train()(torch.randn(8, 4))              # moves the batch-norm statistics and its counter
        avg.update(step)
        live.append({k: v.clone() for k, v in net.state_dict().items()})
    ref = _reference(live, 0.3)[-1]
    got = avg.module.state_dict()
    assert got.keys() == ref.keys()
    for k in ref:
        if ref[k].is_floating_point():
            assert torch.allclose(got[k].double(), ref[k], rtol=1e-6, atol=1e-6), k
        else:
            assert torch.equal(got[k], ref[k]), k            # num_batches_tracked: copied
    assert not torch.allclose(got["1.running_mean"], net.state_dict()["1.running_mean"])


def test_average_of_a_half_precision_network_is_kept_in_float32():
    net = torch.nn.Linear(4, 3).to(torch.bfloat16)
    avg = WeightAverage(net, 0.999)
    assert avg.module.weight.dtype == torch.float32
    before = avg.module.weight.clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    avg.update(10_000)                    # a step of 0.001: lost in bfloat16, kept in float32
    assert torch.allclose(avg.module.weight, before + 0.001 * (net.weight.float() - before), atol=1e-7)


def test_run_delivers_the_average_and_keeps_the_live_weights(tmp_path, tiny_registered):
    live, avg = [], []
    plain = start_run(None, [f"data.name={tiny_registered}"] + BASE, out=tmp_path / "plain", callbacks=[_snapshots(live)])
    ema = start_run(None, [f"data.name={tiny_registered}"] + BASE + ["train.ema=0.2"], out=tmp_path / "ema",
                    callbacks=[_snapshots(avg)])
    assert [r["step"] for r in ema.records()] == [1, 2, 3] and len(live) == len(avg) == 4
    # The average does not touch training: the live weights of the checkpoint are the plain run's.
    last = load_file(latest_checkpoint(ema.path)[0])
    final_plain = load_file(plain.weights_path)
    assert all(torch.equal(last[k], final_plain[k]) for k in final_plain)
    for got, ref in zip(avg, _reference(live, 0.2)):       # the warm-up (2/11) and the cap (0.2)
        for k in ref:
            if ref[k].is_floating_point():
                assert torch.allclose(got[k].double(), ref[k], rtol=1e-5, atol=1e-6), k
            else:
                assert torch.equal(got[k], ref[k]), k
    final = load_file(ema.weights_path)
    assert all(torch.equal(final[k], avg[-1][k]) for k in final)
    assert any(not torch.allclose(final[k], last[k], atol=1e-4) for k in final if final[k].is_floating_point())
    # The records evaluate the delivered network; --checkpoint last evaluates the live one.
    live_features = features_of_split(load_run(ema.path, "last"), "novel").features
    assert np.array_equal(live_features, features_of_split(load_run(plain.path), "novel").features)
    assert not np.allclose(live_features, features_of_split(load_run(ema.path), "novel").features, atol=1e-3)
    kw = dict(split="novel", way=3, shot=1, query=5, episodes=20, heads=["ncc"])
    a = evaluate_transfer([ema.path], checkpoint="last", **kw)
    b = evaluate_transfer([plain.path], **kw)
    assert a.settings["checkpoint"] == "last" and b.settings["checkpoint"] == "final"
    assert [dict(r, run=None) for r in a.rows] == [dict(r, run=None) for r in b.rows]


def test_a_decay_outside_0_1_is_refused(tmp_path, tiny_registered):
    for bad, words in (("1", "train.ema=1.0: expected a finite number in [0, 1)"), ("-0.1", "train.ema=-0.1"),
                       ("true", "train.ema: expected a number")):
        with pytest.raises(NclabError, match=re.escape(words)):
            start_run(None, [f"data.name={tiny_registered}"] + BASE + [f"train.ema={bad}"], out=tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
