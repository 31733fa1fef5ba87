"""Experiment recipes: ``configs/experiments/NAME.yaml``, one per experiment of the papers.

A recipe names the question it answers, the module that analyses its runs, and its profiles::

    name: nc-transfer
    analysis: nc_transfer            # nclab.experiments.nc_transfer: points() (optional), analyze()
    question: Does collapse on the source classes carry over to new samples and new classes?
    profiles:
      quick:                         # 2 CPU cores
        config: quickstart           # a packaged config (configs/NAME.yaml) or a path
        overrides: {train.epochs: 10}
        grid: {}                     # config key -> list of values (Cartesian product)
        seeds: [0, 1, 2]
        settings: {}                 # options of the analysis
        budget_minutes: 10
      paper:                         # the papers' settings, for a GPU
        extends: quick               # start from another profile; overrides merge, the rest replaces
        config: rfs-mini-imagenet

String values may use ``${VAR}`` or ``${VAR:-default}`` (e.g. the folder of a real dataset).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclab.config import expand_vars, packaged_config  # noqa: F401  (expand_vars: re-exported)
from nclab.errors import NclabError, unknown_name
from nclab.experiments.sweep import format_value, read_yaml_mapping

RECIPE_DIR = Path(__file__).resolve().parent.parent / "configs" / "experiments"
_PROFILE_KEYS = {"extends", "description", "config", "overrides", "grid", "seeds", "settings", "budget_minutes"}
@dataclass
class Profile:
    name: str
    config: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    settings: dict[str, Any] = field(default_factory=dict)
    budget_minutes: float | None = None
    description: str = ""

    def config_path(self) -> str | None:
        """The base config file: a packaged config by name, or a path."""
        if self.config is None:
            return None
        if self.config.endswith((".yaml", ".yml")) or "/" in self.config:
            if not Path(self.config).is_file():
                raise NclabError(f"profile {self.name}: config file {self.config} not found")
            return self.config
        return str(packaged_config(self.config))

    def override_items(self) -> list[str]:
        """The profile's overrides as ``key=value`` items (applied to every point)."""
        return [f"{k}={format_value(v)}" for k, v in self.overrides.items()]

    def to_dict(self) -> dict:
        return {"name": self.name, "config": self.config, "overrides": dict(self.overrides),
                "grid": {k: list(v) for k, v in self.grid.items()}, "seeds": list(self.seeds),
                "settings": dict(self.settings), "budget_minutes": self.budget_minutes,
                "description": self.description}


@dataclass
class Recipe:
    name: str
    analysis: str
    question: str
    profiles: dict[str, Profile]
    path: Path | None = None

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise unknown_name(f"profile of experiment {self.name}", name, self.profiles)
        return self.profiles[name]

    def to_dict(self) -> dict:
        return {"name": self.name, "analysis": self.analysis, "question": self.question,
                "profiles": {k: p.to_dict() for k, p in self.profiles.items()}}


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _profile(where: str, name: str, raw: dict, resolved: dict[str, Profile], raws: dict, stack: tuple) -> Profile:
    if name in resolved:
        return resolved[name]
    if not isinstance(raw, dict):
        raise NclabError(f"{where}: profile {name} must be a mapping")
    bad = sorted(set(raw) - _PROFILE_KEYS)
    if bad:
        raise NclabError(f"{where}: profile {name}: unknown key {bad[0]!r} (valid: {', '.join(sorted(_PROFILE_KEYS))})")
    base: dict[str, Any] = {}
    parent = raw.get("extends")
    if parent is not None:
        if parent not in raws:
            raise NclabError(f"{where}: profile {name} extends unknown profile {parent!r}")
        if parent in stack:
            raise NclabError(f"{where}: profiles extend each other in a cycle ({' -> '.join(stack + (parent,))})")
        base = copy.deepcopy(_profile(where, parent, raws[parent], resolved, raws, stack + (name,)).to_dict())
        base.pop("name")
    merged = dict(base)
    for k, v in raw.items():
        if k == "extends":
            continue
        merged[k] = {**base.get("overrides", {}), **(v or {})} if k == "overrides" else v
    for key, kind in (("overrides", dict), ("grid", dict), ("settings", dict), ("seeds", list)):
        if key in merged and not isinstance(merged[key], kind):
            raise NclabError(f"{where}: profile {name}: {key} must be a {kind.__name__}")
    for k, v in merged.get("grid", {}).items():
        if not isinstance(v, list) or not v:
            raise NclabError(f"{where}: profile {name}: grid {k} must be a non-empty list of values")
    seeds = merged.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise NclabError(f"{where}: profile {name}: seeds must be a non-empty list of integers")
    prof = Profile(name=name, config=merged.get("config"), overrides=merged.get("overrides", {}),
                   grid=merged.get("grid", {}), seeds=list(seeds), settings=merged.get("settings", {}),
                   budget_minutes=merged.get("budget_minutes"), description=merged.get("description", ""))
    resolved[name] = prof
    return prof


def load_recipe(name: str) -> Recipe:
    """The recipe ``configs/experiments/NAME.yaml`` (or a recipe file path)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        if name.endswith((".yaml", ".yml")):
            raise NclabError(f"{path}: recipe file not found")
        raise unknown_name("experiment", name, recipe_names())
    raw = read_yaml_mapping(path, "recipe")
    for key in ("name", "analysis", "profiles"):
        if key not in raw:
            raise NclabError(f"{path}: recipe needs a {key!r} entry")
    if not isinstance(raw["profiles"], dict) or not raw["profiles"]:
        raise NclabError(f"{path}: profiles must be a non-empty mapping")
    resolved: dict[str, Profile] = {}
    for pname, praw in raw["profiles"].items():
        _profile(str(path), pname, praw, resolved, raw["profiles"], ())
    profiles = {p: resolved[p] for p in raw["profiles"]}
    return Recipe(str(raw["name"]), str(raw["analysis"]), str(raw.get("question", "")).strip(), profiles, path)
