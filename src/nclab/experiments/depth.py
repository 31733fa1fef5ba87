"""depth (Galanti et al. 2022 and its follow-up, effective depth): how collapsed is every stage of
the backbone, on training samples and on novel classes, and from which stage on does the nearest-
class-mean rule separate the training classes?

The per-stage probes record, for each stage L (global-average-pooled output),
``S/stage/L/ncc_acc`` and ``S/stage/L/cdnv(_debiased)`` on S in {train, novel}. The effective depth
at an epoch is the first stage whose NCC train error is at most ``settings.threshold`` (default 0.2).
"""

from __future__ import annotations

import re

import pandas as pd

from nclab.experiments.stats import fmt_interval, seed_interval

_KEY = re.compile(r"^(?P<split>train|novel)/stage/(?P<stage>[^/]+)/(?P<what>ncc_acc|cdnv|cdnv_debiased)$")


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def stage_table(table: pd.DataFrame) -> pd.DataFrame:
    m = table["metric"].str.extract(_KEY)
    sel = table[m["what"].notna()].assign(**{c: m[c] for c in ("split", "stage", "what")})
    return sel[["run", "seed", "epoch", "split", "stage", "what", "value"]]


def effective_depth(acc: dict[str, float], stages: list[str], threshold: float) -> int | None:
    """1-based index of the first stage with train NCC error <= threshold (None: no stage)."""
    for i, s in enumerate(stages, 1):
        if s in acc and 1 - acc[s] <= threshold:
            return i
    return None


def analyze(table: pd.DataFrame, manifest: dict) -> dict:
    threshold = float(manifest.get("settings", {}).get("threshold", 0.2))
    st = stage_table(table)
    stages = sorted(st["stage"].unique(), key=_natural)
    rows, depth_rows, depths = [], [], {}
    for epoch, ge in st.groupby("epoch"):
        per_run = []
        for run, gr in ge[(ge["split"] == "train") & (ge["what"] == "ncc_acc")].groupby("run"):
            per_run.append(effective_depth(dict(zip(gr["stage"], gr["value"])), stages, threshold))
        found = [d for d in per_run if d is not None]
        depths[int(epoch)] = {"per_run": per_run, "mean": seed_interval(found)}
        depth_rows.append([int(epoch), ", ".join("none" if d is None else str(d) for d in per_run),
                           fmt_interval(seed_interval(found), digits=2)])
        for s in stages:
            cells = []
            for split, what in (("train", "ncc_acc"), ("novel", "ncc_acc"), ("train", "cdnv_debiased"),
                                ("novel", "cdnv_debiased")):
                v = ge[(ge["stage"] == s) & (ge["split"] == split) & (ge["what"] == what)]["value"]
                cells.append(fmt_interval(seed_interval(v.tolist())))
            rows.append([int(epoch), s] + cells)
    tables = [{"title": f"Effective depth (first stage with NCC train error <= {threshold:g})",
               "columns": ["epoch", "per run", "mean"], "rows": depth_rows,
               "caption": f"Stages in order: {', '.join(stages)} (1 = first)."},
              {"title": "Per-stage collapse", "columns": ["epoch", "stage", "NCC acc train", "NCC acc novel",
                                                           "CDNV train (debiased)", "CDNV novel (debiased)"],
               "rows": rows, "caption": "Mean ± Student-t 95% interval over seeds; each stage's output is "
                                        "globally average-pooled."}]
    return {"summary": {"threshold": threshold, "stages": stages, "effective_depth": depths}, "tables": tables}
