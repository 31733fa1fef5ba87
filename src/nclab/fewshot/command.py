"""``nclab fewshot SOURCE``: few-shot accuracy table (stdout) and optional JSON record."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from nclab.errors import NclabError


def _load_source(source: str, split: str | None):
    """A feature file, or a run directory embedded on ``split`` (default novel)."""
    if Path(source).is_dir() and split is None:
        split = "novel"
    try:
        from nclab.extract import load_feature_source
    except ImportError:
        if Path(source).is_dir():
            raise NclabError(f"{source}: reading run directories needs nclab.extract, which this install lacks; "
                             f"pass a feature file F.npz instead") from None
        from nclab.featurefile import load_features
        return load_features(source), split
    return load_feature_source(source, split), split


def _episode_sets(path: str | None, labels, way: int, shots: list[int], query: int, episodes: int, seed: int):
    """Episodes from ``path`` if it exists (checked against the settings), else sampled
    and, with a path, saved there before any evaluation."""
    from nclab.fewshot.episodes import EpisodeSampler, load_episodes, save_episodes
    if path and Path(path).exists():
        sets = {s.shot: s for s in load_episodes(path)}
        for n in shots:
            s = sets.get(n)
            if s is None:
                raise NclabError(f"{path}: holds episodes for shots {sorted(sets)}, not for {n}-shot")
            if (s.way, s.query, s.n_episodes) != (way, query, episodes):
                raise NclabError(f"{path}: {n}-shot episodes are {s.way}-way {s.query}-query x {s.n_episodes}, "
                                 f"expected {way}-way {query}-query x {episodes}")
            s.check(labels, path)
        return [sets[n] for n in shots], "loaded"
    sets = [EpisodeSampler(way, n, query, episodes, seed).sample(labels) for n in shots]
    if path:
        save_episodes(path, sets)
        return sets, "saved"
    return sets, None


def format_table(rows: list[dict], bound: list[dict]) -> str:
    lines = [f"{'head':<12}{'way':>4}{'shot':>5}{'query':>6}{'episodes':>9}{'acc %':>8}{'± ci95':>8}{'± t95':>8}"]
    for r in rows:
        lines.append(f"{r['head']:<12}{r['way']:>4}{r['shot']:>5}{r['query']:>6}{r['episodes']:>9}"
                     f"{100 * r['mean']:>8.2f}{100 * r['ci95']:>8.2f}{100 * r['ci95_t']:>8.2f}")
    if bound:
        lines.append("")
        lines.append(f"{'way':>4}{'shot':>5}{'avg CDNV':>11}{'bound term':>12}{'NCC error':>11}"
                     "   (Galanti et al. 2022: (k-1)(1+1/n) Avg CDNV)")
        for b in bound:
            lines.append(f"{b['way']:>4}{b['shot']:>5}{b['avg_cdnv']:>11.4g}{b['bound_term']:>12.4g}{b['ncc_error']:>11.4f}")
    return "\n".join(lines)


def fewshot_command(args) -> int:
    from nclab.atomic import atomic_write_json
    from nclab.fewshot.evaluate import fewshot_report

    shots = list(args.shot)
    heads = list(args.head)
    transform = getattr(args, "transform", "l2")
    fs, split = _load_source(args.source, args.split)
    labels = np.asarray(fs.labels)
    from nclab.fewshot.episodes import EpisodeSampler
    for n in shots:                         # argument errors before any file is written
        EpisodeSampler(args.way, n, args.query, args.episodes, args.seed)._check_args()
    from nclab.fewshot.heads import make_head
    for h in heads:
        make_head(h)
    if args.episodes < 2:
        raise NclabError(f"--episodes: a confidence interval needs at least 2 episodes, got {args.episodes}")
    sets, episodes_io = _episode_sets(args.episodes_file, labels, args.way, shots, args.query, args.episodes, args.seed)
    t0 = time.perf_counter()
    result = fewshot_report(fs.features, labels, way=args.way, shot=shots, query=args.query, episodes=args.episodes,
                            heads=heads, seed=args.seed, transform=transform, episode_sets=sets, bound=True)
    seconds = time.perf_counter() - t0
    print(f"{args.source}" + (f" [{split}]" if split else "") +
          f": {len(labels)} samples, {len(np.unique(labels))} classes, d = {fs.features.shape[1]}, "
          f"features {transform}, seed {args.seed}" +
          (f", episodes {episodes_io} {args.episodes_file}" if episodes_io else ""))
    print(format_table(result.rows, result.bound))
    if args.json_out:
        from nclab import __version__
        record = {
            "results": result.rows,
            "bound": result.bound,
            "source": str(args.source), "split": split, "n_samples": int(len(labels)),
            "n_classes": int(len(np.unique(labels))), "dim": int(fs.features.shape[1]),
            "way": args.way, "shots": shots, "query": args.query, "episodes": args.episodes,
            "heads": heads, "seed": args.seed, "transform": transform,
            "episodes_file": args.episodes_file,
            "ci": "ci95 = 1.96 std / sqrt(E), ci95_t = t(0.975, E-1) std / sqrt(E), std with ddof = 1",
            "per_episode": {f"{h}/{n}": [round(float(a), 6) for a in result.accuracies[(n, h)]]
                            for n in shots for h in heads},
            "seconds": round(seconds, 3), "nclab_version": __version__,
        }
        atomic_write_json(args.json_out, record)
    return 0
