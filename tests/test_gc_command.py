"""``nclab gc`` on a real run directory, and the GC regulariser switched on from the training config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nclab.cli import main
from nclab.config import DataConfig, load_config
from nclab.data.base import Dataset
from nclab.data.registry import register_dataset
from nclab.extract import load_run, split_images
from nclab.metrics.gc import gc_report
from nclab.train.run import start_run


@register_dataset("gc-test-blobs")
def _blobs(cfg: DataConfig) -> Dataset:
    """6 classes (4 source, 2 novel) x 10 images of 16x16: a bright square at a class position."""
    rng = np.random.default_rng(cfg.seed)
    images, labels = [], []
    for c in range(6):
        for _ in range(10):
            img = rng.integers(0, 40, (16, 16))
            r, k = divmod(c, 3)
            img[2 + 7 * r:7 + 7 * r, 1 + 5 * k:5 + 5 * k] += 200
            images.append(img.clip(0, 255))
            labels.append(c)
    return Dataset("gc-test-blobs", np.array(images, dtype=np.uint8), np.array(labels),
                   [f"c{c}" for c in range(6)], {"source": np.arange(4), "novel": np.array([4, 5])})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gc") / "run"
    overrides = ["data.name=gc-test-blobs", "data.holdout=2", "model.backbone=conv4", "train.epochs=2",
                 "train.batch_size=8", "trainer.progress=false", "optim.lr=0.05",
                 "train.regularizers=[{gc: {alpha: 0.001, probes: 1}}]"]
    start_run(None, overrides, out=out)
    return out


def test_training_logs_reg_gc(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    assert all(np.isfinite(r["reg_gc"]) and r["reg_gc"] > 0 for r in records)


@pytest.mark.parametrize("split,flags", [("train", []), ("novel", ["--probes", "4", "--seed", "3"])])
def test_gc_command_json_matches_python_api(run_dir, tmp_path, split, flags):
    out = tmp_path / "gc.json"
    assert main(["gc", str(run_dir), "--split", split, *flags, "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert {"gc", "gc_se", "exact", "probes", "n_samples", "geometric_collapse", "cdnv"} <= set(rec)
    loaded = load_run(run_dir)
    images = split_images(loaded, split)
    probes = int(flags[1]) if flags else None
    ref = gc_report(loaded.model.features, loaded.preprocess(images.images), torch.as_tensor(images.labels),
                    probes, seed=int(flags[3]) if flags else 0)
    assert rec["exact"] is (probes is None) and rec["probes"] == probes and rec["n_samples"] == len(images)
    assert rec["gc"] == pytest.approx(ref.gc.value, rel=1e-9)
    assert rec["geometric_collapse"] == pytest.approx(ref.geometric_collapse, rel=1e-9)
    assert rec["cdnv"] == pytest.approx(ref.cdnv, rel=1e-9)
    assert (rec["gc_se"] == 0) is (probes is None)


def test_gc_command_user_errors(run_dir, tmp_path, capsys):
    assert main(["gc", str(tmp_path), "--split", "train"]) == 2               # not a run directory
    assert main(["gc", str(run_dir), "--split", "train", "--probes", "0"]) == 2
    err = capsys.readouterr().err
    assert "not a run directory" in err and "--probes 0" in err


def test_bad_regulariser_option_is_a_config_error():
    from nclab.errors import NclabError
    from nclab.train.regularizers import build_regularizers
    cfg = load_config(None, ["train.regularizers=[{gc: {alpha: 1e-6, probes: 1, colour: red}}]"])
    with pytest.raises(NclabError, match=r"train.regularizers\[0\].gc"):
        build_regularizers(cfg.train.regularizers)
