"""Run configuration: typed dataclasses, loaded from YAML, overridden by ``key=value``.

``nclab train configs/quickstart.yaml optim.lr=0.1 data.name=omniglot`` reads the YAML,
applies the overrides in order (values parsed as YAML, so ``0.1`` is a float and
``[60, 80]`` a list), checks every key and type, and the run writes the fully resolved
config (:func:`to_dict`) it ran with.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nclab.errors import NclabError


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


@dataclass
class DataConfig:
    name: str = "glyphs"                  # a registered dataset (nclab.data.DATASETS)
    root: str | None = None               # folder of a real dataset; glyphs ignore it
    image_size: int | None = None         # None: the dataset's default (28 for glyphs / omniglot)
    split: str | None = None              # dataset-specific class split scheme (omniglot: background | vinyals)
    holdout: float = 4                    # source samples per class held out as the *test* split (<1: fraction)
    source_classes: int | None = None     # use only the first l source classes (source-class-count sweeps)
    samples_per_class: int = 20           # glyphs: samples generated per class
    seed: int = 0                         # dataset generation / holdout seed (not the training seed)
    augment: bool = True                  # random shift (+ flip where the dataset allows it)
    shift: int = 2                        # max random shift in pixels (pad + random crop)
    num_workers: int = 0                  # DataLoader worker processes (seeded); 0 = main process


@dataclass
class ModelConfig:
    backbone: str = "conv4"               # conv4 | resnet12 | resnet18 | wrn | mlp
    head: str = "linear"                  # linear | linear_nobias | etf
    options: dict = field(default_factory=dict)   # backbone keyword arguments, e.g. {depth: 28, widen: 4}


@dataclass
class OptimConfig:
    name: str = "sgd"                     # sgd | adam | adamw
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class ScheduleConfig:
    name: str = "cosine"                  # constant | step | multistep | cosine
    warmup_epochs: float = 0              # linear warm-up from lr * warmup_start
    warmup_start: float = 0.1
    step_size: int = 30                   # step: epochs between decays
    milestones: list = field(default_factory=lambda: [60, 80])   # multistep: epochs
    gamma: float = 0.1
    min_lr: float = 0.0                   # cosine floor


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128                 # global batch (split across devices)
    loss: str = "ce"                      # ce | mse
    label_smoothing: float = 0.0
    regularizers: list = field(default_factory=list)   # e.g. [{gc: {alpha: 1e-6, probes: 1}}]
    drop_last: bool = True
    select: str | None = None             # model selection: keep best.safetensors at the best value of this
                                          # val probe metric, e.g. val/fewshot/5w1s/ncc (nclab.experiments.select)
    select_mode: str = "auto"             # max | min | auto (inferred from the metric's name)


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"              # cpu | cuda | auto
    devices: int = 1                      # processes (DDP via Lightning Fabric when > 1)
    precision: str = "32-true"            # Fabric precision: 32-true | 64-true | bf16-mixed | 16-mixed
    seed: int = 0
    threads: int | None = None            # torch intra-op threads per process (None: torch default)
    ckpt_every_steps: int = 0             # also checkpoint every k optimizer steps (0: epoch ends only)
    eval_batch_size: int = 512
    progress: bool = True


@dataclass
class FewshotProbeConfig:
    splits: list = field(default_factory=lambda: ["val", "novel"])   # few-shot on these (val | novel)
    ways: list = field(default_factory=lambda: [5])
    shots: list = field(default_factory=lambda: [1, 5])
    query: int = 15
    episodes: int = 600                   # one fixed set per split / way / shot, saved in the run directory
    heads: list = field(default_factory=lambda: ["ncc", "ridge"])     # also: logistic, ncc-cosine, 1nn
    transform: str = "l2"                 # l2 | none | center | center+l2 (centre = mean train-probe feature)


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


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (what a run writes as config.yaml)."""
    return dataclasses.asdict(cfg)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check / convert ``value`` to the annotated type ``tp``; error names the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except NclabError as e:
                errors.append(str(e))
        raise errors[0] if len(errors) == 1 else NclabError(f"{key}: {value!r} is not a valid value") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise NclabError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise NclabError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise NclabError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)               # e.g. name=10
        raise NclabError(f"{key}: expected a string, got {value!r}")
    if tp in (list, dict):
        if isinstance(value, tp):
            return value
        raise NclabError(f"{key}: expected a {tp.__name__}, got {value!r}")
    raise TypeError(f"unsupported config type {tp} for {key}")


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
        raise NclabError(f"override {text!r}: value is not valid YAML ({e.problem})") from None
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: RunConfig | None = None) -> RunConfig:
    """Defaults, then the YAML file ``path``, then ``key=value`` overrides in order."""
    cfg = base if base is not None else RunConfig()
    if path is not None:
        p = Path(path)
        try:
            data = yaml_load(p.read_text())
        except FileNotFoundError:
            raise NclabError(f"{p}: config file not found") from None
        except yaml.YAMLError as e:
            raise NclabError(f"{p}: not valid YAML ({getattr(e, 'problem', e)})") from None
        except OSError as e:
            raise NclabError(f"{p}: cannot read config ({e.strerror})") from None
        try:
            _apply(cfg, data or {})
        except NclabError as e:
            raise NclabError(f"{p}: {e}") from None
    for o in overrides:
        k, v = parse_override(o)
        _set_path(cfg, k, v)
    return cfg


def from_dict(data: dict) -> RunConfig:
    """Rebuild a RunConfig from :func:`to_dict` output (a run's config.yaml)."""
    cfg = RunConfig()
    _apply(cfg, data)
    return cfg


def packaged_config(name: str) -> Path:
    """Path of a config shipped with the package (``nclab/configs/NAME.yaml``)."""
    p = Path(__file__).parent / "configs" / f"{name}.yaml"
    if not p.exists():
        valid = sorted(q.stem for q in p.parent.glob("*.yaml"))
        raise NclabError(f"no packaged config {name!r}; available: {', '.join(valid)}")
    return p
