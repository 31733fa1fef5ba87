"""Experiment recipes: every profile of every recipe resolves to valid run configs; profiles
extend each other; a tiny nc-transfer experiment runs end to end and its analysis equals the
numbers recomputed from its runs' records."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from nclab.errors import NclabError
from nclab.experiments.recipes import expand_vars, load_recipe, recipe_names
from nclab.experiments.runner import plan_experiment, split_overrides

NCLAB = [sys.executable, "-m", "nclab"]


@pytest.mark.parametrize("name", recipe_names())
def test_every_profile_of_every_recipe_plans(name):
    recipe = load_recipe(name)
    assert recipe.question and {"quick", "paper"} <= set(recipe.profiles)
    for prof in recipe.profiles:
        plan = plan_experiment(name, prof)                  # every point's config type-checks
        assert plan.points and len({p.name for p in plan.points}) == len(plan.points)
        assert all(p.params["seed"] in plan.profile.seeds for p in plan.points)


def test_profiles_extend_and_merge_overrides(tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("name: r\nanalysis: nc_transfer\nprofiles:\n"
                 "  a: {config: quickstart, overrides: {train.epochs: 3, optim.lr: 0.2}, seeds: [1, 2]}\n"
                 "  b: {extends: a, overrides: {optim.lr: 0.3}}\n")
    rec = load_recipe(str(r))
    assert rec.profiles["b"].overrides == {"train.epochs": 3, "optim.lr": 0.3}
    assert rec.profiles["b"].seeds == [1, 2]
    r.write_text("name: r\nanalysis: nc_transfer\nprofiles:\n  a: {extends: b}\n  b: {extends: a}\n")
    with pytest.raises(NclabError, match="cycle"):
        load_recipe(str(r))
    r.write_text("name: r\nanalysis: nc_transfer\nprofiles:\n  a: {config: quickstart, epochs: 3}\n")
    with pytest.raises(NclabError, match="unknown key 'epochs'"):
        load_recipe(str(r))


def test_expand_vars_and_settings(monkeypatch):
    monkeypatch.setenv("NCLAB_T", "/data")
    assert expand_vars({"a": ["${NCLAB_T}/x", "${NCLAB_UNSET_T:-d}/y"]}) == {"a": ["/data/x", "d/y"]}
    monkeypatch.delenv("NCLAB_T")
    with pytest.raises(NclabError, match="NCLAB_T is not set"):
        expand_vars("${NCLAB_T}/x")
    assert split_overrides(["optim.lr=0.1", "settings.threshold=0.3"]) == (["optim.lr=0.1"], {"threshold": 0.3})


@pytest.mark.slow
def test_tiny_nc_transfer_experiment_analysis_matches_the_records(tmp_path):
    out = tmp_path / "exp"
    tiny = ["data.source_classes=12", "model.options.width=8", "train.epochs=2", "train.batch_size=32",
            "trainer.progress=false", "probes.max_classes=30", "probes.fewshot.episodes=40"]
    p = subprocess.run(NCLAB + ["experiment", "nc-transfer", "--out", str(out), *tiny, "--workers", "2"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "experiment" and [q["params"]["seed"] for q in manifest["points"]] == [0, 1, 2]
    runs = {q["name"]: [json.loads(line) for line in (out / q["run"] / "metrics.jsonl").read_text().splitlines()]
            for q in manifest["points"]}
    assert all([r["epoch"] for r in recs] == [0, 1, 2] for recs in runs.values())
    a = json.loads((out / "analysis.json").read_text())["summary"]
    for split in ("train", "test", "val", "novel"):
        for key, epoch in (("cdnv_debiased_epoch0", 0), ("cdnv_debiased_final", 2)):
            vals = np.array([recs[epoch][f"{split}/cdnv_debiased"] for recs in runs.values()])
            iv = a[key][split]
            half = scipy.stats.t.ppf(0.975, 2) * vals.std(ddof=1) / math.sqrt(3)
            assert iv["n"] == 3 and iv["mean"] == pytest.approx(vals.mean(), rel=1e-12)
            assert iv["ci95_t"] == pytest.approx(half, rel=1e-9)
    c = a["spearman_novel_cdnv_vs_accuracy"]["novel/fewshot/5w5s/ncc"]
    for (name, recs), r in zip(runs.items(), c["per_run"]):
        ref = scipy.stats.spearmanr([x["novel/cdnv_debiased"] for x in recs], [x["novel/fewshot/5w5s/ncc"] for x in recs])
        assert r["rho"] == pytest.approx(ref.statistic)
    # the same command again runs nothing and gives the same analysis
    before = {q: (out / "runs" / q / "summary.json").stat().st_mtime_ns for q in runs}
    p = subprocess.run(NCLAB + ["experiment", "nc-transfer", "--out", str(out), *tiny], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert before == {q: (out / "runs" / q / "summary.json").stat().st_mtime_ns for q in runs}
    assert json.loads((out / "analysis.json").read_text())["summary"] == a
