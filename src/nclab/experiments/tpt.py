"""tpt (Papyan, Han & Donoho 2020, section 3 of SCIENCE.md): the terminal phase of training.

The grid sweeps ``train.loss`` (CE and MSE); ``settings.lr`` maps each loss to its learning rate
(Papyan's notebook as re-implemented publicly: 0.0679 for CE, 0.0184 for MSE). Every run probes
the training and test samples at log-spaced epochs.

Analysis, per run: the terminal phase starts at the first probed epoch from which the training
error (``1 - train/acc``, the classifier in eval mode on the unaugmented training samples) is 0 at
every later probe. Over that phase, each statistic s gets its log-log slope, the least-squares
slope of log10 s against log10 epoch (Papyan et al.'s figures are straight lines on these axes
when the statistic decays as a power of the epoch), and its end value (last probe). Per loss: the
mean over seeds with the Student-t 95% interval. Runs that never reach zero training error have
no terminal phase: their slopes are reported over the last ``settings.tail`` (default 1/3, in
log epoch) of the probes instead and flagged.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from nclab.errors import NclabError
from nclab.experiments.stats import fmt_interval, seed_interval, wide
from nclab.experiments.sweep import Point, grid_points

KEY = "train.loss"
# (record key, label) of every statistic the analysis and the figure report, in Papyan's order
STATISTICS = [
    ("train_error", "training error (1 - train/acc)"),
    ("test_error", "test error (1 - test_acc)"),
    ("train/nc1", "NC1 Tr(S_W S_B^+)/C, train"),
    ("train/nc1_quotient", "NC1 trace quotient Tr S_W / Tr S_B, train"),
    ("test/nc1", "NC1 Tr(S_W S_B^+)/C, test"),
    ("test/nc1_quotient", "NC1 trace quotient, test"),
    ("train/nc2_equinorm", "equinorm of class means (std/mean of norms)"),
    ("train/nc2_equinorm_w", "equinorm of classifier rows"),
    ("train/nc2_equiangle", "equiangularity of class means (std of cosines)"),
    ("train/nc2_equiangle_w", "equiangularity of classifier rows"),
    ("train/nc2_maxangle", "max-angle of class means (mean |cos + 1/(C-1)|)"),
    ("train/nc2_maxangle_w", "max-angle of classifier rows"),
    ("train/nc2_etf_error", "ETF error of class means"),
    ("train/nc2_etf_error_w", "ETF error of classifier rows"),
    ("train/nc3", "NC3 ||W/||W|| - M/||M|| ||^2"),
    ("train/nc4", "NC4 classifier != nearest class mean, train"),
    ("test/nc4", "NC4 classifier != nearest class mean, test"),
    ("test/cdnv", "CDNV (plug-in), test"),
]


def points(profile, settings: dict) -> list[Point]:
    """The grid's points, each with ``optim.lr`` of its loss from ``settings.lr``."""
    if KEY not in profile.grid:
        raise NclabError(f"tpt profile {profile.name}: the grid needs {KEY}")
    lrs = settings.get("lr", {})
    if not isinstance(lrs, dict):
        raise NclabError(f"settings.lr: expected a mapping loss -> learning rate, got {lrs!r}")
    pts = grid_points(profile.grid, profile.seeds)
    for p in pts:
        loss = p.params[KEY]
        if loss in lrs:
            lr = lrs[loss]
            if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
                raise NclabError(f"settings.lr.{loss}: expected a positive learning rate, got {lr!r}")
            p.overrides.insert(0, f"optim.lr={lr}")
    return pts


def with_errors(w: pd.DataFrame) -> pd.DataFrame:
    """Add ``train_error`` = 1 - train/acc and ``test_error`` = 1 - test_acc."""
    w = w.copy()
    if "train/acc" in w.columns:
        w["train_error"] = 1 - w["train/acc"]
    if "test_acc" in w.columns:
        w["test_error"] = 1 - w["test_acc"]
    return w


def tpt_onset(run: pd.DataFrame) -> int | None:
    """First probed epoch (> 0) from which the training error is 0 at every later probe (None if
    the last probe still errs)."""
    probed = run[run["train_error"].notna() & (run["epoch"] > 0)].sort_values("epoch")
    onset = None
    for e, err in zip(probed["epoch"], probed["train_error"]):
        if err == 0:
            onset = int(e) if onset is None else onset
        else:
            onset = None
    return onset


def loglog_slope(epochs, values) -> dict:
    """Least-squares slope of log10 value on log10 epoch over the positive values, with the number
    of points (None below 3 points: two points always fit)."""
    e = np.asarray(epochs, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (v > 0) & (e > 0)
    if ok.sum() < 3 or np.ptp(np.log10(e[ok])) == 0:
        return {"slope": None, "points": int(ok.sum())}
    slope = np.polyfit(np.log10(e[ok]), np.log10(v[ok]), 1)[0]
    return {"slope": float(slope), "points": int(ok.sum())}


def run_phase(run: pd.DataFrame, tail: float) -> tuple[pd.DataFrame, int | None, bool]:
    """(the probes of the phase slopes are fitted over, onset, whether it is the terminal phase)."""
    probed = run[run["train_error"].notna() & (run["epoch"] > 0)].sort_values("epoch")
    onset = tpt_onset(run)
    if onset is not None and (probed["epoch"] >= onset).sum() >= 3:
        return probed[probed["epoch"] >= onset], onset, True
    last = probed["epoch"].max()
    start = last ** (1 - tail) if last > 0 else 0                # the last `tail` of log epoch
    return probed[probed["epoch"] >= start], onset, False


def analyze(table: pd.DataFrame, manifest: dict) -> dict:
    w = with_errors(wide(table))
    if KEY not in w.columns or "train_error" not in w.columns:
        raise NclabError("tpt analysis: the records need train.loss and the train/acc probe")
    tail = float(manifest.get("settings", {}).get("tail", 1 / 3))
    stats = [(k, lab) for k, lab in STATISTICS if k in w.columns]
    per_run, summary_losses = [], {}
    for loss, wl in w.groupby(KEY, sort=False):
        runs = []
        for run, r in wl.groupby("run", sort=False):
            phase, onset, terminal = run_phase(r, tail)
            last = r[r["train_error"].notna()].sort_values("epoch").iloc[-1]
            entry = {"run": run, "seed": int(r["seed"].iloc[0]), "onset": onset, "terminal_phase": terminal,
                     "phase_epochs": [int(phase["epoch"].min()), int(phase["epoch"].max())] if len(phase) else None,
                     "end": {k: _num(last.get(k)) for k, _ in stats},
                     "slope": {k: loglog_slope(phase["epoch"], phase[k])["slope"] for k, _ in stats}}
            runs.append(entry)
        per_run += [{"loss": loss, **e} for e in runs]
        summary_losses[loss] = {
            "runs": len(runs), "terminal_phase_reached": sum(e["terminal_phase"] for e in runs),
            "onset": seed_interval([e["onset"] for e in runs if e["onset"] is not None]),
            "end": {k: seed_interval([e["end"][k] for e in runs if e["end"][k] is not None]) for k, _ in stats},
            "slope": {k: seed_interval([e["slope"][k] for e in runs if e["slope"][k] is not None]) for k, _ in stats}}
    losses = list(summary_losses)
    rows = []
    for k, lab in stats:
        row = [lab]
        for loss in losses:
            s = summary_losses[loss]
            row += [fmt_interval(s["end"][k], digits=4), fmt_interval(s["slope"][k], digits=2)]
        rows.append(row)
    columns = ["statistic"] + [c for loss in losses for c in (f"{loss}: end value", f"{loss}: log-log slope")]
    onsets = "; ".join(f"{loss}: {summary_losses[loss]['terminal_phase_reached']} of {summary_losses[loss]['runs']} "
                       f"runs reach zero training error (onset epoch {fmt_interval(summary_losses[loss]['onset'], digits=0)})"
                       for loss in losses)
    tables = [{"title": "Terminal phase: end values and log-log slopes per loss",
               "columns": columns, "rows": rows,
               "caption": "End value: the last probe. Slope: least-squares slope of log10(statistic) on "
                          "log10(epoch) over the terminal phase (the probes from the first epoch with zero "
                          "training error on; a run that never gets there: its last third in log epoch). "
                          f"Mean ± Student-t 95% interval over seeds. {onsets}."},
              {"title": "Terminal phase per run", "columns": ["loss", "seed", "onset epoch", "slopes fitted over",
                                                              "end NC1", "slope NC1", "end train error"],
               "rows": [[e["loss"], e["seed"], "not reached" if e["onset"] is None else e["onset"],
                         (f"epochs {e['phase_epochs'][0]}-{e['phase_epochs'][1]}"
                          + ("" if e["terminal_phase"] else " (no terminal phase)")) if e["phase_epochs"] else "",
                         _fmt(e["end"].get("train/nc1")), _fmt(e["slope"].get("train/nc1"), 3),
                         _fmt(e["end"].get("train_error"))] for e in per_run],
               "caption": "Onset: first probed epoch from which every probe has zero training error."}]
    counts = ", ".join(f"{len(v)} {k}" for k, v in _by_loss(per_run).items())
    summary = {"runs": f"{len(per_run)} ({counts})"}
    for loss, s in summary_losses.items():
        summary[f"terminal phase, {loss}"] = (f"{s['terminal_phase_reached']} of {s['runs']} runs reach zero training "
                                              f"error; onset epoch {fmt_interval(s['onset'], digits=0)}")
        for k in ("train/nc1", "train/nc2_etf_error", "train/nc3", "train/nc4"):
            if k in s["slope"]:
                summary[f"{loss}: {k} end, slope"] = (f"{fmt_interval(s['end'][k], digits=4)}; "
                                                      f"{fmt_interval(s['slope'][k], digits=2)}")
    return {"summary": summary, "losses": summary_losses, "per_run": per_run, "tail": tail, "tables": tables}


def _num(v) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _fmt(v, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}g}"


def _by_loss(per_run: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in per_run:
        out.setdefault(e["loss"], []).append(e)
    return out
