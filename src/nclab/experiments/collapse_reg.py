"""collapse-reg: does explicitly enforcing collapse help transfer? (the seed talk's open question,
section 1 of SCIENCE.md; issue 15).

Arms, each trained from the same seeds (same initial weights and batch order for a given seed, so
differences are paired by seed):

=========  ==========================================================  ==========================
arm        what                                                        strength
=========  ==========================================================  ==========================
``ce``     cross-entropy alone (the reference)                         none
``cdnv``   CE + strength x batch CDNV of the embedding                 ``strength`` of the penalty
           (:func:`nclab.train.regularizers.batch_cdnv`: mean over the
           class pairs of the batch of (var_i + var_j) / (2 ||mu_i - mu_j||^2))
``etf``    CE with the classifier fixed to a simplex ETF                none
           (``model.head=etf``, Zhu et al. 2021; needs feature dim >= source classes - 1)
``gc``     CE + alpha x GC of the embedding (Munn et al. 2024)         ``alpha``
``ls``     CE with label smoothing (Mueller et al. 2019)               the smoothing ``s``
=========  ==========================================================  ==========================

Settings (``settings.KEY``): ``arms: {ce: [], cdnv: [0.1, 1, 10], etf: [], gc: [1e-3, 1e-2],
ls: [0.1, 0.3]}`` (the strengths of each arm; ``ce`` and ``etf`` take none, ``ce`` is required),
``gc_probes`` (random projections of the GC regulariser, default 1). Every point sets all three
knobs (``train.regularizers``, ``train.label_smoothing``, ``model.head``) and its params name the
``arm`` and the ``strength`` (null for ce and etf).

Analysis, at each run's last probe: source train accuracy (``train_acc``, the running accuracy of
the last epoch on augmented batches), source-test accuracy (``test_acc``), source collapse
(``train/cdnv_debiased``), novel CDNV (debiased and plug-in), novel 5-way 1- and 5-shot accuracy
(NCC, and ridge when probed); per arm and strength the mean with its Student-t 95% interval over
seeds; the paired difference from CE alone (same seed) with its t interval; Spearman's rho over
all runs of source CDNV ~ novel CDNV ~ 5-shot accuracy (bootstrap resampling whole settings); and
the answer per setting: does it collapse the source more than CE, and does novel 5-shot accuracy
go up, down, or not detectably (the paired interval contains 0)?
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import pandas as pd

from nclab.errors import NclabError, unknown_name
from nclab.experiments.stats import bootstrap_spearman, final_rows, fmt_interval, seed_interval, wide
from nclab.experiments.sweep import Point, format_value

ARMS = ("ce", "cdnv", "etf", "gc", "ls")
WITH_STRENGTH = ("cdnv", "gc", "ls")
SETTINGS = ("arms", "gc_probes")
ARM_TEXT = {"ce": "CE alone", "cdnv": "CE + batch CDNV penalty", "etf": "CE, fixed simplex-ETF head",
            "gc": "CE + GC regulariser", "ls": "CE with label smoothing"}

# measure -> (record key, label, scale for display, digits)
MEASURES = {
    "train_acc": ("train_acc", "source train acc (%)", 100, 2),
    "test_acc": ("test_acc", "source test acc (%)", 100, 2),
    "train_cdnv": ("train/cdnv_debiased", "source CDNV (debiased)", 1, 4),
    "novel_cdnv_debiased": ("novel/cdnv_debiased", "novel CDNV (debiased)", 1, 4),
    "novel_cdnv": ("novel/cdnv", "novel CDNV (plug-in)", 1, 4),
    "acc_1shot": ("novel/fewshot/5w1s/ncc", "novel 5w1s NCC (%)", 100, 2),
    "acc_5shot": ("novel/fewshot/5w5s/ncc", "novel 5w5s NCC (%)", 100, 2),
    "ridge_1shot": ("novel/fewshot/5w1s/ridge", "novel 5w1s ridge (%)", 100, 2),
    "ridge_5shot": ("novel/fewshot/5w5s/ridge", "novel 5w5s ridge (%)", 100, 2),
}


# --- the points ----------------------------------------------------------------------------------

def _strength(arm: str, value, where: str) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and arm == "ls":
        ok = value < 1
    if not ok:
        raise NclabError(f"{where}: expected a number {'in (0, 1)' if arm == 'ls' else '> 0'}, got {value!r}")
    return float(value)


def check_settings(settings: dict) -> tuple[dict[str, list[float]], int]:
    """({arm: strengths}, gc probes) of the experiment's settings; one-line errors."""
    bad = sorted(set(settings) - set(SETTINGS))
    if bad:
        raise NclabError(f"collapse-reg settings: unknown key {bad[0]!r} (valid: {', '.join(SETTINGS)})")
    arms = settings.get("arms")
    if not isinstance(arms, dict) or not arms:
        raise NclabError(f"collapse-reg settings.arms: expected {{arm: [strengths]}} with arms {', '.join(ARMS)}, "
                         f"got {arms!r}")
    out = {}
    for arm, values in arms.items():
        if arm not in ARMS:
            raise unknown_name("arm in collapse-reg settings.arms", str(arm), ARMS)
        values = [] if values is None else values
        if not isinstance(values, list):
            raise NclabError(f"collapse-reg settings.arms.{arm}: expected a list of strengths, got {values!r}")
        if arm in WITH_STRENGTH and not values:
            raise NclabError(f"collapse-reg settings.arms.{arm}: expected at least one strength")
        if arm not in WITH_STRENGTH and values:
            raise NclabError(f"collapse-reg settings.arms.{arm}: this arm takes no strength (give [])")
        out[arm] = [_strength(arm, v, f"settings.arms.{arm}") for v in values]
        if len(set(out[arm])) != len(out[arm]):
            raise NclabError(f"collapse-reg settings.arms.{arm}: {values!r} lists a strength twice")
    if "ce" not in out:
        raise NclabError("collapse-reg settings.arms: the reference arm 'ce' is required (differences are from it)")
    probes = settings.get("gc_probes", 1)
    if not (isinstance(probes, int) and not isinstance(probes, bool) and probes >= 1):
        raise NclabError(f"collapse-reg settings.gc_probes: expected an integer >= 1, got {probes!r}")
    return out, probes


def arm_overrides(arm: str, strength: float | None, gc_probes: int = 1) -> list[str]:
    """The config overrides of one arm at one strength (every knob set explicitly)."""
    regs: list = []
    if arm == "cdnv":
        regs = [{"cdnv": {"strength": strength}}]
    elif arm == "gc":
        regs = [{"gc": {"alpha": strength, "probes": gc_probes}}]
    return [f"train.regularizers={format_value(regs)}",
            f"train.label_smoothing={format_value(strength if arm == 'ls' else 0.0)}",
            f"model.head={'etf' if arm == 'etf' else 'linear'}"]


def setting_name(arm: str, strength: float | None) -> str:
    return arm if strength is None else f"{arm}={strength:g}"


def points(profile, settings: dict) -> list[Point]:
    """Every arm at each of its strengths (once for ce and etf), times the profile's seeds."""
    arms, gc_probes = check_settings(settings)
    out = []
    for arm in ARMS:                                 # fixed order: the reference first
        if arm not in arms:
            continue
        for s in arms[arm] or [None]:
            name = setting_name(arm, s)
            for seed in profile.seeds:
                out.append(Point(f"{name}_seed={seed}", [*arm_overrides(arm, s, gc_probes), f"trainer.seed={seed}"],
                                 {"arm": arm, "strength": s, "seed": seed}))
    return out


# --- the analysis ----------------------------------------------------------------------------------

def run_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run at its last probe: arm, strength, setting, seed and every measure."""
    w = wide(table)
    for col in ("arm", "strength"):
        if col not in w.columns:
            raise NclabError(f"collapse-reg analysis: the records have no {col!r} column (not a collapse-reg "
                             f"experiment)")
    if "novel/cdnv" not in w.columns:
        raise NclabError("collapse-reg analysis: the records have no novel/cdnv (probes on the novel split)")
    f = final_rows(w, "novel/cdnv").reset_index(drop=True)
    strength = pd.to_numeric(f["strength"], errors="coerce")
    out = pd.DataFrame({"run": f["run"], "seed": f["seed"], "arm": f["arm"], "strength": strength})
    out["setting"] = [setting_name(a, None if pd.isna(s) else float(s)) for a, s in zip(out["arm"], strength)]
    for m, (key, *_rest) in MEASURES.items():
        out[m] = pd.to_numeric(f[key]) if key in f.columns else np.nan
    return out


def _fmt(iv: dict, measure: str) -> str:
    _, _, scale, digits = MEASURES[measure]
    return fmt_interval(iv, scale, digits)


def paired_differences(runs: pd.DataFrame, setting: str, measure: str, reference: str = "ce") -> dict:
    """The setting's value minus the reference's at the same seed, over the seeds both have:
    mean and Student-t 95% interval (:func:`seed_interval`), and the per-seed differences."""
    a = runs[runs["setting"] == setting].set_index("seed")[measure]
    b = runs[runs["setting"] == reference].set_index("seed")[measure]
    seeds = sorted(set(a.dropna().index) & set(b.dropna().index))
    diffs = [float(a[s] - b[s]) for s in seeds]
    return {**seed_interval(diffs), "seeds": [int(s) for s in seeds], "per_seed": diffs}


def verdict(diff: dict) -> str:
    """up / down when the 95% interval of the paired difference excludes 0, else ``no difference``
    (``n/a`` with fewer than two seeds)."""
    if diff["mean"] is None or diff["ci95_t"] is None:
        return "n/a"
    lo, hi = diff["mean"] - diff["ci95_t"], diff["mean"] + diff["ci95_t"]
    return "up" if lo > 0 else "down" if hi < 0 else "no difference"


def _num(x, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _diff_text(d: dict, measure: str) -> str:
    _, _, scale, digits = MEASURES[measure]
    if d["mean"] is None:
        return "n/a"
    lo = None if d["ci95_t"] is None else (d["mean"] - d["ci95_t"]) * scale
    hi = None if d["ci95_t"] is None else (d["mean"] + d["ci95_t"]) * scale
    band = "" if lo is None else f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return f"{d['mean'] * scale:+.{digits}f}{band} (n={d['n']})"


def analyze(table: pd.DataFrame, manifest: dict) -> dict:
    runs = run_table(table)
    measures = [m for m in MEASURES if runs[m].notna().any()]
    ranked = runs.assign(arm_rank=runs["arm"].map(lambda a: ARMS.index(a) if a in ARMS else len(ARMS)))
    order = list(dict.fromkeys(ranked.sort_values(["arm_rank", "strength"], na_position="first")["setting"]))

    per_setting, rows = {}, []
    for name in order:
        g = runs[runs["setting"] == name]
        arm, strength = g["arm"].iloc[0], g["strength"].iloc[0]
        ivs = {m: seed_interval(g[m].tolist()) for m in measures}
        per_setting[name] = {"arm": arm, "strength": None if pd.isna(strength) else float(strength),
                             "seeds": sorted(int(s) for s in g["seed"]), **ivs}
        rows.append([name, ARM_TEXT[arm], "" if pd.isna(strength) else f"{strength:g}"]
                    + [_fmt(ivs[m], m) for m in measures])
    tables = [{"title": "Every arm and strength: source accuracy, source and novel collapse, novel few-shot accuracy",
               "columns": ["setting", "arm", "strength"] + [MEASURES[m][1] for m in measures], "rows": rows,
               "caption": "At each run's last epoch (its last probe); mean ± Student-t 95% interval over seeds "
                          "(n = seeds). Source train accuracy: the running accuracy of the last epoch on augmented "
                          "batches; source test: held-out samples of the source classes. CDNV (v_i + v_j) / "
                          "(2 ||mu_i - mu_j||^2), debiased (unbiased variances, corrected distances) and plug-in, "
                          "on the probed samples; few-shot: 5-way, 15 queries per class, one fixed episode set "
                          "shared by all runs, l2-normalised features."}]

    diffs, drows = {}, []
    if "ce" in set(runs["arm"]):
        for name in order:
            if name == "ce":
                continue
            diffs[name] = {m: paired_differences(runs, name, m) for m in measures}
            for m in measures:
                diffs[name][m]["verdict"] = verdict(diffs[name][m])
            drows.append([name] + [_diff_text(diffs[name][m], m) for m in measures])
        tables.append({"title": "Differences from CE alone (same seed), mean [95% interval]",
                       "columns": ["setting"] + [MEASURES[m][1] for m in measures], "rows": drows,
                       "caption": "Per seed, the setting's value minus CE alone's at the same seed (same initial "
                                  "weights and batch order), then the mean over seeds with the Student-t 95% "
                                  "interval; accuracies in percentage points. An interval that excludes 0 is a "
                                  "detectable effect at these seeds."})

    pairs = {"source CDNV ~ novel CDNV": ("train_cdnv", "novel_cdnv_debiased"),
             "novel CDNV ~ 5-shot accuracy": ("novel_cdnv_debiased", "acc_5shot"),
             "novel CDNV ~ 1-shot accuracy": ("novel_cdnv_debiased", "acc_1shot"),
             "source CDNV ~ 5-shot accuracy": ("train_cdnv", "acc_5shot")}
    corr = {n: bootstrap_spearman(runs[x], runs[y], groups=runs["setting"]) for n, (x, y) in pairs.items()
            if x in measures and y in measures}
    if corr:
        tables.append({"title": "Spearman correlations over all runs",
                       "columns": ["pair", "rho", "95% bootstrap interval", "p", "runs"],
                       "rows": [[n, _num(c["rho"]), f"[{_num(c['lo'])}, {_num(c['hi'])}]", _num(c["p"], ".1e"), c["n"]]
                                for n, c in corr.items()],
                       "caption": "Every run of every setting; the bootstrap resamples whole settings (2,000 "
                                  "resamples). CDNV debiased, accuracy 5-way NCC on the novel classes."})

    answer = answer_text(diffs, corr)
    if diffs:                                # the report prints captions: the answer goes with its table
        tables[1]["caption"] += " " + answer
    summary = {"runs": int(len(runs)), "settings": per_setting, "differences_from_ce": diffs, "spearman": corr,
               "answer": answer}
    return {"summary": summary, "tables": tables}


def answer_text(diffs: dict, corr: dict) -> str:
    """What the paired differences say about the question, in one paragraph."""
    if not diffs:
        return "no arm besides CE alone: nothing to compare"
    parts = []
    collapsed = [n for n, d in diffs.items() if d.get("train_cdnv", {}).get("verdict") == "down"]
    novel_down = [n for n, d in diffs.items() if d.get("novel_cdnv_debiased", {}).get("verdict") == "down"]
    better = [n for n, d in diffs.items() if d.get("acc_5shot", {}).get("verdict") == "up"]
    worse = [n for n, d in diffs.items() if d.get("acc_5shot", {}).get("verdict") == "down"]
    better1 = [n for n, d in diffs.items() if d.get("acc_1shot", {}).get("verdict") == "up"]
    worse1 = [n for n, d in diffs.items() if d.get("acc_1shot", {}).get("verdict") == "down"]
    fmt = lambda xs: ", ".join(xs) if xs else "none"  # noqa: E731
    parts.append(f"Source CDNV detectably below CE alone's: {fmt(collapsed)}; novel CDNV below: {fmt(novel_down)}.")
    parts.append(f"Novel 5-way 5-shot accuracy above CE alone's: {fmt(better)}; below: {fmt(worse)} "
                 f"(1-shot above: {fmt(better1)}; below: {fmt(worse1)}); the others are within their 95% "
                 f"interval of CE alone.")
    c = corr.get("novel CDNV ~ 5-shot accuracy")
    if c and c.get("rho") is not None:
        parts.append(f"Across all runs novel CDNV and 5-shot accuracy have Spearman rho {c['rho']:+.2f} "
                     f"[{_num(c['lo'], '+.2f')}, {_num(c['hi'], '+.2f')}].")
    s = corr.get("source CDNV ~ novel CDNV")
    if s and s.get("rho") is not None:
        parts.append(f"Source and novel CDNV: rho {s['rho']:+.2f} [{_num(s['lo'], '+.2f')}, {_num(s['hi'], '+.2f')}].")
    return " ".join(parts)
