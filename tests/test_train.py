"""The training loop: learning, determinism, exact resume, schedules, losses, bad input."""

import json
import math

import pytest
from conftest import Crash, crash_at
import torch
from safetensors.torch import load_file

from nclab.config import ScheduleConfig
from nclab.errors import NclabError
from nclab.train.losses import make_loss
from nclab.train.optim import lr_factor
from nclab.train.run import resume_run, start_run

BASE = ["train.epochs=3", "train.batch_size=20", "trainer.progress=false", "trainer.threads=1",
        "optim.lr=0.05", "schedule.name=cosine", "model.options.width=16"]


def _run(tmp, name, tiny, extra=(), callbacks=()):
    return start_run(None, [f"data.name={tiny}"] + BASE + list(extra), out=tmp / name, callbacks=callbacks)


def _strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_run_learns_and_writes_its_records(tmp_path, tiny_registered):
    run = _run(tmp_path, "a", tiny_registered, ["train.epochs=6", "train.batch_size=8", "optim.lr=0.1", "data.augment=false"])
    recs = run.records()
    assert [r["epoch"] for r in recs] == list(range(1, 7))
    assert {"epoch", "step", "lr", "loss", "train_acc", "test_acc", "seconds"} <= set(recs[0])
    assert recs[-1]["loss"] < recs[0]["loss"] and recs[-1]["train_acc"] > 0.9
    assert recs[-1]["step"] == 6 * (6 * 6 // 8)            # 6 classes x (10 - 4 held out), drop_last
    cfg = (run.path / "config.yaml").read_text()
    assert "epochs: 6" in cfg and "name: tiny" in cfg
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["final"] == recs[-1] and summary["source_classes"] == 6
    assert not list(tmp_path.glob(".*tmp"))                 # no temporary leftovers


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny_registered):
    a = load_file(_run(tmp_path, "a", tiny_registered).weights_path)
    b = load_file(_run(tmp_path, "b", tiny_registered).weights_path)
    c = load_file(_run(tmp_path, "c", tiny_registered, ["trainer.seed=1"]).weights_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


FAST = ["trainer.channels_last=true", "trainer.precision=bf16-mixed", "data.crop_scale=[0.5, 1]", "data.jitter=0.4"]


PROTO = ["train.batch_per_class=4", "train.regularizers=[{proto: {strength: 0.5}}]"]
ROTATION = FAST + ["train.regularizers=[{rotation: {strength: 1.0, fraction: 0.5}}]"]
COMPILE = FAST + ["trainer.compile=true"]
EMA = FAST + ["train.ema=0.9"]
RESIZE = FAST + ["train.resize_from=8", "train.resize_epochs=2", "model.options.pools=2"]


@pytest.mark.parametrize("every, options", [(0, []), (3, ["trainer.channels_last=false"]), (3, FAST), (2, PROTO),
                                            (3, ROTATION), (2, COMPILE), (2, EMA), (2, RESIZE)])
def test_resume_after_a_crash_is_bitwise_identical(tmp_path, tiny_registered, every, options):
    extra = [f"trainer.ckpt_every_steps={every}", "model.options.norm=batch"] + options
    ref = _run(tmp_path, "ref", tiny_registered, extra)
    with pytest.raises(Crash):
        _run(tmp_path, "cut", tiny_registered, extra, callbacks=[crash_at(2)])
    cut = tmp_path / "cut"
    assert not (cut / "model.safetensors").exists() and len((cut / "metrics.jsonl").read_text().splitlines()) == 1
    resume_run(cut)
    a, b = load_file(ref.weights_path), load_file(cut / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _strip(ref.records()) == _strip([json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()])
    with pytest.raises(NclabError, match="already finished"):
        resume_run(cut)


def test_compiled_training_trains_the_eager_model(tmp_path, tiny_registered):
    # torch.compile changes the speed, not the model: in fp32 the compiled forward (a full batch
    # and the smaller last one, two static graphs) trains the weights eager training does, to
    # float rounding, and checkpoints the eager module (the same keys, no compiled-wrapper prefix).
    extra = ["trainer.channels_last=false", "train.drop_last=false", "train.batch_size=16", "model.options.norm=batch"]
    a = _run(tmp_path, "eager", tiny_registered, extra)
    b = _run(tmp_path, "compiled", tiny_registered, extra + ["trainer.compile=true"])
    wa, wb = load_file(a.weights_path), load_file(b.weights_path)
    assert wa.keys() == wb.keys() and not any("_orig_mod" in k for k in wb)
    for k in wa:
        assert torch.allclose(wa[k].double(), wb[k].double(), rtol=1e-4, atol=1e-5), k
    ra, rb = a.records(), b.records()
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [3, 6, 9]     # 36 samples: 16 + 16 + 4
    assert all(abs(x["loss"] - y["loss"]) < 1e-5 and x["test_acc"] == y["test_acc"] for x, y in zip(ra, rb))
    init = load_file(_run(tmp_path, "init", tiny_registered, extra + ["train.epochs=1", "optim.lr=1e-9"]).weights_path)
    assert any(not torch.allclose(wa[k], init[k], atol=1e-3) for k in wa)     # training moved the weights


def test_compile_without_a_cpp_compiler_is_a_clear_error(tmp_path, tiny_registered, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++")
    with pytest.raises(NclabError, match=r"trainer.compile=true: .*'no-such-c\+\+' is not on the PATH"):
        _run(tmp_path, "x", tiny_registered, ["trainer.compile=true"])
    assert list(tmp_path.iterdir()) == []


def test_compile_where_dynamo_is_unsupported_is_a_clear_error(tmp_path, tiny_registered, monkeypatch):
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(NclabError, match=r"trainer.compile=true: torch.compile does not support this Python"):
        _run(tmp_path, "x", tiny_registered, ["trainer.compile=true"])
    assert list(tmp_path.iterdir()) == []


def test_regularizer_term_is_logged(tmp_path, tiny_registered):
    run = _run(tmp_path, "r", tiny_registered, ["train.epochs=1", "train.regularizers=[{gc: {alpha: 1.0e-3, probes: 1}}]"])
    rec = run.records()[0]
    assert rec["reg_gc"] > 0 and math.isfinite(rec["reg_gc"])


@pytest.mark.parametrize("extra", [["train.loss=mse"], ["train.label_smoothing=0.1"], ["model.head=etf"],
                                   ["optim.name=adamw", "optim.lr=0.003"], ["model.backbone=mlp", "model.options={hidden: [32]}"],
                                   ["schedule.name=multistep", "schedule.milestones=[1, 2]", "schedule.warmup_epochs=0.5"],
                                   ["trainer.precision=64-true"], ["trainer.precision=bf16-mixed"]])
def test_options_train(tmp_path, tiny_registered, extra):
    recs = _run(tmp_path, "o", tiny_registered, ["train.epochs=2"] + extra).records()
    assert len(recs) == 2 and all(math.isfinite(r["loss"]) for r in recs)


def test_schedule_factors():
    cos = ScheduleConfig(name="cosine", warmup_epochs=0)
    assert lr_factor(cos, 0, 10) == 1 and abs(lr_factor(cos, 5, 10) - 0.5) < 1e-12 and lr_factor(cos, 10, 10) < 1e-12
    ms = ScheduleConfig(name="multistep", milestones=[3, 6], gamma=0.1)
    assert [lr_factor(ms, e, 9) for e in (0, 2.9, 3, 6.5)] == pytest.approx([1, 1, 0.1, 0.01])
    st = ScheduleConfig(name="step", step_size=2, gamma=0.5)
    assert [lr_factor(st, e, 9) for e in (1.9, 2, 4)] == pytest.approx([1, 0.5, 0.25])
    wu = ScheduleConfig(name="constant", warmup_epochs=2, warmup_start=0.0)
    assert [lr_factor(wu, e, 9) for e in (0, 1, 2, 5)] == pytest.approx([0, 0.5, 1, 1])


def test_losses_match_their_definitions():
    z = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 1, 2])
    t = torch.nn.functional.one_hot(y, 4).double()
    assert torch.allclose(make_loss("mse", 4)(z, y), ((z - t) ** 2).sum(1).mean())
    ts = 0.9 * t + 0.1 / 4
    assert torch.allclose(make_loss("mse", 4, 0.1)(z, y), ((z - ts) ** 2).sum(1).mean())
    ls = -(ts * torch.log_softmax(z, 1)).sum(1).mean()
    assert torch.allclose(make_loss("ce", 4, 0.1)(z, y), ls)


@pytest.mark.parametrize("override, words", [("data.name=imagenet22k", ["imagenet22k", "glyphs"]),
                                             ("model.backbone=resnet50", ["resnet50", "resnet12"]),
                                             ("optim.name=lion", ["lion", "adamw"]),
                                             ("train.batch_size=7", ["batch_size"]),
                                             ("train.batch_per_class=3", ["train.batch_per_class=3", "batch_size=20"]),
                                             ("train.regularizers=[{gcc: {alpha: 1}}]", ["gcc", "gc"]),
                                             ("data.crop_scale=[0.5, 2]", ["data.crop_scale"]),
                                             ("data.jitter=1.5", ["data.jitter"])])
def test_bad_config_fails_before_any_run_directory(tmp_path, tiny_registered, override, words):
    extra = [override] + ([] if "data.name" in override else [f"data.name={tiny_registered}"])
    with pytest.raises(NclabError) as e:
        start_run(None, BASE + extra + ["trainer.devices=2"] * ("batch_size" in override), out=tmp_path / "x")
    assert all(w in str(e.value) for w in words)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_a_clear_error(tmp_path, tiny_registered):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NclabError, match="file"):
        _run(tmp_path / "file", "run", tiny_registered)
    with pytest.raises(NclabError, match="already exists"):
        _run(tmp_path, "file", tiny_registered)


def test_precision_auto_is_native_bf16_or_fp32(monkeypatch):
    import nclab.train.run as run_mod
    from nclab.config import load_config
    cfg = load_config(None, ["trainer.precision=auto"]).check()
    for native, want in [(True, "bf16-mixed"), (False, "32-true")]:
        monkeypatch.setattr(run_mod, "native_bf16", lambda accelerator, native=native: native)
        assert run_mod.resolve_precision(cfg).trainer.precision == want
        assert run_mod.resolve_precision(load_config(None, ["trainer.precision=64-true"])).trainer.precision == "64-true"
    assert cfg.trainer.precision == "auto"                        # the given config is not changed


def test_native_bf16_follows_the_cpu_flags():
    from pathlib import Path
    from nclab.train.run import native_bf16
    info = Path("/proc/cpuinfo")
    if not info.exists():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    flags = set(next(line for line in info.read_text().splitlines() if line.startswith("flags")).split(":")[1].split())
    if not any(f.startswith("avx512") for f in flags):
        assert native_bf16("cpu") is False                       # AVX2 only: emulated bf16, use fp32
    elif flags & {"avx512_bf16", "amx_bf16"}:
        assert native_bf16("cpu") is True
    else:
        pytest.skip("AVX-512 without BF16: oneDNN's choice is not fixed by the flags")
    assert native_bf16("mps") is False


def test_auto_precision_is_written_at_start_and_kept_on_resume(tmp_path, tiny_registered, monkeypatch):
    import nclab.train.run as run_mod
    extra = ["trainer.ckpt_every_steps=3", "model.options.norm=batch"]
    ref = _run(tmp_path, "ref", tiny_registered, extra + ["trainer.precision=32-true"])
    monkeypatch.setattr(run_mod, "native_bf16", lambda accelerator: False)
    with pytest.raises(Crash):
        _run(tmp_path, "cut", tiny_registered, extra + ["trainer.precision=auto"], callbacks=[crash_at(2)])
    cut = tmp_path / "cut"
    assert "precision: 32-true" in (cut / "config.yaml").read_text()
    monkeypatch.setattr(run_mod, "native_bf16", lambda accelerator: True)   # resumed on a bf16 machine
    resume_run(cut)
    a, b = load_file(ref.weights_path), load_file(cut / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
