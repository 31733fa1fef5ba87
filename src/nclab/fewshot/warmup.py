"""The compiled CPU kernels without a wait for their compilation.

Compiling :mod:`nclab.fewshot.kernels` takes ~10 s of one core per dtype on a fresh install;
loading them from Numba's on-disk cache afterwards well under a second. So the first CPU
evaluation of a process prepares them on a background thread, which warms them by running the
engine itself on a tiny problem (so exactly the signatures the engine calls get compiled), and
goes on without them, on the engine's tensor path (the one GPUs use: the same accuracies, up to
a prediction flipped at an exact tie of two classes); every evaluation that starts once the
kernels of its dtype are ready runs them. When a marker in nclab's cache folder says that this
``kernels.py`` was compiled before (to the same ``NUMBA_CACHE_DIR``), the first evaluation
waits for the load instead, unless the thread finds it has to compile after all (a stale
cache). BENCHMARKS.md ("First call") has the times.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import torch

from nclab.atomic import atomic_write_json
from nclab.data.cache import cache_dir
from nclab.errors import NclabError

_READY = {torch.float32: threading.Event(), torch.float64: threading.Event()}
_SETTLED = threading.Event()         # ready, or compiling (a cache miss), or failed: stop waiting
_DONE = threading.Event()
_LOCK = threading.Lock()
_started = False
error: BaseException | None = None  # why the kernels could not be prepared (then: tensor path)


def ready(dtype: torch.dtype) -> bool:
    """Whether the kernels for ``dtype`` features can run now. The first call starts preparing
    them and waits while they load from the disk cache, not while they compile."""
    event = _READY.get(dtype)
    if event is None:
        return False
    if not event.is_set():
        start(dtype)
        while _cached_before() and not (event.wait(0.005) or _SETTLED.is_set()):
            pass
    return event.is_set()


def _marker() -> tuple[Path, dict]:
    """The marker file of compiled kernels and what it must say for this process."""
    source = Path(__file__).with_name("kernels.py")
    return (cache_dir() / "fewshot-kernels.json",
            {"kernels_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
             "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR")})


@functools.cache
def _cached_before() -> bool:
    path, expected = _marker()
    try:
        return json.loads(path.read_text()) == expected
    except (OSError, ValueError):
        return False


def start(first: torch.dtype = torch.float32) -> None:
    """Prepare the kernels on a background thread (those for ``first`` first), once per process."""
    global _started
    with _LOCK:
        if _started:
            return
        _started = True
    order = sorted(_READY, key=lambda dtype: dtype != first)
    threading.Thread(target=_prepare, args=(order,), name="nclab-kernels", daemon=True).start()


def wait(timeout: float | None = None) -> bool:
    """Start preparing the kernels if need be and wait until they are ready for every dtype
    (tests and benchmarks); False if they could not be compiled or ``timeout`` passed first."""
    start()
    return _DONE.wait(timeout) and all(e.is_set() for e in _READY.values())


def _prepare(order: list[torch.dtype]) -> None:
    global error
    try:
        from numba.core import event

        from nclab.fewshot.episodes import Episodes
        from nclab.fewshot.evaluate import _Engine
        from nclab.fewshot.heads import make_head

        me = threading.get_ident()

        class _OnCompile(event.Listener):
            def on_start(self, ev):
                if threading.get_ident() == me:
                    _SETTLED.set()

            def on_end(self, ev):
                pass

        # Leave the cores to the callers: single-threaded torch ops here, and on Linux the lowest
        # priority for this thread (on 2 shared cores a compile at normal priority slowed the
        # tensor path it runs beside 2.5-3.5x; at nice 19, 1-1.4x)
        torch.set_num_threads(1)
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        heads = [(h, make_head(h)) for h in ("ncc", "ncc-cosine", "ridge", "logistic")]
        # 9 two-way one-shot one-query episodes over 4 rows (a group of 8 ridge lanes and one more)
        labels = np.array([0, 0, 1, 1])
        idx = np.tile(np.array([[[0, 1], [2, 3]]]), (9, 1, 1))
        episodes = Episodes(idx, way=2, shot=1, query=1, seed=None, labels_sha256="")
        rng = np.random.default_rng(0)
        with event.install_listener("numba:compile", _OnCompile()):
            for dtype in order:
                x = torch.from_numpy(rng.standard_normal((4, 8))).to(dtype)
                _Engine(x, labels, episodes, 1, None, l2=True, kernels=True).run(heads)
                _READY[dtype].set()
        path, content = _marker()
        with contextlib.suppress(OSError, NclabError):        # a hint only: no marker, no waiting
            atomic_write_json(path, content)
    except Exception as e:                   # no kernels then (e.g. Numba cannot compile here)
        error = e
    finally:
        _SETTLED.set()
        _DONE.set()
    # Park the thread for the life of the process: a thread that ran torch and Numba code and
    # ends while the interpreter exits can abort the process ("terminate called without an
    # active exception", exit code 134); a parked daemon thread is simply gone with it.
    threading.Event().wait()
