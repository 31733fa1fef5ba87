"""Backbones by name (one registry, timm-style) and the heads put on them.

``create_model("resnet12", in_channels=3, n_classes=64)`` -> :class:`Classifier`.
"""

from __future__ import annotations

import inspect


from nclab.errors import NclabError, unknown_name
from nclab.models.base import Backbone
from nclab.models.classifier import Classifier
from nclab.models.conv4 import Conv4
from nclab.models.heads import CosineHead, ETFHead, make_head, simplex_etf
from nclab.models.mlp import MLP
from nclab.models.resnet12 import ResNet12
from nclab.models.resnet18 import ResNet18
from nclab.models.vgg import VGG
from nclab.models.wrn import WideResNet

BACKBONES: dict[str, type[Backbone]] = {
    "conv4": Conv4,
    "resnet12": ResNet12,
    "resnet18": ResNet18,
    "wrn": WideResNet,
    "mlp": MLP,
    "vgg": VGG,
}
HEADS = ("linear", "linear_nobias", "cosine", "etf")


def create_backbone(name: str, in_channels: int = 1, image_size: int = 28, **options) -> Backbone:
    """The backbone ``name`` with its keyword ``options`` (errors name the bad option)."""
    if name not in BACKBONES:
        raise unknown_name("backbone", name, BACKBONES)
    cls = BACKBONES[name]
    params = inspect.signature(cls.__init__).parameters
    kwargs = dict(options, in_channels=in_channels)
    if "image_size" in params:
        kwargs["image_size"] = image_size
    bad = sorted(set(kwargs) - set(params))
    if bad:
        valid = [p for p in params if p not in ("self", "in_channels", "image_size")]
        raise NclabError(f"model.options: {name} has no option {', '.join(bad)}; valid: {', '.join(valid)}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, RuntimeError) as e:       # torch refuses e.g. a negative width
        raise NclabError(f"model.options for {name}: {e}") from None


def create_model(name: str, in_channels: int = 1, n_classes: int = 10, head: str = "linear",
                 image_size: int = 28, **options) -> Classifier:
    """Backbone ``name`` plus a ``head`` (linear | linear_nobias | cosine | etf) over ``n_classes``."""
    backbone = create_backbone(name, in_channels, image_size, **options)
    if head not in HEADS:
        raise unknown_name("head", head, HEADS)
    try:
        return Classifier(backbone, make_head(head, backbone.feature_dim, n_classes))
    except ValueError as e:
        raise NclabError(f"model.head={head}: {e}") from None


__all__ = ["BACKBONES", "HEADS", "Backbone", "Classifier", "CosineHead", "ETFHead", "create_backbone", "create_model",
           "simplex_etf"]
