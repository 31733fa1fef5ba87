"""Loss regularisers switched on from the config: ``train.regularizers=[{gc: {alpha: 1e-6, probes: 1}}]``.

A regulariser is built by a factory registered under its name, called with the options of
its config entry, and then called once per training step as

    term = reg(model, x, features, logits)      # a scalar tensor added to the loss

where ``x`` is the (augmented) input batch, ``features`` the penultimate embedding and
``logits`` the classifier output of that batch. The loop logs each term's epoch mean as
``reg_<name>`` in metrics.jsonl.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from nclab.errors import NclabError, unknown_name


class Regularizer(Protocol):
    name: str

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, features: torch.Tensor,
                 logits: torch.Tensor) -> torch.Tensor: ...


REGULARIZERS: dict[str, Callable[..., Regularizer]] = {}


def register_regularizer(name: str):
    def deco(factory):
        REGULARIZERS[name] = factory
        return factory
    return deco


def _ensure_registered() -> None:
    import nclab.metrics.gc  # noqa: F401  (registers "gc")


def build_regularizers(entries: list) -> list[Regularizer]:
    """``[{name: {option: value}}, ...]`` -> regulariser objects (errors name the entry)."""
    _ensure_registered()
    regs = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and len(entry) == 1):
            raise NclabError(f"train.regularizers[{i}]: expected {{name: {{options}}}}, got {entry!r}")
        (name, opts), = entry.items()
        if name not in REGULARIZERS:
            raise unknown_name(f"regularizer (train.regularizers[{i}])", name, REGULARIZERS)
        try:
            regs.append(REGULARIZERS[name](**(opts or {})))
        except (TypeError, ValueError) as e:
            raise NclabError(f"train.regularizers[{i}].{name}: {e}") from None
    return regs
