"""collapse-reg: the arms' points, bad settings refused in one line, the analysis (seed intervals,
paired differences from CE, verdicts, correlations) against a hand computation on a synthetic
table, and a tiny end-to-end experiment whose analysis table is checked against its runs' records."""

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
from nclab.experiments.collapse_reg import analyze, points, verdict
from nclab.experiments.recipes import Profile, load_recipe
from nclab.experiments.stats import fmt_interval

ARMS = {"ce": [], "cdnv": [0.1, 1.0], "etf": [], "gc": [1e-3], "ls": [0.1, 0.3]}


def _profile(seeds=(0, 1, 2)):
    return Profile(name="t", config=None, seeds=list(seeds))


def test_points_set_every_knob_of_each_arm():
    pts = points(_profile(), {"arms": ARMS, "gc_probes": 2})
    assert len(pts) == 7 * 3 and len({p.name for p in pts}) == 21
    assert [p.name for p in pts[::3]] == ["ce_seed=0", "cdnv=0.1_seed=0", "cdnv=1_seed=0", "etf_seed=0",
                                          "gc=0.001_seed=0", "ls=0.1_seed=0", "ls=0.3_seed=0"]
    by = {p.name: p for p in pts}
    assert by["ce_seed=1"].overrides == ["train.regularizers=[]", "train.label_smoothing=0.0", "model.head=linear",
                                         "trainer.seed=1"]
    assert by["cdnv=1_seed=0"].overrides[0] == "train.regularizers=[{cdnv: {strength: 1.0}}]"
    assert by["gc=0.001_seed=2"].overrides[0] == "train.regularizers=[{gc: {alpha: 0.001, probes: 2}}]"
    assert by["etf_seed=0"].overrides[1:3] == ["train.label_smoothing=0.0", "model.head=etf"]
    assert by["ls=0.3_seed=0"].overrides[:3] == ["train.regularizers=[]", "train.label_smoothing=0.3",
                                                 "model.head=linear"]
    assert by["ls=0.3_seed=0"].params == {"arm": "ls", "strength": 0.3, "seed": 0}
    assert by["etf_seed=2"].params == {"arm": "etf", "strength": None, "seed": 2}
    # every point's config parses (the recipe's quick profile)
    from nclab.experiments.runner import plan_experiment
    plan = plan_experiment("collapse-reg", "quick")
    assert len(plan.points) == 27 and load_recipe("collapse-reg").profile("natural").settings["arms"]["cdnv"] == [1.0]


@pytest.mark.parametrize("settings, message", [
    ({"arms": {"cdnv": [1.0]}}, "'ce' is required"),
    ({"arms": {"ce": [], "cdnv": []}}, "settings.arms.cdnv: expected at least one strength"),
    ({"arms": {"ce": [0.1]}}, "settings.arms.ce: this arm takes no strength"),
    ({"arms": {"ce": [], "ls": [1.0]}}, "settings.arms.ls: expected a number in (0, 1), got 1.0"),
    ({"arms": {"ce": [], "cdnv": [0]}}, "settings.arms.cdnv: expected a number > 0, got 0"),
    ({"arms": {"ce": [], "cdnv": ["big"]}}, "got 'big'"),
    ({"arms": {"ce": [], "cdnv": [1, 1.0]}}, "lists a strength twice"),
    ({"arms": {"ce": [], "mixup": [0.2]}}, "unknown arm in collapse-reg settings.arms 'mixup'"),
    ({"arms": {"ce": [], "cdnv": 1.0}}, "expected a list of strengths"),
    ({"arms": []}, "settings.arms: expected {arm: [strengths]}"),
    ({"arms": {"ce": []}, "gc_probes": 0}, "settings.gc_probes: expected an integer >= 1"),
    ({"arms": {"ce": []}, "epochs": 3}, "unknown key 'epochs'"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(NclabError) as e:
        points(_profile(), settings)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


# --- the analysis on a synthetic table -------------------------------------------------------------

EFFECT = {"ce": 0.0, "cdnv=0.1": -0.01, "cdnv=1": -0.04, "etf": 0.0, "gc=0.001": 0.02, "ls=0.1": -0.02,
          "ls=0.3": -0.05}


def _synthetic(seeds=(0, 1, 2)) -> pd.DataFrame:
    """Tidy records at epochs 0 and 5: a seed offset shared by every setting (paired by seed) plus
    a setting effect on 5-shot accuracy (EFFECT), novel CDNV = 0.3 - accuracy effect."""
    rows = []
    rng = np.random.default_rng(0)
    offset = {s: rng.normal(0, 0.02) for s in seeds}
    for p in points(_profile(seeds), {"arms": ARMS}):
        q, name = p.params, p.name.rsplit("_seed=", 1)[0]
        e = EFFECT[name] + (rng.normal(0, 0.002) if name != "ce" else 0.0)
        acc5 = 0.9 + offset[q["seed"]] + e
        final = {"train_acc": 0.99, "test_acc": 0.95 + e / 2, "train/cdnv_debiased": 0.1 + e,
                 "novel/cdnv_debiased": 0.3 - e, "novel/cdnv": 0.35 - e, "novel/fewshot/5w1s/ncc": acc5 - 0.1,
                 "novel/fewshot/5w5s/ncc": acc5, "novel/fewshot/5w5s/ridge": acc5 + 0.01}
        for epoch, rec in ((0, {k: v / 2 for k, v in final.items() if "/" in k}), (5, final)):
            rows += [{"run": p.name, "seed": q["seed"], "arm": q["arm"], "strength": q["strength"], "epoch": epoch,
                      "step": epoch * 10, "metric": m, "value": v} for m, v in rec.items()]
    return pd.DataFrame(rows)


def test_analysis_intervals_and_paired_differences_match_a_hand_computation():
    table = _synthetic()
    out = analyze(table, {})
    s = out["summary"]
    final = table[table["epoch"] == 5].pivot_table(index=["run", "seed"], columns="metric", values="value").reset_index()
    final["setting"] = final["run"].str.rsplit("_seed=", n=1).str[0]
    acc = final.set_index(["setting", "seed"])["novel/fewshot/5w5s/ncc"]
    # a setting's interval: mean and t half-width over its seeds
    g = acc["ls=0.3"].to_numpy()
    iv = s["settings"]["ls=0.3"]["acc_5shot"]
    assert iv["n"] == 3 and iv["mean"] == pytest.approx(g.mean(), rel=1e-12)
    assert iv["ci95_t"] == pytest.approx(scipy.stats.t.ppf(0.975, 2) * g.std(ddof=1) / math.sqrt(3), rel=1e-9)
    assert s["settings"]["etf"]["strength"] is None and s["settings"]["cdnv=1"]["strength"] == 1.0
    # paired differences: per seed, then the t interval
    d = s["differences_from_ce"]["cdnv=1"]["acc_5shot"]
    per_seed = [acc["cdnv=1"][k] - acc["ce"][k] for k in (0, 1, 2)]
    assert d["per_seed"] == pytest.approx(per_seed, abs=1e-15) and d["seeds"] == [0, 1, 2]
    assert d["mean"] == pytest.approx(np.mean(per_seed)) and d["ci95_t"] == pytest.approx(
        scipy.stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / math.sqrt(3))
    # the shared seed offset cancels: clear effects are detected, none where there is none
    v = {n: s["differences_from_ce"][n]["acc_5shot"]["verdict"] for n in EFFECT if n != "ce"}
    assert v == {"cdnv=0.1": "down", "cdnv=1": "down", "etf": "no difference", "gc=0.001": "up", "ls=0.1": "down",
                 "ls=0.3": "down"}
    assert s["differences_from_ce"]["cdnv=1"]["train_cdnv"]["verdict"] == "down"
    assert "gc=0.001" in s["answer"] and "cdnv=0.1, cdnv=1, ls=0.1, ls=0.3" in s["answer"]
    # tables: one row per setting, in arm order; the first table's cells are the formatted intervals
    t0 = out["tables"][0]
    assert [r[0] for r in t0["rows"]] == list(EFFECT)
    col = t0["columns"].index("novel 5w5s NCC (%)")
    assert t0["rows"][-1][col] == fmt_interval(iv, 100, 2)
    assert [r[0] for r in out["tables"][1]["rows"]] == [n for n in EFFECT if n != "ce"]
    c = s["spearman"]["novel CDNV ~ 5-shot accuracy"]
    assert c["n"] == 21 and c["rho"] == pytest.approx(
        scipy.stats.spearmanr(final["novel/cdnv_debiased"], final["novel/fewshot/5w5s/ncc"]).statistic)


def test_verdict_needs_an_interval_excluding_zero():
    assert verdict({"mean": 0.02, "ci95_t": 0.01}) == "up"
    assert verdict({"mean": -0.02, "ci95_t": 0.01}) == "down"
    assert verdict({"mean": 0.02, "ci95_t": 0.03}) == "no difference"
    assert verdict({"mean": 0.02, "ci95_t": None}) == "n/a"


def test_analysis_of_records_that_are_not_a_collapse_reg():
    t = pd.DataFrame({"run": ["a"], "seed": [0], "epoch": [1], "step": [1], "metric": ["loss"], "value": [1.0]})
    with pytest.raises(NclabError, match="no 'arm' column"):
        analyze(t, {})


# --- the command ---------------------------------------------------------------------------------

NCLAB = [sys.executable, "-m", "nclab"]
# 12 source classes: the ETF head needs feature dim (width 16) >= 11
TINY = ["data.source_classes=12", "model.options.width=16", "train.epochs=1", "train.batch_size=32",
        "probes.max_classes=30", "probes.fewshot.episodes=40",
        "settings.arms={ce: [], cdnv: [1.0], etf: [], gc: [0.01], ls: [0.2]}"]


def test_bad_settings_on_the_command_line_exit_2_and_write_nothing(tmp_path):
    p = subprocess.run(NCLAB + ["experiment", "collapse-reg", "--out", "exp", "settings.arms={ce: [], cdnv: [-1]}"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "settings.arms.cdnv" in p.stderr, p.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_tiny_collapse_reg_analysis_matches_the_records(tmp_path):
    out = tmp_path / "exp"
    p = subprocess.run(NCLAB + ["experiment", "collapse-reg", "--out", str(out), "--workers", "2", *TINY],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    final = {}
    for q in manifest["points"]:
        recs = [json.loads(line) for line in (out / q["run"] / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in recs] == [0, 1] and all(r["probe"] for r in recs)
        arm = q["params"]["arm"]
        assert ("reg_cdnv" in recs[-1]) == (arm == "cdnv") and ("reg_gc" in recs[-1]) == (arm == "gc")
        cfg = (out / q["run"] / "config.yaml").read_text()
        assert ("head: etf" in cfg) == (arm == "etf") and ("label_smoothing: 0.2" in cfg) == (arm == "ls")
        final[q["name"]] = recs[-1]
    a = json.loads((out / "analysis.json").read_text())
    s = a["summary"]
    settings = ["ce", "cdnv=1", "etf", "gc=0.01", "ls=0.2"]
    assert list(s["settings"]) == settings and s["runs"] == 15
    table = a["tables"][0]
    for i, setting in enumerate(settings):
        for key, measure, label in (("novel/fewshot/5w5s/ncc", "acc_5shot", "novel 5w5s NCC (%)"),
                                    ("novel/cdnv_debiased", "novel_cdnv_debiased", "novel CDNV (debiased)"),
                                    ("test_acc", "test_acc", "source test acc (%)"),
                                    ("train/cdnv_debiased", "train_cdnv", "source CDNV (debiased)")):
            vals = [final[f"{setting}_seed={k}"][key] for k in (0, 1, 2)]
            iv = s["settings"][setting][measure]
            assert iv["n"] == 3 and iv["mean"] == pytest.approx(np.mean(vals), rel=1e-12)
            scale, digits = (100, 2) if "acc" in measure else (1, 4)
            assert table["rows"][i][table["columns"].index(label)] == fmt_interval(iv, scale, digits)
            if setting != "ce":
                diffs = [final[f"{setting}_seed={k}"][key] - final[f"ce_seed={k}"][key] for k in (0, 1, 2)]
                assert s["differences_from_ce"][setting][measure]["per_seed"] == pytest.approx(diffs, abs=1e-12)
    # the report draws the arms' figure and carries the analysis tables
    p = subprocess.run(NCLAB + ["report", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (out / "report" / "arm_transfer.png").is_file()
    md = (out / "report" / "report.md").read_text()
    assert "Differences from CE alone" in md
