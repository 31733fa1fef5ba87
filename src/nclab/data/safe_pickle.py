"""Restricted unpickling: rebuild NumPy arrays and plain containers, call nothing else.

A pickle is a program: ``pickle.load`` will call any importable function the file names
(``os.system`` included). Dataset pickles in the wild (CIFAR-100 python release,
MetaOptNet / RFS few-shot pickles, often python-2 era) only need the globals listed in
:data:`ALLOWED`; :class:`SafeUnpickler` resolves those and refuses every other global
before anything is called, raising :class:`~nclab.errors.NclabError` naming the file.
"""

from __future__ import annotations

import _codecs
import collections
import io
import os
import pickle

import numpy as np

from nclab.errors import NclabError

try:                                                     # NumPy >= 2 moved the core modules
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:                                      # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as protocol <= 2 pickles use it for bytes: latin-1 only."""
    if not isinstance(obj, str) or encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed as encode(str, 'latin1'), got encoding {encoding!r}")
    return _codecs.encode(obj, "latin1", errors)


_NUMPY_CORE = {"_reconstruct": _multiarray._reconstruct, "scalar": _multiarray.scalar}
_NUMPY_NUMERIC = {"_frombuffer": _numeric._frombuffer}
_BUILTINS = {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex,
             "bytearray": bytearray, "bytes": bytes, "list": list, "dict": dict, "tuple": tuple}

ALLOWED: dict[str, dict[str, object]] = {
    "numpy": {"ndarray": np.ndarray, "dtype": np.dtype},
    "numpy.core.multiarray": _NUMPY_CORE,
    "numpy._core.multiarray": _NUMPY_CORE,
    "numpy.core.numeric": _NUMPY_NUMERIC,
    "numpy._core.numeric": _NUMPY_NUMERIC,
    "_codecs": {"encode": _latin1_encode},
    "builtins": _BUILTINS,
    "__builtin__": _BUILTINS,                            # python-2 pickles
    "collections": {"OrderedDict": collections.OrderedDict},
}


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns the globals in :data:`ALLOWED`."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[module][name]
        except KeyError:
            raise RefusedGlobal(module, name) from None


def loads(data: bytes, source: str = "<bytes>", encoding: str = "latin1"):
    """Unpickle ``data`` with :class:`SafeUnpickler`; ``source`` names it in errors.

    ``encoding="latin1"`` reads python-2 pickles (str payloads of arrays) as bytes-exact.
    """
    try:
        return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()
    except RefusedGlobal as e:
        raise NclabError(
            f"{source}: refused to unpickle global {e.module}.{e.name}; only NumPy arrays and plain "
            "containers are allowed in a data file") from None
    except MemoryError:
        raise NclabError(f"{source}: pickle asks for more memory than available; expected a dataset pickle") from None
    except Exception as e:                               # noqa: BLE001 - any decoder failure is a bad file
        raise NclabError(f"{source}: not a readable pickle of arrays ({type(e).__name__}: {e})") from None


def load(path: str | os.PathLike, encoding: str = "latin1"):
    """Safely unpickle the file at ``path`` (see :func:`loads`)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise NclabError(f"{path}: cannot read ({e.strerror})") from None
    return loads(data, str(path), encoding=encoding)


def as_str_keys(d: dict) -> dict:
    """Decode bytes keys (python-2 / CIFAR pickles) to str."""
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}
