"""``nclab quickstart``: pre-train conv4 on the glyphs source scripts with probes at every epoch,
then show that collapse forms and transfers: the debiased CDNV on train / test / novel samples
at initialisation and at the end (and on raw pixels), and few-shot accuracy on novel scripts with
nearest-class-mean on raw pixels versus on the pre-trained features."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

import nclab
from nclab.atomic import atomic_write_json
from nclab.config import packaged_config
from nclab.experiments.probes import probe_subset
from nclab.experiments.training import train
from nclab.extract import embed, load_run, split_images
from nclab.train.rundir import RunDir

EPISODES = 1000
SPLITS = ("train", "test", "novel")


def transfer_summary(run_dir, episodes: int = EPISODES, seed: int = 0) -> dict:
    """From the probe records: debiased (and plug-in) CDNV per split at epoch 0 and at the end,
    and the raw pixels' on the same novel samples; then 5-way 1/5-shot NCC accuracy on all novel
    classes (``episodes`` seeded episodes), raw pixels against the final features."""
    loaded = load_run(run_dir)
    probes = [r for r in loaded.run.records() if r.get("probe")]
    first, last = probes[0], probes[-1]
    out: dict = {"epochs": [first["epoch"], last["epoch"]], "fewshot": []}
    for key in ("cdnv_debiased", "cdnv"):
        out[key] = {s: [first[f"{s}/{key}"], last[f"{s}/{key}"]] for s in SPLITS}
    novel = split_images(loaded, "novel")
    pixels = novel.images.reshape(len(novel), -1).astype(np.float32) / 255.0
    rows, y = probe_subset(novel, "novel", loaded.config.probes)
    rec = nclab.measure(pixels[rows], y).to_dict()
    out["novel_pixels"] = {"cdnv_debiased": rec["cdnv_debiased"], "cdnv": rec["cdnv"]}
    F = embed(loaded.model, novel.images, loaded.preprocess)
    for name, X in (("pixels", pixels), ("features", F)):
        for row in nclab.fewshot(X, novel.labels, way=5, shot=(1, 5), query=15, episodes=episodes,
                                 heads=("ncc",), seed=seed):
            out["fewshot"].append(dict(row, input=name))
    return out


def _cell(v, fmt: str, width: int) -> str:
    return f"{'-' if v is None else format(v, fmt):>{width}}"


def format_records(records: list[dict]) -> str:
    """One line per record: the training columns (empty at epoch 0) and the probes' debiased CDNV."""
    lines = [f"{'epoch':>5} {'lr':>8} {'loss':>7} {'train acc':>9} {'test acc':>8} {'sec':>6} {'probe s':>7} "
             + " ".join(f"{'CDNV ' + s:>10}" for s in SPLITS)]
    for r in records:
        lines.append(f"{r['epoch']:>5} {_cell(r.get('lr'), '.4f', 8)} {_cell(r.get('loss'), '.3f', 7)} "
                     f"{_cell(r.get('train_acc'), '.3f', 9)} {_cell(r.get('test_acc'), '.3f', 8)} "
                     f"{_cell(r.get('seconds'), '.1f', 6)} {_cell(r.get('probe_seconds'), '.1f', 7)} "
                     + " ".join(_cell(r.get(f"{s}/cdnv_debiased"), ".3f", 10) for s in SPLITS))
    return "\n".join(lines)


def format_transfer(t: dict) -> str:
    d, e0, e1 = t["cdnv_debiased"], *t["epochs"]
    at_end = sorted(SPLITS, key=lambda s: d[s][1])
    lines = [f"collapse (debiased CDNV, lower = more collapsed), epoch {e0} -> {e1}:",
             "  " + "   ".join(f"{s} {d[s][0]:.3f} -> {d[s][1]:.3f}" for s in SPLITS)
             + f"   (novel on raw pixels {t['novel_pixels']['cdnv_debiased']:.3f})",
             f"  order at epoch {e1}: {' < '.join(at_end)}",
             "novel-class transfer, nearest-class-mean, 5-way (mean ± 95% CI):"]
    for shot in sorted({r["shot"] for r in t["fewshot"]}):
        cells = {r["input"]: r for r in t["fewshot"] if r["shot"] == shot}
        lines.append(f"  {shot}-shot: raw pixels {100 * cells['pixels']['mean']:.1f} ± "
                     f"{100 * cells['pixels']['ci95']:.1f}%   pre-trained features "
                     f"{100 * cells['features']['mean']:.1f} ± {100 * cells['features']['ci95']:.1f}%")
    return "\n".join(lines)


def quickstart(overrides: Sequence[str] = (), out: str | None = None) -> RunDir:
    t0 = time.perf_counter()
    run = train(packaged_config("quickstart"), list(overrides),
                out=out if out is not None else RunDir.default_path("quickstart"))
    print(f"\nrun directory: {run.path}")
    print(format_records(run.records()))
    transfer = transfer_summary(run.path)
    print(format_transfer(transfer))
    # Figures (CDNV per split and few-shot accuracy against epoch) belong to the report layer
    # (nclab.report, issue 11 item 4): write them for run.path here and print where they are.
    transfer["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(run.path / "quickstart.json", transfer)
    print(f"total {transfer['wall_seconds']:.0f} s; details in {run.path / 'quickstart.json'}")
    return run
