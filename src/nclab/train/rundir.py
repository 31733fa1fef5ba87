"""The run directory: everything a run leaves behind, and the only way to read it back.

    config.yaml       the fully resolved config the run trains with
    preprocess.json   image size, channels, normalisation, ink (used by every later command)
    data.json         dataset name, fingerprint, class names of each split
    metrics.jsonl     one record per epoch (loss, accuracies, lr, seconds, probes)
    checkpoints/      latest weights + optimiser / scheduler / RNG state (see checkpoint.py)
    model.safetensors final weights, summary.json final summary (written when training ends)
    best.safetensors  with train.select: the weights of the selected epoch, best.json which one

A new run directory is assembled under a temporary name and renamed into place once its
set-up files are complete, so a failed start leaves nothing half-made behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml

from nclab.atomic import atomic_write_json, atomic_write_text, ensure_writable_dir, make_temp_dir
from nclab.config import RunConfig, from_dict, to_dict, yaml_load
from nclab.data.transforms import Preprocess
from nclab.errors import NclabError


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # --- creation -----------------------------------------------------------------------------

    @staticmethod
    def default_path(name: str, root: str | os.PathLike = "runs") -> Path:
        return Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"

    @classmethod
    def create(cls, path: str | os.PathLike, cfg: RunConfig, preprocess: Preprocess, data_info: dict) -> "RunDir":
        target = Path(path)
        if target.exists():
            raise NclabError(f"{target}: run directory already exists (choose another --out, or --resume it)")
        parent = ensure_writable_dir(target.parent)
        tmp = make_temp_dir(parent, target.name)
        try:
            run = cls(tmp)
            atomic_write_text(run.config_path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
            atomic_write_json(run.path / "preprocess.json", preprocess.to_dict())
            atomic_write_json(run.path / "data.json", data_info)
            run.metrics_path.touch()
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(target)

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

    @property
    def best_weights_path(self) -> Path:
        """Weights of the epoch kept by model selection (``train.select``), beside the final ones."""
        return self.path / "best.safetensors"

    @property
    def best_info_path(self) -> Path:
        """``{"metric", "mode", "epoch", "step", "value", "weights"}`` of ``best.safetensors``."""
        return self.path / "best.json"

    def config(self) -> RunConfig:
        try:
            data = yaml_load(self.config_path.read_text())
            return from_dict(data)
        except (yaml.YAMLError, NclabError) as e:
            raise NclabError(f"{self.config_path}: {e}") from None

    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self._json("preprocess.json"))

    def data_info(self) -> dict:
        return self._json("data.json")

    def _json(self, name: str) -> dict:
        p = self.path / name
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise NclabError(f"{p}: missing from the run directory") from None
        except ValueError as e:
            raise NclabError(f"{p}: not valid JSON ({e})") from None

    def records(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    # --- writing during training (rank 0 only) ------------------------------------------------

    def append_record(self, record: dict) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_records(self, n: int) -> None:
        """Keep the first ``n`` records (those covered by the checkpoint being resumed)."""
        recs = self.records()[:n]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in recs))

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", summary)
