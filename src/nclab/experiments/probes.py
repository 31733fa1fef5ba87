"""Probes: collapse and few-shot transfer measured while the network trains (config ``probes:``).

:class:`Probes` is the epoch callback (attached by :mod:`nclab.experiments.training` when
``probes.enabled``). It probes at epoch 0 (the initial network, before any step), at the
epochs of ``probes.schedule`` (``every``: k, 2k, ...; ``log``: ``points`` log-spaced epochs,
Papyan et al. 2020), at ``probes.stages.epochs``, and always at the last epoch. At a probe,
every split is embedded once (eval mode, never augmented) and those features feed every metric:
:func:`nclab.measure` (train with the classifier W, b), the nearest-class-mean accuracy (on
test with the *train* class means: test collapse), :func:`nclab.fewshot.fewshot_report` with
Galanti's bound term on one fixed episode set per split / way / shot (``probes/episodes-<split>.npz``
in the run directory, seeded by ``probes.seed``: every epoch and every run on the same data
scores the same tasks), and optionally GC / geometric collapse and per-stage probes.

Keys added to that epoch's record of metrics.jsonl (flat; undefined values are null):

================================================  ==============  ==========================================
key                                               S               value
================================================  ==============  ==========================================
``probe``, ``probe_seconds``                                      true; wall seconds of the probe
``S/n_samples``, ``S/n_classes``                  probed splits   samples and classes probed
``S/cdnv``                                        probed splits   plug-in CDNV, (v_i + v_j) / (2 d_ij^2)
``S/cdnv_debiased``, ``S/cdnv_debiased_excluded`` probed splits   debiased CDNV; pairs it left out
``S/cdnv_asym``                                   probed splits   v_i / d_ij^2 over ordered pairs
``S/ncc_acc``                                     probed splits   NCC accuracy (test: train class means)
``train/nc1``, ``train/nc1_quotient``,            train           ``nclab.measure(...).to_dict()`` keys
``train/nc2_{equinorm,equiangle,maxangle,
etf_error}[_w]``, ``train/nc3``, ``train/nc4``,
``train/min_mean_distance``
``test/nc1`` ... ``test/min_mean_distance``        test            the same on the test samples (with the train
                                                                  classifier), when the test probe holds every
                                                                  class (no ``max_classes`` subset)
``train/acc``                                     train           classifier accuracy (eval mode, argmax W h + b)
``train/{g}_{w,h}_{cos,norm}``, ``S/{g}_acc``     train, test     with ``data.imbalance_ratio``, g = majority,
                                                                  minority: mean pairwise cosine and mean norm
                                                                  of the group's classifier rows (w) and centred
                                                                  class means (h); the group's accuracy
``S/fewshot/{k}w{n}s/{h}``, ``..._ci95``          fewshot.splits  mean accuracy (fraction), 95% half-width (on
                                                                  sign(h) |h|^beta with ``fewshot.power``)
``S/fewshot/{k}w{n}s/avg_cdnv``, ``bound``,       fewshot.splits  (k-1)(1+1/n) Avg CDNV beside the NCC
``ncc_error``                                                     error (Galanti et al. 2022, Prop. 5)
``S/gc``, ``S/gc_se``, ``S/geometric_collapse``   gc.splits       Munn et al. 2024 (eval-mode network)
``S/stage/L/{ncc_acc,cdnv,cdnv_debiased}``        stages.splits   globally pooled output of stage L
================================================  ==============  ==========================================

Compare splits with ``cdnv_debiased``: the plug-in CDNV depends on the samples per class
(train 16, test 4 on glyphs), the debiased one does not in expectation. The bound's Avg CDNV is
the plug-in value on the features the heads saw (l2-normalised by default), over all samples of
each episode class.

Subsets (to keep probes cheap), fixed and seeded, the same at every epoch: ``max_per_class``
samples per class of the splits in ``max_per_class_splits``, ``max_classes`` classes of the splits
in ``max_classes_splits`` (test, val, novel; never train, whose classes are the classifier's
rows). Labels keep their split's class ids. What a subset does to the numbers: fewer samples per
class lower the plug-in CDNV (not the debiased one, in expectation, though its residual bias
grows as samples per class shrink and CDNV grows), and NCC accuracy then uses means of fewer
samples, each including the sample classified (it reads higher); a class subset makes every
average over classes or pairs (CDNV, few-shot accuracy) one over a fixed random subset: unbiased
over the choice of subset, with the variance of that choice. Test NCC accuracy on a class subset
still chooses among all train class means.

Distributed runs: rank 0 probes alone, on the bare (unwrapped) network; the other ranks return
nothing and wait at the loop's next collective (the checkpoint), so a probe costs wall time
once, not once per rank. No global RNG is drawn (subsets, episodes and GC probes have their
own seeded generators) and batch-norm statistics are untouched (eval mode): a run with probes
trains exactly the same weights as one without.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from nclab.config import EVAL_BATCH_SIZE, ProbesConfig, RunConfig
from nclab.data.base import SPLITS, ImageSet
from nclab.data.prepare import PreparedData, train_counts
from nclab.errors import NclabError, unknown_name
from nclab.extract import classifier_weights, embed, embed_stages
from nclab.fewshot import HEADS, TRANSFORMS, Episodes, EpisodeSampler, fewshot_report, load_episodes, save_episodes
from nclab.fewshot.transforms import check_power, power_transform
from nclab.metrics import measure, ncc_accuracy
from nclab.metrics.gc import gc_report
from nclab.metrics.groups import group_accuracy, group_geometry
from nclab.metrics.stats import class_moments
from nclab.train.callbacks import EpochContext

SPLIT_KEYS = ("n_samples", "n_classes", "cdnv", "cdnv_debiased", "cdnv_debiased_excluded", "cdnv_asym")
TRAIN_KEYS = ("nc1", "nc1_quotient", "nc2_equinorm", "nc2_equiangle", "nc2_maxangle", "nc2_etf_error",
              "nc2_equinorm_w", "nc2_equiangle_w", "nc2_maxangle_w", "nc2_etf_error_w", "nc3", "nc4",
              "min_mean_distance")
STAGE_KEYS = ("cdnv", "cdnv_debiased")
SCHEDULES = ("every", "log")
FEWSHOT_SPLITS = ("val", "novel")
CLASS_SUBSET_SPLITS = ("test", "val", "novel")       # train keeps every class: W has a row for each


# --- when -------------------------------------------------------------------------------------

def log_epochs(points: int, epochs: int) -> list[int]:
    """``min(points, epochs)`` distinct epochs in 1..epochs, log-spaced from 1 to ``epochs``:
    round(epochs^(i/(P-1))), nudged up to stay distinct where rounding merges neighbours (the
    low end, where the spacing is below one epoch) and capped so that the last is ``epochs``."""
    P = min(points, epochs)
    if P == 1:
        return [epochs]
    out: list[int] = []
    for i, g in enumerate(np.geomspace(1, epochs, P)):
        e = max(int(round(g)), out[-1] + 1 if out else 1)       # distinct where rounding merges neighbours
        out.append(min(e, epochs - (P - 1 - i)))                 # room for the points still to come
    return out


def probe_epochs(p: ProbesConfig, epochs: int) -> list[int]:
    """The epochs probed in a run of ``epochs`` epochs: 0, the schedule's, the stage epochs, the last."""
    chosen = set(range(p.every, epochs + 1, p.every)) if p.schedule == "every" else set(log_epochs(p.points, epochs))
    if p.stages.enabled:
        chosen |= set(p.stages.epochs)
    return sorted(chosen | {0, epochs})


def stage_epoch(p: ProbesConfig, epoch: int) -> bool:
    return p.stages.enabled and (not p.stages.epochs or epoch in p.stages.epochs)


# --- checks -------------------------------------------------------------------------------------

def _names(value, key: str, valid, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise NclabError(f"{key}: expected a list of names ({', '.join(valid)}), got {value!r}")
    if not value and not allow_empty:
        raise NclabError(f"{key}: expected at least one of {', '.join(valid)}")
    for v in value:
        if v not in valid:
            raise unknown_name(f"name in {key}", v, valid)
    if len(set(value)) != len(value):
        raise NclabError(f"{key}: {value!r} names an entry twice")
    return value


def _ints(value, key: str, low: int, allow_empty: bool = False) -> list[int]:
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok or (not value and not allow_empty) or any(v < low for v in value) or len(set(value)) != len(value):
        raise NclabError(f"{key}: expected a list of distinct integers >= {low}, got {value!r}")
    return value


def _at_least(value, key: str, low: int) -> None:
    if value < low:
        raise NclabError(f"{key}={value}: expected >= {low}")


def _subset_of(names: list[str], key: str, probed: list[str]) -> None:
    for s in names:
        if s not in probed:
            raise NclabError(f"{key}: {s!r} is not a probed split (probes.splits={probed})")


def check_probes(cfg: RunConfig) -> None:
    """Every field of the ``probes:`` section, one line naming the field on the first problem."""
    p, f, g, st = cfg.probes, cfg.probes.fewshot, cfg.probes.gc, cfg.probes.stages
    if p.schedule not in SCHEDULES:
        raise unknown_name("probes.schedule", p.schedule, SCHEDULES)
    _at_least(p.every, "probes.every", 1)
    _at_least(p.points, "probes.points", 1)
    _names(p.splits, "probes.splits", SPLITS)
    if "test" in p.splits and "train" not in p.splits:
        raise NclabError("probes.splits: 'test' needs 'train' as well (test NCC accuracy uses the train class means)")
    if p.max_per_class is not None:
        _at_least(p.max_per_class, "probes.max_per_class", 2)
    _names(p.max_per_class_splits, "probes.max_per_class_splits", SPLITS, allow_empty=True)
    _names(p.max_classes_splits, "probes.max_classes_splits", CLASS_SUBSET_SPLITS, allow_empty=True)
    _subset_of(_names(f.splits, "probes.fewshot.splits", FEWSHOT_SPLITS, allow_empty=True), "probes.fewshot.splits",
               p.splits)
    _ints(f.ways, "probes.fewshot.ways", 2)
    _ints(f.shots, "probes.fewshot.shots", 1)
    if p.max_classes is not None:
        _at_least(p.max_classes, "probes.max_classes", max(f.ways) if f.splits else 2)
    _at_least(f.query, "probes.fewshot.query", 1)
    _at_least(f.episodes, "probes.fewshot.episodes", 2)
    _names(f.heads, "probes.fewshot.heads", HEADS)
    if f.transform not in TRANSFORMS:
        raise unknown_name("probes.fewshot.transform", f.transform, TRANSFORMS)
    if f.power is not None:
        try:
            check_power(f.power)
        except NclabError as e:
            raise NclabError(f"probes.fewshot.power={f.power!r}: {e}") from None
    if f.transform.startswith("center") and "train" not in p.splits:
        raise NclabError(f"probes.fewshot.transform={f.transform}: centring uses the mean train feature; "
                         "add 'train' to probes.splits")
    gc_splits = _names(g.splits, "probes.gc.splits", SPLITS)
    if g.enabled:                       # the default splits must not refuse a config that probes no GC
        _subset_of(gc_splits, "probes.gc.splits", p.splits)
    if g.probes is not None:
        _at_least(g.probes, "probes.gc.probes", 1)
    _at_least(g.per_class, "probes.gc.per_class", 1)
    _at_least(g.max_samples, "probes.gc.max_samples", 2 * g.per_class)
    stage_splits = _names(st.splits, "probes.stages.splits", SPLITS)
    if st.enabled:
        _subset_of(stage_splits, "probes.stages.splits", p.splits)
    for e in _ints(st.epochs, "probes.stages.epochs", 0, allow_empty=True):
        if e > cfg.train.epochs:
            raise NclabError(f"probes.stages.epochs: epoch {e} is beyond train.epochs={cfg.train.epochs}")


def probe_keys(cfg: RunConfig, split: str) -> list[str]:
    """The record keys a probe writes for ``split`` under ``cfg.probes`` (per-stage keys left out:
    they depend on the backbone's stage names). Empty when the split is not probed."""
    p, f = cfg.probes, cfg.probes.fewshot
    if not p.enabled or split not in p.splits:
        return []
    keys = [f"{split}/{k}" for k in SPLIT_KEYS + ("ncc_acc",) + (TRAIN_KEYS if split == "train" else ())]
    if split in f.splits:
        for k in f.ways:
            for n in f.shots:
                pre = f"{split}/fewshot/{k}w{n}s/"
                keys += [pre + h for h in f.heads] + [pre + h + "_ci95" for h in f.heads]
                keys += [pre + "avg_cdnv", pre + "bound", pre + "ncc_error"]
    if p.gc.enabled and split in p.gc.splits:
        keys += [f"{split}/gc", f"{split}/gc_se", f"{split}/geometric_collapse"]
    return keys


# --- on which samples -----------------------------------------------------------------------------

def probe_subset(images: ImageSet, split: str, p: ProbesConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows of ``images``, their labels) probed on ``split``: every sample, or a fixed seeded
    subset (``max_classes`` classes, at most ``max_per_class`` samples per class, on the splits
    listed for each). Labels keep the split's class ids. Depends only on the data and ``probes.seed``."""
    rng = np.random.default_rng([p.seed, SPLITS.index(split)])
    classes = np.arange(images.n_classes)
    if split in p.max_classes_splits and p.max_classes is not None and p.max_classes < len(classes):
        classes = np.sort(rng.choice(len(classes), p.max_classes, replace=False))
    cap = p.max_per_class if split in p.max_per_class_splits else None
    rows = [idx if cap is None or len(idx) <= cap else np.sort(rng.choice(idx, cap, replace=False))
            for idx in (images.class_index[c] for c in classes)]
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    return rows, images.labels[rows]


def check_data(p: ProbesConfig, data: PreparedData) -> None:
    """What the probes need of the dataset: two classes per probed split, enough samples per
    class (after the subset) for the few-shot episodes, and enough classes for every way."""
    for s in p.splits:
        n = data.splits[s].n_classes
        if n < 2:
            raise NclabError(f"probes.splits: dataset {data.name!r} has {n} {s!r} classes, expected at least 2 "
                             f"(remove {s!r} from probes.splits)")
    f = p.fewshot
    for s in f.splits:
        _, y = probe_subset(data.splits[s], s, p)
        counts = np.unique(y, return_counts=True)[1]
        need = max(f.shots) + f.query
        if counts.min() < need:
            raise NclabError(f"probes.fewshot: a probed {s!r} class has {counts.min()} samples, fewer than "
                             f"shot + query = {need} (lower probes.fewshot.query or raise probes.max_per_class)")
        if len(counts) < max(f.ways):
            raise NclabError(f"probes.fewshot.ways: {max(f.ways)}-way episodes need {max(f.ways)} classes, "
                             f"{s!r} probes {len(counts)}")


# --- what ---------------------------------------------------------------------------------------

def episode_sets(run_dir: Path, split: str, p: ProbesConfig, labels: np.ndarray) -> list[Episodes]:
    """The split's fixed episodes, one set per (way, shot): read from ``probes/episodes-<split>.npz``
    or, the first time, sampled (seeded by ``probes.seed``) and saved there."""
    f = p.fewshot
    want = [(k, n, f.query, f.episodes, p.seed) for k in f.ways for n in f.shots]
    path = Path(run_dir) / "probes" / f"episodes-{split}.npz"
    if path.exists():
        sets = load_episodes(path)
        have = [(e.way, e.shot, e.query, e.n_episodes, e.seed) for e in sets]
        if have != want:
            raise NclabError(f"{path}: holds episodes (way, shot, query, episodes, seed) {have}, "
                             f"expected {want} from probes.fewshot")
        return sets
    sets = [EpisodeSampler(k, n, q, e, seed).sample(labels) for k, n, q, e, seed in want]
    path.parent.mkdir(exist_ok=True)
    save_episodes(path, sets)
    return sets


def _split_keys(split: str, rec: dict) -> dict:
    keys = SPLIT_KEYS + (TRAIN_KEYS if split == "train" else ())
    return {f"{split}/{k}": rec[k] for k in keys} | {f"{split}/ncc_acc": rec["ncc_accuracy"]}


def _fewshot_keys(split: str, features: np.ndarray, labels: np.ndarray, sets: list[Episodes],
                  p: ProbesConfig, base_mean) -> dict:
    f, out = p.fewshot, {}
    for k in f.ways:
        res = fewshot_report(features, labels, way=k, shot=f.shots, query=f.query, episodes=f.episodes,
                             heads=tuple(f.heads), seed=p.seed, transform=f.transform, base_mean=base_mean,
                             episode_sets=[e for e in sets if e.way == k], bound=True)
        for r in res.rows:
            pre = f"{split}/fewshot/{k}w{r['shot']}s/{r['head']}"
            out[pre], out[pre + "_ci95"] = r["mean"], r["ci95"]
        for b in res.bound:
            pre = f"{split}/fewshot/{k}w{b['shot']}s/"
            out |= {pre + "avg_cdnv": b["avg_cdnv"], pre + "bound": b["bound_term"], pre + "ncc_error": b["ncc_error"]}
    return out


def _gc_keys(split: str, model, images: np.ndarray, labels: np.ndarray, preprocess, p: ProbesConfig) -> dict:
    """GC and geometric collapse of the embedding on ``per_class`` samples of each of
    ``max_samples // per_class`` seeded classes of the probed samples (the network in eval mode)."""
    g = p.gc
    rng = np.random.default_rng([p.seed, SPLITS.index(split), 1])
    present = np.unique(labels)
    classes = np.sort(rng.choice(present, min(len(present), g.max_samples // g.per_class), replace=False))
    rows = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:g.per_class] for c in classes])
    y = np.searchsorted(classes, labels[rows])
    param = next(model.parameters())
    x = preprocess(images[rows]).to(param.device, param.dtype)
    rep = gc_report(model.features, x, torch.as_tensor(y), g.probes, n_classes=len(classes), seed=p.seed)
    finite = lambda v: v if math.isfinite(v) else None  # noqa: E731
    return {f"{split}/gc": rep.gc.value, f"{split}/gc_se": finite(rep.gc.se),
            f"{split}/geometric_collapse": finite(rep.geometric_collapse)}


def class_groups(cfg: RunConfig, n_classes: int) -> dict[str, list[int]] | None:
    """{"majority": [...], "minority": [...]} train class ids under ``data.imbalance_ratio``, else None."""
    if cfg.data.imbalance_ratio is None:
        return None
    train_counts(cfg.data, n_classes)                       # checks the data options
    k_a = cfg.data.majority_classes if cfg.data.majority_classes is not None else n_classes // 2
    return {"majority": list(range(k_a)), "minority": list(range(k_a, n_classes))}


def _group_keys(W: np.ndarray, means: np.ndarray, logits: dict, subsets: dict, groups: dict) -> dict:
    """Minority collapse (Fang et al. 2021) per group g: ``train/{g}_{w,h}_{cos,norm}`` (mean
    pairwise cosine and mean norm of the group's classifier rows / centred train class means) and
    ``S/{g}_acc`` (classifier accuracy on the group's probed samples of S = train, test)."""
    out = {}
    for g, classes in groups.items():
        geo = group_geometry(W, means, classes)
        out |= {f"train/{g}_{k}": geo[k] for k in ("w_cos", "w_norm", "h_cos", "h_norm")}
        for s, z in logits.items():
            out[f"{s}/{g}_acc"] = group_accuracy(z, subsets[s][1], classes)
    return out


def measure_probe(model, data: PreparedData, preprocess, p: ProbesConfig, subsets: dict, episodes: dict,
                  stages: bool = False, batch_size: int = EVAL_BATCH_SIZE, groups: dict | None = None) -> dict:
    """One probe of ``model`` (eval mode): every split of ``subsets`` ({split: (rows, labels)})
    embedded once, then every metric of the module docstring on those features; with ``groups``
    (:func:`class_groups`) the minority-collapse keys."""
    feats, stage_feats = {}, {}
    for s, (rows, _) in subsets.items():
        images = data.splits[s].images[rows]
        if stages and s in p.stages.splits:
            feats[s], stage_feats[s] = embed_stages(model, images, preprocess, batch_size)
        else:
            feats[s] = embed(model, images, preprocess, batch_size)
    out: dict = {}
    train_means = base_mean = None
    if "train" in subsets:
        y = subsets["train"][1]
        W, b = classifier_weights(model)
        out |= _split_keys("train", measure(feats["train"], y, W, b).to_dict())
        train_means = class_moments(feats["train"], y, data.splits["train"].n_classes).means
        base_mean = feats["train"].astype(np.float64).mean(0)
        logits = {s: feats[s].astype(np.float64) @ W.T.astype(np.float64) + b for s in ("train", "test") if s in subsets}
        out["train/acc"] = float((logits["train"].argmax(1) == y).mean())
        if groups:
            out |= _group_keys(W, train_means, logits, subsets, groups)
    for s in subsets:
        if s == "test" and "train" in subsets and len(np.unique(subsets[s][1])) == len(W):
            # every class probed: the classifier's collapse keys on held-out samples too
            rec = measure(feats[s], subsets[s][1], W, b).to_dict()
            out |= _split_keys(s, rec) | {f"test/{k}": rec[k] for k in TRAIN_KEYS}
        elif s != "train":
            out |= _split_keys(s, measure(feats[s], subsets[s][1]).to_dict())
    if "test" in subsets:
        out["test/ncc_acc"] = ncc_accuracy(feats["test"], subsets["test"][1], train_means)
    few, few_mean = feats, base_mean
    if p.fewshot.power is not None:                 # few-shot on powered features, centred on their own mean
        few = {s: power_transform(feats[s], p.fewshot.power).numpy() for s in {*p.fewshot.splits, "train"} & feats.keys()}
        few_mean = few["train"].astype(np.float64).mean(0) if "train" in few else None
    for s in p.fewshot.splits:
        out |= _fewshot_keys(s, few[s], subsets[s][1], episodes[s], p, few_mean)
    if p.gc.enabled:
        for s in p.gc.splits:
            out |= _gc_keys(s, model, data.splits[s].images[subsets[s][0]], subsets[s][1], preprocess, p)
    for s, by_stage in stage_feats.items():
        for name, F in by_stage.items():
            rec = measure(F, subsets[s][1]).to_dict()
            out |= {f"{s}/stage/{name}/{k}": rec[k] for k in STAGE_KEYS}
            out[f"{s}/stage/{name}/ncc_acc"] = rec["ncc_accuracy"]
    return out


# --- the callback -------------------------------------------------------------------------------

class Probes:
    """Epoch callback of the ``probes:`` section (see the module docstring). Holds no state
    until its first call in a process (so it pickles to DDP workers as an empty object); the
    subsets and episodes are then built once per run and reused at every probe."""

    config_section = "probes"

    def __init__(self) -> None:
        self._run: tuple | None = None               # (run directory, data fingerprint) of the cache
        self._subsets: dict = {}
        self._episodes: dict = {}

    def validate(self, cfg: RunConfig, data: PreparedData) -> None:
        """Called by ``start_run`` before the run directory exists."""
        check_probes(cfg)
        check_data(cfg.probes, data)

    def __call__(self, ctx: EpochContext) -> dict | None:
        p = ctx.config.probes
        if ctx.epoch not in probe_epochs(p, ctx.config.train.epochs) or ctx.fabric.global_rank != 0:
            return None
        t0 = time.perf_counter()
        if self._run != (str(ctx.run_dir), ctx.data.fingerprint):
            self._subsets = {s: probe_subset(ctx.data.splits[s], s, p) for s in p.splits}
            self._episodes = {s: episode_sets(ctx.run_dir, s, p, self._subsets[s][1]) for s in p.fewshot.splits}
            self._run = (str(ctx.run_dir), ctx.data.fingerprint)
        out = {"probe": True}
        out |= measure_probe(ctx.model, ctx.data, ctx.preprocess, p, self._subsets, self._episodes,
                             stages=stage_epoch(p, ctx.epoch), batch_size=ctx.config.trainer.eval_batch_size,
                             groups=class_groups(ctx.config, ctx.data.splits["train"].n_classes))
        out["probe_seconds"] = time.perf_counter() - t0
        return out
