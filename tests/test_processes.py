"""Real processes: a training run killed with SIGKILL and resumed; two-process DDP; the CLI."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nclab.train.checkpoint import latest_checkpoint, load_state


NCLAB = [sys.executable, "-m", "nclab"]
SMALL = ["data.name=glyphs", "data.source_classes=40", "model.options.width=16", "train.epochs=3",
         "train.batch_size=16", "trainer.threads=1", "trainer.progress=false", "optim.lr=0.05"]


def _records(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (path / "metrics.jsonl").read_text().splitlines()]


def _cli(*args, **kw):
    return subprocess.run(NCLAB + list(args), capture_output=True, text=True, **kw)


@pytest.mark.slow
def _reference_and_killed(tmp_path, args, step):
    """Train ``args`` to the end into ref/, and into cut/ until its checkpoint has passed global
    step ``step``, then SIGKILL it. Returns (ref, cut, the killed process)."""
    ref = tmp_path / "ref"
    p = _cli("train", *args, "--out", str(ref))
    assert p.returncode == 0, p.stderr

    cut = tmp_path / "cut"
    proc = subprocess.Popen(NCLAB + ["train", *args, "--out", str(cut)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    pointer = cut / "checkpoints" / "latest.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if json.loads(pointer.read_text())["global_step"] >= step:
                break
        except (FileNotFoundError, ValueError):
            pass
        assert proc.poll() is None, "run ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return ref, cut, proc


# mid-epoch 1; mid-epoch 2 after a record, with the CPU fast path and the natural-image augmentations
@pytest.mark.parametrize("kill_after_step, options", [
    (13, ["trainer.channels_last=false"]), (47, ["trainer.channels_last=true", "trainer.precision=bf16-mixed", "data.crop_scale=[0.5, 1]",
                    "data.jitter=0.4"])])
def test_killed_run_resumes_bitwise_identical(tmp_path, kill_after_step, options):
    args = SMALL + ["trainer.ckpt_every_steps=5"] + options
    ref, cut, proc = _reference_and_killed(tmp_path, args, kill_after_step - 3)
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "summary.json").exists() and not (cut / "model.safetensors").exists()

    p = _cli("train", "--resume", str(cut))
    assert p.returncode == 0, p.stderr
    a, b = load_file(ref / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _records(ref) == _records(cut) and len(_records(cut)) == 3


@pytest.mark.slow
def test_two_process_ddp_trains_the_same_model(tmp_path):
    # Each run in a fresh `nclab train` process. tanh, not ReLU: the two runs differ by float
    # rounding (1e-9), which a ReLU can turn into a flipped activation and a 1e-5 jump.
    args = ["data.name=glyphs", "data.source_classes=20", "model.backbone=mlp",
            "model.options={hidden: [64], activation: tanh}",
            "train.epochs=2", "train.batch_size=32", "trainer.progress=false", "optim.lr=0.05"]
    for name, extra in [("one", []), ("two", ["trainer.devices=2"]), ("init", ["train.epochs=1", "optim.lr=1e-9"])]:
        p = _cli("train", *args, *extra, "--out", str(tmp_path / name))
        assert p.returncode == 0, p.stderr
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for k in a:
        diff = float((a[k] - b[k]).abs().max())
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), f"{k}: max |diff| {diff:.2e}"
    ra, rb = _records(tmp_path / "one"), _records(tmp_path / "two")
    for x, y in zip(ra, rb):
        assert x["step"] == y["step"] and abs(x["loss"] - y["loss"]) < 1e-5
        assert abs(x["train_acc"] - y["train_acc"]) < 2 / 320
    # the update moved the weights: equality above is not two untouched initialisations
    c = load_file(tmp_path / "init" / "model.safetensors")
    assert not torch.allclose(a["backbone.stages.fc1.0.weight"], c["backbone.stages.fc1.0.weight"], atol=1e-4)
    # Each rank its own random stream after the identical initialisation (dropout, DropBlock,
    # rotation turns draw from it); rank 0's is the one process's. Nothing here draws from it
    # while training, so the checkpointed states are the streams' starting points.
    one, two = (load_state(latest_checkpoint(tmp_path / n)[1])["rng"] for n in ("one", "two"))
    assert len(one) == 1 and len(two) == 2
    assert torch.equal(one[0]["torch"], two[0]["torch"]) and not torch.equal(two[0]["torch"], two[1]["torch"])


@pytest.mark.slow
def test_two_process_ddp_averages_the_same_weights(tmp_path):
    # train.ema under DDP: every rank folds the same all-reduced weights into its average, so
    # two processes deliver the average one process delivers; the checkpoint keeps the live weights.
    args = ["data.name=glyphs", "data.source_classes=20", "model.backbone=mlp",
            "model.options={hidden: [64], activation: tanh}", "train.epochs=2", "train.batch_size=32",
            "trainer.progress=false", "optim.lr=0.05", "train.ema=0.9"]
    for name, extra in [("one", []), ("two", ["trainer.devices=2"])]:
        p = _cli("train", *args, *extra, "--out", str(tmp_path / name))
        assert p.returncode == 0, p.stderr
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), f"{k}: max |diff| {float((a[k] - b[k]).abs().max()):.2e}"
    live = load_file(latest_checkpoint(tmp_path / "two")[0])
    assert any(not torch.allclose(live[k], b[k], atol=1e-4) for k in b)
    assert _records(tmp_path / "one")[-1]["test_acc"] == pytest.approx(_records(tmp_path / "two")[-1]["test_acc"], abs=0.01)


@pytest.mark.slow
def test_two_process_ddp_distills_the_same_model(tmp_path):
    # The teacher is deterministic (eval mode, no random draws), so distillation under DDP
    # trains the model one process trains, as plain CE does (the test above).
    args = ["data.name=glyphs", "data.source_classes=20", "model.backbone=mlp",
            "model.options={hidden: [64], activation: tanh}", "train.epochs=2", "train.batch_size=32",
            "trainer.progress=false", "optim.lr=0.05"]
    p = _cli("train", *args, "train.epochs=1", "--out", str(tmp_path / "teacher"))
    assert p.returncode == 0, p.stderr
    kd = f"train.regularizers=[{{distill: {{teacher: '{tmp_path / 'teacher'}', strength: 2.0}}}}]"
    for name, extra in [("one", []), ("two", ["trainer.devices=2"])]:
        p = _cli("train", *args, kd, *extra, "--out", str(tmp_path / name))
        assert p.returncode == 0, p.stderr
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert a.keys() == load_file(tmp_path / "teacher" / "model.safetensors").keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), f"{k}: max |diff| {float((a[k] - b[k]).abs().max()):.2e}"
    ra, rb = _records(tmp_path / "one"), _records(tmp_path / "two")
    for x, y in zip(ra, rb):
        assert abs(x["reg_distill"] - y["reg_distill"]) < 1e-5 and x["reg_distill"] > 1e-3


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    for sub in ["", "quickstart", "train", "features", "data", "data info", "data show", "measure", "fewshot", "gc"]:
        p = _cli(*sub.split(), "--help")
        assert p.returncode == 0 and "usage" in p.stdout, sub
    p = _cli("data", "info", "glyphs", "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert sum(v["n_classes"] for v in info["splits"].values()) >= 1500
    assert min(v["min_per_class"] for v in info["splits"].values()) >= 20
    assert set(info["splits"]) == {"source", "val", "novel"} and info["image_shape"] == [28, 28]
    p = _cli("data", "show", "glyphs", "--out", str(tmp_path / "grid.png"), "--classes", "5")
    assert p.returncode == 0 and (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"

    run = tmp_path / "run"
    p = _cli("train", *SMALL[:-2], "train.epochs=1", "--out", str(run))
    assert p.returncode == 0, p.stderr
    assert "epochs: 1" in (run / "config.yaml").read_text()
    p = _cli("features", str(run), "--split", "novel", "--out", str(tmp_path / "novel.npz"))
    assert p.returncode == 0, p.stderr
    with np.load(tmp_path / "novel.npz") as z:
        assert z["features"].shape[1] == 16 and z["features"].dtype == np.float32 and "W" not in z.files
        assert len(z["class_names"]) == info["splits"]["novel"]["n_classes"]


@pytest.mark.parametrize("args, needle", [
    (["train", "data.name=glyphz"], "glyphs"),
    (["train", "model.backbone=convv4"], "conv4"),
    (["train", "optim.lrr=0.1"], "optim.lr"),
    (["train", "data.name=omniglot", "data.root=/nonexistent/omni"], "/nonexistent/omni"),
    (["measure", "/nonexistent/f.npz"], "/nonexistent/f.npz"),
    (["features", "/nonexistent/run", "--split", "novel", "--out", "x.npz"], "/nonexistent/run"),
])
def test_cli_bad_input_exit_2_one_line_nothing_left(tmp_path, args, needle):
    p = _cli(*args, "--out", str(tmp_path / "run")) if args[0] == "train" else _cli(*args, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_unwritable_output(tmp_path):
    (tmp_path / "f").write_text("")
    p = _cli("train", "data.name=glyphs", "--out", str(tmp_path / "f" / "run"))
    assert p.returncode == 2 and str(tmp_path / "f") in p.stderr


# probes on a small glyphs run: every epoch, on subsets of the transfer classes (fast enough to kill mid-run)
PROBED = ["probes.enabled=true", "probes.max_classes=12", "probes.fewshot.episodes=50", "probes.fewshot.query=5"]


def _probe_records(path):
    return [{k: v for k, v in r.items() if k != "probe_seconds"} for r in _records(path)]


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_step", [4, 47])      # mid-epoch 1 after the epoch-0 record; mid-epoch 2
def test_killed_run_with_probes_resumes_with_the_same_records(tmp_path, kill_after_step):
    args = SMALL + PROBED + ["trainer.ckpt_every_steps=3"]
    ref, cut, proc = _reference_and_killed(tmp_path, args, kill_after_step - 1)
    assert not (cut / "summary.json").exists()
    p = _cli("train", "--resume", str(cut))
    assert p.returncode == 0, p.stderr
    got, want = _probe_records(cut), _probe_records(ref)
    assert [r["epoch"] for r in got] == [0, 1, 2, 3] and got == want
    assert all("novel/fewshot/5w5s/ridge" in r and "test/ncc_acc" in r for r in got)
    a, b = load_file(ref / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_epoch_zero_probe_equals_the_single_process_one(tmp_path):
    # rank 0 probes the initial network (the same on every rank) while the other rank waits
    args = ["data.name=glyphs", "data.source_classes=20", "model.options.width=16", "train.epochs=1",
            "train.batch_size=32", "trainer.progress=false", "trainer.threads=1", *PROBED]
    for name, extra in [("one", []), ("two", ["trainer.devices=2"])]:
        p = _cli("train", *args, *extra, "--out", str(tmp_path / name))
        assert p.returncode == 0, p.stderr
    one, two = _probe_records(tmp_path / "one"), _probe_records(tmp_path / "two")
    assert [r["epoch"] for r in two] == [0, 1] and set(two[1]) == set(one[1])
    assert set(one[0]) == set(two[0])
    for k, v in one[0].items():
        assert two[0][k] == (pytest.approx(v, rel=1e-9) if isinstance(v, float) else v), k
