"""Geometric complexity: 8-probe estimate vs exact GC (accuracy, speed-up), and the cost of a
training step with the 1-probe GC regulariser relative to a plain step.

    python benchmarks/bench_gc.py [--images 1000] [--resnet12-exact-images 128] [--json OUT]

Embedding = ``model.features`` of conv4 (64-d on 28x28) and resnet12 (640-d), BN running
statistics calibrated on the images. Exact and estimate are timed on the same images in the
same run; the speed-up is exact time / median estimate time. The exact resnet12 value costs
640 backward passes per image, so by default it is computed on the first 128 images (the
estimate is compared on the same 128) and the 8-probe estimate is also timed on all images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch import nn

from nclab.metrics.gc import geometric_complexity
from nclab.train.regularizers import GCRegularizer
from nclab.models import create_model


def glyph_images(n: int, omniglot_root: str) -> tuple[torch.Tensor, np.ndarray, str]:
    """n preprocessed source-class images: the built-in glyphs, else Omniglot (if ``omniglot_root``
    holds it), else random 28x28 images; the description says which and why."""
    from nclab.config import DataConfig
    from nclab.data import load_dataset
    from nclab.data.transforms import Preprocess
    why = []
    for cfg in (DataConfig(), DataConfig(name="omniglot", root=omniglot_root)):
        try:
            ds = load_dataset(cfg)
        except Exception as e:                          # noqa: BLE001 - the fallback is reported in the output
            why.append(f"{cfg.name}: {e}")
            continue
        src = ds.class_set("source")
        idx = np.sort(np.random.default_rng(0).permutation(len(src))[:n])
        pre = Preprocess.fit(src.images)
        return pre(src.images[idx]), src.labels[idx], f"{cfg.name} ({len(idx)} source images, {src.image_shape})"
    g = torch.Generator().manual_seed(0)
    return torch.randn((n, 1, 28, 28), generator=g), np.zeros(n, dtype=np.int64), f"random 28x28 ({'; '.join(why)})"


def calibrated(name: str, x: torch.Tensor, classes: int) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, n_classes=classes)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None                           # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 128):
            model.features(x[i:i + 128])
    return model.eval()


def timed(fn, repeats: int) -> tuple[list, float]:
    out, times = [], []
    for r in range(repeats):
        t = time.perf_counter()
        out.append(fn(r))
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def estimate_vs_exact(model: nn.Module, x: torch.Tensor, probes: int, repeats: int) -> dict:
    f = model.features
    (exact,), t_exact = timed(lambda r: geometric_complexity(f, x), 1)
    ests, t_est = timed(lambda r: geometric_complexity(f, x, probes=probes, seed=r), repeats)
    errors = [abs(e.value - exact.value) / exact.value for e in ests]
    return {"images": len(x), "out_dim": exact.out_dim, "exact": exact.value,
            "estimates": [e.value for e in ests], "estimate_se": [e.se for e in ests],
            "rel_error_median": statistics.median(errors), "rel_error_max": max(errors),
            "exact_seconds": t_exact, "estimate_seconds_median": t_est, "speedup": t_exact / t_est}


def train_step_cost(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int) -> dict:
    reg = GCRegularizer(alpha=1e-6, probes=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step(i: int, with_reg: bool) -> None:
        idx = torch.arange(i * batch, (i + 1) * batch) % len(x)
        h = model.features(x[idx])
        logits = model.head(h)
        loss = nn.functional.cross_entropy(logits, y[idx])
        if with_reg:
            loss = loss + reg(model, x[idx], h, logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {False: [], True: []}
    for i in range(steps + 1):                          # interleaved, first pair is warm-up
        for with_reg in (False, True):
            t = time.perf_counter()
            step(i, with_reg)
            if i:
                times[with_reg].append(time.perf_counter() - t)
    plain, regd = statistics.median(times[False]), statistics.median(times[True])
    return {"batch": batch, "steps": steps, "plain_seconds_median": plain, "gc_reg_seconds_median": regd,
            "ratio": regd / plain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--resnet12-exact-images", type=int, default=128)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--omniglot-root", default="../shared/data/omniglot", help="fallback data if glyphs are absent")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, labels, source = glyph_images(args.images, args.omniglot_root)
    y = torch.as_tensor(np.unique(labels, return_inverse=True)[1])
    classes = int(y.max()) + 1
    print(f"data: {source}; threads {args.threads}")
    results = {"data": source, "threads": args.threads, "models": {}}
    for name in ("conv4", "resnet12"):
        model = calibrated(name, x, classes)
        n_exact = len(x) if name == "conv4" else min(len(x), args.resnet12_exact_images)
        r = {"vs_exact": estimate_vs_exact(model, x[:n_exact], args.probes, args.repeats)}
        v = r["vs_exact"]
        print(f"{name}: {v['out_dim']}-d, {n_exact} images: exact GC {v['exact']:.5g} in {v['exact_seconds']:.1f}s; "
              f"{args.probes}-probe estimates {', '.join(f'{e:.5g}' for e in v['estimates'])} "
              f"(median rel. error {v['rel_error_median']:.2%}, max {v['rel_error_max']:.2%}) "
              f"in {v['estimate_seconds_median']:.2f}s median: speed-up {v['speedup']:.1f}x")
        if n_exact < len(x):
            ests, t = timed(lambda s: geometric_complexity(model.features, x, probes=args.probes, seed=s),
                            args.repeats)
            r["estimate_all"] = {"images": len(x), "values": [e.value for e in ests], "se": [e.se for e in ests],
                                 "seconds_median": t}
            print(f"{name}: {args.probes}-probe estimate on all {len(x)} images: "
                  f"{ests[0].value:.5g} +- {ests[0].se:.2g} in {t:.1f}s median")
        r["train_step"] = train_step_cost(model, x, y, args.batch, args.steps)
        ts = r["train_step"]
        print(f"{name}: train step (batch {args.batch}) plain {ts['plain_seconds_median']:.3f}s, with 1-probe GC "
              f"regulariser {ts['gc_reg_seconds_median']:.3f}s: ratio {ts['ratio']:.2f}x")
        results["models"][name] = r
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
