"""Few-shot engine speed: nclab.fewshot against per-episode loops on the same episodes.

    python benchmarks/bench_fewshot.py                      # scikit-learn reference only
    /work/venv-bench/bin/python benchmarks/bench_fewshot.py # + easyfsl (installed there, never in CI)

2,000 episodes of 5-way 5-shot 15-query on 640-d features (64 classes x 600 samples, Gaussian
classes), L2-normalised features for every method. nclab evaluates all 2,000 episodes per head
(one ``nclab.fewshot`` call, timed whole: sampling aside, gathering, transform, heads, intervals);
the references run episode by episode on the first ``--ref-episodes`` of the *same* episodes,
and their per-episode accuracies are compared with nclab's on those episodes. Ratios are of
per-episode times (medians over ``--reps`` repetitions for nclab).
Every method gets ``--threads`` CPU threads (default ``torch.get_num_threads()``, nclab's own
default: workers taking chunks of episodes, each with single-threaded ops). Goals (issue 4): NCC and ridge >= 50x the scikit-learn loop and >= 20x easyfsl; logistic >= 10x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from nclab.fewshot import EpisodeSampler, fewshot_report, warmup


def data(C=64, n=600, d=640, seed=1):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((C, d)) * 0.15
    y = np.repeat(np.arange(C), n)
    X = (mu[y] + rng.standard_normal((C * n, d))).astype(np.float32)
    return X, y


def sklearn_loop(head, X, ep, E):
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.neighbors import NearestCentroid
    make = {"ncc": NearestCentroid, "ridge": lambda: RidgeClassifier(alpha=1.0),
            "logistic": lambda: LogisticRegression(C=1.0, max_iter=1000)}[head]
    k, n, q = ep.way, ep.shot, ep.query
    ys, yq = np.repeat(np.arange(k), n), np.repeat(np.arange(k), q)
    acc = []
    t = time.perf_counter()
    for e in range(E):
        S, Q = X[ep.support[e].ravel()], X[ep.queries[e].ravel()]
        S = S / np.linalg.norm(S, axis=1, keepdims=True)
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        acc.append(np.mean(make().fit(S, ys).predict(Q) == yq))
    return (time.perf_counter() - t) / E, np.array(acc)


def easyfsl_loop(model_name, X, ep, E):
    from easyfsl.methods import PrototypicalNetworks, SimpleShot
    model = {"PrototypicalNetworks": PrototypicalNetworks, "SimpleShot": SimpleShot}[model_name](
        feature_normalization=2)              # backbone = identity on precomputed features, L2-normalised
    k, n, q = ep.way, ep.shot, ep.query
    Xt = torch.from_numpy(X)
    ys, yq = torch.arange(k).repeat_interleave(n), torch.arange(k).repeat_interleave(q)
    acc = []
    t = time.perf_counter()
    with torch.no_grad():
        for e in range(E):
            S, Q = Xt[torch.from_numpy(ep.support[e].ravel())], Xt[torch.from_numpy(ep.queries[e].ravel())]
            model.process_support_set(S, ys)
            acc.append((model(Q).argmax(1) == yq).double().mean().item())
    return (time.perf_counter() - t) / E, np.array(acc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--ref-episodes", type=int, default=200, help="episodes for the per-episode loops")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="CPU threads for every method (torch and BLAS; nclab: workers); default torch's")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    X, y = data()
    ep = EpisodeSampler(5, 5, 15, args.episodes, seed=0).sample(y)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores; {args.episodes} episodes 5-way 5-shot 15-query, X {X.shape}")
    assert warmup.wait(), warmup.error            # compiled kernels (a first call would use the tensor path)
    fewshot_report(X[:3000], y[:3000], shot=(5,), episodes=10, heads=("ncc", "ridge", "logistic"))   # warm-up

    nclab_time, nclab_acc = {}, {}
    for head in ("ncc", "ncc-cosine", "ridge", "logistic"):
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            rep = fewshot_report(X, y, shot=(5,), episodes=args.episodes, heads=(head,), episode_sets=[ep],
                                 num_threads=args.threads)
            times.append((time.perf_counter() - t) / args.episodes)
        nclab_time[head], nclab_acc[head] = statistics.median(times), rep.accuracies[(5, head)]
        r = rep.rows[0]
        print(f"nclab {head:<11} {1e6 * nclab_time[head]:8.1f} us/episode   acc {r['mean']:.4f} ± {r['ci95']:.4f}")

    def compare(label, head, t_ref, acc_ref, goal):
        ours = nclab_acc[head][: len(acc_ref)]
        ratio = t_ref / nclab_time[head]
        same = int(np.sum(np.isclose(ours, acc_ref)))
        print(f"{label:<34} {1e6 * t_ref:9.1f} us/episode   nclab x{ratio:6.1f} (goal x{goal})   "
              f"same accuracy on {same}/{len(acc_ref)} episodes, max |diff| {np.abs(ours - acc_ref).max():.4f}, "
              f"mean {acc_ref.mean():.4f} vs {ours.mean():.4f}")

    for head, goal in (("ncc", 50), ("ridge", 50), ("logistic", 10)):
        E = args.ref_episodes if head != "logistic" else max(2, args.ref_episodes // 2)
        t_ref, acc_ref = sklearn_loop(head, X, ep, E)
        compare(f"scikit-learn loop {head}", head, t_ref, acc_ref, goal)
    try:
        import easyfsl  # noqa: F401
    except ImportError:
        print("easyfsl comparison SKIPPED: easyfsl is not importable in this interpreter "
              "(run with /work/venv-bench/bin/python)")
        return
    for model_name, head in (("PrototypicalNetworks", "ncc"), ("SimpleShot", "ncc-cosine")):
        t_ref, acc_ref = easyfsl_loop(model_name, X, ep, args.ref_episodes)
        compare(f"easyfsl {model_name} vs {head}", head, t_ref, acc_ref, 20)
        if head == "ncc":
            print(f"{'   ridge vs the same easyfsl loop':<34} {'':9}              nclab ridge "
                  f"x{t_ref / nclab_time['ridge']:6.1f} (goal x20)")


if __name__ == "__main__":
    main()
