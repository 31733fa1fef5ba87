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
