"""The training loop: one explicit function per process, on Lightning Fabric.

``train_worker(fabric, run_dir)`` rebuilds everything from the run directory (config,
preprocessing, data, model), resumes from the latest checkpoint if there is one, and trains
to ``train.epochs``. Every batch is a pure function of (seed, epoch, step) and the RNG state
is checkpointed, so an interrupted run resumes bit-for-bit (on CPU).

Epoch callbacks (:mod:`nclab.train.callbacks`) run after every epoch and once at epoch 0, on
the initial network before the first step of a fresh run (a record is written for epoch 0
only if a callback returned something). Rank 0 writes the records; the checkpoint stores how
many it had written, so a resumed run neither loses nor repeats one. ``seconds`` is the
epoch's training and test-accuracy time, without the callbacks (which may time themselves).

With ``train.ema`` the network the run delivers is the moving average of the weights
(:mod:`nclab.train.ema`): ``test_acc``, the callbacks and ``model.safetensors`` see it, while the
checkpoints hold the live weights (``--checkpoint last``) and the average in their state.

With ``train.resize_from`` (progressive resizing) each epoch trains on images resized to a side
that is a function of the epoch alone (:func:`nclab.data.loader.epoch_image_size`), recorded as
the epoch's ``image_size``; evaluation and callbacks always see the stored size.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from nclab.config import RunConfig
from nclab.data.loader import (AugmentedImages, EpochBatchSampler, augment_from_config, epoch_image_size,
                               eval_batches, seed_int, train_loader)
from nclab.data.prepare import PreparedData, prepare_data
from nclab.data.transforms import Preprocess
from nclab.errors import NclabError
from nclab.models import Classifier, create_model
from nclab.train.callbacks import EpochCallback, EpochContext
from nclab.train.checkpoint import latest_checkpoint, load_state, load_weights, rng_state, save_checkpoint, save_weights, set_rng_state
from nclab.train.ema import WeightAverage
from nclab.train.losses import make_loss
from nclab.train.optim import build_optimizer, build_scheduler
from nclab.train.regularizers import attach_aux_heads, build_regularizers
from nclab.train.rundir import RunDir


def build_model(cfg: RunConfig, preprocess: Preprocess, n_classes: int) -> Classifier:
    """The run's network, from its config and preprocessing (same call at start, resume, load),
    with the auxiliary heads its regularisers train (``model.aux[name]``)."""
    model = create_model(cfg.model.backbone, in_channels=preprocess.channels, n_classes=n_classes,
                         head=cfg.model.head, image_size=preprocess.image_size, **cfg.model.options)
    attach_aux_heads(model, build_regularizers(cfg.train.regularizers))
    return model


def _param_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@torch.no_grad()
def accuracy(fabric, model: Classifier, images, labels, preprocess: Preprocess, batch_size: int) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images``, sharded over the processes."""
    n = len(labels)
    per = -(-n // fabric.world_size)
    lo, hi = min(n, fabric.global_rank * per), min(n, (fabric.global_rank + 1) * per)
    was = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.float64, device=fabric.device)
    y_all = torch.as_tensor(labels)
    dtype = _param_dtype(model)
    i = lo
    for x in eval_batches(images, preprocess, batch_size, lo, hi):
        with fabric.autocast():
            z = model(x.to(fabric.device, dtype))
        y = y_all[i:i + len(x)].to(fabric.device)
        correct += (z.argmax(1) == y).sum()
        i += len(x)
    model.train(was)
    total = fabric.all_reduce(correct, reduce_op="sum") if fabric.world_size > 1 else correct
    return float(total) / max(n, 1)


def _running(device, regs) -> dict[str, torch.Tensor]:
    keys = ["loss", "correct", "count"] + [f"reg_{r.name}" for r in regs]
    return {k: torch.zeros((), dtype=torch.float64, device=device) for k in keys}


def train_worker(fabric, run_dir: str | Path, callbacks: Sequence[EpochCallback] = (),
                 data: PreparedData | None = None) -> dict | None:
    """Train (or continue training) the run in ``run_dir`` on this process; rank 0 returns the
    summary. ``data``: the run's splits if the caller has them loaded already (single process)."""
    run = RunDir.open(run_dir)
    cfg = run.config()
    tc, rank0 = cfg.train, fabric.global_rank == 0
    if cfg.trainer.threads or fabric.world_size > 1:
        torch.set_num_threads(cfg.trainer.threads or max(1, (os.cpu_count() or 1) // fabric.world_size))
    data = data if data is not None else prepare_data(cfg.data)
    if data.fingerprint != run.data_info()["fingerprint"]:
        raise NclabError(f"{run.path}: the dataset changed since the run started "
                         f"(fingerprint {data.fingerprint} != {run.data_info()['fingerprint']})")
    pre = run.preprocess()
    train_set = data.splits["train"]

    torch.manual_seed(cfg.trainer.seed)                  # identical initial weights on every rank
    model = build_model(cfg, pre, train_set.n_classes)
    if fabric.global_rank:    # then each rank its own draws (dropout, DropBlock, rotation turns, GC probes)
        torch.manual_seed(seed_int(cfg.trainer.seed, fabric.global_rank))   # rank 0 (one process) as before
    fmt = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    world = fabric.world_size
    steps_per_epoch = EpochBatchSampler(len(train_set), tc.batch_size, cfg.trainer.seed, 0, 0, tc.drop_last, 0, world,
                                        train_set.labels, tc.batch_per_class).steps_per_epoch()
    scheduler = build_scheduler(optimizer, cfg.schedule, tc.epochs, steps_per_epoch)
    loss_fn = make_loss(tc.loss, train_set.n_classes, tc.label_smoothing)
    regs = build_regularizers(tc.regularizers)
    for r in regs:
        if hasattr(r, "bind"):                   # e.g. distill loads its teacher
            r.bind(pre, train_set.class_names)
    needs_input_grad = any(getattr(r, "needs_input_grad", False) for r in regs)
    # trainer.compile: only the training forward is compiled (Fabric re-applies the compilation
    # over its DDP wrapper). Evaluation, callbacks and regularisers call the eager ``model``,
    # which shares the parameters, and checkpoints are its state dict: the same keys either way.
    # Static shapes: a smaller last batch compiles once more, then both graphs are reused.
    train_module = torch.compile(model, dynamic=False) if cfg.trainer.compile else model
    wrapped, optimizer = fabric.setup(train_module, optimizer)
    # train.ema: the average is the delivered network (module docstring); checkpoints keep the live one
    ema = WeightAverage(model, tc.ema) if tc.ema else None
    delivered = ema.module if ema else model
    dataset = AugmentedImages(pre.to_chw(train_set.images), torch.as_tensor(train_set.labels), pre,
                              augment_from_config(cfg.data, data.flip))

    epoch, step, global_step, seconds_done, n_records = 0, 0, 0, 0.0, 0
    sums = _running(fabric.device, regs)
    ckpt = latest_checkpoint(run.path)
    if ckpt is not None:
        load_weights(ckpt[0], model)
        state = load_state(ckpt[1])
        if state["epoch"] > tc.epochs or len(state["rng"]) != world:
            raise NclabError(f"{ckpt[1]}: the checkpoint (epoch {state['epoch']}, {len(state['rng'])} processes) "
                             f"does not fit train.epochs={tc.epochs}, trainer.devices={world} of {run.config_path}")
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"][fabric.global_rank], fabric.device)
            if ema:
                ema.load_state_dict(state["ema"])
            for k in sums:
                sums[k] += state["sums"][k][fabric.global_rank].to(fabric.device)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
            raise NclabError(f"{ckpt[1]}: the checkpoint does not fit the run's config "
                             f"({type(e).__name__}: {e}); was {run.config_path} edited?") from None
        epoch, step, global_step = state["epoch"], state["step"], state["global_step"]
        seconds_done = state["seconds"]
        n_records = state["records"]
    if rank0:
        run.truncate_records(n_records)        # without a checkpoint: a fresh start (maybe a restart)
    fabric.barrier()

    def run_callbacks(record: dict) -> bool:
        """Let every callback add to ``record`` (the network in eval mode); True if one did."""
        delivered.eval()
        added = False
        for cb in callbacks:
            extra = cb(EpochContext(record["epoch"], delivered, fabric, data, pre, cfg, run.path, record))
            if extra:
                record.update(extra)
                added = True
        return added

    # Only rank 0's records are written and its n_records checkpointed: callbacks may return
    # nothing on the other ranks (probes run on rank 0 while the others wait at the next collective).
    if ckpt is None:
        record = {"epoch": 0, "step": 0}
        if run_callbacks(record) and rank0:
            run.append_record(record)
            n_records += 1

    def checkpoint(records: int) -> None:
        gathered = {k: fabric.all_gather(v).reshape(world).cpu() for k, v in sums.items()}
        rngs = _gather_rng(fabric)                 # a collective: every rank takes part
        if rank0:
            save_checkpoint(run.path, model, {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rngs, "epoch": epoch, "step": step, "global_step": global_step,
                "seconds": seconds_done + time.perf_counter() - t_start, "sums": gathered, "records": records,
                **({"ema": ema.state_dict()} if ema else {})})
        fabric.barrier()

    bar = tqdm(total=tc.epochs * steps_per_epoch, initial=global_step, disable=not (cfg.trainer.progress and rank0),
               unit="step", dynamic_ncols=True, mininterval=1.0)
    summary = None
    while epoch < tc.epochs:
        t_start = time.perf_counter()
        wrapped.train()
        size = epoch_image_size(epoch, pre.image_size, tc.resize_from, tc.resize_epochs)
        loader = train_loader(dataset, tc.batch_size, cfg.trainer.seed, epoch, step, tc.drop_last,
                              fabric.global_rank, world, cfg.data.num_workers, tc.batch_per_class, size)
        lr = optimizer.param_groups[0]["lr"]
        for x, y in loader:
            x, y = x.to(fabric.device, memory_format=fmt), y.to(fabric.device)
            if needs_input_grad:
                x.requires_grad_(True)
            h, logits = wrapped(x, return_features=True)
            loss = loss_fn(logits, y)
            total = loss
            for r in regs:
                with fabric.autocast():                  # the run's precision, as the forward
                    term = r(model, x, h, logits, y)
                total = total + term
                sums[f"reg_{r.name}"] += term.detach().double() * len(y)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(total)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            if ema:
                ema.update(global_step + 1)
            sums["loss"] += loss.detach().double() * len(y)
            sums["correct"] += (logits.detach().argmax(1) == y).sum()
            sums["count"] += len(y)
            step += 1
            global_step += 1
            bar.update(1)
            if cfg.trainer.ckpt_every_steps and global_step % cfg.trainer.ckpt_every_steps == 0 and step < steps_per_epoch:
                checkpoint(records=n_records)
        tot = {k: (fabric.all_reduce(v, reduce_op="sum") if world > 1 else v) for k, v in sums.items()}
        n = float(tot["count"])
        if not math.isfinite(float(tot["loss"])):      # NaN / inf weights: every later number would be noise
            raise NclabError(f"{run.path}: training diverged, the loss of epoch {epoch + 1} is {float(tot['loss']) / n} "
                             f"(optim.lr={cfg.optim.lr}; a smaller learning rate?)")
        record = {"epoch": epoch + 1, "step": global_step, "lr": lr, "loss": float(tot["loss"]) / n,
                  "train_acc": float(tot["correct"]) / n,
                  "test_acc": accuracy(fabric, delivered, data.splits["test"].images, data.splits["test"].labels,
                                       pre, cfg.trainer.eval_batch_size)}
        for r in regs:
            record[f"reg_{r.name}"] = float(tot[f"reg_{r.name}"]) / n
        if tc.resize_from:
            record["image_size"] = size
        seconds = seconds_done + time.perf_counter() - t_start
        run_callbacks(record)
        record["seconds"] = seconds
        if rank0:
            run.append_record(record)
            n_records += 1
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.3f}",
                            test=f"{record['test_acc']:.3f}", refresh=False)
        epoch, step, seconds_done = epoch + 1, 0, 0.0
        sums = _running(fabric.device, regs)
        t_start = time.perf_counter()
        checkpoint(records=n_records)
    bar.close()
    if rank0:
        save_weights(run.weights_path, delivered)
        records = run.records()
        summary = {"epochs": tc.epochs, "steps": global_step, "final": records[-1] if records else None,
                   "train_seconds": sum(r.get("seconds", 0.0) for r in records),
                   "parameters": sum(p.numel() for p in model.parameters()),
                   "source_classes": train_set.n_classes, "devices": world}
        if run.best_info_path.exists():          # model selection (train.select): which epoch was kept
            summary["selected"] = json.loads(run.best_info_path.read_text())
        run.write_summary(summary)
    fabric.barrier()
    return summary


def _gather_rng(fabric) -> list[dict]:
    """Every rank's RNG state, in rank order (each state is a few fixed-size uint8 tensors)."""
    mine = rng_state(fabric.device)
    if fabric.world_size == 1:
        return [mine]
    gathered = {k: fabric.all_gather(v.to(fabric.device)).cpu() for k, v in mine.items()}
    return [{k: g[i].clone() for k, g in gathered.items()} for i in range(fabric.world_size)]
