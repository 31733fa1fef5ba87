"""Few-shot evaluation of pre-trained runs as the field reports it.

Each head sees the features through the transform the literature uses for it (SimpleShot,
Wang et al. 2019: NCC on centred-then-L2-normalised features, "CL2N", centred on the mean
feature of the base classes; RFS, Tian et al. 2020: logistic regression, L2, C = 1, on
L2-normalised features), on 1,000-2,000 seeded k-way n-shot episodes shared by every head and
every run, with the mean accuracy and its 95% interval per run and, over runs that differ by
their pre-training seed, the mean of the run means with their spread (std, ddof = 1, and the
Student-t 95% interval over seeds). Because every run answers the same episodes, two runs (say a
recipe and a change to it) compare *paired*: the mean of the per-episode accuracy differences and
its 95% interval over episodes (:func:`paired_differences`), far narrower than the two runs'
intervals combined when the runs err on the same episodes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _st

from nclab.errors import NclabError
from nclab.extract import features_of_split, load_run
from nclab.fewshot import EpisodeSampler, fewshot_report, make_head
from nclab.fewshot.stats import confidence_interval
from nclab.fewshot.transforms import TRANSFORMS, base_mean, check_power, power_transform

# The transform each head is reported with (SimpleShot CL2N for the nearest-mean heads and
# ridge, RFS's L2 normalisation for logistic regression).
FIELD_TRANSFORMS = {"ncc": "center+l2", "ncc-cosine": "center", "ridge": "center+l2", "logistic": "l2",
                    "1nn": "center+l2"}


def head_transforms(heads: Sequence[str], transforms: str | Mapping[str, str] | None = None) -> dict[str, str]:
    """{head: transform}: ``None`` the field's choice per head (:data:`FIELD_TRANSFORMS`, else l2),
    a string the same transform for all, a mapping per head (others as ``None``)."""
    given = {h: transforms for h in heads} if isinstance(transforms, str) else dict(transforms or {})
    unknown = set(given) - set(heads)
    if unknown:
        raise NclabError(f"transforms given for heads {sorted(unknown)} that are not evaluated ({', '.join(heads)})")
    out = {h: given.get(h, FIELD_TRANSFORMS.get(h, "l2")) for h in heads}
    for h, t in out.items():
        make_head(h)
        if t not in TRANSFORMS:
            raise NclabError(f"transform {t!r} for head {h}: expected one of {', '.join(TRANSFORMS)}")
    return out


@dataclass
class TransferEvaluation:
    """``rows``: one per (run, way, shot, head) with the run's mean accuracy, intervals over
    episodes and ``episode_accuracies`` (one per episode, in the shared episodes' order);
    ``summary``: one per (way, shot, head) over the runs (pre-training seeds); ``paired``: filled
    by :func:`paired_differences`."""

    rows: list[dict] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    paired: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "rows": self.rows, "summary": self.summary,
                **({"paired": self.paired} if self.paired else {})}


def paired_differences(ev: TransferEvaluation, reference: int = 0) -> list[dict]:
    """Each other run against run number ``reference`` of ``ev`` on the same episodes: per (way,
    shot, head) the mean of ``acc_run - acc_reference`` over episodes with its 95% intervals
    (:func:`nclab.fewshot.stats.confidence_interval` of the differences) and the number of episodes
    each run answered better. Stored in ``ev.paired`` and returned."""
    runs = list(dict.fromkeys(r["run"] for r in ev.rows))
    if len(runs) < 2:
        raise NclabError(f"paired comparison: expected at least 2 runs, got {len(runs)}")
    if not 0 <= reference < len(runs):
        raise NclabError(f"paired comparison: reference run {reference} out of range for {len(runs)} runs")
    ref = runs[reference]
    cell = {(r["run"], r["way"], r["shot"], r["head"]): np.asarray(r["episode_accuracies"], dtype=np.float64)
            for r in ev.rows}
    ev.paired = []
    for s in ev.summary:
        key = (s["way"], s["shot"], s["head"])
        a0 = cell[(ref,) + key]
        for run in runs:
            if run != ref:
                d = cell[(run,) + key] - a0
                ev.paired.append({"run": run, "reference": ref, "way": key[0], "shot": key[1], "head": key[2],
                                  "episodes": int(d.size), "better": int((d > 0).sum()), "worse": int((d < 0).sum()),
                                  **{f"diff_{k}": v for k, v in confidence_interval(d).items()}})
    return ev.paired


def seed_spread(means: Sequence[float]) -> dict:
    """Mean of per-run mean accuracies, their std (ddof = 1) and t-interval t_{0.975, n-1} std / sqrt(n)
    (None for one run)."""
    a = np.asarray(means, dtype=np.float64)
    n = len(a)
    if n < 2:
        return {"n_runs": n, "mean": float(a.mean()), "seed_std": None, "seed_ci95_t": None}
    std = float(a.std(ddof=1))
    return {"n_runs": n, "mean": float(a.mean()), "seed_std": std,
            "seed_ci95_t": float(_st.t.ppf(0.975, n - 1)) * std / math.sqrt(n)}


def evaluate_transfer(run_dirs: Sequence[str | os.PathLike], split: str = "novel", way: int | Sequence[int] = 5,
                      shot: int | Sequence[int] = (1, 5), query: int = 15, episodes: int = 2000,
                      heads: Sequence[str] = ("ncc", "ridge", "logistic"),
                      transforms: str | Mapping[str, str] | None = None, seed: int = 0,
                      base_split: str = "train", tta: str = "none", checkpoint: str = "final",
                      power: float | None = None, progress=None) -> TransferEvaluation:
    """Few-shot accuracy of the runs ``run_dirs`` (typically one recipe at several
    ``trainer.seed``) on ``split``, every way x shot, each head on its transform
    (:func:`head_transforms`); centring uses the mean feature of the run's ``base_split``.
    The episodes are sampled once per (way, shot) from ``seed`` and shared by all runs and heads.
    ``tta="flip"``: every image's features (target and base split) are the mean over the image
    and its horizontal mirror (natural images only). ``checkpoint``: which weights of each run
    (:func:`nclab.extract.load_run`: final, last or best). ``power``: a beta in (0, 1] applies the
    signed power transform sign(h) |h|^beta to every feature (target and base split) before the
    heads' transforms (:func:`nclab.fewshot.transforms.power_transform`); None: none.
    ``progress``: optional callable receiving one line per finished run."""
    if not run_dirs:
        raise NclabError("evaluate: expected at least one run directory")
    ways = [way] if isinstance(way, (int, np.integer)) else list(way)
    shots = [shot] if isinstance(shot, (int, np.integer)) else list(shot)
    tf = head_transforms(heads, transforms)
    if power is not None:
        check_power(power)
    pw = (lambda f: f) if power is None else (lambda f: power_transform(f, power))
    by_transform: dict[str, list[str]] = {}
    for h, t in tf.items():
        by_transform.setdefault(t, []).append(h)
    settings = {"split": split, "ways": ways, "shots": shots, "query": query, "episodes": episodes,
                "heads": list(heads), "transforms": tf, "seed": seed, "base_split": base_split,
                "tta": tta, "checkpoint": checkpoint, "power": power, "runs": [str(r) for r in run_dirs],
                "ci": "per run: ci95 = 1.96 std / sqrt(E) over episodes; over runs: seed_ci95_t = "
                      "t(0.975, n-1) std / sqrt(n) of the run means"}
    out = TransferEvaluation(settings=settings)
    episode_sets: dict[tuple[int, int], object] = {}
    labels0 = None
    for run_dir in run_dirs:
        loaded = load_run(run_dir, checkpoint)
        target = features_of_split(loaded, split, tta)
        y = np.asarray(target.labels)
        if labels0 is None:
            labels0 = y
        elif not np.array_equal(y, labels0):
            raise NclabError(f"{run_dir}: its {split} split differs from that of {run_dirs[0]}; "
                             f"evaluate runs of the same data together")
        mean = None
        if any(t.startswith("center") for t in tf.values()):
            mean = base_mean(pw(features_of_split(loaded, base_split, tta).features))
        features = pw(target.features)
        for k in ways:
            for n in shots:
                if (k, n) not in episode_sets:
                    episode_sets[(k, n)] = EpisodeSampler(k, n, query, episodes, seed).sample(y)
            for t, group in by_transform.items():
                res = fewshot_report(features, y, way=k, shot=shots, query=query, episodes=episodes,
                                     heads=tuple(group), seed=seed, transform=t, base_mean=mean,
                                     episode_sets=[episode_sets[(k, n)] for n in shots])
                for r in res.rows:
                    out.rows.append({"run": str(run_dir), "seed": loaded.config.trainer.seed, "split": split,
                                     "transform": t, **r, "episode_accuracies":
                                     np.asarray(res.accuracies[(r["shot"], r["head"])], dtype=np.float64).tolist()})
        if progress is not None:
            progress(f"{run_dir}: done")
    order = {h: i for i, h in enumerate(heads)}
    keys = sorted({(r["way"], r["shot"], r["head"]) for r in out.rows}, key=lambda x: (x[0], x[1], order[x[2]]))
    for k, n, h in keys:
        rows = [r for r in out.rows if (r["way"], r["shot"], r["head"]) == (k, n, h)]
        out.summary.append({"way": k, "shot": n, "head": h, "transform": tf[h], "episodes": episodes,
                            **seed_spread([r["mean"] for r in rows]),
                            "ci95": float(np.mean([r["ci95"] for r in rows]))})
    return out
