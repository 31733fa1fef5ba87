"""``nclab sweep CONFIG_OR_RECIPE --grid key=v1,v2 [--seeds N] --out DIR [--workers N] [--ray [ADDRESS]]
[key=value ...]``."""

from __future__ import annotations

from pathlib import Path

from nclab.config import RunConfig, load_config, packaged_config
from nclab.errors import NclabError
from nclab.experiments.ray_backend import RayBackend, check_address
from nclab.experiments.recipes import RECIPE_DIR, expand_vars, load_recipe
from nclab.experiments.sweep import Sweep, check_points, default_threads, grid_points, parse_grid


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


def check_backend_args(args) -> int:
    """Validate ``--workers`` / ``--threads`` / ``--gpus`` / ``--ray``; the threads per point."""
    if args.workers < 1:
        raise NclabError(f"--workers {args.workers}: expected a positive number of processes")
    if args.threads is not None and args.threads < 1:
        raise NclabError(f"--threads {args.threads}: expected a positive number of threads per run")
    if args.gpus is not None:
        if args.ray is None:
            raise NclabError("--gpus applies to Ray sweeps (--ray); without it the config's trainer.accelerator decides")
        if args.gpus < 0:
            raise NclabError(f"--gpus {args.gpus:g}: expected a number of GPUs per run >= 0")
    if args.ray is not None:
        check_address(args.ray)
    return args.threads or default_threads(args.workers)


def ray_backend(args, threads: int, cfg: RunConfig) -> RayBackend | None:
    """The connected Ray backend of ``--ray`` (None without it); ``cfg`` (a point's config)
    decides the GPUs per point unless ``--gpus`` does."""
    if args.ray is None:
        return None
    backend = RayBackend(args.ray, num_cpus=threads, num_gpus=args.gpus).connect(cfg)
    where = "a local Ray instance" if args.ray == "local" else f"the Ray cluster at {args.ray}"
    print(f"on {where}: {backend.num_cpus:g} CPUs and {backend.num_gpus:g} GPUs per run", flush=True)
    return backend


def sweep_command(args) -> int:
    threads = check_backend_args(args)
    base, overrides, recipe_grid = resolve_base(args.source, args.profile)
    grid = {**recipe_grid, **parse_grid(args.grid)}
    if args.seeds is not None and args.seeds < 1:
        raise NclabError(f"--seeds {args.seeds}: expected a positive number of seeds")
    overrides += list(args.overrides)
    if args.seeds is None:
        seeds = [load_config(base, overrides).trainer.seed]
    else:
        seeds = list(range(args.seeds))
    points = grid_points(grid, seeds)
    check_points(base, overrides, points)
    backend = ray_backend(args, threads, load_config(base, overrides + points[0].overrides))
    try:
        sweep = Sweep.prepare(args.out, kind="sweep", name=Path(args.source).stem, base_config=base,
                              overrides=overrides, grid=grid, seeds=seeds, points=points,
                              profile=args.profile)
        done = sum(sweep.status(p) == "finished" for p in sweep.points())
        at_once = "as many at a time as Ray schedules" if backend else f"{args.workers} at a time"
        print(f"sweep {args.out}: {len(sweep.points())} runs ({done} finished already), {at_once}", flush=True)
        result = sweep.run(workers=args.workers, threads=threads, on_outcome=print_outcome,
                           submit=backend.submit if backend else None)
    finally:
        if backend is not None:
            backend.close()
    print(f"results: {sweep.root / 'results.csv'} ({result.seconds:.0f} s)")
    if result.failed:
        print(f"{len(result.failed)} of {len(result.outcomes)} runs failed:")
        for o in result.failed:
            print(f"  {o.name}: {o.error}")
        return 1
    return 0
