"""Class-balanced and imbalanced training subsets (data.train_per_class, data.imbalance_ratio,
data.majority_classes), the minority-collapse statistics (nclab.metrics.groups) against float64
brute force, and the probe keys they feed."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from nclab.config import DataConfig, load_config
from nclab.data.prepare import per_class_subset, prepare_data, train_counts
from nclab.errors import NclabError
from nclab.metrics.groups import group_accuracy, group_geometry, row_geometry
from nclab.models.heads import simplex_etf

# --- the subsampler ------------------------------------------------------------------------------


def test_train_counts_exact():
    cfg = DataConfig(train_per_class=1000, imbalance_ratio=100, majority_classes=3)
    assert train_counts(cfg, 7) == [1000] * 3 + [10] * 4
    assert train_counts(DataConfig(train_per_class=1000, imbalance_ratio=1000), 10) == [1000] * 5 + [1] * 5
    assert train_counts(DataConfig(train_per_class=12), 4) == [12] * 4
    assert train_counts(DataConfig(train_per_class=8, imbalance_ratio=1), 4) == [8] * 4
    assert train_counts(DataConfig(), 4) is None


@pytest.mark.parametrize("kw, match", [
    (dict(train_per_class=1000, imbalance_ratio=3), "not a whole number"),
    (dict(train_per_class=10, imbalance_ratio=20), "not a whole number"),
    (dict(train_per_class=10, imbalance_ratio=0.5), "expected R"),
    (dict(train_per_class=10, imbalance_ratio=float("nan")), "expected R"),
    (dict(train_per_class=10, imbalance_ratio=2, majority_classes=4), "majority_classes=4"),
    (dict(train_per_class=10, imbalance_ratio=2, majority_classes=0), "majority_classes=0"),
    (dict(imbalance_ratio=2), "need data.train_per_class"),
    (dict(train_per_class=10, majority_classes=2), "needs data.imbalance_ratio"),
    (dict(train_per_class=0), "at least 1"),
])
def test_train_counts_bad_inputs(kw, match):
    with pytest.raises(NclabError, match=match) as e:
        train_counts(DataConfig(**kw), 4)
    assert "\n" not in str(e.value)


def test_imbalanced_train_split_counts_nested_and_balanced_test(tiny_registered):
    base = dict(name=tiny_registered, holdout=2)              # tiny: 6 source classes of 10 samples
    full = prepare_data(DataConfig(**base))
    data = {r: prepare_data(DataConfig(**base, train_per_class=8, imbalance_ratio=r, majority_classes=2))
            for r in (1, 2, 4, 8)}
    for r, d in data.items():
        assert d.splits["train"].counts().tolist() == [8, 8] + [8 // r] * 4
        assert np.array_equal(d.splits["test"].images, full.splits["test"].images)      # the holdout is untouched
        assert np.array_equal(d.splits["test"].labels, full.splits["test"].labels)
    # every kept sample is a training sample of its class, and a smaller R keeps a superset
    rows = lambda d: {(int(y), im.tobytes()) for im, y in zip(d.splits["train"].images, d.splits["train"].labels)}  # noqa: E731
    full_rows = rows(full)
    for small, big in itertools.pairwise((8, 4, 2, 1)):
        assert rows(data[small]) <= rows(data[big]) <= full_rows
    again = prepare_data(DataConfig(**base, train_per_class=8, imbalance_ratio=4, majority_classes=2))
    assert np.array_equal(again.splits["train"].images, data[4].splits["train"].images)
    with pytest.raises(NclabError, match="has 8 train samples, fewer than the 9"):
        prepare_data(DataConfig(**base, train_per_class=9))


def test_per_class_subset_exact_counts():
    from nclab.data.base import ImageSet
    labels = np.array([0, 1, 1, 2, 2, 2, 0, 1, 2, 0])
    images = np.arange(10, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    s = ImageSet(images, labels, ["a", "b", "c"])
    rows = per_class_subset(s, [1, 2, 3], seed=0)
    assert np.bincount(labels[rows]).tolist() == [1, 2, 3]
    assert list(rows) == sorted(rows[labels[rows] == 0]) + sorted(rows[labels[rows] == 1]) + sorted(rows[labels[rows] == 2])
    assert set(per_class_subset(s, [1, 1, 1], 0)) <= set(rows)                     # nested


# --- the statistics ------------------------------------------------------------------------------

def _brute(A: np.ndarray) -> tuple[float, float, float]:
    A = A.astype(np.float64)
    norms = [math.sqrt(sum(float(x) ** 2 for x in a)) for a in A]
    cos = [sum(float(x) * float(y) for x, y in zip(A[i], A[j])) / (norms[i] * norms[j])
           for i in range(len(A)) for j in range(len(A)) if i != j]
    return sum(norms) / len(norms), sum(cos) / len(cos), max(cos)


def test_row_geometry_against_brute_force_float64():
    rng = np.random.default_rng(3)
    for m, d in ((2, 3), (5, 7), (6, 2)):
        A = rng.normal(size=(m, d)) * rng.uniform(0.1, 10, size=(m, 1))
        g = row_geometry(A.astype(np.float32))
        n, c, cmax = _brute(A.astype(np.float32))
        assert g["norm"] == pytest.approx(n, rel=1e-12)
        assert g["cos"] == pytest.approx(c, rel=1e-10, abs=1e-12) and g["cos_max"] == pytest.approx(cmax, rel=1e-10)
    one = row_geometry(np.ones((1, 4)))
    assert one == {"norm": 2.0, "cos": None, "cos_max": None}
    with pytest.raises(NclabError, match="non-empty"):
        row_geometry(np.zeros((0, 3)))


def test_group_geometry_oracles_and_invariances():
    K, d = 10, 16
    E = simplex_etf(K, d, seed=1, dtype=torch.float64).numpy()
    minority = range(5, 10)
    g = group_geometry(3.0 * E, 2.0 * E + 7.0, minority)            # means translated: centring removes it
    assert g["w_cos"] == pytest.approx(-1 / (K - 1), abs=1e-12) and g["w_norm"] == pytest.approx(3.0, rel=1e-12)
    assert g["h_cos"] == pytest.approx(-1 / (K - 1), abs=1e-12) and g["h_norm"] == pytest.approx(2.0, rel=1e-12)
    # minority rows collapsed onto one direction: cosine 1
    W = E.copy()
    W[5:] = np.linspace(0.5, 2.0, 5)[:, None] * E[5]
    g = group_geometry(W, E, minority)
    assert g["w_cos"] == pytest.approx(1.0, abs=1e-12) and g["w_cos_max"] == pytest.approx(1.0, abs=1e-12)
    assert g["w_norm"] == pytest.approx(np.linspace(0.5, 2.0, 5).mean(), rel=1e-12)
    # a rotation and a positive scale change no cosine; a permutation of the group none either
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(d, d)))
    Wr = np.random.default_rng(1).normal(size=(K, d))
    a, b = group_geometry(Wr, Wr, [1, 4, 7]), group_geometry(5 * Wr @ Q, Wr @ Q, [7, 1, 4])
    assert a["w_cos"] == pytest.approx(b["w_cos"], abs=1e-12) and a["h_cos"] == pytest.approx(b["h_cos"], abs=1e-12)
    assert b["w_norm"] == pytest.approx(5 * a["w_norm"], rel=1e-12)
    with pytest.raises(NclabError, match="out of range"):
        group_geometry(Wr, Wr, [3, 10])


def test_group_accuracy_exact():
    z = np.array([[2, 1, 0], [0, 3, 1], [0, 1, 5], [4, 0, 0], [0, 0, 1]], dtype=float)
    y = np.array([0, 1, 1, 2, 2])
    assert group_accuracy(z, y, [0]) == 1.0
    assert group_accuracy(z, y, [1, 2]) == 0.5
    assert group_accuracy(z, y, [2]) == 0.5
    assert group_accuracy(z[:1], y[:1], [2]) is None


# --- the probes under imbalance ------------------------------------------------------------------

def test_minority_probe_keys_match_the_final_weights(tmp_path, tiny_registered):
    from nclab.experiments.training import train
    from nclab.extract import features_of_split, load_run
    over = [f"data.name={tiny_registered}", "data.holdout=2", "data.train_per_class=8", "data.imbalance_ratio=4",
            "data.majority_classes=2", "model.backbone=mlp", "model.options={hidden: [16]}", "train.epochs=2",
            "train.batch_size=8", "trainer.progress=false", "probes.enabled=true", "probes.splits=[train, test]",
            "probes.fewshot.splits=[]", "probes.gc.splits=[train]", "probes.stages.splits=[train]"]
    run = train(None, over, out=tmp_path / "r")
    rec = run.records()[-1]
    loaded = load_run(run.path)
    tr, te = features_of_split(loaded, "train"), features_of_split(loaded, "test")
    assert np.bincount(tr.labels).tolist() == [8, 8, 2, 2, 2, 2]
    means = np.stack([tr.features[tr.labels == c].astype(np.float64).mean(0) for c in range(6)])
    for g, classes in (("majority", [0, 1]), ("minority", [2, 3, 4, 5])):
        ref = group_geometry(tr.W, means, classes)
        for k in ("w_cos", "w_norm", "h_cos", "h_norm"):
            assert rec[f"train/{g}_{k}"] == pytest.approx(ref[k], rel=1e-6, abs=1e-9), (g, k)
        for s, fs in (("train", tr), ("test", te)):
            z = fs.features.astype(np.float64) @ fs.W.T.astype(np.float64) + fs.b
            assert rec[f"{s}/{g}_acc"] == group_accuracy(z, fs.labels, classes)
    z = tr.features.astype(np.float64) @ tr.W.T.astype(np.float64) + tr.b
    assert rec["train/acc"] == float((z.argmax(1) == tr.labels).mean())
    from nclab.metrics import measure
    ref = measure(te.features, te.labels, te.W, te.b).to_dict()           # the test split with the classifier
    for k in ("nc1", "nc1_quotient", "nc2_etf_error", "nc3", "nc4"):
        assert rec[f"test/{k}"] == pytest.approx(ref[k], rel=1e-6, abs=1e-9), k
    assert rec["test/n_classes"] == 6
    assert load_config(run.path / "config.yaml").data.imbalance_ratio == 4.0


# --- train + val as source (data.trainval) -------------------------------------------------------


def test_trainval_appends_the_val_classes_to_the_source(tiny_registered):
    plain = prepare_data(DataConfig(name=tiny_registered, holdout=2))      # 6 source, 2 val, 4 novel classes
    tv = prepare_data(DataConfig(name=tiny_registered, holdout=2, trainval=True))
    src, val = plain.splits["train"].class_names, plain.splits["val"].class_names
    assert tv.splits["train"].class_names == tv.splits["test"].class_names == src + val
    assert tv.splits["val"].n_classes == 0 and len(tv.splits["val"].images) == 0
    assert tv.splits["novel"].class_names == plain.splits["novel"].class_names
    # every val image is in train + test under its new label (appended after the source labels)
    n_src = len(src)
    for split in ("train", "test"):
        a, b = plain.splits[split], tv.splits[split]
        keep = b.labels < n_src
        assert np.array_equal(b.images[keep], a.images) and np.array_equal(b.labels[keep], a.labels)
    moved = np.concatenate([tv.splits[s].images[tv.splits[s].labels >= n_src] for s in ("train", "test")])
    assert sorted(m.tobytes() for m in moved) == sorted(m.tobytes() for m in plain.splits["val"].images)
    assert tv.fingerprint != plain.fingerprint                # the run's data.json tells the two apart


def test_trainval_then_source_classes_draws_from_the_merged_classes(tiny_registered):
    """``source_classes=l`` with ``trainval``: l classes of the 6 + 2 merged ones, the same seeded,
    nested draw as without trainval (source_subset on the merged class set)."""
    from nclab.data.prepare import source_subset
    tv = prepare_data(DataConfig(name=tiny_registered, holdout=2, trainval=True))
    merged = tv.splits["train"].class_names
    drawn = {}
    for l in (3, 7):
        sub = prepare_data(DataConfig(name=tiny_registered, holdout=2, trainval=True, source_classes=l))
        names = sub.splits["train"].class_names
        assert len(names) == l and set(names) <= set(merged) and sub.splits["test"].class_names == names
        assert sub.splits["val"].n_classes == 0
        drawn[l] = names
    assert set(drawn[3]) < set(drawn[7])                                # nested
    assert any(n in drawn[7] for n in merged[6:])                       # 7 of 8: a val class must be in it
    ref = source_subset(tv.splits["train"], 7, DataConfig().seed).class_names
    assert drawn[7] == ref


def test_trainval_without_val_classes_is_one_line():
    from nclab.data.prepare import split_dataset
    from tests.conftest import tiny_dataset
    ds = tiny_dataset()
    ds.class_splits["val"] = ds.class_splits["val"][:0]
    with pytest.raises(NclabError, match="data.trainval=true: dataset 'tiny' has no val classes") as e:
        split_dataset(ds, DataConfig(trainval=True))
    assert "\n" not in str(e.value)
