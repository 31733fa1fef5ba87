"""The bound on decoded datasets (least recently used first), and `nclab cache`: the areas of the cache folder, their entries and bytes on disk; `clear` removes
the named areas only (their entries are built again on the next use) and refuses unknown names
before removing anything."""

from __future__ import annotations

import json
import os
import tarfile

import numpy as np
import pytest

from nclab.cli import main
from nclab.data.archive import resolve_root
from nclab.data.cached import cache_path, cached_arrays
from nclab.errors import NclabError


def test_dataset_entries_keep_to_their_bound_least_recently_used_first(private_cache, monkeypatch):
    builds: list = []

    def get(i, kind="k"):
        return cached_arrays(kind, {"i": i}, lambda: builds.append(i) or {"x": np.full(1000, i, np.uint8)})["x"]

    monkeypatch.setenv("NCLAB_DATASET_CACHE_GB", str(2500 / 2**30))      # an entry takes 1,128 bytes: room for 2
    get(0, kind="other")
    get(0), get(1)
    os.utime(cache_path("k", {"i": 0}), (100, 100)), os.utime(cache_path("k", {"i": 1}), (200, 200))
    assert get(0)[0] == 0 and builds == [0, 0, 1]                      # a hit: touched, now the most recent
    assert get(2)[0] == 2 and builds == [0, 0, 1, 2]
    assert not cache_path("k", {"i": 1}).exists()                       # the least recently used went
    assert cache_path("k", {"i": 0}).is_dir() and cache_path("other", {"i": 0}).is_dir()   # bound per kind
    assert get(0)[0] == 0 and get(1)[0] == 1 and builds == [0, 0, 1, 2, 1]
    monkeypatch.setenv("NCLAB_DATASET_CACHE_GB", "0")                   # off: built on every load
    assert get(7)[0] == 7 and get(7)[0] == 7 and builds[-2:] == [7, 7] and not cache_path("k", {"i": 7}).exists()
    for bad in ("-1", "lots", "inf"):
        monkeypatch.setenv("NCLAB_DATASET_CACHE_GB", bad)
        with pytest.raises(NclabError, match=f"NCLAB_DATASET_CACHE_GB={bad!r}: expected a size in GiB >= 0") as e:
            get(8)
        assert "\n" not in str(e.value)


def _cache_json(capsys) -> dict:
    capsys.readouterr()
    assert main(["cache", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _disk(path) -> int:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def _fill(tmp_path, builds: list) -> None:
    """Two dataset entries of one kind, one of another, and an extracted archive."""
    for kind, i in (("omniglot", 0), ("omniglot", 1), ("folder", 0)):
        cached_arrays(kind, {"i": i}, lambda i=i: builds.append(i) or {"x": np.full((100, 7), i, np.uint8)})
    with tarfile.open(tmp_path / "d.tar", "w") as tf:
        (tmp_path / "f.txt").write_bytes(b"x" * 5000)
        tf.add(tmp_path / "f.txt", "top/f.txt")
    resolve_root(tmp_path / "d.tar")


def test_cache_lists_areas_with_entries_and_disk_bytes(tmp_path, private_cache, capsys):
    assert _cache_json(capsys) == {"cache_dir": str(private_cache), "areas": []}     # no folder yet
    _fill(tmp_path, [])
    got = {a["name"]: a for a in _cache_json(capsys)["areas"]}
    assert sorted(got) == ["datasets/folder", "datasets/omniglot", "extracted"]
    assert [got[n]["entries"] for n in sorted(got)] == [1, 2, 1]
    for name, a in got.items():
        assert a["bytes"] == _disk(private_cache / name) > 0
        newest = max(p.stat().st_mtime for p in (private_cache / name).iterdir())
        assert a["last_used"] == newest
    capsys.readouterr()
    assert main(["cache"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith(f"{private_cache}: ") and "in 3 area(s)" in table[0]
    assert [r.split()[:2] for r in table[2:]] == [["datasets/folder", "1"], ["datasets/omniglot", "2"],
                                                  ["extracted", "1"]]


def test_clear_removes_only_the_named_areas_which_are_rebuilt(tmp_path, private_cache, capsys):
    builds: list = []
    _fill(tmp_path, builds)
    (private_cache / ".glyphs.abc.removing").mkdir()                  # left by an interrupted clear
    capsys.readouterr()
    assert main(["cache", "clear", "datasets/omniglot", "extracted"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [r.split(" (")[0] for r in out] == ["removed datasets/omniglot", "removed extracted"]
    assert out[0].startswith("removed datasets/omniglot (2 entries, ")
    assert [a["name"] for a in _cache_json(capsys)["areas"]] == ["datasets/folder"]
    assert sorted(p.name for p in private_cache.iterdir()) == ["datasets"]
    again = cached_arrays("omniglot", {"i": 1}, lambda: builds.append(1) or {"x": np.ones((1,), np.uint8)})
    kept = cached_arrays("folder", {"i": 0}, lambda: builds.append("no") or {})
    assert builds == [0, 1, 0, 1] and again["x"].tolist() == [1]       # rebuilt; the other area still served
    assert kept["x"].shape == (100, 7) and (kept["x"] == 0).all()
    assert (resolve_root(tmp_path / "d.tar") / "top" / "f.txt").read_bytes() == b"x" * 5000
    listed = _cache_json(capsys)["areas"]
    assert main(["cache", "clear", "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"cache_dir": str(private_cache), "removed": listed}
    assert _cache_json(capsys)["areas"] == [] and list((private_cache / "datasets").iterdir()) == []


def test_clear_refuses_unknown_areas_and_missing_names_removing_nothing(tmp_path, private_cache, capsys, monkeypatch):
    _fill(tmp_path, [])
    before = _cache_json(capsys)
    for argv, needle in [(["cache", "clear", "extracted", "datasets/nope"],
                          "cache area 'datasets/nope' is not in"),
                         (["cache", "clear"], "name the areas to remove"),
                         (["cache", "clear", "extracted", "--all"], "name the areas to remove"),
                         (["cache", "show", "extracted"], "areas and --all go with `nclab cache clear`")]:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert _cache_json(capsys) == before
    monkeypatch.setenv("NCLAB_CACHE_DIR", str(tmp_path / "elsewhere"))    # a cache folder not made yet
    capsys.readouterr()
    assert main(["cache", "clear", "extracted"]) == 2
    assert "expected one of none: the cache is empty" in capsys.readouterr().err
