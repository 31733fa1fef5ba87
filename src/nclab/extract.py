"""Features out of a trained run: load its network and embed a split or any image folder with
exactly the run's preprocessing (size, channels, normalisation, ink convention)."""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import sys
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from nclab.atomic import check_target
from nclab.config import EVAL_BATCH_SIZE, RunConfig
from nclab.data.base import SPLITS, ImageSet
from nclab.data.cached import cache_limit, cached_arrays
from nclab.data.loader import eval_batches
from nclab.data.prepare import PreparedData, prepare_data
from nclab.data.transforms import Preprocess
from nclab.errors import NclabError
from nclab.featurefile import FeatureSet, load_features, save_features
from nclab.models import Classifier
from nclab.train.checkpoint import latest_checkpoint, load_weights
from nclab.train.rundir import RunDir


@dataclass
class LoadedRun:
    run: RunDir
    config: RunConfig
    preprocess: Preprocess
    model: Classifier              # eval mode
    source_classes: list[str]      # the classifier's own classes (train / test splits)
    weights: str = "final"         # which weights: final | last (step N) | best (epoch E, METRIC=V)

    @cached_property
    def data(self) -> PreparedData:
        """The run's dataset splits, loaded once and checked against the run's fingerprint."""
        data = prepare_data(self.config.data)
        fp = self.run.data_info()["fingerprint"]
        if data.fingerprint != fp:
            raise NclabError(f"{self.run.path}: the dataset differs from the one the run trained on "
                             f"(fingerprint {data.fingerprint} != {fp})")
        return data

    @property
    def flip_allowed(self) -> bool:
        """Whether a horizontal flip preserves the labels of the run's dataset (its data.json)."""
        return bool(self.run.data_info().get("flip", False))


CHECKPOINTS = ("final", "last", "best")


def load_run(run_dir: str | os.PathLike, checkpoint: str = "final", device: str | torch.device = "cpu") -> LoadedRun:
    """The run's network with its final weights (``model.safetensors``); ``checkpoint="last"``:
    the latest checkpoint (an unfinished run); ``"best"``: the epoch kept by model selection
    (``best.safetensors`` of a run trained with ``train.select``)."""
    from nclab.train.loop import build_model
    if checkpoint not in CHECKPOINTS:
        raise NclabError(f"checkpoint {checkpoint!r}: expected one of {', '.join(CHECKPOINTS)}")
    run = RunDir.open(run_dir)
    cfg, pre = run.config(), run.preprocess()
    source = run.data_info()["splits"]["train"]["class_names"]
    try:
        model = build_model(cfg, pre, len(source))
    except NclabError as e:
        raise NclabError(f"{run.config_path}: {e}") from None
    if checkpoint == "final":
        if not run.weights_path.exists():
            raise NclabError(f"{run.weights_path}: no final weights (the run has not finished; "
                             f"use --checkpoint last or `nclab train --resume {run.path}`)")
        load_weights(run.weights_path, model)
        weights = "final"
    elif checkpoint == "best":
        if not run.best_weights_path.exists():
            why = ("the run was trained without train.select" if cfg.train.select is None
                   else f"no epoch has a value of {cfg.train.select} yet")
            raise NclabError(f"{run.best_weights_path}: no selected weights ({why})")
        load_weights(run.best_weights_path, model)
        meta = safe_open_metadata(run.best_weights_path)
        weights = f"best (epoch {meta.get('epoch')}, {meta.get('metric')} = {meta.get('value')}, {meta.get('mode')})"
    else:
        ck = latest_checkpoint(run.path)
        if ck is None:
            raise NclabError(f"{run.path / 'checkpoints'}: the run has no checkpoint yet")
        load_weights(ck[0], model)
        weights = f"last ({ck[0].name})"
    return LoadedRun(run, cfg, pre, model.to(device).eval(), source, weights)


def safe_open_metadata(path: Path) -> dict:
    """The string metadata of a safetensors file (empty if none)."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def split_images(loaded: LoadedRun, split: str) -> ImageSet:
    """The run's own split ``split`` (train | test | val | novel) as stored uint8 images."""
    if split not in SPLITS:
        raise NclabError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    images = loaded.data.splits[split]
    if len(images) == 0:
        raise NclabError(f"dataset {loaded.data.name!r} has no {split!r} classes")
    return images


def _inference_copy(model: Classifier) -> tuple[Classifier, torch.memory_format]:
    """An eval-mode copy of ``model`` for embedding, channels-last when it has convolutions:
    oneDNN's NHWC convolutions and pooling embedded glyphs with conv4 ~1.7x faster on the 2-core
    CPU (channels-last inputs alone did not help; the weights must be NHWC too). A copy, so a
    network being trained (probes) keeps its own parameters and memory layout."""
    conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    fmt = torch.channels_last if conv else torch.contiguous_format
    return fold_batchnorm(copy.deepcopy(model).eval()).to(memory_format=fmt), fmt


def fold_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d in an ``nn.Sequential``
    into that convolution (in place; the same function up to float rounding). With the
    normalisation gone oneDNN runs each block as one fused convolution: conv4 embedded glyphs
    2.5x faster at batch 128 on the 2-core CPU (BENCHMARKS.md, "Probes"). A norm that
    normalises with batch statistics in eval mode (``track_running_stats=False``) is left alone."""
    for seq in [m for m in net.modules() if isinstance(m, torch.nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if (isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d)
                    and not bn.training and bn.running_mean is not None):
                seq[i] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = torch.nn.Identity()
    return net


def _batches(model: Classifier, images: np.ndarray, preprocess: Preprocess, batch_size: int):
    """(inference copy of the model, its input batches on its device, dtype and memory layout)."""
    net, fmt = _inference_copy(model)
    p = next(net.parameters())
    return net, (x.to(p.device, p.dtype).contiguous(memory_format=fmt)
                 for x in eval_batches(images, preprocess, batch_size))


TTA = ("none", "flip")


def check_tta(tta: str, flip_allowed: bool = True, where: str = "") -> None:
    """One line for an unknown test-time augmentation, or ``flip`` on data whose label a
    horizontal flip does not preserve (characters)."""
    if tta not in TTA:
        raise NclabError(f"{where}tta {tta!r}: expected one of {', '.join(TTA)}")
    if tta == "flip" and not flip_allowed:
        raise NclabError(f"{where}tta 'flip': the run's dataset does not allow horizontal flips "
                         f"(characters: a mirrored glyph is another glyph); expected tta 'none'")


def _features(net: Classifier, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Penultimate features of a batch; ``tta="flip"``: the mean of the features of the images
    and of their horizontal mirrors (the same for an image and its mirror)."""
    if tta == "flip":
        return (net.features(x) + net.features(torch.flip(x, (-1,)))) / 2
    return net.features(x)


@torch.no_grad()
def embed(model: Classifier, images: np.ndarray, preprocess: Preprocess,
          batch_size: int = EVAL_BATCH_SIZE, tta: str = "none") -> np.ndarray:
    """Penultimate features (N x d float32) of uint8 ``images`` (the network in eval mode);
    ``tta="flip"`` averages each image's features with those of its horizontal mirror
    (test-time augmentation for natural images, twice the forward passes)."""
    check_tta(tta)
    net, batches = _batches(model, images, preprocess, batch_size)
    feats = [_features(net, x, tta).float().cpu() for x in batches]
    return torch.cat(feats).numpy() if feats else np.zeros((0, model.feature_dim), np.float32)


@torch.no_grad()
def embed_stages(model: Classifier, images: np.ndarray, preprocess: Preprocess,
                 batch_size: int = EVAL_BATCH_SIZE) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Penultimate features (N x d float32) and every stage's globally pooled output
    (``Backbone.intermediate``), from one pass. ``Backbone.forward`` is the pooled last stage,
    so the penultimate features are the last stage's entry."""
    net, batches = _batches(model, images, preprocess, batch_size)
    names = net.backbone.layer_names
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for x in batches:
        for n, h in net.intermediate(x, pooled=True).items():
            parts[n].append(h.flatten(1).float().cpu())
    stages = {n: torch.cat(v).numpy() for n, v in parts.items()}
    return stages[names[-1]], stages


def classifier_weights(model: Classifier) -> tuple[np.ndarray, np.ndarray]:
    """The classifier (W, b) as float32 arrays (b = 0 for a head without bias; a cosine head's
    scaled unit rows, which decide as its logits do)."""
    W = getattr(model.head, "linear_weight", lambda: model.head.weight)().detach().float().cpu().numpy()
    b = model.head.bias
    return W, (np.zeros(len(W), np.float32) if b is None else b.detach().float().cpu().numpy())


FEATURE_CACHE_GB = 4.0


def feature_cache_limit() -> int:
    """Bytes the cache of split features may hold: ``NCLAB_FEATURE_CACHE_GB`` (GiB, default
    FEATURE_CACHE_GB; 0 turns the cache off)."""
    return cache_limit("NCLAB_FEATURE_CACHE_GB", FEATURE_CACHE_GB, "no feature cache")


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    """sha256 of the source that turns images into features (networks, preprocessing, embedding)."""
    import nclab.data.loader
    import nclab.data.transforms
    import nclab.models
    files = sorted(Path(nclab.models.__file__).parent.glob("*.py"))
    files += [Path(__file__), Path(nclab.data.transforms.__file__), Path(nclab.data.loader.__file__)]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a network's state (names, dtypes, shapes and bytes of every tensor)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def features_of_split(loaded: LoadedRun, split: str, tta: str = "none") -> FeatureSet:
    """Features of the run's ``split``; ``tta``: none | flip (see :func:`embed`; flip only on
    data that allows horizontal flips). Cached on disk (nclab's cache folder, ``features``;
    :func:`feature_cache_limit`), keyed by everything they depend on: the network's weights and
    config, the dataset's fingerprint, the split, tta, the embedding batch, device and dtype, the
    torch version and the source of the code that embeds; so a run evaluated again (other heads,
    ways, --power, or as the reference of a paired comparison) is not embedded again."""
    check_tta(tta, loaded.flip_allowed, f"{loaded.run.path}: ")
    images = split_images(loaded, split)
    batch = loaded.config.trainer.eval_batch_size
    p = next(loaded.model.parameters())
    key = {"weights": weights_digest(loaded.model), "model": asdict(loaded.config.model), "code": _code_digest(),
           "torch": torch.__version__, "data": loaded.data.fingerprint, "split": split, "tta": tta, "batch": batch, "device": p.device.type, "dtype": str(p.dtype),
           "preprocess": loaded.preprocess.to_dict()}
    F = cached_arrays("features", key, lambda: {"features": embed(loaded.model, images.images, loaded.preprocess,
                                                                  batch, tta)},
                      limit_bytes=feature_cache_limit())["features"]
    W = b = None
    if split in ("train", "test"):
        W, b = classifier_weights(loaded.model)
    return FeatureSet(F, images.labels, images.class_names, W, b)


def match_ink(images: np.ndarray, ink: str) -> np.ndarray:
    """Put grayscale ``images`` in the bright-ink convention: ``dark`` inverts all, ``light``
    none, ``auto`` inverts each image whose border (the paper) is brighter than mid-grey."""
    if ink == "light":
        return images
    if ink == "dark":
        return 255 - images
    border = np.concatenate([images[:, 0, :], images[:, -1, :], images[:, :, 0], images[:, :, -1]], axis=1)
    flip = border.mean(axis=1) > 127.5
    out = images.copy()
    out[flip] = 255 - out[flip]
    return out


def features_of_folder(loaded: LoadedRun, folder: str | os.PathLike, ink: str = "auto",
                       tta: str = "none") -> FeatureSet:
    from nclab.data.folder import load_image_folder
    check_tta(tta, loaded.flip_allowed, f"{loaded.run.path}: ")
    pre = loaded.preprocess
    if not Path(folder).is_dir():
        raise NclabError(f"{folder}: no such image folder")
    images = load_image_folder(folder, image_size=pre.image_size, channels=pre.channels)
    x = images.images
    if pre.ink == "bright" and pre.channels == 1:
        x = match_ink(x, ink)
    F = embed(loaded.model, x, pre, loaded.config.trainer.eval_batch_size, tta)
    W = b = None
    if images.class_names == loaded.source_classes:
        W, b = classifier_weights(loaded.model)
    return FeatureSet(F, images.labels, images.class_names, W, b)


def write_features(run_dir: str, out: str, split: str | None = None, folder: str | None = None,
                   ink: str = "auto", checkpoint: str = "final", tta: str = "none") -> FeatureSet:
    check_target(out)
    loaded = load_run(run_dir, checkpoint)
    print(f"{run_dir}: {loaded.weights} weights" + ("" if tta == "none" else f", tta {tta}"))
    fs = (features_of_split(loaded, split, tta) if folder is None
          else features_of_folder(loaded, folder, ink, tta))
    save_features(out, fs)
    print(f"wrote {out}: {fs.features.shape[0]} x {fs.features.shape[1]} features, {fs.n_classes} classes"
          + (", with W and b" if fs.W is not None else ""))
    return fs


def load_feature_source(source: str | os.PathLike, split: str | None, checkpoint: str = "final") -> FeatureSet:
    """A feature file, or a run directory embedded on ``split`` with its ``checkpoint`` weights
    (what measure / fewshot accept)."""
    p = Path(source)
    if p.is_dir():
        if split is None:
            raise NclabError(f"{p}: a run directory needs --split (train, test, val or novel)")
        loaded = load_run(p, checkpoint)
        if checkpoint != "final":               # say which weights the numbers come from
            print(f"{p}: {loaded.weights} weights", file=sys.stderr)
        return features_of_split(loaded, split)
    if checkpoint != "final":
        raise NclabError(f"{p}: --checkpoint applies to run directories, not to a feature file")
    if split is not None:
        raise NclabError(f"{p}: --split applies to run directories, not to a feature file")
    return load_features(p)
