"""``nclab fewshot SOURCE``: few-shot accuracy table (stdout) and optional JSON record."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from nclab.errors import NclabError
from nclab.extract import load_feature_source
from nclab.fewshot.transforms import check_power, power_transform
from nclab.report.tables import format_fewshot


def _load_source(source: str, split: str | None, checkpoint: str = "final"):
    """A feature file, or a run directory embedded on ``split`` (default novel)."""
    if Path(source).is_dir() and split is None:
        split = "novel"
    return load_feature_source(source, split, checkpoint), split


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



def fewshot_command(args) -> int:
    from nclab.atomic import atomic_write_json, check_target
    from nclab.fewshot.evaluate import fewshot_report
    for out in (args.json_out, args.episodes_file):
        if out:
            check_target(out)

    shots = list(args.shot)
    heads = list(args.head)
    transform = getattr(args, "transform", "l2")
    power = getattr(args, "power", None)
    if power is not None:
        check_power(power)                  # before any run is loaded or embedded
    fs, split = _load_source(args.source, args.split, getattr(args, "checkpoint", "final"))
    labels = np.asarray(fs.labels)
    features = fs.features if power is None else power_transform(fs.features, power).numpy()
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
    result = fewshot_report(features, labels, way=args.way, shot=shots, query=args.query, episodes=args.episodes,
                            heads=heads, seed=args.seed, transform=transform, episode_sets=sets, bound=True)
    seconds = time.perf_counter() - t0
    print(f"{args.source}" + (f" [{split}]" if split else "") +
          f": {len(labels)} samples, {len(np.unique(labels))} classes, d = {fs.features.shape[1]}, " +
          ("" if power is None else f"power transform beta {power:g}, ") +
          f"features {transform}, seed {args.seed}" +
          (f", episodes {episodes_io} {args.episodes_file}" if episodes_io else ""))
    print(format_fewshot(result.rows, result.bound))
    if args.json_out:
        from nclab import __version__
        record = {
            **result.to_dict(),
            "source": str(args.source), "split": split, "n_samples": int(len(labels)),
            "n_classes": int(len(np.unique(labels))), "dim": int(fs.features.shape[1]),
            "way": args.way, "shots": shots, "query": args.query, "episodes": args.episodes,
            "heads": heads, "seed": args.seed, "transform": transform, "power": power,
            "episodes_file": args.episodes_file,
            "ci": "ci95 = 1.96 std / sqrt(E), ci95_t = t(0.975, E-1) std / sqrt(E), std with ddof = 1",
            "seconds": round(seconds, 3), "nclab_version": __version__,
        }
        atomic_write_json(args.json_out, record)
    return 0
