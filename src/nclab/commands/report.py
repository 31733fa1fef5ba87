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
