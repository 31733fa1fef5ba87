"""Probes in the training loop: schedule, keys on exactly the probe epochs, values equal to
nclab.measure / nclab.fewshot on the features of that epoch's weights, fixed episodes, resume
safety, no effect on training, and refused configs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import Crash, crash_at
import torch
from safetensors.torch import load_file

from nclab.config import ProbesConfig, load_config
from nclab.data.loader import eval_batches
from nclab.data.prepare import prepare_data
from nclab.data.transforms import Preprocess
from nclab.errors import NclabError
from nclab.experiments.probes import SPLIT_KEYS, TRAIN_KEYS, log_epochs, probe_epochs, probe_subset
from nclab.experiments.training import resume, train
from nclab.extract import classifier_weights, embed, fold_batchnorm, load_run
from nclab.fewshot import fewshot_report, load_episodes
from nclab.metrics import measure, ncc_accuracy
from nclab.metrics.stats import class_moments
from nclab.models import create_model
from nclab.train.loop import build_model
from nclab.train.run import resume_run, start_run

BASE = ["train.epochs=2", "train.batch_size=12", "trainer.progress=false", "trainer.threads=1", "optim.lr=0.05",
        "model.options.width=16"]
# the tiny dataset: 6 source classes (6 train + 4 test samples each), 2 val and 4 novel classes of 10
PROBES = ["probes.enabled=true", "probes.fewshot.ways=[2]", "probes.fewshot.shots=[1, 2]",
          "probes.fewshot.query=3", "probes.fewshot.episodes=12"]


def _train(tmp, name, tiny, extra=(), callbacks=()):
    return train(None, [f"data.name={tiny}", *BASE, *PROBES, *extra], out=tmp / name, callbacks=callbacks)


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "probe_seconds")} for r in records]


# --- when -----------------------------------------------------------------------------------------

def test_schedule_arithmetic():
    p = ProbesConfig(every=3)
    assert probe_epochs(p, 10) == [0, 3, 6, 9, 10]
    assert probe_epochs(p, 2) == [0, 2]
    assert probe_epochs(ProbesConfig(every=1), 4) == [0, 1, 2, 3, 4]
    # log-spaced: round(100^(i/4)) = 1, 3, 10, 32, 100
    assert log_epochs(5, 100) == [1, 3, 10, 32, 100]
    assert probe_epochs(ProbesConfig(schedule="log", points=5), 100) == [0, 1, 3, 10, 32, 100]
    for points, epochs in [(50, 350), (50, 60), (7, 7), (9, 5), (2, 3), (1, 8), (50, 1)]:
        e = log_epochs(points, epochs)
        assert len(e) == min(points, epochs) and e[-1] == epochs and e == sorted(set(e))
        assert e[0] == (1 if min(points, epochs) > 1 else epochs)
    # Papyan's grid: dense at the start (1, 2, 3, ... every epoch while spacing < 1), sparse at the end
    e = log_epochs(50, 350)
    assert e[:8] == list(range(1, 9)) and e[-2] < 340
    stages = ProbesConfig(every=4)
    stages.stages.enabled, stages.stages.epochs = True, [1, 2]
    assert probe_epochs(stages, 8) == [0, 1, 2, 4, 8]


# --- on which samples -------------------------------------------------------------------------------

def test_subsets_are_seeded_capped_and_keep_class_ids(tiny_registered):
    from nclab.config import DataConfig
    data = prepare_data(DataConfig(name=tiny_registered))
    p = ProbesConfig(max_per_class=3, max_per_class_splits=["train"], max_classes=2, max_classes_splits=["novel"])
    rows, y = probe_subset(data.splits["train"], "train", p)
    assert np.array_equal(np.bincount(y), [3] * 6) and np.array_equal(data.splits["train"].labels[rows], y)
    rows2, _ = probe_subset(data.splits["train"], "train", p)
    assert np.array_equal(rows, rows2)
    assert not np.array_equal(rows, probe_subset(data.splits["train"], "train", ProbesConfig(
        max_per_class=3, seed=1))[0])
    nrows, ny = probe_subset(data.splits["novel"], "novel", p)
    assert len(np.unique(ny)) == 2 and len(nrows) == 20 and np.array_equal(data.splits["novel"].labels[nrows], ny)
    trows, _ = probe_subset(data.splits["test"], "test", p)                   # not listed: every sample
    assert np.array_equal(trows, np.arange(len(data.splits["test"])))


# --- what, and when -----------------------------------------------------------------------------------

def test_probe_keys_on_exactly_the_probe_epochs(tmp_path, tiny_registered):
    run = _train(tmp_path, "r", tiny_registered, ["train.epochs=3", "probes.every=2"])
    recs = run.records()
    assert [r["epoch"] for r in recs] == [0, 1, 2, 3]
    assert [r.get("probe", False) for r in recs] == [True, False, True, True]
    assert recs[0]["step"] == 0 and "loss" not in recs[0]
    keys = {"probe", "probe_seconds"}
    for s in ("train", "test", "val", "novel"):
        keys |= {f"{s}/{k}" for k in SPLIT_KEYS + ("ncc_acc",)}
    keys |= {f"train/{k}" for k in TRAIN_KEYS} | {f"test/{k}" for k in TRAIN_KEYS} | {"train/acc"}
    for s in ("val", "novel"):
        for n in (1, 2):
            keys |= {f"{s}/fewshot/2w{n}s/{k}" for k in ("ncc", "ncc_ci95", "ridge", "ridge_ci95", "avg_cdnv",
                                                          "bound", "ncc_error")}
    training = {"epoch", "step", "lr", "loss", "train_acc", "test_acc", "seconds"}
    assert set(recs[0]) == keys | {"epoch", "step"}
    assert set(recs[1]) == training
    assert set(recs[2]) == set(recs[3]) == keys | training
    assert recs[2]["train/n_samples"] == 36 and recs[2]["test/n_classes"] == 6 and recs[2]["novel/n_samples"] == 40
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["final"] == recs[-1]
    # bound column is Galanti's leading term of the measured Avg CDNV
    r = recs[3]
    assert r["novel/fewshot/2w2s/bound"] == pytest.approx((2 - 1) * (1 + 1 / 2) * r["novel/fewshot/2w2s/avg_cdnv"])
    assert r["novel/fewshot/2w1s/ncc_error"] == pytest.approx(1 - r["novel/fewshot/2w1s/ncc"])


def test_probe_values_equal_measure_and_fewshot_on_that_epochs_weights(tmp_path, tiny_registered):
    snapshots = {}

    def snapshot(ctx):                                  # runs after the probes: the weights they saw
        snapshots[ctx.epoch] = copy.deepcopy(ctx.model.state_dict())

    extra = ["probes.max_per_class=4", "probes.max_per_class_splits=[train, novel]", "probes.fewshot.query=2",
             "probes.gc.enabled=true", "probes.gc.max_samples=8", "probes.gc.per_class=2",
             "probes.stages.enabled=true", "probes.stages.epochs=[0, 2]"]
    run = _train(tmp_path, "r", tiny_registered, extra, callbacks=[snapshot])
    recs = {r["epoch"]: r for r in run.records()}
    assert sorted(snapshots) == [0, 1, 2] and sorted(recs) == [0, 1, 2]
    cfg = load_config(run.config_path)
    data = prepare_data(cfg.data)
    pre = Preprocess.from_dict(json.loads((run.path / "preprocess.json").read_text()))
    model = build_model(cfg, pre, 6)
    subsets = {s: probe_subset(data.splits[s], s, cfg.probes) for s in cfg.probes.splits}
    episodes = {s: load_episodes(run.path / "probes" / f"episodes-{s}.npz") for s in ("val", "novel")}
    for epoch, state in snapshots.items():
        model.load_state_dict(state)
        model.eval()
        r = recs[epoch]
        feats = {s: embed(model, data.splits[s].images[rows], pre) for s, (rows, _) in subsets.items()}
        W, b = classifier_weights(model)
        ref = measure(feats["train"], subsets["train"][1], W, b).to_dict()
        for k in SPLIT_KEYS + TRAIN_KEYS:
            assert r[f"train/{k}"] == pytest.approx(ref[k], rel=1e-12, abs=1e-300), (epoch, k)
        means = class_moments(feats["train"], subsets["train"][1], 6).means
        assert r["test/ncc_acc"] == ncc_accuracy(feats["test"], subsets["test"][1], means)
        for s in ("val", "novel"):
            ref = measure(feats[s], subsets[s][1]).to_dict()
            assert r[f"{s}/cdnv_debiased"] == pytest.approx(ref["cdnv_debiased"], rel=1e-12)
            assert r[f"{s}/ncc_acc"] == ref["ncc_accuracy"]
            fs = fewshot_report(feats[s], subsets[s][1], way=2, shot=(1, 2), query=2, episodes=12,
                                heads=("ncc", "ridge"), episode_sets=episodes[s], bound=True)
            for row in fs.rows:
                assert r[f"{s}/fewshot/2w{row['shot']}s/{row['head']}"] == pytest.approx(row["mean"], rel=1e-12)
            for bd in fs.bound:
                assert r[f"{s}/fewshot/2w{bd['shot']}s/bound"] == pytest.approx(bd["bound_term"], rel=1e-12)
        assert "train/gc" in r and "novel/geometric_collapse" in r
        assert ("train/stage/block4/cdnv_debiased" in r) == (epoch in (0, 2))
        if epoch == 2:
            # the last stage's pooled output is the penultimate feature
            assert r["novel/stage/block4/cdnv_debiased"] == pytest.approx(r["novel/cdnv_debiased"], rel=1e-12)
            with torch.no_grad():
                h = model.intermediate(pre(data.splits["train"].images[subsets["train"][0]]), ["block1"], pooled=True)
            ref = measure(h["block1"], subsets["train"][1]).to_dict()
            assert r["train/stage/block1/cdnv"] == pytest.approx(ref["cdnv"], rel=1e-6)
            assert r["train/stage/block1/ncc_acc"] == pytest.approx(ref["ncc_accuracy"], abs=1 / 24)


EPISODES = 300


def test_fewshot_power_probes_powered_features_centred_on_their_own_mean(tmp_path, tiny_registered):
    """probes.fewshot.power: the few-shot keys are those of sign(h)|h|^beta (float64 oracle on the
    final weights, centred on the mean of the powered train features); training and every other
    key are those of the same run without it, and the few-shot keys are not."""
    extra = ["probes.fewshot.transform=center+l2", "train.epochs=1", f"probes.fewshot.episodes={EPISODES}"]
    plain = _train(tmp_path, "plain", tiny_registered, extra)
    run = _train(tmp_path, "pow", tiny_registered, [*extra, "probes.fewshot.power=0.5"])
    last, ref = run.records()[-1], plain.records()[-1]
    few = [k for k in last if "/fewshot/" in k]
    assert few and {k: v for k, v in last.items() if k not in few and "seconds" not in k} == \
        {k: v for k, v in ref.items() if k not in few and "seconds" not in k}
    assert any(last[k] != ref[k] for k in few)
    L = load_run(run.path)
    cfg = load_config(run.config_path)
    data = prepare_data(cfg.data)
    subsets = {s: probe_subset(data.splits[s], s, cfg.probes) for s in cfg.probes.splits}

    raw = {s: embed(L.model, data.splits[s].images[subsets[s][0]], L.preprocess).astype(np.float64)
           for s in ("train", "val", "novel")}
    powered = {s: np.sign(h) * np.abs(h) ** 0.5 for s, h in raw.items()}
    differs = False
    for s in ("val", "novel"):
        def report(mean):
            return fewshot_report(powered[s], subsets[s][1], way=2, shot=(1, 2), query=3, episodes=EPISODES,
                                  heads=("ncc", "ridge"), transform="center+l2", base_mean=mean,
                                  episode_sets=load_episodes(run.path / "probes" / f"episodes-{s}.npz")).rows
        for row, other in zip(report(powered["train"].mean(0)), report(raw["train"].mean(0))):
            assert last[f"{s}/fewshot/2w{row['shot']}s/{row['head']}"] == pytest.approx(row["mean"], rel=1e-12)
            differs |= other["mean"] != row["mean"]
    assert differs                                   # centring on the raw train mean would have been caught


def test_episodes_fixed_across_epochs_and_runs_and_training_unchanged(tmp_path, tiny_registered):
    a = _train(tmp_path, "a", tiny_registered)
    b = _train(tmp_path, "b", tiny_registered)
    for s in ("val", "novel"):
        ea, eb = (load_episodes(r.path / "probes" / f"episodes-{s}.npz") for r in (a, b))
        assert [e.shot for e in ea] == [1, 2] and all(np.array_equal(x.indices, y.indices) for x, y in zip(ea, eb))
    assert _strip(a.records()) == _strip(b.records())
    # probes draw no global random numbers and leave batch-norm statistics alone: same weights as without
    c = train(None, [f"data.name={tiny_registered}", *BASE, "model.options.norm=batch"], out=tmp_path / "c")
    d = _train(tmp_path, "d", tiny_registered, ["model.options.norm=batch"])
    wc, wd = load_file(c.weights_path), load_file(d.weights_path)
    assert all(torch.equal(wc[k], wd[k]) for k in wc)
    assert _strip(c.records()) == [{k: v for k, v in r.items() if "/" not in k and k != "probe"}
                                   for r in _strip(d.records()) if r["epoch"] > 0]


@pytest.mark.parametrize("crash_epoch, every", [(1, 0), (1, 2), (2, 0), (2, 5)])
def test_resume_neither_loses_nor_repeats_a_probe_record(tmp_path, tiny_registered, monkeypatch, crash_epoch, every):
    # crash at epoch 1 without step checkpoints: the epoch-0 record exists but no checkpoint does,
    # so the resumed run starts afresh and must not keep it twice; at epoch 2 it resumes mid-way.
    # The crash is a SIGKILL's: no clean-up of a start that failed before its first checkpoint.
    from nclab.train.rundir import RunDir
    extra = ["train.epochs=3", f"trainer.ckpt_every_steps={every}"]
    ref = _train(tmp_path, "ref", tiny_registered, extra)
    with pytest.raises(Crash), monkeypatch.context() as m:
        m.setattr(RunDir, "has_checkpoint", lambda self: True)
        _train(tmp_path, "cut", tiny_registered, extra, callbacks=[crash_at(crash_epoch)])
    cut = tmp_path / "cut"
    assert len((cut / "metrics.jsonl").read_text().splitlines()) == crash_epoch
    resume(cut)
    got = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert _strip(got) == _strip(ref.records()) and [r["epoch"] for r in got] == [0, 1, 2, 3]
    a, b = load_file(ref.weights_path), load_file(cut / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- refused --------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, words", [
    ("probes.schedule=sqrt", ["probes.schedule", "log"]),
    ("probes.every=0", ["probes.every", ">= 1"]),
    ("probes.points=0", ["probes.points"]),
    ("probes.splits=[train, tset]", ["tset", "test"]),
    ("probes.splits=[]", ["probes.splits"]),
    ("probes.splits=[test, novel]", ["'test' needs 'train'"]),
    ("probes.splits=[train, train]", ["probes.splits", "twice"]),
    ("probes.splits=train", ["probes.splits", "list"]),
    ("probes.max_per_class=1", ["probes.max_per_class", ">= 2"]),
    ("probes.max_per_class_splits=[val, nvel]", ["nvel"]),
    ("probes.max_classes_splits=[train]", ["max_classes_splits", "train"]),
    ("probes.max_classes=1", ["probes.max_classes"]),
    ("probes.fewshot.splits=[train]", ["probes.fewshot.splits", "train"]),
    ("probes.fewshot.ways=[1]", ["probes.fewshot.ways"]),
    ("probes.fewshot.shots=[0, 1]", ["probes.fewshot.shots"]),
    ("probes.fewshot.shots=[a]", ["probes.fewshot.shots"]),
    ("probes.fewshot.query=0", ["probes.fewshot.query"]),
    ("probes.fewshot.episodes=1", ["probes.fewshot.episodes"]),
    ("probes.fewshot.heads=[ncc, ridg]", ["ridg", "ridge"]),
    ("probes.fewshot.transform=l3", ["transform", "l2"]),
    ("probes.fewshot.power=0", ["probes.fewshot.power=0", "(0, 1]"]),
    ("probes.fewshot.power=1.5", ["probes.fewshot.power=1.5", "(0, 1]"]),
    ("probes.gc.splits=[tran]", ["tran"]),
    ("probes.gc.probes=0", ["probes.gc.probes"]),
    ("probes.gc.per_class=0", ["probes.gc.per_class"]),
    ("probes.gc.max_samples=3", ["probes.gc.max_samples"]),
    ("probes.stages.epochs=[9]", ["probes.stages.epochs", "train.epochs"]),
    ("probes.stages.epochs=[-1]", ["probes.stages.epochs"]),
    ("probes.stages.splits=[val]", ["probes.stages.splits", "val", "not a probed split"]),
    ("probes.everyy=2", ["probes.everyy", "probes.every"]),
    ("probes.fewshot.query=9", ["shot + query", "probes.fewshot"]),              # novel classes have 10 samples
    ("probes.fewshot.ways=[5]", ["5-way", "val"]),                                  # 2 val classes
])
def test_bad_probe_config_is_refused_before_any_run_directory(tmp_path, tiny_registered, override, words):
    extra = [override] + (["probes.splits=[train, test, novel]", "probes.fewshot.splits=[novel]",
                           "probes.stages.enabled=true"] if "stages.splits=[val]" in override else [])
    with pytest.raises(NclabError) as e:
        _train(tmp_path, "x", tiny_registered, extra)
    msg = str(e.value)
    assert all(w in msg for w in words) and "\n" not in msg, msg
    assert list(tmp_path.iterdir()) == []


def test_probes_enabled_without_their_callback_is_refused(tmp_path, tiny_registered):
    with pytest.raises(NclabError, match="probes.enabled is true but no callback"):
        start_run(None, [f"data.name={tiny_registered}", *BASE, "probes.enabled=true"], out=tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
    run = _train(tmp_path, "r", tiny_registered, ["train.epochs=1", "trainer.ckpt_every_steps=1"])
    (run.path / "summary.json").unlink()
    with pytest.raises(NclabError, match="no callback handles the 'probes' section"):
        resume_run(run.path)


def test_embedding_folds_batchnorm_into_the_convolutions_without_changing_features():
    """The inference copy folds eval-mode BatchNorm into the preceding convolution: the same
    features as the unfolded float64 network, the trained model untouched, and a norm that
    uses batch statistics in eval mode (no running stats) left alone."""
    torch.manual_seed(0)
    model = create_model("conv4", in_channels=1, n_classes=5, image_size=28, width=8).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):      # non-trivial statistics and affine parameters
            m.running_mean.normal_()
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    images = np.random.default_rng(0).integers(0, 256, (37, 28, 28), dtype=np.uint8)
    pre = Preprocess(28, 1, [0.2], [0.3])
    before = copy.deepcopy(model.state_dict())
    x = torch.cat(list(eval_batches(images, pre, 64)))
    with torch.no_grad():
        ref = model.double().features(x.double()).numpy()
    model.float()
    F = embed(model, images, pre, batch_size=16)
    np.testing.assert_allclose(F, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 4
    batch_stats = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3),
                                      torch.nn.BatchNorm2d(2, track_running_stats=False)).eval()
    assert isinstance(fold_batchnorm(batch_stats)[1], torch.nn.BatchNorm2d)
