"""Sweeps: grid parsing, point naming, the manifest (extend, refuse a different sweep), and real
sweeps of tiny runs: idempotent, resumable, failures reported while the rest goes on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nclab.errors import NclabError
from nclab.experiments.sweep import Sweep, format_value, grid_points, parse_grid, split_values

NCLAB = [sys.executable, "-m", "nclab"]
TINY = ["data.name=glyphs", "data.source_classes=12", "model.options.width=8", "train.epochs=1",
        "train.batch_size=32", "trainer.progress=false"]


def test_split_values_respects_brackets():
    assert split_values("0.05,0.1") == ["0.05", "0.1"]
    assert split_values("[1, 2],[3],{a: 1, b: 2}") == ["[1, 2]", "[3]", "{a: 1, b: 2}"]
    for bad in ("", "1,,2", "[1,2", "1,"):
        with pytest.raises(NclabError):
            split_values(bad)


def test_parse_grid_types_values_like_overrides():
    g = parse_grid(["optim.lr=0.05,1e-3", "data.augment=true,false", "train.regularizers=[{gc: {alpha: 1e-6}}],[]"])
    assert g == {"optim.lr": [0.05, 1e-3], "data.augment": [True, False],
                 "train.regularizers": [[{"gc": {"alpha": 1e-6}}], []]}
    with pytest.raises(NclabError, match="given twice"):
        parse_grid(["optim.lr=1", "optim.lr=2"])
    with pytest.raises(NclabError, match="key=value1,value2"):
        parse_grid(["optim.lr"])


def test_format_value_round_trips_through_an_override():
    from nclab.config import parse_override
    for v in (0.05, 1e-6, 100, True, None, [1, 5], {"gc": {"alpha": 1e-6}}, "a/b"):
        assert parse_override(f"k={format_value(v)}")[1] == v


def test_grid_points_is_the_cartesian_product_times_seeds():
    pts = grid_points({"optim.lr": [0.05, 0.1], "train.batch_size": [64, 128, 256]}, [0, 1])
    assert len(pts) == 12 and len({p.name for p in pts}) == 12
    assert pts[0].params == {"optim.lr": 0.05, "train.batch_size": 64, "seed": 0}
    assert pts[0].overrides == ["optim.lr=0.05", "train.batch_size=64", "trainer.seed=0"]
    assert pts[1].name == "optim.lr=0.05_train.batch_size=64_seed=1"
    assert [p.params["seed"] for p in grid_points({}, [3, 4])] == [3, 4]
    with pytest.raises(NclabError, match="share the name"):
        grid_points({"k": ["a/b", "a-b"]}, [0])


def _prepare(root, grid, seeds=(0,), overrides=TINY):
    return Sweep.prepare(root, kind="sweep", name="t", base_config=None, overrides=list(overrides), grid=grid,
                         seeds=list(seeds), points=grid_points(grid, list(seeds)))


def test_manifest_extends_with_new_points_only_and_refuses_another_sweep(tmp_path):
    s = _prepare(tmp_path / "sw", {"optim.lr": [0.05, 0.1]})
    first = s.manifest()
    assert [p["name"] for p in first["points"]] == ["optim.lr=0.05_seed=0", "optim.lr=0.1_seed=0"]
    s = _prepare(tmp_path / "sw", {"optim.lr": [0.1, 0.2]}, seeds=(0, 1))
    m = s.manifest()
    assert [p["name"] for p in m["points"]][:2] == [p["name"] for p in first["points"]]
    assert len(m["points"]) == 5 and m["grid"] == {"optim.lr": [0.05, 0.1, 0.2]} and m["seeds"] == [0, 1]
    assert m["created"] == first["created"]
    with pytest.raises(NclabError, match="different sweep"):
        _prepare(tmp_path / "sw", {"optim.lr": [0.1]}, overrides=TINY + ["train.epochs=2"])
    before = (tmp_path / "sw" / "manifest.json").read_text()
    with pytest.raises(NclabError, match="point optim.lr=x_seed=0"):
        _prepare(tmp_path / "sw", {"optim.lr": ["x"]})                  # checked before writing
    assert (tmp_path / "sw" / "manifest.json").read_text() == before


def _cli(*args, **kw):
    return subprocess.run(NCLAB + list(args), capture_output=True, text=True, **kw)


def _summaries(root):
    return {p.parent.name: p.stat().st_mtime_ns for p in (root / "runs").glob("*/summary.json")}


@pytest.mark.slow
def test_sweep_is_idempotent_extends_and_reports_failures(tmp_path):
    import pandas as pd
    root = tmp_path / "sw"
    p = _cli("sweep", "quickstart", "--grid", "optim.lr=0.05,0.1", "--out", str(root), "--workers", "2", *TINY)
    assert p.returncode == 0, p.stderr
    first = _summaries(root)
    assert sorted(first) == ["optim.lr=0.05_seed=0", "optim.lr=0.1_seed=0"]
    table = pd.read_csv(root / "results.csv")
    assert set(table["run"]) == set(first) and set(table["optim.lr"]) == {0.05, 0.1}
    loss = table[table["metric"] == "loss"].set_index("run")["value"]
    for name in first:                        # the table holds exactly each run's records
        rec = json.loads((root / "runs" / name / "metrics.jsonl").read_text().splitlines()[-1])
        assert loss[name] == pytest.approx(rec["loss"], rel=1e-12)

    p = _cli("sweep", "quickstart", "--grid", "optim.lr=0.05,0.1", "--out", str(root), *TINY)
    assert p.returncode == 0 and _summaries(root) == first           # nothing ran again
    # a larger grid adds only its new point; a bad value fails alone, reported, the sweep goes on
    p = _cli("sweep", "quickstart", "--grid", "optim.lr=0.05,0.1,0.2", "--grid", "train.batch_size=32",
             "--out", str(root), *TINY)
    assert p.returncode == 2 and "swept keys" in p.stderr and p.stderr.count("\n") == 1   # a new key: refused
    p = _cli("sweep", "quickstart", "--grid", "optim.lr=0.05,0.1,0.2,-1", "--out", str(root), *TINY)
    assert p.returncode == 1
    now = _summaries(root)
    assert {k: v for k, v in now.items() if k in first} == first and "optim.lr=0.2_seed=0" in now
    assert "optim.lr=-1_seed=0" not in now and "optim.lr=-1_seed=0" in p.stdout


TIMING = ("seconds", "probe_seconds")


def _table(root):
    import pandas as pd
    t = pd.read_csv(root / "results.csv")
    return t[~t["metric"].isin(TIMING)].sort_values(["run", "epoch", "metric"]).reset_index(drop=True)


@pytest.mark.slow
def test_sweep_killed_with_its_workers_and_rerun_gives_the_uninterrupted_table(tmp_path):
    import os
    import signal
    import time

    import pandas as pd
    args = ["sweep", "quickstart", "--grid", "optim.lr=0.05,0.1", *TINY, "train.epochs=2",
            "trainer.ckpt_every_steps=2"]
    ref = tmp_path / "ref"
    p = _cli(*args, "--out", str(ref))
    assert p.returncode == 0, p.stderr

    cut = tmp_path / "cut"
    proc = subprocess.Popen(NCLAB + args + ["--out", str(cut)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline:           # kill once a point is done and the next one has a checkpoint
        done = list((cut / "runs").glob("*/summary.json")) if (cut / "runs").exists() else []
        ckpts = [c for c in (cut / "runs").glob("*/checkpoints/latest.json")
                 if not (c.parent.parent / "summary.json").exists()] if done else []
        if done and ckpts:
            break
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list((cut / "runs").glob("*/summary.json"))) == 1

    p = _cli(*args, "--out", str(cut))
    assert p.returncode == 0, p.stderr
    a, b = _table(ref), _table(cut)
    assert len(a) == len(b) and not b.duplicated(["run", "epoch", "metric"]).any()
    pd.testing.assert_frame_equal(a, b)
