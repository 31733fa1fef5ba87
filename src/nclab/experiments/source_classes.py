"""source-classes (Galanti et al. 2022): do more source classes l give lower novel-class CDNV and
higher few-shot accuracy?

The grid sweeps ``data.source_classes`` (a seeded subset of the source classes, the same samples per
class). How much training each l gets is a choice the claim depends on, so the setting ``budget``
offers both:

- ``epochs`` (default): every l trains ``train.epochs`` epochs; a run with fewer classes takes
  proportionally fewer optimiser steps;
- ``steps``: every run takes the optimiser steps of the largest l: ``train.epochs`` is scaled by
  l_max / l (rounded), so small l see their samples many more times.

Analysis: the final-epoch novel CDNV (both estimators) and few-shot accuracy against l, mean and
t-interval over seeds per l, and Spearman's rho against l over all runs with a bootstrap interval
that resamples seeds.
"""

from __future__ import annotations

import math

import pandas as pd

from nclab.config import load_config
from nclab.errors import NclabError
from nclab.experiments.nc_transfer import fewshot_columns
from nclab.experiments.stats import bootstrap_spearman, final_rows, fmt_interval, seed_interval, wide
from nclab.experiments.sweep import Point, grid_points

KEY = "data.source_classes"
BUDGETS = ("epochs", "steps")


def points(profile, settings: dict) -> list[Point]:
    if KEY not in profile.grid:
        raise NclabError(f"source-classes profile {profile.name}: the grid needs {KEY}")
    budget = settings.get("budget", "epochs")
    if budget not in BUDGETS:
        raise NclabError(f"settings.budget={budget!r}: expected one of {', '.join(BUDGETS)}")
    pts = grid_points(profile.grid, profile.seeds)
    if budget == "epochs":
        return pts
    epochs = load_config(profile.config_path(), profile.override_items()).train.epochs
    l_max = max(profile.grid[KEY])
    for p in pts:
        e = max(1, round(epochs * l_max / p.params[KEY]))
        p.overrides.insert(0, f"train.epochs={e}")
        p.params["train.epochs"] = e
    return pts


def analyze(table: pd.DataFrame, manifest: dict) -> dict:
    w = wide(table)
    if KEY not in w.columns:
        raise NclabError(f"source-classes analysis: the records have no {KEY} column")
    metrics = [m for m in ("novel/cdnv_debiased", "novel/cdnv") if m in w.columns]
    metrics += fewshot_columns(w.columns, "novel")
    if not metrics:
        raise NclabError("source-classes analysis: the records have no novel-class probes")
    final = final_rows(w, metrics[0])                    # every probe key is written at the same epochs
    ls = sorted(final[KEY].unique())
    per_l = {m: {int(l): seed_interval(final[final[KEY] == l][m].tolist()) for l in ls} for m in metrics}
    corr = {m: bootstrap_spearman(final[KEY], final[m], groups=final["seed"]) for m in metrics}
    budget = manifest.get("settings", {}).get("budget", "epochs")
    scale = {m: (100, 2) if "/fewshot/" in m else (1, 3) for m in metrics}
    rows = [[int(l)] + [fmt_interval(per_l[m][int(l)], *scale[m]) for m in metrics] for l in ls]
    tables = [{"title": f"Final novel-class collapse and few-shot accuracy against the number of source classes l "
                        f"(equal {budget})",
               "columns": ["l"] + [m + (" (%)" if "/fewshot/" in m else "") for m in metrics], "rows": rows,
               "caption": "Mean ± Student-t 95% interval over seeds at each l."},
              {"title": "Spearman rho against l",
               "columns": ["metric", "rho", "95% bootstrap interval", "p", "runs"],
               "rows": [[m, _num(c["rho"]), f"[{_num(c['lo'])}, {_num(c['hi'])}]", _num(c["p"], ".1e"), c["n"]]
                        for m, c in corr.items()],
               "caption": "Over all runs (each l and seed); the bootstrap resamples whole seeds (2,000 resamples). "
                          "Expected: negative for CDNV, positive for accuracy."}]
    summary = {"budget": budget, "l": [int(l) for l in ls], "per_l": per_l, "spearman": corr}
    return {"summary": summary, "tables": tables}


def _num(x, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
