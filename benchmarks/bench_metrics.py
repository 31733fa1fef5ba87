"""Collapse-metrics benchmark: nclab.measure vs a brute-force float64 NumPy reference and vs one X^T X.

    python benchmarks/bench_metrics.py                 # the two in-memory sizes (median of --repeat runs)
    python benchmarks/bench_metrics.py --scale         # C=10,000, d=2,048, N=1,000,000 streamed, peak RSS
    python benchmarks/bench_metrics.py --sizes 200000,640,64 --repeat 3

The reference is the two-pass float64 NumPy computation with a d x d pseudo-inverse (NC1), per-class
loops (CDNV) and full N x C distance / logit matrices (NC4). The floor for an exact NC1 is one
float64 X^T X over the same data (torch, same threads). All three run on the same data in the same
process; the scale run happens in a subprocess so that its peak resident memory
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch


def problem(N, d, C, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    mu = rng.standard_normal((C, d)) * 3
    X = (mu[y] + rng.standard_normal((N, d))).astype(np.float32)
    return X, y, rng.standard_normal((C, d)), rng.standard_normal(C)


def reference(X, y, W, b, C):
    X = X.astype(np.float64)
    N = len(X)
    mu = np.stack([X[y == c].mean(0) for c in range(C)])
    M = mu - mu.mean(0)
    Xc = X - mu[y]
    Sw = Xc.T @ Xc / N
    Sb = M.T @ M / C
    nc1 = np.trace(Sw @ np.linalg.pinv(Sb, hermitian=True)) / C
    var = np.array([(Xc[y == c] ** 2).sum(1).mean() for c in range(C)])
    D = ((mu[:, None] - mu[None]) ** 2).sum(-1)
    iu = np.triu_indices(C, 1)
    with np.errstate(divide="ignore"):                                      # the diagonal, discarded
        cdnv = ((var[:, None] + var[None]) / (2 * D))[iu].mean()
    ncc = ((X ** 2).sum(1)[:, None] - 2 * X @ mu.T + (mu ** 2).sum(1)).argmin(1)
    nc4 = np.mean(ncc != (X @ W.T + b).argmax(1))
    return nc1, cdnv, nc4


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def in_memory(N, d, C, repeat):
    import nclab
    X, y, W, b = problem(N, d, C)
    nclab.measure(X[:2000], y[:2000] % 4)                                   # warm-up
    t_nc, t_ref, t_gemm = [], [], []
    for _ in range(repeat):
        t, rec = timed(lambda: nclab.measure(X, y, W=W, b=b))
        t_nc.append(t)
        t, ref = timed(lambda: reference(X, y, W, b, C))
        t_ref.append(t)
        Xt = torch.from_numpy(X).double()
        t, _ = timed(lambda: Xt.T @ Xt)
        t_gemm.append(t)
        del Xt
    m = statistics.median
    return dict(N=N, d=d, C=C, repeat=repeat, nclab_s=m(t_nc), reference_s=m(t_ref), gemm_s=m(t_gemm),
                speedup_vs_reference=m(t_ref) / m(t_nc), nclab_in_gemms=m(t_nc) / m(t_gemm),
                nc1_rel_err=abs(rec.nc1 - ref[0]) / ref[0], cdnv_rel_err=abs(rec.cdnv - ref[1]) / ref[1],
                nc4_equal=rec.nc4 == ref[2], threads=torch.get_num_threads())


def scale_child(N, d, C, batch):
    """Streamed run: ClassStats(scatter=True) over generated batches, then measure_from_stats."""
    from nclab.metrics import ClassStats, measure_from_stats
    g = torch.Generator().manual_seed(0)
    means = torch.randn(C, d, generator=g) * 3
    t0 = time.perf_counter()
    st = ClassStats(C, d, scatter=True)
    for i in range(0, N, batch):
        B = min(batch, N - i)
        y = torch.randint(0, C, (B,), generator=g)
        st.update(means[y] + torch.randn(B, d, generator=g), y)
    t_stream = time.perf_counter() - t0
    rec = measure_from_stats(st)
    t_total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # KiB -> GiB
    print(json.dumps(dict(N=N, d=d, C=C, batch=batch, stream_s=t_stream, total_s=t_total, peak_rss_gib=peak,
                          nc1=rec.nc1, cdnv=rec.cdnv, rank=rec.nc1_rank, threads=torch.get_num_threads())))


def scale(N, d, C, batch):
    p = subprocess.run([sys.executable, __file__, "--scale-child", f"{N},{d},{C}", "--batch", str(batch)],
                       capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(p.stderr)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["peak_rss_gib_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", default=["200000,640,64", "100000,2048,1000"], help="N,d,C triples")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", action="store_true", help="only the streamed C=10,000 / d=2,048 / N=1e6 run")
    ap.add_argument("--scale-size", default="1000000,2048,10000")
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--scale-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.scale_child:
        scale_child(*map(int, a.scale_child.split(",")), a.batch)
        return
    if a.scale:
        r = scale(*map(int, a.scale_size.split(",")), a.batch)
        print(f"scale N={r['N']:,} d={r['d']:,} C={r['C']:,} (batches of {r['batch']}): total {r['total_s']:.1f}s "
              f"(stream {r['stream_s']:.1f}s), peak RSS {r['peak_rss_gib']:.2f} GiB, rank {r['rank']}, "
              f"nc1 {r['nc1']:.4g}, cdnv {r['cdnv']:.4g}, threads {r['threads']}")
        return
    for s in a.sizes:
        r = in_memory(*map(int, s.split(",")), a.repeat)
        print(f"N={r['N']:,} d={r['d']:,} C={r['C']:,} (median of {r['repeat']}, {r['threads']} threads): "
              f"nclab {r['nclab_s']:.2f}s, reference {r['reference_s']:.2f}s (x{r['speedup_vs_reference']:.1f}), "
              f"float64 X^T X {r['gemm_s']:.2f}s (nclab = {r['nclab_in_gemms']:.2f} GEMMs), "
              f"nc1 rel err {r['nc1_rel_err']:.1e}, cdnv rel err {r['cdnv_rel_err']:.1e}, nc4 equal {r['nc4_equal']}")


if __name__ == "__main__":
    main()
