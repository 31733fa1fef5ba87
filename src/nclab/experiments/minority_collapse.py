"""minority-collapse (Fang, He, Long & Su 2021, section 3 of SCIENCE.md): under class imbalance
R = n_A / n_B, do the minority classifier rows collapse onto one direction, and does a fixed
simplex-ETF head prevent it?

The grid sweeps ``data.imbalance_ratio`` (R) and ``model.head`` (a learned head against ``etf``).
From each run's last probe: the mean pairwise cosine and mean norm of the minority classifier rows
(``train/minority_w_cos``, ``train/minority_w_norm``), the same of the majority rows and of the
centred minority class means, and the classifier's accuracy on the minority and majority classes'
held-out (balanced) test samples. Mean and Student-t 95% interval over seeds per (R, head).

Beside it, the same sweep in the unconstrained features model (:func:`nclab.ufm.minority_collapse`,
options from ``settings.ufm``: n_minor and :func:`nclab.ufm.simulate` keywords), with K_A and K_B
taken from the runs (``data.majority_classes``, the source classes). The *collapse onset* is the
smallest R whose learned minority rows have mean cosine >= ``settings.collapsed_cos`` (default 0.9).
"""

from __future__ import annotations

import pandas as pd

from nclab.config import load_config
from nclab.errors import NclabError
from nclab.experiments.stats import fmt_interval, seed_interval, wide
from nclab.ufm import minority_collapse

RATIO, HEAD = "data.imbalance_ratio", "model.head"
REAL = [("train/minority_w_cos", "minority cos w"), ("train/minority_w_norm", "minority |w|"),
        ("train/majority_w_cos", "majority cos w"), ("train/majority_w_norm", "majority |w|"),
        ("train/minority_h_cos", "minority cos h"), ("train/minority_acc", "minority train acc"),
        ("test/minority_acc", "minority test acc"), ("test/majority_acc", "majority test acc"),
        ("test_acc", "test acc")]
UFM = [("minor_w_cos", "minority cos w"), ("minor_w_norm", "minority |w|"), ("major_w_cos", "majority cos w"),
       ("major_w_norm", "majority |w|"), ("minor_h_cos", "minority cos h"), ("minor_accuracy", "minority train acc"),
       ("major_accuracy", "majority train acc")]


def onset(rows: list[dict], cos_key: str, threshold: float) -> float | None:
    """Smallest R (``ratio``) with ``row[cos_key] >= threshold`` (None if none)."""
    hits = [r["ratio"] for r in rows if r.get(cos_key) is not None and r[cos_key] >= threshold]
    return min(hits) if hits else None


def real_rows(w: pd.DataFrame) -> list[dict]:
    """Per (R, head): mean / t-interval over seeds of each REAL key at each run's last probe."""
    probed = w[w["train/minority_w_cos"].notna()]
    final = probed.sort_values("epoch").groupby("run", sort=False).tail(1)
    out = []
    keys = final[[RATIO, HEAD]].drop_duplicates()
    order = sorted(map(tuple, keys.to_numpy().tolist()), key=lambda k: (float(k[0]), k[1] == "etf", str(k[1])))
    groups = dict(list(final.groupby([RATIO, HEAD], sort=False)))
    for ratio, head in order:
        g = groups[(ratio, head)]
        row = {"ratio": float(ratio), "head": str(head), "runs": len(g), "epoch": int(g["epoch"].max())}
        for k, _ in REAL:
            iv = seed_interval(g[k].tolist()) if k in g.columns else seed_interval([])
            row[k], row[k + "_ci95"] = iv["mean"], iv["ci95_t"]
        out.append(row)
    return out


def ufm_sweep(ratios: list[float], n_classes: int, k_major: int, options: dict) -> list[dict]:
    opts = dict(options)
    n_minor = int(opts.pop("n_minor", 1))
    res = minority_collapse([r if r != int(r) else int(r) for r in ratios], k_major=k_major,
                            k_minor=n_classes - k_major, n_minor=n_minor, **opts)
    return [{k: v for k, v in r.items()} for r in res.rows]


def _cell(row: dict, key: str, digits: int = 3) -> str:
    return fmt_interval({"mean": row.get(key), "ci95_t": row.get(key + "_ci95"), "n": row.get("runs", 1)}, digits=digits)


def analyze(table: pd.DataFrame, manifest: dict) -> dict:
    w = wide(table)
    for key in (RATIO, HEAD, "train/minority_w_cos"):
        if key not in w.columns:
            raise NclabError(f"minority-collapse analysis: the records have no {key} (a grid over {RATIO} and "
                             f"{HEAD} with train probes is needed)")
    settings = manifest.get("settings", {})
    threshold = float(settings.get("collapsed_cos", 0.9))
    rows = real_rows(w)
    ratios = sorted({r["ratio"] for r in rows})
    n_classes = int(w["train/n_classes"].dropna().iloc[0])
    cfg = load_config(manifest.get("base_config"), manifest.get("overrides", []))
    k_major = cfg.data.majority_classes if cfg.data.majority_classes is not None else n_classes // 2
    ufm = ufm_sweep(ratios, n_classes, k_major, settings.get("ufm", {}))
    heads = list(dict.fromkeys(r["head"] for r in rows))
    learned = [h for h in heads if h != "etf"]
    summary = {"k_major": k_major, "k_minor": n_classes - k_major, "ratios": ratios, "collapsed_cos": threshold,
               "onset_real": {h: onset([r for r in rows if r["head"] == h], "train/minority_w_cos", threshold)
                              for h in heads},
               "onset_ufm": {h: onset([r for r in ufm if r["head"] == h], "minor_w_cos", threshold)
                             for h in ("learned", "etf")},
               "real": rows, "ufm": ufm}
    real_table = {"title": "Trained network: minority collapse against R (last probe)",
                  "columns": ["R", "head", "runs", *[lab for _, lab in REAL]],
                  "rows": [[f"{r['ratio']:g}", r["head"], r["runs"], *[_cell(r, k) for k, _ in REAL]] for r in rows],
                  "caption": "Mean pairwise cosine (cos) and mean norm (|w|) of the minority / majority classifier "
                             "rows, mean cosine of the centred minority class means (h), and the classifier's "
                             "accuracy on each group's training and (balanced) test samples. Mean ± Student-t 95% "
                             f"interval over seeds. Learned heads: {', '.join(learned)}; a fixed simplex ETF keeps "
                             f"every row cosine at -1/(C-1) = {-1 / (n_classes - 1):.4f} by construction."}
    ufm_table = {"title": "Unconstrained features model: minority collapse against R",
                 "columns": ["R", "head", *[lab for _, lab in UFM], "converged"],
                 "rows": [[f"{r['ratio']:g}", r["head"], *[_fmt(r.get(k), "cos" in k) for k, _ in UFM],
                           "yes" if r["converged"] else "no"]
                          for r in ufm],
                 "caption": f"nclab.ufm.minority_collapse: {k_major} majority classes of R x n_B samples, "
                            f"{n_classes - k_major} minority classes of n_B, no bias (Fang et al.'s layer-peeled "
                            f"model), options {settings.get('ufm', {})}. Accuracies are on the model's own "
                            "(training) features; ties between collapsed minority rows are shared."}
    onset_text = (f"smallest R with minority cos w >= {threshold:g}: trained network "
                  + ", ".join(f"{h} {_r(summary['onset_real'][h])}" for h in heads)
                  + "; UFM " + ", ".join(f"{h} {_r(v)}" for h, v in summary["onset_ufm"].items()))
    summary["onset"] = onset_text
    return {"summary": {"classes": f"{k_major} majority (n_A) + {n_classes - k_major} minority (n_B = n_A / R)",
                        "ratios": ", ".join(f"{r:g}" for r in ratios), "onset": onset_text},
            "onset_real": summary["onset_real"], "onset_ufm": summary["onset_ufm"], "real": rows, "ufm": ufm,
            "tables": [real_table, ufm_table]}


def _fmt(v, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.4f}" if signed else f"{v:.4g}"


def _r(v) -> str:
    return "none in the grid" if v is None else f"{v:g}"
