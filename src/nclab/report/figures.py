"""The report's figures, drawn from :class:`~nclab.report.data.ReportData` with matplotlib (Agg,
object API: no pyplot state). Each figure function returns the figures its keys allow (none
when the records lack them); nothing is specific to one experiment.

Epoch axes are logarithmic in epoch + 1, so epoch 0 (initialisation) sits at 1. With several
seeds per point a line is the mean over seeds and its band the 95% Student-t interval of that
mean; with one run, few-shot bands are the 95% interval over the episodes.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from nclab.experiments.stats import seed_interval, spearman
from nclab.report.data import SPLITS, ReportData

SPLIT_COLOURS = {"train": "#1f77b4", "test": "#ff7f0e", "val": "#2ca02c", "novel": "#d62728"}
CYCLE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
         "#bcbd22", "#17becf"]
EPOCH_LABEL = "epoch + 1 (log scale; 1 = initialisation)"
DPI = 110


@dataclass
class ReportFigure:
    """A rendered figure: file stem, title, caption and PNG bytes; ``correlations`` are the
    Spearman correlations it shows (rows of the report's correlation table)."""

    name: str
    title: str
    caption: str
    png: bytes
    correlations: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "caption": self.caption,
                "correlations": list(self.correlations)}


@dataclass
class Line:
    """A metric drawn against epoch; ``light_key`` is drawn beside it, thinner and dashed in the
    same colour (the plug-in CDNV beside the debiased one); ``ci_key`` gives the band of a single
    run (the few-shot interval over episodes)."""

    key: str
    label: str
    colour: str | None = None
    light_key: str | None = None
    ci_key: str | None = None


@dataclass
class Panel:
    title: str
    lines: list[Line]
    ylabel: str = ""
    ylog: bool = False


# --- shared drawing -----------------------------------------------------------------------------

def _new_figure(n_panels: int, ncols: int = 3, width: float = 4.3, height: float = 3.3, sharey: bool = False):
    """A figure of ``n_panels`` axes, ``width`` x ``height`` inches each (margins included)."""
    if n_panels == 1:                     # a figure of one panel is read on its own: larger
        width, height = max(width, 6.4), max(height, 4.6)
    ncols = 2 if n_panels == 4 and ncols == 3 else min(ncols, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def _render(fig, title: str, legend_rows: int = 0, xticks_extra: float = 0.0) -> bytes:
    """Title, margins and PNG bytes. Margins and gaps are fixed in inches (room for a title, axis
    labels and tick labels, and the legend rows under the panels): matplotlib's constrained
    layout would find them too, at twice the drawing time of the whole figure.
    ``xticks_extra``: inches more under each panel (rotated tick labels)."""
    fig.suptitle(title, y=1 - 0.12 / fig.get_size_inches()[1])
    legend = 0.25 * legend_rows + (0.15 if legend_rows else 0)
    w, h = fig.get_size_inches()
    h += legend
    fig.set_size_inches(w, h)
    nrows, ncols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    left, right, top, bottom = 0.8, 0.2, 0.6, 0.55 + xticks_extra + legend
    gap_w, gap_h = 0.8, 0.85 + xticks_extra
    ax_w = (w - left - right - (ncols - 1) * gap_w) / ncols
    ax_h = (h - top - bottom - (nrows - 1) * gap_h) / nrows
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h,
                        wspace=gap_w / ax_w, hspace=gap_h / ax_h)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


class _LogTicks(LogLocator):
    """Log-axis ticks dense enough to read any range: 10^k over many decades, 1-2-5 or 1-2-3-5
    over a few, and evenly spaced round numbers within less than 0.7 decades (where 1-2-5 can
    leave the axis with one label or none)."""

    def __init__(self, integer: bool = False):
        super().__init__()
        self.integer = integer

    def tick_values(self, vmin, vmax):
        span = abs(math.log10(vmax / vmin)) if vmin > 0 and vmax > 0 else math.inf
        if span < 0.7:
            return MaxNLocator(nbins=4, integer=self.integer).tick_values(vmin, vmax)
        self.set_params(subs=(1.0,) if span > 4 else (1.0, 2.0, 5.0) if span > 1.5 else (1.0, 2.0, 3.0, 5.0))
        return super().tick_values(vmin, vmax)


def _log_axis(ax, axis: str, integer: bool = False) -> None:
    """A log axis labelled in plain numbers (whole numbers only with ``integer``); no minor ticks
    (they cost more drawing time than the rest of a panel)."""
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(_LogTicks(integer))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_locator(NullLocator())


def _y_from_lines(axes: list, ylog: bool) -> None:
    """y limits of ``axes`` (one axis, or panels sharing it) from their lines alone, 5% margin: a
    wide seed band (2 seeds: t = 12.7) runs off the axes instead of flattening its lines."""
    _y_limits(axes, [ln.get_ydata() for ax in axes for ln in ax.get_lines()], ylog)


def _y_limits(axes: list, values: list, ylog: bool) -> None:
    """y limits of ``axes`` that hold ``values`` (arrays), with a 5% margin."""
    ys = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values] or [np.zeros(0)])
    ys = ys[np.isfinite(ys) & ((ys > 0) if ylog else True)]
    if not len(ys):
        return
    lo, hi = ys.min(), ys.max()
    if ylog:
        f = (hi / lo) ** 0.05 if hi > lo else 1.1
        lo, hi = lo / f, hi * f
    else:
        pad = 0.05 * (hi - lo) if hi > lo else 0.05 * abs(hi) or 0.05
        lo, hi = lo - pad, hi + pad
    for ax in axes:
        ax.set_ylim(lo, hi)


def _epoch_axis(ax) -> None:
    _log_axis(ax, "x", integer=True)
    ax.set_xlabel(EPOCH_LABEL)


def _title(ax, text: str, fontsize: float = 10) -> None:
    # an explicit y turns off matplotlib's automatic title placement (a tight-bbox pass per panel)
    ax.set_title(text, fontsize=fontsize, y=1.0)


def _legend_below(fig, axes, extra: list | None = None, ncol: int | None = None) -> int:
    """One legend for the figure, under the panels (never over the data); returns its rows."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    for h in extra or []:
        handles.append(h)
        labels.append(h.get_label())
    if not handles:
        return 0
    # as many columns as the widest entry allows (about 0.065 in per character at 9 pt)
    fits = int((fig.get_size_inches()[0] - 0.4) // (0.55 + 0.065 * max(map(len, labels))))
    ncol = max(1, min(ncol or 4, fits, len(labels)))
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=9,
               frameon=False)
    return math.ceil(len(labels) / ncol)


def group_colours(data: ReportData) -> dict[str, str]:
    """Colours of the groups: a viridis ramp along the grid when groups differ in numbers (or
    are many), the default cycle otherwise."""
    labels = [g.label for g in data.groups]
    if len(labels) > len(CYCLE) or (data.swept() and len(labels) > 2):
        cmap = colormaps["viridis"]
        return {lab: cmap(0.9 * i / max(len(labels) - 1, 1)) for i, lab in enumerate(labels)}
    return {lab: CYCLE[i % len(CYCLE)] for i, lab in enumerate(labels)}


def _positive(df: pd.DataFrame, cols: list[str]) -> tuple[pd.DataFrame, int]:
    """Rows whose ``cols`` are all > 0 (drawable on log axes) and how many were left out."""
    ok = np.logical_and.reduce([df[c] > 0 for c in cols]) if len(df) else np.zeros(0, bool)
    return df[ok], int((~ok).sum())


def _draw_curve(ax, data: ReportData, group: str, line: Line, colour, label: str, ylog: bool) -> int:
    """Mean over the group's seeds against epoch + 1, with the seed band (or the single run's
    ``ci_key`` band) and the light companion; returns the points left out of log axes."""
    dropped = 0
    c = data.curve(group, line.key)
    if c.empty:                               # this group never recorded the metric
        return 0
    if ylog:
        c, dropped = _positive(c, ["mean"])
    x = c["epoch"] + 1
    ax.plot(x, c["mean"], color=colour, lw=1.8, marker="o", ms=3, label=label)
    if (c["n"] > 1).any():
        lo = np.maximum(c["lo"], c["mean"] * 1e-6) if ylog else c["lo"]   # a band below 0: off the bottom of a log axis
        ax.fill_between(x, lo, c["hi"], color=colour, alpha=0.18, lw=0)
    elif line.ci_key and data.has(line.ci_key):
        ci = data.curve(group, line.ci_key).set_index("epoch")["mean"].reindex(c["epoch"]).to_numpy()
        ax.fill_between(x, c["mean"] - ci, c["mean"] + ci, color=colour, alpha=0.18, lw=0)
    if line.light_key and data.has(line.light_key):
        lc = data.curve(group, line.light_key)
        if ylog:
            lc, d = _positive(lc, ["mean"])
            dropped += d
        ax.plot(lc["epoch"] + 1, lc["mean"], color=colour, lw=1.0, ls="--", alpha=0.55)
    return dropped


def seeds_text(data: ReportData) -> str:
    """What a line and its band are, for captions."""
    n = sorted(set(data.runs_per_group()))
    if n == [1]:
        return "One run per line."
    ns = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
    return (f"Lines: mean over the seeds of each point (n = {ns} seeds); bands: 95% Student-t "
            f"interval of that mean, t(0.975, n-1) s / sqrt(n), across seeds (axes are scaled to the "
            f"lines; a wide band runs beyond them).")


def _dropped_text(dropped: int) -> str:
    return f" {dropped} non-positive values are not drawn on the log axes." if dropped else ""


def curves_figure(data: ReportData, name: str, title: str, panels: list[Panel], caption: str,
                  styles: tuple[str, str] | None = None, panel_legends: bool = False) -> list[ReportFigure]:
    """Metrics against epoch. One group: the panels as given, one line per metric. Several
    groups: one panel per metric, one line per group (panels split from one panel share their
    y axis), in one legend for the figure. ``styles`` names the solid and the light dashed line
    of a :class:`Line` with a ``light_key`` in the legend. ``panel_legends``: with one group,
    each panel of several lines gets its own legend (lines that differ from panel to panel)."""
    panels = [Panel(p.title, [ln for ln in p.lines if data.has(ln.key)], p.ylabel, p.ylog) for p in panels]
    panels = [p for p in panels if p.lines]
    if not panels:
        return []
    groups = [g.label for g in data.groups]
    sharey = False
    if len(groups) > 1:
        colours = group_colours(data)
        sharey = len(panels) == 1
        panels = [Panel(p.title if len(p.lines) == 1 else f"{p.title}: {ln.label}", [ln], p.ylabel, p.ylog)
                  for p in panels for ln in p.lines]
    fig, axes = _new_figure(len(panels), sharey=sharey)
    dropped = 0
    for ax, p in zip(axes, panels):
        for i, ln in enumerate(p.lines):
            series = ([(g, colours[g], g) for g in groups] if len(groups) > 1 else
                      [(groups[0], ln.colour or CYCLE[i % len(CYCLE)], ln.label)])
            for g, colour, label in series:
                dropped += _draw_curve(ax, data, g, ln, colour, label, p.ylog)
        _epoch_axis(ax)
        if p.ylog:
            _log_axis(ax, "y")
        if not sharey:
            _y_from_lines([ax], p.ylog)
        if len(panels) > 1:                 # one panel: the figure's title says it
            _title(ax, p.title)
        if not (sharey and ax.get_subplotspec().colspan.start > 0):
            ax.set_ylabel(p.ylabel)
        ax.grid(True, which="major", alpha=0.3)
    if sharey:
        _y_from_lines(axes, panels[0].ylog)
    extra = None
    if styles and any(ln.light_key and data.has(ln.light_key) for p in panels for ln in p.lines):
        extra = [Line2D([], [], color="0.3", lw=1.8, label=styles[0]),
                 Line2D([], [], color="0.3", lw=1.0, ls="--", alpha=0.55, label=styles[1])]
    if panel_legends and len(groups) == 1:
        for ax, p in zip(axes, panels):
            if len(p.lines) > 1:
                ax.legend(fontsize=8, loc="best")
        rows = _legend_below(fig, [], extra)
    else:
        rows = _legend_below(fig, axes, extra)
    caption = f"{caption} x axis: epoch + 1 on a log scale (1 = initialisation, before any step)."
    return [ReportFigure(name, title, f"{caption} {seeds_text(data)}{_dropped_text(dropped)}",
                         _render(fig, title, rows))]


# --- against epoch ------------------------------------------------------------------------------

def training_figure(data: ReportData) -> list[ReportFigure]:
    reg = [k for k in data.metrics if k.startswith("reg_")]
    panels = [Panel("loss", [Line("loss", "training loss")], "loss", ylog=True),
              Panel("accuracy", [Line("train_acc", "train (running, over the epoch's batches)"),
                                 Line("test_acc", "test (held-out samples of the source classes)")], "accuracy"),
              Panel("regulariser terms", [Line(k, k) for k in reg], "value", ylog=True)]
    return curves_figure(data, "training", "Training curves", panels,
                         "Training loss and accuracy of the classifier against epoch.", panel_legends=True)


def cdnv_figure(data: ReportData) -> list[ReportFigure]:
    lines = []
    for s in SPLITS:
        deb, plug = f"{s}/cdnv_debiased", f"{s}/cdnv"
        if data.has(deb):
            lines.append(Line(deb, s, SPLIT_COLOURS[s], light_key=plug))
        elif data.has(plug):
            lines.append(Line(plug, f"{s} (plug-in only)", SPLIT_COLOURS[s]))
    caption = ("CDNV per split against epoch, log-log. Solid: the debiased estimator (unbiased class "
               "variances; squared distance of the class means minus s_i^2/n_i + s_j^2/n_j; pairs whose "
               "corrected distance is not positive left out), the one to compare splits with different "
               "numbers of samples per class. Dashed, light: the plug-in estimator (1/n variances, "
               "distance of the sample means; Galanti et al.'s symmetric form), which reads lower on "
               "splits with few samples per class. Lower = more collapsed.")
    return curves_figure(data, "cdnv", "Class-distance-normalised variance (CDNV) per split",
                         [Panel("CDNV", lines, "CDNV", ylog=True)], caption,
                         styles=("debiased (solid)", "plug-in (dashed)"))


def ncc_figure(data: ReportData) -> list[ReportFigure]:
    lines = [Line(f"{s}/ncc_acc", s, SPLIT_COLOURS[s]) for s in SPLITS]
    return curves_figure(data, "ncc_accuracy", "Nearest-class-mean accuracy per split",
                         [Panel("NCC accuracy", lines, "accuracy")],
                         "Nearest-class-mean (NCC) accuracy against epoch: on test with the train class "
                         "means (test collapse), on the other splits with the split's own class means.")


def fewshot_figure(data: ReportData) -> list[ReportFigure]:
    panels = []
    for s in data.fewshot_settings():
        lines = [Line(s.key(h), h, CYCLE[i % len(CYCLE)], ci_key=s.key(f"{h}_ci95"))
                 for i, h in enumerate(data.heads(s))]
        panels.append(Panel(s.title, lines, "accuracy"))
    single = max(data.runs_per_group()) == 1
    band = " Bands: 95% interval over the episodes (the run's own `_ci95`)." if single else ""
    return curves_figure(data, "fewshot", "Few-shot accuracy against epoch", panels,
                         "Mean k-way n-shot accuracy on the fixed episode set of each split, per head, "
                         f"against epoch.{band}")


def nc_figure(data: ReportData) -> list[ReportFigure]:
    def pair(what: str) -> list[Line]:
        return [Line(f"train/{what}", "class means", CYCLE[0]), Line(f"train/{what}_w", "classifier W", CYCLE[1])]
    panels = [Panel("NC1", [Line("train/nc1", "Tr(S_W S_B^+)/C", CYCLE[0]),
                            Line("train/nc1_quotient", "Tr S_W / Tr S_B", CYCLE[2])], "NC1", ylog=True),
              Panel("NC2 equinorm: std/mean of norms", pair("nc2_equinorm"), "coefficient of variation", ylog=True),
              Panel("NC2 equiangularity: std of cosines", pair("nc2_equiangle"), "std", ylog=True),
              Panel("NC2 max-angle: mean |cos + 1/(C-1)|", pair("nc2_maxangle"), "mean", ylog=True),
              Panel("NC2 ETF error", pair("nc2_etf_error"), "Frobenius error", ylog=True),
              Panel("NC3 self-duality", [Line("train/nc3", "||W/||W|| - M/||M|| ||^2", CYCLE[3])], "NC3", ylog=True),
              Panel("NC4 NCC mismatch", [Line("train/nc4", "fraction network != NCC", CYCLE[4])], "NC4", ylog=True),
              Panel("min class-mean distance", [Line("train/min_mean_distance", "min ||mu_i - mu_j|| / mean ||m_c||",
                                                     CYCLE[5])], "relative distance", ylog=True)]
    return curves_figure(data, "nc_train", "Neural collapse on the training samples (Papyan et al. 2020)", panels,
                         "NC1-NC4 on the (unaugmented) training samples against epoch, log-log as in Papyan "
                         "et al. 2020: NC1 = Tr(Sigma_W Sigma_B^+)/C (and the trace quotient); NC2 equinorm, "
                         "equiangularity, max-angle and ETF error of the centred class means and of the "
                         "classifier rows; NC3 = ||W/||W||_F - M/||M||_F||_F^2; NC4 = fraction of samples where "
                         "the network and the nearest class mean disagree. All go to 0 under collapse; the "
                         "minimum class-mean distance grows.", panel_legends=True)


def gc_figure(data: ReportData) -> list[ReportFigure]:
    panels = [Panel("geometric complexity", [Line(f"{s}/gc", s, SPLIT_COLOURS[s])
                                             for s in SPLITS], "GC", ylog=True),
              Panel("geometric collapse", [Line(f"{s}/geometric_collapse", s, SPLIT_COLOURS[s]) for s in SPLITS],
                    "geometric collapse", ylog=True)]
    return curves_figure(data, "gc", "Geometric complexity of the embedding (Munn et al. 2024)", panels,
                         "GC = mean ||df(x)/dx||_F^2 of the penultimate features, and geometric collapse "
                         "Avg_{i<j} (GC_i + GC_j) / (2 ||mu_i - mu_j||^2), against epoch.")


# --- scatter plots ------------------------------------------------------------------------------

def cdnv_fewshot_figure(data: ReportData) -> list[ReportFigure]:
    """Transfer-split CDNV against few-shot accuracy: one point per (run, probed epoch)."""
    panels = [(s, data.cdnv_key(s.split)) for s in data.fewshot_settings()
              if s.split in ("val", "novel") and data.cdnv_key(s.split) and data.heads(s)]
    if not panels:
        return []
    fig, axes = _new_figure(len(panels))
    corr, dropped = [], 0
    for ax, (s, ck) in zip(axes, panels):
        for i, h in enumerate(data.heads(s)):
            d = data.wide[[ck, s.key(h)]].dropna()
            sp = spearman(d[ck], d[s.key(h)])
            rho, n = sp["rho"], sp["n"]
            d, n_out = _positive(d, [ck])
            dropped += n_out
            corr.append({"x": ck, "y": s.key(h), "over": "runs x probed epochs", "n": n, "rho": rho})
            ax.scatter(d[ck], d[s.key(h)], s=12, alpha=0.6, color=CYCLE[i % len(CYCLE)], edgecolors="none",
                       label=f"{h}: Spearman {'n/a' if rho is None else f'{rho:+.2f}'} (n={n})")
        _log_axis(ax, "x")
        ax.set_xlabel(f"{ck} (log)")
        ax.set_ylabel("few-shot accuracy")
        _title(ax, s.title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    est = "debiased" if all(ck.endswith("_debiased") for _, ck in panels) else "plug-in where no debiased is recorded"
    title = "CDNV against few-shot accuracy"
    caption = (f"Each point is one run at one probed epoch: CDNV of the split ({est}) against the mean "
               f"few-shot accuracy on the same split's episodes. Spearman's rank correlation per head in "
               f"the legend (collapse predicts transfer when it is strongly negative).{_dropped_text(dropped)}")
    return [ReportFigure("cdnv_vs_fewshot", title, caption, _render(fig, title), corr)]


def gc_transfer_figure(data: ReportData) -> list[ReportFigure]:
    """Munn et al. 2024, Fig. 4: final source GC (train/gc) against the final transfer-split
    CDNV and against few-shot accuracy (the most shots, NCC or the first head), one point per
    run and one mean per group with 95% t intervals in both directions; one colour per value of
    a categorical parameter (a gc-sweep's ``knob``), else per group."""
    split = data.transfer_split()
    ck = data.cdnv_key(split) if split else None
    settings = [s for s in data.fewshot_settings() if s.split == split and data.heads(s)]
    if not data.has("train/gc") or ck is None or not settings:
        return []
    s = max(settings, key=lambda x: (x.shot, -x.way))
    head = "ncc" if "ncc" in data.heads(s) else data.heads(s)[0]
    ak = s.key(head)
    runs = data.wide.drop_duplicates("run").set_index("run")
    categorical = [p for p in data.params if not pd.api.types.is_numeric_dtype(runs[p])]
    colour_by = categorical[0] if categorical else "group"
    f = data.finals[["train/gc", ck, ak]].join(runs[[colour_by, "group"]]).dropna(subset=["train/gc"])
    cats = list(dict.fromkeys(f[colour_by].astype(str)))
    colours = {c: CYCLE[i % len(CYCLE)] for i, c in enumerate(cats)}
    fig, axes = _new_figure(2, ncols=2, width=4.8, height=3.8)
    corr = []
    for ax, (yk, ylabel, ylog) in zip(axes, ((ck, f"{ck} (log)", True), (ak, f"{s.title} {head} accuracy", False))):
        d = f[["train/gc", yk, colour_by, "group"]].dropna()
        sp = spearman(d["train/gc"], d[yk])
        corr.append({"x": "final train/gc", "y": f"final {yk}", "over": "runs", "n": sp["n"], "rho": sp["rho"]})
        for c in cats:
            dc = d[d[colour_by].astype(str) == c]
            if dc.empty:
                continue
            ax.scatter(dc["train/gc"], dc[yk], s=14, alpha=0.45, color=colours[c], edgecolors="none")
            # label each setting's mean by the parameters that vary within its colour (a knob's value)
            varying = [p for p in data.params if p != colour_by and runs.loc[dc.index, p].nunique() > 1]
            for label, g in dc.groupby("group", sort=False):
                ix, iy = seed_interval(g["train/gc"]), seed_interval(g[yk])
                ax.errorbar(ix["mean"], iy["mean"], xerr=ix["ci95_t"] or 0, yerr=iy["ci95_t"] or 0, color=colours[c],
                            marker="o", ms=6, capsize=2, elinewidth=0.8, ecolor=(*to_rgb(colours[c]), 0.6))
                if varying:
                    values = [runs.loc[g.index[0], p] for p in varying]
                    text = ", ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values)
                    ax.annotate(text, (ix["mean"], iy["mean"]), xytext=(4, 4), textcoords="offset points", fontsize=7,
                                color=colours[c])
        _log_axis(ax, "x")
        if ylog:
            _log_axis(ax, "y")
        ax.set_xlabel("source GC, train/gc (log)")
        ax.set_ylabel(ylabel)
        _title(ax, f"Spearman {'n/a' if sp['rho'] is None else format(sp['rho'], '+.2f')} over {sp['n']} runs")
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=colours[c], marker="o", ls="none", label=c) for c in cats]
    rows = _legend_below(fig, axes, handles, ncol=min(len(cats), 6))
    title = "Source geometric complexity against novel-class collapse and few-shot accuracy"
    caption = (f"Munn et al. 2024, Fig. 4: each run's final source GC (the embedding's, on training samples) against "
               f"its final {ck} and its {s.title} {head} accuracy. Small dots: runs; large markers: the mean over "
               f"the seeds of each setting with 95% t intervals in both directions, labelled with the parameter "
               f"values that vary within its colour; colour: {colour_by}. The "
               f"paper's claim: lower GC goes with lower CDNV and higher accuracy.")
    return [ReportFigure("gc_vs_transfer", title, caption, _render(fig, title, rows), corr)]


def _short_label(params: dict) -> str:
    """A group's parameter values alone (``cdnv, 1``), unset ones left out: tick labels."""
    vals = [v for v in params.values() if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals) or "all runs"


def category_transfer_figure(data: ReportData) -> list[ReportFigure]:
    """Final transfer-split CDNV against few-shot accuracy (the most shots, NCC or the first head),
    one colour per value of the first categorical parameter (a collapse-reg's ``arm``, a gc-sweep's
    ``knob``): runs, group means with 95% t intervals both ways, and bars of each group's mean
    accuracy and CDNV with their t intervals."""
    split = data.transfer_split()
    ck = data.cdnv_key(split) if split else None
    settings = [s for s in data.fewshot_settings() if s.split == split and data.heads(s)]
    runs = data.wide.drop_duplicates("run").set_index("run")
    categorical = [p for p in data.params if not pd.api.types.is_numeric_dtype(runs[p]) and runs[p].nunique() >= 2]
    if ck is None or not settings or not categorical:
        return []
    cat = categorical[0]
    s = max(settings, key=lambda x: (x.shot, -x.way))
    head = "ncc" if "ncc" in data.heads(s) else data.heads(s)[0]
    ak = s.key(head)
    f = data.finals[[ck, ak]].join(runs[[cat, "group"]]).dropna(subset=[ck, ak])
    cats = list(dict.fromkeys(f[cat].astype(str)))
    colours = {c: CYCLE[i % len(CYCLE)] for i, c in enumerate(cats)}
    groups = [g for g in data.groups if g.label in set(f["group"])]
    fig, axes = _new_figure(3, ncols=3, width=4.6, height=3.8)
    ax = axes[0]
    sp = spearman(f[ck], f[ak])
    for c in cats:
        dc = f[f[cat].astype(str) == c]
        ax.scatter(dc[ck], dc[ak], s=14, alpha=0.45, color=colours[c], edgecolors="none")
    stats = {}
    for g in groups:
        d = f[f["group"] == g.label]
        colour = colours[str(d[cat].iloc[0])]
        ix, iy = seed_interval(d[ck]), seed_interval(d[ak])
        stats[g.label] = (ix, iy, colour)
        ax.errorbar(ix["mean"], iy["mean"], xerr=ix["ci95_t"] or 0, yerr=iy["ci95_t"] or 0, color=colour, marker="o",
                    ms=6, capsize=2, elinewidth=0.8, ecolor=(*to_rgb(colour), 0.6))
        ax.annotate(_short_label(g.params), (ix["mean"], iy["mean"]), xytext=(4, 4), textcoords="offset points",
                    fontsize=7, color=colour)
    _log_axis(ax, "x")
    ax.set_xlabel(f"final {ck} (log)")
    ax.set_ylabel(f"{s.title} {head} accuracy")
    _title(ax, f"Spearman {'n/a' if sp['rho'] is None else format(sp['rho'], '+.2f')} over {sp['n']} runs")
    ax.grid(True, alpha=0.3)
    x = np.arange(len(groups))
    ticks = [_short_label(g.params) for g in groups]
    for ax, which, ylabel in ((axes[1], 1, f"{s.title} {head} accuracy"), (axes[2], 0, f"final {ck}")):
        means = np.array([stats[g.label][which]["mean"] for g in groups], dtype=float)
        half = np.array([stats[g.label][which]["ci95_t"] or 0 for g in groups], dtype=float)
        ax.bar(x, means, yerr=half, color=[stats[g.label][2] for g in groups], alpha=0.85, capsize=3,
               error_kw={"elinewidth": 0.8})
        lo, hi = float(np.nanmin(means - half)), float(np.nanmax(means + half))
        pad = 0.15 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-3
        ax.set_ylim(lo - pad, hi + pad)             # bars start at the data, not at 0: the differences are small
        ax.set_xticks(x, ticks, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        _title(ax, "mean over seeds, 95% t interval")
    handles = [Line2D([], [], color=colours[c], marker="o", ls="none", label=c) for c in cats]
    rows = _legend_below(fig, axes[:1], handles, ncol=min(len(cats), 6))
    title = f"Transfer per {cat}: novel-class collapse against few-shot accuracy"
    caption = (f"Left: each run's final {ck} against its final {s.title} {head} accuracy (small dots), and the mean "
               f"over the seeds of each setting with 95% Student-t intervals in both directions (large markers, "
               f"labelled by the setting's parameters); colour: {cat}. Middle and right: the settings' mean accuracy "
               f"and CDNV with the same intervals (the y axes start near the data, not at 0).")
    corr = [{"x": f"final {ck}", "y": f"final {ak}", "over": "runs", "n": sp["n"], "rho": sp["rho"]}]
    return [ReportFigure(f"{_safe(cat)}_transfer", title, caption, _render(fig, title, rows, xticks_extra=0.45), corr)]


def _log_spaced(grid: np.ndarray) -> bool:
    """Whether a grid is better read on a log axis: all positive and spanning a factor >= 10, or
    closer to evenly spaced in log than in linear terms."""
    v = np.unique(grid.astype(np.float64))
    if len(v) < 2 or v[0] <= 0:
        return False
    if v[-1] / v[0] >= 10:
        return True
    if len(v) < 3:
        return False
    cv = lambda d: d.std() / d.mean()                   # noqa: E731
    return bool(cv(np.diff(np.log(v))) < cv(np.diff(v)))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def param_figures(data: ReportData) -> list[ReportFigure]:
    """Final-epoch value of each headline metric against each swept numeric parameter: mean over
    seeds with the 95% t interval, single runs as crosses, Spearman over runs. Other swept
    parameters that vary independently give one line each."""
    out = []
    runs = data.wide.drop_duplicates("run").set_index("run")
    panels = [k for k in data.headline() if len(data.final(k))]
    for p in data.swept() if panels else []:
        others = [q for q in data.params if q != p and runs.groupby(p)[q].nunique(dropna=False).max() > 1]
        grid = np.unique(pd.to_numeric(runs[p]).to_numpy())
        xlog = _log_spaced(grid)
        line_ids = runs[others].astype(str).agg(", ".join, axis=1) if others else pd.Series("", index=runs.index)
        labels = sorted(set(line_ids), key=list(line_ids).index)
        # a line needs two values of p (one-factor-at-a-time designs hold p fixed on most lines)
        labels = [lab for lab in labels if runs.loc[line_ids == lab, p].nunique() >= 2]
        if not labels:
            continue
        fig, axes = _new_figure(len(panels), ncols=4, width=3.6, height=3.1)
        colours = {lab: CYCLE[i % len(CYCLE)] for i, lab in enumerate(labels)}
        corr = []
        for ax, k in zip(axes, panels):
            f = data.final(k).rename("value").to_frame()
            f["x"] = pd.to_numeric(runs.loc[f.index, p])
            f["line"] = line_ids.loc[f.index]
            shown = []                    # y limits from the runs and the means: 2-seed t intervals are wide
            for lab in labels:
                d = f[f["line"] == lab]
                if d.empty:
                    continue
                stats = [(x, seed_interval(v["value"])) for x, v in d.groupby("x")]
                xs = np.array([x for x, _ in stats])
                mean = np.array([iv["mean"] for _, iv in stats])
                half = np.array([np.nan if iv["ci95_t"] is None else iv["ci95_t"] for _, iv in stats])
                sp = spearman(d["x"], d["value"])
                rho, n = sp["rho"], sp["n"]
                corr.append({"x": p + (f" ({lab})" if lab else ""), "y": f"final {k}", "over": "runs", "n": n,
                             "rho": rho})
                name = (f"{', '.join(others)} = {lab}: " if lab else "") + \
                    f"Spearman {'n/a' if rho is None else f'{rho:+.2f}'}"
                ax.errorbar(xs, mean, yerr=np.where(np.isfinite(half), half, 0), color=colours[lab], marker="o",
                            ms=5, capsize=3, lw=1.5, elinewidth=0.8, ecolor=(*to_rgb(colours[lab]), 0.5), label=name)
                ax.scatter(d["x"], d["value"], s=16, color=colours[lab], alpha=0.7, marker="x", linewidths=1)
                shown += [mean, d["value"]]
            if xlog:
                _log_axis(ax, "x")
                if len(grid) <= 8:                    # label the grid values themselves
                    ax.set_xticks(grid, [f"{v:g}" for v in grid])
            ylog = k.endswith(("cdnv", "cdnv_debiased", "nc1"))
            if ylog:
                _log_axis(ax, "y")
            _y_limits([ax], shown, ylog)
            _title(ax, k, 9)
            ax.set_xlabel(p + (" (log)" if xlog else ""))
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="best", handlelength=1.2)
        title = f"Final-epoch metrics against {p}"
        caption = (f"Value at each run's last recorded epoch against {p}. Large markers: mean over seeds with "
                   f"the 95% Student-t interval across seeds (error bars, which may run beyond the axes; none "
                   f"with one seed); crosses: single runs. Spearman's rank correlation over the runs in each "
                   f"legend. CDNV is the debiased estimator where recorded."
                   + (f" One line per value of {', '.join(others)}." if others else ""))
        out.append(ReportFigure(f"final_vs_{_safe(p)}", title, caption, _render(fig, title), corr))
    return out


def bound_figure(data: ReportData) -> list[ReportFigure]:
    """Galanti's bound term against the measured NCC error, every run, probed epoch and setting."""
    points = data.bound_points()
    if not points:
        return []
    fig, axes = _new_figure(1, width=6.4, height=5.0)
    ax = axes[0]
    lo, hi, dropped = math.inf, 0.0, 0
    for i, (s, d) in enumerate(points):
        above = float((d["term"] > d["error"]).mean()) if len(d) else math.nan
        n = len(d)
        d, n_out = _positive(d, ["error", "term"])
        dropped += n_out
        ax.scatter(d["error"], d["term"], s=14, alpha=0.6, color=CYCLE[i % len(CYCLE)], edgecolors="none",
                   label=f"{s.title}: term > error in {100 * above:.0f}% (n={n})")
        if len(d):
            lo, hi = min(lo, d.min().min()), max(hi, d.max().max())
    if hi > 0:                              # the same range on both axes, so that y = x is the diagonal
        lim = (lo / 1.5, hi * 1.5)
        ax.plot(lim, lim, color="0.3", lw=1, ls="--", label="y = x")
        if hi > 1:
            ax.axhline(1, color="0.6", lw=1, ls=":", label="term = 1 (vacuous above: an error is at most 1)")
        ax.set_xlim(lim)
        ax.set_ylim(lim)
    _log_axis(ax, "x")
    _log_axis(ax, "y")
    ax.set_xlabel("measured NCC error (1 - NCC accuracy; log)")
    ax.set_ylabel("bound term (k-1)(1+1/n) Avg CDNV (log)")
    ax.grid(True, alpha=0.3)
    rows = _legend_below(fig, [ax], ncol=1)
    title = "Galanti et al.'s bound term against the measured NCC error"
    caption = ("Each point: one run, one probed epoch, one way/shot setting: the leading term of Galanti et "
               "al. 2022's bound, (k-1)(1+1/n) Avg CDNV over the episode classes, against the NCC error "
               "measured on the same episodes. Above the dashed line y = x the term bounds the error; the "
               f"legend gives how often it does.{_dropped_text(dropped)}")
    return [ReportFigure("bound", title, caption, _render(fig, title, rows))]


def _pick_epochs(epochs: list[int], most: int = 8) -> list[int]:
    """At most ``most`` of the probed epochs, about evenly spaced in log(epoch + 1), first and last kept."""
    if len(epochs) <= most:
        return epochs
    targets = np.geomspace(epochs[0] + 1, epochs[-1] + 1, most) - 1
    return sorted({min(epochs, key=lambda e: abs(math.log1p(e) - math.log1p(t))) for t in targets})


def stage_figures(data: ReportData) -> list[ReportFigure]:
    """Per-stage NCC accuracy and CDNV of each group, one line per probed epoch."""
    out = []
    splits = [s for s in SPLITS if data.stages(s)]
    if not splits:
        return []
    for gi, g in enumerate(data.groups):
        w = data.group(g.label)
        cells = []
        for s in splits:
            stages = data.stages(s)
            cd = "cdnv_debiased" if any(data.has(f"{s}/stage/{L}/cdnv_debiased") for L in stages) else "cdnv"
            for what in ("ncc_acc", cd):
                keys = [k for L in stages if (k := f"{s}/stage/{L}/{what}") in w.columns]
                if keys and w[keys].notna().any().any():
                    cells.append((s, what, keys))
        if not cells:
            continue
        mean = w.groupby("epoch")[[k for c in cells for k in c[2]]].mean()    # mean over the group's seeds
        probed = [int(e) for e, row in mean.iterrows() if row.notna().any()]
        epochs = _pick_epochs(probed)
        fig, axes = _new_figure(len(cells), ncols=2, width=5.0, height=3.4)
        cmap, norm = colormaps["viridis"], Normalize(math.log1p(epochs[0]), math.log1p(epochs[-1]) + 1e-9)
        for ax, (s, what, keys) in zip(axes, cells):
            for e in epochs:
                ax.plot(range(len(keys)), mean.loc[e, keys].to_numpy(), color=cmap(0.9 * norm(math.log1p(e))),
                        marker="o", ms=3, lw=1.2, label=f"epoch {e}")
            ax.set_xticks(range(len(keys)), [k.split("/", 2)[2].rsplit("/", 1)[0] for k in keys], rotation=30,
                          ha="right", fontsize=8)
            if what != "ncc_acc":
                _log_axis(ax, "y")
            _title(ax, f"{s}: " + {"ncc_acc": "NCC accuracy", "cdnv": "CDNV (plug-in)",
                                    "cdnv_debiased": "CDNV (debiased)"}[what])
            ax.set_xlabel("stage (input -> output)")
            ax.grid(True, alpha=0.3)
        rows = _legend_below(fig, axes, ncol=8)
        longest = max(len(k.split("/", 2)[2].rsplit("/", 1)[0]) for c in cells for k in c[2])
        title = "Per-stage collapse" + (f": {g.label}" if len(data.groups) > 1 else "")
        shown = "" if epochs == probed else f" ({len(epochs)} of the {len(probed)} probed epochs, log-spaced)"
        caption = (f"NCC accuracy and CDNV of the features after each stage of the backbone, one line per "
                   f"probed epoch{shown}. NCC on each split with its own class means. "
                   f"{'Mean over ' + str(len(g.runs)) + ' seeds.' if len(g.runs) > 1 else 'One run.'}")
        out.append(ReportFigure(f"stages_{gi}" if len(data.groups) > 1 else "stages", title, caption,
                                _render(fig, title, rows, xticks_extra=0.03 * longest)))
    return out


FIGURES: list[Callable[[ReportData], list[ReportFigure]]] = [
    training_figure, cdnv_figure, ncc_figure, fewshot_figure, cdnv_fewshot_figure, gc_transfer_figure,
    category_transfer_figure, nc_figure, gc_figure, param_figures, bound_figure, stage_figures]


def all_figures(data: ReportData) -> list[ReportFigure]:
    """Every figure the records allow, in report order (the papers' phenomena first)."""
    from nclab.report.phenomena import minority_collapse_figure, tpt_figure
    return [f for make in [tpt_figure, minority_collapse_figure, *FIGURES] for f in make(data)]
