"""Sweeps on Ray (``nclab sweep --ray [ADDRESS]``, ``nclab experiment --ray [ADDRESS]``).

Ray only replaces the local process pool: every point of a sweep is one Ray task that runs the
same ``python -m nclab train`` subprocess as the pool does (:meth:`Sweep._run_point`), with
``num_cpus`` = the point's torch threads and ``num_gpus`` = the GPUs its config asks for. The
coordinator (the process that called ``nclab sweep``) still decides which points to run, and it
alone writes the manifest and the results table, so resuming, skipping finished points and
recording failures work as with the pool. Ray runs as many points at once as the cluster's CPUs
(and GPUs) allow.

- ``--ray`` (address ``local``) starts a private Ray instance on this machine, on the loopback
  interface, for the length of the sweep.
- ``--ray HOST:PORT`` (or ``auto``, ``ray://HOST:PORT``) joins a running cluster
  (``ray start --head`` on one node, ``ray start --address HOST:PORT`` on the others).

On a cluster, every node needs nclab installed (the same version) and must see the sweep
directory, the base config and the data at the same paths as the coordinator: put them on
shared storage (NFS or similar). Each task runs in the coordinator's working directory (so
relative paths resolve alike) with the coordinator's ``NCLAB_*`` environment variables. A point
that finished on a node whose files the coordinator cannot see is reported as failed, naming
the missing shared storage. When the coordinator dies (even by SIGKILL), Ray ends its tasks and
their training processes (Ray kills a worker's child processes with it), so the same command
started again resumes those points and never trains one twice at the same time.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable
from concurrent.futures import Future

from nclab.config import RunConfig
from nclab.errors import NclabError

LOCAL = "local"
_HOST_PORT = re.compile(r"^(?:ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def check_address(address: str) -> tuple[str, int] | None:
    """``local``, ``auto`` -> None; ``[ray://]HOST:PORT`` -> (host, port); anything else is refused."""
    if address in (LOCAL, "auto"):
        return None
    m = _HOST_PORT.match(address)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise NclabError(f"--ray {address!r}: expected HOST:PORT of a Ray cluster's head (e.g. 10.0.0.5:6379), "
                         "ray://HOST:PORT, auto, or no value for a local instance")
    return m.group(1).strip("[]"), int(m.group(2))


def gpus_per_point(cfg: RunConfig, cluster_gpus: float) -> float:
    """GPUs a point asks Ray for: ``trainer.devices`` when ``trainer.accelerator`` is cuda / gpu,
    or auto on a cluster with GPUs; otherwise none."""
    acc = cfg.trainer.accelerator
    if acc in ("cuda", "gpu") or (acc == "auto" and cluster_gpus > 0):
        return float(cfg.trainer.devices)
    return 0.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise NclabError("--ray: ray is not installed; install the extra: pip install 'nclab[ray]'") from None
    return ray


def _in_coordinator_env(cwd: str, env: dict, fn: Callable, *args):
    """Run ``fn(*args)`` on a Ray worker as if in the coordinator: its working directory and
    its ``NCLAB_*`` variables (relative paths of the sweep and its configs resolve alike)."""
    os.chdir(cwd)
    os.environ.update(env)
    return fn(*args)


class RayBackend:
    """``submit(fn, *args) -> Future`` on Ray, for :meth:`Sweep.run`. Constructor arguments are
    stored as given; :meth:`connect` starts or joins the cluster."""

    def __init__(self, address: str = LOCAL, num_cpus: float = 1, num_gpus: float | None = None):
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self._ray = None
        self._task = None

    def connect(self, cfg: RunConfig | None = None) -> "RayBackend":
        """Start (``local``) or join the cluster; resolve ``num_gpus`` from ``cfg`` when not
        given; refuse resources no node has (a task asking for them would wait for ever)."""
        target = check_address(self.address)
        if self.num_cpus <= 0:
            raise NclabError(f"--threads {self.num_cpus}: expected a positive number of CPUs per point")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise NclabError(f"--gpus {self.num_gpus}: expected a number of GPUs per point >= 0")
        ray = _import_ray()
        if target is not None:
            try:
                socket.create_connection(target, timeout=5).close()
            except OSError as e:
                raise NclabError(f"--ray {self.address}: no Ray cluster answers there "
                                 f"({e.strerror or type(e).__name__})") from None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict = dict(logging_level=logging.ERROR, log_to_driver=False)
        if self.address == LOCAL:
            # A private instance on loopback only (Ray otherwise binds the machine's routable address).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            kwargs |= dict(num_cpus=os.cpu_count() or 1, include_dashboard=False)
        try:
            ray.init(address=self.address, **kwargs)
        except Exception as e:                          # noqa: BLE001 - ray raises many kinds here
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            raise NclabError(f"--ray {self.address}: cannot start or join a Ray cluster "
                             f"({type(e).__name__}: {lines[0] if lines else 'no detail'})") from None
        self._ray = ray
        try:
            nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
            most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
            most_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
            if self.num_gpus is None:
                self.num_gpus = gpus_per_point(cfg, most_gpus) if cfg is not None else 0.0
            if self.num_cpus > most_cpus:
                raise NclabError(f"--threads {self.num_cpus:g}: no node of the Ray cluster has that many CPUs "
                                 f"(the largest has {most_cpus:g}); lower --threads")
            if self.num_gpus > most_gpus:
                raise NclabError(f"{self.num_gpus:g} GPUs per point (--gpus, or trainer.accelerator / devices): "
                                 f"no node of the Ray cluster has them (the largest has {most_gpus:g})")
        except NclabError:
            self.close()
            raise
        self._task = ray.remote(_in_coordinator_env).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus)
        return self

    def submit(self, fn: Callable, *args) -> Future:
        if self._task is None:
            raise RuntimeError("RayBackend.submit before connect()")
        env = {k: v for k, v in os.environ.items() if k.startswith("NCLAB_")}
        return self._task.remote(os.getcwd(), env, fn, *args).future()

    def close(self) -> None:
        """Disconnect (and stop a local instance)."""
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = self._task = None
