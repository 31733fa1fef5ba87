"""The compiled CPU kernels without a wait for their compilation.

Compiling :mod:`nclab.fewshot.kernels` takes ~10 s of one core per dtype on a fresh install
(minutes on loaded cores); loading them from Numba's on-disk cache afterwards well under a
second. So a process whose cache is cold does not compile them itself: its first CPU evaluation
starts a detached compiler process (``python -m nclab.fewshot.warmup``, nice 19, one at a time
per cache folder) and goes on without them, on the engine's tensor path (the one GPUs use: the
same accuracies, up to a prediction flipped at an exact tie of two classes). The compiler warms
the kernels by running the engine on a tiny problem (so exactly the signatures the engine calls
get compiled into the disk cache), then writes a marker beside them, in Numba's cache folder of
this module (``__pycache__`` next to it, or ``NUMBA_CACHE_DIR``; one marker per Python and Numba
version). Every evaluation checks the marker (one small read until it is there); once it is, the
process loads the kernels from the disk cache and runs them, and so does every later process, at
once, whatever nclab cache folder (``NCLAB_CACHE_DIR``) it uses: the marker goes where the
compiled code is, and goes with it when that folder is cleared.

A separate process rather than a thread: a process that exits while one of its threads is
inside Numba / LLVM aborts ("terminate called without an active exception", exit code 134), and
a low-priority compiling thread keeps a short command from exiting for minutes on loaded cores.
BENCHMARKS.md ("First call") has the times.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from nclab.atomic import atomic_write_json
from nclab.data.cache import cache_dir
from nclab.errors import NclabError

_READY = {torch.float32: threading.Event(), torch.float64: threading.Event()}
_LOCK = threading.Lock()
_started = False
error: str | None = None            # why the kernels could not be prepared (then: tensor path)


def ready(dtype: torch.dtype) -> bool:
    """Whether the kernels for ``dtype`` features run now: loaded already, or compiled into the
    disk cache (then loaded here, well under a second). Otherwise a compiler process is started
    (once per process) and the caller takes the tensor path."""
    event = _READY.get(dtype)
    if event is None or error is not None:
        return False
    if event.is_set():
        return True
    state = _marker_state()
    if state == "compiled":
        _load(dtype)
    elif state == "failed":
        return False
    else:
        start()
    return event.is_set()


def _marker() -> tuple[Path, dict]:
    """The marker file of compiled kernels and what it must say for this process: in the folder
    where Numba caches :mod:`nclab.fewshot.kernels` (its own choice: ``NUMBA_CACHE_DIR``, the
    ``__pycache__`` beside the module if writable, else a per-user folder)."""
    import numba

    from nclab.fewshot import kernels
    try:
        folder = Path(kernels.score_slots._cache._cache_path)
    except AttributeError:                  # a Numba whose internals differ: nclab's cache folder
        folder = cache_dir()
    return (folder / f"nclab-kernels.{sys.implementation.cache_tag}.json",
            {"kernels_sha256": hashlib.sha256(Path(kernels.__file__).read_bytes()).hexdigest(),
             "numba": numba.__version__, "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR")})


def _marker_state() -> str:
    """"compiled", "failed" (the compiler could not build them here) or "missing"."""
    try:
        path, expected = _marker()
    except ImportError:                      # no Numba here: the tensor path
        return "failed"
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return "missing"
    if not isinstance(found, dict) or {k: found.get(k) for k in expected} != expected:
        return "missing"                                   # another version of the kernels
    return "failed" if found.get("error") else "compiled"


def _load(dtype: torch.dtype) -> None:
    """Run the engine with the kernels on a tiny problem: loads (or, should the disk cache miss,
    compiles) exactly the signatures the engine calls for ``dtype``."""
    global error
    with _LOCK:
        if _READY[dtype].is_set():
            return
        try:
            from nclab.fewshot.episodes import Episodes
            from nclab.fewshot.evaluate import _Engine
            from nclab.fewshot.heads import make_head
            heads = [(h, make_head(h)) for h in ("ncc", "ncc-cosine", "ridge", "logistic")]
            # 9 two-way one-shot one-query episodes over 4 rows (a group of 8 ridge lanes and one more)
            labels = np.array([0, 0, 1, 1])
            idx = np.tile(np.array([[[0, 1], [2, 3]]]), (9, 1, 1))
            episodes = Episodes(idx, way=2, shot=1, query=1, seed=None, labels_sha256="")
            x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 8))).to(dtype)
            _Engine(x, labels, episodes, 1, None, l2=True, kernels=True).run(heads)
        except Exception as e:               # no kernels then (e.g. Numba cannot compile here)
            error = f"{type(e).__name__}: {e}"
            return
        _READY[dtype].set()


def start() -> None:
    """Start the detached compiler process, once per process."""
    global _started
    with _LOCK:
        if _started:
            return
        _started = True
    with contextlib.suppress(OSError):
        subprocess.Popen([sys.executable, "-m", "nclab.fewshot.warmup"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait() -> bool:
    """Load (or compile) the kernels for every dtype in this process (tests and benchmarks), and
    mark them compiled for later processes; False if they could not be built."""
    for dtype in _READY:
        _load(dtype)
    if error is None and _marker_state() == "missing":
        _write_marker(*_marker())
    return all(e.is_set() for e in _READY.values())


def _write_marker(path: Path, content: dict) -> None:
    if error is not None:
        content["error"] = error
    with contextlib.suppress(OSError, NclabError):        # a hint only: no marker, no kernels yet
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, content)


def _compile() -> int:
    """The compiler process: build every dtype's kernels into the disk cache, then the marker.
    One compiler per cache folder at a time (a second one finds the lock taken and leaves)."""
    path, content = _marker()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0
    if _marker_state() != "missing":
        return 0
    # Leave the cores to the callers: one thread, and the lowest priority
    torch.set_num_threads(1)
    with contextlib.suppress(AttributeError, OSError):
        os.nice(19)
    for dtype in _READY:
        _load(dtype)
    _write_marker(path, content)
    return 0


if __name__ == "__main__":
    sys.exit(_compile())
