"""Training throughput: nclab's loop against a plain PyTorch loop, where the step time goes, and
what PyTorch's CPU options give. One command, six sections per case:

1. ``loop``: nclab's training loop (``start_run``: Fabric, seeded DataLoader of uint8 batches,
   float64 running sums, the source-test accuracy every epoch) against a plain loop in the same
   process doing the same work (same model and initial weights, batch, augmentation function,
   SGD, a random permutation per epoch, uint8 -> float per batch, the test accuracy after each
   epoch). Repeats alternate which loop goes first; medians of images/s and of the per-repeat
   ratio nclab / plain. Run with nclab's defaults for the case (``--nclab key=value`` to add).
2. ``profile``: the phases of one step (batch assembly, augmentation, forward, backward,
   optimiser) timed separately over the case's steps, as shares of the step time.
3. ``options``: forward + backward + SGD step per image on fixed batches for fp32, channels_last,
   bf16 autocast, both, both with train.ema's weight average updated after every step, torch.compile (inductor; in fp32 on conv4-28 only, and with bf16 +
   channels_last on every case where the CPU has native bf16; its compile time printed separately),
   and one torch thread instead of two; interleaved repeats, medians, speed relative to fp32.
4. ``batch``: the same step at the case's batch, twice and four times it, on the same images
   (channels_last, bf16 where native): what a larger batch buys per image.
5. ``resize``: the whole step (the loader's batch, resized as train.resize_from's ramp does, then
   forward + backward + SGD; channels_last, bf16 where native) at the case's side and 4, 8 and
   12 px less, relative to the full side: what progressive resizing saves per image.
6. ``threads``: the same step in fresh processes (OpenMP reads its settings once, at start-up):
   2 threads with libgomp's default wait policy (spin briefly, then sleep; what nclab leaves),
   ACTIVE (spinning waits), PASSIVE (sleeping waits; what importing nclab set before stop 36),
   1 thread; interleaved repeats, medians.

The load average goes with every figure: other processes on the same cores change them, and
change them differently for each thread setting.

Cases (``--case``): ``conv4-28`` (glyphs, 28 px gray, batch 128, shift 2), ``conv4-32``
(tiny-imagenet-32, 32 px RGB, batch 128, shift 4 + flip), ``resnet12-32`` (tiny-imagenet-32,
batch 64, shift 4 + flip) and ``resnet12h-32`` (the omniglot / tiny recipes' half-width ResNet-12,
tiny-imagenet-32, batch 128). The tiny-imagenet cases need ``--tiny DIR`` (default
$NCLAB_DATA/tiny-imagenet-32, NCLAB_DATA defaulting to ../shared/data) and are skipped without it.

    python benchmarks/bench_throughput.py [--case conv4-28 conv4-32 resnet12-32 resnet12h-32] [--repeats 3]
        [--sections loop profile options batch resize threads] [--threads 2] [--nclab key=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import subprocess
import sys

import torch

from nclab.config import load_config
from nclab.data.loader import AugmentedImages, augment_from_config, train_loader
from nclab.data.prepare import prepare_data
from nclab.data.transforms import Preprocess
from nclab.models import create_model
from nclab.train.ema import WeightAverage
from nclab.train.run import native_bf16, start_run

# case -> (overrides, source classes for the loop section, steps for profile / options)
CASES = {
    "conv4-28": (["data.name=glyphs", "model.backbone=conv4", "train.batch_size=128", "data.shift=2"], 160, 30),
    "conv4-32": (["model.backbone=conv4", "train.batch_size=128", "data.shift=4"], 8, 20),
    "resnet12-32": (["model.backbone=resnet12", "train.batch_size=64", "data.shift=4"], 2, 3),
    # the omniglot / tiny recipes' network: ResNet-12 at half the RFS widths, batch 128
    "resnet12h-32": (["model.backbone=resnet12", "model.options={channels: [32, 64, 128, 256]}",
                      "train.batch_size=128", "data.shift=4"], 4, 3),
}


SECTIONS = ("loop", "profile", "options", "batch", "resize", "threads")


def case_overrides(case: str, tiny: Path) -> list[str] | None:
    over = list(CASES[case][0])
    if case == "conv4-28":
        return over
    if not (tiny / "tiny-imagenet-32.zip").exists():
        return None
    return over + ["data.name=folder", f"data.root={tiny / 'tiny-imagenet-32.zip'}", f"data.split={tiny / 'splits.csv'}"]


def default_tiny() -> Path:
    """$NCLAB_DATA/tiny-imagenet-32, NCLAB_DATA defaulting to ../shared/data (as the recipes)."""
    return Path(os.environ.get("NCLAB_DATA", "../shared/data")) / "tiny-imagenet-32"


def common_overrides(over: list[str], case: str, threads: int) -> list[str]:
    """Both loops' config for ``case``: one epoch at a constant lr on the case's source classes."""
    return over + ["train.epochs=1", "optim.lr=0.05", "schedule.name=constant", "trainer.progress=false",
                   "data.holdout=4", f"data.source_classes={CASES[case][1]}", f"trainer.threads={threads}"]


def _model(cfg, pre: Preprocess, n_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(cfg.model.backbone, in_channels=pre.channels, n_classes=n_classes, head=cfg.model.head,
                        image_size=pre.image_size, **cfg.model.options)


def plain_loop(cfg, data, seed: int, max_steps: int | None = None) -> float:
    """The plain PyTorch loop: seconds for ``train.epochs`` epochs (training + test accuracy);
    ``max_steps``: stop early (a warm-up)."""
    tr, te = data.splits["train"], data.splits["test"]
    pre = Preprocess.fit(tr.images)
    images, labels = pre.to_chw(tr.images), torch.as_tensor(tr.labels)
    test_x, test_y = pre(te.images), torch.as_tensor(te.labels)
    aug = augment_from_config(cfg.data, data.flip)
    fmt = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    model = _model(cfg, pre, tr.n_classes, seed).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=0.9, weight_decay=5e-4)
    batch = cfg.train.batch_size
    gen = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    for _ in range(cfg.train.epochs):
        model.train()
        perm = torch.randperm(len(labels), generator=gen)
        for i in range(min(len(labels) // batch, max_steps or len(labels))):
            idx = perm[i * batch:(i + 1) * batch]
            x = images[idx].float().div_(255.0)
            if aug is not None:
                x = aug(x, gen)
            loss = torch.nn.functional.cross_entropy(model(pre.normalize(x).contiguous(memory_format=fmt)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            _ = sum(int((model(test_x[i:i + 512].contiguous(memory_format=fmt)).argmax(1) == test_y[i:i + 512]).sum())
                    for i in range(0, len(test_y), 512))
    return time.perf_counter() - t


def nclab_loop(overrides: list[str], out: Path) -> float:
    """nclab's loop: the sum of the epochs' ``seconds`` (training + test accuracy, as the plain loop)."""
    run = start_run(None, overrides, out=out)
    return sum(r["seconds"] for r in run.records())


def loop_section(case: str, common: list[str], nclab_extra: list[str], repeats: int) -> None:
    cfg = load_config(None, common)
    data = prepare_data(cfg.data)
    n_train = len(data.splits["train"])
    n_img = (n_train // cfg.train.batch_size) * cfg.train.batch_size * cfg.train.epochs
    print(f"[loop] {case}: {n_train} training images ({data.splits['train'].n_classes} classes) x "
          f"{cfg.train.epochs} epoch(s), batch {cfg.train.batch_size}, {torch.get_num_threads()} threads, "
          f"nclab extra: {' '.join(nclab_extra) or '-'}")
    plain_loop(cfg, data, 0, max_steps=3)          # warm-up: thread pool, oneDNN primitives of these shapes
    times: dict[str, list[float]] = {"plain": [], "nclab": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            order = ["plain", "nclab"] if r % 2 == 0 else ["nclab", "plain"]
            for name in order:
                if name == "plain":
                    times[name].append(plain_loop(cfg, data, r))
                else:
                    times[name].append(nclab_loop(common + nclab_extra + [f"trainer.seed={r}"], Path(tmp) / f"{r}"))
            print(f"  repeat {r}: plain {n_img / times['plain'][-1]:.0f} img/s, nclab {n_img / times['nclab'][-1]:.0f} "
                  f"img/s, nclab / plain {times['plain'][-1] / times['nclab'][-1]:.3f}", flush=True)
    ratio = statistics.median(p / n for p, n in zip(times["plain"], times["nclab"]))
    print(f"  median: plain {n_img / statistics.median(times['plain']):.0f} img/s, nclab "
          f"{n_img / statistics.median(times['nclab']):.0f} img/s, nclab / plain {ratio:.3f}")


def _dataset(cfg, data) -> tuple[Preprocess, AugmentedImages]:
    """The training split as the loop sees it: fitted preprocessing, the config's augmentation."""
    tr = data.splits["train"]
    pre = Preprocess.fit(tr.images)
    return pre, AugmentedImages(pre.to_chw(tr.images), torch.as_tensor(tr.labels), pre,
                                augment_from_config(cfg.data, data.flip))


def _stream(ds: AugmentedImages, batch: int, size: int = 0):
    """The loader's batches, epoch after epoch (``size``: train.resize_from's resize)."""
    return (b for epoch in range(10**6) for b in train_loader(ds, batch, 0, epoch, size=size))


def _batches(cfg, data, n: int):
    pre, ds = _dataset(cfg, data)
    it = _stream(ds, cfg.train.batch_size)
    return pre, [tuple(next(it)) for _ in range(n)]


def _print_relative(times: dict, base, n_img: int, label) -> None:
    """One line per setting: images/s (median) and speed relative to the setting ``base``."""
    ref = statistics.median(times[base])
    for key, ts in times.items():
        m = statistics.median(ts)
        print(f"  {label(key)}{n_img / m:8.0f} img/s  x{ref / m:.2f}", flush=True)


def profile_section(case: str, common: list[str], steps: int) -> None:
    """Seconds per phase of a training step (batch assembly, augmentation, forward, backward, optimiser)."""
    cfg = load_config(None, common)
    data = prepare_data(cfg.data)
    tr = data.splits["train"]
    pre = Preprocess.fit(tr.images)
    fmt = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    model = _model(cfg, pre, tr.n_classes, 0).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    images, labels = pre.to_chw(tr.images), torch.as_tensor(tr.labels)
    aug = augment_from_config(cfg.data, data.flip)
    specs = (spec for epoch in range(10**6)
             for spec in train_loader(AugmentedImages(images, labels, pre, None), cfg.train.batch_size, 0, epoch).batch_sampler)
    phases = dict.fromkeys(["batch", "augmentation", "forward", "backward", "optimiser"], 0.0)

    def step(record: bool) -> None:
        t0 = time.perf_counter()
        spec = next(specs)
        idx = torch.from_numpy(spec.indices)
        x, y = images[idx].float().div_(255.0), labels[idx]
        t1 = time.perf_counter()
        x = pre.normalize(aug(x, torch.Generator().manual_seed(spec.seed)) if aug is not None else x)
        x = x.contiguous(memory_format=fmt)
        t2 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        if record:
            for k, a, b in zip(phases, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
                phases[k] += b - a
    for _ in range(2):
        step(False)
    for _ in range(steps):
        step(True)
    total = sum(phases.values())
    print(f"[profile] {case} fp32{', channels_last' if cfg.trainer.channels_last else ''}: {steps * cfg.train.batch_size / total:.0f} img/s over {steps} steps; "
          "share of the step: " + ", ".join(f"{k} {v / total:.1%}" for k, v in phases.items()), flush=True)


def _interleaved(names: list, repeats: int, measure) -> dict:
    """``measure(name)`` for every name, ``repeats`` times, odd repeats in reverse order (so drift
    on a noisy machine falls on every setting alike): name -> the list of its measurements."""
    out = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(measure(name))
    return out


def _sgd_steps(fwd, opt, xs, bf16: bool, ema=None) -> float:
    """Seconds for forward + cross-entropy + backward + SGD step over the batches ``xs`` (and, with
    ``ema``, the update of that :class:`WeightAverage` of the network after each step)."""
    t = time.perf_counter()
    for i, (x, y) in enumerate(xs):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = fwd(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(i + 1)
    return time.perf_counter() - t


def options_section(case: str, common: list[str], steps: int, repeats: int, threads: int, native: bool) -> None:
    """Images/s of forward + backward + SGD step under each CPU option, relative to fp32; with
    ``native`` (bf16 computed natively) also compiled in bf16 + channels_last, the recipes' setting."""
    cfg = load_config(None, common)
    data = prepare_data(cfg.data)
    tr = data.splits["train"]
    pre, batches = _batches(cfg, data, steps)
    settings = {"fp32": {}, "channels_last": {"cl": True}, "bf16 autocast": {"bf16": True},
                "bf16 + channels_last": {"bf16": True, "cl": True},
                "bf16 + channels_last + ema": {"bf16": True, "cl": True, "ema": True}}
    if case == "conv4-28":      # inductor's fp32 compilation took minutes per ResNet-12 on the AVX2 cores
        settings |= {"compile": {"compile": True}, "compile + channels_last": {"compile": True, "cl": True}}
    if native:                  # emulated bf16 is 7-20x slower than fp32: nothing to learn from compiling it
        settings["compile + bf16 + channels_last"] = {"compile": True, "bf16": True, "cl": True}
    settings["1 thread"] = {"threads": 1}
    runs, compile_s = {}, {}
    for name, s in settings.items():
        fmt = torch.channels_last if s.get("cl") else torch.contiguous_format
        model = _model(cfg, pre, tr.n_classes, 0).to(memory_format=fmt).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        fwd = model
        if s.get("ema"):                        # train.ema's update after every step
            s["average"] = WeightAverage(model, 0.999)
        if s.get("compile"):
            fwd = torch.compile(model)
        xs = [(x.contiguous(memory_format=fmt), y) for x, y in batches]
        runs[name] = (fwd, opt, xs, s)

    def timed(name: str, n: int) -> float:
        fwd, opt, xs, s = runs[name]
        torch.set_num_threads(s.get("threads", threads))
        t = _sgd_steps(fwd, opt, xs[:n], bool(s.get("bf16")), s.get("average"))
        torch.set_num_threads(threads)
        return t

    for name in settings:
        t = timed(name, 2)                       # warm-up (and torch.compile's compilation)
        if settings[name].get("compile"):
            compile_s[name] = t
    times = _interleaved(list(settings), repeats, lambda name: timed(name, steps))
    n_img = steps * cfg.train.batch_size
    base = statistics.median(times["fp32"])
    print(f"[options] {case}: forward + backward + SGD, {steps} steps of {cfg.train.batch_size}, {threads} threads "
          f"unless stated, median of {repeats}:")
    for name, ts in times.items():
        m = statistics.median(ts)
        extra = f" (first two steps incl. compilation {compile_s[name]:.1f} s)" if name in compile_s else ""
        print(f"  {name:<32}{n_img / m:8.0f} img/s  x{base / m:.2f}{extra}", flush=True)


def batch_section(case: str, common: list[str], steps: int, repeats: int, native: bool) -> None:
    """Images/s of the step at the case's batch B, 2B and 4B on the same images, channels_last and
    bf16 where it is native (the recipes' setting), relative to B: what a larger batch buys per image."""
    cfg = load_config(None, common)
    data = prepare_data(cfg.data)
    b0 = cfg.train.batch_size
    pre, batches = _batches(cfg, data, max(steps, 16))     # at least 4 steps of 4B
    x_all, y_all = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    n_img = len(y_all)
    runs = {}
    for b in (b0, 2 * b0, 4 * b0):
        model = _model(cfg, pre, data.splits["train"].n_classes, 0).to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        runs[b] = (model, opt, [(x_all[i:i + b].contiguous(memory_format=torch.channels_last), y_all[i:i + b])
                                for i in range(0, n_img, b)])
    for model, opt, xs in runs.values():
        _sgd_steps(model, opt, xs[:2], native)              # warm-up: oneDNN primitives of these shapes
    times = _interleaved(list(runs), repeats, lambda b: _sgd_steps(*runs[b], native))
    print(f"[batch] {case}: forward + backward + SGD on the same {n_img} images, channels_last"
          f"{', bf16 autocast' if native else ', fp32'}, median of {repeats}:")
    _print_relative(times, b0, n_img, lambda b: f"batch {b:<5}")


def resize_section(case: str, common: list[str], steps: int, repeats: int, native: bool) -> None:
    """Images/s of the whole step (the loader's batch at side s, then forward + backward + SGD) for
    s = the stored side and 4, 8, 12 px less, relative to the stored side (channels_last, bf16 where native)."""
    cfg = load_config(None, common)
    data = prepare_data(cfg.data)
    pre, ds = _dataset(cfg, data)
    n_classes = data.splits["train"].n_classes
    full, b = pre.image_size, cfg.train.batch_size
    sides = [full - d for d in (0, 4, 8, 12) if full - d >= 8]
    runs = {}
    for side in sides:
        model = _model(cfg, pre, n_classes, 0).to(memory_format=torch.channels_last).train()
        runs[side] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4))

    def timed(side: int, n: int) -> float:
        model, opt = runs[side]
        t = time.perf_counter()
        batches = ((x.contiguous(memory_format=torch.channels_last), y) for x, y in _stream(ds, b, side))
        _sgd_steps(model, opt, [next(batches) for _ in range(n)], native)
        return time.perf_counter() - t

    for side in sides:
        timed(side, 2)                                      # warm-up: oneDNN primitives of these shapes
    times = _interleaved(sides, repeats, lambda side: timed(side, steps))
    print(f"[resize] {case}: loader batch (augmented, resized) + forward + backward + SGD, {steps} steps of {b}, "
          f"channels_last{', bf16 autocast' if native else ', fp32'}, median of {repeats}:")
    _print_relative(times, full, steps * b, lambda side: f"{side:>3} px   ")


def child(case: str, steps: int, cl: bool) -> None:
    """(In a fresh process) images/s of forward + backward + SGD on random batches of the case's shape."""
    cfg = load_config(None, CASES[case][0])             # the case's backbone, options and batch
    b, (c, size) = cfg.train.batch_size, ((1, 28) if case == "conv4-28" else (3, 32))
    torch.manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = create_model(cfg.model.backbone, in_channels=c, n_classes=64, image_size=size,
                         **cfg.model.options).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(b, c, size, size).contiguous(memory_format=fmt), torch.randint(0, 64, (b,))
    for i in range(steps + 2):
        if i == 2:
            t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    print(steps * b / (time.perf_counter() - t))


def threads_section(case: str, steps: int, repeats: int, cl: bool) -> None:
    settings = {"2 threads, libgomp's default": (None, 2), "2 threads, OMP_WAIT_POLICY=ACTIVE": ("ACTIVE", 2),
                "2 threads, PASSIVE": ("PASSIVE", 2), "1 thread": (None, 1)}

    def rate(name: str) -> float:
        policy, n = settings[name]
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"OMP_NUM_THREADS": str(n)}
        if policy is not None:
            env["OMP_WAIT_POLICY"] = policy
        out = subprocess.run([sys.executable, __file__, "--child", case, str(steps), str(int(cl))], env=env,
                             capture_output=True, text=True, check=True).stdout
        return float(out.split()[-1])
    rates = _interleaved(list(settings), repeats, rate)
    print(f"[threads] {case}: forward + backward + SGD, {'channels_last' if cl else 'contiguous'}, fresh processes, "
          f"median of {repeats} (load average now {os.getloadavg()[0]:.2f}):")
    for name, v in rates.items():
        print(f"  {name:<36}{statistics.median(v):8.0f} img/s   ({', '.join(f'{x:.0f}' for x in v)})", flush=True)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), bool(int(sys.argv[4])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--tiny", type=Path, default=default_tiny(),
                    help="the tiny-imagenet-32 folder (default $NCLAB_DATA/tiny-imagenet-32, NCLAB_DATA defaulting "
                         "to ../shared/data, as the recipes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (both loops)")
    ap.add_argument("--nclab", nargs="*", default=[], metavar="key=value", help="extra overrides for nclab's loop only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} cores, {args.threads} torch threads, torch {torch.__version__}, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    native = native_bf16("cpu")
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {native} "
          f"(trainer.precision=auto trains in {'bf16-mixed' if native else '32-true'})")
    for case in args.case:
        over = case_overrides(case, args.tiny)
        if over is None:
            print(f"{case}: skipped (no tiny-imagenet-32 under {args.tiny})")
            continue
        steps = CASES[case][2]
        common = common_overrides(over, case, args.threads)
        if "loop" in args.sections:
            loop_section(case, common, args.nclab, args.repeats)
        if "profile" in args.sections:
            profile_section(case, common, steps)
        if "options" in args.sections:
            options_section(case, common, steps, args.repeats, args.threads, native)
        if "batch" in args.sections:
            batch_section(case, common, steps, args.repeats, native)
        if "resize" in args.sections:
            resize_section(case, common, steps, args.repeats, native)
        if "threads" in args.sections:
            threads_section(case, steps, args.repeats, cl=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
