"""Safe loading: the restricted unpickler, archive extraction that stays in its folder, and the
area resize every reader uses."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nclab.data import safe_pickle
from nclab.data.archive import extract, resolve_root
from nclab.data.resize import area_matrix, resize_area
from nclab.errors import NclabError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NCLAB_CACHE_DIR", str(tmp_path / "cache"))


class RunsCommand:
    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def py2_style(obj, path: Path) -> None:
    """A protocol-2 pickle as python 2 wrote them: numpy.core module names, array payloads as
    latin-1 str (numpy re-encodes), bytes written via _codecs.encode."""
    class P(pickle.Pickler):
        def reducer_override(self, o):
            if isinstance(o, np.ndarray):
                from numpy._core.multiarray import _reconstruct
                state = (1, o.shape, o.dtype, False, o.tobytes().decode("latin1"))
                return _reconstruct, (np.ndarray, (0,), b"b"), state
            return NotImplemented
    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


# --- restricted unpickler ----------------------------------------------------------------------

def test_arrays_and_containers_round_trip_in_every_protocol(tmp_path):
    obj = {"data": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "labels": [np.int64(3), 4, 5],
           b"bytes_key": (1.5, None, True, "s", b"raw", frozenset({1}), {2, 3}, complex(1, 2), slice(1, 5)),
           "f": np.linspace(0, 1, 5, dtype=np.float32)}
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        (tmp_path / "p").write_bytes(pickle.dumps(obj, protocol=proto))
        got = safe_pickle.load(tmp_path / "p")
        assert np.array_equal(got["data"], obj["data"]) and got["data"].dtype == np.uint8
        assert got["labels"] == [3, 4, 5] and got[b"bytes_key"] == obj[b"bytes_key"]
        assert np.array_equal(got["f"], obj["f"])


def test_python2_latin1_pickle(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)      # every byte value
    py2_style({b"data": data, b"labels": [0, 1, 1], b"name": b"\xff\x00"}, tmp_path / "p")
    assert b"numpy.core.multiarray" in (tmp_path / "p").read_bytes()
    got = safe_pickle.as_str_keys(safe_pickle.load(tmp_path / "p"))
    assert np.array_equal(got["data"], data) and got["labels"] == [0, 1, 1] and got["name"] == b"\xff\x00"


@pytest.mark.parametrize("payload,refused", [
    (lambda flag: RunsCommand(flag), "system"),
    (lambda flag: {"data": [RunsCommand(flag)]}, "system"),
])
def test_pickle_that_runs_a_command_is_refused(tmp_path, payload, refused):
    flag = tmp_path / "PWNED"
    (tmp_path / "evil.pickle").write_bytes(pickle.dumps(payload(flag)))
    with pytest.raises(NclabError, match=rf"evil\.pickle: refused to unpickle global \w+\.{refused}") as e:
        safe_pickle.load(tmp_path / "evil.pickle")
    assert "\n" not in str(e.value) and not flag.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("builtins", "getattr"), ("subprocess", "Popen"),
                                         ("numpy", "load"), ("copyreg", "_reconstructor"), ("os", "system")])
def test_any_other_global_is_refused(tmp_path, module, name):
    (tmp_path / "g.pickle").write_bytes(b"c" + f"{module}\n{name}\n".encode() + b"(S'x'\ntR.")
    with pytest.raises(NclabError, match=rf"g\.pickle: refused to unpickle global {module}\.{name}"):
        safe_pickle.load(tmp_path / "g.pickle")


def test_codecs_encode_only_latin1(tmp_path):
    (tmp_path / "ok").write_bytes(b"c_codecs\nencode\n(X\x02\x00\x00\x00\xc3\xbfX\x06\x00\x00\x00latin1tR.")
    assert safe_pickle.load(tmp_path / "ok") == b"\xff"
    (tmp_path / "bad").write_bytes(b"c_codecs\nencode\n(X\x01\x00\x00\x00aX\x05\x00\x00\x00rot13tR.")
    with pytest.raises(NclabError, match="bad: not a readable pickle"):
        safe_pickle.load(tmp_path / "bad")


def test_truncated_and_garbage_pickles(tmp_path):
    good = pickle.dumps({"data": np.zeros((5, 5), np.uint8)})
    (tmp_path / "t.pickle").write_bytes(good[: len(good) // 2])
    with pytest.raises(NclabError, match=r"t\.pickle: not a readable pickle"):
        safe_pickle.load(tmp_path / "t.pickle")
    (tmp_path / "g.pickle").write_bytes(b"\x00garbage")
    with pytest.raises(NclabError, match=r"g\.pickle: not a readable pickle"):
        safe_pickle.load(tmp_path / "g.pickle")
    with pytest.raises(NclabError, match="cannot read"):
        safe_pickle.load(tmp_path / "absent.pickle")


def test_cli_refuses_evil_pickle_with_exit_code_2(tmp_path):
    flag = tmp_path / "PWNED"
    for s in ("train", "val", "test"):
        (tmp_path / f"CIFAR_FS_{s}.pickle").write_bytes(pickle.dumps({"data": RunsCommand(flag), "labels": [0]}))
    p = subprocess.run([sys.executable, "-m", "nclab", "data", "info", "cifar-fs", "--root", str(tmp_path)],
                       capture_output=True, text=True, env={**os.environ, "NCLAB_CACHE_DIR": str(tmp_path / "c")})
    assert p.returncode == 2, p.stderr
    assert "refused to unpickle global" in p.stderr and "CIFAR_FS_" in p.stderr
    assert not flag.exists()


# --- archives ----------------------------------------------------------------------------------

def _tar(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("kind,name", [("zip", "../escape.txt"), ("zip", "/abs/escape.txt"),
                                       ("tar", "a/../../escape.txt"), ("tar", "/tmp/escape.txt")])
def test_members_outside_the_target_are_refused(tmp_path, kind, name):
    arc = tmp_path / f"bad.{'zip' if kind == 'zip' else 'tar.gz'}"
    if kind == "zip":
        with zipfile.ZipFile(arc, "w") as zf:
            zf.writestr("ok/file.txt", b"fine")
            zf.writestr(name, b"evil")
    else:
        _tar(arc, [("ok/file.txt", b"fine", None), (name, b"evil", None)])
    with pytest.raises(NclabError, match="would be written outside the target folder"):
        extract(arc, tmp_path / "out" / "x")
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/escape.txt").exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_links_refused_good_archive_extracted_corrupt_leaves_nothing(tmp_path):
    _tar(tmp_path / "link.tar.gz", [("d/f", b"x", None), ("d/l", None, "/etc/passwd")])
    with pytest.raises(NclabError, match="is a link"):
        extract(tmp_path / "link.tar.gz", tmp_path / "o1")
    assert not (tmp_path / "o1").exists()
    _tar(tmp_path / "good.tar.gz", [("top/a.txt", b"alpha", None), ("top/sub/b.txt", b"beta", None)])
    root = resolve_root(tmp_path / "good.tar.gz")                    # cached extraction
    assert (root / "top" / "sub" / "b.txt").read_bytes() == b"beta"
    assert resolve_root(tmp_path / "good.tar.gz") == root
    data = (tmp_path / "good.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(NclabError, match=r"cut\.tar\.gz: corrupt or truncated archive"):
        extract(tmp_path / "cut.tar.gz", tmp_path / "o2")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".o2", "o2"))) == []


def test_a_changed_archive_replaces_its_old_extraction(tmp_path, private_cache):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    _tar(tmp_path / "a" / "d.tar.gz", [("f.txt", b"one", None)])
    _tar(tmp_path / "b" / "d.tar.gz", [("f.txt", b"other", None)])   # same name, another file
    first, other = resolve_root(tmp_path / "a" / "d.tar.gz"), resolve_root(tmp_path / "b" / "d.tar.gz")
    assert first != other and (other / "f.txt").read_bytes() == b"other"
    _tar(tmp_path / "a" / "d.tar.gz", [("f.txt", b"second", None)])  # a re-download: new size / mtime
    os.utime(tmp_path / "a" / "d.tar.gz", ns=(1, 1))
    second = resolve_root(tmp_path / "a" / "d.tar.gz")
    assert second != first and (second / "f.txt").read_bytes() == b"second"
    assert not first.exists()                                    # the stale extraction is gone
    assert (other / "f.txt").read_bytes() == b"other"            # another archive's is kept
    assert sorted(p.name for p in second.parent.iterdir()) == sorted([second.name, other.name])


# --- area resize -------------------------------------------------------------------------------

def test_area_matrix_rows_are_coverage_fractions():
    for n_in, n_out in [(105, 28), (84, 32), (32, 84), (7, 7), (10, 3)]:
        a = area_matrix(n_in, n_out)
        assert a.shape == (n_out, n_in) and np.allclose(a.sum(1), 1.0) and (a >= 0).all()
        assert np.allclose(a.sum(0), n_out / n_in)                # every input pixel counted exactly once
        assert np.allclose(a, a[::-1, ::-1])                      # mirror symmetric: commutes with flips / rot90


def test_resize_area_matches_brute_force_and_block_mean():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    blocks = x.reshape(3, 4, 3, 4, 3, 3).astype(np.float64).mean(axis=(2, 4))
    assert np.abs(resize_area(x, 4) - blocks).max() <= 0.5 + 1e-9             # integer ratio: block mean
    g = rng.integers(0, 256, (2, 10, 10), dtype=np.uint8)
    brute = np.kron(g.astype(np.float64), np.ones((1, 7, 7))).reshape(2, 7, 10, 7, 10).mean(axis=(2, 4))
    assert np.abs(resize_area(g, 7) - brute).max() <= 0.5 + 1e-9              # exact area average, any ratio
    assert resize_area(g, 10) is g
    const = np.full((1, 13, 9), 77, np.uint8)
    assert (resize_area(const, (5, 4)) == 77).all()
    assert np.array_equal(resize_area(x[:, :, :, 0], 5), resize_area(x, 5)[..., 0])     # channels independent
