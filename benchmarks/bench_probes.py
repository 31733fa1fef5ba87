"""Probe overhead: the quickstart's training with and without its per-epoch probes, same process.

Each repeat runs ``nclab.experiments.training.train`` on the packaged quickstart config twice,
once with ``probes.enabled=false`` and once as configured (probes at epoch 0 and after every
epoch), alternating which goes first. The overhead is the ratio of the median wall times of the
whole ``train`` call (set-up, episodes, every probe included) minus one. The runs with probes
also give the in-run split: the sum of ``probe_seconds`` over the sum of the epochs' ``seconds``.

    python benchmarks/bench_probes.py [--repeats 3] [key=value ...]      # e.g. train.epochs=2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nclab.config import packaged_config
from nclab.experiments.training import train


def timed(overrides: list[str], out: Path) -> tuple[float, list[dict]]:
    t = time.perf_counter()
    run = train(packaged_config("quickstart"), ["trainer.progress=false", *overrides], out=out)
    return time.perf_counter() - t, run.records()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for both runs")
    args = ap.parse_args()
    print(f"quickstart config {' '.join(args.overrides)}; {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}")
    plain, probed, inrun = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = [("plain", ["probes.enabled=false"]), ("probed", [])]
            for name, extra in order if r % 2 == 0 else order[::-1]:
                wall, recs = timed([*args.overrides, *extra], Path(tmp) / f"{name}-{r}")
                (plain if name == "plain" else probed).append(wall)
                if name == "probed":
                    probe_s = sum(x.get("probe_seconds", 0.0) for x in recs)
                    train_s = sum(x.get("seconds", 0.0) for x in recs)
                    inrun.append(probe_s / train_s)
                    print(f"repeat {r}: with probes {wall:7.1f} s ({sum('probe' in x for x in recs)} probes, "
                          f"{probe_s:.1f} s probing, {train_s:.1f} s in epochs: {probe_s / train_s:.3f})")
                else:
                    print(f"repeat {r}: without    {wall:7.1f} s")
    mp, mq = statistics.median(plain), statistics.median(probed)
    print(f"median without {mp:.1f} s, with {mq:.1f} s: overhead {mq / mp - 1:+.3f} (goal <= 0.15); "
          f"in-run probe / epoch seconds, median {statistics.median(inrun):.3f}; "
          f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
