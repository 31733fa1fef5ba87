"""``build_report(paths, out)``: the report of run, experiment or sweep directories.

    OUT/index.html   one self-contained page: tables and every figure (base64 PNG), captions
    OUT/report.md    the same tables in Markdown, the figures linked
    OUT/*.png        the figures
    OUT/records.csv  the tidy records table the figures and tables are drawn from

Everything is rendered in memory first, then written to a temporary folder that replaces OUT in
one rename: a failure leaves no half-written report, and a new report never mixes with the
figures of an old one. OUT must be new, empty, or an earlier report.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nclab.atomic import ensure_writable_dir, make_temp_dir
from nclab.errors import NclabError
from nclab.experiments.records import tidy_frame
from nclab.report.data import ReportData
from nclab.report.figures import all_figures
from nclab.report.html import report_html
from nclab.report.markdown import analysis_tables, bound_table, correlation_table, final_tables, report_markdown

REPORT_FILES = ("index.html", "report.md", "records.csv")


@dataclass
class ReportResult:
    out: Path
    n_runs: int
    n_groups: int
    figures: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"out": str(self.out), "n_runs": self.n_runs, "n_groups": self.n_groups,
                "figures": list(self.figures), "tables": list(self.tables), "seconds": round(self.seconds, 3)}


def _check_out(out: Path) -> None:
    """OUT may be new, an empty folder, or an earlier report (only files a report writes)."""
    if out.exists() and not out.is_dir():
        raise NclabError(f"{out}: exists and is not a directory (--out names the report folder)")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir()
                   if not (p.is_file() and (p.name in REPORT_FILES or p.suffix == ".png"))]
        if foreign:
            raise NclabError(f"{out}: folder holds {foreign[0]!r}, which is not part of an nclab report; "
                             f"choose another --out (a report replaces its whole folder)")
        if any(out.iterdir()) and not (out / "index.html").is_file():
            raise NclabError(f"{out}: folder is not empty and holds no index.html; choose another --out")


def build_report(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> ReportResult:
    """Write the report of ``paths`` (run, experiment or sweep directories) to ``out`` (default:
    ``<first path>/report``)."""
    t0 = time.perf_counter()
    if not paths:
        raise NclabError("report: expected at least one run, experiment or sweep directory")
    out = Path(out) if out is not None else Path(paths[0]) / "report"
    _check_out(out)
    data = ReportData(paths)
    verbatim = analysis_tables(data)            # read first: a bad analysis.json fails before any drawing
    figures = all_figures(data)
    tables = (verbatim + final_tables(data) + bound_table(data)
              + correlation_table([c for f in figures for c in f.correlations]))
    names = ", ".join(Path(p).name or str(p) for p in paths)
    title = f"nclab report: {names}"
    meta = _meta(data, paths)
    files = {"index.html": report_html(title, meta, tables, figures).encode("utf-8"),
             "report.md": report_markdown(title, meta, tables, figures).encode("utf-8"),
             "records.csv": tidy_frame(data.wide.drop(columns="group")).to_csv(index=False).encode("utf-8")}
    files.update({f"{f.name}.png": f.png for f in figures})
    _publish(out, files)
    return ReportResult(out, len(data.runs), len(data.groups), [f.name for f in figures], [t.title for t in tables],
                        time.perf_counter() - t0)


def _meta(data: ReportData, paths: Sequence[str | os.PathLike]) -> list[str]:
    """The lines under the report's title: inputs, runs and points, records, unfinished runs."""
    seeds = sorted(set(data.runs_per_group()))
    per_point = "" if seeds == [1] else f", {seeds[0]}{'' if len(seeds) == 1 else f'-{seeds[-1]}'} seed(s) per point"
    unfinished = [r.name for r in data.runs if not (r.path / "summary.json").is_file()]
    meta = [f"inputs: {', '.join(str(p) for p in paths)}",
            f"{len(data.runs)} run(s) in {len(data.groups)} point(s){per_point}",
            f"{len(data.wide)} records, epochs {int(data.wide['epoch'].min())}-{int(data.wide['epoch'].max())}",
            "records.csv: the tidy table (run, seed, parameters, epoch, step, metric, value) everything here "
            "is drawn from",
            f"written {time.strftime('%Y-%m-%d %H:%M:%S')} by nclab {_version()}"]
    if unfinished:
        meta.insert(3, f"{len(unfinished)} run(s) still training or interrupted (no summary.json; their last "
                       f"record is used): {', '.join(unfinished[:5])}{' ...' if len(unfinished) > 5 else ''}")
    return meta


def _version() -> str:
    from nclab import __version__
    return __version__


def _publish(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a fresh folder next to ``out`` and swap it in."""
    parent = ensure_writable_dir(out.parent if str(out.parent) else ".")
    tmp = make_temp_dir(parent, out.name)
    old = None
    try:
        for name, content in files.items():
            (tmp / name).write_bytes(content)
        if out.is_dir():
            old = make_temp_dir(parent, out.name + ".old")
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old / out.name, out)              # put the earlier report back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
