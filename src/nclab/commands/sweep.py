"""``nclab sweep CONFIG_OR_RECIPE --grid key=v1,v2 [--seeds N] --out DIR [--workers N] [key=value ...]``."""

from __future__ import annotations

from pathlib import Path

from nclab.config import packaged_config
from nclab.errors import NclabError
from nclab.experiments.recipes import RECIPE_DIR, expand_vars, load_recipe
from nclab.experiments.sweep import Sweep, grid_points, parse_grid


def resolve_base(source: str, profile: str | None) -> tuple[str | None, list[str], dict]:
    """(config path, overrides, recipe grid) of a config file, a packaged config or a recipe's profile."""
    if source.endswith((".yaml", ".yml")) or "/" in source:
        if not Path(source).is_file():
            raise NclabError(f"{source}: config file not found")
        return source, [], {}
    if (RECIPE_DIR / f"{source}.yaml").is_file():
        prof = load_recipe(source).profile(profile or "quick")
        return prof.config_path(), [expand_vars(o) for o in prof.override_items()], prof.grid
    if profile is not None:
        raise NclabError(f"--profile applies to experiment recipes; {source!r} is a config")
    return str(packaged_config(source)), [], {}


def print_outcome(outcome, i: int, n: int) -> None:
    msg = f"  [{i}/{n}] {outcome.name}: {outcome.status} in {outcome.seconds:.0f} s"
    print(msg + (f" ({outcome.error})" if outcome.error else ""), flush=True)


def sweep_command(args) -> int:
    base, overrides, recipe_grid = resolve_base(args.source, args.profile)
    grid = {**recipe_grid, **parse_grid(args.grid)}
    if args.seeds is not None and args.seeds < 1:
        raise NclabError(f"--seeds {args.seeds}: expected a positive number of seeds")
    if args.workers < 1:
        raise NclabError(f"--workers {args.workers}: expected a positive number of processes")
    overrides += list(args.overrides)
    if args.seeds is None:
        from nclab.config import load_config
        seeds = [load_config(base, overrides).trainer.seed]
    else:
        seeds = list(range(args.seeds))
    points = grid_points(grid, seeds)
    sweep = Sweep.prepare(args.out, kind="sweep", name=Path(args.source).stem, base_config=base,
                          overrides=overrides, grid=grid, seeds=seeds, points=points,
                          profile=args.profile)
    done = sum(sweep.status(p) == "finished" for p in sweep.points())
    print(f"sweep {args.out}: {len(sweep.points())} runs ({done} finished already), {args.workers} at a time",
          flush=True)
    result = sweep.run(workers=args.workers, on_outcome=print_outcome)
    print(f"results: {sweep.root / 'results.csv'} ({result.seconds:.0f} s)")
    if result.failed:
        print(f"{len(result.failed)} of {len(result.outcomes)} runs failed:")
        for o in result.failed:
            print(f"  {o.name}: {o.error}")
        return 1
    return 0
