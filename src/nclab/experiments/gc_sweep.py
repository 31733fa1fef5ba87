"""gc-sweep (Munn, Dherin & Gonzalvo 2024, section 2 of SCIENCE.md): do the knobs practitioners
turn lower the geometric complexity (GC) of the source embedding, and with it novel-class CDNV,
and so raise few-shot accuracy?

One factor at a time around a base setting: the learning rate (``optim.lr``), the batch size
(``train.batch_size``), L2 (``optim.weight_decay``) and the strength alpha of the explicit GC
regulariser (``train.regularizers=[{gc: {alpha: A, probes: 1}}]``), each over its values with the
other three at the base, every setting with the profile's seeds. Settings (``settings.KEY``)::

    base:  {lr: 0.05, batch: 128, l2: 5.0e-4, alpha: 0}    # the setting every knob varies around
    lr:    [0.02, 0.05, 0.1]                               # the values of each knob
    batch: [64, 128, 256]
    l2:    [0, 5.0e-4, 1.0e-3]
    alpha: [0, 1.0e-3, 1.0e-2]
    knob_overrides: {alpha: {data.name: cifar10, optim.lr: 0.01, ...}}   # optional, per knob

A knob without overrides shares the base runs; one with overrides (the paper's GC-regulariser
rows on VGG-13 / CIFAR-10 at lr 0.01, batch 256) gets its own series, its base value included;
overrides of a knob's config key (``optim.lr``) set that knob's value in the series. Every point's
parameters name its ``knob`` and the value of all four knobs (``optim.lr``, ``train.batch_size``,
``optim.weight_decay``, ``gc_alpha``).

Analysis, from the last probe of every run: source GC of the embedding on training samples
(``train/gc``, the probes' random-projection estimator on a fixed subset, eval-mode batch norm),
geometric collapse, novel CDNV (debiased and plug-in) and 5-way 5-shot accuracy (NCC, ridge) per
setting with the Student-t interval over seeds; Spearman's rho of GC~CDNV, CDNV~accuracy and
GC~accuracy over all runs with a bootstrap interval resampling whole settings; and the
*directions*: per knob, the sign of its measured effect on GC, CDNV and accuracy next to the
paper's (lr up, batch down, L2 up, alpha up: GC down, CDNV down, accuracy up). Runs on data
without novel classes (CIFAR-10) are within-task: their CDNV is the test split's and their
accuracy the test NCC accuracy (train class means); they enter the directions of their knob but
not the cross-setting correlations.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import pandas as pd

from nclab.errors import NclabError
from nclab.experiments.recipes import expand_vars
from nclab.experiments.stats import (bootstrap_spearman, final_rows, fmt_interval, rank_correlation, seed_interval,
                                    spearman, wide)
from nclab.experiments.sweep import Point, format_value

# knob -> the parameter column holding its value (config key, or gc_alpha for the regulariser)
KNOBS = {"lr": "optim.lr", "batch": "train.batch_size", "l2": "optim.weight_decay", "alpha": "gc_alpha"}
# Munn et al. 2024: the sign of d GC / d knob (CDNV moves with GC, accuracy against it)
PAPER_SIGN = {"lr": -1, "batch": +1, "l2": -1, "alpha": -1}
SETTINGS = ("base", *KNOBS, "knob_overrides")
SHOT = "5w5s"


# --- the points ----------------------------------------------------------------------------------

def _number(value, where: str, integer: bool = False, positive: bool = False) -> float | int:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or value < 0 or (positive and value == 0):
        kind = "an integer" if integer else "a number"
        raise NclabError(f"{where}: expected {kind} {'> 0' if positive else '>= 0'}, got {value!r}")
    return int(value) if integer else float(value)


def _knob_value(knob: str, value, where: str):
    return _number(value, where, integer=knob == "batch", positive=knob in ("lr", "batch"))


def check_settings(settings: dict) -> tuple[dict, dict[str, list], dict[str, dict]]:
    """(base, values per knob, overrides per knob) of the experiment's settings; one-line errors."""
    bad = sorted(set(settings) - set(SETTINGS))
    if bad:
        raise NclabError(f"gc-sweep settings: unknown key {bad[0]!r} (valid: {', '.join(SETTINGS)})")
    base = settings.get("base")
    if not isinstance(base, dict) or sorted(base) != sorted(KNOBS):
        raise NclabError(f"gc-sweep settings.base: expected a value for each of {', '.join(KNOBS)}, got {base!r}")
    base = {k: _knob_value(k, base[k], f"settings.base.{k}") for k in KNOBS}
    values = {}
    for k in KNOBS:
        raw = settings.get(k, [])
        if not isinstance(raw, list) or not raw:
            raise NclabError(f"gc-sweep settings.{k}: expected a non-empty list of values, got {raw!r}")
        values[k] = [_knob_value(k, v, f"settings.{k}") for v in raw]
        if len(set(values[k])) != len(values[k]):
            raise NclabError(f"gc-sweep settings.{k}: {raw!r} lists a value twice")
    overrides = settings.get("knob_overrides") or {}
    if not isinstance(overrides, dict) or not all(k in KNOBS and isinstance(v, dict) for k, v in overrides.items()):
        raise NclabError(f"gc-sweep settings.knob_overrides: expected {{knob: {{config key: value}}}} with knobs "
                         f"{', '.join(KNOBS)}, got {overrides!r}")
    return base, values, overrides


def _regularizers(alpha: float) -> list:
    return [{"gc": {"alpha": alpha, "probes": 1}}] if alpha > 0 else []


def _point(name: str, knob: str, setting: dict, extra: dict, seed: int) -> Point:
    overrides = [f"optim.lr={format_value(setting['lr'])}", f"train.batch_size={setting['batch']}",
                 f"optim.weight_decay={format_value(setting['l2'])}",
                 f"train.regularizers={format_value(_regularizers(setting['alpha']))}"]
    overrides += [f"{k}={format_value(v)}" for k, v in extra.items()] + [f"trainer.seed={seed}"]
    params = {"knob": knob, **{KNOBS[k]: setting[k] for k in KNOBS}, "seed": seed}
    return Point(f"{name}_seed={seed}", overrides, params)


def points(profile, settings: dict) -> list[Point]:
    """The base setting, then each knob over its values (the others at the base), times the seeds."""
    base, values, knob_overrides = check_settings(settings)
    by_key = {v: k for k, v in KNOBS.items() if k != "alpha"}
    out = [_point("base", "base", base, {}, s) for s in profile.seeds]
    for knob, vals in values.items():
        extra = expand_vars(dict(knob_overrides.get(knob, {})))
        series_base = dict(base)
        for key in [k for k in extra if k in by_key]:         # an override of a knob's key sets that knob
            series_base[by_key[key]] = _knob_value(by_key[key], extra.pop(key), f"settings.knob_overrides.{knob}.{key}")
        if "train.regularizers" in extra:
            raise NclabError(f"settings.knob_overrides.{knob}: train.regularizers is the alpha knob's; set alpha")
        for v in vals:
            if v == base[knob] and knob not in knob_overrides:
                continue                                      # that is the base point
            setting = {**series_base, knob: v}
            out += [_point(f"{knob}={v:g}", knob, setting, extra, s) for s in profile.seeds]
    return out


# --- the analysis ----------------------------------------------------------------------------------

def _column(w: pd.DataFrame, key: str) -> pd.Series:
    return w[key] if key in w.columns else pd.Series(np.nan, index=w.index)


def run_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run at its last probe: knob, value, target split and the measures. Runs with
    a novel split measure transfer on it; the others (within-task data) on the test split."""
    w = wide(table)
    for col in ("knob", *KNOBS.values()):
        if col not in w.columns:
            raise NclabError(f"gc-sweep analysis: the records have no {col!r} column (not a gc-sweep experiment)")
    if "train/gc" not in w.columns:
        raise NclabError("gc-sweep analysis: the records have no train/gc (probes.gc on the train split)")
    f = final_rows(w, "train/gc").reset_index(drop=True)
    novel = _column(f, "novel/cdnv").notna()
    pick = lambda a, b: _column(f, a).where(novel, _column(f, b))  # noqa: E731
    out = pd.DataFrame({
        "run": f["run"], "seed": f["seed"], "knob": f["knob"], "target": np.where(novel, "novel", "test"),
        **{k: pd.to_numeric(f[c]) for k, c in KNOBS.items()},
        "gc": _column(f, "train/gc"), "geometric_collapse": _column(f, "train/geometric_collapse"),
        "novel_geometric_collapse": _column(f, "novel/geometric_collapse"),
        "cdnv_debiased": pick("novel/cdnv_debiased", "test/cdnv_debiased"),
        "cdnv": pick("novel/cdnv", "test/cdnv"),
        "acc_ncc": pick(f"novel/fewshot/{SHOT}/ncc", "test/ncc_acc"),
        "acc_ridge": _column(f, f"novel/fewshot/{SHOT}/ridge"),
    })
    out["setting"] = [k if k == "base" else f"{k}={out.at[i, k]:g}" for i, k in out["knob"].items()]
    return out


MEASURES = {"gc": "source GC", "geometric_collapse": "geometric collapse (train)",
            "novel_geometric_collapse": "geometric collapse (novel)", "cdnv_debiased": "CDNV debiased",
            "cdnv": "CDNV plug-in", "acc_ncc": f"{SHOT} NCC (%)", "acc_ridge": f"{SHOT} ridge (%)"}


def _fmt(iv: dict, measure: str) -> str:
    if measure.startswith("acc"):
        return fmt_interval(iv, 100, 2)
    digits = 3 if iv["mean"] is None or abs(iv["mean"]) < 100 else 1
    return fmt_interval(iv, 1, digits)


def series(runs: pd.DataFrame, knob: str) -> pd.DataFrame:
    """The runs of one knob's series: its own runs, plus the base runs unless the knob has its
    own runs at the base's value of that knob."""
    own = runs[runs["knob"] == knob]
    base = runs[runs["knob"] == "base"]
    if base.empty or (not own.empty and np.isin(base[knob].unique(), own[knob].unique()).all()):
        return own
    return pd.concat([base, own])


def direction(s: pd.DataFrame, knob: str, measure: str) -> dict:
    """Spearman's rho of the knob's value against a measure over the series' runs, the same per
    seed, and the change from the lowest to the highest value (mean and t interval over seeds of
    the per-seed differences)."""
    d = s[[knob, measure, "seed"]].dropna()
    rho = spearman(d[knob], d[measure])["rho"]
    per_seed = {int(seed): _rho(g[knob], g[measure]) for seed, g in d.groupby("seed")}
    lo, hi = d[knob].min(), d[knob].max()
    diffs = [g.loc[g[knob] == hi, measure].mean() - g.loc[g[knob] == lo, measure].mean()
             for _, g in d.groupby("seed")]
    sign = 0 if rho is None or rho == 0 else int(np.sign(rho))
    agree = sum(r is not None and np.sign(r) == sign for r in per_seed.values()) if sign else 0
    return {"rho": rho, "per_seed": per_seed, "sign": sign, "seeds_agreeing": int(agree),
            "seeds": len(per_seed), "change": seed_interval([x for x in diffs if math.isfinite(x)]),
            "values": [float(v) for v in sorted(d[knob].unique())]}


def _rho(x: pd.Series, y: pd.Series) -> float | None:
    """Spearman's rho of one seed's runs, defined from two distinct values on (+-1: the sign of
    the change), None when either side is constant."""
    x, y = x.to_numpy(np.float64), y.to_numpy(np.float64)
    return rank_correlation(x, y) if len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0 else None


ARROW = {-1: "down", 0: "flat", 1: "up"}


def analyze(table: pd.DataFrame, manifest: dict) -> dict:
    runs = run_table(table)
    order = list(dict.fromkeys(runs["setting"]))

    # every setting
    per_setting, rows = {}, []
    for name in order:
        g = runs[runs["setting"] == name]
        r0 = g.iloc[0]
        ivs = {m: seed_interval(g[m].tolist()) for m in MEASURES}
        per_setting[name] = {"knob": r0.knob, **{k: float(r0[k]) for k in KNOBS}, "target": r0.target, **ivs}
        value = "" if r0.knob == "base" else f"{r0[r0.knob]:g}"
        rows.append([name, r0.knob, value, r0.target] + [_fmt(ivs[m], m) for m in MEASURES])
    tables = [{"title": "Every setting: source GC, geometric collapse, novel CDNV and 5-way 5-shot accuracy",
               "columns": ["setting", "knob", "value", "target"] + list(MEASURES.values()), "rows": rows,
               "caption": "At each run's last probe; mean ± Student-t 95% interval over seeds (n = seeds). Source "
                          "GC: the probes' random-projection estimate on a fixed subset of training samples, "
                          "eval-mode batch norm. Target novel: CDNV and few-shot accuracy on the novel classes; "
                          "test (within-task data): the source test split's CDNV and its NCC accuracy with the "
                          "train class means."}]

    # correlations across settings (transfer runs)
    tr = runs[runs["target"] == "novel"]
    pairs = {"GC ~ CDNV": ("gc", "cdnv_debiased"), "CDNV ~ accuracy": ("cdnv_debiased", "acc_ncc"),
             "GC ~ accuracy": ("gc", "acc_ncc"), "GC ~ CDNV plug-in": ("gc", "cdnv"),
             "CDNV plug-in ~ accuracy": ("cdnv", "acc_ncc"), "CDNV ~ ridge accuracy": ("cdnv_debiased", "acc_ridge"),
             "GC ~ ridge accuracy": ("gc", "acc_ridge")}
    corr = {name: bootstrap_spearman(tr[x], tr[y], groups=tr["setting"]) for name, (x, y) in pairs.items()}
    tables.append({"title": "Spearman correlations across settings",
                   "columns": ["pair", "x", "y", "rho", "95% bootstrap interval", "p", "runs"],
                   "rows": [[n, MEASURES[x], MEASURES[y], _num(c["rho"]), f"[{_num(c['lo'])}, {_num(c['hi'])}]",
                             _num(c["p"], ".1e"), c["n"]] for n, (x, y) in pairs.items() for c in [corr[n]]],
                   "caption": "Over every run with novel classes (each setting and seed); the bootstrap resamples "
                              "whole settings (2,000 resamples). Munn et al. 2024: GC ~ CDNV positive, CDNV ~ "
                              "accuracy and GC ~ accuracy negative. CDNV: debiased; accuracy: 5-way 5-shot NCC."})

    # directions per knob
    dirs, drows = {}, []
    for knob in KNOBS:
        s = series(runs, knob)
        if s[knob].nunique() < 2:
            continue
        dirs[knob] = {}
        for measure, label, paper in (("gc", "source GC", PAPER_SIGN[knob]),
                                      ("cdnv_debiased", "CDNV (debiased)", PAPER_SIGN[knob]),
                                      ("acc_ncc", "5-shot accuracy (NCC)", -PAPER_SIGN[knob])):
            d = direction(s, knob, measure)
            d |= {"paper": paper, "agrees": d["sign"] == paper, "target": str(s["target"].iloc[-1])}
            dirs[knob][measure] = d
            scale = 100 if measure.startswith("acc") else 1
            per_seed = ", ".join(_num(r, "+.2f") for r in d["per_seed"].values())
            drows.append([f"{knob} up", ", ".join(f"{v:g}" for v in d["values"]), label, ARROW[paper],
                          ARROW[d["sign"]], _num(d["rho"], "+.2f"), f"{per_seed} ({d['seeds_agreeing']}/{d['seeds']})",
                          fmt_interval(d["change"], scale, 2 if scale == 100 else 3), "yes" if d["agrees"] else "NO"])
    tables.append({"title": "Directions: the measured effect of each knob against the paper's",
                   "columns": ["knob", "values", "measure", "paper", "measured", "Spearman rho (all runs)",
                               "per seed (seeds with that sign)", "highest - lowest value (mean ± t over seeds)",
                               "agrees"],
                   "rows": drows,
                   "caption": "Munn et al. 2024: a higher learning rate, a smaller batch, more L2 and a stronger GC "
                              "regulariser each lower source GC, then novel CDNV, and raise 5-shot accuracy. "
                              "Measured: the sign of Spearman's rho of the knob's value against the measure over "
                              "the knob's runs (its values with the others at the base, base runs included); the "
                              "per-seed rhos and the change from the lowest to the highest value give the seeds' "
                              "spread. Accuracy in the last column in percentage points."})
    summary = {"runs": int(len(runs)), "settings": per_setting, "spearman": corr, "directions": dirs,
               "agreeing": sum(d["agrees"] for k in dirs.values() for d in k.values()),
               "directions_compared": sum(len(k) for k in dirs.values())}
    return {"summary": summary, "tables": tables}


def _num(x, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
