"""The tpt experiment (Papyan et al. 2020): its analysis pieces against exact answers, and a tiny
run of the recipe end to end whose analysis equals the numbers recomputed from the records; the
same for a tiny minority-collapse experiment."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from nclab.errors import NclabError
from nclab.experiments.recipes import Profile
from nclab.experiments.tpt import loglog_slope, points, run_phase, tpt_onset

NCLAB = [sys.executable, "-m", "nclab"]
FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not (FASHION / "train-labels-idx1-ubyte.gz").exists()
                                   and not (FASHION / "train-labels-idx1-ubyte").exists(),
                                   reason="Fashion-MNIST IDX files (Debian dataset-fashion-mnist) absent")


def test_loglog_slope_of_a_power_law_is_its_exponent():
    e = np.array([3, 5, 9, 20, 70, 350])
    assert loglog_slope(e, 4.2 * e ** -1.7)["slope"] == pytest.approx(-1.7, abs=1e-12)
    assert loglog_slope(e, np.full(6, 0.3))["slope"] == pytest.approx(0.0, abs=1e-12)
    # non-positive values (an error of exactly 0) are left out; fewer than 3 points: no slope
    v = 2.0 * e ** 0.5
    v[[1, 3]] = 0
    out = loglog_slope(e, v)
    assert out["slope"] == pytest.approx(0.5, abs=1e-12) and out["points"] == 4
    assert loglog_slope([1, 2], [1.0, 0.5]) == {"slope": None, "points": 2}


def test_onset_is_the_first_epoch_of_zero_training_error_for_good():
    run = lambda errs: pd.DataFrame({"epoch": [0, 1, 2, 4, 8, 16], "train_error": errs})  # noqa: E731
    assert tpt_onset(run([0.0, 0.5, 0.0, 0.1, 0.0, 0.0])) == 8      # epoch 0 never counts; a relapse resets
    assert tpt_onset(run([0.9, 0.5, 0.0, 0.0, 0.0, 0.0])) == 2
    assert tpt_onset(run([0.9, 0.5, 0.2, 0.1, 0.0, 0.01])) is None
    r = run([0.9, 0.5, 0.0, 0.0, 0.0, 0.0])
    phase, onset, terminal = run_phase(r, 1 / 3)
    assert terminal and onset == 2 and phase["epoch"].tolist() == [2, 4, 8, 16]
    phase, onset, terminal = run_phase(run([0.9, 0.5, 0.2, 0.1, 0.05, 0.01]), 1 / 2)
    assert not terminal and onset is None and phase["epoch"].tolist() == [4, 8, 16]      # 16^(1/2) = 4 on


def test_points_give_each_loss_its_learning_rate():
    prof = Profile("p", None, grid={"train.loss": ["ce", "mse"]}, seeds=[0, 1])
    pts = points(prof, {"lr": {"ce": 0.0679, "mse": 0.0184}})
    assert [(p.params["train.loss"], p.overrides[0]) for p in pts] == [
        ("ce", "optim.lr=0.0679"), ("ce", "optim.lr=0.0679"), ("mse", "optim.lr=0.0184"), ("mse", "optim.lr=0.0184")]
    with pytest.raises(NclabError, match="settings.lr.mse"):
        points(prof, {"lr": {"mse": -1}})
    with pytest.raises(NclabError, match="grid needs train.loss"):
        points(Profile("p", None, grid={"optim.lr": [0.1]}), {})


def _records(out: Path) -> dict[str, list[dict]]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {q["name"]: [json.loads(x) for x in (out / q["run"] / "metrics.jsonl").read_text().splitlines()]
            for q in manifest["points"]}


@needs_fashion
@pytest.mark.slow
def test_tiny_tpt_experiment_analysis_matches_the_records(tmp_path):
    out = tmp_path / "tpt"
    tiny = ["data.train_per_class=16", "data.holdout=10", "model.options={hidden: [32]}", "train.epochs=6",
            "train.batch_size=32", "schedule.milestones=[2, 4]", "probes.points=6"]
    p = subprocess.run(NCLAB + ["experiment", "tpt", "--out", str(out), *tiny, "--workers", "2"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    runs = _records(out)
    assert len(runs) == 6                                  # CE and MSE x 3 seeds
    a = json.loads((out / "analysis.json").read_text())
    cfgs = {q: (out / "runs" / q / "config.yaml").read_text() for q in runs}
    assert all(("lr: 0.0679" in c) == ("loss: ce" in c) for c in cfgs.values())
    for loss in ("ce", "mse"):
        mine = [recs for name, recs in runs.items() if f"train.loss={loss}_" in name]
        probed = [[r for r in recs if r.get("probe") and r["epoch"] > 0] for recs in mine]
        assert all(len(pr) >= 4 for pr in probed)
        ends = [pr[-1]["train/nc1"] for pr in probed]
        iv = a["losses"][loss]["end"]["train/nc1"]
        assert iv["mean"] == pytest.approx(np.mean(ends), rel=1e-12)
        assert iv["ci95_t"] == pytest.approx(scipy.stats.t.ppf(0.975, 2) * np.std(ends, ddof=1) / math.sqrt(3), rel=1e-9)
        for entry, pr in zip([e for e in a["per_run"] if e["loss"] == loss], probed):
            err = [1 - r["train/acc"] for r in pr]
            onset = None
            for r, x in zip(pr, err):
                onset = (onset or r["epoch"]) if x == 0 else None
            assert entry["onset"] == onset
            lo, hi = entry["phase_epochs"]
            sel = [r for r in pr if lo <= r["epoch"] <= hi]
            ref = np.polyfit(np.log10([r["epoch"] for r in sel]), np.log10([r["train/nc1"] for r in sel]), 1)[0]
            assert entry["slope"]["train/nc1"] == pytest.approx(ref, rel=1e-9)
    # the report draws the terminal-phase figure
    p = subprocess.run(NCLAB + ["report", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (out / "report" / "tpt.png").is_file()


@needs_fashion
@pytest.mark.slow
def test_tiny_minority_collapse_experiment(tmp_path):
    from nclab.experiments.runner import run_experiment
    recipe = tmp_path / "mc.yaml"
    recipe.write_text(
        "name: minority-collapse\nanalysis: minority_collapse\nprofiles:\n  quick:\n    config: papyan\n"
        "    overrides: {data.name: fashion-mnist, data.holdout: 10, data.train_per_class: 20, data.majority_classes: 5,"
        " model.backbone: mlp, model.options: {hidden: [32]}, train.epochs: 2, train.batch_size: 16,"
        " trainer.accelerator: cpu, trainer.progress: false, probes.enabled: true, probes.splits: [train, test],"
        " probes.fewshot.splits: [], probes.gc.splits: [train], probes.stages.splits: [train]}\n"
        "    grid: {data.imbalance_ratio: [1, 20], model.head: [linear_nobias, etf]}\n"
        "    settings: {ufm: {dim: 16, n_minor: 1}}\n")
    res = run_experiment(str(recipe), "quick", out=tmp_path / "mc", workers=2, log=None)
    assert not res.sweep.failed
    a = json.loads((tmp_path / "mc" / "analysis.json").read_text())
    runs = _records(tmp_path / "mc")
    assert {(r["ratio"], r["head"]) for r in a["real"]} == {(1.0, "linear_nobias"), (1.0, "etf"), (20.0, "linear_nobias"),
                                                            (20.0, "etf")}
    for row in a["real"]:
        name = f"data.imbalance_ratio={row['ratio']:g}_model.head={row['head']}_seed=0"
        last = [r for r in runs[name] if r.get("probe")][-1]
        assert row["train/minority_w_cos"] == last["train/minority_w_cos"]
        assert row["test/minority_acc"] == last["test/minority_acc"]
        if row["head"] == "etf":                       # a fixed simplex ETF: -1/(C-1) by construction
            assert row["train/minority_w_cos"] == pytest.approx(-1 / 9, abs=1e-6)
    n_minor = {r["ratio"]: r["n_minor"] for r in a["ufm"]}
    assert n_minor == {1.0: 1, 20.0: 1} and {r["head"] for r in a["ufm"]} == {"learned", "etf"}
    for r in a["ufm"]:
        if r["head"] == "etf":
            assert r["minor_w_cos"] == pytest.approx(-1 / 9, abs=1e-9)
    p = subprocess.run(NCLAB + ["report", str(tmp_path / "mc")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "mc" / "report" / "minority_collapse.png").is_file()
