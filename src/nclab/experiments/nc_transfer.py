"""nc-transfer (Galanti et al. 2022, section 1 of SCIENCE.md): does collapse on the source classes
carry over to held-out samples of those classes and to classes never trained on, and does
novel-class collapse go with few-shot accuracy?

From the probe records of every run (one run per seed): the debiased CDNV per split at
initialisation and at the end (the estimator fit for comparing splits of different sizes), with
the plug-in beside it; the final few-shot accuracy; Spearman's rho of novel CDNV against few-shot
accuracy over the probed epochs of each run (expected strongly negative).
"""

from __future__ import annotations

import pandas as pd

from nclab.experiments.stats import final_rows, fmt_interval, seed_interval, spearman, wide

SPLITS = ("train", "test", "val", "novel")


def fewshot_columns(columns, split: str = "novel") -> list[str]:
    """``{split}/fewshot/{k}w{n}s/{head}`` accuracy columns, sorted."""
    out = []
    for c in columns:
        parts = c.split("/")
        if len(parts) == 4 and parts[0] == split and parts[1] == "fewshot" and not parts[3].endswith("_ci95") \
                and parts[3] not in ("bound", "avg_cdnv", "ncc_error"):
            out.append(c)
    return sorted(out)


def cdnv_table(w: pd.DataFrame, estimator: str = "cdnv_debiased") -> tuple[dict, dict]:
    """Per split: the estimator at epoch 0 and at the last probe epoch (mean and t-interval over runs)."""
    first, last = {}, {}
    for s in SPLITS:
        col = f"{s}/{estimator}"
        if col not in w.columns:
            continue
        probed = w[w[col].notna()]
        if probed.empty:
            continue
        first[s] = seed_interval(probed[probed["epoch"] == 0][col].tolist())
        last[s] = seed_interval(final_rows(probed, col)[col].tolist())
    return first, last


def order(intervals: dict) -> str:
    """``train 0.150 < test 0.169 < novel 0.209``: splits sorted by mean."""
    items = sorted(((iv["mean"], s) for s, iv in intervals.items() if iv["mean"] is not None))
    return " < ".join(f"{s} {m:.3f}" for m, s in items)


def analyze(table: pd.DataFrame, manifest: dict) -> dict:
    w = wide(table)
    deb0, deb1 = cdnv_table(w, "cdnv_debiased")
    plug0, plug1 = cdnv_table(w, "cdnv")
    summary = {"runs": int(w["run"].nunique()), "cdnv_debiased_epoch0": deb0, "cdnv_debiased_final": deb1,
               "cdnv_plugin_epoch0": plug0, "cdnv_plugin_final": plug1,
               "order_final": order(deb1), "order_epoch0": order(deb0)}
    rows = [[s, fmt_interval(deb0.get(s, seed_interval([]))), fmt_interval(deb1.get(s, seed_interval([]))),
             fmt_interval(plug0.get(s, seed_interval([]))), fmt_interval(plug1.get(s, seed_interval([])))]
            for s in SPLITS if s in deb1]
    tables = [{"title": "CDNV per split at initialisation and at the end",
               "columns": ["split", "debiased, epoch 0", "debiased, final", "plug-in, epoch 0", "plug-in, final"],
               "rows": rows,
               "caption": f"Mean ± Student-t 95% interval over {summary['runs']} runs (seeds). Debiased: unbiased "
                          "class variances and squared mean distances corrected by s_i^2/n_i + s_j^2/n_j, the "
                          "estimator to compare splits with different samples per class. Final order (debiased): "
                          f"{summary['order_final']}."}]

    acc_cols = fewshot_columns(w.columns, "novel") + fewshot_columns(w.columns, "val")
    fs_rows, fs_summary = [], {}
    for c in acc_cols:
        iv = seed_interval(final_rows(w, c)[c].tolist())
        fs_summary[c] = iv
        fs_rows.append([c, fmt_interval(iv, 100, 2)])
    if fs_rows:
        tables.append({"title": "Few-shot accuracy at the end (%)", "columns": ["setting", "accuracy"],
                       "rows": fs_rows, "caption": "Mean ± t-interval over runs of each run's mean over its "
                                                   "fixed episode set (the same tasks at every epoch and run)."})
    summary["fewshot_final"] = fs_summary

    corr_rows, corr = [], {}
    cdnv_col = "novel/cdnv_debiased"
    for c in fewshot_columns(w.columns, "novel"):
        if cdnv_col not in w.columns:
            break
        both = w[w[cdnv_col].notna() & w[c].notna()]
        per_run = [spearman(g[cdnv_col], g[c]) for _, g in both.groupby("run")]
        rhos = [r["rho"] for r in per_run if r["rho"] is not None]
        pooled = spearman(both[cdnv_col], both[c])
        corr[c] = {"per_run": per_run, "mean_rho": seed_interval(rhos), "pooled": pooled}
        corr_rows.append([c, fmt_interval(seed_interval(rhos)),
                          "n/a" if pooled["rho"] is None else f"{pooled['rho']:.3f} (p={pooled['p']:.1e}, n={pooled['n']})"])
    if corr_rows:
        tables.append({"title": "Spearman rho of novel CDNV (debiased) against few-shot accuracy over epochs",
                       "columns": ["accuracy", "rho within a run (mean over runs)", "rho pooled over runs and epochs"],
                       "rows": corr_rows,
                       "caption": "Negative: the more collapsed the novel classes, the higher the accuracy."})
    summary["spearman_novel_cdnv_vs_accuracy"] = corr
    return {"summary": summary, "tables": tables}
