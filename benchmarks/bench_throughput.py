"""Training throughput: nclab's Fabric loop vs a minimal plain PyTorch loop, same process.

Cases (``--case``): ``conv4-28`` (glyphs source train split, 28 px gray, batch 128),
``conv4-32`` (tiny-imagenet-32, 40 source classes, 32 px RGB, batch 128) and ``resnet12-32``
(tiny-imagenet-32, 8 source classes, 32 px RGB, batch 64); the tiny-imagenet cases need
``--tiny DIR`` (default ../shared/data/tiny-imagenet-32) and are skipped without it.

Same model, data, batch size, optimiser and work per epoch: the plain loop indexes
pre-normalised in-memory tensors with a random permutation and does forward / cross-entropy /
backward / SGD step, then (as nclab's loop does every epoch) measures accuracy on the held-out
source-test split; nclab's time is the sum of its per-epoch ``seconds`` (seeded batches,
uint8 -> float per batch, float64 running sums, a checkpoint at every epoch end). Each is run
as is (fp32, contiguous) and on the CPU fast path (bf16 autocast + channels_last: nclab's
``trainer.precision=bf16-mixed trainer.channels_last=true``). Repeats alternate all four and
report medians and ratios. ``--profile`` instead times the phases of nclab's step (batch
assembly, augmentation, forward, backward, optimiser) and prints torch.profiler's top operators.

    python benchmarks/bench_train.py [--case conv4-28 conv4-32 resnet12-32] [--epochs 1] [--repeats 3]
                                     [--threads 2] [--augment] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nclab.config import load_config
from nclab.data.loader import AugmentedImages, augment_from_config, train_loader
from nclab.data.prepare import prepare_data
from nclab.data.transforms import Preprocess
from nclab.models import create_model
from nclab.train.run import start_run

FAST = ["trainer.precision=bf16-mixed", "trainer.channels_last=true"]


def case_overrides(case: str, tiny: Path) -> list[str] | None:
    if case == "conv4-28":
        return ["data.name=glyphs", "model.backbone=conv4", "train.batch_size=128", "data.shift=2"]
    if not (tiny / "tiny-imagenet-32.zip").exists():
        return None
    data = [f"data.name=folder", f"data.root={tiny / 'tiny-imagenet-32.zip'}", f"data.split={tiny / 'splits.csv'}",
            "data.shift=4"]
    if case == "conv4-32":
        return data + ["data.source_classes=40", "model.backbone=conv4", "train.batch_size=128"]
    if case == "resnet12-32":
        return data + ["data.source_classes=8", "model.backbone=resnet12", "train.batch_size=64"]
    raise SystemExit(f"unknown case {case}")


def plain_loop(cfg, train, test, epochs: int, fast: bool, seed: int) -> float:
    torch.manual_seed(seed)
    pre = Preprocess.fit(train.images)
    fmt = torch.channels_last if fast else torch.contiguous_format
    x_all, x_test = pre(train.images).contiguous(memory_format=fmt), pre(test.images).contiguous(memory_format=fmt)
    y_all, y_test = torch.as_tensor(train.labels), torch.as_tensor(test.labels)
    model = create_model(cfg.model.backbone, in_channels=pre.channels, n_classes=train.n_classes,
                         image_size=pre.image_size).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast)
    batch = cfg.train.batch_size
    model.train()
    t = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(y_all))
        for i in range(len(y_all) // batch):
            idx = perm[i * batch:(i + 1) * batch]
            with autocast:
                logits = model(x_all[idx])
            loss = torch.nn.functional.cross_entropy(logits.float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), autocast:
            _ = sum(int((model(x_test[i:i + 512]).argmax(1) == y_test[i:i + 512]).sum())
                    for i in range(0, len(y_test), 512))
        model.train()
    return time.perf_counter() - t


def nclab_loop(overrides: list[str], out: Path) -> float:
    run = start_run(None, overrides, out=out)
    return sum(r["seconds"] for r in run.records())


def profile(overrides: list[str], steps: int) -> None:
    """Seconds per phase of nclab's step, then torch.profiler's top operators (self CPU time)."""
    cfg = load_config(None, overrides)
    data = prepare_data(cfg.data)
    tr = data.splits["train"]
    pre = Preprocess.fit(tr.images)
    fast = cfg.trainer.channels_last
    fmt = torch.channels_last if fast else torch.contiguous_format
    torch.manual_seed(0)
    model = create_model(cfg.model.backbone, in_channels=pre.channels, n_classes=tr.n_classes,
                         image_size=pre.image_size).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    images, labels = pre.to_chw(tr.images), torch.as_tensor(tr.labels)
    aug = augment_from_config(cfg.data, data.flip)
    plain = iter(train_loader(AugmentedImages(images, labels, pre, None), cfg.train.batch_size, 0, 0))
    augmented = iter(train_loader(AugmentedImages(images, labels, pre, aug), cfg.train.batch_size, 0, 0))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16-mixed")
    phases = dict.fromkeys(["batch", "augmentation", "forward", "backward", "optimiser"], 0.0)

    def step(record: bool):
        t0 = time.perf_counter()
        next(plain)                                          # the batch without augmentation
        t1 = time.perf_counter()
        x, y = next(augmented)                               # the same batch, augmented
        x = x.contiguous(memory_format=fmt)
        t2 = time.perf_counter()
        with autocast:
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        if record:
            for k, a, b in zip(phases, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
                phases[k] += b - a
    for _ in range(3):
        step(False)
    for _ in range(steps):
        step(True)
    batch_time = phases["batch"]
    phases["augmentation"] -= batch_time                     # the augmented batch minus the plain one
    total = sum(phases.values())
    n = steps * cfg.train.batch_size
    print(f"  {n / total:.0f} img/s over {steps} steps; share of step time: "
          + ", ".join(f"{k} {v / total:.1%}" for k, v in phases.items()))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(max(2, steps // 4)):
            step(False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs="+", default=["conv4-28", "conv4-32", "resnet12-32"])
    ap.add_argument("--tiny", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny-imagenet-32")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both loops (default: torch's)")
    ap.add_argument("--augment", action="store_true", help="nclab with its augmentation (the plain loop has none)")
    ap.add_argument("--profile", action="store_true", help="phase times and top operators of nclab's step instead")
    ap.add_argument("--steps", type=int, default=20, help="--profile: steps timed")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for case in args.case:
        over = case_overrides(case, args.tiny)
        if over is None:
            print(f"{case}: skipped (no tiny-imagenet-32 under {args.tiny})")
            continue
        common = over + [f"train.epochs={args.epochs}", f"data.augment={str(args.augment).lower()}", "optim.lr=0.05",
                         "schedule.name=constant", "trainer.progress=false", "data.holdout=4"]
        if args.threads:
            common.append(f"trainer.threads={args.threads}")
        if args.profile:
            for fast in (False, True):
                print(f"{case} {'bf16 + channels_last' if fast else 'fp32'} ({torch.get_num_threads()} threads), "
                      f"augmentation {'on' if args.augment else 'off'}:")
                profile(common + (FAST if fast else []), args.steps)
            continue
        cfg = load_config(None, common)
        splits = prepare_data(cfg.data).splits
        train, test = splits["train"], splits["test"]
        n_img = (len(train) // cfg.train.batch_size) * cfg.train.batch_size * args.epochs
        print(f"{case}: {len(train)} training images x {args.epochs} epoch(s), batch {cfg.train.batch_size}, "
              f"{torch.get_num_threads()} threads, augmentation {'on' if args.augment else 'off'}")
        times: dict[str, list[float]] = {k: [] for k in ("plain", "nclab", "plain fast", "nclab fast")}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                times["plain"].append(plain_loop(cfg, train, test, args.epochs, False, r))
                times["nclab"].append(nclab_loop(common, Path(tmp) / f"a{r}"))
                times["plain fast"].append(plain_loop(cfg, train, test, args.epochs, True, r))
                times["nclab fast"].append(nclab_loop(common + FAST, Path(tmp) / f"b{r}"))
                print(f"  repeat {r}: " + ", ".join(f"{k} {n_img / v[-1]:.0f}" for k, v in times.items()) + " img/s")

        def ratio(a, b):
            return statistics.median([x / y for x, y in zip(times[b], times[a])])
        print("  median img/s: " + ", ".join(f"{k} {n_img / statistics.median(v):.0f}" for k, v in times.items()))
        print(f"  nclab / plain {ratio('nclab', 'plain'):.3f}; nclab fast / plain fast {ratio('nclab fast', 'plain fast'):.3f}; "
              f"nclab fast / plain {ratio('nclab fast', 'plain'):.3f}; nclab fast / nclab {ratio('nclab fast', 'nclab'):.3f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
