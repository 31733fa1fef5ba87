"""Starting and resuming runs: validate everything, create the run directory, launch the processes."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from nclab.config import RunConfig, load_config
from nclab.data.loader import augment_from_config
from nclab.data.prepare import PreparedData, prepare_data
from nclab.data.transforms import Preprocess
from nclab.errors import NclabError, unknown_name
from nclab.train.callbacks import EpochCallback
from nclab.train.losses import make_loss
from nclab.train.optim import build_optimizer, check_schedule
from nclab.train.regularizers import build_regularizers
from nclab.train.rundir import RunDir

PRECISIONS = ("32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "auto")
ACCELERATORS = ("cpu", "cuda", "gpu", "mps", "auto")


def native_bf16(accelerator: str) -> bool:
    """Whether the device a run with this accelerator trains on computes bf16 natively: a CUDA
    device with bf16 support, or a CPU whose oneDNN has bf16 kernels (AVX-512 BF16 / AMX). On a
    CPU without them (AVX2 only) bf16 autocast is emulated and an order of magnitude slower
    than fp32 (BENCHMARKS.md, training throughput)."""
    import torch
    if accelerator in ("cuda", "gpu", "auto") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if accelerator in ("cpu", "auto"):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(cfg: RunConfig) -> RunConfig:
    """``trainer.precision=auto`` -> ``bf16-mixed`` where the device computes bf16 natively
    (:func:`native_bf16`), else ``32-true``; any other value unchanged. Resolved once when a run
    starts and written to its config.yaml, so a resume (on any machine) keeps the precision."""
    if cfg.trainer.precision != "auto":
        return cfg
    chosen = "bf16-mixed" if native_bf16(cfg.trainer.accelerator) else "32-true"
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, precision=chosen))


def _fabric(cfg: RunConfig):
    from lightning_fabric import Fabric  # heavy import: only when training
    t = resolve_precision(cfg).trainer   # a no-op for a started run (resolved in its config.yaml) unless hand-edited
    if t.devices > 1:
        # Spawned processes (not a re-run of sys.argv) so the same code works from the CLI,
        # from Python and from tests.
        return Fabric(accelerator=t.accelerator, devices=t.devices, strategy="ddp_spawn", precision=t.precision)
    return Fabric(accelerator=t.accelerator, devices=1, precision=t.precision)


def _check_devices(t) -> None:
    """The accelerator named in the config exists on this machine, with enough devices."""
    import torch
    if t.accelerator in ("cuda", "gpu"):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if found < t.devices:
            raise NclabError(f"trainer.accelerator={t.accelerator}: {t.devices} CUDA device(s) requested, "
                             f"{found} available on this machine (use trainer.accelerator=cpu)")
    elif t.accelerator == "mps" and not torch.backends.mps.is_available():
        raise NclabError("trainer.accelerator=mps: MPS is not available on this machine (use trainer.accelerator=cpu)")


def _check_compile(t) -> None:
    """``trainer.compile=true`` can work here: TorchDynamo supports this Python, and on CPU the C++
    compiler inductor calls (``$CXX``, else g++) is on the PATH."""
    import shutil
    import torch
    if not torch._dynamo.is_dynamo_supported():
        raise NclabError(f"trainer.compile=true: torch.compile does not support this Python "
                         f"({sys.version.split()[0]}) with torch {torch.__version__} (set trainer.compile=false)")
    cxx = os.environ.get("CXX") or "g++"
    if t.accelerator == "cpu" and shutil.which(cxx) is None:
        raise NclabError(f"trainer.compile=true: torch.compile on CPU needs a C++ compiler, and {cxx!r} is not on "
                         f"the PATH (install g++ or set CXX, or set trainer.compile=false)")


def validate(cfg: RunConfig, data: PreparedData) -> None:
    """Every name and number in the config, checked before anything is written: ranges
    (``cfg.check()``), registry names, devices, the batch against the training set, and one
    forward pass of the model on two blank images of the run's shape."""
    import torch
    from nclab.train.loop import build_model
    cfg.check()
    t = cfg.trainer
    if t.precision not in PRECISIONS:
        raise unknown_name("precision (trainer.precision)", t.precision, PRECISIONS)
    if t.accelerator not in ACCELERATORS:
        raise unknown_name("accelerator (trainer.accelerator)", t.accelerator, ACCELERATORS)
    _check_devices(t)
    if t.compile:
        _check_compile(t)
    n_train = len(data.splits["train"])
    if cfg.train.drop_last and cfg.train.batch_size > n_train:
        raise NclabError(f"train.batch_size={cfg.train.batch_size}: exceeds the {n_train} training samples "
                         f"(with train.drop_last=true an epoch would have no step)")
    augment_from_config(cfg.data, data.flip)
    make_loss(cfg.train.loss, 2)
    check_schedule(cfg.schedule)
    for reg in build_regularizers(cfg.train.regularizers):
        if hasattr(reg, "validate"):             # e.g. distill: the teacher run exists and fits
            reg.validate(data)
    pre = Preprocess(data.image_shape[0], data.channels, [0.0], [1.0])
    if cfg.train.resize_from > pre.image_size:
        raise NclabError(f"train.resize_from={cfg.train.resize_from}: expected at most the side of the "
                         f"training images ({pre.image_size}); progressive resizing only shrinks them")
    side = pre.image_size
    try:
        with warnings.catch_warnings():      # e.g. torch's "zero-element tensor" of a zero width
            warnings.simplefilter("error")
            model = build_model(cfg, pre, data.num_source_classes)
            with torch.no_grad():
                for side in {pre.image_size, cfg.train.resize_from or pre.image_size}:
                    model.eval()(torch.zeros(2, pre.channels, side, side))
    except NclabError:
        raise
    except (RuntimeError, ValueError, UserWarning) as e:
        raise NclabError(f"model.backbone={cfg.model.backbone} (options {cfg.model.options}) cannot embed "
                         f"{pre.channels} x {side} x {side} images"
                         + (" (train.resize_from)" if side != pre.image_size else "") + f": {e}") from None
    build_optimizer(model.parameters(), cfg.optim)


# config sections (or keys) whose work is done by an epoch callback declaring
# ``config_section = <name>``, with whether a config switches it on
CALLBACK_SECTIONS = {"probes": lambda cfg: cfg.probes.enabled,
                     "train.select": lambda cfg: cfg.train.select is not None}


def check_callbacks(cfg: RunConfig, callbacks: Sequence[EpochCallback], data: PreparedData | None = None) -> None:
    """Refuse a config that enables a callback section no callback handles (no caller silently
    loses probe records or model selection); with ``data``, run each callback's own ``validate(cfg, data)``."""
    handled = {getattr(cb, "config_section", None) for cb in callbacks}
    for section, enabled in CALLBACK_SECTIONS.items():
        if enabled(cfg) and section not in handled:
            what = f"{section}.enabled is true" if section == "probes" else f"{section} is set"
            off = f"set {section}.enabled=false" if section == "probes" else f"set {section}=null"
            raise NclabError(f"{what} but no callback handles the {section!r} section: train with "
                             f"`nclab train` or nclab.experiments.training.train (which attach it), "
                             f"or {off}")
    if data is not None:
        for cb in callbacks:
            if hasattr(cb, "validate"):
                cb.validate(cfg, data)


def data_info(data: PreparedData) -> dict:
    return {"name": data.name, "fingerprint": data.fingerprint, "flip": data.flip,
            "image_shape": list(data.image_shape),
            "splits": {s: {"n_classes": v.n_classes, "n_samples": len(v), "class_names": v.class_names}
                       for s, v in data.splits.items()}}


def _spawned_worker(fabric, run_dir: str, callbacks: tuple) -> dict | None:
    """:func:`train_worker` in a spawned DDP process, which destroys its process group before it
    exits: Fabric leaves a gloo group alive, and gloo's threads torn down at interpreter exit
    aborted the process now and then (SIGABRT, "terminate called without an active exception";
    1 in 27 two-process runs before this, 0 in 100 after)."""
    import torch.distributed as dist
    from nclab.train.loop import train_worker
    try:
        return train_worker(fabric, run_dir, callbacks)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _launch(run: RunDir, cfg: RunConfig, callbacks: Sequence[EpochCallback],
            data: PreparedData | None = None) -> dict | None:
    from nclab.train.loop import train_worker
    fabric = _fabric(cfg)
    if cfg.trainer.devices > 1:
        from torch.multiprocessing import ProcessRaisedException
        try:
            # spawned processes load the (cached) data themselves rather than receive it pickled
            return fabric.launch(_spawned_worker, str(run.path), tuple(callbacks))
        except ProcessRaisedException as e:
            # a worker's NclabError arrives as its traceback text: keep the error's one line
            last = str(e).strip().splitlines()[-1]
            prefix = f"{NclabError.__module__}.{NclabError.__name__}: "
            if last.startswith(prefix):
                raise NclabError(last[len(prefix):]) from None
            raise
    return train_worker(fabric, run.path, callbacks, data)


def start_run(config: str | os.PathLike | None, overrides: Sequence[str] = (), out: str | os.PathLike | None = None,
              callbacks: Sequence[EpochCallback] = (), cfg: RunConfig | None = None) -> RunDir:
    """Validate, create the run directory (locked while this process trains it), train. Returns
    the finished run's directory. A start that fails before its first checkpoint removes the
    run directory again: nothing is left of it."""
    cfg = resolve_precision((cfg if cfg is not None else load_config(config, list(overrides))).check())
    path = Path(out) if out is not None else RunDir.default_path(cfg.name)
    RunDir.check_new(path)
    data = prepare_data(cfg.data)
    validate(cfg, data)
    check_callbacks(cfg, callbacks, data)
    pre = Preprocess.fit(data.splits["train"].images)
    run = RunDir.create(path, cfg, pre, data_info(data))
    try:
        _launch(run, cfg, callbacks, data)
    except BaseException:
        if not run.has_checkpoint():
            run.remove()
        raise
    finally:
        run.unlock()
    return run


def resume_run(run_dir: str | os.PathLike, callbacks: Sequence[EpochCallback] = ()) -> RunDir:
    """Continue ``run_dir`` from its latest checkpoint (bit-for-bit on CPU), holding its lock;
    temporary files of writes the interrupted process left unfinished are removed first."""
    run = RunDir.open(run_dir)
    if (run.path / "summary.json").exists():
        raise NclabError(f"{run.path}: this run already finished (summary.json exists); nothing to resume")
    run.lock()
    try:
        cfg = run.config()
        data = prepare_data(cfg.data)
        validate(cfg, data)
        check_callbacks(cfg, callbacks, data)
        run.remove_leftovers()
        _launch(run, cfg, callbacks, data)
    finally:
        run.unlock()
    return run
