"""Sweeps: a grid of ordinary training runs in one directory, idempotent and resumable.

    DIR/manifest.json   what the sweep is: base config, common overrides, grid, seeds, points
    DIR/runs/<point>/   one run directory per point (``nclab train``)
    DIR/logs/<point>.log  the output of every process that worked on the point
    DIR/results.csv     the tidy table of every run's records (:mod:`nclab.experiments.records`)

A point is *finished* when its run directory holds ``summary.json``, *interrupted* when the run
directory exists without it, *new* otherwise. :meth:`Sweep.run` skips finished points, resumes
interrupted ones exactly (``nclab train --resume``) and starts new ones, so running the same sweep
again never runs a point twice, and a larger grid adds only its new points. Each point trains in
its own process: a crash, a kill or a bad value of one point never takes down the coordinator or
the other points; its error is recorded and the sweep goes on. Only the coordinator writes the
manifest and the table, atomically.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nclab.atomic import atomic_write_json, atomic_write_text, ensure_writable_dir
from nclab.config import load_config, parse_override, yaml_load
from nclab.errors import NclabError

MANIFEST = "manifest.json"
RESULTS = "results.csv"


# --- points ------------------------------------------------------------------------------------

def format_value(value: Any) -> str:
    """A config value as the text of a ``key=value`` override (YAML flow style, one line)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...")


def split_values(text: str) -> list[str]:
    """``"0.05,0.1"`` -> ``["0.05", "0.1"]``; commas inside brackets or braces do not split
    (``"[1, 2],[3]"`` -> ``["[1, 2]", "[3]"]``)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    if depth != 0 or any(v == "" for v in out):
        raise NclabError(f"grid values {text!r}: expected comma-separated values, e.g. 0.05,0.1")
    return out


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["optim.lr=0.05,0.1", "train.batch_size=64,128"]`` -> ``{"optim.lr": [0.05, 0.1], ...}``
    (values parsed as YAML, as config overrides are)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise NclabError(f"--grid {item!r}: expected key=value1,value2,... (e.g. optim.lr=0.05,0.1)")
        key, raw = (t.strip() for t in item.split("=", 1))
        if key in grid:
            raise NclabError(f"--grid {item!r}: {key} is given twice")
        grid[key] = [parse_override(f"{key}={v}")[1] for v in split_values(raw)]
    return grid


def _name_part(key: str, value: Any) -> str:
    text = format_value(value)
    return f"{key}={re.sub(r'[^A-Za-z0-9._+-]+', '-', text) or 'empty'}"


@dataclass
class Point:
    """One run of a sweep: its directory name, the overrides that make it, and its parameters
    (the swept config keys with their values, and ``seed``)."""

    name: str
    overrides: list[str]
    params: dict[str, Any]

    def to_dict(self) -> dict:
        return {"name": self.name, "run": f"runs/{self.name}", "overrides": list(self.overrides),
                "params": dict(self.params)}


def grid_points(grid: dict[str, list[Any]], seeds: Sequence[int]) -> list[Point]:
    """The Cartesian product of the grid (keys in order) times the seeds (``trainer.seed``)."""
    if not seeds:
        raise NclabError("seeds: expected at least one seed")
    keys = list(grid)
    points, names = [], set()
    for values in itertools.product(*(grid[k] for k in keys)):
        for seed in seeds:
            params = dict(zip(keys, values), seed=int(seed))
            name = "_".join([_name_part(k, v) for k, v in zip(keys, values)] + [f"seed={int(seed)}"])
            if name in names:
                raise NclabError(f"grid: two points share the name {name!r}; give distinct values")
            names.add(name)
            overrides = [f"{k}={format_value(v)}" for k, v in zip(keys, values)] + [f"trainer.seed={int(seed)}"]
            points.append(Point(name, overrides, params))
    return points


def default_threads(workers: int) -> int:
    """Torch threads per point when ``workers`` points train at once: the cores divided among
    them (never oversubscribed)."""
    return max(1, (os.cpu_count() or 1) // workers)


# --- the sweep directory -------------------------------------------------------------------------

@dataclass
class PointOutcome:
    name: str
    status: str                      # done | failed | skipped (already finished)
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3), "error": self.error}


@dataclass
class SweepResult:
    root: Path
    outcomes: list[PointOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[PointOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def to_dict(self) -> dict:
        return {"root": str(self.root), "seconds": round(self.seconds, 3),
                "outcomes": [o.to_dict() for o in self.outcomes]}


def check_points(base_config: str | None, overrides: Sequence[str], points: Sequence[Point]) -> None:
    """Every point's config parses and types check before anything is written."""
    for p in points:
        try:
            load_config(base_config, [*overrides, *p.overrides])
        except NclabError as e:
            raise NclabError(f"point {p.name}: {e}") from None


def _union(a: list, b: list) -> list:
    """Values of ``a`` then the new ones of ``b``, in order (values compared as JSON)."""
    seen = {json.dumps(v, sort_keys=True) for v in a}
    return list(a) + [v for v in b if json.dumps(v, sort_keys=True) not in seen]


class Sweep:
    """A sweep directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict:
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NclabError(f"{self.manifest_path}: not a sweep or experiment directory (no manifest.json)") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise NclabError(f"{self.manifest_path}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("points"), list):
            raise NclabError(f"{self.manifest_path}: expected an object with a 'points' list")
        return data

    def points(self) -> list[Point]:
        out = []
        for i, p in enumerate(self.manifest()["points"]):
            try:
                out.append(Point(str(p["name"]), [str(o) for o in p["overrides"]], dict(p["params"])))
            except (KeyError, TypeError) as e:
                raise NclabError(f"{self.manifest_path}: points[{i}] is malformed ({e})") from None
        return out

    def run_dir(self, point: Point | str) -> Path:
        return self.root / "runs" / (point if isinstance(point, str) else point.name)

    def status(self, point: Point | str) -> str:
        """finished | interrupted | new."""
        d = self.run_dir(point)
        if (d / "summary.json").is_file():
            return "finished"
        if (d / "config.yaml").is_file():
            return "interrupted"
        return "new"

    @classmethod
    def prepare(cls, root: str | os.PathLike, *, kind: str, name: str, base_config: str | None,
                overrides: Sequence[str], grid: dict[str, list[Any]], seeds: Sequence[int],
                points: Sequence[Point], profile: str | None = None, settings: dict | None = None) -> "Sweep":
        """Create the sweep directory, or extend an existing one with the same base config and
        overrides by the points it does not hold yet. Every point's config is checked first."""
        sweep = cls(root)
        base = str(Path(base_config).resolve()) if base_config is not None else None
        check_points(base, overrides, points)
        new = {"kind": kind, "name": name, "profile": profile, "settings": settings or {}, "base_config": base,
               "overrides": list(overrides), "grid": {k: list(v) for k, v in grid.items()},
               "seeds": [int(s) for s in seeds], "points": [p.to_dict() for p in points]}
        if sweep.manifest_path.exists():
            old = sweep.manifest()
            for key in ("kind", "name", "profile", "base_config", "overrides", "settings"):
                if old.get(key) != new[key]:
                    raise NclabError(f"{sweep.root}: holds a different {old.get('kind', 'sweep')} ({key} "
                                     f"{old.get(key)!r} != {new[key]!r}); choose another --out")
            if list(old.get("grid", {})) != list(new["grid"]):
                raise NclabError(f"{sweep.root}: swept keys {list(new['grid'])} differ from this sweep's "
                                 f"{list(old.get('grid', {}))} (every point would be new); choose another --out")
            known = {p["name"]: p for p in old["points"]}
            for p in new["points"]:
                if p["name"] in known and known[p["name"]]["overrides"] != p["overrides"]:
                    raise NclabError(f"{sweep.root}: point {p['name']} was made with other overrides")
            merged = list(old["points"]) + [p for p in new["points"] if p["name"] not in known]
            old_grid = old.get("grid", {})
            new["grid"] = {k: _union(old_grid.get(k, []), new["grid"].get(k, []))
                           for k in dict.fromkeys([*old_grid, *new["grid"]])}
            new["seeds"] = sorted(set(old.get("seeds", [])) | set(new["seeds"]))
            new["points"] = merged
            new["created"] = old.get("created")
        else:
            ensure_writable_dir(sweep.root)
            new["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        from nclab import __version__
        new["nclab_version"] = __version__
        atomic_write_json(sweep.manifest_path, new)
        return sweep

    # --- running ---------------------------------------------------------------------------------

    def _command(self, point: Point, manifest: dict) -> list[str]:
        cmd = [sys.executable, "-m", "nclab", "train"]
        if self.status(point) == "interrupted":
            return cmd + ["--resume", str(self.run_dir(point))]
        if manifest.get("base_config"):
            cmd.append(manifest["base_config"])
        return cmd + list(manifest["overrides"]) + point.overrides + ["--out", str(self.run_dir(point))]

    def _clean_stale_starts(self, point: Point) -> None:
        """A start killed before its run directory was renamed into place leaves a hidden
        temporary folder (``runs/.<name>.*.tmp``); it holds nothing to resume."""
        for tmp in (self.root / "runs").glob(f".{point.name}.*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)

    def _run_point(self, point: Point, manifest: dict, threads: int) -> PointOutcome:
        t0 = time.perf_counter()
        self._clean_stale_starts(point)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   NUMBA_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
        log = self.root / "logs" / f"{point.name}.log"
        log.parent.mkdir(exist_ok=True)
        cmd = self._command(point, manifest)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.PIPE, text=True, env=env)
            fh.write(proc.stderr)
        seconds = time.perf_counter() - t0
        if proc.returncode == 0 and self.status(point) == "finished":
            return PointOutcome(point.name, "done", seconds)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        error = lines[-1] if lines else f"exit code {proc.returncode}"
        return PointOutcome(point.name, "failed", seconds, error.removeprefix("nclab: error: "))

    def _outcome(self, point: Point, future: Future) -> PointOutcome:
        """The outcome of a point's future: an executor that fails (a Ray worker lost, a node
        gone) fails that point alone; a point done elsewhere whose run directory this process
        cannot see (no shared storage) is not done."""
        try:
            outcome = future.result()
        except Exception as e:                          # noqa: BLE001 - any executor failure is the point's
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            return PointOutcome(point.name, "failed", error=f"{type(e).__name__}: {lines[-1] if lines else ''}")
        if outcome.status == "done" and self.status(point) != "finished":
            return PointOutcome(point.name, "failed", outcome.seconds,
                                f"trained elsewhere, but {self.run_dir(point)} holds no summary.json here: put the "
                                "sweep directory on storage every node shares, at the same path")
        return outcome

    def run(self, workers: int = 1, threads: int | None = None, names: Sequence[str] | None = None,
            on_outcome: Callable[[PointOutcome, int, int], None] | None = None,
            submit: Callable | None = None) -> SweepResult:
        """Run every point that is not finished, ``workers`` at a time, each process with
        ``threads`` torch threads (default: the cores divided among the workers). ``names``
        restricts the run to those points. The results table is rewritten after every point.
        ``submit(fn, *args) -> future``: another executor (the Ray backend)."""
        if workers < 1:
            raise NclabError(f"--workers {workers}: expected a positive number of processes")
        t0 = time.perf_counter()
        manifest = self.manifest()
        points = self.points()
        if names is not None:
            wanted = set(names)
            points = [p for p in points if p.name in wanted]
        threads = threads or default_threads(workers)
        result = SweepResult(self.root)
        todo = []
        for p in points:
            if self.status(p) == "finished":
                result.outcomes.append(PointOutcome(p.name, "skipped"))
            else:
                todo.append(p)
        lock = threading.Lock()
        total = len(todo)

        def finished(outcome: PointOutcome) -> None:
            with lock:
                result.outcomes.append(outcome)
                self.write_results()
                if on_outcome is not None:
                    on_outcome(outcome, sum(o.status != "skipped" for o in result.outcomes), total)

        def collect(futures: dict) -> None:
            for f in as_completed(futures):
                finished(self._outcome(futures[f], f))

        if submit is None:
            with ThreadPoolExecutor(max(1, min(workers, total or 1))) as pool:
                collect({pool.submit(self._run_point, p, manifest, threads): p for p in todo})
        else:
            collect({submit(self._run_point, p, manifest, threads): p for p in todo})
        self.write_results()
        order = {p.name: i for i, p in enumerate(self.points())}
        result.outcomes.sort(key=lambda o: order.get(o.name, len(order)))
        result.seconds = time.perf_counter() - t0
        return result

    def write_results(self) -> Path:
        """Rewrite ``results.csv`` from the records of every run (atomically)."""
        from nclab.experiments.records import tidy_records
        table = tidy_records([self.root])
        path = self.root / RESULTS
        atomic_write_text(path, table.to_csv(index=False))
        return path


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping (recipes)."""
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NclabError(f"{path}: {what} not found") from None
    except UnicodeDecodeError:
        raise NclabError(f"{path}: {what} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        first = str(getattr(e, "problem", None) or e).splitlines()[0]
        raise NclabError(f"{path}: {what} is not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise NclabError(f"{path}: {what} must be a mapping, got {type(data).__name__}")
    return data
