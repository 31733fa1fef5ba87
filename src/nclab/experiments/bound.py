"""bound (Galanti et al. 2022, Prop. 5): how does the leading term of the few-shot transfer bound,
(k-1)(1+1/n) Avg CDNV of the episode's classes, compare with the measured NCC error?

Every probed epoch, run, split, way and shot gives one (term, error) pair: the probes record both
(``S/fewshot/{k}w{n}s/bound`` and ``.../ncc_error``, on the same fixed episodes). The setting
``include`` lists other experiment or sweep directories whose pairs are added (e.g. nc-transfer and
source-classes). Reported per setting: pairs, the fraction where the term lies above the error (a
bound must), the median ratio term / error, and Spearman's rho between them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from nclab.experiments.stats import spearman

_KEY = re.compile(r"^(?P<split>[^/]+)/fewshot/(?P<way>\d+)w(?P<shot>\d+)s/(?P<what>bound|ncc_error)$")


def pairs(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, epoch, split, way, shot) with the bound term and the NCC error."""
    m = table["metric"].str.extract(_KEY)
    sel = table[m["what"].notna()].assign(**{c: m[c] for c in ("split", "way", "shot", "what")})
    if sel.empty:
        return pd.DataFrame(columns=["run", "epoch", "split", "way", "shot", "bound", "ncc_error"])
    out = sel.pivot_table(index=["run", "epoch", "split", "way", "shot"], columns="what", values="value",
                          aggfunc="first").reset_index().dropna(subset=["bound", "ncc_error"])
    out.columns.name = None
    out["way"], out["shot"] = out["way"].astype(int), out["shot"].astype(int)
    return out


def summarise(p: pd.DataFrame) -> dict:
    above = p["bound"] >= p["ncc_error"]
    ratio = (p["bound"] / p["ncc_error"]).replace([np.inf, -np.inf], np.nan)
    r = spearman(p["bound"], p["ncc_error"])
    return {"pairs": int(len(p)), "fraction_above": float(above.mean()) if len(p) else None,
            "median_ratio": float(ratio.median()) if ratio.notna().any() else None, "spearman": r}


def analyze(table: pd.DataFrame, manifest: dict) -> dict:
    from nclab.experiments.records import tidy_records
    include = manifest.get("settings", {}).get("include") or []
    frames = [table] + [tidy_records([Path(d)]).assign(run=lambda t, d=d: Path(d).name + "/" + t["run"])
                        for d in include]
    p = pairs(pd.concat(frames, ignore_index=True))
    overall = summarise(p)
    rows, per = [], {}
    for (split, way, shot), g in p.groupby(["split", "way", "shot"]):
        s = summarise(g)
        per[f"{split}/{way}w{shot}s"] = s
        rho = s["spearman"]["rho"]
        rows.append([split, way, shot, s["pairs"], f"{100 * s['fraction_above']:.1f}%",
                     f"{s['median_ratio']:.3g}" if s["median_ratio"] is not None else "n/a",
                     "n/a" if rho is None else f"{rho:.3f}"])
    caption = (f"{overall['pairs']} (term, error) pairs over every probed epoch and run; the term lies above the "
               f"measured NCC error in {100 * (overall['fraction_above'] or 0):.1f}% of them. Term = "
               "(k-1)(1+1/n) x Avg CDNV over each episode's class pairs (class statistics from all samples of "
               "the class), averaged over the fixed episodes; error = 1 - NCC accuracy on the same episodes.")
    tables = [{"title": "Bound term against measured NCC error",
               "columns": ["split", "way", "shot", "pairs", "term >= error", "median term / error", "Spearman rho"],
               "rows": rows, "caption": caption}]
    return {"summary": {"overall": overall, "per_setting": per, "included": list(include)}, "tables": tables}
