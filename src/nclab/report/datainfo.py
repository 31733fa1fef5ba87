"""``nclab data info`` / ``nclab data show``: what a dataset holds, and a picture of it."""

from __future__ import annotations

import numpy as np

from nclab.atomic import atomic_path, check_target
from nclab.config import DataConfig
from nclab.data.base import CLASS_SPLITS
from nclab.data.prepare import split_dataset
from nclab.data.registry import load_dataset
from nclab.errors import NclabError


def data_info(cfg: DataConfig) -> dict:
    """Classes and samples per class split (source / val / novel), the source holdout, image
    shape, a fingerprint of the arrays and the reader's integrity checks."""
    ds = load_dataset(cfg)
    splits = {}
    for s in CLASS_SPLITS:
        ids = ds.class_splits.get(s, np.zeros(0, np.int64))
        counts = np.bincount(ds.labels, minlength=len(ds.class_names))[ids]
        entry = {"n_classes": int(len(ids)), "n_samples": int(counts.sum()),
                 "min_per_class": int(counts.min()) if len(ids) else 0}
        if ds.groups is not None:
            entry["n_groups"] = len({ds.groups[i] for i in ids})
        splits[s] = entry
    prepared = split_dataset(ds, cfg)
    info = {"name": ds.name, "splits": splits,
            "holdout": {"train": len(prepared.splits["train"]), "test": len(prepared.splits["test"]),
                        "per_class": cfg.holdout},
            "image_shape": list(ds.image_shape), "fingerprint": prepared.fingerprint,
            "n_classes": len(ds.class_names), "n_samples": int(len(ds.labels))}
    if ds.meta:
        info["meta"] = ds.meta
    return info


def format_data_info(info: dict) -> str:
    lines = [f"dataset {info['name']}: {info['n_classes']} classes, {info['n_samples']} images of shape "
             f"{'x'.join(map(str, info['image_shape']))}, fingerprint {info['fingerprint']}",
             f"{'split':<8}{'classes':>9}{'samples':>10}{'min/class':>11}{'groups':>8}"]
    for s, v in info["splits"].items():
        lines.append(f"{s:<8}{v['n_classes']:>9}{v['n_samples']:>10}{v['min_per_class']:>11}"
                     f"{v.get('n_groups', '-'):>8}")
    h = info["holdout"]
    lines.append(f"source holdout ({h['per_class']} per class): {h['train']} train / {h['test']} test images")
    checks = info.get("meta", {}).get("checks")
    if checks:
        lines.append("checks: " + ", ".join(f"{k}={v}" for k, v in checks.items()))
    return "\n".join(lines)


def data_show(cfg: DataConfig, out: str, split: str = "train", n_classes: int = 12, n_samples: int = 10,
              seed: int = 0) -> None:
    """A PNG grid of samples, one row per class (random classes and samples of ``split``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_target(out)
    if n_classes < 1 or n_samples < 1:
        raise NclabError(f"--classes {n_classes} --samples {n_samples}: expected at least 1 of each")
    if seed < 0:
        raise NclabError(f"--seed {seed}: expected a seed >= 0")
    images = split_dataset(load_dataset(cfg), cfg).splits[split]
    if images.n_classes == 0:
        raise NclabError(f"dataset {cfg.name!r} has no {split!r} classes to show")
    n_samples = min(n_samples, int(images.counts().max()))
    rng = np.random.default_rng(seed)
    classes = np.sort(rng.choice(images.n_classes, min(n_classes, images.n_classes), replace=False))
    cell = images.image_shape[0]
    fig, axes = plt.subplots(len(classes), 1, figsize=(n_samples * 0.6 + 2.5, len(classes) * 0.62), squeeze=False)
    for ax, c in zip(axes[:, 0], classes):
        idx = images.class_index[c]
        pick = rng.choice(idx, min(n_samples, len(idx)), replace=False)
        row = np.concatenate([np.pad(images.images[i], [(1, 1), (1, 1)] + [(0, 0)] * (images.images.ndim - 3),
                                     constant_values=128) for i in pick], axis=1)
        ax.imshow(row, cmap="gray" if row.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(images.class_names[c][:28], rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"{cfg.name} / {split}: {images.n_classes} classes, {cell}x{cell}", fontsize=9)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
