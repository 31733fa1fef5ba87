"""``nclab quickstart``: pre-train conv4 on the glyphs source scripts, then show that the
features transfer: collapse (CDNV) on train / test / novel samples and few-shot accuracy on
novel scripts with nearest-class-mean on raw pixels versus on the pre-trained features."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from nclab.atomic import atomic_write_json
from nclab.config import packaged_config
from nclab.extract import embed, load_run, split_images
from nclab.train.run import start_run
from nclab.train.rundir import RunDir

EPISODES = 1000


def transfer_summary(run_dir, episodes: int = EPISODES, seed: int = 0) -> dict:
    """CDNV per split, and 5-way 1/5-shot NCC accuracy on novel classes: pixels vs features."""
    import nclab
    loaded = load_run(run_dir)
    out: dict = {"cdnv": {}, "fewshot": []}
    novel_feats = None
    for split in ("train", "test", "novel"):
        imgs = split_images(loaded, split)
        F = embed(loaded.model, imgs.images, loaded.preprocess)
        out["cdnv"][split] = nclab.measure(F, imgs.labels).to_dict()["cdnv"]
        if split == "novel":
            novel_feats = (F, imgs)
    F, imgs = novel_feats
    pixels = imgs.images.reshape(len(imgs.images), -1).astype(np.float32) / 255.0
    out["cdnv"]["novel_pixels"] = nclab.measure(pixels, imgs.labels).to_dict()["cdnv"]
    for name, X in (("pixels", pixels), ("features", F)):
        for row in nclab.fewshot(X, imgs.labels, way=5, shot=(1, 5), query=15, episodes=episodes,
                                 heads=("ncc",), seed=seed):
            out["fewshot"].append(dict(row, input=name))
    return out


def format_records(records: list[dict]) -> str:
    lines = [f"{'epoch':>5} {'lr':>8} {'loss':>7} {'train acc':>9} {'test acc':>8} {'sec':>6}"]
    for r in records:
        lines.append(f"{r['epoch']:>5} {r['lr']:>8.4f} {r['loss']:>7.3f} {r['train_acc']:>9.3f} "
                     f"{r['test_acc']:>8.3f} {r['seconds']:>6.1f}")
    return "\n".join(lines)


def format_transfer(t: dict) -> str:
    c = t["cdnv"]
    lines = ["collapse (CDNV, lower = more collapsed):",
             f"  train {c['train']:.3f}   test {c['test']:.3f}   novel {c['novel']:.3f}   "
             f"(novel on raw pixels {c['novel_pixels']:.3f})",
             "novel-class transfer, nearest-class-mean, 5-way (mean ± 95% CI):"]
    for shot in sorted({r["shot"] for r in t["fewshot"]}):
        cells = {r["input"]: r for r in t["fewshot"] if r["shot"] == shot}
        lines.append(f"  {shot}-shot: raw pixels {100 * cells['pixels']['mean']:.1f} ± "
                     f"{100 * cells['pixels']['ci95']:.1f}%   pre-trained features "
                     f"{100 * cells['features']['mean']:.1f} ± {100 * cells['features']['ci95']:.1f}%")
    return "\n".join(lines)


def quickstart(overrides: Sequence[str] = (), out: str | None = None) -> RunDir:
    t0 = time.perf_counter()
    run = start_run(packaged_config("quickstart"), list(overrides),
                    out=out if out is not None else RunDir.default_path("quickstart"))
    print(f"\nrun directory: {run.path}")
    print(format_records(run.records()))
    transfer = transfer_summary(run.path)
    print(format_transfer(transfer))
    transfer["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(run.path / "quickstart.json", transfer)
    print(f"total {transfer['wall_seconds']:.0f} s; details in {run.path / 'quickstart.json'}")
    return run
