"""Optimisers and per-step learning-rate schedules from the config."""

from __future__ import annotations

import math

import torch

from nclab.config import OptimConfig, ScheduleConfig
from nclab.errors import NclabError, unknown_name

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine")


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.lr <= 0:
        raise NclabError(f"optim.lr={cfg.lr}: expected a positive learning rate")
    if cfg.name == "sgd":
        if cfg.nesterov and cfg.momentum <= 0:
            raise NclabError("optim.nesterov=true needs optim.momentum > 0")
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name in ("adam", "adamw"):
        if len(cfg.betas) != 2:
            raise NclabError(f"optim.betas={cfg.betas}: expected two numbers")
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise unknown_name("optimizer (optim.name)", cfg.name, OPTIMIZERS)


def lr_factor(cfg: ScheduleConfig, epoch: float, epochs: int) -> float:
    """Multiplier of the base lr at fractional epoch ``epoch`` (0 = start of training)."""
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return cfg.warmup_start + (1 - cfg.warmup_start) * epoch / cfg.warmup_epochs
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** int(epoch // cfg.step_size)
    if cfg.name == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.name == "cosine":
        t0 = cfg.warmup_epochs
        p = min(1.0, (epoch - t0) / max(epochs - t0, 1e-12))
        return cfg.min_lr + (1 - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * p))
    raise unknown_name("schedule (schedule.name)", cfg.name, SCHEDULES)


def check_schedule(cfg: ScheduleConfig) -> None:
    if cfg.name not in SCHEDULES:
        raise unknown_name("schedule (schedule.name)", cfg.name, SCHEDULES)
    if cfg.name == "step" and cfg.step_size < 1:
        raise NclabError(f"schedule.step_size={cfg.step_size}: expected >= 1 epoch")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimiser step; milestones are in (fractional) epochs.

    ``schedule.min_lr`` is the cosine floor as a fraction of the base lr.
    """
    check_schedule(cfg)
    spe = max(steps_per_epoch, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step / spe, epochs))
