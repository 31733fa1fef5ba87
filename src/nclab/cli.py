"""The ``nclab`` command line.

Each subcommand's parser is declared here; its work is done by the library module named
in its handler, imported lazily so that ``nclab --help`` stays instant. User errors
(:class:`nclab.errors.NclabError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from nclab.errors import NclabError

SPLIT_CHOICES = ("train", "test", "val", "novel")
CHECKPOINT_HELP = ("with a run directory: final weights (default; the moving average with train.ema), the last "
                   "checkpoint (an unfinished run; with train.ema the live, un-averaged weights), or best: the "
                   "epoch kept by model selection (train.select)")


def _add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="final", choices=("final", "last", "best"), help=CHECKPOINT_HELP)


def _add_source(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("source", help=f"a feature file F.npz, or a run directory (then --split picks the {what})")
    p.add_argument("--split", choices=SPLIT_CHOICES, default=None,
                   help="with a run directory: which split's features to use")
    _add_checkpoint(p)


# --- quickstart / train ----------------------------------------------------------------------

def _parser_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="pre-train conv4 on the built-in glyphs (CPU, minutes) and summarise",
                       description="Pre-train conv4 on the glyphs source classes, print a summary table, "
                                   "leave a run directory (default runs/quickstart-<time>).")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=3")
    p.add_argument("--out", default=None, help="run directory to create (default: runs/quickstart-<time>)")
    p.set_defaults(handler=_cmd_quickstart)


def _cmd_quickstart(args) -> int:
    from nclab.commands.report import report_after
    from nclab.experiments.quickstart import quickstart
    run = quickstart(args.overrides, out=args.out)
    report_after(run.path)
    return 0


def _parser_train(sub) -> None:
    p = sub.add_parser("train", help="pre-train a backbone on source classes",
                       description="Train from a YAML config plus key=value overrides, e.g. "
                                   "`nclab train configs/quickstart.yaml optim.lr=0.1 data.name=omniglot "
                                   "data.root=DIR`. Writes config.yaml, metrics.jsonl, checkpoints.")
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file (optional with --resume; key=value items may follow)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--out", default=None, help="run directory to create (default: runs/<name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue an interrupted run exactly from its last checkpoint")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="one of the config file's profiles: (e.g. paper, for a GPU); its overrides apply after "
                        "the file's body and before key=value items")
    p.set_defaults(handler=_cmd_train)


def _cmd_train(args) -> int:
    from nclab.experiments.training import resume, train
    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)       # `nclab train optim.lr=0.1` with no file: defaults + overrides
        config = None
    if args.resume:
        if config or overrides or args.profile:
            raise NclabError("--resume continues a run with its own config.yaml; give no config, profile or overrides")
        resume(args.resume)
    else:
        train(config, overrides, out=args.out, profile=args.profile)
    return 0


# --- features ----------------------------------------------------------------------------------

def _parser_features(sub) -> None:
    p = sub.add_parser("features", help="write penultimate features of a run to F.npz",
                       description="Embed a split of the run's dataset, or any image folder (class = leaf "
                                   "directory), with exactly the run's preprocessing. F.npz holds features, "
                                   "labels, class_names, and W, b when the classes are the classifier's own.")
    p.add_argument("run_dir", help="a run directory written by `nclab train`")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--split", choices=SPLIT_CHOICES, help="a split of the run's dataset")
    g.add_argument("--folder", help="an image folder; every leaf directory is a class")
    p.add_argument("--ink", choices=("auto", "dark", "light"), default="auto",
                   help="--folder images: dark = dark strokes on light paper (inverted to the run's "
                        "ink = bright convention), light = already bright ink, auto = decide per image "
                        "from its border (default)")
    _add_checkpoint(p)
    _add_tta(p)
    p.add_argument("--out", required=True, help="output .npz")
    p.set_defaults(handler=_cmd_features)


def _add_tta(p) -> None:
    p.add_argument("--tta", choices=("none", "flip"), default="none",          # nclab.extract.TTA (not imported: start-up)
                   help="test-time augmentation: flip = each image's features averaged with those of its "
                        "horizontal mirror (natural images; refused on characters). Default none")


def _add_power(p, what: str) -> None:
    p.add_argument("--power", type=float, default=None, metavar="BETA",
                   help=f"signed power transform sign(h) |h|^BETA of {what} before the heads' transforms, "
                        "BETA in (0, 1] (Hu et al. 2021 use 0.5); default none")


def _cmd_features(args) -> int:
    from nclab.extract import write_features
    write_features(args.run_dir, args.out, split=args.split, folder=args.folder, ink=args.ink,
                   checkpoint=args.checkpoint, tta=args.tta)
    return 0


# --- data --------------------------------------------------------------------------------------

def _parser_data(sub) -> None:
    p = sub.add_parser("data", help="inspect datasets (info, show)",
                       description="Inspect a dataset: `nclab data info NAME [--json]`, "
                                   "`nclab data show NAME --out grid.png`.")
    dsub = p.add_subparsers(dest="data_command", metavar="{info,show}")
    dsub.required = True
    common = _Parser(add_help=False)
    common.add_argument("name", help="dataset name (glyphs, omniglot, ...)")
    common.add_argument("--root", default=None, help="folder of a real dataset")
    common.add_argument("options", nargs="*", metavar="key=value",
                        help="data config fields, e.g. image_size=32 split=vinyals")
    i = dsub.add_parser("info", parents=[common], help="classes and samples per split, image shape, fingerprint",
                        description="Classes and samples per split, image shape and a fingerprint of the arrays.")
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    i.set_defaults(handler=_cmd_data_info)
    s = dsub.add_parser("show", parents=[common], help="draw a grid of samples, one row per class",
                        description="Draw a grid of samples (one row per class) to a PNG.")
    s.add_argument("--out", required=True, help="output PNG")
    s.add_argument("--split", choices=SPLIT_CHOICES, default="train")
    s.add_argument("--classes", type=int, default=12, help="rows (classes) to draw")
    s.add_argument("--samples", type=int, default=10, help="columns (samples per class)")
    s.add_argument("--seed", type=int, default=0, help="which classes and samples to draw")
    s.set_defaults(handler=_cmd_data_show)


def _data_config(args):
    from nclab.config import DataConfig, RunConfig, load_config
    overrides = [f"data.name={args.name}"] + [f"data.{o}" for o in args.options]
    cfg = load_config(None, overrides, base=RunConfig(data=DataConfig()))
    if args.root is not None:
        cfg.data.root = args.root
    return cfg.data


def _cmd_data_info(args) -> int:
    from nclab.report.datainfo import data_info, format_data_info
    import json
    info = data_info(_data_config(args))
    print(json.dumps(info, indent=2) if args.json else format_data_info(info))
    return 0


def _cmd_data_show(args) -> int:
    from nclab.report.datainfo import data_show
    data_show(_data_config(args), args.out, split=args.split, n_classes=args.classes,
              n_samples=args.samples, seed=args.seed)
    print(f"wrote {args.out}")
    return 0


# --- measure / fewshot / gc --------------------------------------------------------------------

def _parser_measure(sub) -> None:
    p = sub.add_parser("measure", help="neural-collapse statistics (CDNV, NC1-NC4, ETF geometry)",
                       description="Measure CDNV, NC1 (pseudo-inverse and trace quotient), NC2 (equinorm, "
                                   "equiangularity, max-angle, ETF error), NC3 and NC4 on a feature file or "
                                   "a run's split. Prints a table; --json writes all values.")
    _add_source(p, "split")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write the record as JSON")
    p.set_defaults(handler=_cmd_measure)


def _cmd_measure(args) -> int:
    from nclab.commands.measure import measure_command
    return measure_command(args)


def _parser_fewshot(sub) -> None:
    p = sub.add_parser("fewshot", help="k-way n-shot transfer accuracy with NCC / ridge / logistic heads",
                       description="Sample seeded k-way n-shot episodes from a feature file or a run's split "
                                   "(default novel) and report accuracy with 95%% intervals per head and shot.")
    _add_source(p, "split (default novel)")
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, nargs="+", default=[1, 5])
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--episodes", type=int, default=2000)
    p.add_argument("--head", nargs="+", default=["ncc", "ridge", "logistic"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes-file", default=None, help="load episodes from (or save them to) this file")
    p.add_argument("--transform", choices=("l2", "none"), default="l2",
                   help="feature transform before the heads (default l2, as RFS)")
    _add_power(p, "every feature")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write the results as JSON")
    p.set_defaults(handler=_cmd_fewshot)


def _cmd_fewshot(args) -> int:
    from nclab.commands.fewshot import fewshot_command
    return fewshot_command(args)


def _parser_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="few-shot transfer of pre-trained runs as the field reports it",
                       description="Few-shot accuracy of one or more runs (e.g. one recipe at several seeds) "
                                   "on seeded episodes shared by all runs and heads, each head on the feature "
                                   "transform the literature uses for it (NCC and ridge: centred on the base-"
                                   "class mean, then L2-normalised; logistic: L2-normalised, as RFS), with 95%% "
                                   "intervals per run and the spread over runs.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by `nclab train`")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="novel")
    p.add_argument("--base-split", choices=SPLIT_CHOICES, default="train",
                   help="the split whose mean feature centring subtracts (default train: the base classes)")
    p.add_argument("--way", type=int, nargs="+", default=[5])
    p.add_argument("--shot", type=int, nargs="+", default=[1, 5])
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--episodes", type=int, default=2000)
    p.add_argument("--head", nargs="+", default=["ncc", "ridge", "logistic"])
    p.add_argument("--transform", nargs="+", default=None, metavar="T",
                   help="one transform for all heads (none, l2, center, center+l2) or HEAD=T items; "
                        "default: center+l2 for ncc / ridge / 1nn, center for ncc-cosine, l2 for logistic")
    _add_power(p, "every feature (target and base split)")
    p.add_argument("--seed", type=int, default=0, help="episode seed")
    p.add_argument("--paired", action="store_true",
                   help="also compare every run with the first on the shared episodes: the mean per-episode "
                        "accuracy difference and its 95%% interval over episodes (e.g. a recipe change against "
                        "the recipe at the same seed)")
    _add_checkpoint(p)
    _add_tta(p)
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write the results as JSON")
    p.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from nclab.commands.evaluate import evaluate_command
    return evaluate_command(args)


def _parser_gc(sub) -> None:
    p = sub.add_parser("gc", help="geometric complexity of a run's embedding",
                       description="Geometric complexity GC = mean ||df(x)/dx||_F^2 of the embedding "
                                   "(Munn et al. 2024), exact or estimated with random probes, and the "
                                   "geometric-collapse ratio.")
    p.add_argument("run_dir", help="a run directory written by `nclab train`")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="train")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--exact", action="store_true", help="all output directions (default)")
    g.add_argument("--probes", type=int, default=None, help="random projections per sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the random probes")
    p.add_argument("--logits", action="store_true", help="GC of the logits instead of the embedding")
    _add_checkpoint(p)
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write the record as JSON")
    p.set_defaults(handler=_cmd_gc)


def _cmd_gc(args) -> int:
    from nclab.commands.gc import gc_command
    return gc_command(args)


# --- experiments and sweeps ------------------------------------------------------------------

def _backend_arguments(p) -> None:
    p.add_argument("--workers", type=int, default=1, help="runs trained at the same time (processes); torch "
                                                          "threads per run = cores / workers")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default cores / workers); "
                                                             "with --ray, the CPUs each run's Ray task takes")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run every point as a Ray task (pip install 'nclab[ray]'): alone, on a local Ray instance; "
                        "with HOST:PORT, on that running cluster (the directory must be on storage every node "
                        "shares)")
    p.add_argument("--gpus", type=float, default=None, help="with --ray: GPUs per run (default: trainer.devices "
                                                            "when the config's accelerator is cuda, or auto on a "
                                                            "cluster with GPUs; else 0)")


def _parser_experiment(sub) -> None:
    p = sub.add_parser("experiment", help="run one of the papers' experiments (a recipe) and analyse it",
                       description="Run a recipe of configs/experiments/ (nc-transfer, source-classes, ...) into "
                                   "one experiment directory of ordinary run directories plus its analysis. "
                                   "The same command again skips finished runs and resumes interrupted ones. "
                                   "key=value items override every run's config (settings.KEY=value: the "
                                   "analysis' options).")
    p.add_argument("name", nargs="?", default=None, help="the experiment (see --list)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    p.add_argument("--profile", default="quick", help="quick (2 CPU cores, default), paper (GPU), or another "
                                                     "profile of the recipe")
    p.add_argument("--out", default=None, help="experiment directory (default experiments/NAME-PROFILE)")
    _backend_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="print the runs and their overrides; write nothing")
    p.add_argument("--list", action="store_true", help="list the experiments and their profiles")
    p.set_defaults(handler=_cmd_experiment)


def _cmd_experiment(args) -> int:
    from nclab.commands.experiment import experiment_command
    return experiment_command(args)


def _parser_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="a grid of training runs x seeds, resumable, with one results table",
                       description="Train the Cartesian grid of --grid values times --seeds seeds from a config "
                                   "(or an experiment recipe's profile) into DIR/runs/<point>, and write the tidy "
                                   "table DIR/results.csv. The same command again skips finished runs, resumes "
                                   "interrupted ones and adds new grid points only. Trailing key=value items "
                                   "apply to every point.")
    p.add_argument("source", metavar="CONFIG_OR_RECIPE",
                   help="a config YAML, a packaged config name (quickstart) or an experiment recipe name")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every point")
    p.add_argument("--grid", action="append", default=[], metavar="key=v1,v2,...",
                   help="a swept config key and its values (repeat for more keys)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 per grid point (default: the config's)")
    p.add_argument("--out", required=True, help="sweep directory (created, or continued)")
    _backend_arguments(p)
    p.add_argument("--profile", default=None, help="with a recipe: its profile (default quick)")
    p.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args) -> int:
    from nclab.commands.sweep import sweep_command
    return sweep_command(args)


# --- ufm -----------------------------------------------------------------------------------------

def _parser_ufm(sub) -> None:
    p = sub.add_parser("ufm", help="the unconstrained features model: collapse at its global minimisers",
                       description="Minimise the unconstrained features model (features H, classifier W, bias b "
                                   "as free float64 variables; mean CE or MSE plus weight decay) and print the "
                                   "collapse metrics along the way, beside the closed-form global minimiser when "
                                   "one is known. --imbalance R: the first --majority classes get R times more "
                                   "samples; --minority-collapse: sweep R for a learned and a fixed simplex-ETF head.")
    p.add_argument("--classes", type=int, default=10, help="number of classes K (default 10)")
    p.add_argument("--dim", type=int, default=32, help="feature dimension d (default 32)")
    p.add_argument("--per-class", type=int, default=None,
                   help="samples per class; the minority classes' n_B with --imbalance / --minority-collapse "
                        "(default 20; 1 for --minority-collapse)")
    p.add_argument("--loss", choices=("ce", "mse"), default="ce")
    p.add_argument("--lambda-w", type=float, default=5e-4, help="weight decay of W (default 5e-4)")
    p.add_argument("--lambda-h", type=float, default=5e-4, help="weight decay of H (default 5e-4)")
    p.add_argument("--lambda-b", type=float, default=0.0, help="weight decay of b (default 0)")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                   help="learn a bias b (default: on; off for --minority-collapse)")
    p.add_argument("--head", choices=("learned", "etf"), default="learned",
                   help="learned W, or W fixed to a simplex ETF (default learned)")
    p.add_argument("--etf-scale", type=float, default=1.0, help="row norm of the fixed ETF head (default 1)")
    p.add_argument("--optimizer", choices=("lbfgs", "gd"), default="lbfgs",
                   help="L-BFGS with strong-Wolfe line search (default) or full-batch gradient descent")
    p.add_argument("--lr", type=float, default=None, help="step size of gradient descent (default 0.5)")
    p.add_argument("--max-iter", type=int, default=None, help="iterations (default 10000 lbfgs, 100000 gd)")
    p.add_argument("--tol", type=float, default=1e-8, help="stop at this gradient 2-norm (default 1e-8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and of the fixed ETF")
    p.add_argument("--records", type=int, default=30, help="log-spaced iterations at which to measure (default 30)")
    p.add_argument("--imbalance", type=float, default=None, metavar="R",
                   help="n_A = R x n_B samples in each of the --majority classes")
    p.add_argument("--majority", type=int, default=None, metavar="K_A",
                   help="majority classes with --imbalance / --minority-collapse (default K // 2)")
    p.add_argument("--minority-collapse", type=float, nargs="*", default=None, metavar="R",
                   help="sweep these ratios (default 1 2 5 10 20 50 100 1000), learned against fixed ETF head")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT",
                   help="write the result as JSON (final metrics under nclab measure's keys)")
    p.set_defaults(handler=_cmd_ufm)


def _cmd_ufm(args) -> int:
    from nclab.commands.ufm import ufm_command
    return ufm_command(args)


# --- report ------------------------------------------------------------------------------------

def _parser_report(sub) -> None:
    p = sub.add_parser("report", help="figures, tables and one HTML page of runs, experiments or sweeps",
                       description="Draw the records of run, experiment or sweep directories (several may be "
                                   "given): CDNV per split, few-shot accuracy, NC1-NC4, CDNV against accuracy, "
                                   "metrics against a swept parameter, the bound against the NCC error, "
                                   "per-stage curves, whichever the records hold. Writes PNG figures, "
                                   "report.md, records.csv and a self-contained index.html.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="a run, experiment or sweep directory")
    p.add_argument("--out", default=None, help="report folder (default: DIR/report of the first DIR); "
                                               "replaced if it holds an earlier report")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args) -> int:
    from nclab.commands.report import report_command
    return report_command(args)


# --- cache -------------------------------------------------------------------------------------

def _parser_cache(sub) -> None:
    p = sub.add_parser("cache", help="what nclab's cache folder holds (datasets, archives, features); clear it",
                       description="`nclab cache`: the areas of the cache folder ($NCLAB_CACHE_DIR or the user "
                                   "cache folder) with their entries, size and last use. `nclab cache clear AREA "
                                   "...` (or --all) removes areas; their entries are rebuilt on the next use.")
    p.add_argument("cache_command", nargs="?", choices=("show", "clear"), default="show")
    p.add_argument("areas", nargs="*", metavar="AREA", help="with clear: areas to remove (e.g. datasets/features)")
    p.add_argument("--all", action="store_true", help="with clear: remove every area")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table (with clear: the areas removed)")
    p.set_defaults(handler=_cmd_cache)


def _cmd_cache(args) -> int:
    from nclab.commands.cache import cache_command
    return cache_command(args)


# --- entry point -------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error (the usage itself is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from nclab import __version__
    parser = _Parser(
        prog="nclab", description="Neural collapse in transfer and few-shot learning: pre-train, measure "
                                  "collapse (CDNV, NC1-NC4, GC), evaluate few-shot transfer.")
    parser.add_argument("--version", action="version", version=f"nclab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_parser_quickstart, _parser_train, _parser_features, _parser_data, _parser_measure,
                _parser_fewshot, _parser_evaluate, _parser_gc, _parser_experiment, _parser_sweep, _parser_ufm,
                _parser_report, _parser_cache):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if "=" in (getattr(args, "ray", None) or ""):   # `--ray key=value`: a bare --ray, then an override
        args.overrides = [*args.overrides, args.ray]
        args.ray = "local"
    # key=value items may also come after options (`data info omniglot --root D split=vinyals`).
    for dest in ("overrides", "options"):
        if extra and hasattr(args, dest):
            items = [e for e in extra if "=" in e and not e.startswith("-")]
            setattr(args, dest, list(getattr(args, dest)) + items)
            extra = [e for e in extra if e not in items]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.handler(args) or 0)
    except NclabError as e:
        print(f"nclab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nclab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                     # `nclab data info glyphs | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:                        # the system refused a read or write (disk full, permissions)
        where = f"{e.filename}: " if e.filename else ""
        print(f"nclab: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
