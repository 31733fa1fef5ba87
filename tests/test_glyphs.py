"""The built-in glyphs dataset: inventory, homoglyphs, determinism, cache, splits, ink convention."""

from __future__ import annotations

import os
import unicodedata

import numpy as np
import pytest
import torch

from nclab.config import DataConfig
from nclab.data.glyphs import generate, generate_glyphs, inventory, load_glyphs, read_glyphs, scripts
from nclab.data.glyphs.inventory import build_inventory
from nclab.errors import NclabError

SMALL = 60          # classes in the quick subset (evenly spaced over all scripts)


@pytest.fixture(scope="module")
def inv():
    return build_inventory()


@pytest.fixture(scope="module")
def full():
    """The one full-size generation of this file: default parameters."""
    return generate_glyphs()


def test_inventory_size_and_candidates(inv):
    assert len(inv) >= 1500
    assert len(set(inv.codepoints)) == len(inv)
    assert list(inv.codepoints) == sorted(inv.codepoints)
    for cp, faces in zip(inv.codepoints, inv.faces):
        ch = chr(cp)
        assert len(faces) >= inventory.MIN_FACES
        assert unicodedata.category(ch)[0] in "LNS"
        assert unicodedata.normalize("NFKC", ch) == ch and unicodedata.normalize("NFD", ch) == ch


def test_known_homoglyphs_keep_one(inv):
    kept = set(inv.codepoints)
    assert 0x41 in kept and 0x391 not in kept and 0x410 not in kept        # A, Greek Alpha, Cyrillic A
    assert 0x4F in kept and not {0x6F, 0x39F, 0x3BF, 0x41E, 0x43E} & kept   # O; o, Omicron, Cyrillic O (same once scaled)
    assert not {0x6C, 0x49} <= kept                                          # l / I
    assert {0x3A8, 0x416} <= kept                                            # Psi, Zhe: no Latin look-alike


def test_no_two_kept_classes_coincide(inv):
    # Recompute D for the kept classes in float64 from freshly drawn reference rasters.
    refs = inventory.reference_rasters({cp: f for cp, f in zip(inv.codepoints, inv.faces)})
    feats = inventory.edge_features(np.stack([refs[cp] for cp in inv.codepoints])).astype(np.float64)
    norms = (feats ** 2).sum(1)
    d = (norms[:, None] + norms[None, :] - 2 * feats @ feats.T) / ((norms[:, None] + norms[None, :]) / 2)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= inventory.THRESHOLD
    # ... and every pair of kept classes is a different picture in the plain pixel sense too
    flat = np.stack([refs[cp] for cp in inv.codepoints]).reshape(len(inv), -1)
    assert len(np.unique(flat, axis=0)) == len(inv)


def test_dropped_candidates_each_coincide_with_a_kept_class(inv):
    # The greedy rule, checked on one script: every dropped Greek capital coincides with an earlier kept class.
    faces = inventory.drawing_faces()
    refs = inventory.reference_rasters(faces)
    cps = sorted(refs)
    feats = inventory.edge_features(np.stack([refs[cp] for cp in cps]))
    pos = {cp: i for i, cp in enumerate(cps)}
    kept_idx = [pos[cp] for cp in inv.codepoints]
    dropped = [cp for cp in range(0x391, 0x3AA) if cp in pos and cp not in set(inv.codepoints)]
    assert dropped, "expected some Greek capitals to be homoglyphs of Latin ones"
    for cp in dropped:
        d = inventory.edge_distance(feats[[pos[cp]]], feats[kept_idx])[0]
        earlier = np.asarray(kept_idx) < pos[cp]
        assert (d[earlier] < inventory.THRESHOLD).any()


def test_default_generation(full):
    counts = np.bincount(full.labels)
    assert len(full.codepoints) >= 1500 and counts.min() >= 20 and counts.max() == 20
    assert full.images.shape == (len(full.labels), 28, 28) and full.images.dtype == np.uint8
    # ink convention: background 0, ink bright, every image has ink and a mostly-dark background
    flat = full.images.reshape(len(full.images), -1)
    assert flat.max(1).min() == 255 and flat.min(1).max() == 0
    assert (flat == 0).mean() > 0.6 and (full.images[:, 0, :] == 0).mean() > 0.9


def test_subset_equals_slice_of_full(full):
    sub = generate_glyphs(max_classes=SMALL)
    rows = np.searchsorted(full.codepoints, sub.codepoints)
    assert np.array_equal(full.codepoints[rows], sub.codepoints)
    expect = np.concatenate([full.images[full.labels == r] for r in rows])
    assert np.array_equal(sub.images, expect)


def test_deterministic_bytes_and_thread_count():
    a = generate_glyphs(max_classes=SMALL, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = generate_glyphs(max_classes=SMALL, seed=3)
    finally:
        torch.set_num_threads(threads)
    assert a.images.tobytes() == b.images.tobytes()
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.codepoints, b.codepoints)
    c = generate_glyphs(max_classes=SMALL, seed=4)
    assert not np.array_equal(a.images, c.images)


def test_samples_vary_within_class():
    a = generate_glyphs(max_classes=SMALL)
    for c in range(0, SMALL, 7):
        imgs = a.images[a.labels == c].reshape(20, -1)
        assert len(np.unique(imgs, axis=0)) == 20


@pytest.mark.parametrize("size", [32, 84])
def test_other_sizes(size):
    a = generate_glyphs(image_size=size, samples_per_class=3, max_classes=12)
    assert a.images.shape == (36, size, size) and a.images.dtype == np.uint8
    flat = a.images.reshape(36, -1)
    assert flat.max(1).min() == 255 and flat.min(1).max() == 0 and (flat == 0).mean() > 0.5


def test_cache_hit_corrupt_and_key(tmp_path, monkeypatch):
    calls = []
    real = generate.generate_glyphs

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(generate, "generate_glyphs", counting)
    a = load_glyphs(28, 5, 0, max_classes=20, folder=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(calls) == 1 and len(files) == 1 and files[0].suffix == ".npz"
    mtime = files[0].stat().st_mtime_ns
    b = load_glyphs(28, 5, 0, max_classes=20, folder=tmp_path)
    assert len(calls) == 1 and files[0].stat().st_mtime_ns == mtime
    assert a.images.tobytes() == b.images.tobytes() and np.array_equal(a.codepoints, b.codepoints)
    # another parameter, another file
    load_glyphs(28, 5, 1, max_classes=20, folder=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.iterdir())) == 2
    # a corrupt (truncated) cache file is regenerated, not a crash
    files[0].write_bytes(files[0].read_bytes()[:500])
    c = load_glyphs(28, 5, 0, max_classes=20, folder=tmp_path)
    assert len(calls) == 3 and c.images.tobytes() == a.images.tobytes()
    assert load_glyphs(28, 5, 0, max_classes=20, folder=tmp_path).images.tobytes() == a.images.tobytes()
    assert len(calls) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temporary left


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NCLAB_CACHE_DIR", str(tmp_path))
    load_glyphs(28, 2, 0, max_classes=5)
    assert len(list((tmp_path / "glyphs").glob("glyphs-*.npz"))) == 1


def test_reader_splits_by_script(full, monkeypatch, tmp_path):
    monkeypatch.setattr(generate, "generate_glyphs", lambda *a, **k: full)
    monkeypatch.setenv("NCLAB_CACHE_DIR", str(tmp_path))
    ds = read_glyphs(DataConfig(name="glyphs"))
    n = len(ds.class_names)
    ids = np.concatenate([ds.class_splits[s] for s in ("source", "val", "novel")])
    assert sorted(ids.tolist()) == list(range(n))                            # cover all, disjoint
    split_scripts = {s: {ds.groups[i] for i in ds.class_splits[s]} for s in ds.class_splits}
    assert not (split_scripts["source"] & split_scripts["val"] or split_scripts["source"] & split_scripts["novel"]
                or split_scripts["val"] & split_scripts["novel"])
    frac = {s: len(v) / n for s, v in ds.class_splits.items()}
    assert 0.5 <= frac["source"] <= 0.7 and 0.05 <= frac["val"] <= 0.15 and 0.2 <= frac["novel"] <= 0.4
    assert len(ds.class_splits["novel"]) >= 300
    assert ds.name == "glyphs" and not ds.flip and ds.meta["generator_version"] == generate.GENERATOR_VERSION
    assert "GREEK CAPITAL LETTER PSI (U+03A8)" in ds.class_names[ds.meta["codepoints"].index(0x3A8)]
    assert len(set(ds.class_names)) == n
    novel = ds.class_set("novel")
    assert novel.counts().min() == 20


def test_every_script_has_a_split():
    for _, _, name in scripts.BLOCKS:
        assert scripts.split_of(name) in ("source", "val", "novel")
    assert scripts.split_of("Canadian Syllabics") == "novel" and scripts.split_of("Latin") == "source"


@pytest.mark.parametrize("field,cfg", [
    ("data.image_size", DataConfig(image_size=4)),
    ("data.samples_per_class", DataConfig(samples_per_class=0)),
])
def test_bad_parameters_name_the_field(field, cfg):
    with pytest.raises(NclabError, match=field):
        read_glyphs(cfg)


def test_fonts_are_the_bundled_ones():
    from nclab.data.glyphs import fonts
    for f in fonts.FACES:
        assert os.path.isfile(os.path.join(fonts.font_dir(), f.file))


def test_cache_key_follows_the_generator_source(monkeypatch):
    """Other generator code (even with the same GENERATOR_VERSION) or another torch gives
    another cache file, so stale arrays are never read as this code's output."""
    key = generate.cache_key(28, 20, 0)
    assert generate.source_digest() == generate.source_digest() and len(generate.source_digest()) == 64
    monkeypatch.setattr(generate, "source_digest", lambda: "0" * 64)
    assert generate.cache_key(28, 20, 0) != key
    monkeypatch.undo()
    monkeypatch.setattr(generate.torch, "__version__", "0.0.0")
    assert generate.cache_key(28, 20, 0) != key
