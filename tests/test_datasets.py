"""Real-dataset readers on tiny fixtures built in every distributed format: CIFAR-FS / FC-100
(CIFAR-100 python release, MetaOptNet / RFS pickles), mini-ImageNet (CSV + images/, CSV +
class folders, RFS pickles), (Fashion-)MNIST IDX files and image folders."""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nclab.config import DataConfig
from nclab.data import load_dataset
from nclab.data.class_lists import CIFAR100_CLASSES, CIFAR100_SUPERCLASS_OF, CIFAR_FS, FC100
from nclab.data.folder import load_image_folder
from nclab.data import safe_pickle
from nclab.data.resize import resize_area
from nclab.errors import NclabError
from tests.conftest import cache_entries, cache_files

FASHION = Path("/usr/share/datasets/fashion-mnist")


pytestmark = pytest.mark.usefixtures("private_cache")


def load(name, root, **kw):
    return load_dataset(DataConfig(name=name, root=str(root), **kw))


# --- CIFAR-100 python release ------------------------------------------------------------------

def make_cifar_release(folder: Path, per=(3, 1), seed=0):
    """The official layout with bytes keys; image i of class c has pixel [0,0,0] = c (checkable)."""
    folder.mkdir(parents=True)
    coarse = sorted(set(CIFAR100_SUPERCLASS_OF.values()))
    rng = np.random.default_rng(seed)
    parts = {}
    for part, n in zip(("train", "test"), per):
        fine = np.tile(np.arange(100), n)
        data = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        data[:, 0] = fine
        d = {b"data": data, b"fine_labels": fine.tolist(),
             b"coarse_labels": [coarse.index(CIFAR100_SUPERCLASS_OF[CIFAR100_CLASSES[f]]) for f in fine],
             b"filenames": [f"{i}.png".encode() for i in range(len(fine))]}
        (folder / part).write_bytes(pickle.dumps(d, protocol=2))
        parts[part] = d
    meta = {b"fine_label_names": [c.encode() for c in CIFAR100_CLASSES], b"coarse_label_names": [c.encode() for c in coarse]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return parts


@pytest.mark.parametrize("name,lists", [("cifar-fs", CIFAR_FS), ("fc100", FC100)])
def test_cifar_release_standard_splits(tmp_path, name, lists):
    parts = make_cifar_release(tmp_path / "c" / "cifar-100-python")
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "c" / "cifar-100-python", "cifar-100-python")
    got = [load(name, r) for r in (tmp_path / "c", tmp_path / "c" / "cifar-100-python", tmp_path / "cifar-100-python.tar.gz")]
    ds = got[0]
    for other in got[1:]:
        assert other.fingerprint() == ds.fingerprint()
    for s, classes in lists.items():
        assert [ds.class_names[i] for i in ds.class_splits[s]] == classes
    assert ds.images.shape == (400, 32, 32, 3) and ds.flip is True
    assert np.bincount(ds.labels).tolist() == [4] * 100                          # train + test pooled
    # planes -> HWC, train part first then test
    first_test = parts["test"][b"data"][0]
    assert np.array_equal(ds.images[300], first_test.reshape(3, 32, 32).transpose(1, 2, 0))
    assert (ds.images[:, 0, 0, 0] == ds.labels).all() and ds.class_names == CIFAR100_CLASSES
    assert all(ds.groups[c] == CIFAR100_SUPERCLASS_OF[n] for c, n in enumerate(ds.class_names))
    checks = ds.meta["checks"]
    assert checks["labels_in_range"] and checks["class_lists_complete"] and checks["checksum"].startswith("differs")
    small = load(name, tmp_path / "c", image_size=16)
    assert small.images.shape == (400, 16, 16, 3) and np.array_equal(small.images, resize_area(ds.images, 16))


def test_cifar_release_bad_inputs(tmp_path):
    folder = tmp_path / "cifar-100-python"
    make_cifar_release(folder)
    meta = safe_pickle.load(folder / "meta")
    meta[b"fine_label_names"][CIFAR100_CLASSES.index("whale")] = b"wale"
    (folder / "meta").write_bytes(pickle.dumps(meta))
    with pytest.raises(NclabError, match=r"meta: the standard novel list names class 'whale', which the data lacks"):
        load("cifar-fs", tmp_path)
    make_cifar_release(tmp_path / "b" / "cifar-100-python")
    folder = tmp_path / "b" / "cifar-100-python"
    d = safe_pickle.load(folder / "test")
    d[b"fine_labels"][5] = 100
    (folder / "test").write_bytes(pickle.dumps(d))
    with pytest.raises(NclabError, match=r"test: fine_labels value 100 out of range, expected 0..99"):
        load("fc100", folder)
    d[b"fine_labels"][5] = 5
    d[b"data"] = d[b"data"][:, :3000]
    (folder / "test").write_bytes(pickle.dumps(d))
    with pytest.raises(NclabError, match=r"test: 'data' is uint8 \(100, 3000\), expected uint8 N x 3072"):
        load("fc100", folder)
    (folder / "test").unlink()
    with pytest.raises(NclabError, match=r"expected cifar-100-python/\{train,test,meta\}"):
        load("fc100", folder)
    with pytest.raises(NclabError, match="data folder not found"):
        load("cifar-fs", tmp_path / "nowhere")


# --- MetaOptNet / RFS split pickles ------------------------------------------------------------

def make_split_pickles(root: Path, pattern: str, lists: dict, per: int = 2, local: bool = False):
    root.mkdir(parents=True, exist_ok=True)
    for split, f in (("source", "train"), ("val", "val"), ("novel", "test")):
        ids = [CIFAR100_CLASSES.index(c) for c in lists[split]]
        labels = np.repeat(np.arange(len(ids)) if local else ids, per)
        data = np.zeros((len(labels), 32, 32, 3), np.uint8)
        data[:, 0, 0, 0] = np.repeat(ids, per)
        obj = {"data": data, "labels": labels.tolist()}
        (root / pattern.format(f)).write_bytes(pickle.dumps(obj, protocol=2))


@pytest.mark.parametrize("name,pattern,lists", [("cifar-fs", "CIFAR_FS_{}.pickle", CIFAR_FS),
                                                ("cifar-fs", "{}.pickle", CIFAR_FS), ("fc100", "FC100_{}.pickle", FC100)])
def test_split_pickles(tmp_path, name, pattern, lists):
    make_split_pickles(tmp_path / "p", pattern, lists)
    ds = load(name, tmp_path / "p")
    for s, classes in lists.items():
        assert sorted(ds.class_names[i] for i in ds.class_splits[s]) == sorted(classes)
    assert all(CIFAR100_CLASSES[ds.images[i, 0, 0, 0]] == ds.class_names[ds.labels[i]] for i in range(len(ds.labels)))
    assert ds.meta["checks"]["class_lists_standard"] is True and ds.meta["global_labels"] is True
    make_split_pickles(tmp_path / "l", pattern, lists, local=True)                  # labels 0..C-1 per file
    loc = load(name, tmp_path / "l")
    assert [len(loc.class_splits[s]) for s in ("source", "val", "novel")] == [len(lists[s]) for s in ("source", "val", "novel")]
    assert loc.class_names[0] == "train/0" and loc.meta["checks"]["class_lists_standard"] is False


def test_split_pickle_bad_inputs(tmp_path):
    make_split_pickles(tmp_path, "CIFAR_FS_{}.pickle", CIFAR_FS)
    p = tmp_path / "CIFAR_FS_val.pickle"
    p.write_bytes(pickle.dumps({"data": np.zeros((2, 32, 32), np.uint8), "labels": [0, 1]}))
    with pytest.raises(NclabError, match=r"CIFAR_FS_val.pickle: 'data' is uint8 \(2, 32, 32\), expected uint8 N x H x W x 3"):
        load("cifar-fs", tmp_path)
    p.write_bytes(pickle.dumps({"data": np.zeros((2, 32, 32, 3), np.uint8), "labels": [0]}))
    with pytest.raises(NclabError, match=r"CIFAR_FS_val.pickle: 'labels' must be 2 integers"):
        load("cifar-fs", tmp_path)
    p.write_bytes(pickle.dumps({"labels": [0]}))
    with pytest.raises(NclabError, match=r"CIFAR_FS_val.pickle: no key 'data'"):
        load("cifar-fs", tmp_path)
    p.write_bytes(pickle.dumps({"data": np.zeros((1, 32, 32, 3), np.uint8), "labels": [-1]}))
    with pytest.raises(NclabError, match=r"CIFAR_FS_val.pickle: label -1 out of range"):
        load("cifar-fs", tmp_path)


# --- mini-ImageNet -----------------------------------------------------------------------------

MINI = {"train": ["n01", "n02", "n03"], "val": ["n04"], "test": ["n05", "n06"]}


def make_mini(root: Path, layout: str, per: int = 3, size: int = 84, fmt: str = "png") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {}
    for f, wnids in MINI.items():
        rows = ["filename,label"]
        for w in wnids:
            for k in range(per):
                fname = f"{w}{k:08d}.{fmt}"
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                arrays[fname] = img
                folder = root / ("images" if layout == "images" else w)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(folder / fname)
                rows.append(f"{fname},{w}")
        (root / f"{f}.csv").write_text("\n".join(rows) + "\n")
    return arrays


def test_mini_imagenet_csv_layouts_and_pickles(tmp_path):
    arrays = make_mini(tmp_path / "a", "images")
    make_mini(tmp_path / "b", "folders")
    a, b = load("mini-imagenet", tmp_path / "a"), load("mini-imagenet", tmp_path / "b")
    assert a.fingerprint() == b.fingerprint()
    assert a.class_names == ["n01", "n02", "n03", "n04", "n05", "n06"]
    assert {k: v.tolist() for k, v in a.class_splits.items()} == {"source": [0, 1, 2], "val": [3], "novel": [4, 5]}
    assert np.array_equal(a.images, np.stack(list(arrays.values())))             # CSV order, pixel exact
    assert a.meta["checks"]["standard_counts"] is False and a.flip is True
    assert len(cache_entries(tmp_path)) == 2                                     # decoded arrays cached
    again = load("mini-imagenet", tmp_path / "a")
    assert again.fingerprint() == a.fingerprint() and len(cache_entries(tmp_path)) == 2
    (cache_entries(tmp_path)[0] / "images.npy").write_bytes(b"corrupt")          # unreadable entry: rebuilt
    assert load("mini-imagenet", tmp_path / "a").fingerprint() == a.fingerprint()
    assert load("mini-imagenet", tmp_path / "b").fingerprint() == a.fingerprint()
    assert all(np.load(e / "images.npy").shape == a.images.shape for e in cache_entries(tmp_path))
    small = load("mini-imagenet", tmp_path / "a", image_size=32)
    assert np.array_equal(small.images, resize_area(a.images, 32))
    # RFS pickles: global labels, catname2label names the classes
    rfs = tmp_path / "rfs"
    rfs.mkdir()
    names = {"train_phase_train": MINI["train"], "val": MINI["val"], "test": MINI["test"]}
    offset = 0
    for part, wnids in names.items():
        sel = [i for i, n in enumerate(a.class_names) if n in wnids]
        idx = np.flatnonzero(np.isin(a.labels, sel))
        obj = {"data": a.images[idx], "labels": (a.labels[idx] + 0).tolist(),
               "catname2label": {w: a.class_names.index(w) for w in wnids}}
        (rfs / f"miniImageNet_category_split_{part}.pickle").write_bytes(pickle.dumps(obj, protocol=2))
        offset += len(wnids)
    r = load("mini-imagenet", rfs)
    assert r.class_names == a.class_names and np.array_equal(r.images, a.images) and np.array_equal(r.labels, a.labels)
    # split folders <root>/{train,val,test}/<wnid>/<image> without CSVs
    for f, wnids in MINI.items():
        for w in wnids:
            (tmp_path / "s" / f).mkdir(parents=True, exist_ok=True)
            (tmp_path / "b" / w).rename(tmp_path / "s" / f / w)
    s = load("mini-imagenet", tmp_path / "s")
    assert s.fingerprint() == a.fingerprint() and s.meta["layout"] == "split folders"


def test_mini_imagenet_jpeg_decoding_matches_pil(tmp_path):
    make_mini(tmp_path, "images", per=2, size=40, fmt="jpg")
    ds = load("mini-imagenet", tmp_path, image_size=40)
    files = sorted((tmp_path / "images").iterdir())
    for i in (0, 5, 11):
        ref = np.asarray(Image.open(files[i]).convert("RGB"))
        assert np.array_equal(ds.images[i], ref)


def test_mini_imagenet_bad_inputs(tmp_path):
    make_mini(tmp_path / "m", "images", per=2)
    (tmp_path / "m" / "images" / "n0400000001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(NclabError, match=r"n0400000001.png: corrupt or truncated image"):
        load("mini-imagenet", tmp_path / "m")
    assert cache_files(tmp_path) == []                                           # nothing half-written
    (tmp_path / "m" / "images" / "n0400000001.png").unlink()
    with pytest.raises(NclabError, match=r"val.csv:3: image 'n0400000001.png' not found"):
        load("mini-imagenet", tmp_path / "m")
    (tmp_path / "m" / "val.csv").write_text("filename,label\nn0100000000.png,n01\n")
    with pytest.raises(NclabError, match=r"val.csv:2: class 'n01' is also in train.csv"):
        load("mini-imagenet", tmp_path / "m")
    (tmp_path / "m" / "val.csv").write_text("filename,label\nonly-one-column\n")
    with pytest.raises(NclabError, match=r"val.csv:2: expected a row filename,label"):
        load("mini-imagenet", tmp_path / "m")
    (tmp_path / "m" / "val.csv").unlink()
    with pytest.raises(NclabError, match="expected train.csv, val.csv, test.csv"):
        load("mini-imagenet", tmp_path / "m")


# --- (Fashion-)MNIST ---------------------------------------------------------------------------

def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">i4").tobytes() + a.astype(np.uint8).tobytes()


def make_idx(root: Path, gz: bool, n=(30, 10)):
    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    out = {}
    for part, k in zip(("train", "t10k"), n):
        im, lab = rng.integers(0, 256, (k, 28, 28), dtype=np.uint8), np.arange(k) % 10
        for kind, arr in (("images-idx3", im), ("labels-idx1", lab)):
            data = idx_bytes(arr)
            name = f"{part}-{kind}-ubyte"
            (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        out[part] = (im, lab)
    return out


def test_mnist_idx_gz_and_raw(tmp_path):
    parts = make_idx(tmp_path / "gz", True)
    make_idx(tmp_path / "raw", False)
    a, b = load("mnist", tmp_path / "gz"), load("fashion-mnist", tmp_path / "raw")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.images, np.concatenate([parts["train"][0], parts["t10k"][0]]))
    assert a.class_names == [str(d) for d in range(10)] and b.class_names[0] == "T-shirt/top"
    assert {k: len(v) for k, v in a.class_splits.items()} == {"source": 10, "val": 0, "novel": 0}
    assert a.meta["parts"] == {"train": 30, "test": 10} and a.flip is False
    assert a.meta["checks"]["checksum"].startswith("differs from the official MD5")
    assert load("mnist", tmp_path / "gz", image_size=14).images.shape == (40, 14, 14)


def test_mnist_bad_inputs(tmp_path):
    tmp_path = tmp_path / "m"
    make_idx(tmp_path, False)
    lab = tmp_path / "t10k-labels-idx1-ubyte"
    lab.write_bytes(idx_bytes(np.array([0] * 9 + [10])))
    with pytest.raises(NclabError, match=r"t10k-labels-idx1-ubyte: label 10 out of range, expected 0..9"):
        load("mnist", tmp_path)
    lab.write_bytes(idx_bytes(np.arange(10))[:-3])
    with pytest.raises(NclabError, match=r"t10k-labels-idx1-ubyte: 7 data bytes, expected 10"):
        load("mnist", tmp_path)
    lab.write_bytes(b"\x00\x00\x0d\x01" + bytes(8))
    with pytest.raises(NclabError, match=r"t10k-labels-idx1-ubyte: not a uint8 IDX file"):
        load("mnist", tmp_path)
    lab.write_bytes(idx_bytes(np.arange(9) % 10))
    with pytest.raises(NclabError, match=r"t10k-labels-idx1-ubyte: 9 labels, expected 10"):
        load("mnist", tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x" * 100)[:20])
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(NclabError, match=r"t10k-images-idx3-ubyte.gz: corrupt or truncated"):
        load("mnist", tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(NclabError, match=r"missing t10k-images-idx3-ubyte\[.gz\]"):
        load("mnist", tmp_path)


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    ds = load_dataset(DataConfig(name="fashion-mnist"))                        # default root: the Debian folder
    assert ds.images.shape == (70000, 28, 28) and np.bincount(ds.labels).tolist() == [7000] * 10
    assert ds.meta["checks"]["checksum"] == "ok (official MD5)"
    # ink-bright: garments on a black background (border pixels mostly zero)
    border = np.concatenate([ds.images[:, 0], ds.images[:, -1]])
    assert np.median(border) == 0 and ds.images.mean() > 50


# --- image folders -----------------------------------------------------------------------------

def make_tree(root: Path, rgb: bool, sizes=(20, 20)):
    rng = np.random.default_rng(3)
    tree = {"a/x": 2, "a/y": 3, "b": 2}
    arrays = {}
    for cls, n in tree.items():
        (root / cls).mkdir(parents=True)
        for k in range(n):
            shape = (sizes[k % 2], sizes[k % 2]) + ((3,) if rgb else ())
            img = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(img).save(root / cls / f"{k}.png")
            arrays[f"{cls}/{k}"] = img
    (root / "a" / "notes.txt").write_text("not an image")
    return arrays


def test_load_image_folder(tmp_path):
    arrays = make_tree(tmp_path / "t", rgb=True)
    s = load_image_folder(tmp_path / "t", None, 3)
    assert s.class_names == ["a/x", "a/y", "b"] and s.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert np.array_equal(s.images, np.stack(list(arrays.values())))              # no polarity change
    g = load_image_folder(tmp_path / "t", 10, 1)
    ref = np.asarray(Image.fromarray(arrays["a/y/1"]).convert("L"))
    assert g.images.shape == (7, 10, 10) and np.array_equal(g.images[3], resize_area(ref[None], 10)[0])
    make_tree(tmp_path / "mixed", rgb=False, sizes=(20, 24))
    with pytest.raises(NclabError, match=r"image is 24x24, expected 20x20"):
        load_image_folder(tmp_path / "mixed", None, 1)
    assert load_image_folder(tmp_path / "mixed", 16, 1).images.shape == (7, 16, 16)
    with pytest.raises(NclabError, match="image folder not found"):
        load_image_folder(tmp_path / "none", None, 1)


def test_folder_reader_with_split_file(tmp_path):
    make_tree(tmp_path / "t", rgb=False)
    ds = load("folder", tmp_path / "t")
    assert ds.channels == 1 and ds.flip is False and ds.class_splits["source"].tolist() == [0, 1, 2]
    split = tmp_path / "split.csv"
    split.write_text("class,split\na/y,source\nb,test\n")
    s = load("folder", tmp_path / "t", split=str(split))
    assert s.class_names == ["a/y", "b"] and {k: v.tolist() for k, v in s.class_splits.items()} == \
        {"source": [0], "val": [], "novel": [1]}
    split.write_text("a/y,source\nc,val\n")
    with pytest.raises(NclabError, match=r"split.csv:2: class 'c' is not a leaf folder of the data"):
        load("folder", tmp_path / "t", split=str(split))
    split.write_text("a/y,somewhere\n")
    with pytest.raises(NclabError, match=r"split.csv:1: expected class,split"):
        load("folder", tmp_path / "t", split=str(split))
    make_tree(tmp_path / "c", rgb=True)
    assert load("folder", tmp_path / "c").flip is True


# --- CIFAR-10 python release ---------------------------------------------------------------------

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar10_release(folder: Path, per_batch: int = 2, seed: int = 0) -> np.ndarray:
    """The official layout with bytes keys: 5 training batches + test_batch, each with ``per_batch``
    images of every class; image i has red plane pixel [0, 0] = its class, green [0, 0] = i % 256."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    planes = []
    for b, part in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                              "test_batch"]):
        labels = np.tile(np.arange(10), per_batch)
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        data[:, 0] = labels
        data[:, 1024] = (np.arange(len(labels)) + b * len(labels)) % 256
        (folder / part).write_bytes(pickle.dumps({b"data": data, b"labels": labels.tolist(),
                                                  b"batch_label": part.encode()}, protocol=2))
        planes.append(data)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in CIFAR10_NAMES],
                                                        b"num_cases_per_batch": 10 * per_batch}, protocol=2))
    return np.concatenate(planes)


def test_cifar10_release(tmp_path):
    planes = make_cifar10_release(tmp_path / "c" / "cifar-10-batches-py")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "c" / "cifar-10-batches-py", "cifar-10-batches-py")
    for root in (tmp_path / "c", tmp_path / "c" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz"):
        ds = load("cifar10", root)
        assert ds.class_names == CIFAR10_NAMES and ds.flip and ds.images.shape == (120, 32, 32, 3)
        assert list(ds.class_splits) == ["source"] and ds.class_splits["source"].tolist() == list(range(10))
        # pooled in file order; planes R, G, B -> H x W x 3
        assert np.array_equal(ds.images, planes.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        assert np.array_equal(ds.labels, ds.images[:, 0, 0, 0]) and ds.meta["parts"]["test_batch"] == 20
        assert ds.meta["checks"]["samples_per_class"] == [12, 12]
        assert ds.meta["checks"]["checksum"].startswith("differs from the official MD5")
    from nclab.data.prepare import prepare_data
    data = prepare_data(DataConfig(name="cifar10", root=str(tmp_path / "c"), holdout=2))
    assert (data.splits["train"].counts() == 10).all() and (data.splits["test"].counts() == 2).all()
    assert len(data.splits["novel"]) == 0 and len(data.splits["val"]) == 0


def test_cifar10_bad_inputs(tmp_path):
    with pytest.raises(NclabError, match="cifar10 needs the folder"):
        load_dataset(DataConfig(name="cifar10"))
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10_release(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(NclabError, match=r"expected cifar-10-batches-py/\{data_batch_1..5,test_batch"):
        load("cifar10", tmp_path)
    make_cifar10_release(tmp_path / "b" / "cifar-10-batches-py")
    bad = tmp_path / "b" / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, protocol=2))
    with pytest.raises(NclabError, match=r"data_batch_3: 'data' is uint8 \(4, 100\), expected uint8 N x 3072"):
        load("cifar10", tmp_path / "b")
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, protocol=2))
    with pytest.raises(NclabError, match=r"data_batch_3: label 10 out of range, expected 0..9"):
        load("cifar10", tmp_path / "b")
