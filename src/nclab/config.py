"""Run configuration: typed dataclasses, loaded from YAML, overridden by ``key=value``.

``nclab train configs/quickstart.yaml optim.lr=0.1 data.name=omniglot`` reads the YAML,
applies the overrides in order (values parsed as YAML, so ``0.1`` is a float and
``[60, 80]`` a list), checks every key and type, and the run writes the fully resolved
config (:func:`to_dict`) it ran with.

A config file may carry ``profiles:``, named sets of overrides of its body, e.g. a quick CPU
profile (the body) and the papers' GPU settings::

    profiles:
      paper:
        description: the published recipe, for a GPU
        extends: other-profile          # optional: its overrides first, then these
        overrides: {train.epochs: 100, trainer.accelerator: auto}

``nclab train configs/omniglot.yaml --profile paper key=value`` applies the body, then the
profile's overrides, then the command line's. Strings in the file may use ``${VAR}`` or
``${VAR:-default}`` (e.g. the folder of a real dataset).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nclab.errors import NclabError

EVAL_BATCH_SIZE = 128


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-6`` (no dot) as a string; configs mean a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str):
    """Parse config YAML (safe: plain data only; ``1e-6`` is a float)."""
    return yaml.load(text, Loader=_Loader)


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: where and what (PyYAML's own message spans several lines)."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + str(getattr(e, "problem", None) or e)


def read_yaml(path: str | Path, what: str = "config"):
    """Parse the YAML file ``path``; a missing, unreadable, non-UTF-8 or malformed file is one
    NclabError line naming it."""
    p = Path(path)
    try:
        return yaml_load(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise NclabError(f"{p}: {what} file not found") from None
    except IsADirectoryError:
        raise NclabError(f"{p}: is a directory, expected a YAML {what} file") from None
    except UnicodeDecodeError as e:
        raise NclabError(f"{p}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                         f"expected a YAML {what} file") from None
    except yaml.YAMLError as e:
        raise NclabError(f"{p}: not valid YAML ({yaml_problem(e)})") from None
    except OSError as e:
        raise NclabError(f"{p}: cannot read {what} ({e.strerror})") from None


# --- range checks (each config section's ``check()``) ------------------------------------------

def check_range(key: str, value: Any, low: float | None = None, high: float | None = None, *,
                integer: bool = False, low_open: bool = False, high_open: bool = False,
                optional: bool = False) -> None:
    """Refuse ``value`` unless it is a finite number (an integer with ``integer``) in the interval
    from ``low`` to ``high`` (either end open or closed, or absent); None passes when ``optional``."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (not integer or isinstance(value, int))
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        kind = "an integer" if integer else "a finite number"
        if low is not None and high is not None:
            bounds = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            bounds = f" {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            bounds = f" {'<' if high_open else '<='} {high:g}"
        else:
            bounds = ""
        raise NclabError(f"{key}={value!r}: expected {kind}{bounds}" + (" or null" if optional else ""))


def check_name(key: str, value: Any) -> None:
    """A non-empty name (a registry key, or part of a folder name)."""
    if not isinstance(value, str) or not value.strip():
        raise NclabError(f"{key}={value!r}: expected a non-empty name")


@dataclass
class DataConfig:
    name: str = "glyphs"                  # a registered dataset (nclab.data.DATASETS)
    root: str | None = None               # folder of a real dataset; glyphs ignore it
    image_size: int | None = None         # None: the dataset's default (28 for glyphs / omniglot)
    split: str | None = None              # dataset-specific class split scheme (omniglot: background | vinyals)
    holdout: float = 4                    # source samples per class held out as the *test* split (<1: fraction)
    source_classes: int | None = None     # use only the first l source classes (source-class-count sweeps)
    trainval: bool = False                # the val classes join the source classes (MetaOptNet's train + val),
                                          # before source_classes draws its subset
    train_per_class: int | None = None    # keep a seeded subset of this many train samples per class (n_A)
    imbalance_ratio: float | None = None  # R = n_A / n_B: minority classes keep train_per_class / R (Fang et al. 2021)
    majority_classes: int | None = None   # K_A: the first K_A source classes are the majority (None: half)
    samples_per_class: int = 20           # glyphs: samples generated per class
    seed: int = 0                         # dataset generation / holdout seed (not the training seed)
    augment: bool = True                  # training augmentation on (the kinds below; flips where the dataset allows them)
    shift: int = 2                        # max random shift in pixels (pad + random crop)
    crop_scale: list | None = None        # random-resized crop: area fraction range [lo, hi], e.g. [0.08, 1.0]
    crop_ratio: list = field(default_factory=lambda: [0.75, 4 / 3])   # its aspect ratio range (width / height)
    jitter: float = 0.0                   # colour jitter: brightness, contrast, saturation factors in [1 - j, 1 + j]
    rotate: float = 0.0                   # random affine: rotation angle ~ U(-rotate, rotate) degrees, ...
    shear: float = 0.0                    # ... shear angle along x ~ U(-shear, shear) degrees, ...
    zoom: list | None = None              # ... and zoom factor ~ U(lo, hi), e.g. [0.9, 1.1] (none: 1)
    num_workers: int = 0                  # DataLoader worker processes (seeded); 0 = main process

    def check(self) -> None:
        check_name("data.name", self.name)
        check_range("data.image_size", self.image_size, 1, integer=True, optional=True)
        check_range("data.holdout", self.holdout, 0, low_open=True)
        if self.holdout >= 1 and not float(self.holdout).is_integer():
            raise NclabError(f"data.holdout={self.holdout!r}: expected a count of samples per class "
                             f"(an integer >= 1) or a fraction in (0, 1)")
        check_range("data.source_classes", self.source_classes, 2, integer=True, optional=True)
        check_range("data.samples_per_class", self.samples_per_class, 1, integer=True)
        check_range("data.seed", self.seed, 0, integer=True)
        check_range("data.shift", self.shift, 0, integer=True)
        check_range("data.num_workers", self.num_workers, 0, integer=True)


@dataclass
class ModelConfig:
    backbone: str = "conv4"               # conv4 | resnet12 | resnet18 | wrn | mlp
    head: str = "linear"                  # linear | linear_nobias | cosine | etf
    options: dict = field(default_factory=dict)   # backbone keyword arguments, e.g. {depth: 28, widen: 4}

    def check(self) -> None:            # names and options: checked by building the model
        check_name("model.backbone", self.backbone)
        check_name("model.head", self.head)


@dataclass
class OptimConfig:
    name: str = "sgd"                     # sgd | adam | adamw
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])

    def check(self) -> None:
        check_name("optim.name", self.name)
        check_range("optim.lr", self.lr, 0, low_open=True)
        check_range("optim.momentum", self.momentum, 0, 1, high_open=True)
        check_range("optim.weight_decay", self.weight_decay, 0)
        if len(self.betas) != 2:
            raise NclabError(f"optim.betas={self.betas!r}: expected two numbers in [0, 1)")
        for i, b in enumerate(self.betas):
            check_range(f"optim.betas[{i}]", b, 0, 1, high_open=True)


@dataclass
class ScheduleConfig:
    name: str = "cosine"                  # constant | step | multistep | cosine
    warmup_epochs: float = 0              # linear warm-up from lr * warmup_start
    warmup_start: float = 0.1
    step_size: int = 30                   # step: epochs between decays
    milestones: list = field(default_factory=lambda: [60, 80])   # multistep: epochs
    gamma: float = 0.1
    min_lr: float = 0.0                   # cosine floor, a fraction of optim.lr

    def check(self) -> None:
        check_name("schedule.name", self.name)
        check_range("schedule.warmup_epochs", self.warmup_epochs, 0)
        check_range("schedule.warmup_start", self.warmup_start, 0, 1)
        check_range("schedule.step_size", self.step_size, 1, integer=True)
        for i, m in enumerate(self.milestones):
            check_range(f"schedule.milestones[{i}]", m, 0)
        check_range("schedule.gamma", self.gamma, 0, low_open=True)
        check_range("schedule.min_lr", self.min_lr, 0, 1)


def check_batch_per_class(batch_size: int, per_class: int, world: int = 1) -> None:
    """Class-balanced batches: each process's share of the batch is whole groups of ``per_class``."""
    if per_class == 0:
        return
    if per_class < 2 or batch_size % (per_class * world):
        raise NclabError(f"train.batch_per_class={per_class}: expected 0 (plain shuffling) or k >= 2 dividing "
                         f"the batch of each process (train.batch_size={batch_size} over {world} process(es))")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128                 # global batch (split across devices)
    loss: str = "ce"                      # ce | mse
    label_smoothing: float = 0.0
    regularizers: list = field(default_factory=list)   # e.g. [{gc: {alpha: 1e-6, probes: 1}}]
    drop_last: bool = True
    batch_per_class: int = 0              # class-balanced batches: batch_size / k classes with k images each
                                          # (k >= 2, e.g. for the proto regulariser); 0: plain shuffling
    select: str | None = None             # model selection: keep best.safetensors at the best value of this
                                          # val probe metric, e.g. val/fewshot/5w1s/ncc (nclab.experiments.select)
    select_mode: str = "auto"             # max | min | auto (inferred from the metric's name)
    ema: float = 0.0                      # decay of a moving average of the weights, the network the run
                                          # delivers (nclab.train.ema; e.g. 0.999); 0: off
    resize_from: int = 0                  # progressive resizing: train on images of this side in the first
                                          # epoch, growing linearly to data.image_size at epoch resize_epochs
    resize_epochs: int = 0                # + 1 (nclab.data.loader.epoch_image_size); 0: off

    def check(self) -> None:
        check_range("train.epochs", self.epochs, 1, integer=True)
        check_range("train.batch_size", self.batch_size, 1, integer=True)
        check_name("train.loss", self.loss)
        check_range("train.label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        check_range("train.batch_per_class", self.batch_per_class, 0, integer=True)
        check_range("train.ema", self.ema, 0, 1, high_open=True)
        check_range("train.resize_from", self.resize_from, 0, integer=True)
        check_range("train.resize_epochs", self.resize_epochs, 0, integer=True)
        if bool(self.resize_from) != bool(self.resize_epochs):
            raise NclabError(f"train.resize_from={self.resize_from}, train.resize_epochs={self.resize_epochs}: "
                             f"progressive resizing needs both (a start side and the epochs of its ramp), or neither")
        if self.batch_per_class:
            check_batch_per_class(self.batch_size, self.batch_per_class)
        if self.select is not None and (not isinstance(self.select, str) or not self.select.strip()):
            raise NclabError(f"train.select={self.select!r}: expected a val probe metric such as val/fewshot/5w1s/ncc")
        if self.select_mode not in ("auto", "max", "min"):
            raise NclabError(f"train.select_mode={self.select_mode!r}: expected auto, max or min")


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"              # cpu | cuda | auto
    devices: int = 1                      # processes (DDP via Lightning Fabric when > 1)
    precision: str = "32-true"            # Fabric precision: 32-true | 64-true | bf16-mixed | 16-mixed | auto
                                          # (auto: bf16-mixed where the device has native bf16, else 32-true)
    seed: int = 0
    threads: int | None = None            # torch intra-op threads per process (None: torch default)
    channels_last: bool = True            # NHWC memory format for model and batches (1.2x faster conv training here, more under load)
    compile: bool = False                 # torch.compile the training forward (x1.04-1.05 per omniglot epoch in bf16; BENCHMARKS)
    ckpt_every_steps: int = 0             # also checkpoint every k optimizer steps (0: epoch ends only)
    eval_batch_size: int = EVAL_BATCH_SIZE  # embedding / evaluation batches (cache-sized; BENCHMARKS "Probes")
    progress: bool = True

    def check(self) -> None:
        check_name("trainer.accelerator", self.accelerator)
        check_range("trainer.devices", self.devices, 1, integer=True)
        check_name("trainer.precision", self.precision)
        check_range("trainer.seed", self.seed, 0, 2 ** 63, integer=True, high_open=True)
        check_range("trainer.threads", self.threads, 1, integer=True, optional=True)
        check_range("trainer.ckpt_every_steps", self.ckpt_every_steps, 0, integer=True)
        check_range("trainer.eval_batch_size", self.eval_batch_size, 1, integer=True)


@dataclass
class FewshotProbeConfig:
    splits: list = field(default_factory=lambda: ["val", "novel"])   # few-shot on these (val | novel)
    ways: list = field(default_factory=lambda: [5])
    shots: list = field(default_factory=lambda: [1, 5])
    query: int = 15
    episodes: int = 600                   # one fixed set per split / way / shot, saved in the run directory
    heads: list = field(default_factory=lambda: ["ncc", "ridge"])     # also: logistic, ncc-cosine, 1nn
    transform: str = "l2"                 # l2 | none | center | center+l2 (centre = mean train-probe feature)
    power: float | None = None            # beta in (0, 1]: sign(h) |h|^beta of the features (and of the train
                                          # features the centre is the mean of) before the transform; null: none


@dataclass
class GCProbeConfig:
    enabled: bool = False
    splits: list = field(default_factory=lambda: ["train", "novel"])
    probes: int | None = 1                # random projections per sample (None: exact, one backward per dim)
    max_samples: int = 256                # per split: per_class samples of max_samples // per_class classes
    per_class: int = 8


@dataclass
class StageProbeConfig:
    enabled: bool = False
    splits: list = field(default_factory=lambda: ["train", "novel"])
    epochs: list = field(default_factory=list)    # probe the stages at these epochs (empty: every probe)


@dataclass
class ProbesConfig:
    """Collapse and transfer measured during training (nclab.experiments.probes)."""

    enabled: bool = False
    schedule: str = "every"               # every: epochs 0, k, 2k, ...; log: 0 and `points` log-spaced epochs
    every: int = 1
    points: int = 50
    splits: list = field(default_factory=lambda: ["train", "test", "val", "novel"])
    max_per_class: int | None = None      # fixed seeded subsets: at most this many samples per class ...
    max_per_class_splits: list = field(default_factory=lambda: ["train"])         # ... of these splits
    max_classes: int | None = None        # ... and at most this many classes ...
    max_classes_splits: list = field(default_factory=lambda: ["val", "novel"])   # ... of these (not train)
    seed: int = 0                         # subsets and episodes
    fewshot: FewshotProbeConfig = field(default_factory=FewshotProbeConfig)
    gc: GCProbeConfig = field(default_factory=GCProbeConfig)
    stages: StageProbeConfig = field(default_factory=StageProbeConfig)


@dataclass
class RunConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)

    def check(self) -> "RunConfig":
        """Every range of every section (each section's ``check()``); names against the registries
        and availability of devices are checked when a run starts (``nclab.train.run.validate``)."""
        check_name("name", self.name)
        if "/" in self.name or "\0" in self.name or self.name in (".", ".."):
            raise NclabError(f"name={self.name!r}: expected a name usable in a folder name (no '/')")
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section) and hasattr(section, "check"):
                section.check()
        if self.train.batch_size % self.trainer.devices:
            raise NclabError(f"train.batch_size={self.train.batch_size}: expected a multiple of "
                             f"trainer.devices={self.trainer.devices}")
        return self


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (what a run writes as config.yaml)."""
    return dataclasses.asdict(cfg)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
          dict: "a mapping"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check / convert ``value`` to the annotated type ``tp``; error names the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except NclabError:
                pass
        kinds = [_KINDS.get(a, "null" if a is type(None) else str(a)) for a in args]
        raise NclabError(f"{key}: expected {' or '.join(kinds)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)               # e.g. name=10
    elif tp in (list, dict):
        if isinstance(value, tp):
            return value
    else:
        raise TypeError(f"unsupported config type {tp} for {key}")
    raise NclabError(f"{key}: expected {_KINDS[tp]}, got {value!r}")


def _unknown_key(key: str, valid: list[str]) -> NclabError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=3, cutoff=0.4)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
    return NclabError(f"unknown config key {key!r}{hint} (valid: {', '.join(prefix + v for v in valid)})")


def _apply(cfg: Any, data: dict, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise NclabError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(cfg))
    fields = _fields(type(cfg))
    for k, v in data.items():
        key = prefix + str(k)
        if k not in fields:
            raise _unknown_key(key, list(fields))
        cur = getattr(cfg, k)
        if dataclasses.is_dataclass(cur):
            _apply(cur, v, key + ".")
        else:
            setattr(cfg, k, _coerce(v, hints[k], key))


def _set_path(cfg: Any, key: str, value: Any) -> None:
    parts = key.split(".")
    obj, path = cfg, ""
    for i, p in enumerate(parts):
        path = f"{path}.{p}" if path else p
        if isinstance(obj, dict):                       # free-form dict field: nest freely
            if i == len(parts) - 1:
                obj[p] = value
            else:
                obj = obj.setdefault(p, {})
            continue
        fields = _fields(type(obj))
        if p not in fields:
            raise _unknown_key(path, list(fields))
        if i == len(parts) - 1:
            cur = getattr(obj, p)
            if dataclasses.is_dataclass(cur):
                _apply(cur, value, path + ".")
            else:
                setattr(obj, p, _coerce(value, typing.get_type_hints(type(obj))[p], path))
        else:
            obj = getattr(obj, p)


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.1"`` -> ``("optim.lr", 0.1)``; the value is parsed as YAML."""
    if "=" not in text:
        raise NclabError(f"override {text!r}: expected key=value (e.g. optim.lr=0.1)")
    key, raw = text.split("=", 1)
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise NclabError(f"override {text!r}: value is not valid YAML ({yaml_problem(e)})") from None
    return key.strip(), value


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(value: Any) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in strings (recursively in lists and mappings)."""
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            v = os.environ.get(m.group(1))
            if v is None:
                if m.group(2) is None:
                    raise NclabError(f"environment variable {m.group(1)} is not set (used as ${{{m.group(1)}}})")
                return m.group(2)
            return v
        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [expand_vars(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_vars(v) for k, v in value.items()}
    return value


_PROFILE_KEYS = ("description", "extends", "overrides")


def profile_overrides(profiles: Any, name: str, where: str = "profiles") -> dict[str, Any]:
    """The overrides of profile ``name`` of a config's ``profiles:`` mapping, those of the profile
    it ``extends`` first (recursively); a later key replaces an earlier one."""
    if not isinstance(profiles, dict) or not profiles:
        raise NclabError(f"{where}: --profile {name}: this config defines no profiles")
    chain: list[str] = []
    cur: Any = name
    while cur is not None:
        if cur not in profiles:
            raise NclabError(f"{where}: unknown profile {cur!r} (valid: {', '.join(map(str, profiles))})")
        if cur in chain:
            raise NclabError(f"{where}: profiles extend each other in a cycle ({' -> '.join(chain + [cur])})")
        chain.append(cur)
        spec = profiles[cur]
        if not isinstance(spec, dict):
            raise NclabError(f"{where}: profile {cur} must be a mapping with keys {', '.join(_PROFILE_KEYS)}")
        bad = sorted(set(spec) - set(_PROFILE_KEYS))
        if bad:
            raise NclabError(f"{where}: profile {cur}: unknown key {bad[0]!r} (valid: {', '.join(_PROFILE_KEYS)})")
        if not isinstance(spec.get("overrides") or {}, dict):
            raise NclabError(f"{where}: profile {cur}: overrides must be a mapping of config keys to values")
        cur = spec.get("extends")
    out: dict[str, Any] = {}
    for p in reversed(chain):
        out.update(profiles[p].get("overrides") or {})
    return out


def config_profiles(path: str | Path) -> dict[str, str]:
    """{profile name: description} of a config file's ``profiles:`` (empty without any)."""
    data = yaml_load(Path(path).read_text()) or {}
    profiles = data.get("profiles") if isinstance(data, dict) else None
    return {str(k): str((v or {}).get("description", "")) for k, v in (profiles or {}).items()}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: RunConfig | None = None, profile: str | None = None) -> RunConfig:
    """Defaults, then the YAML file ``path`` (its body, then the overrides of its profile
    ``profile``), then ``key=value`` overrides in order."""
    cfg = base if base is not None else RunConfig()
    if path is None and profile is not None:
        raise NclabError(f"--profile {profile}: profiles belong to a config file; give one")
    if path is not None:
        p = Path(path)
        data = read_yaml(p)
        try:
            data = dict(data or {}) if isinstance(data, dict) else data
            profiles = data.pop("profiles", None) if isinstance(data, dict) else None
            _apply(cfg, expand_vars({} if data is None else data))
            if profile is not None:
                for k, v in profile_overrides(profiles, profile).items():
                    _set_path(cfg, str(k), expand_vars(v))
        except NclabError as e:
            raise NclabError(f"{p}: {e}") from None
    for o in overrides:
        k, v = parse_override(o)
        _set_path(cfg, k, v)
    return cfg.check()


def from_dict(data: dict) -> RunConfig:
    """Rebuild a RunConfig from :func:`to_dict` output (a run's config.yaml), checked."""
    cfg = RunConfig()
    _apply(cfg, data)
    return cfg.check()


def packaged_config(name: str) -> Path:
    """Path of a config shipped with the package (``nclab/configs/NAME.yaml``)."""
    p = Path(__file__).parent / "configs" / f"{name}.yaml"
    if not p.exists():
        valid = sorted(q.stem for q in p.parent.glob("*.yaml"))
        raise NclabError(f"no packaged config {name!r}; available: {', '.join(valid)}")
    return p
