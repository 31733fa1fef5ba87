"""Training with the experiment layer's callbacks: what ``nclab train`` runs.

The training loop (:mod:`nclab.train`) never imports experiments; these entry points build the
callbacks a config asks for (the ``probes:`` section: :class:`~nclab.experiments.probes.Probes`;
``train.select``: :class:`~nclab.experiments.select.SelectBest`, after the probes whose keys it reads)
and hand them to :func:`nclab.train.run.start_run` / :func:`~nclab.train.run.resume_run`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from nclab.config import RunConfig, load_config
from nclab.experiments.probes import Probes, check_probes
from nclab.experiments.select import SelectBest, check_select
from nclab.train.callbacks import EpochCallback
from nclab.train.run import resume_run, start_run
from nclab.train.rundir import RunDir


def config_callbacks(cfg: RunConfig) -> list[EpochCallback]:
    """The callbacks the config's sections ask for (probes first, so later callbacks see their keys)."""
    check_probes(cfg)
    select = check_select(cfg)
    return ([Probes()] if cfg.probes.enabled else []) + ([SelectBest()] if select else [])


def train(config: str | os.PathLike | None, overrides: Sequence[str] = (), out: str | os.PathLike | None = None,
          callbacks: Sequence[EpochCallback] = (), cfg: RunConfig | None = None,
          profile: str | None = None) -> RunDir:
    """``start_run`` with the config's callbacks, then ``callbacks``; ``profile``: one of the config
    file's ``profiles:``. Returns the finished run."""
    cfg = cfg if cfg is not None else load_config(config, list(overrides), profile=profile)
    return start_run(None, out=out, callbacks=[*config_callbacks(cfg), *callbacks], cfg=cfg)


def resume(run_dir: str | os.PathLike, callbacks: Sequence[EpochCallback] = ()) -> RunDir:
    """``resume_run`` with the callbacks of the run's own config, then ``callbacks``."""
    cfg = RunDir.open(run_dir).config()
    return resume_run(run_dir, [*config_callbacks(cfg), *callbacks])
