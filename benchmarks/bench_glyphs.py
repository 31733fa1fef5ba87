"""Glyphs generation time: cold generation at 28 and 32 px and the cached load, default parameters.

    python benchmarks/bench_glyphs.py [--repeats 3] [--sizes 28 32]

Each measurement runs ``read_glyphs`` in a fresh subprocess (so nothing is reused from an
earlier run in memory) with its own empty cache folder for the cold runs; the cached load
reads the file the last cold run wrote. Cold time includes the font inventory and the
homoglyph selection (reported apart as ``inventory_s``). Reference measured in the same
run: the cached load against the cold generation (ratio), and the 60 s budget of the issue.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from nclab.config import DataConfig
from nclab.data.glyphs import read_glyphs
from nclab.data.glyphs.inventory import build_inventory
t1 = time.perf_counter()
if sys.argv[2] == "cold":
    build_inventory()
t2 = time.perf_counter()
ds = read_glyphs(DataConfig(name="glyphs", image_size=int(sys.argv[1])))
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "inventory_s": t2 - t1, "seconds": t3 - t1,
                  "shape": list(ds.images.shape), "classes": len(ds.class_names), "fingerprint": ds.fingerprint()}))
"""


def run(size: int, mode: str, cache: str) -> dict:
    env = dict(os.environ, NCLAB_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", CHILD, str(size), mode], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[28, 32])
    args = ap.parse_args()
    for size in args.sizes:
        cold, warm, prints = [], [], set()
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                r = run(size, "cold", cache)
                cold.append(r)
                prints.add(r["fingerprint"])
                w = run(size, "cached", cache)
                warm.append(w)
                prints.add(w["fingerprint"])
        c = statistics.median(r["seconds"] for r in cold)
        inv = statistics.median(r["inventory_s"] for r in cold)
        h = statistics.median(r["seconds"] for r in warm)
        print(f"glyphs {size}px: {cold[0]['classes']} classes, images {tuple(cold[0]['shape'])}; "
              f"cold generation median {c:.1f} s (inventory {inv:.1f} s) = {c / 60:.2f} x the 60 s budget; "
              f"cached load median {h:.2f} s = {h / c:.3f} x cold; runs {args.repeats}; "
              f"fingerprints identical: {len(prints) == 1}")


if __name__ == "__main__":
    main()
