"""Plain-text tables printed by the commands: collapse statistics, few-shot accuracy, GC."""

from __future__ import annotations

import os
import re

import numpy as np

COLLAPSE_ROWS = [
    ("cdnv", "CDNV (Galanti, symmetric, mean over pairs)"),
    ("cdnv_cov", "CDNV coefficient of variation"),
    ("cdnv_debiased", "CDNV debiased (unbiased var., corrected dist.)"),
    ("cdnv_debiased_excluded", "  pairs left out (corrected distance <= 0)"),
    ("nc1", "NC1 = Tr(Sigma_W Sigma_B^+)/K"),
    ("nc1_quotient", "Tr Sigma_W / Tr Sigma_B"),
    ("nc2_equinorm", "NC2 equinorm CoV (means)"),
    ("nc2_equiangle", "NC2 equiangularity std (means)"),
    ("nc2_maxangle", "NC2 max-angle |cos + 1/(K-1)| (means)"),
    ("nc2_etf_error", "NC2 ETF error (means)"),
    ("min_mean_distance", "min ||mu_i - mu_j|| / mean ||m_c||"),
    ("ncc_accuracy", "NCC accuracy"),
    ("nc2_equinorm_w", "NC2 equinorm CoV (W)"),
    ("nc2_equiangle_w", "NC2 equiangularity std (W)"),
    ("nc2_maxangle_w", "NC2 max-angle (W)"),
    ("nc3", "NC3 ||W/||W|| - M/||M|| ||^2"),
    ("nc3_zhu", "NC3 (Zhu, W M^T vs ETF)"),
    ("nc4", "NC4 NCC vs network mismatch"),
]


def format_collapse(rec, title: str = "") -> str:
    """The rows of a :class:`~nclab.metrics.CollapseRecord` that are present, one per line."""
    d = rec.to_dict()
    lines = [f"{title}: {rec.n_samples} samples, {rec.n_classes} classes, dim {rec.dim}"
             f" (input {rec.dtype}; rank of M {rec.nc1_rank}, tol {rec.nc1_tol:.1e})"]
    if rec.classes_dropped:
        more = " ..." if len(rec.classes_dropped) > 20 else ""
        lines.append(f"  empty classes dropped: {rec.classes_dropped[:20]}{more}")
    if rec.n_coincident_pairs:
        lines.append(f"  WARNING: {rec.n_coincident_pairs} pairs of coincident class means "
                     f"(CDNV undefined), e.g. {rec.coincident_pairs[:5]}")
    width = max(len(label) for _, label in COLLAPSE_ROWS)
    for key, label in COLLAPSE_ROWS:
        if key in d:
            v = d[key]
            lines.append(f"  {label:<{width}}  {'undefined' if v is None else f'{v:.6g}'}")
    return "\n".join(lines)


def format_fewshot(rows: list[dict], bound: list[dict]) -> str:
    """Accuracy rows of :func:`nclab.fewshot` (percent with both intervals), then the bound rows."""
    lines = [f"{'head':<12}{'way':>4}{'shot':>5}{'query':>6}{'episodes':>9}{'acc %':>8}{'± ci95':>8}{'± t95':>8}"]
    for r in rows:
        lines.append(f"{r['head']:<12}{r['way']:>4}{r['shot']:>5}{r['query']:>6}{r['episodes']:>9}"
                     f"{100 * r['mean']:>8.2f}{100 * r['ci95']:>8.2f}{100 * r['ci95_t']:>8.2f}")
    if bound:
        lines.append("")
        lines.append(f"{'way':>4}{'shot':>5}{'avg CDNV':>11}{'bound term':>12}{'NCC error':>11}"
                     "   (Galanti et al. 2022: (k-1)(1+1/n) Avg CDNV)")
        for b in bound:        # avg CDNV None: two classes with equal means, CDNV infinite
            cdnv, term = (("inf", "inf") if b["avg_cdnv"] is None else (f"{b['avg_cdnv']:.4g}", f"{b['bound_term']:.4g}"))
            lines.append(f"{b['way']:>4}{b['shot']:>5}{cdnv:>11}{term:>12}{b['ncc_error']:>11.4f}")
    return "\n".join(lines)


def format_gc(rep, where: str) -> str:
    """A :class:`~nclab.metrics.gc.GCReport`: GC, its spread over classes, geometric collapse, CDNV."""
    g = rep.gc
    how = "exact" if g.exact else f"{g.probes} {g.distribution} probes per sample"
    cg = np.asarray(rep.class_gc)
    lines = [f"geometric complexity of {where} ({g.n_samples} samples, {g.out_dim}-d output, {how})",
             f"  GC                  {g.value:.6g}" + ("" if g.exact else f"  +- {g.se:.2g} (standard error)"),
             f"  per-class GC        min {cg.min():.6g}  median {np.median(cg):.6g}  max {cg.max():.6g}"
             f"  ({len(cg)} classes)",
             f"  geometric collapse  {rep.geometric_collapse:.6g}",
             f"  CDNV                {rep.cdnv:.6g}"]
    return "\n".join(lines)


def format_transfer(ev) -> str:
    """A :class:`~nclab.experiments.transfer.TransferEvaluation`: per (way, shot, head) each run's
    accuracy ± ci95 over episodes, then the mean over runs ± the t-interval over seeds."""
    runs = list(dict.fromkeys(r["run"] for r in ev.rows))
    seeds = {r["run"]: r["seed"] for r in ev.rows}
    cols = [f"seed {seeds[r]}" for r in runs]
    lines = [f"{'way':>4}{'shot':>5}  {'head':<11}{'transform':<11}" + "".join(f"{c:>16}" for c in cols)
             + ("   over seeds (mean ± t95, std)" if len(runs) > 1 else "")]
    cell = {(r["run"], r["way"], r["shot"], r["head"]): r for r in ev.rows}
    for s in ev.summary:
        line = f"{s['way']:>4}{s['shot']:>5}  {s['head']:<11}{s['transform']:<11}"
        for run in runs:
            r = cell[(run, s["way"], s["shot"], s["head"])]
            line += f"{100 * r['mean']:>9.2f} ± {100 * r['ci95']:<4.2f}"
        if s["n_runs"] > 1:
            line += f"   {100 * s['mean']:.2f} ± {100 * s['seed_ci95_t']:.2f}, {100 * s['seed_std']:.2f}"
        lines.append(line)
    return "\n".join(lines)


def format_paired(ev) -> str:
    """``ev.paired`` (:func:`~nclab.experiments.transfer.paired_differences`): per (way, shot, head)
    each run's accuracy minus the reference run's on the same episodes, ± its 95% interval over
    episodes, and on how many episodes it was better / worse."""
    runs = list(dict.fromkeys(p["run"] for p in ev.paired))
    seeds = {r["run"]: r["seed"] for r in ev.rows}
    ref = ev.paired[0]["reference"]
    lines = [f"paired against {ref} (seed {seeds[ref]}), same episodes: accuracy difference in points "
             f"± 95% interval over episodes [episodes better / worse]",
             f"{'way':>4}{'shot':>5}  {'head':<11}"
             + "".join(f"{(os.path.basename(os.path.normpath(r)) + ' s' + str(seeds[r]))[-26:]:>27}" for r in runs)]
    cell = {(p["run"], p["way"], p["shot"], p["head"]): p for p in ev.paired}
    for s in ev.summary:
        line = f"{s['way']:>4}{s['shot']:>5}  {s['head']:<11}"
        for run in runs:
            p = cell[(run, s["way"], s["shot"], s["head"])]
            line += f"{100 * p['diff_mean']:>+11.2f} ± {100 * p['diff_ci95']:<4.2f} [{p['better']:>3} / {p['worse']:<3}]"
        lines.append(line)
    return "\n".join(lines)


def _num(v, spec: str) -> str:
    """``format(v, spec)``; "-" in the same width for an undefined value (a cosine of one row)."""
    if v is not None:
        return format(v, spec)
    return format("-", ">" + re.match(r"[^\d.]*(\d*)", spec).group(1))


def format_ufm(res) -> str:
    """A :class:`~nclab.ufm.UFMResult`: the history at logged iterations, the final collapse table,
    the closed-form minimiser beside the measured norms, and the majority / minority geometry."""
    s = res.settings
    sizes = sorted(set(res.class_sizes), reverse=True)
    lines = [f"UFM: {s['n_classes']} classes ({' / '.join(map(str, sizes))} samples), dim {s['dim']}, "
             f"loss {s['loss']}, lambda_W {s['lambda_W']:g}, lambda_H {s['lambda_H']:g}, "
             f"bias {'on, lambda_b ' + format(s['lambda_b'], 'g') if s['bias'] else 'off'}, head {s['head']}, "
             f"{s['optimizer']} (seed {s['seed']})",
             f"{'iter':>6}{'objective':>13}{'grad norm':>11}{'acc':>7}{'NC1':>11}{'ETF err':>10}{'ETF err W':>11}"
             f"{'NC3':>10}{'mean |w|':>10}"]
    for h in res.history:
        lines.append(f"{h['iteration']:>6}{h['objective']:>13.6g}{h['grad_norm']:>11.2e}{h['train_acc']:>7.3f}"
                     f"{_num(h['nc1'], '11.3e')}{_num(h['nc2_etf_error'], '10.2e')}{_num(h['nc2_etf_error_w'], '11.2e')}"
                     f"{_num(h['nc3'], '10.2e')}{np.mean(h['w_norms']):>10.4f}")
    state = "converged" if res.converged else "NOT converged"
    lines.append(f"{state}: gradient norm {res.grad_norm:.2e} (tol {s['tol']:g}) after {res.iterations} iterations, "
                 f"{res.seconds:.2f} s")
    if res.record is not None:
        lines.append(format_collapse(res.record, "final features"))
    g = res.geometry["all"]
    if res.theory is not None:
        t = res.theory
        lines.append(f"global minimiser ({t['source']}): {t['structure']}, ||w_k|| {t['w_norm']:.8g} "
                     f"(measured mean {g['w_norm']:.8g}), ||h_k|| {t['h_norm']:.8g} (measured {g['h_norm']:.8g})")
    for name in ("majority", "minority"):
        if name in res.geometry:
            q = res.geometry[name]
            lines.append(f"  {name} ({q['classes']} classes): rows |w| {q['w_norm']:.4f} cos {_num(q['w_cos'], '+.4f')}, "
                         f"means |h| {q['h_norm']:.4f} cos {_num(q['h_cos'], '+.4f')}, accuracy {q['accuracy']:.3f}, "
                         f"margin {q['margin']:.3g}")
    return "\n".join(lines)


def format_minority_collapse(res) -> str:
    """A :class:`~nclab.ufm.MinorityCollapseResult`: one line per (R, head)."""
    s = res.settings
    lines = [f"minority collapse in the UFM (Fang et al. 2021): {s['k_major']} majority classes of R x {s['n_minor']}, "
             f"{s['k_minor']} minority classes of {s['n_minor']} samples; bias {'on' if s['bias'] else 'off'}",
             "cos = mean pairwise cosine of classifier rows (w) or class means (h); accuracy on the training features",
             f"{'R':>6} {'head':<8}{'minor cos w':>12}{'minor |w|':>10}{'major cos w':>12}{'major |w|':>10}"
             f"{'minor cos h':>12}{'minor |h|':>10}{'minor acc':>10}{'major acc':>10}{'minor margin':>13}  conv"]
    for r in res.rows:
        lines.append(f"{r['ratio']:>6g} {r['head']:<8}{_num(r['minor_w_cos'], '+12.4f')}{r['minor_w_norm']:>10.4f}"
                     f"{_num(r['major_w_cos'], '+12.4f')}{r['major_w_norm']:>10.4f}{_num(r['minor_h_cos'], '+12.4f')}"
                     f"{r['minor_h_norm']:>10.4f}{r['minor_accuracy']:>10.3f}{r['major_accuracy']:>10.3f}"
                     f"{r['minor_margin']:>13.3g}  {'yes' if r['converged'] else 'NO'}")
    return "\n".join(lines)
