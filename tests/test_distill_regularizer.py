"""The distillation regulariser: the term and its gradient equal a float64 brute force, the
teacher sees exactly its own normalisation of the images, distilling a network from itself costs
nothing, and a run with a teacher trains, leaves the teacher untouched, keeps it out of its
weights, equals the plain run at strength 0, and resumes bit-exactly."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import Crash, crash_at, tiny_dataset
from nclab.data.transforms import Preprocess
from nclab.errors import NclabError
from nclab.train.regularizers import DistillRegularizer

BASE = ["data.name=tiny", "train.batch_size=20", "trainer.progress=false", "trainer.threads=1",
        "model.options.width=16", "optim.lr=0.05"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_registered):
    from nclab.train.run import start_run
    return start_run(None, BASE + ["train.epochs=2"], out=tmp_path_factory.mktemp("t") / "teacher").path


def _distill(teacher, strength=1.0, T=4.0) -> list[str]:
    return [f"train.regularizers=[{{distill: {{teacher: '{teacher}', strength: {strength}, temperature: {T}}}}}]"]


def _softmax64(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def test_term_and_gradient_equal_a_float64_brute_force(teacher):
    from nclab.extract import load_run
    loaded = load_run(teacher)
    images = tiny_dataset().images[::9][:12]
    # the student normalises differently: the teacher must still see its own normalisation
    student_pre = Preprocess(loaded.preprocess.image_size, 1, [0.3], [0.7])
    reg = DistillRegularizer(str(teacher), strength=0.8, temperature=3.0)
    reg.bind(student_pre, loaded.source_classes)
    x = student_pre(images)
    with torch.no_grad():
        want_t = loaded.model(loaded.preprocess(images)).double().numpy()
    got_t = reg.teacher_logits(x).double().numpy()
    assert np.allclose(got_t, want_t, rtol=1e-4, atol=1e-4)

    s = torch.randn(12, want_t.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(3),
                    requires_grad=True)
    term = reg(None, x.double(), None, s)
    ps, pt = _softmax64(s.detach().numpy() / 3.0), _softmax64(reg.teacher_logits(x.double()).numpy() / 3.0)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(1).mean()
    assert term.item() == pytest.approx(0.8 * 9.0 * kl, rel=1e-10)
    term.backward()                      # d/ds of strength T^2 KL / B = strength T (p_s - p_t) / B
    assert np.allclose(s.grad.numpy(), 0.8 * 3.0 * (ps - pt) / 12, rtol=1e-9, atol=1e-12)


def test_a_network_distilled_from_itself_costs_nothing(teacher):
    from nclab.extract import load_run
    loaded = load_run(teacher)
    reg = DistillRegularizer(str(teacher))
    reg.bind(loaded.preprocess, loaded.source_classes)
    x = torch.randn(9, 1, loaded.preprocess.image_size, loaded.preprocess.image_size)
    with torch.no_grad():
        own = loaded.model(x)
    assert reg(None, x, None, own).abs().item() < 1e-6
    reg.strength = 0.0
    assert reg(None, x, None, own + 5 * torch.randn_like(own)).item() == 0.0


def test_training_with_a_teacher(tmp_path, teacher):
    from nclab.extract import load_run
    from nclab.train.run import start_run
    before = hashlib.sha256((teacher / "model.safetensors").read_bytes()).hexdigest()
    # the student holds out more images: its normalisation differs from the teacher's
    student = BASE + ["train.epochs=2", "data.holdout=3"]
    plain = start_run(None, student, out=tmp_path / "plain")
    zero = start_run(None, student + _distill(teacher, 0.0), out=tmp_path / "zero")
    copy = tmp_path / "teacher-copy"
    shutil.copytree(teacher, copy)
    run = start_run(None, student + _distill(copy, 1.0), out=tmp_path / "kd")
    shutil.rmtree(copy)                  # the student loads for evaluation without its teacher
    assert load_run(run.path).model.state_dict().keys() == load_file(run.weights_path).keys()
    assert run.preprocess().to_dict() != json.loads((teacher / "preprocess.json").read_text())
    p, z, w = (load_file(r.weights_path) for r in (plain, zero, run))
    assert set(w) == set(p) and all(torch.equal(p[k], z[k]) for k in p)       # strength 0: the plain run
    assert not all(torch.equal(p[k], w[k]) for k in p)
    assert all(r["reg_distill"] > 0 and math.isfinite(r["reg_distill"]) for r in run.records())
    assert hashlib.sha256((teacher / "model.safetensors").read_bytes()).hexdigest() == before


def test_a_run_with_a_teacher_resumes_bitwise(tmp_path, teacher):
    from nclab.train.run import resume_run, start_run
    opts = BASE + ["train.epochs=3", "trainer.ckpt_every_steps=2"] + _distill(teacher, 0.5)
    ref = start_run(None, opts, out=tmp_path / "ref")
    with pytest.raises(Crash):
        start_run(None, opts, out=tmp_path / "cut", callbacks=[crash_at(2)])
    resume_run(tmp_path / "cut")
    a, b = load_file(ref.weights_path), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refusals_name_the_teacher(tmp_path, teacher):
    from nclab.train.run import start_run
    unfinished, larger = tmp_path / "unfinished", tmp_path / "larger"
    for copy in (unfinished, larger):
        copy.mkdir()
        for name in ("config.yaml", "data.json", "preprocess.json"):
            (copy / name).write_bytes((teacher / name).read_bytes())
    (larger / "model.safetensors").write_bytes((teacher / "model.safetensors").read_bytes())
    pre = json.loads((teacher / "preprocess.json").read_text())
    (larger / "preprocess.json").write_text(json.dumps({**pre, "image_size": 20}))
    cases = [(BASE + _distill(tmp_path / "nowhere"), "not a run directory"),
             (BASE + _distill(unfinished), "has not finished training"),
             (BASE + ["data.source_classes=4"] + _distill(teacher), "other source classes"),
             (BASE + _distill(larger), "1 x 20 px images")]
    for opts, needle in cases:
        with pytest.raises(NclabError) as e:
            start_run(None, opts, out=tmp_path / "student")
        msg = str(e.value)
        assert "distill.teacher=" in msg and needle in msg and "\n" not in msg, msg
        assert not (tmp_path / "student").exists()
    for opts, needle in [({"teacher": ""}, "teacher"), ({"teacher": "t", "temperature": 0}, "temperature"),
                         ({"teacher": "t", "strength": -1}, "strength")]:
        with pytest.raises(NclabError, match=needle):
            DistillRegularizer(**opts)
