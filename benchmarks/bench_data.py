"""Dataset load time and peak memory: full Omniglot (cold = empty cache, and cached) and a
synthetic mini-ImageNet tree (images/ + train/val/test.csv of random 84x84 JPEGs).

    python benchmarks/bench_data.py [--omniglot DIR] [--mini-n 60000] [--repeats 3]

Every load runs in a fresh subprocess (peak memory = the child's max RSS) with its own
cache folder. References measured in the same run: the cached load against the cold one,
and the thread-pool JPEG decode against a single-thread decode of the same files. Loader
throughput against the conv4 / resnet12 step time is the training loader's benchmark.
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
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, resource, sys, time
from nclab.config import DataConfig
from nclab.data import load_dataset
from nclab.data.registry import _ensure_readers
t = time.perf_counter()
_ensure_readers()                                   # reader imports timed apart from the load
imports = time.perf_counter() - t
cfg = DataConfig(**json.loads(sys.argv[1]))
t = time.perf_counter()
ds = load_dataset(cfg)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "import_s": imports, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "images": list(ds.images.shape)}))
"""


def child_load(cfg: dict, cache: Path) -> dict:
    env = {**os.environ, "NCLAB_CACHE_DIR": str(cache)}
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def cold_and_cached(cfg: dict, repeats: int, tmp: Path, tag: str) -> dict:
    cold, warm = [], []
    for r in range(repeats):
        cache = tmp / f"cache-{tag}-{r}"
        cold.append(child_load(cfg, cache))
        warm.append(child_load(cfg, cache))
    med = lambda xs, k: statistics.median(x[k] for x in xs)          # noqa: E731
    return {"shape": cold[0]["images"], "cold_s": med(cold, "seconds"), "cached_s": med(warm, "seconds"),
            "cold_peak_mb": med(cold, "peak_mb"), "cached_peak_mb": med(warm, "peak_mb"),
            "cold_over_cached": med(cold, "seconds") / med(warm, "seconds"), "reader_import_s": med(warm, "import_s")}


def make_mini_tree(root: Path, n: int) -> None:
    from PIL import Image
    rng = np.random.default_rng(0)
    per = max(1, n // 100)
    (root / "images").mkdir(parents=True)
    # smooth random images (JPEG-realistic size) from a small pool of low-frequency patterns
    base = rng.integers(0, 256, (64, 12, 12, 3), dtype=np.uint8)
    pool = [np.asarray(Image.fromarray(b).resize((84, 84), Image.BILINEAR)) for b in base]
    c = 0
    for f, n_cls in (("train", 64), ("val", 16), ("test", 20)):
        rows = ["filename,label"]
        for k in range(n_cls):
            wnid = f"n{c:08d}"
            c += 1
            for i in range(per):
                name = f"{wnid}{i:08d}.jpg"
                img = np.clip(pool[(c * 7 + i) % 64].astype(np.int16) + rng.integers(-20, 21, (84, 84, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(root / "images" / name, quality=90)
                rows.append(f"{name},{wnid}")
        (root / f"{f}.csv").write_text("\n".join(rows) + "\n")


def decode_reference(root: Path, k: int) -> dict:
    from nclab.data.imageio import read_images
    paths = sorted((root / "images").iterdir())[:k]
    out = {}
    for workers in (1, None):
        t = time.perf_counter()
        read_images(paths, channels=3, size=84, workers=workers)
        out["serial_s" if workers == 1 else "pool_s"] = time.perf_counter() - t
    out["files"] = len(paths)
    out["pool_speedup"] = out["serial_s"] / out["pool_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--omniglot", default=os.environ.get("NCLAB_OMNIGLOT_DIR", str(REPO.parent / "shared" / "data" / "omniglot")))
    ap.add_argument("--mini-n", type=int, default=60000, help="images in the synthetic mini-ImageNet tree")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    results = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="nclab-bench-data-") as tmp:
        tmp = Path(tmp)
        if (Path(args.omniglot) / "images_background.npz").is_file():
            for split in ("background", "vinyals"):
                cfg = {"name": "omniglot", "root": args.omniglot, "split": split}
                results[f"omniglot_{split}"] = cold_and_cached(cfg, args.repeats, tmp, split)
                print(split, results[f"omniglot_{split}"], flush=True)
        t = time.perf_counter()
        make_mini_tree(tmp / "mini", args.mini_n)
        results["mini_tree_write_s"] = time.perf_counter() - t
        results["mini_decode_reference"] = decode_reference(tmp / "mini", min(3000, args.mini_n))
        print(results["mini_decode_reference"], flush=True)
        cfg = {"name": "mini-imagenet", "root": str(tmp / "mini")}
        results["mini_imagenet"] = cold_and_cached(cfg, max(1, args.repeats - 2), tmp, "mini")
        results["mini_imagenet_32"] = cold_and_cached({**cfg, "image_size": 32}, 1, tmp, "mini32")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
