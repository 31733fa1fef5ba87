"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015): 1,623 handwritten characters of 50
alphabets, 20 drawers each, 105x105 binary, read from

- the npz layout of ``../shared/data/omniglot`` (``images_background.npz``,
  ``images_evaluation.npz``, ``alphabets.csv``, ``splits/vinyals/*.txt``, ``SHA256SUMS``), or
- the official PNG release, ``images_background/<alphabet>/characterNN/<id>_<drawer>.png`` and
  ``images_evaluation/...`` (folders, or the release's ``.zip`` files, extracted safely).

``data.root`` names the folder (``$NCLAB_OMNIGLOT_DIR`` when unset). Ink is bright (255),
paper 0; resized 105 -> ``data.image_size`` (default 28) by exact area averaging
(:mod:`nclab.data.resize`). The resized characters are cached, keyed by the size and the npz
files' path / size / mtime (PNG layout: the alphabet folders' mtimes); the npz files are
checked against ``SHA256SUMS`` when it lists them. Class ids follow the official character ids (1..1623, minus one), so both layouts
give the same dataset. Class splits (``data.split``):

- ``background`` (default): source = the 30 background alphabets (964 characters),
  novel = the 20 evaluation alphabets (659); val is empty, because Omniglot has no official
  validation alphabets (use ``vinyals`` for one). No alphabet is in two splits.
- ``vinyals``: Vinyals et al. 2016 (as released with Prototypical Networks): each listed
  ``Alphabet/characterNN/rotDDD`` is a class, the character's images rotated counter-clockwise
  by DDD degrees; train -> source (1,028 x 4), val -> val (172 x 4), test -> novel (423 x 4).
  Note that this split divides characters, not alphabets: Gurmukhi has characters in
  both train and val.
- ``vinyals-trainval``: the same, with the train and val characters both source (1,200 x 4
  classes, as Prototypical Networks trained for their Omniglot results) and val empty.
- ``vinyals-trainval-mirror``: ``vinyals-trainval`` with each source class's mirror image (the
  rotated characters flipped left-right, ``.../rotDDD/mirror``) as one more source class: the 8
  symmetries of the square, 1,200 x 8 = 9,600 source classes (rotations as classes, the habit of
  the field, carried to reflections); novel is unchanged (423 x 4, not mirrored).
"""

from __future__ import annotations

import csv
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from nclab.config import DataConfig
from nclab.data.archive import extracted
from nclab.data.base import Dataset
from nclab.data.cached import cached_arrays, file_digest, file_signature, from_json_array, json_array
from nclab.data.class_lists import OMNIGLOT_COUNTS
from nclab.data.imageio import read_images
from nclab.data.registry import register_dataset
from nclab.data.resize import resize_area
from nclab.errors import NclabError

SETS = ("background", "evaluation")
SPLITS = ("background", "vinyals", "vinyals-trainval", "vinyals-trainval-mirror")
NATIVE_SIZE = 105
DEFAULT_SIZE = 28
DRAWERS = 20
_PNG = re.compile(r"^(\d+)_(\d+)\.png$")


def omniglot_root(cfg: DataConfig) -> Path:
    """``data.root``, else ``$NCLAB_OMNIGLOT_DIR``; must be a folder."""
    root = cfg.root or os.environ.get("NCLAB_OMNIGLOT_DIR")
    if not root:
        raise NclabError("data.root: omniglot needs the folder holding images_background.npz / "
                         "images_evaluation.npz or the images_background/ images_evaluation/ PNG folders")
    root = Path(root)
    if not root.is_dir():
        raise NclabError(f"{root}: omniglot data folder not found")
    return root


def _checksums(root: Path, files: list[Path]) -> str:
    """Verify ``files`` against ``root/SHA256SUMS`` when it lists them."""
    sums_file = root / "SHA256SUMS"
    if not sums_file.is_file():
        return "no SHA256SUMS"
    sums = {}
    for line in sums_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    checked = 0
    for f in files:
        if f.name in sums:
            if file_digest(f, "sha256") != sums[f.name]:
                raise NclabError(f"{f}: SHA-256 differs from {sums_file}; the file is corrupt or was changed")
            checked += 1
    return f"ok ({checked} files, SHA256SUMS)" if checked else "not listed in SHA256SUMS"


def _read_alphabets(path: Path) -> list[tuple[str, str, int, int]]:
    """Rows (set, alphabet, first character id, number of characters) of alphabets.csv."""
    if not path.is_file():
        raise NclabError(f"{path}: missing; expected set,alphabet,first_character_id,n_characters rows")
    rows = []
    with open(path, newline="") as fh:
        for i, r in enumerate(csv.DictReader(fh), start=2):
            try:
                rows.append((r["set"], r["alphabet"], int(r["first_character_id"]), int(r["n_characters"])))
            except (KeyError, TypeError, ValueError):
                raise NclabError(f"{path}:{i}: expected set,alphabet,first_character_id,n_characters") from None
    return rows


def _to_ink(paper: np.ndarray, size: int) -> np.ndarray:
    """(N, 105, 105) bool/uint8 with paper bright -> ink = 255, paper = 0, area-resized."""
    out = np.empty((len(paper), size, size), dtype=np.uint8)
    for i in range(0, len(paper), 2048):
        chunk = paper[i:i + 2048]
        ink = np.where(chunk, 0, 255).astype(np.uint8) if chunk.dtype == bool else 255 - chunk
        out[i:i + 2048] = resize_area(ink, size)
    return out


def _build_npz(root: Path, size: int) -> dict[str, np.ndarray]:
    alphabets = _read_alphabets(root / "alphabets.csv")
    files = [root / f"images_{s}.npz" for s in SETS]
    checksum = _checksums(root, files)
    images, labels, names, groups, sets = [], [], [], [], []
    next_id = 0
    for s, f in zip(SETS, files):
        rows = [r for r in alphabets if r[0] == s]
        n_chars = sum(r[3] for r in rows)
        try:
            with np.load(f, allow_pickle=False) as z:
                if "images" not in z.files:
                    raise NclabError(f"{f}: no 'images' array; expected images (C, {DRAWERS}, 105, 105)")
                im = z["images"]
                lab = z["labels"] if "labels" in z.files else None
        except NclabError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise NclabError(f"{f}: corrupt or unreadable npz, expected images (C, {DRAWERS}, 105, 105) ({e})") from None
        if im.ndim != 4 or im.shape[1:] != (DRAWERS, NATIVE_SIZE, NATIVE_SIZE) or im.shape[0] != n_chars:
            raise NclabError(f"{f}: images have shape {im.shape}, expected ({n_chars}, {DRAWERS}, 105, 105) "
                             f"from {root / 'alphabets.csv'}")
        if im.dtype not in (np.bool_, np.uint8):
            raise NclabError(f"{f}: images are {im.dtype}, expected bool (True = paper) or uint8")
        if im.dtype == np.uint8 and im.max() == 1:
            im = im.astype(bool)
        if lab is not None and not np.array_equal(lab, np.broadcast_to(np.arange(n_chars)[:, None], lab.shape)):
            raise NclabError(f"{f}: labels[i, k] must equal i (the character index), expected 0..{n_chars - 1}")
        ids = {}
        for _, alphabet, first, n in rows:
            for c in range(n):
                ids[first - 1 + c] = (alphabet, f"{alphabet}/character{c + 1:02d}")
        offset = min(ids)
        if offset != next_id or sorted(ids) != list(range(offset, offset + n_chars)):
            raise NclabError(f"{root / 'alphabets.csv'}: {s} character ids must run contiguously from {next_id + 1}")
        for cid in range(offset, offset + n_chars):
            groups.append(ids[cid][0])
            names.append(ids[cid][1])
            sets.append(s)
        images.append(_to_ink(im.reshape(-1, NATIVE_SIZE, NATIVE_SIZE), size))
        labels.append(np.repeat(np.arange(offset, offset + n_chars), DRAWERS))
        next_id += n_chars
        del im
    return {"images": np.concatenate(images), "labels": np.concatenate(labels),
            "class_names": np.array(names), "groups": np.array(groups), "sets": np.array(sets),
            "meta": json_array({"layout": "npz", "checksum": checksum})}


def _png_folder(root: Path, s: str) -> Path:
    folder = root / f"images_{s}"
    if folder.is_dir():
        return folder
    archive = root / f"images_{s}.zip"
    if archive.is_file():
        inner = extracted(archive)
        return inner / f"images_{s}" if (inner / f"images_{s}").is_dir() else inner
    raise NclabError(f"{root}: expected images_{s}.npz, images_{s}/ or images_{s}.zip (Omniglot)")


def _png_files(root: Path) -> list[tuple[str, str, int, list[Path]]]:
    """(set, alphabet, character id, drawer files) of the PNG layout, by character id."""
    chars = []
    for s in SETS:
        folder = _png_folder(root, s)
        for alpha in sorted(p for p in folder.iterdir() if p.is_dir()):
            for char in sorted(p for p in alpha.iterdir() if p.is_dir()):
                pngs = sorted(char.glob("*.png"))
                ids = {m.group(1) for m in (_PNG.match(p.name) for p in pngs) if m}
                if not pngs or len(ids) != 1 or any(_PNG.match(p.name) is None for p in pngs):
                    raise NclabError(f"{char}: expected files <character id>_<drawer>.png of one character")
                chars.append((s, alpha.name, int(ids.pop()), pngs))
    chars.sort(key=lambda c: c[2])
    ids = [c[2] for c in chars]
    if ids != list(range(1, len(ids) + 1)):
        raise NclabError(f"{root}: character ids in the PNG names must run 1..{len(ids)} without gaps")
    return chars


def _build_png(root: Path, size: int) -> dict[str, np.ndarray]:
    chars = _png_files(root)
    paths = [p for c in chars for p in c[3]]
    native = read_images(paths, channels=1)
    if native.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE):
        raise NclabError(f"{paths[0]}: image is {native.shape[2]}x{native.shape[1]}, expected 105x105 (Omniglot)")
    images = _to_ink(native, size)
    del native
    labels = np.repeat(np.arange(len(chars)), [len(c[3]) for c in chars])
    names = [f"{c[1]}/{c[3][0].parent.name}" for c in chars]
    return {"images": images, "labels": labels, "class_names": np.array(names),
            "groups": np.array([c[1] for c in chars]), "sets": np.array([c[0] for c in chars]),
            "meta": json_array({"layout": "png", "checksum": "no checksums for the PNG release"})}


def omniglot_characters(root: Path, size: int) -> dict[str, np.ndarray]:
    """All 1,623 characters (ink bright, ``size`` x ``size``), cached: arrays images, labels
    (character id - 1), class_names ``Alphabet/characterNN``, groups (alphabet), sets."""
    npz = [root / f"images_{s}.npz" for s in SETS]
    if all(f.is_file() for f in npz):
        sources = npz + [root / "alphabets.csv"] + ([root / "SHA256SUMS"] if (root / "SHA256SUMS").is_file() else [])
        if not sources[2].is_file():
            raise NclabError(f"{sources[2]}: missing; expected set,alphabet,first_character_id,n_characters rows")
        return cached_arrays("omniglot", {"layout": "npz", "size": size, "files": file_signature(sources)},
                             lambda: _build_npz(root, size))
    if any(f.is_file() for f in npz):
        missing = next(f for f in npz if not f.is_file())
        raise NclabError(f"{missing}: missing; expected both images_background.npz and images_evaluation.npz")
    folders = [_png_folder(root, s) for s in SETS]
    listing = [[str(p), p.stat().st_mtime_ns] for f in folders for p in sorted(f.iterdir())]
    return cached_arrays("omniglot", {"layout": "png", "size": size, "folders": listing},
                         lambda: _build_png(root, size))


def _split_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise NclabError(f"{path}: missing; the vinyals split needs splits/vinyals/{{train,val,test}}.txt")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


_ROT = re.compile(r"^(.+/character\d+)/rot(000|090|180|270)$")


def _vinyals(root: Path, images, labels, names, groups, trainval: bool = False, mirror: bool = False) -> tuple:
    index = {n: i for i, n in enumerate(names)}
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(names) + 1))
    out_im, out_lab, out_names, out_groups, splits = [], [], [], [], {}
    parts = (("source", "train"), ("source", "val"), ("novel", "test")) if trainval else \
        (("source", "train"), ("val", "val"), ("novel", "test"))
    for split, file in parts:
        path = root / "splits" / "vinyals" / f"{file}.txt"
        start = len(out_names)
        for ln_no, line in enumerate(_split_lines(path), start=1):
            m = _ROT.match(line)
            if not m:
                raise NclabError(f"{path}:{ln_no}: {line!r} is not Alphabet/characterNN/rotDDD")
            if m.group(1) not in index:
                raise NclabError(f"{path}:{ln_no}: class {m.group(1)!r} is not in the Omniglot data at {root}")
            c = index[m.group(1)]
            idx = order[bounds[c]:bounds[c + 1]]
            rotated = np.rot90(images[idx], k=int(m.group(2)) // 90, axes=(1, 2))
            views = [(rotated, line)]
            if mirror and split == "source":
                views.append((rotated[:, :, ::-1], f"{line}/mirror"))   # np.concatenate below copies
            for im, name in views:
                out_im.append(im)
                out_lab.append(np.full(len(idx), len(out_names)))
                out_names.append(name)
                out_groups.append(groups[c])
        splits[split] = np.concatenate([splits.get(split, np.arange(0)), np.arange(start, len(out_names))])
    splits.setdefault("val", np.arange(0))
    if len(set(out_names)) != len(out_names):
        raise NclabError(f"{root / 'splits' / 'vinyals'}: a class is listed twice across train/val/test")
    return np.concatenate(out_im), np.concatenate(out_lab), out_names, out_groups, splits


@register_dataset("omniglot")
def read_omniglot(cfg: DataConfig) -> Dataset:
    """Omniglot with the ``background`` (default) or ``vinyals`` class split."""
    split = cfg.split or "background"
    if split not in SPLITS:
        raise NclabError(f"data.split: omniglot has class splits {', '.join(SPLITS)}, got {split!r}")
    size = cfg.image_size or DEFAULT_SIZE
    if size < 1:
        raise NclabError(f"data.image_size: expected a positive size, got {size}")
    root = omniglot_root(cfg)
    arrays = omniglot_characters(root, size)
    images, labels = arrays["images"], arrays["labels"]
    names = arrays["class_names"].tolist()
    groups = arrays["groups"].tolist()
    sets = arrays["sets"].tolist()
    built = from_json_array(arrays["meta"])
    n_per = {s: sets.count(s) for s in SETS}
    checks = {"checksum": built["checksum"],
              "labels_in_range": bool(labels.min() >= 0 and labels.max() < len(names)),
              "standard_counts": n_per == OMNIGLOT_COUNTS,
              "samples_per_class": int(np.bincount(labels, minlength=len(names)).min())}
    meta = {"layout": built["layout"], "root": str(root), "split": split, "image_size": size,
            "ink": "255 (paper 0)", "checks": checks}
    if split == "background":
        ids = np.arange(len(names))
        class_splits = {"source": ids[np.array(sets) == "background"], "val": ids[:0],
                        "novel": ids[np.array(sets) == "evaluation"]}
        meta["val"] = "empty: Omniglot has no official validation alphabets"
        checks["class_lists_complete"] = True
    else:
        images, labels, names, groups, class_splits = _vinyals(root, images, labels, names, groups,
                                                               trainval=split.startswith("vinyals-trainval"),
                                                               mirror=split.endswith("-mirror"))
        checks["class_lists_complete"] = True
        meta["rotations"] = "counter-clockwise, of the resized images"
    return Dataset(name="omniglot", images=images, labels=labels, class_names=names,
                   class_splits=class_splits, groups=groups, flip=False, meta=meta)
