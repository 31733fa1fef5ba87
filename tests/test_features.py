"""`nclab features`: a run's splits and any image folder, with exactly the run's preprocessing."""

import numpy as np
import pytest
import torch
from PIL import Image

from nclab.errors import NclabError
from nclab.extract import (embed, features_of_folder, features_of_split, load_feature_source, load_run, match_ink,
                           split_images, write_features)
from nclab.featurefile import load_features
from nclab.train.run import start_run


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_registered):
    out = tmp_path_factory.mktemp("feat") / "run"
    return start_run(None, [f"data.name={tiny_registered}", "train.epochs=2", "train.batch_size=12",
                            "trainer.progress=false", "model.options.width=8"], out=out)


def test_split_features_are_the_networks_own(run, tmp_path):
    loaded = load_run(run.path)
    fs = features_of_split(loaded, "test")
    assert fs.features.dtype == np.float32 and fs.features.shape[1] == 8
    # Recompute by hand: normalise with the run's saved mean / std, forward through the backbone.
    from nclab.data.prepare import prepare_data
    raw = prepare_data(loaded.config.data).splits["test"]
    pre = loaded.preprocess
    x = (torch.as_tensor(raw.images).float()[:, None] / 255 - pre.mean[0]) / pre.std[0]
    with torch.no_grad():
        ref = loaded.model.backbone(x).numpy()
    assert np.allclose(fs.features, ref, atol=1e-6) and np.array_equal(fs.labels, raw.labels)
    W = loaded.model.head.weight.detach().numpy()
    assert np.allclose(fs.W, W) and fs.b.shape == (6,)
    logits = fs.features @ fs.W.T + fs.b
    assert np.array_equal(logits.argmax(1), (ref @ W.T + loaded.model.head.bias.detach().numpy()).argmax(1))
    novel = features_of_split(loaded, "novel")
    assert novel.W is None and novel.n_classes == 4


def test_feature_file_round_trip_and_cli_source(run, tmp_path):
    out = tmp_path / "f.npz"
    fs = write_features(str(run.path), str(out), split="train")
    back = load_features(out)
    assert np.array_equal(back.features, fs.features) and np.array_equal(back.labels, fs.labels)
    assert back.class_names == fs.class_names and np.array_equal(back.W, fs.W)
    same = load_feature_source(run.path, "train")
    assert np.array_equal(same.features, fs.features)
    with pytest.raises(NclabError, match="--split"):
        load_feature_source(run.path, None)


@pytest.mark.parametrize("ink", ["dark", "auto"])
def test_folder_with_dark_ink_gives_the_split_features(run, tmp_path, ink):
    loaded = load_run(run.path)
    from nclab.data.prepare import prepare_data
    novel = prepare_data(loaded.config.data).splits["novel"]
    for i, (img, y) in enumerate(zip(novel.images, novel.labels)):
        d = tmp_path / "imgs" / "set" / novel.class_names[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - img).save(d / f"{i:03d}.png")         # black ink on white paper
    got = features_of_folder(loaded, tmp_path / "imgs", ink=ink)
    ref = features_of_split(loaded, "novel")
    assert got.class_names == [f"set/{c}" for c in ref.class_names]        # class = leaf folder path
    assert np.allclose(got.features, ref.features, atol=1e-6) and np.array_equal(got.labels, ref.labels)


def test_match_ink_auto_inverts_only_light_paper():
    a = np.zeros((2, 6, 6), np.uint8)
    a[0, 2:4, 2:4] = 255                  # bright ink on dark: unchanged
    a[1] = 255
    a[1, 2:4, 2:4] = 0                    # dark ink on light paper: inverted
    out = match_ink(a, "auto")
    assert np.array_equal(out[0], a[0]) and np.array_equal(out[1], 255 - a[1])


def test_bad_inputs(run, tmp_path):
    with pytest.raises(NclabError, match="not a run directory"):
        load_run(tmp_path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(NclabError, match="bad.npz"):
        load_features(bad)
    with pytest.raises(NclabError, match="no such image folder"):
        features_of_folder(load_run(run.path), tmp_path / "nope")


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory, rgb_registered):
    """A run on RGB images whose dataset allows horizontal flips (natural images)."""
    out = tmp_path_factory.mktemp("rgb") / "run"
    return start_run(None, [f"data.name={rgb_registered}", "data.augment=false", "train.epochs=1",
                            "train.batch_size=12", "trainer.progress=false", "model.options.width=8"], out=out)


def test_flip_tta_is_the_mean_over_the_mirror_and_mirror_invariant(rgb_run, tmp_path):
    loaded = load_run(rgb_run.path)
    novel = loaded.data.splits["novel"]
    x, pre = novel.images, loaded.preprocess
    plain, mirrored = embed(loaded.model, x, pre), embed(loaded.model, np.ascontiguousarray(x[:, :, ::-1]), pre)
    assert not np.allclose(plain, mirrored, atol=1e-3)        # the network is not mirror-symmetric by itself
    tta = features_of_split(loaded, "novel", tta="flip").features
    assert np.allclose(tta, (plain + mirrored) / 2, atol=1e-6)  # oracle: the two views' mean
    # Invariance: an image and its mirror get the same features (up to float rounding of the batch).
    tta_of_mirrors = embed(loaded.model, np.ascontiguousarray(x[:, :, ::-1]), pre, tta="flip")
    assert np.allclose(tta_of_mirrors, tta, atol=1e-6)
    # The feature file holds the same features; "none" is the plain features.
    fs = write_features(str(rgb_run.path), str(tmp_path / "f.npz"), split="novel", tta="flip")
    assert np.array_equal(load_features(tmp_path / "f.npz").features, fs.features)
    assert np.allclose(fs.features, tta, atol=1e-7)
    assert np.array_equal(features_of_split(loaded, "novel", tta="none").features, plain)


def test_flip_tta_on_an_image_folder_equals_the_split(rgb_run, tmp_path):
    loaded = load_run(rgb_run.path)
    novel = loaded.data.splits["novel"]
    for i, (img, y) in enumerate(zip(novel.images, novel.labels)):    # PNG keeps RGB uint8 exactly
        d = tmp_path / "imgs" / novel.class_names[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:03d}.png")
    got = features_of_folder(loaded, tmp_path / "imgs", tta="flip")
    ref = features_of_split(loaded, "novel", tta="flip")
    assert got.class_names == ref.class_names and np.array_equal(got.labels, ref.labels)
    assert np.allclose(got.features, ref.features, atol=1e-6)
    assert not np.allclose(got.features, features_of_split(loaded, "novel").features, atol=1e-3)


def test_flip_tta_refused_on_characters_and_unknown_names(run, rgb_run):
    with pytest.raises(NclabError, match="does not allow horizontal flips"):
        features_of_split(load_run(run.path), "novel", tta="flip")
    with pytest.raises(NclabError, match="tta 'rotate'"):
        features_of_split(load_run(rgb_run.path), "novel", tta="rotate")


# --- the feature cache ----------------------------------------------------------------------------

def _feature_entries(cache):
    return sorted((cache / "datasets" / "features").glob("[!.]*"))


def test_split_features_are_cached_by_weights_and_split(run, private_cache, monkeypatch):
    """A second call reads the cached features (the same array, no embedding); other weights or
    another split are embedded afresh; a damaged entry is rebuilt, not trusted."""
    import nclab.extract as extract
    loaded = load_run(run.path)
    first = features_of_split(loaded, "test").features
    assert len(_feature_entries(private_cache)) == 1
    calls = []
    real = extract.embed
    monkeypatch.setattr(extract, "embed", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = features_of_split(load_run(run.path), "test")
    assert calls == [] and np.array_equal(again.features, first) and again.W is not None
    ref = real(loaded.model, split_images(loaded, "test").images, loaded.preprocess)
    assert np.array_equal(first, ref)                                         # the cache holds the network's features
    with torch.no_grad():
        next(loaded.model.backbone.parameters()).mul_(1.5)
    changed = features_of_split(loaded, "test").features
    assert calls == [1] and not np.allclose(changed, first)                  # new weights: embedded again
    features_of_split(loaded, "novel")
    assert calls == [1, 1] and len(_feature_entries(private_cache)) == 3
    for entry in _feature_entries(private_cache):                             # damage every entry
        for f in entry.glob("*.npy"):
            f.write_bytes(f.read_bytes()[:40])
    assert np.array_equal(features_of_split(load_run(run.path), "test").features, first) and len(calls) == 3


def test_feature_cache_keeps_to_its_size_and_can_be_off(run, private_cache, monkeypatch):
    loaded = load_run(run.path)
    monkeypatch.setenv("NCLAB_FEATURE_CACHE_GB", "0")
    features_of_split(loaded, "test")
    assert _feature_entries(private_cache) == []
    # room for the larger entry (novel: 40 x 8 float32) but not for both: the least recently used goes
    monkeypatch.setenv("NCLAB_FEATURE_CACHE_GB", str(2000 / 2**30))
    features_of_split(loaded, "test")
    (test_entry,) = _feature_entries(private_cache)
    features_of_split(loaded, "novel")
    (novel_entry,) = _feature_entries(private_cache)
    assert novel_entry != test_entry and not test_entry.exists()
    for bad in ("-1", "lots", "nan"):
        monkeypatch.setenv("NCLAB_FEATURE_CACHE_GB", bad)
        with pytest.raises(NclabError, match="NCLAB_FEATURE_CACHE_GB") as e:
            features_of_split(loaded, "test")
        assert "\n" not in str(e.value)
