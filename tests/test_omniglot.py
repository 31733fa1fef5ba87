"""Omniglot reader: the real copy in ../shared/data/omniglot (skipped when absent) and tiny
fixtures in the npz, PNG-folder and zip layouts."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nclab.config import DataConfig
from nclab.data import load_dataset
from nclab.errors import NclabError
from tests.conftest import cache_entries, cache_files

REAL = Path(os.environ.get("NCLAB_OMNIGLOT_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot")
needs_real = pytest.mark.skipif(not (REAL / "images_background.npz").is_file(), reason=f"no Omniglot copy at {REAL}")


pytestmark = pytest.mark.usefixtures("private_cache")


def area_brute(img: np.ndarray, size: int) -> np.ndarray:
    """Exact area average in float64 by supersampling to the common multiple of the sizes."""
    n = img.shape[0]
    big = np.kron(img.astype(np.float64), np.ones((size, size)))          # (n*size)^2, pixel = size x size block
    return big.reshape(size, n, size, n).mean(axis=(1, 3))


# --- the real copy ------------------------------------------------------------------------------

@needs_real
def test_real_background_split(tmp_path):
    ds = load_dataset(DataConfig(name="omniglot", root=str(REAL)))
    assert ds.images.shape == (32460, 28, 28) and ds.images.dtype == np.uint8
    assert {k: len(v) for k, v in ds.class_splits.items()} == {"source": 964, "val": 0, "novel": 659}
    assert np.bincount(ds.labels).tolist() == [20] * 1623
    assert ds.flip is False and ds.meta["checks"]["checksum"].startswith("ok")
    # no alphabet in two splits; 30 background / 20 evaluation alphabets
    src = {ds.groups[i] for i in ds.class_splits["source"]}
    nov = {ds.groups[i] for i in ds.class_splits["novel"]}
    assert len(src) == 30 and len(nov) == 20 and not src & nov
    # class ids follow alphabets.csv: first_character_id + c - 1
    rows = [ln.split(",") for ln in (REAL / "alphabets.csv").read_text().splitlines()[1:]]
    for s, alpha, first, n in rows:
        assert ds.class_names[int(first) - 1] == f"{alpha}/character01"
        assert ds.class_names[int(first) + int(n) - 2] == f"{alpha}/character{int(n):02d}"
    # ink bright: paper (the border) is 0, strokes reach 255; matches the exact area average of inverted pixels
    with np.load(REAL / "images_evaluation.npz") as z:
        paper = z["images"][[0, 300, 658], 7]
    for k, (c, d) in enumerate([(964, 7), (964 + 300, 7), (964 + 658, 7)]):
        img = ds.images[c * 20 + d]
        ref = area_brute(np.where(paper[k], 0.0, 255.0), 28)
        assert np.abs(img - ref).max() <= 0.5 + 1e-9
    assert np.median(ds.images) == 0 and ds.images.max() == 255


@needs_real
def test_real_vinyals_split_and_cache(tmp_path):
    ds = load_dataset(DataConfig(name="omniglot", root=str(REAL), split="vinyals"))
    lines = {f: (REAL / "splits" / "vinyals" / f"{f}.txt").read_text().split() for f in ("train", "val", "test")}
    assert [len(ds.class_splits[s]) for s in ("source", "val", "novel")] == [len(lines[f]) for f in ("train", "val", "test")]
    assert [len(ds.class_splits[s]) for s in ("source", "val", "novel")] == [4112, 688, 1692]
    assert ds.class_names == lines["train"] + lines["val"] + lines["test"]
    assert len(ds.labels) == 20 * len(ds.class_names)
    base = load_dataset(DataConfig(name="omniglot", root=str(REAL)))            # served from the cache
    entries = cache_entries(tmp_path)
    assert len(entries) == 1 and sorted(f.name for f in entries[0].iterdir()) == \
        ["class_names.npy", "groups.npy", "images.npy", "labels.npy", "meta.npy", "sets.npy"]
    idx = {n: i for i, n in enumerate(base.class_names)}
    for c in (0, 1, 2, 3, 5000, 6491):
        name = ds.class_names[c]
        char, rot = name.rsplit("/", 1)
        want = np.rot90(base.images[base.labels == idx[char]], k=int(rot[3:]) // 90, axes=(1, 2))
        assert np.array_equal(ds.images[ds.labels == c], want)
    again = load_dataset(DataConfig(name="omniglot", root=str(REAL), split="vinyals"))
    assert again.fingerprint() == ds.fingerprint()


# --- fixtures in every layout ---------------------------------------------------------------------

ALPHABETS = [("background", "Alpha", 3), ("background", "Beta_(x)", 2), ("evaluation", "Gamma", 2)]


def make_npz_layout(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows, first, arrays = ["set,alphabet,first_character_id,n_characters"], 1, {}
    for s in ("background", "evaluation"):
        n = sum(k for t, _, k in ALPHABETS if t == s)
        arrays[s] = rng.random((n, 20, 105, 105)) < 0.8                        # True = paper
        np.savez_compressed(root / f"images_{s}.npz", images=arrays[s],
                            labels=np.repeat(np.arange(n)[:, None], 20, axis=1))
    for s, a, k in ALPHABETS:
        rows.append(f"{s},{a},{first},{k}")
        first += k
    (root / "alphabets.csv").write_text("\n".join(rows) + "\n")
    (root / "splits" / "vinyals").mkdir(parents=True)
    (root / "splits" / "vinyals" / "train.txt").write_text("Alpha/character01/rot000\nAlpha/character01/rot090\n")
    (root / "splits" / "vinyals" / "val.txt").write_text("Beta_(x)/character02/rot180\n")
    (root / "splits" / "vinyals" / "test.txt").write_text("Gamma/character01/rot270\nGamma/character02/rot000\n")
    return arrays


def make_png_layout(root: Path, arrays: dict[str, np.ndarray]) -> None:
    cid = 1
    for s in ("background", "evaluation"):
        i = 0
        for t, alpha, k in ALPHABETS:
            if t != s:
                continue
            for c in range(k):
                d = root / f"images_{s}" / alpha / f"character{c + 1:02d}"
                d.mkdir(parents=True)
                for drawer in range(20):
                    Image.fromarray(arrays[s][i, drawer]).save(d / f"{cid:04d}_{drawer + 1:02d}.png")
                i += 1
                cid += 1


def test_npz_png_and_zip_layouts_agree(tmp_path):
    arrays = make_npz_layout(tmp_path / "npz")
    make_png_layout(tmp_path / "png", arrays)
    shutil.copytree(tmp_path / "npz" / "splits", tmp_path / "png" / "splits")
    (tmp_path / "zip").mkdir()
    for s in ("background", "evaluation"):
        with zipfile.ZipFile(tmp_path / "zip" / f"images_{s}.zip", "w") as zf:
            for p in sorted((tmp_path / "png").rglob("*")):
                if f"images_{s}" in p.parts:
                    zf.write(p, p.relative_to(tmp_path / "png").as_posix())
    shutil.copytree(tmp_path / "npz" / "splits", tmp_path / "zip" / "splits")
    for split in ("background", "vinyals"):
        got = [load_dataset(DataConfig(name="omniglot", root=str(tmp_path / lay), split=split))
               for lay in ("npz", "png", "zip")]
        for ds in got[1:]:
            assert np.array_equal(ds.images, got[0].images) and np.array_equal(ds.labels, got[0].labels)
            assert ds.class_names == got[0].class_names and ds.groups == got[0].groups
    ds = got[0]                                                                 # vinyals on the fixture
    assert ds.class_names == ["Alpha/character01/rot000", "Alpha/character01/rot090",
                              "Beta_(x)/character02/rot180", "Gamma/character01/rot270", "Gamma/character02/rot000"]
    assert {k: v.tolist() for k, v in ds.class_splits.items()} == {"source": [0, 1], "val": [2], "novel": [3, 4]}
    tv = load_dataset(DataConfig(name="omniglot", root=str(tmp_path / "npz"), split="vinyals-trainval"))
    assert tv.class_names == ds.class_names and np.array_equal(tv.images, ds.images)
    assert {k: v.tolist() for k, v in tv.class_splits.items()} == {"source": [0, 1, 2], "val": [], "novel": [3, 4]}
    mir = load_dataset(DataConfig(name="omniglot", root=str(tmp_path / "npz"), split="vinyals-trainval-mirror"))
    assert mir.class_names == ["Alpha/character01/rot000", "Alpha/character01/rot000/mirror",
                               "Alpha/character01/rot090", "Alpha/character01/rot090/mirror",
                               "Beta_(x)/character02/rot180", "Beta_(x)/character02/rot180/mirror",
                               "Gamma/character01/rot270", "Gamma/character02/rot000"]
    assert {k: v.tolist() for k, v in mir.class_splits.items()} == {"source": [0, 1, 2, 3, 4, 5], "val": [],
                                                                     "novel": [6, 7]}
    assert mir.groups == ["Alpha"] * 4 + ["Beta_(x)"] * 2 + ["Gamma"] * 2
    for c, name in enumerate(mir.class_names):                  # each class: its vinyals class, mirrored or not
        orig = tv.images[tv.labels == tv.class_names.index(name.removesuffix("/mirror"))]
        assert np.array_equal(mir.images[mir.labels == c], orig[:, :, ::-1] if name.endswith("/mirror") else orig)
    # class 3 = evaluation character 1 (global id 6) rotated 270 degrees counter-clockwise
    ink = np.where(arrays["evaluation"][0], 0.0, 255.0)
    for d in range(20):
        ref = np.rot90(area_brute(ink[d], 28), k=3)
        assert np.abs(ds.images[ds.labels == 3][d] - ref).max() <= 0.5 + 1e-9


def test_background_split_and_native_size(tmp_path):
    arrays = make_npz_layout(tmp_path / "o")
    ds = load_dataset(DataConfig(name="omniglot", root=str(tmp_path / "o"), image_size=105))
    assert ds.images.shape == (7 * 20, 105, 105)
    assert {k: v.tolist() for k, v in ds.class_splits.items()} == {"source": [0, 1, 2, 3, 4], "val": [], "novel": [5, 6]}
    assert ds.groups == ["Alpha"] * 3 + ["Beta_(x)"] * 2 + ["Gamma"] * 2
    assert ds.class_names[3] == "Beta_(x)/character01"
    assert np.array_equal(ds.images[ds.labels == 6], np.where(arrays["evaluation"][1], 0, 255))   # exact inversion
    assert ds.meta["checks"]["standard_counts"] is False


def test_bad_inputs_name_the_file_and_cache_nothing(tmp_path):
    root = tmp_path / "o"
    make_npz_layout(root)
    with pytest.raises(NclabError, match="data.split"):
        load_dataset(DataConfig(name="omniglot", root=str(root), split="nope"))
    with pytest.raises(NclabError, match="not found"):
        load_dataset(DataConfig(name="omniglot", root=str(tmp_path / "missing")))
    (root / "splits" / "vinyals" / "val.txt").write_text("Beta_(x)/character09/rot000\n")
    with pytest.raises(NclabError, match=r"val\.txt:1: class 'Beta_\(x\)/character09' is not in"):
        load_dataset(DataConfig(name="omniglot", root=str(root), split="vinyals"))
    n_cached = len(cache_files(tmp_path))                                     # the valid base arrays only
    data = (root / "images_evaluation.npz").read_bytes()
    (root / "images_evaluation.npz").write_bytes(data[: len(data) // 2])          # truncated
    with pytest.raises(NclabError, match="images_evaluation.npz: corrupt"):
        load_dataset(DataConfig(name="omniglot", root=str(root)))
    np.savez(root / "images_evaluation.npz", images=np.zeros((2, 20, 105, 104), bool))
    with pytest.raises(NclabError, match=r"images_evaluation.npz: images have shape \(2, 20, 105, 104\), expected \(2, 20, 105, 105\)"):
        load_dataset(DataConfig(name="omniglot", root=str(root)))
    np.savez(root / "images_evaluation.npz", images=np.ones((2, 20, 105, 105), bool), labels=np.full((2, 20), 5))
    with pytest.raises(NclabError, match="images_evaluation.npz: labels"):
        load_dataset(DataConfig(name="omniglot", root=str(root)))
    assert len(cache_files(tmp_path)) == n_cached and not any(".tmp" in f for f in cache_files(tmp_path))
    np.savez(root / "images_evaluation.npz", images=np.ones((2, 20, 105, 105), bool))
    (root / "SHA256SUMS").write_text("0" * 64 + "  images_evaluation.npz\n")
    with pytest.raises(NclabError, match="images_evaluation.npz: SHA-256 differs"):
        load_dataset(DataConfig(name="omniglot", root=str(root)))


def test_png_layout_errors(tmp_path):
    make_png_layout(tmp_path / "png", make_npz_layout(tmp_path / "npz"))
    bad = next((tmp_path / "png").rglob("*.png"))
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(NclabError, match=f"{bad.name}: corrupt or truncated image"):
        load_dataset(DataConfig(name="omniglot", root=str(tmp_path / "png")))
    assert cache_files(tmp_path) == []
    shutil.rmtree(tmp_path / "png" / "images_evaluation")
    with pytest.raises(NclabError, match="expected images_evaluation.npz, images_evaluation/ or images_evaluation.zip"):
        load_dataset(DataConfig(name="omniglot", root=str(tmp_path / "png")))
