"""``nclab measure F.npz | RUN_DIR --split S [--json OUT]``: print the collapse table, write JSON."""

from __future__ import annotations

from nclab.atomic import atomic_write_json, check_target
from nclab.extract import load_feature_source
from nclab.metrics.collapse import measure
from nclab.report.tables import format_collapse


def measure_command(args) -> int:
    if args.json_out:
        check_target(args.json_out)
    fs = load_feature_source(args.source, args.split, getattr(args, "checkpoint", "final"))
    rec = measure(fs.features, fs.labels, fs.W, fs.b, n_classes=fs.n_classes)
    title = args.source + (f" [{args.split}]" if args.split else "")
    if getattr(args, "checkpoint", "final") != "final":
        title += f" ({args.checkpoint} weights)"
    print(format_collapse(rec, title))
    if args.json_out:
        atomic_write_json(args.json_out, rec.to_dict())
        print(f"wrote {args.json_out}")
    return 0
