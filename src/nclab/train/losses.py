"""Training losses: cross-entropy (with label smoothing) and MSE to (smoothed) one-hot targets."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from nclab.errors import unknown_name

LOSSES = ("ce", "mse")


def make_loss(name: str, n_classes: int, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(logits, y)``, the batch mean.

    MSE follows Han, Papyan & Donoho (2022): ||z - e_y||^2 summed over classes, averaged
    over samples, with the target smoothed as (1 - s) e_y + s / C.
    """
    if name == "ce":
        return lambda z, y: F.cross_entropy(z, y, label_smoothing=label_smoothing)
    if name == "mse":
        def mse(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            t = F.one_hot(y, n_classes).to(z.dtype)
            if label_smoothing:
                t = t * (1 - label_smoothing) + label_smoothing / n_classes
            return ((z - t) ** 2).sum(1).mean()
        return mse
    raise unknown_name("loss (train.loss)", name, LOSSES)
