"""The records of many runs as one table: run, experiment and sweep directories -> pandas.

A *run directory* (``config.yaml``, ``metrics.jsonl``, written by ``nclab train``) is one run,
named after its directory. An *experiment* or *sweep directory* holds ``manifest.json``; each of
its points names a run directory (``runs/<point>``) and the swept parameters of that point.
Points whose run has not started yet are skipped, and a last line of ``metrics.jsonl`` that is
still being written (no newline, not valid JSON yet) is ignored, so the table can be read while
a sweep runs.

``tidy_records``: one row per (run, epoch, metric), columns ``run, seed, <params...>, epoch,
step, metric, value``. ``wide_records``: one row per (run, epoch), one column per metric.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nclab.config import yaml_load
from nclab.errors import NclabError

MANIFEST = "manifest.json"
ID_COLUMNS = ("epoch", "step")
# Seeds have their own column (from config.yaml); a manifest's "seed" param is the same number.
SEED_PARAMS = ("seed", "trainer.seed")


@dataclass(frozen=True)
class RunInfo:
    """One run found under the given paths: its name, directory, training seed, swept
    parameters (from the manifest; empty for a bare run) and the path it was found through."""

    name: str
    path: Path
    seed: int | None
    params: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    config: dict = field(default_factory=dict, repr=False)   # config.yaml as plain data

    @property
    def bare(self) -> bool:
        """Given as its own directory, not through an experiment's or sweep's manifest."""
        return self.source is None or self.source == self.path

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "seed": self.seed, "params": dict(self.params),
                "source": None if self.source is None else str(self.source)}


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl``. A last line without its newline that does not parse is
    a record being written: skipped. Any other bad line is an error naming file and line."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            if i == len(lines) - 1:          # no newline after it: still being appended
                break
            raise NclabError(f"{p}: line {i + 1} is not valid JSON ({e})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("epoch"), int):
            raise NclabError(f"{p}: line {i + 1}: expected a JSON object with an integer 'epoch'")
        out.append(rec)
    return out


def _read_config(run_dir: Path) -> dict:
    p = run_dir / "config.yaml"
    try:
        data = yaml_load(p.read_text())
    except Exception as e:           # yaml errors of any kind: one line naming the file
        raise NclabError(f"{p}: cannot read the run's config ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise NclabError(f"{p}: expected a mapping of config sections")
    return data


def _run_info(name: str, run_dir: Path, params: dict, source: Path) -> RunInfo:
    cfg = _read_config(run_dir)
    seed = (cfg.get("trainer") or {}).get("seed")
    params = {k: v for k, v in params.items() if k not in SEED_PARAMS}
    return RunInfo(name, run_dir, seed if isinstance(seed, int) else None, params, source, cfg)


def _manifest_runs(root: Path) -> list[RunInfo]:
    mpath = root / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError as e:
        raise NclabError(f"{mpath}: not valid JSON ({e})") from None
    points = manifest.get("points") if isinstance(manifest, dict) else None
    if not isinstance(points, list):
        raise NclabError(f"{mpath}: expected an object with a 'points' list")
    runs = []
    for i, pt in enumerate(points):
        if not (isinstance(pt, dict) and isinstance(pt.get("name"), str) and isinstance(pt.get("run"), str)
                and isinstance(pt.get("params", {}), dict)):
            raise NclabError(f"{mpath}: points[{i}]: expected {{'name': str, 'run': str, 'params': {{...}}}}")
        run_dir = root / pt["run"]
        if (run_dir / "config.yaml").is_file():       # else not started yet
            runs.append(_run_info(pt["name"], run_dir, pt.get("params", {}), root))
    return runs


def find_runs(paths: Iterable[str | os.PathLike]) -> list[RunInfo]:
    """Every run under ``paths`` (run, experiment or sweep directories), in the order given.

    A name that occurs twice (the same point name in two sweeps, two runs called ``run`` in
    different folders) is replaced, for each of those runs, by its path relative to their common
    folder, so every run keeps a distinct name."""
    runs: list[RunInfo] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            raise NclabError(f"{p}: no such directory")
        if (p / MANIFEST).is_file():
            runs.extend(_manifest_runs(p))
        elif (p / "config.yaml").is_file():
            runs.append(_run_info(p.name, p, {}, p))
        else:
            raise NclabError(f"{p}: not a run, experiment or sweep directory "
                             f"(expected config.yaml or {MANIFEST})")
    seen: dict[Path, RunInfo] = {}
    for r in runs:                     # the same run reached twice (a run dir and its sweep) counts once
        seen.setdefault(r.path.resolve(), r)
    runs = list(seen.values())
    by_name: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        by_name.setdefault(r.name, []).append(i)
    for idx in by_name.values():
        if len(idx) > 1:
            common = Path(os.path.commonpath([runs[i].path.resolve() for i in idx]))
            for i in idx:
                r = runs[i]
                runs[i] = RunInfo(r.path.resolve().relative_to(common).as_posix(), r.path, r.seed, r.params,
                                  r.source, r.config)
    return runs


def _number(v: Any) -> float | None:
    """A record value as a float; None for null, NaN, booleans (flags) and non-numbers."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _param_columns(runs: list[RunInfo]) -> list[str]:
    cols: list[str] = []
    for r in runs:
        cols.extend(k for k in r.params if k not in cols)
    return cols


def wide_frame(runs: list[RunInfo]) -> pd.DataFrame:
    """:func:`wide_records` of runs already found (one read of each metrics.jsonl)."""
    params = _param_columns(runs)
    rows, metrics = [], {}
    for r in runs:
        by_epoch: dict[int, dict] = {}
        for rec in read_metrics(r.path / "metrics.jsonl"):
            # one row per epoch; should an epoch ever be written twice, its last record wins
            row = {"run": r.name, "seed": r.seed, **{k: r.params.get(k) for k in params},
                   "epoch": rec["epoch"], "step": rec.get("step")}
            for k, v in rec.items():
                if k not in ID_COLUMNS:
                    x = _number(v)
                    if x is not None or v is None:
                        metrics.setdefault(k, None)
                        row[k] = x
            by_epoch[rec["epoch"]] = row
        rows.extend(by_epoch[e] for e in sorted(by_epoch))
    columns = ["run", "seed", *params, "epoch", "step", *metrics]
    frame = pd.DataFrame(rows, columns=columns)
    floats = pd.DataFrame(frame[list(metrics)].to_numpy(dtype="float64", na_value=np.nan), columns=list(metrics))
    return pd.concat([frame[columns[: len(columns) - len(metrics)]], floats], axis=1)


def tidy_frame(wide: pd.DataFrame) -> pd.DataFrame:
    """The tidy form of a wide frame: one row per (run, epoch, metric), nulls dropped."""
    ids = list(wide.columns[: list(wide.columns).index("step") + 1])
    tidy = wide.melt(id_vars=ids, var_name="metric", value_name="value", ignore_index=False)
    tidy = tidy.dropna(subset=["value"]).sort_index(kind="stable")   # run, epoch, then metric order
    tidy["value"] = tidy["value"].astype("float64")
    return tidy.reset_index(drop=True)


def wide_records(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per (run, epoch): ``run, seed, <params...>, epoch, step`` and one float column per
    metric (NaN where a record lacks it or holds null)."""
    return wide_frame(find_runs(paths))


def tidy_records(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per (run, epoch, metric): ``run, seed, <params...>, epoch, step, metric, value``
    (value a float; nulls dropped; flags such as ``probe: true`` and strings left out)."""
    return tidy_frame(wide_records(paths))
