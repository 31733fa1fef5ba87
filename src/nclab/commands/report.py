"""``nclab report DIR [DIR ...] [--out DIR]``: figures, tables and one self-contained HTML page of
run, experiment or sweep directories."""

from __future__ import annotations


def report_command(args) -> int:
    from nclab.report.build import build_report
    res = build_report(args.dirs, out=args.out)
    print(f"report of {res.n_runs} run(s) in {res.n_groups} point(s): {len(res.figures)} figure(s), "
          f"{len(res.tables)} table(s) in {res.seconds:.1f} s")
    for name in res.figures:
        print(f"  {res.out / (name + '.png')}")
    print(f"  {res.out / 'report.md'}")
    print(f"  {res.out / 'records.csv'}")
    print(f"open {res.out / 'index.html'} (self-contained: figures embedded)")
    return 0


def report_after(path) -> None:
    """The report of a finished quickstart run or experiment, into ``path/report``. The runs are
    what matters: a report that cannot be drawn is a one-line warning and ``nclab report`` again."""
    import sys

    from nclab.errors import NclabError
    from nclab.report.build import build_report
    try:
        res = build_report([path])
    except NclabError as e:
        print(f"nclab: warning: no report ({e}); the runs are complete: `nclab report {path}` retries",
              file=sys.stderr)
        return
    print(f"report: {len(res.figures)} figure(s), {len(res.tables)} table(s); open {res.out / 'index.html'}")
