"""``nclab ufm``: minimise the unconstrained features model and print its collapse; or, with
``--minority-collapse``, sweep the imbalance ratio for a learned and a fixed simplex-ETF head."""

from __future__ import annotations

from pathlib import Path

from nclab.atomic import atomic_write_json
from nclab.errors import NclabError
from nclab.report.tables import format_minority_collapse, format_ufm
from nclab.ufm import RATIOS, imbalanced_sizes, minority_collapse, simulate


def ufm_command(args) -> int:
    if args.json_out and Path(args.json_out).is_dir():
        raise NclabError(f"--json {args.json_out}: is a folder; expected a file name")
    if args.imbalance is not None and args.minority_collapse is not None:
        raise NclabError("--imbalance R runs one imbalanced model, --minority-collapse sweeps R: give one of them")
    K = args.classes
    imbalanced = args.imbalance is not None or args.minority_collapse is not None
    if args.majority is not None and not imbalanced:
        raise NclabError("--majority: only with --imbalance R or --minority-collapse")
    k_major = K // 2 if args.majority is None else args.majority
    if imbalanced and not 1 <= k_major < K:
        raise NclabError(f"--majority {k_major}: expected 1 .. {K - 1} majority classes of {K}")
    options = dict(dim=args.dim, loss=args.loss, lambda_W=args.lambda_w, lambda_H=args.lambda_h,
                   lambda_b=args.lambda_b, etf_scale=args.etf_scale, optimizer=args.optimizer, lr=args.lr,
                   max_iter=args.max_iter, tol=args.tol, seed=args.seed, records=args.records)
    if args.minority_collapse is not None:
        # no bias unless asked: the layer-peeled model of Fang et al. has none
        res = minority_collapse(args.minority_collapse or RATIOS, k_major=k_major, k_minor=K - k_major,
                                n_minor=1 if args.per_class is None else args.per_class, bias=bool(args.bias),
                                **options)
        print(format_minority_collapse(res))
    else:
        n = 20 if args.per_class is None else args.per_class
        sizes = n
        if args.imbalance is not None:
            r = args.imbalance
            if not (r >= 1 and (r * n) == int(r * n)):
                raise NclabError(f"--imbalance {r:g}: expected R >= 1 with R x --per-class ({n}) a whole number")
            sizes = imbalanced_sizes(k_major, int(r * n), K - k_major, n)
        res = simulate(K, n_per_class=sizes, head=args.head, bias=args.bias is not False, **options)
        print(format_ufm(res))
    if args.json_out:
        atomic_write_json(args.json_out, res.to_dict())
        print(f"wrote {args.json_out}")
    return 0
