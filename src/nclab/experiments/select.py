"""Model selection (``train.select``): keep the weights of the epoch with the best value of a probe
metric on the *val* classes, as in the seed talk's "lr scheduling + model selection" row
(Galanti et al. 2022, Table 1: the checkpoint chosen by validation-class few-shot accuracy).

``train.select: val/fewshot/5w1s/ncc`` (any key the probes write for the val split, see
:func:`nclab.experiments.probes.probe_keys`) with ``train.select_mode``:

- ``max`` / ``min``: the direction, explicitly;
- ``auto`` (default): inferred from the key's last component: accuracies (``ncc_acc`` and the
  few-shot heads ``ncc``, ``ridge``, ``logistic``, ``ncc-cosine``, ``1nn``) are maximised;
  ``cdnv``, ``cdnv_debiased``, ``cdnv_asym``, ``avg_cdnv``, ``bound``, ``ncc_error``, ``gc``,
  ``geometric_collapse`` are minimised; other keys (sample counts, ``*_ci95``, excluded pairs)
  have no natural direction and need an explicit mode.

Candidates are the trained epochs 1..E whose record holds a finite value of the metric (the
probe epochs; the last epoch is always probed; the initial network, epoch 0, is not a candidate).
The first epoch reaching the best value is kept (a later tie does not replace it). When an epoch
improves on every earlier one, the callback writes ``best.safetensors`` beside the final
``model.safetensors`` (atomically; its safetensors metadata names the metric, mode, epoch, step
and value) and then ``best.json`` with the same fields; every record from epoch 1 on carries
``select/best_epoch`` and ``select/best_value`` (the choice so far; null before any candidate).

Resume: the best so far is recomputed from the records in metrics.jsonl, which a resumed run
truncates to those covered by its checkpoint, so an interrupted and resumed run keeps the same
epoch as an uninterrupted one (on CPU, where resume is bit-identical, the same weights too: an
epoch replayed after a crash rewrites ``best.safetensors`` with identical values).

``nclab features | measure | fewshot | gc RUN --checkpoint best`` (and ``load_run(run, "best")``)
use the selected weights.
"""

from __future__ import annotations

import json
import math

from safetensors.torch import save

from nclab.atomic import atomic_write_bytes, atomic_write_json
from nclab.config import RunConfig
from nclab.data.prepare import PreparedData
from nclab.errors import NclabError, unknown_name
from nclab.experiments.probes import probe_keys
from nclab.fewshot import HEADS
from nclab.train.callbacks import EpochContext
from nclab.train.rundir import RunDir

MODES = ("auto", "max", "min")
MAXIMISED = ("ncc_acc", *HEADS)
MINIMISED = ("cdnv", "cdnv_debiased", "cdnv_asym", "avg_cdnv", "bound", "ncc_error", "gc", "geometric_collapse")
RECORD_KEYS = ("select/best_epoch", "select/best_value")


def select_direction(metric: str, mode: str = "auto") -> str:
    """``max`` or ``min`` for ``metric``: ``mode`` when explicit, else inferred from the key's last component."""
    if mode not in MODES:
        raise unknown_name("train.select_mode", mode, MODES)
    if mode != "auto":
        return mode
    last = metric.rsplit("/", 1)[-1]
    if last in MAXIMISED:
        return "max"
    if last in MINIMISED:
        return "min"
    raise NclabError(f"train.select={metric}: no direction can be inferred from {last!r}; "
                     f"set train.select_mode=max or train.select_mode=min")


def check_select(cfg: RunConfig) -> tuple[str, str] | None:
    """(metric, max | min) of ``train.select``, or None when off; one line on the first problem."""
    metric, mode = cfg.train.select, cfg.train.select_mode
    if mode not in MODES:
        raise unknown_name("train.select_mode", mode, MODES)
    if metric is None:
        return None
    if not metric.startswith("val/"):
        raise NclabError(f"train.select={metric}: selection uses the val classes; expected a val/ probe key "
                         f"such as val/fewshot/5w1s/ncc or val/cdnv_debiased")
    if not cfg.probes.enabled or "val" not in cfg.probes.splits:
        raise NclabError(f"train.select={metric}: needs probes on the val split (probes.enabled=true with val in "
                         f"probes.splits; now enabled={str(cfg.probes.enabled).lower()}, splits={cfg.probes.splits})")
    keys = probe_keys(cfg, "val")
    if metric not in keys:
        raise unknown_name("metric train.select (not written by these probes)", metric, keys)
    return metric, select_direction(metric, mode)


def _better(value: float, best: float, mode: str) -> bool:
    return value > best if mode == "max" else value < best


def _candidate(record: dict, metric: str) -> float | None:
    v = record.get(metric)
    ok = record.get("epoch", 0) >= 1 and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def best_so_far(records: list[dict], metric: str, mode: str) -> dict | None:
    """``{"epoch", "step", "value"}`` of the first record with the best finite value of ``metric``
    among epochs >= 1, or None."""
    best = None
    for r in records:
        v = _candidate(r, metric)
        if v is not None and (best is None or _better(v, best["value"], mode)):
            best = {"epoch": int(r["epoch"]), "step": int(r.get("step", 0)), "value": v}
    return best


def read_best(run: RunDir) -> dict:
    """The selection record of ``best.json`` (metric, mode, epoch, step, value, weights)."""
    try:
        return json.loads(run.best_info_path.read_text())
    except FileNotFoundError:
        raise NclabError(f"{run.best_info_path}: no model selection in this run (train with train.select=METRIC)") \
            from None
    except ValueError as e:
        raise NclabError(f"{run.best_info_path}: not valid JSON ({e})") from None


class SelectBest:
    """Epoch callback of ``train.select`` (attached after the probes by
    :func:`nclab.experiments.training.config_callbacks`, so the epoch's record holds the metric).
    Stateless between calls: the best so far comes from the run's records (resume-safe)."""

    config_section = "train.select"

    def validate(self, cfg: RunConfig, data: PreparedData) -> None:
        """Called by ``start_run`` before the run directory exists."""
        if check_select(cfg) is None:
            raise NclabError("SelectBest attached but train.select is not set")

    def __call__(self, ctx: EpochContext) -> dict | None:
        if ctx.epoch == 0 or ctx.fabric.global_rank != 0:
            return None
        metric, mode = check_select(ctx.config)
        run = RunDir(ctx.run_dir)
        best = best_so_far(run.records(), metric, mode)
        value = _candidate(ctx.record, metric)
        if value is not None and (best is None or _better(value, best["value"], mode)):
            best = {"epoch": ctx.epoch, "step": int(ctx.record["step"]), "value": value}
            info = {"metric": metric, "mode": mode, **best, "weights": run.best_weights_path.name}
            tensors = {k: v.detach().contiguous().cpu() for k, v in ctx.model.state_dict().items()}
            atomic_write_bytes(run.best_weights_path, save(tensors, metadata={k: str(v) for k, v in info.items()}))
            atomic_write_json(run.best_info_path, info)
        return {RECORD_KEYS[0]: None if best is None else best["epoch"],
                RECORD_KEYS[1]: None if best is None else best["value"]}
