"""Augmentations: random-resized crop, colour jitter and the random affine distortion, seeded and resumable."""

import math

import numpy as np
import pytest
import torch

from nclab.config import DataConfig
from nclab.data.loader import AugmentedImages, augment_from_config, train_loader
from nclab.data.transforms import (Augment, Preprocess, adjust_color, affine_params, affine_warp, color_jitter, crop_boxes,
                                   random_shift_flip, resized_crops)
from nclab.errors import NclabError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_crop_boxes_honour_scale_and_ratio_and_lie_in_the_image():
    H, W = 32, 24
    boxes = crop_boxes(20000, H, W, (0.2, 0.6), (0.5, 2.0), _gen())
    top, left, h, w = boxes.T
    assert torch.all(top >= 0) and torch.all(left >= 0)
    assert torch.all(top + h <= H + 1e-9) and torch.all(left + w <= W + 1e-9)
    area = h * w / (H * W)
    whole = (h == H) & (w == W)                       # no attempt fitted: the whole image
    assert float(whole.double().mean()) < 0.01
    a, r = area[~whole], (w / h)[~whole]
    assert float(a.min()) >= 0.2 - 1e-12 and float(a.max()) <= 0.6 + 1e-12
    assert float(a.min()) < 0.21 and float(a.max()) > 0.59           # the whole range is used
    assert float(r.min()) >= 0.5 - 1e-12 and float(r.max()) <= 2.0 + 1e-12
    # positions uniform over the room left: the relative offset top / (H - h) has mean 1/2
    rel = (top / (H - h))[h < H - 1]
    assert abs(float(rel.mean()) - 0.5) < 0.01


def test_crop_boxes_fixed_scale_and_square_ratio():
    boxes = crop_boxes(50, 20, 20, (0.25, 0.25), (1.0, 1.0), _gen(3))
    assert torch.allclose(boxes[:, 2:], torch.full((50, 2), 10.0, dtype=torch.float64))


def test_whole_image_crop_is_the_identity_and_half_crops_upsample_like_interpolate():
    x = torch.rand(3, 2, 12, 10)
    whole = torch.tensor([[0.0, 0.0, 12.0, 10.0]] * 3, dtype=torch.float64)
    assert torch.equal(resized_crops(x, whole), x)
    # an integer box of half the size, doubled: bilinear upsampling by 2 (pixel centres, edges clamped)
    boxes = torch.tensor([[0.0, 0.0, 6.0, 5.0], [6.0, 5.0, 6.0, 5.0], [3.0, 2.0, 6.0, 5.0]], dtype=torch.float64)
    out = resized_crops(x, boxes)
    for i, (t, l, h, w) in enumerate(boxes.long().tolist()):
        ref = torch.nn.functional.interpolate(x[i:i + 1, :, t:t + h, l:l + w], size=(12, 10), mode="bilinear",
                                              align_corners=False)
        assert torch.allclose(out[i:i + 1], ref, atol=1e-6)


def test_random_resized_crop_zooms_a_constant_image_to_itself():
    x = torch.full((4, 3, 16, 16), 0.3)
    aug = Augment(crop_scale=(0.08, 1.0))
    assert torch.allclose(aug(x, _gen()), x, atol=1e-6)


def test_adjust_color_factors():
    x = torch.rand(4, 3, 8, 8)
    one = torch.ones(4)
    assert torch.equal(adjust_color(x, one, one, one), x)                       # identity, exactly
    b = torch.tensor([0.5, 0.8, 1.0, 1.2])
    assert torch.allclose(adjust_color(x, b, one, one), (x * b.view(4, 1, 1, 1)).clamp(0, 1))
    gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    zero = torch.zeros(4)
    flat = adjust_color(x, one, zero, one)                                    # contrast 0: the mean luma
    assert torch.allclose(flat, gray.mean(dim=(1, 2)).view(4, 1, 1, 1).expand_as(x), atol=1e-6)
    desat = adjust_color(x, one, one, zero)                                    # saturation 0: luma in every channel
    assert torch.allclose(desat, gray[:, None].expand_as(x), atol=1e-6)
    g = torch.rand(4, 1, 8, 8)
    assert torch.equal(adjust_color(g, one, one, torch.full((4,), 1.7)), g)   # saturation leaves gray unchanged


def test_color_jitter_draws_factors_in_range():
    # a two-level gray image: brightness b scales both levels, contrast c scales their gap about
    # the mean, so b = hi + lo and c = (hi - lo) / (hi + lo) / (1/2) recover the factors drawn
    j, n = 0.3, 4000
    x = torch.full((n, 1, 2, 2), 0.25)
    x[:, :, 0] = 0.75
    out = color_jitter(x, j, _gen(5))
    hi, lo = out[:, 0, 0, 0].double(), out[:, 0, 1, 0].double()
    b, c = hi + lo, 2 * (hi - lo) / (hi + lo)
    for f in (b, c):
        assert float(f.min()) >= 1 - j - 1e-5 and float(f.max()) <= 1 + j + 1e-5
        assert float(f.min()) < 1 - j + 0.01 and float(f.max()) > 1 + j - 0.01
        assert abs(float(f.mean()) - 1) < 0.01 and abs(float(f.var()) - (2 * j) ** 2 / 12) < 0.003
    assert torch.equal(color_jitter(x, 0.0, _gen(5)), x)                      # zero strength: identity
    rgb = torch.rand(50, 3, 6, 6)
    out = color_jitter(rgb, 1.0, _gen(1))
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_augment_with_shift_and_flip_draws_as_before():
    # the shift / flip draws come first and are unchanged: earlier runs keep their batches
    x = torch.rand(8, 1, 10, 10)
    assert torch.equal(Augment(shift=2, flip=True)(x, _gen(4)), random_shift_flip(x, 2, True, _gen(4)))


def _warp(x, angle=0.0, shear=0.0, zoom=1.0):
    n = x.shape[0]
    return affine_warp(x, *(torch.full((n,), float(v), dtype=torch.float64) for v in (angle, shear, zoom)))


def test_affine_warp_identity_quarter_turns_and_zoom():
    x = torch.rand(3, 2, 12, 12, dtype=torch.float64)
    assert torch.allclose(_warp(x), x, atol=1e-12)
    assert torch.allclose(_warp(x, 90), torch.rot90(x, 1, (2, 3)), atol=1e-12)       # counter-clockwise on screen
    assert torch.allclose(_warp(x, -90), torch.rot90(x, -1, (2, 3)), atol=1e-12)
    assert torch.allclose(_warp(x, 180), torch.flip(x, (2, 3)), atol=1e-12)
    # a non-square image turned by 180 degrees about its centre, in pixel units
    r = torch.rand(2, 1, 8, 14, dtype=torch.float64)
    assert torch.allclose(_warp(r, 180), torch.flip(r, (2, 3)), atol=1e-12)
    # zoom 1/2 of a white image: a white centre of half the side in black, edges bilinear
    out = _warp(torch.ones(1, 1, 16, 16, dtype=torch.float64), zoom=0.5)[0, 0]
    assert torch.allclose(out[5:11, 5:11], torch.ones(6, 6, dtype=torch.float64))
    assert float(out[:3].abs().max()) == 0 and float(out[:, 13:].abs().max()) == 0
    assert abs(float(out.sum()) - 64) < 1e-9                            # area x 1/4, the zoom squared
    # shear along x moves each row by tan(shear) x its offset from the centre; the centre rows' mass stays
    img = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    img[0, 0, 1, 4] = 1.0                                               # 3 rows above the centre row
    sh = _warp(img, shear=math.degrees(math.atan(1 / 3)))[0, 0]         # shifted by one pixel along x
    assert torch.allclose(sh.sum(1), img[0, 0].sum(1), atol=1e-12) and float(sh[1].argmax()) in (3.0, 5.0)
    assert float(sh[1].max()) == pytest.approx(1.0, abs=1e-12)


def test_affine_params_draw_the_configured_ranges_and_augment_uses_them():
    a, s, z = affine_params(20000, 12.0, 5.0, (0.8, 1.2), _gen(2))
    for v, lo, hi in ((a, -12, 12), (s, -5, 5), (z, 0.8, 1.2)):
        assert float(v.min()) >= lo and float(v.max()) <= hi
        assert float(v.min()) < lo + 0.01 * (hi - lo) and float(v.max()) > hi - 0.01 * (hi - lo)
        assert abs(float(v.mean()) - (lo + hi) / 2) < 0.01 * (hi - lo)
    assert torch.equal(affine_params(5, 0, 0, None, _gen())[2], torch.ones(5, dtype=torch.float64))
    x = torch.rand(6, 1, 10, 10)
    aug = Augment(shift=1, rotate=10, shear=5, zoom=(0.9, 1.1))
    g = _gen(7)
    ref = random_shift_flip(affine_warp(x, *affine_params(6, 10, 5, (0.9, 1.1), g)), 1, False, g)
    assert torch.equal(aug(x, _gen(7)), ref)
    assert torch.equal(Augment(shift=1)(x, _gen(7)), random_shift_flip(x, 1, False, _gen(7)))   # off: no draws


def test_same_seed_same_batches_with_crop_and_jitter_workers_and_resume():
    rng = np.random.default_rng(0)
    images = torch.as_tensor(rng.integers(0, 256, (40, 3, 12, 12), dtype=np.uint8))
    labels = torch.as_tensor(np.repeat(np.arange(4), 10))
    aug = Augment(shift=1, flip=True, crop_scale=(0.3, 1.0), jitter=0.4, rotate=10, shear=5, zoom=(0.9, 1.1))
    data = AugmentedImages(images, labels, Preprocess(12, 3, [0.5] * 3, [0.25] * 3), aug)
    a = list(train_loader(data, 8, seed=2, epoch=1))
    b = list(train_loader(data, 8, seed=2, epoch=1, num_workers=2))
    tail = list(train_loader(data, 8, seed=2, epoch=1, start_step=3))              # resumed mid-epoch
    assert len(a) == 5 and len(tail) == 2
    assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))
    assert all(torch.equal(x, u) for (x, _), (u, _) in zip(a[3:], tail))
    other = list(train_loader(data, 8, seed=3, epoch=1))
    assert not torch.equal(a[0][0], other[0][0])
    plain = list(train_loader(AugmentedImages(images, labels, data.preprocess, None), 8, seed=2, epoch=1))
    assert all(torch.equal(y, v) for (_, y), (_, v) in zip(a, plain))           # same samples, augmented
    assert not torch.equal(a[0][0], plain[0][0])


@pytest.mark.parametrize("field, value, words", [("crop_scale", [0.5, 2.0], "crop_scale"),
                                                  ("crop_scale", [0.6, 0.5], "crop_scale"),
                                                  ("crop_scale", [0.5], "two numbers"),
                                                  ("crop_ratio", [0.0, 1.0], "crop_ratio"),
                                                  ("jitter", 1.5, "jitter"), ("shift", -1, "shift"),
                                                  ("rotate", -5, "data.rotate"), ("rotate", float("nan"), "data.rotate"),
                                                  ("shear", 75, "data.shear"), ("zoom", [1.2, 0.8], "data.zoom"),
                                                  ("zoom", [0, 1], "data.zoom"), ("zoom", 1.1, "two numbers")])
def test_augment_config_is_checked(field, value, words):
    with pytest.raises(NclabError, match=words):
        augment_from_config(DataConfig(**{field: value}), flip=True)


def test_augment_config_builds_the_augmentation():
    aug = augment_from_config(DataConfig(shift=0, crop_scale=[0.08, 1], jitter=0.4), flip=True)
    assert aug == Augment(shift=0, flip=True, crop_scale=(0.08, 1.0), crop_ratio=(0.75, 4 / 3), jitter=0.4)
    assert augment_from_config(DataConfig(rotate=10, shear=5, zoom=[0.9, 1.1]), flip=False) == \
        Augment(shift=2, rotate=10.0, shear=5.0, zoom=(0.9, 1.1))
    assert augment_from_config(DataConfig(augment=False, jitter=5.0), flip=True) is None
    assert math.isclose(aug.crop_ratio[1], 4 / 3)
