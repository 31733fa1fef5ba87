"""Bad input, table-driven, over every subcommand and the public Python API.

Each case is one bad value. A command case runs ``nclab.cli.main`` in-process in an empty working
directory and must exit with code 2, print exactly one line naming the culprit on stderr, and
leave the working directory, the shared inputs and any run directory it touched exactly as they
were (every file hashed before and after). An API case must raise the named exception type with
a one-line message, with the same snapshot. A few cases with real processes follow the table
(a lock held by another process; two starts of one run directory)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import nclab
from nclab.errors import NclabError

TINY = ["data.name=tiny", "train.epochs=1", "train.batch_size=8", "model.options.width=8",
        "trainer.progress=false", "trainer.threads=1"]


# --- shared inputs ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def inputs(tmp_path_factory, tiny_registered) -> Path:
    """Read-only inputs of every case: feature files good and bad, config files, a finished run
    of the tiny dataset (``run``) and an episodes file."""
    from nclab.fewshot import EpisodeSampler, save_episodes
    from nclab.train.run import start_run
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 20)
    X = (rng.standard_normal((200, 16)) + 3 * rng.standard_normal((10, 16))[y]).astype(np.float32)
    names = np.array([f"c{i}" for i in range(10)])
    np.savez(d / "good.npz", features=X, labels=y, class_names=names)
    Xn = X.copy()
    Xn[3, 5] = np.nan
    np.savez(d / "nan.npz", features=Xn, labels=y, class_names=names)
    Xi = X.copy()
    Xi[17, 2] = -np.inf
    np.savez(d / "inf.npz", features=Xi, labels=y, class_names=names)
    np.savez(d / "const.npz", features=np.ones_like(X), labels=y, class_names=names)
    np.savez(d / "huge-label.npz", features=X[:2], labels=np.array([0, 10 ** 9]))
    np.savez(d / "float-labels.npz", features=X, labels=y.astype(np.float32), class_names=names)
    np.savez(d / "int-features.npz", features=y[:, None].repeat(4, 1), labels=y, class_names=names)
    np.savez(d / "3d.npz", features=X.reshape(200, 4, 4), labels=y, class_names=names)
    np.savez(d / "short-labels.npz", features=X, labels=y[:-1], class_names=names)
    np.savez(d / "negative-labels.npz", features=X, labels=y - 1, class_names=names)
    np.savez(d / "one-class.npz", features=X, labels=np.zeros(200, np.int64), class_names=names[:1])
    np.savez(d / "no-dims.npz", features=np.zeros((200, 0), np.float32), labels=y, class_names=names)
    np.savez(d / "empty.npz", features=np.zeros((0, 16), np.float32), labels=np.zeros(0, np.int64),
         class_names=names)
    np.savez(d / "no-labels.npz", features=X)
    np.savez(d / "names-2d.npz", features=X, labels=y, class_names=names.reshape(2, 5))
    np.savez(d / "W-shape.npz", features=X, labels=y, class_names=names, W=np.zeros((3, 16), np.float32))
    np.savez(d / "W-nan.npz", features=X, labels=y, class_names=names, W=np.full((10, 16), np.nan, np.float32))
    np.savez(d / "labels-out-of-range.npz", features=X, labels=y + 5, class_names=names)
    np.savez(d / "objects.npz", features=np.array([{"a": 1}] * 3, dtype=object), labels=np.arange(3))
    (d / "text.npz").write_text("not a zip file\n")
    (d / "latin1.yaml").write_bytes(b"name: \x80\x81\xfe\n")
    (d / "broken.yaml").write_text("train: {epochs: [1,\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "unknown.yaml").write_text("trian:\n  epochs: 3\n")
    (d / "a-dir").mkdir()
    (d / "empty-folder").mkdir()
    (d / "not-a-run").mkdir()
    (d / "not-a-run" / "notes.txt").write_text("hello\n")
    save_episodes(d / "episodes-1shot.npz", [EpisodeSampler(5, 1, 15, 20, 0).sample(y)])
    save_episodes(d / "episodes-other-labels.npz", [EpisodeSampler(5, 1, 15, 20, 0).sample(np.roll(y, 1))])
    (d / "episodes-text.npz").write_text("garbage")
    from PIL import Image
    for c in ("a", "b"):                 # an image folder without a split file: every class is source, none val
        (d / "no-val" / c).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(d / "no-val" / c / f"{k}.png")
    start_run(None, TINY, out=d / "run")
    return d


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots`` (hidden ones included) with its SHA-256."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            out[str(p)] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _one_line(err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert "Traceback" not in err and needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# --- damaging a copy of the run ------------------------------------------------------------------

def _unfinished(cwd: Path) -> None:
    """The run as a killed process leaves it after its last checkpoint: no final weights, no summary."""
    (cwd / "run" / "summary.json").unlink()
    (cwd / "run" / "model.safetensors").unlink()


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    """Write ``data`` to ``rel`` (a path in the run copy, or ``/name`` in the working directory)."""
    def write(cwd: Path) -> None:
        p = cwd / rel.lstrip("/") if rel.startswith("/") else cwd / "run" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return write


def _edit_json(rel: str, fn) -> Callable[[Path], None]:
    """``fn`` changes the parsed JSON object in place."""
    def edit(cwd: Path) -> None:
        p = cwd / "run" / rel
        obj = json.loads(p.read_text())
        fn(obj)
        p.write_text(json.dumps(obj))
    return edit


def _edit_config(key: str, value) -> Callable[[Path], None]:
    def edit(cwd: Path) -> None:
        cfg = yaml.safe_load((cwd / "run" / "config.yaml").read_text())
        section, field = key.split(".")
        cfg[section][field] = value
        (cwd / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return edit


def _state(fn) -> Callable[[Path], None]:
    def edit(cwd: Path) -> None:
        p = next((cwd / "run" / "checkpoints").glob("*.state.pt"))
        state = torch.load(p, weights_only=True)
        out = fn(state)
        torch.save(state if out is None else out, p)
    return edit


class _Unpicklable:
    pass


def _nan_weights(cwd: Path) -> None:
    from safetensors.torch import load_file, save_file
    w = load_file(cwd / "run" / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in w.items()},
              cwd / "run" / "model.safetensors")


# --- the table: (id, argv, text the message must contain, damage to a copy of the run) -------------
# "{in}" is the inputs folder; "run" (relative) is a fresh copy of the finished run, damaged as given.

@dataclass
class Cmd:
    id: str
    argv: str | list[str]
    needle: str
    damage: tuple = ()


def _train(*items: str) -> list[str]:
    return ["train", *TINY, *items, "--out", "new-run"]


CMD = [
    # train: wrong types (the Optional fields once raised "exceptions must derive from BaseException")
    Cmd("type-image-size", _train("data.image_size=abc"), "data.image_size"),
    Cmd("type-threads", _train("trainer.threads=abc"), "trainer.threads"),
    Cmd("type-source-classes-list", _train("data.source_classes=[1]"), "data.source_classes"),
    Cmd("type-epochs", _train("train.epochs=abc"), "train.epochs"),
    Cmd("type-lr-list", _train("optim.lr=[1]"), "optim.lr"),
    Cmd("type-nesterov", _train("optim.nesterov=3"), "optim.nesterov"),
    Cmd("type-augment", _train("data.augment=maybe"), "data.augment"),
    Cmd("type-trainval", _train("data.trainval=maybe"), "data.trainval"),
    Cmd("ema-out-of-range", _train("train.ema=1"), "train.ema=1.0"),
    Cmd("resize-without-ramp", _train("train.resize_from=8"), "train.resize_from=8"),
    Cmd("resize-larger-than-images", _train("train.resize_from=64", "train.resize_epochs=2"), "train.resize_from=64"),
    Cmd("type-options", _train("model.options=5"), "model.options"),
    Cmd("type-regularizers", _train("train.regularizers=5"), "train.regularizers"),
    Cmd("type-section-scalar", _train("data=5"), "data"),
    Cmd("type-epochs-inf", _train("train.epochs=.inf"), "train.epochs"),
    Cmd("type-epochs-fraction", _train("train.epochs=2.5"), "train.epochs"),
    Cmd("type-name-list", _train("name=[a]"), "name"),
    Cmd("key-unknown", _train("optim.lrr=0.1"), "optim.lr"),
    Cmd("key-unknown-section", _train("optm.lr=0.1"), "optim"),
    Cmd("key-empty", _train("=3"), "''"),
    Cmd("override-no-equals", ["train", "config.yaml.missing", "train.epochs", "--out", "r"], "config.yaml.missing"),
    Cmd("override-bad-yaml", _train("optim.lr=[1,"), "optim.lr=[1,"),
    Cmd("name-slash", _train("name=a/b"), "name"),
    Cmd("name-empty", _train("name="), "name"),
    Cmd("name-dotdot", _train("name=.."), "name"),
    # train: values out of range
    Cmd("lr-nan", _train("optim.lr=.nan"), "optim.lr"),
    Cmd("lr-inf", _train("optim.lr=.inf"), "optim.lr"),
    Cmd("lr-zero", _train("optim.lr=0"), "optim.lr"),
    Cmd("lr-negative", _train("optim.lr=-0.1"), "optim.lr"),
    Cmd("lr-diverges", _train("optim.lr=1e30"), "diverged"),
    Cmd("momentum-negative", _train("optim.momentum=-0.5"), "optim.momentum"),
    Cmd("momentum-above-1", _train("optim.momentum=1.5"), "optim.momentum"),
    Cmd("weight-decay-negative", _train("optim.weight_decay=-1"), "optim.weight_decay"),
    Cmd("weight-decay-nan", _train("optim.weight_decay=.nan"), "optim.weight_decay"),
    Cmd("betas-one", _train("optim.name=adam", "optim.betas=[0.9]"), "optim.betas"),
    Cmd("betas-range", _train("optim.name=adam", "optim.betas=[0.9, 1.5]"), "optim.betas[1]"),
    Cmd("betas-type", _train("optim.betas=[a, b]"), "optim.betas[0]"),
    Cmd("nesterov-no-momentum", _train("optim.nesterov=true", "optim.momentum=0"), "optim.nesterov"),
    Cmd("optimizer-unknown", _train("optim.name=rmsprop"), "rmsprop"),
    Cmd("holdout-negative", _train("data.holdout=-1"), "data.holdout"),
    Cmd("holdout-zero", _train("data.holdout=0"), "data.holdout"),
    Cmd("holdout-fractional-count", _train("data.holdout=2.5"), "data.holdout"),
    Cmd("holdout-all-samples", _train("data.holdout=10"), "data.holdout"),
    Cmd("holdout-nan", _train("data.holdout=.nan"), "data.holdout"),
    Cmd("source-classes-one", _train("data.source_classes=1"), "data.source_classes"),
    Cmd("source-classes-too-many", _train("data.source_classes=1000"), "data.source_classes"),
    Cmd("samples-per-class-zero", _train("data.samples_per_class=0"), "data.samples_per_class"),
    Cmd("data-seed-negative", _train("data.seed=-1"), "data.seed"),
    Cmd("shift-negative", _train("data.shift=-2"), "data.shift"),
    Cmd("num-workers-negative", _train("data.num_workers=-1"), "data.num_workers"),
    Cmd("image-size-zero", _train("data.image_size=0"), "data.image_size"),
    Cmd("image-size-negative", _train("data.image_size=-28"), "data.image_size"),
    Cmd("epochs-zero", _train("train.epochs=0"), "train.epochs"),
    Cmd("epochs-negative", _train("train.epochs=-3"), "train.epochs"),
    Cmd("batch-zero", _train("train.batch_size=0"), "train.batch_size"),
    Cmd("batch-above-samples", _train("train.batch_size=1000"), "train.batch_size"),
    Cmd("batch-not-multiple-of-devices", _train("trainer.devices=3"), "train.batch_size"),
    Cmd("label-smoothing-above-1", _train("train.label_smoothing=1.5"), "train.label_smoothing"),
    Cmd("label-smoothing-negative", _train("train.label_smoothing=-0.1"), "train.label_smoothing"),
    Cmd("loss-unknown", _train("train.loss=hinge"), "hinge"),
    Cmd("threads-negative", _train("trainer.threads=-1"), "trainer.threads"),
    Cmd("threads-zero", _train("trainer.threads=0"), "trainer.threads"),
    Cmd("devices-zero", _train("trainer.devices=0"), "trainer.devices"),
    Cmd("ckpt-every-negative", _train("trainer.ckpt_every_steps=-5"), "trainer.ckpt_every_steps"),
    Cmd("eval-batch-zero", _train("trainer.eval_batch_size=0"), "trainer.eval_batch_size"),
    Cmd("trainer-seed-negative", _train("trainer.seed=-1"), "trainer.seed"),
    Cmd("trainer-seed-huge", _train("trainer.seed=100000000000000000000"), "trainer.seed"),
    Cmd("precision-unknown", _train("trainer.precision=8-bit"), "8-bit"),
    Cmd("accelerator-unknown", _train("trainer.accelerator=tpu"), "tpu"),
    Cmd("accelerator-cuda-absent", _train("trainer.accelerator=cuda", "trainer.devices=64",
                                          "train.batch_size=64", "data.holdout=0.1"), "trainer.accelerator"),
    Cmd("warmup-negative", _train("schedule.warmup_epochs=-1"), "schedule.warmup_epochs"),
    Cmd("select-mode-unknown", _train("train.select_mode=best"), "train.select_mode"),
    Cmd("select-empty", _train("train.select=''"), "train.select"),
    Cmd("warmup-start-above-1", _train("schedule.warmup_start=2"), "schedule.warmup_start"),
    Cmd("gamma-zero", _train("schedule.gamma=0"), "schedule.gamma"),
    Cmd("step-size-zero", _train("schedule.name=step", "schedule.step_size=0"), "schedule.step_size"),
    Cmd("milestone-negative", _train("schedule.milestones=[-5]"), "schedule.milestones[0]"),
    Cmd("min-lr-negative", _train("schedule.min_lr=-0.1"), "schedule.min_lr"),
    Cmd("schedule-unknown", _train("schedule.name=linear"), "linear"),
    Cmd("backbone-unknown", _train("model.backbone=convv4"), "conv4"),
    Cmd("head-unknown", _train("model.head=cosinus"), "cosinus"),
    Cmd("option-unknown", _train("model.options.widht=32"), "widht"),
    Cmd("option-negative-width", _train("model.options.width=-5"), "model"),
    Cmd("option-string-width", _train("model.options.width=abc"), "model"),
    Cmd("mlp-zero-features", _train("model.backbone=mlp", "model.options={hidden: [0]}"), "model"),
    Cmd("conv-too-deep-for-image", _train("model.options.depth=9"), "model.options"),
    Cmd("regularizer-unknown", _train("train.regularizers=[{foo: {}}]"), "foo"),
    Cmd("regularizer-bad-option", _train("train.regularizers=[{gc: {alpha: 1, probes: 0}}]"), "train.regularizers[0]"),
    Cmd("regularizer-not-mapping", _train("train.regularizers=[5]"), "train.regularizers[0]"),
    Cmd("distill-teacher-missing", _train("train.regularizers=[{distill: {teacher: '{in}/nowhere'}}]"),
        "distill.teacher={in}/nowhere"),
    Cmd("distill-teacher-not-a-run", _train("train.regularizers=[{distill: {teacher: '{in}/not-a-run'}}]"),
        "not a run directory"),
    Cmd("distill-teacher-other-classes",
        _train("data.source_classes=4", "train.regularizers=[{distill: {teacher: '{in}/run'}}]"), "other source classes"),
    Cmd("distill-temperature", _train("train.regularizers=[{distill: {teacher: '{in}/run', temperature: 0}}]"),
        "train.regularizers[0].distill: temperature"),
    Cmd("regularizer-rotation-fraction", _train("train.regularizers=[{rotation: {strength: 1, fraction: 2}}]"),
        "train.regularizers[0].rotation: fraction"),
    Cmd("precision-auto-typo", _train("trainer.precision=Auto"), "Auto"),
    Cmd("trainval-without-val-classes", _train("data.name=folder", "data.root={in}/no-val", "data.holdout=1",
                                                "data.trainval=true"), "has no val classes"),
    Cmd("dataset-unknown", ["train", "data.name=glyphz", "--out", "r"], "glyphs"),
    Cmd("dataset-root-missing", ["train", "data.name=omniglot", "data.root=/nonexistent/omni", "--out", "r"],
        "/nonexistent/omni"),
    # train: config files and output folders
    Cmd("config-not-utf8", ["train", "{in}/latin1.yaml", "--out", "r"], "UTF-8"),
    Cmd("config-yaml-syntax", ["train", "{in}/broken.yaml", "--out", "r"], "broken.yaml"),
    Cmd("config-is-directory", ["train", "{in}/a-dir", "--out", "r"], "a-dir"),
    Cmd("config-missing", ["train", "{in}/missing.yaml", "--out", "r"], "missing.yaml"),
    Cmd("config-not-mapping", ["train", "{in}/list.yaml", "--out", "r"], "list.yaml"),
    Cmd("config-unknown-section", ["train", "{in}/unknown.yaml", "--out", "r"], "trian"),
    Cmd("out-exists", _train()[:-1] + ["{in}/a-dir"], "already exists"),
    Cmd("out-under-a-file", _train()[:-1] + ["{in}/text.npz/run"], "text.npz"),
    Cmd("resume-with-overrides", ["train", "--resume", "run", "train.epochs=3"], "--resume"),
    Cmd("resume-missing", ["train", "--resume", "{in}/no-such-run"], "no-such-run"),
    Cmd("resume-not-a-run", ["train", "--resume", "{in}/not-a-run"], "not a run directory"),
    Cmd("resume-a-file", ["train", "--resume", "{in}/good.npz"], "good.npz"),
    Cmd("resume-finished", ["train", "--resume", "run"], "already finished"),
    # train --resume of a damaged run (its files read back and checked)
    Cmd("resume-epochs-edited-negative", ["train", "--resume", "run"], "train.epochs",
        (_unfinished, _edit_config("train.epochs", -3))),
    Cmd("resume-lr-edited-nan", ["train", "--resume", "run"], "optim.lr",
        (_unfinished, _edit_config("optim.lr", float("nan")))),
    Cmd("resume-epochs-below-checkpoint", ["train", "--resume", "run"], "train.epochs=0",
        (_unfinished, _edit_config("train.epochs", 0))),
    Cmd("resume-ema-edited-in", ["train", "--resume", "run"], "does not fit the run's config",
        (_unfinished, _edit_config("train.ema", 0.9))),
    Cmd("resume-config-yaml-syntax", ["train", "--resume", "run"], "config.yaml",
        (_unfinished, _write("config.yaml", "data: {name: [\n"))),
    Cmd("resume-config-not-utf8", ["train", "--resume", "run"], "UTF-8",
        (_unfinished, _write("config.yaml", b"name: \xff\xfe\n"))),
    Cmd("resume-config-not-mapping", ["train", "--resume", "run"], "config.yaml",
        (_unfinished, _write("config.yaml", "[1, 2]\n"))),
    Cmd("resume-config-unknown-key", ["train", "--resume", "run"], "epochz",
        (_unfinished, _edit_config("train.epochz", 3))),
    Cmd("resume-optimizer-edited", ["train", "--resume", "run"], "state.pt",
        (_unfinished, _edit_config("optim.name", "adam"))),
    Cmd("resume-backbone-edited", ["train", "--resume", "run"], "safetensors",
        (_unfinished, _edit_config("model.options", {"width": 16}))),
    Cmd("resume-dataset-edited", ["train", "--resume", "run"], "fingerprint",
        (_unfinished, _edit_json("data.json", lambda d: d.update(fingerprint="0" * 16)))),
    Cmd("resume-data-json-missing-key", ["train", "--resume", "run"], "fingerprint",
        (_unfinished, _edit_json("data.json", lambda d: d.pop("fingerprint")))),
    Cmd("resume-data-json-truncated", ["train", "--resume", "run"], "data.json",
        (_unfinished, _write("data.json", '{"name": "tiny", "finger'))),
    Cmd("resume-preprocess-missing-key", ["train", "--resume", "run"], "std",
        (_unfinished, _edit_json("preprocess.json", lambda d: d.pop("std")))),
    Cmd("resume-latest-truncated", ["train", "--resume", "run"], "latest.json",
        (_unfinished, _write("checkpoints/latest.json", '{"global_st'))),
    Cmd("resume-latest-missing-key", ["train", "--resume", "run"], "latest.json",
        (_unfinished, _edit_json("checkpoints/latest.json", lambda d: d.pop("state")))),
    Cmd("resume-latest-wrong-type", ["train", "--resume", "run"], "latest.json",
        (_unfinished, _edit_json("checkpoints/latest.json", lambda d: d.update(weights=5)))),
    Cmd("resume-latest-escapes-folder", ["train", "--resume", "run"], "latest.json",
        (_unfinished, _edit_json("checkpoints/latest.json", lambda d: d.update(weights="../../../etc/passwd")))),
    Cmd("resume-latest-names-missing-file", ["train", "--resume", "run"], "step-00000099.state.pt",
        (_unfinished, _edit_json("checkpoints/latest.json", lambda d: d.update(state="step-00000099.state.pt")))),
    Cmd("resume-state-garbage", ["train", "--resume", "run"], "state.pt",
        (_unfinished, lambda cwd: next((cwd / "run" / "checkpoints").glob("*.state.pt")).write_bytes(b"\x00garbage"))),
    Cmd("resume-state-unsafe-pickle", ["train", "--resume", "run"], "refused",
        (_unfinished, _state(lambda s: {**s, "evil": _Unpicklable()}))),
    Cmd("resume-state-missing-key", ["train", "--resume", "run"], "'sums'",
        (_unfinished, _state(lambda s: {k: v for k, v in s.items() if k != "sums"}))),
    Cmd("resume-state-wrong-type", ["train", "--resume", "run"], "'epoch'",
        (_unfinished, _state(lambda s: {**s, "epoch": "one"}))),
    Cmd("resume-weights-garbage", ["train", "--resume", "run"], "safetensors",
        (_unfinished, lambda cwd: next((cwd / "run" / "checkpoints").glob("*.safetensors")).write_bytes(b"garbage"))),
    Cmd("resume-metrics-truncated-line", ["train", "--resume", "run"], "metrics.jsonl line 1",
        (_unfinished, _write("metrics.jsonl", '{"epoch": 1, "st'))),
    Cmd("resume-metrics-not-a-record", ["train", "--resume", "run"], "metrics.jsonl line 1",
        (_unfinished, _write("metrics.jsonl", "[1, 2, 3]\n"))),
    Cmd("resume-metrics-missing-key", ["train", "--resume", "run"], "'step'",
        (_unfinished, _write("metrics.jsonl", '{"epoch": 1}\n'))),
    Cmd("resume-metrics-not-utf8", ["train", "--resume", "run"], "metrics.jsonl line 1",
        (_unfinished, _write("metrics.jsonl", b'{"epoch": 1, "step": 4, "x": "\xff"}\n'))),
    Cmd("resume-metrics-records-missing", ["train", "--resume", "run"], "records",
        (_unfinished, _write("metrics.jsonl", ""))),
    Cmd("resume-metrics-deleted", ["train", "--resume", "run"], "records",
        (_unfinished, lambda cwd: (cwd / "run" / "metrics.jsonl").unlink())),
    # features: read back the run's files; outputs
    Cmd("features-out-is-dir", ["features", "run", "--split", "novel", "--out", "{in}/a-dir"], "a-dir"),
    Cmd("features-out-under-file", ["features", "run", "--split", "novel", "--out", "{in}/text.npz/f.npz"], "text.npz"),
    Cmd("features-run-missing", ["features", "{in}/nope", "--split", "novel", "--out", "f.npz"], "nope"),
    Cmd("features-folder-missing", ["features", "run", "--folder", "{in}/nope", "--out", "f.npz"], "nope"),
    Cmd("features-folder-empty", ["features", "run", "--folder", "{in}/empty-folder", "--out", "f.npz"],
        "empty-folder"),
    Cmd("features-split-unknown", ["features", "run", "--split", "nope", "--out", "f.npz"], "--split"),
    Cmd("features-no-out", ["features", "run", "--split", "novel"], "--out"),
    Cmd("features-tta-flip-on-characters", ["features", "run", "--split", "novel", "--tta", "flip", "--out", "f.npz"],
        "horizontal flips"),
    Cmd("features-tta-unknown", ["features", "run", "--split", "novel", "--tta", "rotate", "--out", "f.npz"], "--tta"),
    Cmd("evaluate-tta-flip-on-characters", ["evaluate", "run", "--tta", "flip", "--episodes", "10", "--way", "2"],
        "horizontal flips"),
    Cmd("evaluate-checkpoint-best-without-select", ["evaluate", "run", "--checkpoint", "best", "--episodes", "10",
                                                    "--way", "2"], "trained without train.select"),
    Cmd("evaluate-checkpoint-unknown", ["evaluate", "run", "--checkpoint", "newest", "--episodes", "10"], "--checkpoint"),
    Cmd("features-unfinished-final", ["features", "run", "--split", "novel", "--out", "f.npz"], "--checkpoint last",
        (_unfinished,)),
    Cmd("features-preprocess-missing", ["features", "run", "--split", "novel", "--out", "f.npz"], "preprocess.json",
        (lambda cwd: (cwd / "run" / "preprocess.json").unlink(),)),
    Cmd("features-preprocess-wrong-type", ["features", "run", "--split", "novel", "--out", "f.npz"], "image_size",
        (_edit_json("preprocess.json", lambda d: d.update(image_size="16")),)),
    Cmd("features-preprocess-zero-std", ["features", "run", "--split", "novel", "--out", "f.npz"], "std",
        (_edit_json("preprocess.json", lambda d: d.update(std=[0.0])),)),
    Cmd("features-preprocess-not-object", ["features", "run", "--split", "novel", "--out", "f.npz"],
        "preprocess.json", (_write("preprocess.json", "[16, 1]"),)),
    Cmd("features-preprocess-not-utf8", ["features", "run", "--split", "novel", "--out", "f.npz"],
        "preprocess.json", (_write("preprocess.json", b"\xff\xfe{}"),)),
    Cmd("features-data-json-splits-type", ["features", "run", "--split", "novel", "--out", "f.npz"], "data.json",
        (_edit_json("data.json", lambda d: d.update(splits=[1, 2])),)),
    Cmd("features-class-names-type", ["features", "run", "--split", "novel", "--out", "f.npz"], "class_names",
        (_edit_json("data.json", lambda d: d["splits"]["train"].update(class_names=[1, 2])),)),
    Cmd("features-weights-garbage", ["features", "run", "--split", "novel", "--out", "f.npz"], "model.safetensors",
        (_write("model.safetensors", b"garbage"),)),
    Cmd("features-backbone-edited", ["features", "run", "--split", "novel", "--out", "f.npz"], "config.yaml",
        (_edit_config("model.backbone", "mlp"),)),
    Cmd("features-width-edited", ["features", "run", "--split", "novel", "--out", "f.npz"], "model.safetensors",
        (_edit_config("model.options", {"width": 16}),)),
    Cmd("features-nan-weights", ["features", "run", "--split", "novel", "--out", "f.npz"], "non-finite",
        (_nan_weights,)),
    # measure
    Cmd("measure-missing", ["measure", "{in}/nope.npz"], "nope.npz"),
    Cmd("measure-not-npz", ["measure", "{in}/text.npz"], "text.npz"),
    Cmd("measure-nan", ["measure", "{in}/nan.npz"], "row 3, column 5"),
    Cmd("measure-inf", ["measure", "{in}/inf.npz"], "row 17, column 2"),
    Cmd("measure-constant", ["measure", "{in}/const.npz"], "coincide"),
    Cmd("measure-huge-label", ["measure", "{in}/huge-label.npz"], "1000000000"),
    Cmd("measure-float-labels", ["measure", "{in}/float-labels.npz"], "labels"),
    Cmd("measure-int-features", ["measure", "{in}/int-features.npz"], "features"),
    Cmd("measure-3d-features", ["measure", "{in}/3d.npz"], "features"),
    Cmd("measure-short-labels", ["measure", "{in}/short-labels.npz"], "labels"),
    Cmd("measure-negative-labels", ["measure", "{in}/negative-labels.npz"], "labels"),
    Cmd("measure-labels-beyond-names", ["measure", "{in}/labels-out-of-range.npz"], "labels"),
    Cmd("measure-one-class", ["measure", "{in}/one-class.npz"], "2"),
    Cmd("measure-no-dims", ["measure", "{in}/no-dims.npz"], "features"),
    Cmd("measure-empty", ["measure", "{in}/empty.npz"], "features"),
    Cmd("measure-no-labels", ["measure", "{in}/no-labels.npz"], "labels"),
    Cmd("measure-names-2d", ["measure", "{in}/names-2d.npz"], "class_names"),
    Cmd("measure-W-shape", ["measure", "{in}/W-shape.npz"], "'W'"),
    Cmd("measure-W-nan", ["measure", "{in}/W-nan.npz"], "'W'"),
    Cmd("measure-object-arrays", ["measure", "{in}/objects.npz"], "objects.npz"),
    Cmd("measure-json-is-dir", ["measure", "{in}/good.npz", "--json", "{in}/a-dir"], "a-dir"),
    Cmd("measure-json-under-file", ["measure", "{in}/good.npz", "--json", "{in}/text.npz/x.json"], "text.npz"),
    Cmd("measure-run-without-split", ["measure", "run"], "--split"),
    Cmd("measure-file-with-split", ["measure", "{in}/good.npz", "--split", "train"], "--split"),
    Cmd("measure-split-unknown", ["measure", "run", "--split", "nope"], "--split"),
    # fewshot
    Cmd("fewshot-nan", ["fewshot", "{in}/nan.npz", "--episodes", "10"], "row 3, column 5"),
    Cmd("fewshot-inf", ["fewshot", "{in}/inf.npz", "--episodes", "10"], "row 17, column 2"),
    Cmd("fewshot-nan-episodes-file", ["fewshot", "{in}/nan.npz", "--episodes", "10", "--episodes-file", "e.npz"],
        "non-finite"),
    Cmd("fewshot-way-1", ["fewshot", "{in}/good.npz", "--way", "1"], "way"),
    Cmd("fewshot-way-0", ["fewshot", "{in}/good.npz", "--way", "0"], "way"),
    Cmd("fewshot-way-abc", ["fewshot", "{in}/good.npz", "--way", "abc"], "--way"),
    Cmd("fewshot-shot-0", ["fewshot", "{in}/good.npz", "--shot", "0"], "shot"),
    Cmd("fewshot-query-0", ["fewshot", "{in}/good.npz", "--query", "0"], "query"),
    Cmd("fewshot-episodes-1", ["fewshot", "{in}/good.npz", "--episodes", "1"], "--episodes"),
    Cmd("fewshot-episodes-negative", ["fewshot", "{in}/good.npz", "--episodes", "-5"], "episodes"),
    Cmd("fewshot-episodes-absurd", ["fewshot", "{in}/good.npz", "--episodes", "1000000000000"], "memory"),
    Cmd("fewshot-seed-negative", ["fewshot", "{in}/good.npz", "--seed", "-1"], "seed"),
    Cmd("fewshot-head-unknown", ["fewshot", "{in}/good.npz", "--head", "svm"], "svm"),
    Cmd("fewshot-way-above-classes", ["fewshot", "{in}/good.npz", "--way", "20"], "20-way"),
    Cmd("fewshot-shot-above-samples", ["fewshot", "{in}/good.npz", "--shot", "30"], "shot + query"),
    Cmd("fewshot-transform-unknown", ["fewshot", "{in}/good.npz", "--transform", "zca"], "--transform"),
    Cmd("fewshot-power-0", ["fewshot", "{in}/good.npz", "--power", "0"], "power transform beta"),
    Cmd("fewshot-power-above-1", ["fewshot", "{in}/good.npz", "--power", "1.5"], "(0, 1]"),
    Cmd("fewshot-power-nan", ["fewshot", "{in}/good.npz", "--power", "nan"], "got nan"),
    Cmd("fewshot-power-abc", ["fewshot", "{in}/good.npz", "--power", "abc"], "--power"),
    Cmd("fewshot-episodes-file-is-dir", ["fewshot", "{in}/good.npz", "--episodes-file", "{in}/a-dir"], "a-dir"),
    Cmd("fewshot-episodes-file-garbage", ["fewshot", "{in}/good.npz", "--episodes-file", "{in}/episodes-text.npz"],
        "episodes-text.npz"),
    Cmd("fewshot-episodes-file-other-labels", ["fewshot", "{in}/good.npz", "--shot", "1", "--episodes", "20",
                                               "--episodes-file", "{in}/episodes-other-labels.npz"], "other labels"),
    Cmd("fewshot-episodes-file-other-shot", ["fewshot", "{in}/good.npz", "--shot", "5", "--episodes", "20",
                                             "--episodes-file", "{in}/episodes-1shot.npz"], "5-shot"),
    Cmd("fewshot-episodes-file-other-count", ["fewshot", "{in}/good.npz", "--shot", "1", "--episodes", "30",
                                              "--episodes-file", "{in}/episodes-1shot.npz"], "x 20"),
    Cmd("fewshot-json-under-file", ["fewshot", "{in}/good.npz", "--json", "{in}/text.npz/r.json"], "text.npz"),
    Cmd("fewshot-episodes-file-under-file", ["fewshot", "{in}/good.npz", "--episodes-file", "{in}/text.npz/e.npz"],
        "text.npz"),
    Cmd("fewshot-json-is-dir", ["fewshot", "{in}/good.npz", "--episodes", "10", "--json", "{in}/a-dir"], "a-dir"),
    Cmd("fewshot-huge-label", ["fewshot", "{in}/huge-label.npz"], "1000000000"),
    Cmd("fewshot-run-too-few-classes", ["fewshot", "run", "--split", "novel", "--way", "5"], "5-way"),
    # gc
    Cmd("gc-run-missing", ["gc", "{in}/nope"], "nope"),
    Cmd("gc-probes-zero", ["gc", "run", "--probes", "0"], "--probes"),
    Cmd("gc-probes-negative", ["gc", "run", "--probes", "-1"], "--probes"),
    Cmd("gc-exact-and-probes", ["gc", "run", "--exact", "--probes", "2"], "--probes"),
    Cmd("gc-seed-negative", ["gc", "run", "--probes", "2", "--seed", "-1"], "seed"),
    Cmd("gc-json-is-dir", ["gc", "run", "--probes", "1", "--json", "{in}/a-dir"], "a-dir"),
    Cmd("gc-json-under-file", ["gc", "run", "--json", "{in}/text.npz/g.json"], "text.npz"),
    Cmd("gc-nan-weights", ["gc", "run", "--probes", "1"], "non-finite", (_nan_weights,)),
    Cmd("gc-unfinished", ["gc", "run"], "model.safetensors", (_unfinished,)),
    # data
    Cmd("data-info-unknown", ["data", "info", "glyphz"], "glyphs"),
    Cmd("data-info-image-size-abc", ["data", "info", "glyphs", "image_size=abc"], "data.image_size"),
    Cmd("data-info-image-size-negative", ["data", "info", "glyphs", "image_size=-5"], "data.image_size"),
    Cmd("data-info-image-size-absurd", ["data", "info", "glyphs", "image_size=100000"], "memory"),
    Cmd("data-info-unknown-key", ["data", "info", "glyphs", "bogus=1"], "data.bogus"),
    Cmd("data-info-root-missing", ["data", "info", "omniglot", "--root", "/nonexistent/omni"], "/nonexistent/omni"),
    Cmd("data-info-holdout-negative", ["data", "info", "tiny", "holdout=-1"], "data.holdout"),
    Cmd("data-show-out-is-dir", ["data", "show", "tiny", "--out", "{in}/a-dir"], "a-dir"),
    Cmd("data-show-out-under-file", ["data", "show", "tiny", "--out", "{in}/text.npz/g.png"], "text.npz"),
    Cmd("data-show-classes-zero", ["data", "show", "tiny", "--out", "g.png", "--classes", "0"], "--classes"),
    Cmd("data-show-samples-negative", ["data", "show", "tiny", "--out", "g.png", "--samples", "-1"], "--samples"),
    Cmd("data-show-seed-negative", ["data", "show", "tiny", "--out", "g.png", "--seed", "-1"], "--seed"),
    Cmd("data-show-split-unknown", ["data", "show", "tiny", "--out", "g.png", "--split", "nope"], "--split"),
    Cmd("data-no-subcommand", ["data"], "data"),
    # experiment
    Cmd("experiment-no-name", ["experiment"], "NAME"),
    Cmd("experiment-unknown", ["experiment", "bogus"], "bogus"),
    Cmd("experiment-unknown-dry-run", ["experiment", "bogus", "--dry-run"], "bogus"),
    # sweep: arguments
    Cmd("sweep-grid-no-values", ["sweep", "quickstart", "--out", "sw", "--grid", "optim.lr"], "--grid"),
    Cmd("sweep-grid-empty-values", ["sweep", "quickstart", "--out", "sw", "--grid", "optim.lr="], "optim.lr"),
    Cmd("sweep-grid-unknown-key", ["sweep", "quickstart", "--out", "sw", "--grid", "optim.lrr=0.1,0.2"], "optim.lr"),
    Cmd("sweep-grid-bad-value", ["sweep", "quickstart", "--out", "sw", "--grid", "optim.lr=abc,0.1"], "optim.lr"),
    Cmd("sweep-grid-nan", ["sweep", "quickstart", "--out", "sw", "--grid", "optim.lr=.nan"], "optim.lr"),
    Cmd("sweep-grid-negative-epochs", ["sweep", "quickstart", "--out", "sw", "--grid", "train.epochs=-1,2"],
        "train.epochs"),
    Cmd("sweep-grid-repeated-value", ["sweep", "quickstart", "--out", "sw", "--grid", "optim.lr=0.1,0.1"], "name"),
    Cmd("sweep-grid-empty-key", ["sweep", "quickstart", "--out", "sw", "--grid", "=1"], "''"),
    Cmd("sweep-bad-override", ["sweep", "quickstart", "--out", "sw", "optim.lr=-1", "--grid", "train.epochs=1"],
        "optim.lr"),
    Cmd("sweep-seeds-zero", ["sweep", "quickstart", "--out", "sw", "--seeds", "0"], "--seeds"),
    Cmd("sweep-seeds-negative", ["sweep", "quickstart", "--out", "sw", "--seeds", "-2"], "--seeds"),
    Cmd("sweep-workers-zero", ["sweep", "quickstart", "--out", "sw", "--workers", "0"], "--workers"),
    Cmd("sweep-profile-with-config", ["sweep", "quickstart", "--out", "sw", "--profile", "quick"], "--profile"),
    Cmd("sweep-config-missing", ["sweep", "{in}/missing.yaml", "--out", "sw"], "missing.yaml"),
    Cmd("sweep-config-not-utf8", ["sweep", "{in}/latin1.yaml", "--out", "sw", "--grid", "optim.lr=0.1"], "UTF-8"),
    Cmd("sweep-unknown-source", ["sweep", "bogus", "--out", "sw"], "bogus"),
    Cmd("sweep-out-is-file", ["sweep", "quickstart", "--out", "{in}/text.npz", "--grid", "optim.lr=0.1"], "text.npz"),
    # sweep: continuing a directory whose manifest.json was damaged or edited
    *[Cmd(f"sweep-manifest-{name}", ["sweep", "quickstart", "--out", "sw", "--grid", "optim.lr=0.1,0.2"], needle,
          (_write("/sw/manifest.json", content),)) for name, content, needle in [
        ("truncated", '{"kind": "swe', "manifest.json"),
        ("not-utf8", b"\xff\xfe{}", "manifest.json"),
        ("not-object", "[1, 2]", "'points'"),
        ("points-not-list", '{"points": "abc"}', "'points'"),
        ("grid-list", '{"points": [], "grid": [1, 2]}', "'grid'"),
        ("seeds-unhashable", '{"points": [], "seeds": ["a", {}]}', "'seeds'"),
        ("overrides-string", '{"points": [], "overrides": "abc"}', "'overrides'"),
        ("point-without-name", '{"points": [{"run": "x"}]}', "points[0]"),
        ("point-escapes-folder", '{"points": [{"name": "../../evil", "overrides": [], "params": {}}]}', "points[0]"),
        ("other-sweep", '{"kind": "sweep", "name": "other", "points": []}', "different")]],
    # ufm
    Cmd("ufm-classes-1", ["ufm", "--classes", "1"], "classes"),
    Cmd("ufm-classes-negative", ["ufm", "--classes", "-3"], "classes"),
    Cmd("ufm-dim-0", ["ufm", "--dim", "0"], "dim"),
    Cmd("ufm-per-class-0", ["ufm", "--per-class", "0"], "n_per_class"),
    Cmd("ufm-lambda-w-negative", ["ufm", "--lambda-w", "-1"], "lambda_W"),
    Cmd("ufm-lambda-h-nan", ["ufm", "--lambda-h", "nan"], "lambda_H"),
    Cmd("ufm-lambda-b-inf", ["ufm", "--lambda-b", "inf"], "lambda_b"),
    Cmd("ufm-etf-scale-0", ["ufm", "--head", "etf", "--etf-scale", "0"], "etf_scale"),
    Cmd("ufm-lr-0", ["ufm", "--optimizer", "gd", "--lr", "0"], "lr"),
    Cmd("ufm-lr-with-lbfgs", ["ufm", "--lr", "0.1"], "lr"),
    Cmd("ufm-max-iter-0", ["ufm", "--max-iter", "0"], "max_iter"),
    Cmd("ufm-tol-nan", ["ufm", "--tol", "nan"], "tol"),
    Cmd("ufm-seed-negative", ["ufm", "--seed", "-1"], "seed"),
    Cmd("ufm-records-0", ["ufm", "--records", "0"], "records"),
    Cmd("ufm-imbalance-below-1", ["ufm", "--imbalance", "0.5"], "--imbalance"),
    Cmd("ufm-majority-without-imbalance", ["ufm", "--majority", "3"], "--majority"),
    Cmd("ufm-majority-0", ["ufm", "--imbalance", "2", "--majority", "0"], "--majority"),
    Cmd("ufm-minority-collapse-below-1", ["ufm", "--minority-collapse", "0.5"], "0.5"),
    Cmd("ufm-imbalance-and-sweep", ["ufm", "--imbalance", "2", "--minority-collapse", "2"], "--imbalance"),
    Cmd("ufm-absurd-size", ["ufm", "--classes", "100000", "--dim", "100000"], "memory"),
    Cmd("ufm-json-is-dir", ["ufm", "--json", "{in}/a-dir"], "a-dir"),
    Cmd("ufm-loss-unknown", ["ufm", "--loss", "hinge"], "--loss"),
    # report
    Cmd("report-no-dir", ["report"], "DIR"),
    Cmd("report-missing", ["report", "{in}/nope"], "nope"),
    Cmd("report-a-file", ["report", "{in}/good.npz"], "good.npz"),
    Cmd("report-not-a-run", ["report", "{in}/not-a-run"], "not-a-run"),
    Cmd("report-no-records", ["report", "run", "--out", "rep"], "no run has written a record",
        (_write("metrics.jsonl", ""),)),
    Cmd("report-metrics-broken-line", ["report", "run", "--out", "rep"], "line 1",
        (_write("metrics.jsonl", '{"epoch": 1, "st\n{"epoch": 2, "step": 8}\n'),)),
    Cmd("report-metrics-not-a-record", ["report", "run", "--out", "rep"], "line 1",
        (_write("metrics.jsonl", "[1, 2]\n"),)),
    Cmd("report-config-broken", ["report", "run", "--out", "rep"], "config.yaml",
        (_write("config.yaml", "data: {name: [\n"),)),
    Cmd("report-out-a-file", ["report", "run", "--out", "{in}/good.npz"], "good.npz"),
    Cmd("report-out-foreign-folder", ["report", "run", "--out", "{in}/not-a-run"], "not-a-run"),
    Cmd("report-out-the-run", ["report", "run", "--out", "run"], "run"),
    Cmd("report-sweep-manifest-broken", ["report", "sw"], "manifest.json", (_write("/sw/manifest.json", "{"),)),
    # quickstart, the command line itself
    Cmd("quickstart-lr-nan", ["quickstart", "optim.lr=.nan"], "optim.lr"),
    Cmd("quickstart-out-exists", ["quickstart", "--out", "{in}/a-dir"], "already exists"),
    Cmd("command-unknown", ["bogus"], "bogus"),
    Cmd("cli-option-unknown", ["train", "--bogus"], "--bogus"),
]


@pytest.mark.parametrize("case", CMD, ids=[c.id for c in CMD])
def test_command_refuses_bad_input(case: Cmd, inputs, tmp_path, monkeypatch, capsys):
    from nclab.cli import main
    monkeypatch.chdir(tmp_path)
    if "run" in case.argv:
        shutil.copytree(inputs / "run", tmp_path / "run")
    for damage in case.damage:
        damage(tmp_path)
    argv = [a.replace("{in}", str(inputs)) for a in case.argv]
    before = _snapshot(tmp_path, inputs)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:              # argparse
        rc = e.code
    assert rc == 2
    _one_line(capsys.readouterr().err, case.needle.replace("{in}", str(inputs)))
    assert _snapshot(tmp_path, inputs) == before


# --- the Python API --------------------------------------------------------------------------------

def _features(inputs: Path, name: str):
    with np.load(inputs / name) as z:
        return z["features"], z["labels"]


def _f(i: Path):
    return _features(i, "good.npz")


def _nan(i: Path):
    return _features(i, "nan.npz")


@dataclass
class Api:
    id: str
    call: Callable[[Path], object]
    needle: str
    error: type = NclabError


API = [
    *[Api(f"fewshot-nan-{h}", (lambda h: lambda i: nclab.fewshot(*_nan(i), heads=(h,), episodes=10))(h),
          "row 3, column 5") for h in ("ncc", "ncc-cosine", "ridge", "logistic", "1nn")],
    Api("fewshot-inf-tensor", lambda i: nclab.fewshot(torch.from_numpy(_features(i, "inf.npz")[0]),
                                                      _f(i)[1], episodes=10), "row 17, column 2"),
    Api("fewshot-half-nan", lambda i: nclab.fewshot(_nan(i)[0].astype(np.float16), _f(i)[1], episodes=10), "row 3"),
    Api("fewshot-1d-features", lambda i: nclab.fewshot(_f(i)[0][:, 0], _f(i)[1]), "features"),
    Api("fewshot-no-dims", lambda i: nclab.fewshot(np.zeros((200, 0), np.float32), _f(i)[1]), "features"),
    Api("fewshot-float-labels", lambda i: nclab.fewshot(_f(i)[0], _f(i)[1].astype(float)), "labels"),
    Api("fewshot-way-1", lambda i: nclab.fewshot(*_f(i), way=1), "way"),
    Api("fewshot-shot-empty", lambda i: nclab.fewshot(*_f(i), shot=()), "shot"),
    Api("fewshot-no-heads", lambda i: nclab.fewshot(*_f(i), heads=()), "head"),
    Api("fewshot-center-without-mean", lambda i: nclab.fewshot(*_f(i), transform="center"), "base"),
    Api("fewshot-center-nan-base", lambda i: nclab.fewshot(*_f(i), transform="center",
                                                           base_features=_nan(i)[0]), "base_mean"),
    Api("fewshot-center-mean-shape", lambda i: nclab.fewshot(*_f(i), transform="center+l2", base_mean=np.zeros(3)),
        "base_mean"),
    Api("fewshot-ridge-alpha-zero", lambda i: nclab.fewshot(*_f(i), heads=(nclab.fewshot.RidgeHead(alpha=0),),
                                                            episodes=10), "alpha"),
    Api("evaluate-episodes-nan", lambda i: nclab.fewshot.evaluate_episodes(
        *_nan(i), nclab.fewshot.EpisodeSampler(5, 1, 15, 10).sample(_f(i)[1])), "row 3"),
    Api("sampler-seed-negative", lambda i: nclab.fewshot.EpisodeSampler(5, 1, 15, 10, seed=-1).sample(_f(i)[1]),
        "seed"),
    Api("measure-nan", lambda i: nclab.measure(*_nan(i)), "row 3, column 5"),
    Api("measure-constant", lambda i: nclab.measure(np.ones((200, 16)), _f(i)[1]), "coincide"),
    Api("measure-huge-label", lambda i: nclab.measure(np.ones((2, 16)), np.array([0, 10 ** 9])), "memory"),
    Api("measure-global-mean", lambda i: nclab.measure(*_f(i), global_mean="median"), "global_mean"),
    Api("measure-W-inf", lambda i: nclab.measure(*_f(i), W=np.full((10, 16), np.inf)), "W"),
    Api("gc-nan-input", lambda i: nclab.geometric_complexity(torch.nn.Linear(4, 2), torch.full((3, 4), float("nan"))),
        "x: 12 non-finite"),
    Api("gc-nan-output", lambda i: nclab.geometric_complexity(lambda x: x * float("nan"), torch.ones(3, 4)), "f(x)"),
    Api("gc-seed-negative", lambda i: nclab.geometric_complexity(torch.nn.Linear(4, 2), torch.ones(3, 4), 1, seed=-2),
        "seed"),
    Api("gc-report-huge-label", lambda i: __import__("nclab.metrics.gc", fromlist=["gc_report"]).gc_report(
        torch.nn.Linear(4, 2), torch.ones(3, 4), torch.tensor([0, 1, 10 ** 9])), "needs samples"),
    Api("load-features-huge-label", lambda i: nclab.featurefile.load_features(i / "huge-label.npz"), "1000000000"),
    Api("save-features-nan", lambda i: nclab.featurefile.save_features(
        "f.npz", nclab.featurefile.FeatureSet(_nan(i)[0], _f(i)[1], [str(c) for c in range(10)])), "row 3"),
    Api("load-config-optional-type", lambda i: nclab.config.load_config(None, ["data.image_size=abc"]),
        "data.image_size"),
    Api("load-config-not-utf8", lambda i: nclab.config.load_config(i / "latin1.yaml"), "UTF-8"),
    Api("from-dict-negative-epochs", lambda i: nclab.config.from_dict({"train": {"epochs": -3}}), "train.epochs"),
    Api("start-run-typed-config-nan-lr", lambda i: __import__("nclab.train.run", fromlist=["start_run"]).start_run(
        None, cfg=nclab.config.RunConfig(optim=nclab.config.OptimConfig(lr=float("nan"))), out="r"), "optim.lr"),
    Api("resume-run-finished", lambda i: __import__("nclab.train.run", fromlist=["resume_run"]).resume_run(
        i / "run"), "already finished"),
    Api("atomic-write-to-dir", lambda i: nclab.atomic.atomic_write_json(i / "a-dir", {}), "a-dir"),
    Api("run-records-truncated", lambda i: (_copy_damaged(i, _write("metrics.jsonl", '{"epo'))).records(),
        "metrics.jsonl line 1"),
]


def _copy_damaged(inputs: Path, damage) -> "nclab.train.rundir.RunDir":
    from nclab.train.rundir import RunDir
    shutil.copytree(inputs / "run", "run")
    damage(Path.cwd())
    return RunDir.open("run")


@pytest.mark.parametrize("case", API, ids=[c.id for c in API])
def test_api_refuses_bad_input(case: Api, inputs, tmp_path, monkeypatch):
    import nclab.atomic  # noqa: F401  (for the cases above)
    import nclab.config  # noqa: F401
    import nclab.featurefile  # noqa: F401
    import nclab.train.rundir  # noqa: F401
    monkeypatch.chdir(tmp_path)
    before = _snapshot(inputs)
    with pytest.raises(case.error) as e:
        case.call(inputs)
    msg = str(e.value)
    assert "\n" not in msg and case.needle in msg, msg
    assert _snapshot(inputs) == before
    assert [p.name for p in tmp_path.iterdir()] in ([], ["run"])     # only a damaged copy made by the case


def test_the_table_is_large_enough():
    assert len(CMD) + len(API) >= 150
    assert len({c.id for c in CMD}) == len(CMD) and len({c.id for c in API}) == len(API)


# --- real processes: the run lock, two starts of one run directory, the CLI end to end -------------

NCLAB = [sys.executable, "-m", "nclab"]


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """The tiny dataset's source classes as PNG files (``data.name=folder``: no generation)."""
    from PIL import Image
    from tests.conftest import tiny_dataset
    ds = tiny_dataset()
    root = tmp_path_factory.mktemp("folder")
    for i, (img, label) in enumerate(zip(ds.images, ds.labels)):
        (root / f"c{label:02d}").mkdir(exist_ok=True)
        Image.fromarray(img).save(root / f"c{label:02d}" / f"{i:03d}.png")
    return root


def test_a_locked_run_is_refused_and_the_lock_dies_with_its_process(inputs, tmp_path, monkeypatch, capsys):
    from nclab.cli import main
    monkeypatch.chdir(tmp_path)
    shutil.copytree(inputs / "run", "run")
    _unfinished(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from nclab.train.rundir import RunDir; "
                               "RunDir(sys.argv[1]).lock(); print('locked', flush=True); time.sleep(120)", "run"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(tmp_path)
        capsys.readouterr()
        assert main(["train", "--resume", "run"]) == 2
        _one_line(capsys.readouterr().err, "another process is training this run")
        assert _snapshot(tmp_path) == before
    finally:
        holder.kill()                                 # SIGKILL: no chance to release anything
        holder.wait()
        holder.stdout.close()
    assert main(["train", "--resume", "run"]) == 0    # the kernel dropped the lock with the process
    assert (tmp_path / "run" / "summary.json").exists()


def test_resume_removes_the_temporary_files_of_interrupted_writes(inputs, tmp_path):
    from nclab.train.run import resume_run
    run = tmp_path / "run"
    shutil.copytree(inputs / "run", run)
    _unfinished(tmp_path)
    left = [run / ".model.safetensors.k2j4h1xq.tmp", run / ".metrics.jsonl.abc12345.tmp",
            run / "checkpoints" / ".step-00000005.state.pt.q8w7e6r5.tmp",
            run / "checkpoints" / ".latest.json.zz99yy88.tmp", run / "checkpoints" / "step-00000002.safetensors"]
    for p in left:
        p.write_bytes(b"half")
    kept = run / "notes.tmp"                           # not a name nclab writes: left alone
    kept.write_text("mine")
    resume_run(run)
    assert not [p for p in left if p.exists()] and kept.exists()
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(names) == 3 and names[0] == "latest.json"          # the published pair only


@pytest.mark.slow
def test_two_starts_of_one_new_run_directory(image_folder, tmp_path):
    args = ["train", "data.name=folder", f"data.root={image_folder}", "train.batch_size=8", "train.epochs=1",
            "model.options.width=8", "trainer.progress=false", "trainer.threads=1", "--out", "same"]
    procs = [subprocess.Popen(NCLAB + args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    results = sorted((p.returncode, err) for p, err in zip(procs, errs))
    assert [rc for rc, _ in results] == [0, 2], results
    _one_line(results[1][1], "already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same"]          # no temporary folder left
    assert (tmp_path / "same" / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("argv, needle", [
    (["train", "trainer.threads=-1", "data.name=folder", "data.root={folder}", "train.batch_size=8"], "trainer.threads"),
    (["train", "model.backbone=mlp", "model.options={hidden: [0]}", "data.name=folder", "data.root={folder}",
      "train.batch_size=8"], "model"),
])
def test_cli_processes_print_one_line(image_folder, tmp_path, argv, needle):
    """The same refusals from a real ``nclab`` process: no warning, progress bar or traceback on
    stderr, and nothing left in the working directory."""
    argv = [a.replace("{folder}", str(image_folder)) for a in argv]
    p = subprocess.run(NCLAB + argv + (["--out", "r"] if argv[0] == "train" else []), cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 2
    _one_line(p.stderr, needle)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_write_is_one_line(inputs, tmp_path, monkeypatch, capsys):
    """The system refusing a write (disk full, permissions) is one line naming the file, exit 2."""
    from nclab import atomic
    from nclab.cli import main

    def full(path, obj):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(atomic, "atomic_write_json", full)
    monkeypatch.setattr("nclab.commands.measure.atomic_write_json", full)
    monkeypatch.chdir(tmp_path)
    assert main(["measure", str(inputs / "good.npz"), "--json", "m.json"]) == 2
    _one_line(capsys.readouterr().err, "m.json: No space left on device")
