"""Where nclab's loop and the plain loop of ``bench_throughput.py`` spend an epoch: cProfile of
each (one epoch of the ``loop`` section's case, ``--repeats`` times, alternating which goes first),
split into PyTorch kernel time (autograd backward, conv, batch norm, pooling, activations, the
optimiser step) and everything else (data, augmentation, loader, Fabric, running sums, Python);
then one fixed batch stepped through the same model with and without Lightning Fabric's wrapper,
interleaved (median over the steps after a warm-up).

    python benchmarks/profile_loop_gap.py [--case conv4-32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_throughput as bt  # noqa: E402
import torch  # noqa: E402

from lightning_fabric import Fabric  # noqa: E402

from nclab.config import load_config  # noqa: E402
from nclab.data.prepare import prepare_data  # noqa: E402
from nclab.models import create_model  # noqa: E402

KERNELS = ("run_backward", "conv2d", "batch_norm", "max_pool2d", "relu_", "leaky_relu", "_single_tensor_sgd",
           "_multi_tensor_sgd")


def kernel_seconds(stats: pstats.Stats) -> float:
    """Seconds inside the step's PyTorch kernels (their own time; the SGD steps' cumulative)."""
    total = 0.0
    for (_, _, name), (_, _, tottime, cumtime, _) in stats.stats.items():
        if any(k in name for k in KERNELS):
            total += cumtime if "sgd" in name else tottime
    return total


def fabric_step_check(case: str, steps: int = 24) -> None:
    """Median step time of one model, one fixed batch: plain PyTorch against Fabric's wrapper."""
    size, chans = (28, 1) if case == "conv4-28" else (32, 3)
    cl = torch.channels_last
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        m = create_model(case.split("-")[0], in_channels=chans, n_classes=8, image_size=size).to(memory_format=cl)
        models.append((m, torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)))
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    wrapped, opt = fabric.setup(*models[1])
    x = torch.randn(128 if case.startswith("conv4") else 64, chans, size, size).contiguous(memory_format=cl)
    y = torch.randint(0, 8, (len(x),))

    def step(model, opt, backward) -> float:
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        backward(loss)
        opt.step()
        return time.perf_counter() - t

    times = {"plain": [], "fabric": []}
    for _ in range(steps):
        times["plain"].append(step(*models[0], lambda loss: loss.backward()))
        times["fabric"].append(step(wrapped, opt, fabric.backward))
    p, f = (statistics.median(times[k][4:]) * 1e3 for k in ("plain", "fabric"))
    print(f"  one batch, {steps - 4} interleaved steps each: plain {p:.1f} ms, Fabric-wrapped {f:.1f} ms per step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="conv4-32", choices=list(bt.CASES))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tiny", type=Path, default=bt.default_tiny())
    args = ap.parse_args()
    torch.set_num_threads(2)
    over = bt.case_overrides(args.case, args.tiny)
    if over is None:
        sys.exit(f"{args.case}: no tiny-imagenet-32 under {args.tiny}")
    common = bt.common_overrides(over, args.case, 2)
    cfg = load_config(None, common)
    data = prepare_data(cfg.data)
    bt.plain_loop(cfg, data, 0, max_steps=3)                      # warm-up, as the loop section
    print(f"{args.case}: one epoch per loop and repeat; seconds timed by each loop / in kernels / outside them")
    for r in range(args.repeats):
        for name in (["plain", "nclab"] if r % 2 == 0 else ["nclab", "plain"]):
            prof = cProfile.Profile()
            with tempfile.TemporaryDirectory() as tmp:
                prof.enable()
                timed = (bt.plain_loop(cfg, data, r) if name == "plain"
                         else bt.nclab_loop(common + [f"trainer.seed={r}"], Path(tmp) / "run"))
                prof.disable()
            k = kernel_seconds(pstats.Stats(prof))
            print(f"  repeat {r} {name:5s}: timed {timed:6.2f} s, kernels {k:6.2f} s, outside kernels {timed - k:5.2f} s")
    fabric_step_check(args.case)


if __name__ == "__main__":
    main()
