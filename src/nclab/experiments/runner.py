"""``nclab experiment NAME``: run a recipe's profile as a sweep, then analyse its records.

The experiment directory is a sweep directory (:mod:`nclab.experiments.sweep`) whose manifest says
``kind: experiment``, plus ``analysis.json``, the experiment's own summary tables::

    {"summary": {...}, "tables": [{"title", "columns", "rows", "caption"}]}

written by ``analyze(table, manifest)`` of the recipe's analysis module. Running the same command
again skips finished runs and resumes interrupted ones; only the analysis is redone.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclab.atomic import atomic_write_json
from nclab.config import parse_override
from nclab.errors import NclabError
from nclab.experiments.recipes import Profile, Recipe, expand_vars, load_recipe
from nclab.experiments.sweep import Point, Sweep, SweepResult, check_points, grid_points


@dataclass
class ExperimentResult:
    root: Path
    recipe: str
    profile: str
    sweep: SweepResult | None
    analysis: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"root": str(self.root), "recipe": self.recipe, "profile": self.profile,
                "sweep": None if self.sweep is None else self.sweep.to_dict(),
                "analysis": self.analysis, "seconds": round(self.seconds, 3)}


def analysis_module(recipe: Recipe):
    try:
        return importlib.import_module(f"nclab.experiments.{recipe.analysis}")
    except ModuleNotFoundError:
        raise NclabError(f"{recipe.path}: analysis module nclab.experiments.{recipe.analysis} does not exist") from None


def split_overrides(items: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """``key=value`` items -> (config overrides, experiment settings given as ``settings.KEY=value``)."""
    config, settings = [], {}
    for item in items:
        key, value = parse_override(item)
        if key.startswith("settings."):
            settings[key.removeprefix("settings.")] = value
        else:
            config.append(item)
    return config, settings


@dataclass
class Plan:
    """Everything a run of the experiment needs, resolved and checked, nothing written."""

    recipe: Recipe
    profile: Profile
    base_config: str | None
    overrides: list[str]
    settings: dict[str, Any]
    points: list[Point]


def plan_experiment(name: str, profile: str = "quick", overrides: Sequence[str] = ()) -> Plan:
    recipe = load_recipe(name)
    prof = recipe.profile(profile)
    extra, settings_over = split_overrides(overrides)
    settings = {**prof.settings, **settings_over}
    common = [expand_vars(o) for o in prof.override_items()] + list(extra)
    mod = analysis_module(recipe)
    if hasattr(mod, "points"):
        points = mod.points(prof, settings)
    else:
        points = grid_points(prof.grid, prof.seeds)
    base = prof.config_path()
    check_points(base, common, points)
    return Plan(recipe, prof, base, common, settings, points)


def default_out(name: str, profile: str) -> Path:
    return Path("experiments") / f"{name}-{profile}"


def run_experiment(name: str, profile: str = "quick", overrides: Sequence[str] = (), out: str | os.PathLike | None = None,
                   workers: int = 1, threads: int | None = None, submit: Callable | None = None,
                   log: Callable[[str], None] | None = print) -> ExperimentResult:
    """Run (or continue) the experiment ``name`` with ``profile`` into ``out``, then analyse it."""
    t0 = time.perf_counter()
    plan = plan_experiment(name, profile, overrides)
    root = Path(out) if out is not None else default_out(plan.recipe.name, profile)
    sweep = Sweep.prepare(root, kind="experiment", name=plan.recipe.name, profile=profile,
                          base_config=plan.base_config, overrides=plan.overrides,
                          grid=plan.profile.grid, seeds=plan.profile.seeds, points=plan.points,
                          settings=plan.settings)
    if log:
        done = sum(sweep.status(p) == "finished" for p in plan.points)
        log(f"experiment {plan.recipe.name} ({profile}): {len(plan.points)} runs in {root} "
            f"({done} finished already)")

    def progress(outcome, i, n):
        if log:
            msg = f"  [{i}/{n}] {outcome.name}: {outcome.status} in {outcome.seconds:.0f} s"
            log(msg + (f" ({outcome.error})" if outcome.error else ""))

    result = sweep.run(workers=workers, threads=threads, on_outcome=progress, submit=submit)
    analysis = analyze_experiment(root)
    seconds = time.perf_counter() - t0
    budget = plan.profile.budget_minutes
    if log:
        note = f" (budget {budget:g} min)" if budget else ""
        log(f"experiment {plan.recipe.name} ({profile}) finished in {seconds / 60:.1f} min{note}; "
            f"{len(result.failed)} of {len(plan.points)} runs failed")
    return ExperimentResult(root, plan.recipe.name, profile, result, analysis, seconds)


def analyze_experiment(root: str | os.PathLike) -> dict:
    """Run the recipe's ``analyze`` on the experiment's records; write ``analysis.json``."""
    from nclab.experiments.records import tidy_records
    sweep = Sweep(root)
    manifest = sweep.manifest()
    if manifest.get("kind") != "experiment":
        raise NclabError(f"{root}: not an experiment directory (manifest kind {manifest.get('kind')!r})")
    recipe = load_recipe(manifest["name"])
    table = tidy_records([Path(root)])
    analysis = analysis_module(recipe).analyze(table, manifest) if len(table) else {"summary": {}, "tables": []}
    analysis.setdefault("summary", {})["question"] = recipe.question
    atomic_write_json(Path(root) / "analysis.json", analysis)
    return analysis
