"""Seeded, resumable training batches over an in-memory uint8 image store.

A batch is fully determined by (seed, epoch, step): the epoch's permutation comes from
(seed, epoch), the augmentation of each batch from (seed, epoch, step). So a run can stop at
any step and resume bit-for-bit, worker processes or not, and a multi-process run gives each
rank its slice of exactly the batch a single process would see (the augmentation is drawn for
the whole global batch and then sliced).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from nclab.config import DataConfig, check_batch_per_class, check_range
from nclab.data.transforms import Augment, Preprocess
from nclab.errors import NclabError


def seed_int(*parts: int) -> int:
    """A 63-bit seed derived from integer ``parts`` (numpy's SeedSequence: distinct parts, unrelated streams)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass(frozen=True)
class BatchSpec:
    """What a worker needs to build one batch: its seed, the global batch, and this rank's slice."""

    seed: int
    indices: np.ndarray
    lo: int
    hi: int
    size: int = 0          # side the images are resized to (progressive resizing); 0: as stored


class EpochBatchSampler(Sampler):
    """Yields the :class:`BatchSpec` of steps ``start_step..`` of epoch ``epoch``.

    With ``per_class`` = k > 0 and the sample ``labels``, batches are class-balanced (as episodic
    and metric-learning training draw them): each class's samples are shuffled and cut into groups
    of k (a remainder of fewer than k sits the epoch out), the groups are shuffled, and a batch is
    ``batch_size / k`` consecutive groups, so every class in a batch has a multiple of k samples.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start_step: int = 0,
                 drop_last: bool = True, rank: int = 0, world: int = 1, labels=None, per_class: int = 0,
                 size: int = 0):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.start_step, self.drop_last, self.rank, self.world = start_step, drop_last, rank, world
        self.labels, self.per_class, self.size = labels, per_class, size
        if per_class:
            check_batch_per_class(batch_size, per_class, world)
            if labels is None or len(labels) != n:
                raise NclabError("class-balanced batches need one label per sample")
            self.labels = np.asarray(labels)

    def epoch_size(self) -> int:
        """Samples an epoch visits: all of them, or with ``per_class`` k the whole groups of k."""
        if not self.per_class:
            return self.n
        return int((np.bincount(self.labels) // self.per_class).sum()) * self.per_class

    def steps_per_epoch(self) -> int:
        m = self.epoch_size()
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch() - self.start_step)

    def _order(self) -> np.ndarray:
        g = torch.Generator().manual_seed(seed_int(self.seed, self.epoch))
        perm = torch.randperm(self.n, generator=g).numpy()
        if not self.per_class:
            return perm
        k = self.per_class
        by_class = perm[np.argsort(self.labels[perm], kind="stable")]        # each class in shuffled order
        counts = np.bincount(self.labels, minlength=int(self.labels.max()) + 1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        lab = self.labels[by_class]
        keep = np.arange(self.n) - starts[lab] < (counts[lab] // k) * k
        groups = by_class[keep].reshape(-1, k)
        return groups[torch.randperm(len(groups), generator=g).numpy()].reshape(-1)

    def __iter__(self):
        order = self._order()
        for step in range(self.start_step, self.steps_per_epoch()):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            per = -(-len(idx) // self.world)
            lo, hi = min(len(idx), self.rank * per), min(len(idx), (self.rank + 1) * per)
            yield BatchSpec(seed_int(self.seed, self.epoch, step, 1), idx, lo, hi, self.size)


def epoch_image_size(epoch: int, full: int, start: int = 0, epochs: int = 0) -> int:
    """Side of the training images in epoch ``epoch`` (0-based) under progressive resizing
    (``train.resize_from`` = ``start``, ``train.resize_epochs`` = ``epochs``; FFCV's ramp):
    ``start`` px in the first epoch, growing linearly to the stored side ``full`` at epoch
    ``epochs`` and after; ``full`` when it is off (``start`` = 0)."""
    if not start or epoch >= epochs:
        return full
    return round(start + (full - start) * epoch / epochs)


def augment_from_config(cfg: DataConfig, flip: bool) -> Augment | None:
    """The training augmentation of ``data.*`` (None with ``data.augment=false``), checked:
    ``flip`` says whether the dataset allows horizontal flips."""
    if not cfg.augment:
        return None
    if cfg.shift < 0:
        raise NclabError(f"data.shift={cfg.shift}: expected >= 0")
    if not 0 <= cfg.jitter <= 1:
        raise NclabError(f"data.jitter={cfg.jitter}: expected a strength in [0, 1] (factors in [1 - j, 1 + j])")
    scale = None
    if cfg.crop_scale is not None:
        scale = _pair("data.crop_scale", cfg.crop_scale)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise NclabError(f"data.crop_scale={cfg.crop_scale}: expected [lo, hi] with 0 < lo <= hi <= 1 "
                             f"(fractions of the image area)")
    ratio = _pair("data.crop_ratio", cfg.crop_ratio)
    if not 0 < ratio[0] <= ratio[1]:
        raise NclabError(f"data.crop_ratio={cfg.crop_ratio}: expected [lo, hi] with 0 < lo <= hi (width / height)")
    check_range("data.rotate", cfg.rotate, 0, 180)          # degrees; 0: off
    check_range("data.shear", cfg.shear, 0, 60)
    zoom = None
    if cfg.zoom is not None:
        zoom = _pair("data.zoom", cfg.zoom)
        if not 0 < zoom[0] <= zoom[1] <= 10:
            raise NclabError(f"data.zoom={cfg.zoom}: expected [lo, hi] with 0 < lo <= hi <= 10 (zoom factors)")
    return Augment(shift=cfg.shift, flip=flip, crop_scale=scale, crop_ratio=ratio, jitter=float(cfg.jitter),
                   rotate=float(cfg.rotate), shear=float(cfg.shear), zoom=zoom)


def _pair(key: str, value) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise NclabError(f"{key}={value!r}: expected a list of two numbers [lo, hi]")
    return float(value[0]), float(value[1])


class AugmentedImages(torch.utils.data.Dataset):
    """Batches of normalised, augmented float images built from a :class:`BatchSpec`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, preprocess: Preprocess,
                 augment: Augment | None):
        self.images, self.labels = images, labels          # uint8 (N,C,H,W), int64 (N,)
        self.preprocess, self.augment = preprocess, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, spec: BatchSpec):
        idx = torch.from_numpy(spec.indices)
        x = self.images[idx].float().div_(255.0)
        if self.augment is not None:
            x = self.augment(x, torch.Generator().manual_seed(spec.seed))
        sl = slice(spec.lo, spec.hi)
        x = x[sl]
        if spec.size and spec.size != x.shape[-1]:      # progressive resizing: a smaller image, antialiased
            x = torch.nn.functional.interpolate(x, size=(spec.size, spec.size), mode="bilinear",
                                                antialias=True, align_corners=False)
        return self.preprocess.normalize(x), self.labels[idx][sl]


def _identity(batch):
    return batch


def _seed_worker(worker_id: int) -> None:
    # Batches are seeded per step; this only fixes any other library randomness in a worker.
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def train_loader(dataset: AugmentedImages, batch_size: int, seed: int, epoch: int, start_step: int = 0,
                 drop_last: bool = True, rank: int = 0, world: int = 1, num_workers: int = 0,
                 per_class: int = 0, size: int = 0) -> DataLoader:
    """The DataLoader of one epoch (from ``start_step``); workers are seeded from ``seed``;
    ``per_class`` > 0: class-balanced batches (:class:`EpochBatchSampler`); ``size`` > 0: images
    resized to ``size`` x ``size`` after augmentation (:func:`epoch_image_size`)."""
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, epoch, start_step, drop_last, rank, world,
                                dataset.labels.numpy() if per_class else None, per_class, size)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=_identity, num_workers=num_workers,
                      worker_init_fn=_seed_worker if num_workers else None,
                      generator=torch.Generator().manual_seed(seed_int(seed, epoch, 2)),
                      persistent_workers=False)


def eval_batches(images: np.ndarray | torch.Tensor, preprocess: Preprocess, batch_size: int,
                 lo: int = 0, hi: int | None = None):
    """Normalised float batches of ``images[lo:hi]`` in order, no augmentation."""
    hi = len(images) if hi is None else hi
    chw = preprocess.to_chw(images)
    for i in range(lo, hi, batch_size):
        yield preprocess.normalize(chw[i:min(i + batch_size, hi)].float().div_(255.0))
