"""Data pipeline: holdout, seeded batches, augmentation, preprocessing."""

import numpy as np
import pytest
import torch

from nclab.data.base import ImageSet, holdout_split
from nclab.data.loader import AugmentedImages, EpochBatchSampler, train_loader
from nclab.data.prepare import source_subset
from nclab.data.transforms import Augment, Preprocess, random_shift_flip
from nclab.errors import NclabError
from tests.conftest import tiny_dataset


def _set(n_classes=5, per=9):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), per)
    rng.shuffle(y)
    return ImageSet(rng.integers(0, 256, (len(y), 8, 8), dtype=np.uint8), y, [f"k{i}" for i in range(n_classes)])


def test_holdout_is_fixed_disjoint_and_per_class():
    s = _set()
    tr, te = holdout_split(s, 2, seed=3)
    tr2, te2 = holdout_split(s, 2, seed=3)
    assert np.array_equal(te, te2) and np.array_equal(tr, tr2)
    assert not set(tr) & set(te) and len(tr) + len(te) == len(s)
    assert np.array_equal(np.bincount(s.labels[te]), [2] * 5)
    assert not np.array_equal(holdout_split(s, 2, seed=4)[1], te)
    _, te_frac = holdout_split(s, 0.25, seed=3)
    assert np.array_equal(np.bincount(s.labels[te_frac]), [2] * 5)      # round(0.25 * 9) = 2
    with pytest.raises(NclabError, match="holdout"):
        holdout_split(s, 9, seed=0)


def test_class_index_and_source_subset_nesting():
    s = _set(10, 4)
    for c, idx in enumerate(s.class_index):
        assert np.all(s.labels[idx] == c)
    a, b = source_subset(s, 4, seed=1), source_subset(s, 7, seed=1)
    assert set(a.class_names) < set(b.class_names)
    assert a.n_classes == 4 and np.array_equal(np.bincount(a.labels), [4] * 4)


def test_epoch_batches_cover_a_permutation_and_resume_mid_epoch():
    full = list(EpochBatchSampler(103, 10, seed=5, epoch=2, drop_last=False))
    idx = np.concatenate([b.indices for b in full])
    assert sorted(idx) == list(range(103)) and len(full) == 11
    tail = list(EpochBatchSampler(103, 10, seed=5, epoch=2, start_step=4, drop_last=False))
    assert all(np.array_equal(a.indices, b.indices) and a.seed == b.seed for a, b in zip(full[4:], tail))
    other = list(EpochBatchSampler(103, 10, seed=5, epoch=3, drop_last=False))
    assert not np.array_equal(other[0].indices, full[0].indices)
    assert len(list(EpochBatchSampler(103, 10, seed=5, epoch=2, drop_last=True))) == 10


def test_class_balanced_batches_are_whole_groups_and_resume():
    y = np.repeat(np.arange(7), [5, 9, 4, 12, 3, 8, 6])
    np.random.default_rng(1).shuffle(y)
    k, B = 3, 12
    s = EpochBatchSampler(len(y), B, seed=4, epoch=1, labels=y, per_class=k)
    full = list(s)
    kept = sum(c // k * k for c in np.bincount(y))                        # 3+9+3+12+3+6+6 = 42
    assert s.epoch_size() == kept == 42 and len(full) == kept // B == 3
    idx = np.concatenate([b.indices for b in full])
    assert len(set(idx.tolist())) == len(idx)                              # no sample twice in an epoch
    for b in full:
        groups = y[b.indices].reshape(-1, k)
        assert len(b.indices) == B and np.all(groups == groups[:, :1])     # B / k groups of one class each
    # every class contributes a multiple of k over the whole order, its remainder sits out
    order = s._order()
    assert len(order) == kept and np.all(np.bincount(y[order], minlength=7) == np.bincount(y) // k * k)
    tail = list(EpochBatchSampler(len(y), B, seed=4, epoch=1, start_step=1, labels=y, per_class=k))
    assert all(np.array_equal(a.indices, b.indices) and a.seed == b.seed for a, b in zip(full[1:], tail))
    other = [b.indices for b in EpochBatchSampler(len(y), B, seed=4, epoch=2, labels=y, per_class=k)]
    assert not np.array_equal(other[0], full[0].indices)
    # two processes: each rank's slice is whole groups of the single-process batch
    r0, r1 = (list(EpochBatchSampler(len(y), B, 4, 1, rank=r, world=2, labels=y, per_class=k)) for r in (0, 1))
    for a, b, c in zip(full, r0, r1):
        assert np.array_equal(a.indices, b.indices) and (b.lo, b.hi, c.lo, c.hi) == (0, 6, 6, 12)
    for bad, world in [(5, 1), (1, 1), (6, 4)]:                           # 12 % 5, k = 1, 12 % (6 * 4)
        with pytest.raises(NclabError, match="batch_per_class"):
            EpochBatchSampler(len(y), B, 4, 1, world=world, labels=y, per_class=bad)


def test_ranks_split_the_single_process_batch_exactly():
    ds = tiny_dataset()
    images = torch.as_tensor(ds.images).unsqueeze(1)
    pre = Preprocess(16, 1, [0.2], [0.3])
    data = AugmentedImages(images, torch.as_tensor(ds.labels), pre, Augment(shift=2, flip=True))
    single = [b for b in train_loader(data, 8, seed=1, epoch=0)]
    r0 = [b for b in train_loader(data, 8, seed=1, epoch=0, rank=0, world=2)]
    r1 = [b for b in train_loader(data, 8, seed=1, epoch=0, rank=1, world=2)]
    for (x, y), (x0, y0), (x1, y1) in zip(single, r0, r1):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_workers_give_the_same_batches():
    ds = tiny_dataset()
    data = AugmentedImages(torch.as_tensor(ds.images).unsqueeze(1), torch.as_tensor(ds.labels),
                           Preprocess(16, 1, [0.0], [1.0]), Augment(shift=2))
    a = list(train_loader(data, 16, seed=2, epoch=1))
    b = list(train_loader(data, 16, seed=2, epoch=1, num_workers=2))
    assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def test_shift_is_a_zero_filled_translation():
    x = torch.rand(6, 1, 10, 10)
    g = torch.Generator().manual_seed(0)
    out = random_shift_flip(x, 2, False, g)
    off = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(0)) - 2   # same draws
    for i in range(6):
        dy, dx = int(off[0, i]), int(off[1, i])
        ref = torch.zeros(1, 10, 10)
        src = x[i, :, max(0, dy):10 + min(0, dy), max(0, dx):10 + min(0, dx)]
        ref[:, max(0, -dy):10 - max(0, dy), max(0, -dx):10 - max(0, dx)] = src
        assert torch.equal(out[i], ref)


def test_flip_mirrors_about_half_the_images():
    x = torch.rand(400, 1, 5, 5)
    out = random_shift_flip(x, 0, True, torch.Generator().manual_seed(1))
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert torch.all(flipped ^ same) and 150 < int(flipped.sum()) < 250


def test_preprocess_fit_matches_numpy_and_normalises():
    imgs = np.random.default_rng(0).integers(0, 256, (50, 7, 7, 3), dtype=np.uint8)
    pre = Preprocess.fit(imgs, chunk=7)
    a = imgs.reshape(-1, 3) / 255.0
    assert np.allclose(pre.mean, a.mean(0), atol=1e-12) and np.allclose(pre.std, a.std(0), atol=1e-12)
    x = pre(imgs).double()
    assert x.shape == (50, 3, 7, 7)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3), correction=0), torch.ones(3, dtype=torch.float64), atol=1e-5)
