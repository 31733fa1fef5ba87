"""The run directory: everything a run leaves behind, and the only way to read it back.

    config.yaml       the fully resolved config the run trains with
    preprocess.json   image size, channels, normalisation, ink (used by every later command)
    data.json         dataset name, fingerprint, class names of each split
    metrics.jsonl     one record per epoch (loss, accuracies, lr, seconds, probes)
    checkpoints/      latest weights + optimiser / scheduler / RNG state (see checkpoint.py)
    model.safetensors final weights, summary.json final summary (written when training ends)
    .lock             the advisory lock of the process training the run (see :meth:`RunDir.lock`)
    best.safetensors  with train.select: the weights of the selected epoch, best.json which one

A new run directory is assembled under a temporary name and renamed into place once its
set-up files are complete, so a failed start leaves nothing half-made behind. Everything read
back is checked (keys, types, one JSON record per line): a damaged or hand-edited file is one
NclabError line naming the file and what was expected.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from pathlib import Path

import yaml

from nclab.atomic import atomic_write_json, atomic_write_text, ensure_writable_dir, make_temp_dir
from nclab.config import RunConfig, from_dict, read_yaml, to_dict
from nclab.data.transforms import Preprocess
from nclab.errors import NclabError

LOCK = ".lock"
# temporary names of nclab.atomic (".NAME.XXXXXXXX.tmp[.suffix]"): left by a write that was killed
_TEMPORARY = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")


_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
          float: "a number", type(None): "null"}


def check_fields(obj, where: str, spec: dict[str, type | tuple[type, ...]]) -> dict:
    """``obj`` is a JSON object holding every key of ``spec`` with a value of its type(s)
    (bool never counts as int); else NclabError naming ``where`` and the key."""
    if not isinstance(obj, dict):
        raise NclabError(f"{where}: expected a JSON object, got {_KINDS.get(type(obj), type(obj).__name__)}")
    for key, types in spec.items():
        if key not in obj:
            raise NclabError(f"{where}: missing key {key!r}")
        v = obj[key]
        types = types if isinstance(types, tuple) else (types,)
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            names = " or ".join(_KINDS[t] for t in types)
            raise NclabError(f"{where}: {key!r} must be {names}, got {v!r:.60}")
    return obj


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._created: list[Path] = []        # parent folders this process created for the run

    # --- creation -----------------------------------------------------------------------------

    @staticmethod
    def default_path(name: str, root: str | os.PathLike = "runs") -> Path:
        return Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"

    @staticmethod
    def check_new(path: str | os.PathLike) -> None:
        """Refuse a target that exists already (before any work is done for it)."""
        target = Path(path)
        if target.exists() or target.is_symlink():
            raise NclabError(f"{target}: run directory already exists (choose another --out, or --resume it)")

    @classmethod
    def create(cls, path: str | os.PathLike, cfg: RunConfig, preprocess: Preprocess, data_info: dict) -> "RunDir":
        """Assemble the run's set-up files in a temporary folder, lock it, rename it into place.
        Returns the locked run (call :meth:`unlock` when done)."""
        target = Path(path)
        cls.check_new(target)
        created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
        parent = ensure_writable_dir(target.parent)
        tmp = make_temp_dir(parent, target.name)
        run = cls(tmp)
        try:
            run.lock()
            atomic_write_text(run.config_path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
            atomic_write_json(run.path / "preprocess.json", preprocess.to_dict())
            atomic_write_json(run.path / "data.json", data_info)
            run.metrics_path.touch()
            try:
                os.rename(tmp, target)
            except OSError:
                if target.exists():       # another process created it since check_new
                    raise NclabError(f"{target}: run directory already exists (created by another "
                                     f"process meanwhile)") from None
                raise
        except BaseException:
            run.unlock()
            shutil.rmtree(tmp, ignore_errors=True)
            _remove_empty(created)
            raise
        run.path, run._created = target, created
        return run

    def remove(self) -> None:
        """Delete the run directory, and the empty parent folders this process created for it."""
        shutil.rmtree(self.path, ignore_errors=True)
        _remove_empty(self._created)

    # --- the lock -----------------------------------------------------------------------------

    def lock(self) -> "RunDir":
        """Take the run's advisory lock (``fcntl.flock`` on ``.lock``) until :meth:`unlock` or the
        end of this process (the kernel drops it with the process, even after a SIGKILL, so it is
        never stale). Held by another process: NclabError."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise NclabError(f"{self.path / LOCK}: cannot open the run's lock file ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise NclabError(f"{self.path}: another process is training this run (its lock {LOCK} is held); "
                             f"wait for it to end") from None
        self._lock_fd = fd
        return self

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove_leftovers(self) -> None:
        """Delete what an interrupted process left half-done (call holding the lock): temporary
        files of atomic writes, and checkpoint files that ``checkpoints/latest.json`` does not name."""
        from nclab.train.checkpoint import CKPT, latest_checkpoint
        current = latest_checkpoint(self.path) or ()
        for folder in (self.path, self.path / CKPT):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                stale = folder.name == CKPT and p.name.startswith("step-") and p not in current
                if (_TEMPORARY.match(p.name) or stale) and p.is_file():
                    p.unlink(missing_ok=True)

    # --- reading ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        p = Path(path)
        if not (p / "config.yaml").is_file():
            raise NclabError(f"{p}: not a run directory (expected config.yaml written by `nclab train`)")
        return cls(p)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def weights_path(self) -> Path:
        return self.path / "model.safetensors"

    def has_checkpoint(self) -> bool:
        from nclab.train.checkpoint import CKPT
        return (self.path / CKPT / "latest.json").exists()

    @property
    def best_weights_path(self) -> Path:
        """Weights of the epoch kept by model selection (``train.select``), beside the final ones."""
        return self.path / "best.safetensors"

    @property
    def best_info_path(self) -> Path:
        """``{"metric", "mode", "epoch", "step", "value", "weights"}`` of ``best.safetensors``."""
        return self.path / "best.json"

    def config(self) -> RunConfig:
        data = read_yaml(self.config_path, "run config")
        try:
            return from_dict({} if data is None else data)
        except NclabError as e:
            raise NclabError(f"{self.config_path}: {e}") from None

    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self._json("preprocess.json"), str(self.path / "preprocess.json"))

    def data_info(self) -> dict:
        where = str(self.path / "data.json")
        info = check_fields(self._json("data.json"), where, {"fingerprint": str, "splits": dict})
        for split in ("train", "test"):
            s = check_fields(info["splits"].get(split), f"{where} splits.{split}", {"class_names": list})
            if not all(isinstance(c, str) for c in s["class_names"]):
                raise NclabError(f"{where}: splits.{split}.class_names must be a list of strings")
        return info

    def _json(self, name: str):
        p = self.path / name
        try:
            return json.loads(p.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise NclabError(f"{p}: missing from the run directory") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise NclabError(f"{p}: not valid JSON ({e})") from None
        except OSError as e:
            raise NclabError(f"{p}: cannot read ({e.strerror})") from None

    def records(self, limit: int | None = None) -> list[dict]:
        """The records of metrics.jsonl (the first ``limit`` only, if given: lines past them are
        not read, e.g. a line cut short by a killed process that a resume drops anyway)."""
        out = []
        lines = self.metrics_path.read_bytes().splitlines() if self.metrics_path.exists() else []
        for i, raw in enumerate(lines, 1):
            if limit is not None and len(out) >= limit:
                break
            if not raw.strip():
                continue
            where = f"{self.metrics_path} line {i}"
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise NclabError(f"{where}: not a JSON record ({e})") from None
            check_fields(rec, where, {"epoch": int, "step": int})
            out.append(rec)
        if limit is not None and len(out) < limit:
            raise NclabError(f"{self.metrics_path}: {len(out)} records, but the checkpoint covers {limit} epochs")
        return out

    # --- writing during training (rank 0 only) ------------------------------------------------

    def append_record(self, record: dict) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_records(self, n: int) -> None:
        """Keep the first ``n`` records (those covered by the checkpoint being resumed)."""
        recs = self.records(limit=n)
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in recs))

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", summary)


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            return
