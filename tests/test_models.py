import pytest
import torch

from nclab.errors import NclabError
from nclab.models import BACKBONES, create_model, simplex_etf

CASES = [("conv4", {}, 1, 28, 64), ("resnet12", {}, 3, 32, 640), ("resnet18", {}, 3, 32, 512),
         ("wrn", {"depth": 16, "widen": 2}, 3, 32, 128), ("mlp", {"hidden": [64, 32]}, 1, 28, 32),
         ("vgg", {"depth": 11, "width": 16}, 3, 32, 128), ("vgg", {"width": 8}, 1, 28, 64)]


@pytest.mark.parametrize("name, opts, c, s, d", CASES)
def test_backbones_give_features_logits_and_layers(name, opts, c, s, d):
    torch.manual_seed(0)
    m = create_model(name, in_channels=c, n_classes=7, image_size=s, **opts).eval()
    x = torch.randn(3, c, s, s)
    h, z = m(x, return_features=True)
    assert h.shape == (3, d) and z.shape == (3, 7) and m.feature_dim == d
    assert torch.equal(m.features(x), h)
    assert torch.allclose(z, h @ m.head.weight.T + m.head.bias)
    inter = m.intermediate(x)
    assert list(inter) == m.backbone.layer_names
    last = list(inter.values())[-1]
    assert torch.allclose(m.backbone.pool(last), h)        # features = pooled last stage
    assert list(m.intermediate(x, layers=[m.backbone.layer_names[0]], pooled=True).values())[0].dim() == 2


def test_wrn_28_10_width_and_resnet12_channels():
    assert create_model("wrn", in_channels=3, n_classes=5, depth=28, widen=10).feature_dim == 640
    r12 = create_model("resnet12", in_channels=3, n_classes=5)
    assert [b.body[0].out_channels for b in r12.backbone.stages.values()] == [64, 160, 320, 640]


@pytest.mark.parametrize("C, d", [(2, 5), (10, 64), (10, 9), (64, 640)])
def test_simplex_etf_is_exact(C, d):
    W = simplex_etf(C, d, dtype=torch.float64)
    G = W @ W.T
    expect = C / (C - 1) * (torch.eye(C, dtype=torch.float64) - 1 / C)
    assert torch.allclose(G, expect, atol=1e-12)
    assert torch.allclose(W.sum(0), torch.zeros(d, dtype=torch.float64), atol=1e-12)


def test_etf_head_is_frozen():
    m = create_model("conv4", n_classes=10, head="etf")
    assert "head.weight" not in dict(m.named_parameters()) and "head.weight" in m.state_dict()
    x = torch.randn(2, 1, 28, 28)
    m(x).sum().backward()
    assert m.head.weight.grad is None


def test_bias_free_head():
    m = create_model("conv4", n_classes=4, head="linear_nobias")
    assert m.head.bias is None


def test_cosine_head_is_scaled_cosine_and_its_linear_form_decides_alike():
    from nclab.extract import classifier_weights
    torch.manual_seed(0)
    m = create_model("conv4", n_classes=7, head="cosine").double().eval()
    x = torch.randn(16, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        h, logits = m(x, return_features=True)
    W = m.head.weight.detach()
    brute = torch.tensor([[10.0 * float(w @ f) / float(w.norm() * f.norm()) for w in W] for f in h], dtype=torch.float64)
    assert torch.allclose(logits, brute, rtol=1e-12, atol=1e-12)          # s = 10 at the start
    with torch.no_grad():
        assert torch.allclose(m.head(3.5 * h), logits, rtol=1e-12)       # blind to the feature norm
    Wl, b = classifier_weights(m)
    assert (b == 0).all()
    assert torch.equal((h.float() @ torch.as_tensor(Wl).T).argmax(1), logits.argmax(1))
    m.head.scale.data.fill_(3.0)                                          # the scale is learned
    with torch.no_grad():
        assert torch.allclose(m.head(h), 0.3 * logits, rtol=1e-12)
    assert "head.scale" in dict(m.named_parameters())


def test_errors_list_valid_names():
    with pytest.raises(NclabError) as e:
        create_model("resnet13")
    assert "resnet12" in str(e.value) and all(b in str(e.value) for b in BACKBONES)
    with pytest.raises(NclabError, match="widen"):
        create_model("wrn", widden=4)
    with pytest.raises(NclabError, match="6n\\+4"):
        create_model("wrn", depth=27)
    with pytest.raises(NclabError, match="head"):
        create_model("conv4", head="cosinus")
    with pytest.raises(NclabError, match="dim >= 99"):
        create_model("conv4", n_classes=100, head="etf")


def test_dropblock_ramps_its_rate_keeps_the_mean_and_drops_whole_blocks():
    from nclab.models.resnet12 import DropBlock
    torch.manual_seed(0)
    db = DropBlock(rate=0.5, size=1, ramp=2)
    x = torch.ones(8, 16, 32, 32)
    dropped = []
    for _ in range(3):                        # keep = 0.75, 0.5, then 0.5 (the ramp's floor)
        out = db(x)
        dropped.append(float((out == 0).double().mean()))
        assert float(out.sum()) == pytest.approx(x.numel(), rel=1e-6)      # rescaled: the mean is kept
    assert dropped == pytest.approx([0.25, 0.5, 0.5], abs=0.01) and int(db.steps) == 3
    db3 = DropBlock(rate=0.3, size=3, ramp=1)
    out = db3(torch.ones(4, 8, 12, 12))
    zero = (out == 0).float()
    # every dropped unit lies in a 3 x 3 square of dropped units
    full = torch.nn.functional.avg_pool2d(zero, 3, stride=1) == 1
    cover = torch.nn.functional.max_pool2d(torch.nn.functional.pad(full.float(), (2, 2, 2, 2)), 3, stride=1)
    assert float(zero.sum()) > 0 and torch.equal(cover * zero, zero)
    assert torch.equal(db3.eval()(x), x)


def test_resnet12_dropblock_in_the_last_two_blocks_and_its_ramp_in_the_weights():
    from nclab.models.resnet12 import DropBlock
    m = create_model("resnet12", in_channels=3, n_classes=5, drop_rate=0.1, dropblock_size=2)
    kinds = [type(b.drop) for b in m.backbone.stages.values()]
    assert kinds == [torch.nn.Dropout, torch.nn.Dropout, DropBlock, DropBlock]
    assert "backbone.stages.layer4.drop.steps" in m.state_dict()
    m(torch.randn(2, 3, 32, 32)).sum().backward()


def test_conv4_per_block_widths():
    m = create_model("conv4", in_channels=1, n_classes=7, width=[8, 8, 16, 32])
    assert m.feature_dim == 32 and [b[0].out_channels for b in m.backbone.stages.values()] == [8, 8, 16, 32]
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    assert create_model("conv4", width=16, depth=3).feature_dim == 16 and len(create_model("conv4", depth=3).backbone.stages) == 3
    with pytest.raises(NclabError, match="width"):
        create_model("conv4", width=[8, 0])


def test_conv4_pools_only_the_first_blocks():
    m = create_model("conv4", n_classes=3, depth=8, pools=3, width=8).eval()
    x = torch.randn(2, 1, 28, 28)
    shapes = [tuple(v.shape) for v in m.backbone.intermediate(x).values()]
    assert shapes == [(2, 8, 14, 14), (2, 8, 7, 7)] + [(2, 8, 3, 3)] * 6
    assert m.backbone.layer_names == [f"block{i}" for i in range(1, 9)]
    with pytest.raises(NclabError, match="pools"):
        create_model("conv4", depth=6)                    # six pools of 28 px
    with pytest.raises(NclabError, match="0..depth"):
        create_model("conv4", depth=4, pools=5)


@pytest.mark.parametrize("depth, convs", [(11, 8), (13, 10), (16, 13), (19, 16)])
def test_vgg_depth_counts_its_conv_layers_and_pools_to_one_pixel(depth, convs):
    m = create_model("vgg", in_channels=3, n_classes=10, image_size=32, depth=depth)
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.backbone.modules()) == convs
    assert m.feature_dim == 512
    out = m.intermediate(torch.randn(2, 3, 32, 32))
    assert [o.shape[-1] for o in out.values()] == [16, 8, 4, 2, 1]
    if depth == 13:      # 3x3 kernels: 9 (3*64 + 64*64 + 64*128 + 128*128 + 128*256 + 256*256 + 256*512 + 3*512*512)
        assert sum(p.numel() for p in m.backbone.parameters() if p.dim() == 4) == 9_402_048
    with pytest.raises(NclabError, match="vgg depth=12"):
        create_model("vgg", depth=12)
