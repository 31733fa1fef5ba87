"""Epoch-end callbacks: where probes (collapse metrics, few-shot accuracy, GC) plug into training.

A callback is any callable ``cb(ctx: EpochContext) -> dict | None``; the returned mapping is
merged into that epoch's record in metrics.jsonl. Callbacks run on every process (so they can
use ``ctx.fabric.all_reduce``); only rank 0 writes the record.
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
    epoch: int                    # 1-based number of the epoch just finished
    model: torch.nn.Module        # the bare Classifier (eval mode while callbacks run)
    fabric: Any                   # lightning Fabric (device, rank, all_reduce)
    data: PreparedData
    preprocess: Preprocess
    config: RunConfig
    run_dir: Path
    record: dict                  # the epoch's record so far (loss, accuracies, lr, ...)


EpochCallback = Callable[[EpochContext], "dict | None"]
