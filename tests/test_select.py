"""Model selection (train.select): the kept epoch is the one whose recorded metric is best, the
best weights equal that epoch's weights (an identical seeded run stopped at that epoch), a run
resumed mid-way keeps the same choice and weights, later commands load the selection, and bad
settings are refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import Crash
import torch
from safetensors.torch import load_file

from nclab.cli import main
from nclab.errors import NclabError
from nclab.experiments.select import best_so_far, select_direction
from nclab.experiments.training import resume, train
from nclab.extract import embed, load_run
from nclab.featurefile import load_features
from nclab.train.run import start_run

# constant lr: a run cut at epoch e trains exactly the first e epochs of a longer run
BASE = ["train.batch_size=12", "trainer.progress=false", "trainer.threads=1", "optim.lr=0.05",
        "schedule.name=constant", "model.options.width=16"]
PROBES = ["probes.enabled=true", "probes.fewshot.ways=[2]", "probes.fewshot.shots=[1, 2]",
          "probes.fewshot.query=3", "probes.fewshot.episodes=12"]


def _train(tmp, name, tiny, extra=(), callbacks=()):
    return train(None, [f"data.name={tiny}", *BASE, *PROBES, *extra], out=tmp / name, callbacks=callbacks)


def _weights_equal(a, b) -> bool:
    a, b = load_file(str(a)), load_file(str(b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "probe_seconds")} for r in records]


def test_direction_and_best_so_far_are_plain_arithmetic():
    assert select_direction("val/fewshot/5w1s/ncc") == "max"
    assert select_direction("val/fewshot/5w5s/logistic") == "max"
    assert select_direction("val/ncc_acc") == "max"
    assert select_direction("val/cdnv_debiased") == "min"
    assert select_direction("val/fewshot/5w1s/bound") == "min"
    assert select_direction("val/cdnv_debiased", "max") == "max"
    with pytest.raises(NclabError, match="select_mode"):
        select_direction("val/n_samples")
    recs = [{"epoch": 0, "m": 9.0}, {"epoch": 1, "m": 0.5}, {"epoch": 2}, {"epoch": 3, "m": 0.7, "step": 30},
            {"epoch": 4, "m": None}, {"epoch": 5, "m": 0.7, "step": 50}, {"epoch": 6, "m": float("nan")}]
    # epoch 0 is no candidate; a later tie (epoch 5) does not replace the first best
    assert best_so_far(recs, "m", "max") == {"epoch": 3, "step": 30, "value": 0.7}
    assert best_so_far(recs, "m", "min")["epoch"] == 1
    assert best_so_far(recs[:1], "m", "max") is None


@pytest.mark.parametrize("metric, mode", [("val/fewshot/2w1s/ncc", "auto"), ("val/cdnv", "max")])
def test_select_keeps_the_best_recorded_epoch_and_its_weights(tmp_path, tiny_registered, metric, mode):
    run = _train(tmp_path, "sel", tiny_registered, ["train.epochs=4", f"train.select={metric}",
                                                    f"train.select_mode={mode}"])
    recs = run.records()
    vals = [(r["epoch"], r[metric]) for r in recs if r["epoch"] >= 1]
    assert [e for e, _ in vals] == [1, 2, 3, 4] and all(v is not None for _, v in vals)
    want = vals[0]
    for e, v in vals[1:]:
        if v > want[1]:                       # max: first of the highest (ties keep the earlier)
            want = (e, v)
    info = json.loads((run.path / "best.json").read_text())
    assert (info["epoch"], info["value"]) == want and info["metric"] == metric and info["mode"] == "max"
    assert info["step"] == next(r["step"] for r in recs if r["epoch"] == want[0])
    assert json.loads((run.path / "summary.json").read_text())["selected"] == info
    # every record from epoch 1 carries the choice so far
    for r in recs[1:]:
        sofar = max(((e, v) for e, v in vals if e <= r["epoch"]), key=lambda t: (t[1], -t[0]))
        assert (r["select/best_epoch"], r["select/best_value"]) == sofar
    assert "select/best_epoch" not in recs[0]
    # the best weights are those of an identical seeded run stopped at the chosen epoch
    cut = _train(tmp_path, "cut", tiny_registered, [f"train.epochs={want[0]}"])
    assert _weights_equal(run.best_weights_path, cut.weights_path)
    assert _weights_equal(run.weights_path, run.best_weights_path) == (want[0] == 4)
    # and they reproduce the recorded value: the metric of the loaded best model's features
    loaded = load_run(run.path, "best")
    assert loaded.weights.startswith(f"best (epoch {want[0]}, {metric}")
    if metric == "val/cdnv":
        from nclab.experiments.probes import probe_subset
        from nclab.metrics import measure
        rows, y = probe_subset(loaded.data.splits["val"], "val", loaded.config.probes)
        F = embed(loaded.model, loaded.data.splits["val"].images[rows], loaded.preprocess)
        assert measure(F, y).cdnv == pytest.approx(want[1], rel=1e-6)


def test_resume_mid_run_keeps_the_same_choice(tmp_path, tiny_registered):
    # val/cdnv_debiased is lowest at epoch 3 on the tiny data: the crashed pass has written its
    # best weights before the crash, the replayed epoch 3 (from the mid-epoch checkpoint) rewrites them
    extra = ["train.epochs=4", "train.select=val/cdnv_debiased", "trainer.ckpt_every_steps=2"]
    ref = _train(tmp_path, "ref", tiny_registered, extra)
    assert json.loads((ref.path / "best.json").read_text())["epoch"] == 3

    def crash(ctx):            # after the probes and the selection of epoch 3, before its record
        if ctx.epoch == 3:
            raise Crash()
    with pytest.raises(Crash):
        _train(tmp_path, "cut", tiny_registered, extra, callbacks=[crash])
    cut = tmp_path / "cut"
    assert [json.loads(x)["epoch"] for x in (cut / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert json.loads((cut / "best.json").read_text())["epoch"] == 3
    resume(cut)
    got = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert _strip(got) == _strip(ref.records())
    assert json.loads((cut / "best.json").read_text()) == json.loads((ref.path / "best.json").read_text())
    assert _weights_equal(cut / "best.safetensors", ref.best_weights_path)


def test_commands_use_the_selected_weights(tmp_path, tiny_registered, capsys):
    run = _train(tmp_path, "sel", tiny_registered, ["train.epochs=2", "train.select=val/cdnv", "train.select_mode=max"])
    out = tmp_path / "val.npz"
    assert main(["features", str(run.path), "--split", "val", "--checkpoint", "best", "--out", str(out)]) == 0
    assert "best (epoch" in capsys.readouterr().out
    loaded = load_run(run.path, "best")
    F = embed(loaded.model, loaded.data.splits["val"].images, loaded.preprocess)
    assert np.array_equal(load_features(out).features, F)
    assert main(["measure", str(run.path), "--split", "val", "--checkpoint", "best"]) == 0
    cap = capsys.readouterr()
    assert "best weights" in cap.out and "best (epoch" in cap.err
    # a run without selection, a feature file: one-line errors, exit 2
    plain = _train(tmp_path, "plain", tiny_registered, ["train.epochs=1"])
    assert main(["features", str(plain.path), "--split", "val", "--checkpoint", "best",
                 "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "without train.select" in err and err.count("\n") == 1
    assert main(["measure", str(out), "--checkpoint", "best"]) == 2
    assert "--checkpoint applies to run directories" in capsys.readouterr().err


@pytest.mark.parametrize("extra, words", [
    (["probes.enabled=false"], ["train.select", "needs probes on the val split"]),
    (["probes.splits=[train, test, novel]", "probes.fewshot.splits=[novel]"], ["needs probes on the val split"]),
    (["train.select=novel/fewshot/2w1s/ncc"], ["val classes", "val/"]),
    (["train.select=val/fewshot/5w1s/ncc"], ["not written by these probes", "val/fewshot/2w1s/ncc"]),
    (["train.select=val/cdnv_debiasd"], ["val/cdnv_debiased"]),
    (["train.select=val/n_samples"], ["no direction", "select_mode"]),
    (["train.select_mode=up"], ["train.select_mode", "max"]),
])
def test_bad_select_is_refused_before_any_run_directory(tmp_path, tiny_registered, extra, words):
    args = ["train.epochs=1", "train.select=val/fewshot/2w1s/ncc", *extra]
    with pytest.raises(NclabError) as e:
        _train(tmp_path, "x", tiny_registered, args)
    msg = str(e.value)
    assert all(w in msg for w in words) and "\n" not in msg, msg
    assert list(tmp_path.iterdir()) == []


def test_select_without_its_callback_is_refused(tmp_path, tiny_registered):
    from nclab.experiments.probes import Probes
    with pytest.raises(NclabError, match="train.select is set but no callback handles"):
        start_run(None, [f"data.name={tiny_registered}", *BASE, *PROBES, "train.select=val/cdnv_debiased"],
                  out=tmp_path / "x", callbacks=[Probes()])
    assert list(tmp_path.iterdir()) == []
