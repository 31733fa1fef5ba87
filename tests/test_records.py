"""The tidy / wide records tables of run, experiment and sweep directories (nclab.experiments.records)."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from nclab.errors import NclabError
from nclab.experiments.records import find_runs, read_metrics, tidy_records, wide_records


def make_run(path, seed, records, tail=""):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"name": "t", "trainer": {"seed": seed}}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def rec(epoch, **kw):
    return {"epoch": epoch, "step": 10 * epoch, **kw}


@pytest.fixture
def sweep(tmp_path):
    """A sweep of 2 lr x 2 seeds: one point not started, one run with a half-written last line."""
    root = tmp_path / "sweep"
    points = []
    for lr in (0.1, 0.01):
        for seed in (0, 1):
            name = f"optim.lr={lr}_seed={seed}"
            points.append({"name": name, "run": f"runs/{name}", "overrides": [],
                           "params": {"optim.lr": lr, "seed": seed}})
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"kind": "sweep", "name": "s", "grid": {"optim.lr": [0.1, 0.01]},
                                                    "seeds": [0, 1], "points": points}))
    runs = root / "runs"
    make_run(runs / points[0]["name"], 0,
             [rec(0, probe=True, **{"novel/cdnv": 0.9, "novel/cdnv_debiased": None}),
              rec(1, loss=2.5, train_acc=0.4, **{"novel/cdnv": 0.5, "novel/cdnv_debiased": 0.55}),
              rec(2, loss=1.5, train_acc=0.6, note="text")])
    make_run(runs / points[1]["name"], 1, [rec(1, loss=2.0, train_acc=0.5)],
             tail='{"epoch": 2, "step": 20, "loss": 1.')            # being written: no newline yet
    make_run(runs / points[2]["name"], 0, [rec(1, loss=3.0), rec(2, loss=2.0)])
    # points[3] not started: no run directory
    return root


def test_tidy_columns_rows_and_values(sweep):
    t = tidy_records([sweep])
    assert list(t.columns) == ["run", "seed", "optim.lr", "epoch", "step", "metric", "value"]
    names = [p["name"] for p in json.loads((sweep / "manifest.json").read_text())["points"]]
    got = list(t.itertuples(index=False, name=None))       # metrics in order of first appearance
    n0, n1, n2 = names[:3]
    assert got == [
        (n0, 0, 0.1, 0, 0, "novel/cdnv", 0.9),                    # probe flag and null left out
        (n0, 0, 0.1, 1, 10, "novel/cdnv", 0.5), (n0, 0, 0.1, 1, 10, "novel/cdnv_debiased", 0.55),
        (n0, 0, 0.1, 1, 10, "loss", 2.5), (n0, 0, 0.1, 1, 10, "train_acc", 0.4),
        (n0, 0, 0.1, 2, 20, "loss", 1.5), (n0, 0, 0.1, 2, 20, "train_acc", 0.6),   # string left out
        (n1, 1, 0.1, 1, 10, "loss", 2.0), (n1, 1, 0.1, 1, 10, "train_acc", 0.5),   # half line skipped
        (n2, 0, 0.01, 1, 10, "loss", 3.0), (n2, 0, 0.01, 2, 20, "loss", 2.0),
    ]
    assert t["value"].dtype == "float64"


def test_wide_one_row_per_run_epoch(sweep):
    w = wide_records([sweep])
    assert list(w.columns) == ["run", "seed", "optim.lr", "epoch", "step",
                               "novel/cdnv", "novel/cdnv_debiased", "loss", "train_acc"]
    assert len(w) == 3 + 1 + 2
    assert not w.duplicated(["run", "epoch"]).any()
    first = w.iloc[0]
    assert first["epoch"] == 0 and first["novel/cdnv"] == 0.9
    assert math.isnan(first["novel/cdnv_debiased"]) and math.isnan(first["loss"])
    # the tidy table is exactly the non-null cells of the wide one
    assert len(tidy_records([sweep])) == int(w.iloc[:, 5:].notna().sum().sum())


def test_seed_comes_from_the_run_config(sweep):
    # the manifest says seed 1 for the second point; its config.yaml is what the run trained with
    cfg = sweep / "runs" / "optim.lr=0.1_seed=1" / "config.yaml"
    cfg.write_text(yaml.safe_dump({"trainer": {"seed": 5}}))
    assert set(tidy_records([sweep]).query("run == 'optim.lr=0.1_seed=1'")["seed"]) == {5}


def test_bare_run_has_no_param_columns(sweep):
    run = sweep / "runs" / "optim.lr=0.01_seed=0"
    t = tidy_records([run])
    assert list(t.columns) == ["run", "seed", "epoch", "step", "metric", "value"]
    assert set(t["run"]) == {"optim.lr=0.01_seed=0"} and t["value"].tolist() == [3.0, 2.0]


def test_nothing_started_gives_an_empty_table(tmp_path):
    point = {"name": "a", "run": "runs/a", "params": {"x": 1}}
    (tmp_path / "manifest.json").write_text(json.dumps({"points": [point]}))
    t = tidy_records([tmp_path])
    assert t.empty and list(t.columns) == ["run", "seed", "epoch", "step", "metric", "value"]


def test_same_names_in_two_sweeps_stay_distinct(tmp_path):
    for d in ("a", "b"):
        make_run(tmp_path / d / "run", 0, [rec(1, loss=float(d == "a"))])
    t = tidy_records([tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "a" / "run"])
    assert t[["run", "value"]].values.tolist() == [["a/run", 1.0], ["b/run", 0.0]]


def test_read_metrics_truncation_and_corruption(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"epoch": 1}\n{"epoch": 2, "lo')
    assert read_metrics(p) == [{"epoch": 1}]
    p.write_text('{"epoch": 1}\n{"epoch": 2, "lo\n{"epoch": 3}\n')
    with pytest.raises(NclabError, match=r"metrics.jsonl: line 2 is not valid JSON"):
        read_metrics(p)
    p.write_text('{"loss": 1}\n')
    with pytest.raises(NclabError, match="integer 'epoch'"):
        read_metrics(p)
    assert read_metrics(tmp_path / "absent.jsonl") == []


def test_bad_inputs(tmp_path):
    with pytest.raises(NclabError, match="no such directory"):
        find_runs([tmp_path / "missing"])
    with pytest.raises(NclabError, match="not a run, experiment or sweep directory"):
        find_runs([tmp_path])
    (tmp_path / "manifest.json").write_text('{"points": [{"name": 3}]}')
    with pytest.raises(NclabError, match=r"manifest.json: points\[0\]"):
        find_runs([tmp_path])
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(NclabError, match="manifest.json: not valid JSON"):
        find_runs([tmp_path])
