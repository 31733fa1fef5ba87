"""Multi-layer perceptron on flattened images (the setting of many neural-collapse studies)."""

from __future__ import annotations

from torch import nn

from nclab.errors import NclabError
from nclab.models.base import Backbone


class MLP(Backbone):
    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: tuple | list = (512, 512),
                 norm: str = "none", activation: str = "relu"):
        super().__init__()
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
        if activation not in acts:
            raise NclabError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        if norm not in ("none", "batch"):
            raise NclabError(f"mlp norm must be none or batch, got {norm!r}")
        stages = {"flatten": nn.Flatten()}
        c = in_channels * image_size * image_size
        for i, h in enumerate(hidden):
            layers = [nn.Linear(c, h, bias=(norm == "none"))]
            if norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            layers.append(acts[activation]())
            stages[f"fc{i + 1}"] = nn.Sequential(*layers)
            c = h
        self.stages = nn.ModuleDict(stages)
        self.feature_dim = c
