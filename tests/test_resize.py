"""Progressive resizing (train.resize_from / train.resize_epochs): the ramp, the batches, the run."""


import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nclab.data.loader import AugmentedImages, epoch_image_size, train_loader
from nclab.data.transforms import Augment, Preprocess
from nclab.errors import NclabError
from nclab.train.run import start_run

BASE = ["train.epochs=3", "train.batch_size=20", "trainer.progress=false", "trainer.threads=1", "optim.lr=0.05",
        "model.options.width=16", "model.options.pools=2"]


def test_the_ramp_is_linear_from_the_start_side_to_the_stored_one():
    assert [epoch_image_size(e, 28, 16, 6) for e in range(9)] == [16, 18, 20, 22, 24, 26, 28, 28, 28]
    assert [epoch_image_size(e, 32, 8, 3) for e in range(5)] == [8, 16, 24, 32, 32]
    assert [epoch_image_size(e, 28, 20, 3) for e in range(4)] == [20, round(20 + 8 / 3), round(20 + 16 / 3), 28]
    assert [epoch_image_size(e, 28) for e in range(3)] == [28, 28, 28]            # off


def _data(augment):
    rng = np.random.default_rng(0)
    images = torch.as_tensor(rng.integers(0, 256, (40, 3, 12, 12), dtype=np.uint8))
    labels = torch.as_tensor(np.repeat(np.arange(4), 10))
    return AugmentedImages(images, labels, Preprocess(12, 3, [0.5] * 3, [0.25] * 3), augment)


def test_a_resized_batch_is_the_augmented_batch_shrunk_then_normalised():
    aug = Augment(shift=1, flip=True, crop_scale=(0.4, 1.0), jitter=0.3)
    data = _data(aug)
    small = list(train_loader(data, 8, seed=2, epoch=1, size=7))
    full = list(train_loader(data, 8, seed=2, epoch=1))
    assert len(small) == len(full) == 5
    for (x, y), (u, v) in zip(small, full):
        assert x.shape == (8, 3, 7, 7) and torch.equal(y, v)
        raw = u * 0.25 + 0.5                                 # undo the normalisation of the full batch
        ref = torch.nn.functional.interpolate(raw, size=(7, 7), mode="bilinear", antialias=True, align_corners=False)
        assert torch.allclose(x, (ref - 0.5) / 0.25, atol=1e-5)
    # the stored side is no resize at all: the very same batches
    same = list(train_loader(data, 8, seed=2, epoch=1, size=12))
    assert all(torch.equal(x, u) for (x, _), (u, _) in zip(same, full))
    # two processes each resize their half of the global batch: together the one-process batch
    r0, r1 = (list(train_loader(data, 8, seed=2, epoch=1, rank=r, world=2, size=7)) for r in (0, 1))
    assert all(torch.equal(torch.cat([a[0], b[0]]), x) for a, b, (x, _) in zip(r0, r1, small))


def test_a_constant_image_stays_constant_when_shrunk():
    data = AugmentedImages(torch.full((8, 1, 16, 16), 200, dtype=torch.uint8), torch.arange(8),
                           Preprocess(16, 1, [0.0], [1.0]), None)
    (x, _), = train_loader(data, 8, seed=0, epoch=0, size=5)
    assert x.shape == (8, 1, 5, 5) and torch.allclose(x, torch.full_like(x, 200 / 255), atol=1e-6)


def _run(tmp, name, tiny, extra=(), **kw):
    return start_run(None, [f"data.name={tiny}"] + BASE + list(extra), out=tmp / name, **kw)


def test_a_run_trains_at_the_ramp_sides_and_records_them(tmp_path, tiny_registered, monkeypatch):
    seen = []
    orig = AugmentedImages.__getitems__
    monkeypatch.setattr(AugmentedImages, "__getitems__", lambda self, spec: seen.append(spec.size) or orig(self, spec))
    recs = _run(tmp_path, "r", tiny_registered, ["train.resize_from=8", "train.resize_epochs=2"]).records()
    assert [r["image_size"] for r in recs] == [8, 12, 16]            # the tiny images are 16 px
    steps = recs[0]["step"]
    assert seen == [8] * steps + [12] * steps + [16] * steps


def test_starting_at_the_stored_side_changes_nothing(tmp_path, tiny_registered):
    plain = _run(tmp_path, "plain", tiny_registered)
    same = _run(tmp_path, "same", tiny_registered, ["train.resize_from=16", "train.resize_epochs=2"])
    a, b = load_file(plain.weights_path), load_file(same.weights_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("seconds", "image_size")} for r in recs]
    assert strip(plain.records()) == strip(same.records())
    assert "image_size" not in plain.records()[0]


@pytest.mark.parametrize("extra, words", [
    (["train.resize_from=8"], "needs both"),
    (["train.resize_epochs=2"], "needs both"),
    (["train.resize_from=-2", "train.resize_epochs=2"], "train.resize_from"),
    (["train.resize_from=20", "train.resize_epochs=2"], "at most the side of the training images (16)"),
    (["train.resize_from=2", "train.resize_epochs=2", "model.options.pools=4"], "(train.resize_from)")])
def test_bad_resize_settings_fail_before_any_run_directory(tmp_path, tiny_registered, extra, words):
    with pytest.raises(NclabError) as e:
        _run(tmp_path, "x", tiny_registered, extra)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
