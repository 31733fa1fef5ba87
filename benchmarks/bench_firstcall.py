"""First call of each few-shot head in a fresh process: cold Numba cache, warm cache, warm call.

    python benchmarks/bench_firstcall.py [--episodes 2000] [--reps 3]

Every measurement is one fresh process (``python benchmarks/bench_firstcall.py --child ...``)
evaluating 2,000 episodes of 5-way 5-shot 15-query on 640-d float32 features (64 classes x 600,
as bench_fewshot.py) with one head, on given episodes (sampling is not timed):

- ``cold``: ``NUMBA_CACHE_DIR`` an empty folder (a fresh install): the first call, then the
  median of ``--reps`` calls once the kernels are ready (``warm``);
- ``cached``: a new process on the cache the cold one filled: its first call;
- ``inline``: cold again, but the kernels compiled inside the first call when it needs them (the
  behaviour before nclab.fewshot.warmup; ``warmup.ready`` patched to say yes at once).

Reported per head: seconds of each, and first minus warm. Run it under the machine's timing lock
and note the load (``uptime``): compilation and the tensor path share the 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HEADS = ("ncc", "ridge", "logistic")


def child(head: str, mode: str, episodes: int, reps: int) -> dict:
    import numpy as np
    import torch

    from nclab.fewshot import EpisodeSampler, fewshot_report, warmup
    if mode == "inline":
        warmup.ready = lambda dtype: True
    rng = np.random.default_rng(1)
    C, n, d = 64, 600, 640
    mu = rng.standard_normal((C, d)) * 0.15
    y = np.repeat(np.arange(C), n)
    X = (mu[y] + rng.standard_normal((C * n, d))).astype(np.float32)
    sets = [EpisodeSampler(5, 5, 15, episodes, 0).sample(y)]

    def call() -> float:
        t = time.perf_counter()
        fewshot_report(X, y, way=5, shot=5, query=15, episodes=episodes, heads=(head,), episode_sets=sets)
        return time.perf_counter() - t

    first = call()
    kernels_in_first = mode == "inline" or warmup._READY[torch.float32].is_set()
    if mode != "inline":
        assert warmup.wait(), warmup.error
    warm = statistics.median(call() for _ in range(reps))
    return {"head": head, "mode": mode, "first": first, "warm": warm, "kernels_ready_after_first": kernels_in_first}


def run(head: str, mode: str, cache: str, episodes: int, reps: int) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, __file__, "--child", head, mode, "--episodes", str(episodes),
                          "--reps", str(reps)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("HEAD", "MODE"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.episodes, args.reps)))
        return
    rows = []
    for head in HEADS:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as other:
            cold = run(head, "cold", cache, args.episodes, args.reps)
            cached = run(head, "cached", cache, args.episodes, args.reps)
            inline = run(head, "inline", other, args.episodes, args.reps)
        rows.append({"head": head, "cold_first": cold["first"], "warm": cold["warm"],
                     "cached_first": cached["first"], "inline_first": inline["first"],
                     "cached_used_kernels": cached["kernels_ready_after_first"]})
        r = rows[-1]
        print(f"{head:<9} cold first {r['cold_first']:6.2f} s   warm {r['warm']:5.2f} s   "
              f"cold - warm {r['cold_first'] - r['warm']:+5.2f} s   cached first {r['cached_first']:5.2f} s "
              f"({'kernels' if r['cached_used_kernels'] else 'tensor path'})   "
              f"compiled inline (before) {r['inline_first']:6.2f} s", flush=True)
    load = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "episodes": args.episodes, "cores": os.cpu_count(), "load": load}, fh, indent=2)


if __name__ == "__main__":
    main()
