"""The report's tables (final-epoch values per run and per point, correlations, the bound, an
experiment's own ``analysis.json`` tables) and their Markdown form.

Numbers are printed with 4 significant digits; a point's cell is ``mean ± h`` with h the
Student-t 95% half-width across its seeds, ``(n=k)`` added where fewer than all its runs have
the metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from nclab.errors import NclabError
from nclab.experiments.stats import seed_interval
from nclab.report.data import ReportData


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    source: str = ""          # where a verbatim table came from (an analysis.json)

    def to_dict(self) -> dict:
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows],
                "caption": self.caption, "source": self.source}


def num(v: float | None) -> str:
    """A value as printed in the tables: 4 significant digits; empty when undefined."""
    if v is None or not math.isfinite(v):
        return ""
    return f"{v:.4g}"


def mean_pm(values) -> str:
    iv = seed_interval(values)
    if iv["n"] == 0:
        return ""
    return num(iv["mean"]) if iv["ci95_t"] is None else f"{num(iv['mean'])} ± {num(iv['ci95_t'])}"


def final_tables(data: ReportData) -> list[Table]:
    """Final-epoch headline metrics per run, and per point (mean ± 95% t interval over seeds)."""
    keys = [k for k in data.headline() if len(data.final(k))]
    if not keys:
        return []
    runs = data.wide.drop_duplicates("run").set_index("run")
    last = data.wide.groupby("run")["epoch"].max()
    per_run = Table("Final epoch, per run", ["run", "seed", *data.params, "epoch", *keys], [],
                    "Each run's value at the last epoch where the metric was recorded (epoch: its last "
                    "record). CDNV: the debiased estimator where recorded.")
    for r in data.runs:
        row = [r.name, "" if r.seed is None else str(r.seed)]
        row += [_cell(runs.loc[r.name, p]) for p in data.params]
        row += [str(int(last[r.name]))]
        row += [num(data.finals.loc[r.name, k]) for k in keys]
        per_run.rows.append(row)
    if len(data.runs) == 1:                  # one run: a column of values reads better than one long row
        (row,) = per_run.rows
        per_run.columns, per_run.rows = ["", row[0]], [[c, v] for c, v in zip(per_run.columns[1:], row[1:])]
        return [per_run]
    per_group = Table("Final epoch, per point", ["point", "n", *keys], [],
                      "Mean over the seeds of each point ± the 95% Student-t half-width "
                      "t(0.975, n-1) s / sqrt(n) (no interval with one seed); n = runs of the point, "
                      "(n=k) where only k of them have the metric.")
    for g in data.groups:
        row = [g.label, str(len(g.runs))]
        for k in keys:
            vals = data.finals.loc[g.runs, k].dropna()
            cell = mean_pm(vals)
            row.append(f"{cell} (n={len(vals)})" if cell and len(vals) < len(g.runs) else cell)
        per_group.rows.append(row)
    return [per_run, per_group]


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:g}" if isinstance(v, float) else str(v)


def correlation_table(correlations: list[dict]) -> list[Table]:
    if not correlations:
        return []
    rows = [[c["x"], c["y"], c["over"], str(c["n"]), "" if c["rho"] is None else f"{c['rho']:+.3f}"]
            for c in correlations]
    return [Table("Rank correlations", ["x", "y", "points", "n", "Spearman rho"], rows,
                  "Spearman's rank correlation of the pairs shown in the figures (empty: fewer than 3 pairs "
                  "or a constant side).")]


def bound_table(data: ReportData) -> list[Table]:
    """How often Galanti's bound term lies above the measured NCC error, per split and setting."""
    rows = []
    for s, d in data.bound_points():
        err, term = d["error"], d["term"]
        ratio = (term / err)[err > 0]
        rows.append([s.split, f"{s.way}", f"{s.shot}", str(len(d)), f"{100 * (term > err).mean():.1f}%",
                     num(ratio.median() if len(ratio) else None), num(err.median()), num(term.median())])
    if not rows:
        return []
    return [Table("Bound term against NCC error", ["split", "way", "shot", "points", "term > error",
                                                   "median term / error", "median error", "median term"], rows,
                  "Every run and probed epoch: the leading term (k-1)(1+1/n) Avg CDNV of Galanti et al. 2022 "
                  "against the NCC error measured on the same episodes.")]


def analysis_tables(data: ReportData) -> list[Table]:
    """The summary and the tables of every experiment's ``analysis.json``, verbatim."""
    tables = []
    for src in dict.fromkeys(r.source for r in data.runs):
        p = src / "analysis.json"
        if not p.is_file():
            continue
        try:
            a = json.loads(p.read_text())
            summary = a.get("summary") or {}
            if summary:
                tables.append(Table(f"Summary of {src.name}", ["key", "value"],
                                    [[str(k), _verbatim(v)] for k, v in summary.items()], "", str(p)))
            for i, t in enumerate(a.get("tables") or []):
                cols = [str(c) for c in t["columns"]]
                rows = [[_verbatim(r.get(c) if isinstance(r, dict) else r[j]) for j, c in enumerate(cols)]
                        for r in t["rows"]]
                tables.append(Table(str(t.get("title", f"table {i + 1}")), cols, rows, str(t.get("caption", "")),
                                    str(p)))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise NclabError(f"{p}: expected {{'summary': {{...}}, 'tables': [{{'title', 'columns', 'rows', "
                             f"'caption'}}]}} ({type(e).__name__}: {e})") from None
    return tables


def _verbatim(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v)


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(t: Table) -> str:
    lines = [f"### {t.title}", ""]
    if t.source:
        lines += [f"_from `{t.source}`_", ""]
    lines.append("| " + " | ".join(_escape(c) for c in t.columns) + " |")
    lines.append("|" + "|".join("---" for _ in t.columns) + "|")
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", t.caption]
    return "\n".join(lines)


def report_markdown(title: str, meta: list[str], tables: list[Table], figures: list) -> str:
    """report.md: the tables, then every figure (``![title](name.png)``) with its caption."""
    out = [f"# {title}", "", *[f"- {m}" for m in meta], "", "## Tables", ""]
    for t in tables:
        out += [to_markdown(t), ""]
    out += ["## Figures", ""]
    for f in figures:
        out += [f"### {f.title}", "", f"![{f.title}]({f.name}.png)", "", f.caption, ""]
    return "\n".join(out)
