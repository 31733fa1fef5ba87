"""``nclab gc RUN_DIR --split S [--exact | --probes K] [--json OUT]``: GC of a run's embedding on one
of its splits, per class, and the geometric collapse beside CDNV."""

from __future__ import annotations

import numpy as np
import torch

from nclab.atomic import atomic_write_json, check_target
from nclab.errors import NclabError
from nclab.metrics.gc import gc_report
from nclab.report.tables import format_gc


def gc_command(args) -> int:
    from nclab.extract import load_run, split_images
    if args.json_out:
        check_target(args.json_out)
    probes = None if args.exact else args.probes
    if probes is not None and probes < 1:
        raise NclabError(f"--probes {probes}: expected a positive number of probes per sample")
    output = "logits" if getattr(args, "logits", False) else "features"
    loaded = load_run(args.run_dir, getattr(args, "checkpoint", "final"))
    images = split_images(loaded, args.split)
    if images.n_classes < 2:
        raise NclabError(f"{args.run_dir}: split {args.split!r} has {images.n_classes} class; "
                         f"geometric collapse needs at least 2")
    model = loaded.model
    param = next(model.parameters())
    x = loaded.preprocess(images.images).to(param.device, param.dtype)
    f = model.features if output == "features" else model
    rep = gc_report(f, x, torch.as_tensor(images.labels), probes, n_classes=images.n_classes,
                    class_names=list(images.class_names), seed=getattr(args, "seed", 0))
    print(format_gc(rep, f"{args.run_dir} {args.split} split ({output}, {loaded.weights} weights)"))
    if args.json_out:
        record = {"run_dir": str(args.run_dir), "split": args.split, "output": output, "weights": loaded.weights,
                  **rep.to_dict()}
        atomic_write_json(args.json_out, record)
        print(f"wrote {args.json_out}")
    return 0
