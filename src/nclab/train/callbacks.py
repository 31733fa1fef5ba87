"""Epoch-end callbacks: where probes (collapse metrics, few-shot accuracy, GC) plug into training.

A callback is any callable ``cb(ctx: EpochContext) -> dict | None``; the returned mapping is
merged into that epoch's record in metrics.jsonl. Callbacks run after every epoch and once at
``epoch == 0`` (the initial network, before the first step of a fresh run; that record is
written only if a callback returns something). They run on every process (so they can use
``ctx.fabric.all_reduce``); only rank 0 writes the record.

A callback that implements a config section (``probes:``) says so with an attribute
``config_section = "probes"``: :func:`nclab.train.run.start_run` refuses a config that enables
the section without such a callback. An optional method ``validate(cfg, data)`` is called by
``start_run`` before the run directory is created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nclab.config import RunConfig
from nclab.data.prepare import PreparedData
from nclab.data.transforms import Preprocess


@dataclass
class EpochContext:
    epoch: int                    # 1-based number of the epoch just finished; 0: before the first step
    model: torch.nn.Module        # the bare Classifier (eval mode while callbacks run)
    fabric: Any                   # lightning Fabric (device, rank, all_reduce)
    data: PreparedData
    preprocess: Preprocess
    config: RunConfig
    run_dir: Path
    record: dict                  # the epoch's record so far (loss, accuracies, lr, ...)


EpochCallback = Callable[[EpochContext], "dict | None"]
