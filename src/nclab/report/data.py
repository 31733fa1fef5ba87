"""What a report is drawn from: the runs' records (one wide table), the runs grouped into points
(equal parameters, different seeds), the probe keys present, and the statistics over seeds.

Groups: runs of one experiment / sweep with equal parameters (seed aside) form a point. Several
bare run directories given together are grouped the same way, their parameters being the config
keys whose values differ between them (``trainer.seed`` aside): ``nclab report runs/a runs/b``
with two seeds of one config gives one point of two seeds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nclab.errors import NclabError
from nclab.experiments.records import RunInfo, find_runs, wide_frame

SPLITS = ("train", "test", "val", "novel")
FEWSHOT_KEY = re.compile(r"^(train|test|val|novel)/fewshot/(\d+)w(\d+)s/([^/]+)$")
STAGE_KEY = re.compile(r"^(train|test|val|novel)/stage/(.+)/(ncc_acc|cdnv|cdnv_debiased)$")
# per-setting values of the few-shot block that are not a head's accuracy
FEWSHOT_EXTRA = ("avg_cdnv", "bound", "ncc_error")


@dataclass
class Group:
    """A point: runs with equal parameters (seed aside) from one source."""

    label: str
    runs: list[str]
    params: dict[str, Any]

    def to_dict(self) -> dict:
        return {"label": self.label, "runs": list(self.runs), "params": dict(self.params)}


@dataclass(frozen=True)
class FewshotSetting:
    split: str
    way: int
    shot: int

    @property
    def name(self) -> str:
        return f"{self.way}w{self.shot}s"

    def key(self, what: str) -> str:
        return f"{self.split}/fewshot/{self.name}/{what}"

    @property
    def title(self) -> str:
        return f"{self.split}, {self.way}-way {self.shot}-shot"


def _flat(cfg: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _bare_params(runs: list[RunInfo]) -> dict[str, dict]:
    """Parameters of runs given as bare directories: the config keys that differ between them."""
    flat = {r.name: _flat(r.config) for r in runs if r.bare}
    keys = sorted({k for f in flat.values() for k in f} - {"trainer.seed"})
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat.values()}) > 1]
    return {name: {k: f.get(k) for k in varying} for name, f in flat.items()}


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


class ReportData:
    """Runs, their records (``wide``: one row per run and epoch, a ``group`` column added) and the
    groups, read once from ``paths`` (run, experiment or sweep directories)."""

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [Path(p) for p in paths]
        runs = find_runs(self.paths)
        bare = _bare_params(runs)
        runs = [dataclasses.replace(r, params={**r.params, **bare[r.name]}) if r.name in bare else r for r in runs]
        self.wide = wide_frame(runs)
        if self.wide.empty:
            raise NclabError(f"{', '.join(map(str, self.paths))}: no run has written a record yet "
                             f"(metrics.jsonl is empty or missing)")
        with_records = set(self.wide["run"])
        self.runs = [r for r in runs if r.name in with_records]
        columns = list(self.wide.columns)            # run, seed, <params>, epoch, step, <metrics>
        self.params = columns[2:columns.index("epoch")]
        self.metrics = columns[columns.index("step") + 1:]
        self.groups = self._grouped()
        self.wide["group"] = self.wide["run"].map({run: g.label for g in self.groups for run in g.runs})

    def _grouped(self) -> list[Group]:
        """Runs with equal parameters (seed aside) from the same experiment or sweep form a point;
        bare runs group by the config keys that differ between them. Sorted by parameter values
        (numbers numerically), so lines and table rows follow the grid; labels unique."""
        several_sources = len({r.source for r in self.runs if not r.bare}) > 1
        groups: dict[tuple, Group] = {}
        for r in self.runs:
            gkey = ("" if r.bare else str(r.source), json.dumps(r.params, sort_keys=True, default=str))
            if gkey not in groups:
                label = ", ".join(f"{k}={_fmt(v)}" for k, v in r.params.items())
                if not r.bare and (several_sources or not label):
                    label = f"{r.source.name}: {label}" if label else r.source.name
                groups[gkey] = Group(label or (r.name if len(self.runs) == 1 else "all runs"), [], dict(r.params))
            groups[gkey].runs.append(r.name)

        def sort_key(g: Group):
            return [(0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))
                    for v in (g.params.get(p) for p in self.params)]
        ordered = sorted(groups.values(), key=sort_key)
        seen: dict[str, int] = {}
        for g in ordered:
            seen[g.label] = seen.get(g.label, 0) + 1
            if seen[g.label] > 1:
                g.label = f"{g.label} ({seen[g.label]})"
        return ordered

    # --- what is there ------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        return key in self.wide.columns and bool(self.wide[key].notna().any())

    def cdnv_key(self, split: str) -> str | None:
        """The split's debiased CDNV key if recorded, else the plug-in one, else None."""
        for k in (f"{split}/cdnv_debiased", f"{split}/cdnv"):
            if self.has(k):
                return k
        return None

    def fewshot_settings(self) -> list[FewshotSetting]:
        found = {FewshotSetting(m[1], int(m[2]), int(m[3])) for k in self.metrics if (m := FEWSHOT_KEY.match(k))}
        return sorted(found, key=lambda s: (SPLITS.index(s.split), s.way, s.shot))

    def heads(self, setting: FewshotSetting) -> list[str]:
        """Heads with an accuracy recorded for the setting, in record order."""
        out = []
        for k in self.metrics:
            m = FEWSHOT_KEY.match(k)
            if (m and (m[1], int(m[2]), int(m[3])) == (setting.split, setting.way, setting.shot)
                    and m[4] not in FEWSHOT_EXTRA and not m[4].endswith("_ci95") and self.has(k)):
                out.append(m[4])
        return out

    def stages(self, split: str) -> list[str]:
        """Stage names probed on the split, in record order (the backbone's order)."""
        out = []
        for k in self.metrics:
            m = STAGE_KEY.match(k)
            if m and m[1] == split and m[2] not in out and self.has(k):
                out.append(m[2])
        return out

    def bound_points(self) -> list[tuple[FewshotSetting, pd.DataFrame]]:
        """Per few-shot setting with Galanti's bound recorded: every (run, epoch) with both the
        measured NCC error and the bound term, as columns ``error``, ``term``."""
        out = []
        for s in self.fewshot_settings():
            if self.has(s.key("bound")) and self.has(s.key("ncc_error")):
                d = self.wide[[s.key("ncc_error"), s.key("bound")]].dropna()
                out.append((s, d.set_axis(["error", "term"], axis=1)))
        return out

    def transfer_split(self) -> str | None:
        """The split few-shot transfer is reported on: novel, else val."""
        splits = {s.split for s in self.fewshot_settings()}
        return next((s for s in ("novel", "val") if s in splits), None)

    def headline(self) -> list[str]:
        """The metrics of the summary tables and of the figures against a swept parameter:
        accuracies, CDNV per split (debiased when recorded), NC1, and few-shot accuracy of every
        setting and head on the transfer split."""
        keys = [k for k in ("train_acc", "test_acc") if self.has(k)]
        keys += [k for s in SPLITS if (k := self.cdnv_key(s))]
        keys += [k for k in ("train/nc1",) if self.has(k)]
        keys += [s.key(h) for s in self.fewshot_settings() if s.split == self.transfer_split() for h in self.heads(s)]
        return keys

    def swept(self) -> list[str]:
        """Parameters with at least two distinct numeric values (candidates for an x axis)."""
        out = []
        for p in self.params:
            v = pd.to_numeric(self.wide[p], errors="coerce")
            if v.notna().all() and v.nunique() >= 2 and not self.wide[p].map(lambda x: isinstance(x, bool)).any():
                out.append(p)
        return out

    # --- values -------------------------------------------------------------------------------

    def group(self, label: str) -> pd.DataFrame:
        """The group's rows of the wide table."""
        return self.wide[self.wide["group"] == label]

    @functools.cached_property
    def _epoch_stats(self) -> dict[str, pd.DataFrame]:
        """Mean, 95% t half-width and count over the runs of each (group, epoch), every metric
        at once (:func:`nclab.experiments.stats.seed_interval`, vectorised over epochs)."""
        from scipy.special import stdtrit
        w = self.wide[["group", "epoch", *self.metrics]].replace([np.inf, -np.inf], np.nan)
        g = w.groupby(["group", "epoch"], sort=True)
        n = g.count()
        half = stdtrit(np.maximum(n - 1, 1), 0.975) * g.std(ddof=1) / np.sqrt(n)
        return {"mean": g.mean(), "half": half.where(n > 1), "n": n}

    def curve(self, label: str, key: str) -> pd.DataFrame:
        """Per epoch over the group's runs: mean, lo, hi (95% t interval over seeds; NaN with one
        seed) and n; epochs where no run has the metric left out."""
        st = self._epoch_stats
        mean, half, n = (st[k].loc[label, key] for k in ("mean", "half", "n"))
        c = pd.DataFrame({"epoch": mean.index.to_numpy(), "mean": mean.to_numpy(), "lo": (mean - half).to_numpy(),
                          "hi": (mean + half).to_numpy(), "n": n.to_numpy()})
        return c[c["n"] > 0].reset_index(drop=True)

    @functools.cached_property
    def finals(self) -> pd.DataFrame:
        """Each run's last recorded value of every metric (index: run, in run order; NaN where
        the run never recorded it)."""
        last = self.wide.sort_values("epoch", kind="stable").groupby("run", sort=False)[self.metrics].last()
        return last.reindex([r.name for r in self.runs])

    def final(self, key: str) -> pd.Series:
        """Each run's last recorded value of ``key`` (runs without it left out)."""
        return self.finals[key].dropna()

    def runs_per_group(self) -> list[int]:
        """Runs per group, one entry per group."""
        return [len(g.runs) for g in self.groups]
