"""Few-shot evaluation of runs as the field reports it (nclab.experiments.transfer, `nclab evaluate`)."""

import json
import shutil

import numpy as np
import pytest
import torch
from scipy import stats

import nclab
from nclab.cli import main
from nclab.errors import NclabError
from nclab.experiments.transfer import (FIELD_TRANSFORMS, evaluate_transfer, head_transforms, paired_differences,
                                       seed_spread)
from nclab.extract import features_of_split, load_run
from nclab.fewshot import EpisodeSampler
from nclab.fewshot.transforms import base_mean, power_transform
from nclab.train.run import start_run

BASE = ["train.epochs=2", "train.batch_size=20", "trainer.progress=false", "trainer.threads=1",
        "optim.lr=0.05", "model.options.width=16"]


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, tiny_registered):
    tmp = tmp_path_factory.mktemp("seeds")
    return [start_run(None, [f"data.name={tiny_registered}", f"trainer.seed={s}"] + BASE, out=tmp / f"s{s}").path
            for s in (0, 1)]


def nearest_mean_by_hand(x: np.ndarray, ep) -> np.ndarray:
    """Per-episode accuracy of the nearest class mean (squared Euclidean) on float64 features ``x``."""
    means = x[ep.support].mean(2)                                               # E x way x d
    d2 = ((x[ep.queries][:, :, :, None, :] - means[:, None, None]) ** 2).sum(-1)   # E x way x q x way
    return (d2.argmin(-1) == np.arange(ep.way)[None, :, None]).mean((1, 2))


def test_head_transforms():
    assert head_transforms(["ncc", "logistic"]) == {"ncc": "center+l2", "logistic": "l2"}
    assert head_transforms(["ncc", "ridge"], "l2") == {"ncc": "l2", "ridge": "l2"}
    assert head_transforms(["ncc", "logistic"], {"logistic": "center+l2"}) == {"ncc": "center+l2",
                                                                              "logistic": "center+l2"}
    assert set(FIELD_TRANSFORMS) >= {"ncc", "ridge", "logistic"}
    with pytest.raises(NclabError, match="ridge"):
        head_transforms(["ncc"], {"ridge": "l2"})
    with pytest.raises(NclabError, match="center"):
        head_transforms(["ncc"], "centre")
    with pytest.raises(NclabError, match="head"):
        head_transforms(["nearest"])


def test_seed_spread_is_the_t_interval_of_the_run_means():
    s = seed_spread([0.9, 0.92, 0.95])
    sd = float(np.std([0.9, 0.92, 0.95], ddof=1))
    assert s["mean"] == pytest.approx(0.9233333333333) and s["seed_std"] == pytest.approx(sd)
    assert s["seed_ci95_t"] == pytest.approx(stats.t.ppf(0.975, 2) * sd / np.sqrt(3))
    assert seed_spread([0.5])["seed_std"] is None


def test_each_head_sees_its_transform_on_shared_episodes(two_seeds):
    ev = evaluate_transfer(two_seeds, way=[2, 3], shot=[1, 2], query=3, episodes=40, heads=("ncc", "logistic"), seed=4)
    assert len(ev.rows) == 2 * 2 * 2 * 2 and len(ev.summary) == 2 * 2 * 2
    for run in two_seeds:
        loaded = load_run(run)
        F = torch.as_tensor(features_of_split(loaded, "novel").features)
        y = features_of_split(loaded, "novel").labels
        m = torch.as_tensor(features_of_split(loaded, "train").features).double().mean(0).float()
        cl2n = torch.nn.functional.normalize(F - m, dim=1)           # SimpleShot CL2N, by hand
        for k in (2, 3):
            sets = [EpisodeSampler(k, n, 3, 40, 4).sample(y) for n in (1, 2)]
            ref = {(r["shot"], "ncc"): r["mean"] for r in nclab.fewshot(cl2n, y, way=k, shot=(1, 2), query=3, episodes=40,
                                                                         heads=("ncc",), transform="none", episode_sets=sets)}
            ref.update({(r["shot"], "logistic"): r["mean"] for r in nclab.fewshot(F, y, way=k, shot=(1, 2), query=3,
                                                                                   episodes=40, heads=("logistic",),
                                                                                   transform="l2", episode_sets=sets)})
            got = {(r["shot"], r["head"]): r["mean"] for r in ev.rows if r["run"] == str(run) and r["way"] == k}
            assert got.keys() == ref.keys()
            assert all(got[key] == pytest.approx(ref[key], abs=1e-12) for key in ref)
    for s in ev.summary:
        means = [r["mean"] for r in ev.rows if (r["way"], r["shot"], r["head"]) == (s["way"], s["shot"], s["head"])]
        assert s["n_runs"] == 2 and s["mean"] == pytest.approx(np.mean(means))
        assert s["seed_std"] == pytest.approx(np.std(means, ddof=1))
    assert {r["seed"] for r in ev.rows} == {0, 1}


def test_episode_accuracies_and_the_paired_difference(two_seeds, tmp_path):
    ev = evaluate_transfer(two_seeds, way=3, shot=[1, 2], query=4, episodes=50, heads=("ncc", "ridge"), seed=2)
    # each run's per-episode NCC accuracies against a float64 nearest-mean by hand on the CL2N features
    for run in two_seeds:
        loaded = load_run(run)
        F = features_of_split(loaded, "novel").features.astype(np.float64)
        y = features_of_split(loaded, "novel").labels
        x = F - features_of_split(loaded, "train").features.astype(np.float64).mean(0)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        for n in (1, 2):
            hand = nearest_mean_by_hand(x, EpisodeSampler(3, n, 4, 50, 2).sample(y))
            (row,) = [r for r in ev.rows if r["run"] == str(run) and r["shot"] == n and r["head"] == "ncc"]
            assert np.allclose(row["episode_accuracies"], hand, atol=1e-12)
            assert row["mean"] == pytest.approx(np.mean(row["episode_accuracies"]), abs=1e-12)
    paired = paired_differences(ev)
    assert ev.paired is paired and len(paired) == len(ev.summary)
    acc = {(r["run"], r["shot"], r["head"]): np.asarray(r["episode_accuracies"]) for r in ev.rows}
    for p in paired:
        assert (p["run"], p["reference"]) == (str(two_seeds[1]), str(two_seeds[0]))
        d = acc[(p["run"], p["shot"], p["head"])] - acc[(p["reference"], p["shot"], p["head"])]
        assert p["diff_mean"] == pytest.approx(d.mean(), abs=1e-12)
        assert p["diff_ci95"] == pytest.approx(1.96 * d.std(ddof=1) / np.sqrt(50), abs=1e-12)
        assert (p["better"], p["worse"]) == ((d > 0).sum(), (d < 0).sum())
    # a run against a copy of itself: no difference, no spread
    shutil.copytree(two_seeds[0], tmp_path / "copy")
    same = evaluate_transfer([two_seeds[0], tmp_path / "copy"], way=3, shot=1, query=4, episodes=50, heads=("ncc",), seed=2)
    (p,) = paired_differences(same)
    assert (p["diff_mean"], p["diff_ci95"], p["better"], p["worse"]) == (0.0, 0.0, 0, 0)
    with pytest.raises(NclabError, match="reference run 2"):
        paired_differences(ev, reference=2)


def test_power_transform_is_the_signed_power():
    x = np.array([[-4.0, -0.25, 0.0, 0.09, 2.0]])
    assert np.allclose(power_transform(torch.tensor(x), 0.5).numpy(), [[-2.0, -0.5, 0.0, 0.3, np.sqrt(2.0)]], atol=1e-15)
    assert torch.equal(power_transform(torch.tensor(x), 1), torch.tensor(x))
    assert power_transform(torch.tensor(x, dtype=torch.float32), 0.7).dtype == torch.float32
    for beta in (0, -0.5, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(NclabError, match=r"power transform beta: expected a number in \(0, 1\]"):
            power_transform(torch.tensor(x), beta)


def test_power_transform_before_centring_on_the_powered_base_mean(two_seeds):
    ev = evaluate_transfer(two_seeds[:1], way=3, shot=[1, 2], query=4, episodes=40, heads=("ncc",), seed=3, power=0.6)
    assert ev.settings["power"] == 0.6
    loaded = load_run(two_seeds[0])
    novel = features_of_split(loaded, "novel")                            # one embedding pass, not two
    F, y = novel.features.astype(np.float64), novel.labels
    B = features_of_split(loaded, "train").features.astype(np.float64)
    pw = lambda a: np.sign(a) * np.abs(a) ** 0.6                          # noqa: E731
    x = pw(F) - pw(B).mean(0)                                             # the base mean of the *powered* features
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    raw = pw(F) - B.mean(0)                                               # the mistake: centring on the raw base mean
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    differs = False
    for n in (1, 2):
        episodes = EpisodeSampler(3, n, 4, 40, 3).sample(y)
        hand = nearest_mean_by_hand(x, episodes)
        (row,) = [r for r in ev.rows if r["shot"] == n]
        assert np.allclose(row["episode_accuracies"], hand, atol=1e-12)
        differs |= not np.allclose(nearest_mean_by_hand(raw, episodes), hand)
    assert differs                                                        # the oracle tells the two apart
    with pytest.raises(NclabError, match="power transform beta"):
        evaluate_transfer(two_seeds[:1], way=3, shot=1, query=4, episodes=40, heads=("ncc",), power=2.0)


def test_evaluate_command(two_seeds, tmp_path, capsys):
    out = tmp_path / "ev.json"
    assert main(["evaluate", *map(str, two_seeds), "--way", "3", "--shot", "1", "--query", "3", "--episodes", "30",
                 "--head", "ncc", "ridge", "--transform", "ridge=l2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "seed 0" in text and "seed 1" in text and "center+l2" in text and "over seeds" in text
    rec = json.loads(out.read_text())
    assert rec["settings"]["transforms"] == {"ncc": "center+l2", "ridge": "l2"} and len(rec["rows"]) == 4
    assert all(len(r["episode_accuracies"]) == 30 for r in rec["rows"]) and "paired" not in rec
    assert main(["evaluate", *map(str, two_seeds), "--way", "3", "--shot", "1", "--query", "3", "--episodes", "30",
                 "--head", "ncc", "--paired", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "paired against" in text and "better / worse" in text
    (p,) = json.loads(out.read_text())["paired"]
    assert p["run"] == str(two_seeds[1]) and p["episodes"] == 30
    for runs in ([two_seeds[0]], [two_seeds[0], two_seeds[0]]):
        assert main(["evaluate", *map(str, runs), "--paired"]) == 2
        assert "--paired: expected at least 2 different runs" in capsys.readouterr().err
    assert main(["evaluate", str(two_seeds[0]), "--transform", "ncc=nope", "--head", "ncc"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["evaluate", str(two_seeds[0]), "--way", "3", "--shot", "1", "--query", "3", "--episodes", "30",
                 "--head", "ncc", "--power", "0.5", "--json", str(out)]) == 0
    assert "power transform beta 0.5" in capsys.readouterr().out
    assert json.loads(out.read_text())["settings"]["power"] == 0.5
    assert main(["evaluate", str(two_seeds[0]), "--power", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "power transform beta" in err and "got 0.0" in err and len(err.splitlines()) == 1


def test_flip_tta_applies_to_the_target_and_the_base_mean(rgb_registered, tmp_path, monkeypatch):
    import nclab.experiments.transfer as transfer
    run = start_run(None, [f"data.name={rgb_registered}", "data.augment=false"] + BASE, out=tmp_path / "rgb").path
    centred_on = []
    monkeypatch.setattr(transfer, "base_mean", lambda F: centred_on.append(F) or base_mean(F))
    ev = evaluate_transfer([run], way=3, shot=[1, 2], query=3, episodes=30, heads=("ncc",), seed=2, tta="flip")
    assert ev.settings["tta"] == "flip"
    loaded = load_run(run)
    F = torch.as_tensor(features_of_split(loaded, "novel", tta="flip").features)
    y = features_of_split(loaded, "novel").labels
    base = features_of_split(loaded, "train", tta="flip").features
    assert len(centred_on) == 1 and np.array_equal(centred_on[0], base)      # the base mean sees the mirrors too
    m = torch.as_tensor(base).double().mean(0).float()
    sets = [EpisodeSampler(3, n, 3, 30, 2).sample(y) for n in (1, 2)]
    ref = {r["shot"]: r["mean"] for r in nclab.fewshot(torch.nn.functional.normalize(F - m, dim=1), y, way=3,
                                                         shot=(1, 2), query=3, episodes=30, heads=("ncc",),
                                                         transform="none", episode_sets=sets)}
    assert {r["shot"]: r["mean"] for r in ev.rows} == pytest.approx(ref, abs=1e-12)
