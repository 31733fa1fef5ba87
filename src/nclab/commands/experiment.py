"""``nclab experiment NAME [--profile P] [key=value ...] [--out DIR] [--workers N] [--ray [ADDRESS]] [--dry-run | --list]``."""

from __future__ import annotations

from nclab.commands.sweep import check_backend_args, ray_backend
from nclab.config import load_config
from nclab.errors import NclabError
from nclab.experiments.recipes import load_recipe, recipe_names
from nclab.experiments.runner import default_out, plan_experiment, run_experiment


def list_recipes() -> str:
    lines = []
    for name in recipe_names():
        r = load_recipe(name)
        lines.append(f"{name}: {r.question}")
        for p in r.profiles.values():
            budget = f", budget {p.budget_minutes:g} min" if p.budget_minutes else ""
            lines.append(f"  --profile {p.name}: {len(p.seeds)} seeds{budget}. {p.description}".rstrip())
    return "\n".join(lines)


def experiment_command(args) -> int:
    if args.list:
        print(list_recipes())
        return 0
    if args.name is None:
        raise NclabError("experiment: give a NAME (nclab experiment --list shows them)")
    threads = check_backend_args(args)
    if args.dry_run:
        plan = plan_experiment(args.name, args.profile, args.overrides)
        print(f"experiment {plan.recipe.name} ({plan.profile.name}): {len(plan.points)} runs into "
              f"{args.out or default_out(plan.recipe.name, plan.profile.name)}")
        print(f"  base config: {plan.base_config}")
        print(f"  every run: {' '.join(plan.overrides) or '(no overrides)'}")
        print(f"  settings: {plan.settings}")
        for p in plan.points:
            print(f"  {p.name}: {' '.join(p.overrides)}")
        return 0
    backend = None
    if args.ray is not None:                   # connect only once the plan is known to be valid
        plan = plan_experiment(args.name, args.profile, args.overrides)
        backend = ray_backend(args, threads, load_config(plan.base_config, plan.overrides + plan.points[0].overrides))
    try:
        result = run_experiment(args.name, args.profile, args.overrides, out=args.out, workers=args.workers,
                                threads=threads, submit=backend.submit if backend else None)
    finally:
        if backend is not None:
            backend.close()
    return 1 if result.sweep.failed else 0
