"""``nclab evaluate RUN [RUN ...]``: few-shot transfer of pre-trained runs as the field reports it."""

from __future__ import annotations

import sys
import time

from nclab.errors import NclabError
from nclab.report.tables import format_paired, format_transfer


def parse_transforms(items: list[str] | None):
    """``["l2"]`` -> "l2" for every head; ``["ncc=center+l2", "logistic=l2"]`` -> per head; None: the field's."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        return items[0]
    out = {}
    for it in items:
        if "=" not in it:
            raise NclabError(f"--transform {it!r}: expected one transform for all heads or HEAD=TRANSFORM items")
        h, t = it.split("=", 1)
        out[h.strip()] = t.strip()
    return out


def evaluate_command(args) -> int:
    from nclab.atomic import atomic_write_json
    from nclab.experiments.transfer import evaluate_transfer, paired_differences
    if args.episodes < 2:
        raise NclabError(f"--episodes: a confidence interval needs at least 2 episodes, got {args.episodes}")
    if args.paired and len(set(args.runs)) < 2:
        raise NclabError(f"--paired: expected at least 2 different runs to compare, got {' '.join(args.runs)}")
    t0 = time.perf_counter()
    ev = evaluate_transfer(args.runs, split=args.split, way=args.way, shot=args.shot, query=args.query,
                           episodes=args.episodes, heads=args.head, transforms=parse_transforms(args.transform),
                           seed=args.seed, base_split=args.base_split, tta=args.tta,
                           checkpoint=args.checkpoint, power=args.power,
                           progress=lambda line: print(line, file=sys.stderr))
    print(f"{len(args.runs)} run(s), split {args.split}, {args.episodes} episodes of {args.query} queries per class, "
          f"episode seed {args.seed}" + ("" if args.tta == "none" else f", tta {args.tta}")
          + ("" if args.checkpoint == "final" else f", {args.checkpoint} weights")
          + ("" if args.power is None else f", power transform beta {args.power:g}") + "; accuracy % ± 95% interval")
    print(format_transfer(ev))
    if args.paired:
        paired_differences(ev)
        print(format_paired(ev))
    if args.json_out:
        from nclab import __version__
        atomic_write_json(args.json_out, {**ev.to_dict(), "seconds": round(time.perf_counter() - t0, 3),
                                          "nclab_version": __version__})
    return 0
