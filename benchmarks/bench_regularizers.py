"""Cost of a training step under each collapse-reg arm, against CE alone in the same process.

One conv4 step (forward, loss, the arm's extra term, backward, SGD) on a fixed batch of 28 px
glyph-sized random images with 64 classes (the collapse-reg quick profile's shapes), for CE
alone, CE + batch CDNV penalty, CE with a fixed simplex-ETF head, CE + the GC regulariser (one
probe: a double back-propagation), label smoothing, CE + the batch prototypical loss (proto) and
CE + rotation self-supervision (rotation, half the batch turned: one extra forward / backward of
32 images) and CE + distillation from a teacher of the same architecture (distill: one extra
forward in eval mode, no backward).
Steps alternate between the arms in rounds (so load drifts hit every arm alike); the result is
each arm's median step time and its ratio to CE's median.

    python benchmarks/bench_regularizers.py [--rounds 30] [--batch 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from nclab.models import create_model
from nclab.train.regularizers import attach_aux_heads, build_regularizers

ARMS = {"ce": ("linear", [], 0.0), "cdnv": ("linear", [{"cdnv": {"strength": 1.0}}], 0.0),
        "etf": ("etf", [], 0.0), "gc": ("linear", [{"gc": {"alpha": 1e-3, "probes": 1}}], 0.0),
        "ls": ("linear", [], 0.1), "proto": ("linear", [{"proto": {"strength": 1.0}}], 0.0),
        "rotation": ("linear", [{"rotation": {"strength": 1.0, "fraction": 0.5}}], 0.0),
        "distill": ("linear", [{"distill": {"teacher": "(in-process conv4)"}}], 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--classes", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=g)
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    setups = {}
    for name, (head, regs, ls) in ARMS.items():
        torch.manual_seed(0)
        model = create_model("conv4", 1, args.classes, head=head, image_size=28)
        built = build_regularizers(regs)
        attach_aux_heads(model, built)
        for r in built:
            if r.name == "distill":          # a born-again teacher: the same network, other weights
                torch.manual_seed(1)
                r.set_teacher(create_model("conv4", 1, args.classes, head=head, image_size=28))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        setups[name] = (model, opt, built, ls)

    def step(name: str) -> float:
        model, opt, regs, ls = setups[name]
        t = time.perf_counter()
        h, logits = model(x, return_features=True)
        loss = F.cross_entropy(logits, y, label_smoothing=ls)
        for r in regs:
            loss = loss + r(model, x, h, logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    for name in ARMS:                      # warm-up: allocations, oneDNN kernel selection
        for _ in range(3):
            step(name)
    times = {name: [] for name in ARMS}
    for _ in range(args.rounds):
        for name in ARMS:
            times[name].append(step(name))
    print(f"conv4, batch {args.batch} x 1 x 28 x 28, {args.classes} classes, {args.threads} torch thread(s), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; median of {args.rounds} steps per arm")
    ref = statistics.median(times["ce"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:8s} {1000 * m:7.1f} ms/step   x{m / ref:.2f} of CE")


if __name__ == "__main__":
    main()
