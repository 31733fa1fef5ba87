"""The rotation self-supervision regulariser: quarter turns equal numpy's, the term equals a
brute-force recomputation with the same drawn turns, the chance-level oracle, its head lives in
the weights (loads back for evaluation), and training with it resumes bit-exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from nclab.config import load_config
from nclab.errors import NclabError
from nclab.models import Classifier
from nclab.train.regularizers import build_regularizers, rotate_quarters


def test_quarter_turns_equal_numpy_and_keep_the_memory_format():
    x = torch.randn(7, 3, 5, 5, generator=torch.Generator().manual_seed(0)).to(memory_format=torch.channels_last)
    k = torch.tensor([0, 1, 2, 3, 3, 1, 0])
    got = rotate_quarters(x, k)
    want = np.stack([np.rot90(x[i].numpy(), int(k[i]), axes=(1, 2)) for i in range(7)])
    assert np.array_equal(got.numpy(), want) and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(rotate_quarters(rotate_quarters(x, k), (4 - k) % 4), x)     # turning back is exact
    with pytest.raises(NclabError, match="square"):
        rotate_quarters(torch.zeros(1, 1, 4, 5), torch.tensor([1]))


class _Flat(nn.Module):
    """A tiny backbone whose features depend on the image's orientation (not rotation invariant)."""

    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2 * 4 * 4, 8)

    def forward(self, x):
        return self.lin(x.flatten(1))


def _model(seed=0):
    torch.manual_seed(seed)
    model = Classifier(_Flat(), nn.Linear(8, 3)).double()
    reg, = build_regularizers(load_config(None, ["train.regularizers=[{rotation: {strength: 0.7, fraction: 0.5}}]"])
                              .train.regularizers)
    model.aux["rotation"] = reg.aux_head(8).double()
    return model, reg


def test_term_equals_a_brute_force_with_the_same_turns():
    model, reg = _model()
    x = torch.randn(10, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    got = reg(model, x, model.features(x), None, None)
    torch.manual_seed(5)
    k = torch.randint(1, 4, (5,))                      # the turns the term drew: 5 = 0.5 x 10 images
    assert set(k.tolist()) <= {1, 2, 3}
    losses = []
    for i in range(5):
        for img, turn in ((x[i].numpy(), 0), (np.rot90(x[i].numpy(), int(k[i]), axes=(1, 2)).copy(), int(k[i]))):
            z = model.aux["rotation"](model.features(torch.from_numpy(img)[None]))[0].detach().numpy()
            losses.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[turn])
    assert got.item() == pytest.approx(0.7 * np.mean(losses), rel=1e-10)
    got.backward()                                     # the gradient reaches the backbone and the head
    assert model.backbone.lin.weight.grad.abs().sum() > 0 and model.aux["rotation"].weight.grad.abs().sum() > 0
    assert model.head.weight.grad is None


def test_chance_oracle_and_strength_zero():
    model, reg = _model()
    with torch.no_grad():
        model.aux["rotation"].weight.zero_()
        model.aux["rotation"].bias.zero_()
    x = torch.randn(6, 2, 4, 4, dtype=torch.float64)
    assert reg(model, x, model.features(x)).item() == pytest.approx(0.7 * math.log(4), rel=1e-12)
    reg.strength = 0.0
    assert reg(model, x, model.features(x)).item() == 0.0


def test_bad_options_name_the_entry():
    for opts, words in [("{strength: -1}", "strength"), ("{strength: 1, fraction: 0}", "fraction"),
                        ("{strength: 1, fraction: 1.5}", "fraction"), ("{}", "strength")]:
        cfg = load_config(None, [f"train.regularizers=[{{rotation: {opts}}}]"])
        with pytest.raises(NclabError) as e:
            build_regularizers(cfg.train.regularizers)
        assert "train.regularizers[0].rotation" in str(e.value) and words in str(e.value)


def test_training_keeps_the_head_in_the_weights_and_loads_back(tmp_path, tiny_registered):
    from nclab.extract import load_run
    from nclab.train.run import start_run
    base = [f"data.name={tiny_registered}", "train.epochs=2", "train.batch_size=20", "trainer.progress=false",
            "trainer.threads=1", "model.options.width=16", "optim.lr=0.05"]
    plain = start_run(None, base, out=tmp_path / "plain")
    run = start_run(None, base + ["train.regularizers=[{rotation: {strength: 1.0}}]"], out=tmp_path / "rot")
    w, p = load_file(run.weights_path), load_file(plain.weights_path)
    assert set(w) - set(p) == {"aux.rotation.weight", "aux.rotation.bias"} and w["aux.rotation.weight"].shape[0] == 4
    recs = run.records()
    assert all(0 < r["reg_rotation"] < 2 * math.log(4) for r in recs)
    loaded = load_run(run.path)
    assert torch.equal(loaded.model.aux["rotation"].weight, w["aux.rotation.weight"])
    assert not any(k.startswith("aux.") for k in load_run(plain.path).model.state_dict())
