"""gc-sweep: the one-factor-at-a-time points, bad settings refused in one line, and the analysis
(per-setting intervals, correlations, directions) against values recomputed by hand from a
synthetic records table with known effects."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from nclab.errors import NclabError
from nclab.experiments.gc_sweep import KNOBS, analyze, points, run_table
from nclab.experiments.recipes import Profile

SETTINGS = {"base": {"lr": 0.05, "batch": 128, "l2": 5e-4, "alpha": 0}, "lr": [0.02, 0.05, 0.1],
            "batch": [64, 128, 256], "l2": [0, 5e-4, 1e-3], "alpha": [0, 1e-3, 1e-2]}


def _profile(seeds=(0, 1, 2)):
    return Profile(name="t", config=None, seeds=list(seeds))


def test_points_vary_one_knob_at_a_time_around_the_base():
    pts = points(_profile(), SETTINGS)
    assert len(pts) == 9 * 3 and len({p.name for p in pts}) == 27
    assert [p.name for p in pts[:4]] == ["base_seed=0", "base_seed=1", "base_seed=2", "lr=0.02_seed=0"]
    base = {"optim.lr": 0.05, "train.batch_size": 128, "optim.weight_decay": 5e-4, "gc_alpha": 0.0}
    for p in pts:
        changed = {k: v for k, v in p.params.items() if k in base and v != base[k]}
        knob = p.params["knob"]
        assert (knob == "base" and not changed) or list(changed) == [KNOBS[knob]]
    a = next(p for p in pts if p.name == "alpha=0.01_seed=1")
    assert a.overrides == ["optim.lr=0.05", "train.batch_size=128", "optim.weight_decay=0.0005",
                           "train.regularizers=[{gc: {alpha: 0.01, probes: 1}}]", "trainer.seed=1"]
    assert next(p for p in pts if p.name == "base_seed=0").overrides[3] == "train.regularizers=[]"
    assert next(p for p in pts if p.name == "batch=64_seed=0").params == {
        "knob": "batch", "optim.lr": 0.05, "train.batch_size": 64, "optim.weight_decay": 5e-4, "gc_alpha": 0.0,
        "seed": 0}


def test_knob_overrides_give_the_knob_its_own_series(monkeypatch):
    monkeypatch.setenv("NCLAB_DATA", "/d")
    s = dict(SETTINGS, knob_overrides={"alpha": {"data.name": "cifar10", "data.root": "${NCLAB_DATA}/c10",
                                                  "optim.lr": 0.01, "train.batch_size": 256}})
    pts = [p for p in points(_profile([0]), s) if p.params["knob"] == "alpha"]
    assert [p.name for p in pts] == ["alpha=0_seed=0", "alpha=0.001_seed=0", "alpha=0.01_seed=0"]
    assert all(p.params["optim.lr"] == 0.01 and p.params["train.batch_size"] == 256 for p in pts)
    assert pts[0].overrides == ["optim.lr=0.01", "train.batch_size=256", "optim.weight_decay=0.0005",
                                "train.regularizers=[]", "data.name=cifar10", "data.root=/d/c10", "trainer.seed=0"]


@pytest.mark.parametrize("change, message", [
    ({"lr": []}, "settings.lr: expected a non-empty list"),
    ({"lr": [0.1, 0]}, "settings.lr: expected a number > 0, got 0"),
    ({"batch": [64, 1.5]}, "settings.batch: expected an integer > 0, got 1.5"),
    ({"l2": [-1e-4]}, "settings.l2: expected a number >= 0"),
    ({"alpha": [0, "big"]}, "settings.alpha: expected a number >= 0, got 'big'"),
    ({"alpha": [0, 0.0]}, "lists a value twice"),
    ({"base": {"lr": 0.1}}, "settings.base: expected a value for each of lr, batch, l2, alpha"),
    ({"momentum": [0.9]}, "unknown key 'momentum'"),
    ({"knob_overrides": {"beta": {}}}, "settings.knob_overrides: expected {knob: {config key: value}}"),
    ({"knob_overrides": {"lr": {"train.regularizers": []}}}, "train.regularizers is the alpha knob's"),
])
def test_bad_settings_are_one_line_errors(change, message):
    with pytest.raises(NclabError, match=None) as e:
        points(_profile(), {**SETTINGS, **change})
    assert message in str(e.value) and "\n" not in str(e.value)


# --- the analysis on a synthetic table -------------------------------------------------------------

def _synthetic(noise: float = 0.0, seeds=(0, 1, 2)) -> pd.DataFrame:
    """Tidy records of every point at epochs 0 and 8 where GC follows the paper's directions;
    CDNV = 0.002 GC (+ noise), accuracy = 1 - CDNV."""
    rng = np.random.default_rng(0)
    rows = []
    for p in points(_profile(seeds), SETTINGS):
        q = p.params
        gc = 50 * (0.05 / q["optim.lr"]) ** 0.3 * (q["train.batch_size"] / 128) ** 0.2 \
            * (1 - 100 * q["optim.weight_decay"]) * (1 - 10 * q["gc_alpha"]) * (1 + noise * rng.normal())
        cdnv = 0.002 * gc * (1 + noise * rng.normal())
        final = {"train/gc": gc, "train/geometric_collapse": gc / 300, "novel/geometric_collapse": gc / 200,
                 "novel/cdnv": 0.9 * cdnv, "novel/cdnv_debiased": cdnv, "novel/fewshot/5w5s/ncc": 1 - cdnv,
                 "novel/fewshot/5w5s/ridge": 1 - 1.1 * cdnv}
        for epoch, rec in ((0, {k: 2 * v for k, v in final.items()}), (8, final)):
            rec = dict(rec, loss=1.0)
            rows += [{"run": p.name, "seed": q["seed"], **{k: v for k, v in q.items() if k != "seed"},
                      "epoch": epoch, "step": epoch * 10, "metric": m, "value": v} for m, v in rec.items()]
    return pd.DataFrame(rows)


def test_analysis_per_setting_correlations_and_directions_match_a_hand_computation():
    table = _synthetic(noise=0.05)
    out = analyze(table, {})
    s = out["summary"]
    final = table[table["epoch"] == 8].pivot_table(index=["run", "seed", "knob"], columns="metric",
                                                   values="value").reset_index()
    # a setting's interval: mean and t half-width over its three seeds
    g = final[final["run"].str.startswith("lr=0.1_")]["train/gc"].to_numpy()
    iv = s["settings"]["lr=0.1"]["gc"]
    assert iv["n"] == 3 and iv["mean"] == pytest.approx(g.mean(), rel=1e-12)
    assert iv["ci95_t"] == pytest.approx(scipy.stats.t.ppf(0.975, 2) * g.std(ddof=1) / math.sqrt(3), rel=1e-9)
    # correlations over all 27 runs
    c = s["spearman"]["GC ~ CDNV"]
    assert c["n"] == 27 and c["rho"] == pytest.approx(
        scipy.stats.spearmanr(final["train/gc"], final["novel/cdnv_debiased"]).statistic)
    assert c["lo"] <= c["rho"] <= c["hi"]
    assert s["spearman"]["CDNV ~ accuracy"]["rho"] == pytest.approx(-1.0)       # accuracy = 1 - CDNV exactly
    # directions: every knob moves GC, CDNV and accuracy the paper's way in this table
    assert s["directions_compared"] == 12 and s["agreeing"] == 12
    d = s["directions"]["batch"]["gc"]
    assert d["paper"] == 1 and d["sign"] == 1 and d["values"] == [64, 128, 256] and d["seeds_agreeing"] == 3
    runs = run_table(table)
    sb = runs[(runs["knob"].isin(["base", "batch"]))]
    assert d["rho"] == pytest.approx(scipy.stats.spearmanr(sb["batch"], sb["gc"]).statistic)
    per = {seed: scipy.stats.spearmanr(g["batch"], g["gc"]).statistic for seed, g in sb.groupby("seed")}
    assert d["per_seed"] == pytest.approx(per)
    diffs = [g[g["batch"] == 256]["gc"].mean() - g[g["batch"] == 64]["gc"].mean() for _, g in sb.groupby("seed")]
    assert d["change"]["mean"] == pytest.approx(np.mean(diffs))
    titles = [t["title"] for t in out["tables"]]
    assert titles[0].startswith("Every setting") and titles[2].startswith("Directions")
    assert len(out["tables"][0]["rows"]) == 9 and len(out["tables"][2]["rows"]) == 12


def test_a_direction_against_the_paper_is_reported_as_such():
    table = _synthetic()
    lr = table["optim.lr"]
    hit = (table["metric"] == "train/gc") & (table["knob"] == "lr")
    table.loc[hit, "value"] = 100 * lr[hit]              # GC now rises with lr, against the paper
    d = analyze(table, {})["summary"]["directions"]["lr"]
    assert d["gc"]["sign"] == 1 and d["gc"]["paper"] == -1 and not d["gc"]["agrees"]
    assert d["cdnv_debiased"]["agrees"] and d["acc_ncc"]["agrees"]
    rows = analyze(table, {})["tables"][2]["rows"]
    assert rows[0][:5] == ["lr up", "0.02, 0.05, 0.1", "source GC", "down", "up"] and rows[0][-1] == "NO"


def test_within_task_runs_use_the_test_split_and_stay_out_of_the_correlations():
    table = _synthetic()
    alpha = table["knob"] == "alpha"
    for novel, test in (("novel/cdnv_debiased", "test/cdnv_debiased"), ("novel/cdnv", "test/cdnv"),
                        ("novel/fewshot/5w5s/ncc", "test/ncc_acc")):
        table.loc[alpha & (table["metric"] == novel), "metric"] = test
    table = table[~(alpha & table["metric"].str.startswith("novel/"))]
    out = analyze(table, {})
    s = out["summary"]
    assert s["settings"]["alpha=0.01"]["target"] == "test" and s["settings"]["lr=0.1"]["target"] == "novel"
    assert s["spearman"]["GC ~ CDNV"]["n"] == 27 - 6
    assert s["directions"]["alpha"]["cdnv_debiased"]["target"] == "test"
    assert s["directions"]["alpha"]["acc_ncc"]["agrees"]


def test_analysis_of_records_that_are_not_a_gc_sweep():
    t = pd.DataFrame({"run": ["a"], "seed": [0], "epoch": [1], "step": [1], "metric": ["loss"], "value": [1.0]})
    with pytest.raises(NclabError, match="no 'knob' column"):
        analyze(t, {})


def test_the_bootstraps_rank_correlation_is_scipys_spearman():
    from nclab.experiments.stats import _average_ranks, rank_correlation
    rng = np.random.default_rng(1)
    for n in (3, 9, 27, 200):
        x, y = rng.integers(0, 4, n).astype(float), rng.normal(size=n)        # ties in x
        assert np.array_equal(_average_ranks(x), scipy.stats.rankdata(x))
        assert rank_correlation(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-14)


# --- the command ---------------------------------------------------------------------------------

NCLAB = [sys.executable, "-m", "nclab"]
TINY = ["data.source_classes=12", "model.options.width=8", "train.epochs=1", "train.batch_size=32",
        "trainer.progress=false", "probes.max_classes=30", "probes.fewshot.episodes=40", "probes.gc.max_samples=64",
        "settings.base={lr: 0.05, batch: 32, l2: 0.0005, alpha: 0}", "settings.lr=[0.05, 0.1]", "settings.batch=[32]",
        "settings.l2=[0.0005]", "settings.alpha=[0, 0.01]"]


@pytest.mark.parametrize("item, message", [
    ("settings.lr=[0.05, -0.1]", "settings.lr: expected a number > 0, got -0.1"),
    ("settings.batch=64", "settings.batch: expected a non-empty list of values, got 64"),
    ("settings.gamma=[1]", "unknown key 'gamma'"),
])
def test_bad_settings_on_the_command_line_exit_2_and_write_nothing(tmp_path, item, message):
    p = subprocess.run(NCLAB + ["experiment", "gc-sweep", "--out", "exp", item], capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_tiny_gc_sweep_analysis_matches_the_records(tmp_path):
    out = tmp_path / "exp"
    p = subprocess.run(NCLAB + ["experiment", "gc-sweep", "--out", str(out), "--workers", "2", *TINY],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [q["name"] for q in manifest["points"]][::3] == ["base_seed=0", "lr=0.1_seed=0", "alpha=0.01_seed=0"]
    final = {}
    for q in manifest["points"]:
        recs = [json.loads(line) for line in (out / q["run"] / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in recs] == [0, 1] and all(r["probe"] for r in recs)
        assert ("reg_gc" in recs[-1]) == (q["params"]["gc_alpha"] > 0)
        final[q["name"]] = recs[-1]
    a = json.loads((out / "analysis.json").read_text())
    s = a["summary"]
    for setting, prefix in (("base", "base_"), ("lr=0.1", "lr=0.1_"), ("alpha=0.01", "alpha=0.01_")):
        for key, measure in (("train/gc", "gc"), ("novel/cdnv_debiased", "cdnv_debiased"),
                             ("novel/fewshot/5w5s/ncc", "acc_ncc"), ("novel/fewshot/5w5s/ridge", "acc_ridge"),
                             ("train/geometric_collapse", "geometric_collapse")):
            vals = [r[key] for name, r in final.items() if name.startswith(prefix)]
            iv = s["settings"][setting][measure]
            assert iv["n"] == 3 and iv["mean"] == pytest.approx(np.mean(vals), rel=1e-12)
    gc = [r["train/gc"] for r in final.values()]
    cdnv = [r["novel/cdnv_debiased"] for r in final.values()]
    assert s["spearman"]["GC ~ CDNV"]["rho"] == pytest.approx(scipy.stats.spearmanr(gc, cdnv).statistic)
    assert set(s["directions"]) == {"lr", "alpha"} and s["directions_compared"] == 6
    # again: nothing is trained, the analysis is the same
    stamps = {q: (out / "runs" / q / "summary.json").stat().st_mtime_ns for q in final}
    p = subprocess.run(NCLAB + ["experiment", "gc-sweep", "--out", str(out), *TINY], capture_output=True, text=True)
    assert p.returncode == 0 and "(9 finished already)" in p.stdout
    assert stamps == {q: (out / "runs" / q / "summary.json").stat().st_mtime_ns for q in final}
    assert json.loads((out / "analysis.json").read_text())["summary"] == s
