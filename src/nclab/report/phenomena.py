"""Figures of the review's phenomena in the papers' styles: the terminal phase of training
(Papyan, Han & Donoho 2020, Figs. 2-7: each statistic against epoch on log-log axes, one line per
loss, seeds as a band) and minority collapse (Fang et al. 2021, Fig. 3: the minority classifier
rows' cosine against the imbalance ratio R on a log axis, learned against a fixed ETF head, the
trained network beside the unconstrained features model)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from nclab.experiments.stats import seed_interval
from nclab.experiments.tpt import tpt_onset
from nclab.report.data import ReportData
from nclab.report.figures import (CYCLE, EPOCH_LABEL, ReportFigure, _legend_below, _log_axis, _new_figure, _render,
                                  _title, _y_limits)

# (title, solid key: the training samples' class means, dashed key, what the dashed line is)
TPT_PANELS = [
    ("training error", "train_error", None, ""),
    ("test error", "test_error", None, ""),
    ("NC1 Tr(S_W S_B^+)/C", "train/nc1", "test/nc1", "test"),
    ("NC1 Tr S_W / Tr S_B", "train/nc1_quotient", "test/nc1_quotient", "test"),
    ("NC2 equinorm", "train/nc2_equinorm", "train/nc2_equinorm_w", "W"),
    ("NC2 equiangularity", "train/nc2_equiangle", "train/nc2_equiangle_w", "W"),
    ("NC2 max-angle", "train/nc2_maxangle", "train/nc2_maxangle_w", "W"),
    ("NC2 ETF error", "train/nc2_etf_error", "train/nc2_etf_error_w", "W"),
    ("NC3 self-duality", "train/nc3", "test/nc3", "test"),
    ("NC4 classifier != NCC", "train/nc4", "test/nc4", "test"),
]


def _tpt_frame(data: ReportData) -> pd.DataFrame:
    w = data.wide
    w = w[w["train/acc"].notna()].copy()            # the probed epochs
    w["train_error"] = 1 - w["train/acc"]
    w["test_error"] = 1 - w["test_acc"] if "test_acc" in w.columns else np.nan
    return w


def _band(g: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per epoch over the runs: mean, min, max (the band: the seeds' range; a t interval of 2
    seeds, t = 12.7, would cover the whole panel) and n."""
    s = g.groupby("epoch", sort=True)[key]
    out = pd.DataFrame({"mean": s.mean(), "lo": s.min(), "hi": s.max(), "n": s.count()}).reset_index()
    return out[out["n"] > 0]


def tpt_figure(data: ReportData) -> list[ReportFigure]:
    """Papyan et al. 2020 style: every collapse statistic against epoch, log-log, one colour per
    point (CE / MSE), solid with the seed band, dashed its companion (test samples, or classifier
    rows), a dotted vertical line at the point's mean onset of zero training error."""
    if not (data.has("train/acc") and data.has("train/nc1")):
        return []
    w = _tpt_frame(data)
    if "train.loss" not in data.params and (len(data.groups) > 4 or not (w["train_error"] == 0).any()):
        return []       # no loss comparison, and no terminal phase or too many lines to read: nc_train says it all
    panels = [p for p in TPT_PANELS if p[1] in w.columns and w[p[1]].notna().any()]
    groups = [g.label for g in data.groups]
    colours = {g: CYCLE[i % len(CYCLE)] for i, g in enumerate(groups)}
    fig, axes = _new_figure(len(panels), ncols=5, width=3.7, height=3.2)
    onsets = {}
    for g in groups:
        runs = w[w["group"] == g]
        vals = [tpt_onset(r) for _, r in runs.groupby("run")]
        onsets[g] = [v for v in vals if v is not None]
    for ax, (title, key, light, what) in zip(axes, panels):
        shown = []
        for g in groups:
            gw = w[w["group"] == g]
            for k, dashed in ((key, False), (light, True)):
                if k is None or k not in gw.columns or not gw[k].notna().any():
                    continue
                c = _band(gw, k)
                c = c[(c["mean"] > 0) & (c["epoch"] >= 0)]
                x = c["epoch"] + 1
                ax.plot(x, c["mean"], color=colours[g], lw=1.0 if dashed else 1.8, ls="--" if dashed else "-",
                        marker=None if dashed else "o", ms=2.5, alpha=0.75 if dashed else 1.0,
                        label=g if not dashed else None)
                if not dashed and (c["n"] > 1).any():
                    lo = c["lo"].where(c["lo"] > 0, c["mean"] * 1e-3)     # a seed at 0: off the bottom of the log axis
                    ax.fill_between(x, lo, c["hi"], color=colours[g], alpha=0.18, lw=0)
                shown.append(c["mean"].to_numpy())
            if onsets[g]:
                ax.axvline(np.mean(onsets[g]) + 1, color=colours[g], ls=":", lw=1.2, alpha=0.8)
        _log_axis(ax, "x", integer=True)
        _log_axis(ax, "y")
        _y_limits([ax], shown, True)
        _title(ax, title + (f" (dashed: {what})" if what else ""), 9)
        ax.set_xlabel("epoch + 1 (log)", fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
    extra = [Line2D([], [], color="0.3", ls=":", lw=1.2, label="onset of zero training error (mean over seeds)")] \
        if any(onsets.values()) else []
    rows = _legend_below(fig, axes, extra)
    onset_text = "; ".join(f"{g}: epoch {np.mean(v):.0f} ({len(v)} of {w[w['group'] == g]['run'].nunique()} runs)"
                           if v else f"{g}: never" for g, v in onsets.items())
    title = "Terminal phase of training (Papyan, Han & Donoho 2020)"
    caption = ("Each collapse statistic against epoch, both axes logarithmic as in Papyan et al.'s Figs. 2-7, one "
               "colour per point (loss). Training error: 1 - accuracy of the classifier (eval mode) on the "
               "probed training samples; test error: 1 - test accuracy. Solid: the training samples' statistic "
               "(class means), with its seed band; dashed: the same on the held-out test samples (NC1, NC3, NC4) "
               "or of the classifier rows W (NC2). Dotted verticals: the first epoch from which every probe has "
               f"zero training error ({onset_text}); the terminal phase lies to their right. Zero values (an "
               f"error of exactly 0) cannot be drawn on log axes. x axis: {EPOCH_LABEL}. Lines: mean over the "
               f"seeds of each point (n = {', '.join(map(str, sorted(set(data.runs_per_group()))))}); bands: the "
               "seeds' range (min to max).")
    return [ReportFigure("tpt", title, caption, _render(fig, title, rows))]


# --- minority collapse ---------------------------------------------------------------------------

RATIO, HEAD = "data.imbalance_ratio", "model.head"


def _ufm_rows(data: ReportData) -> list[dict]:
    rows = []
    for src in dict.fromkeys(r.source for r in data.runs if r.source is not None):
        p = src / "analysis.json"
        if p.is_file():
            try:
                rows += list(json.loads(p.read_text()).get("ufm") or [])
            except ValueError:
                pass                                # analysis_tables reports a bad analysis.json
    return rows


def minority_collapse_figure(data: ReportData) -> list[ReportFigure]:
    """Fang et al. 2021 style: minority statistics against R (log), learned against fixed ETF."""
    if not data.has("train/minority_w_cos") or RATIO not in data.params or HEAD not in data.params:
        return []
    runs = data.wide.drop_duplicates("run").set_index("run")
    finals = data.finals.join(runs[[RATIO, HEAD]])
    finals = finals[finals["train/minority_w_cos"].notna()]
    heads = sorted(finals[HEAD].unique(), key=lambda h: (h == "etf", h))
    ufm = _ufm_rows(data)
    colours = {h: CYCLE[i % len(CYCLE)] for i, h in enumerate(heads)}
    ufm_colours = {"learned": colours[heads[0]] if heads[0] != "etf" else CYCLE[0], "etf": colours.get("etf", CYCLE[1])}
    finals["norm_ratio"] = finals["train/minority_w_norm"] / finals["train/majority_w_norm"]
    panels = [("minority classifier rows: mean cos(w_i, w_j)", "train/minority_w_cos", "minor_w_cos"),
              ("minority class means (centred): mean cos", "train/minority_h_cos", None),
              ("minority / majority mean row norm", "norm_ratio", "norm_ratio"),
              ("minority-class accuracy", "test/minority_acc", "minor_accuracy")]
    for r in ufm:
        r["norm_ratio"] = r["minor_w_norm"] / r["major_w_norm"] if r.get("major_w_norm") else None
    fig, axes = _new_figure(len(panels), ncols=4, width=3.9, height=3.4)
    grid = sorted(finals[RATIO].unique())
    for ax, (title, key, ukey) in zip(axes, panels):
        for h in heads:
            d = finals[finals[HEAD] == h]
            stats = [(r, seed_interval(g[key].tolist())) for r, g in d.groupby(RATIO)]
            xs = [r for r, iv in stats if iv["mean"] is not None]
            ys = [iv["mean"] for _, iv in stats if iv["mean"] is not None]
            err = [iv["ci95_t"] or 0 for _, iv in stats if iv["mean"] is not None]
            label = f"network, {'fixed ETF' if h == 'etf' else f'learned ({h})'}"
            ax.errorbar(xs, ys, yerr=err, color=colours[h], marker="o", ms=5, lw=1.8, capsize=3, label=label)
        if ukey is not None and ufm:
            for uh in ("learned", "etf"):
                pts = sorted((r["ratio"], r[ukey]) for r in ufm if r["head"] == uh and r.get(ukey) is not None)
                if pts:
                    ax.plot(*zip(*pts), color=ufm_colours[uh], marker="s", ms=4, lw=1.2, ls="--", alpha=0.8,
                            label=f"UFM, {'fixed ETF' if uh == 'etf' else 'learned'}")
        if "cos" in key:
            k = data.wide["train/n_classes"].dropna()
            if len(k):
                ax.axhline(-1 / (float(k.iloc[0]) - 1), color="0.5", lw=0.8, ls=":")
            ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        _log_axis(ax, "x")
        ax.set_xticks(grid, [f"{v:g}" for v in grid])
        ax.set_xlabel("imbalance ratio R = n_A / n_B (log)")
        _title(ax, title, 9)
        ax.grid(True, alpha=0.3)
    extra = [Line2D([], [], color="0.5", ls=":", lw=0.8, label="cos = -1/(C-1) (simplex ETF) and 1 (collapsed)")]
    rows = _legend_below(fig, axes, extra)
    n = sorted(set(finals.groupby([RATIO, HEAD]).size()))
    title = "Minority collapse against the imbalance ratio (Fang et al. 2021)"
    caption = ("Trained network (solid, circles): each run's last probe; minority = the classes that keep n_B = n_A / R "
               "training samples. Cosines: mean over pairs of minority classes of the cosine between their "
               "classifier rows (a fixed simplex ETF keeps -1/(C-1) by construction) and between their centred "
               "training class means; norms: mean minority row norm over mean majority row norm; accuracy: the "
               "classifier's on the minority classes' held-out test samples (balanced). Unconstrained features "
               "model (dashed, squares; nclab.ufm.minority_collapse from the experiment's analysis.json): the same "
               "R with n_B = 1; its accuracy is on its own training features (collapsed rows tie, ties shared). "
               f"Error bars: 95% Student-t interval over seeds (n = {', '.join(map(str, n))} per point; none with one).")
    return [ReportFigure("minority_collapse", title, caption, _render(fig, title, rows))]
