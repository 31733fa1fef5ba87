"""Bad arguments of `nclab sweep` and its backends are refused before anything is written, and a small sweep
on a local Ray cluster started with ``ray start --head`` gives the table of the local process pool
(the cluster test skips only when ray is not importable; CI installs the ``ray`` extra)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nclab.errors import NclabError
from nclab.experiments.ray_backend import check_address

NCLAB = [sys.executable, "-m", "nclab"]
TINY = ["data.name=glyphs", "data.source_classes=12", "model.options.width=8", "train.epochs=1",
        "train.batch_size=32", "trainer.progress=false"]
TIMING = ("seconds", "probe_seconds")


def _cli(*args, **kw):
    return subprocess.run(NCLAB + list(args), capture_output=True, text=True, **kw)


def test_check_address():
    assert check_address("local") is None and check_address("auto") is None
    assert check_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert check_address("ray://head.example:10001") == ("head.example", 10001)
    assert check_address("[::1]:6379") == ("::1", 6379)
    for bad in ("10.0.0.5", "host:0", "host:70000", "http://h:1", "a b:1", ""):
        with pytest.raises(NclabError, match="expected HOST:PORT"):
            check_address(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--ray", "nohost"], "--ray 'nohost': expected HOST:PORT"),
    (["--gpus", "1"], "--gpus applies to Ray sweeps"),
    (["--ray", "127.0.0.1:1", "--gpus", "-1"], "--gpus -1: expected a number of GPUs"),
    (["--threads", "0"], "--threads 0: expected a positive number"),
    (["--workers", "0"], "--workers 0: expected a positive number"),
])
def test_bad_backend_arguments_exit_2_and_write_nothing(tmp_path, args, message):
    for cmd in (["sweep", "quickstart", "--grid", "optim.lr=0.05,0.1", "--out", str(tmp_path / "sw")],
                ["experiment", "nc-transfer", "--out", str(tmp_path / "sw")]):
        p = _cli(*cmd, *args, *TINY, cwd=tmp_path)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert message in p.stderr
        assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("args, message", [
    (["--grid", "optim.lr"], "--grid 'optim.lr': expected key=value1,value2"),
    (["--grid", "optim.lr=0.1,,0.2"], "expected comma-separated values"),
    (["--grid", "optim.lr=0.1", "--seeds", "0"], "--seeds 0: expected a positive number of seeds"),
    (["--grid", "optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
    (["--grid", "optim.lr=fast"], "optim.lr: expected a number, got 'fast'"),
    (["--grid", "optim.lr=0.1", "--profile", "quick"], "--profile applies to experiment recipes"),
])
def test_bad_sweep_arguments_exit_2_and_write_nothing(tmp_path, args, message):
    p = _cli("sweep", "quickstart", "--out", "sw", *args, *TINY, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr
    assert os.listdir(tmp_path) == []


def test_unreachable_cluster_or_missing_ray_exit_2_and_write_nothing(tmp_path):
    port = _free_port()                      # nothing listens there
    p = _cli("sweep", "quickstart", "--grid", "optim.lr=0.05", "--out", "sw", "--ray", f"127.0.0.1:{port}", *TINY,
             cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    try:
        import ray  # noqa: F401
        assert f"--ray 127.0.0.1:{port}: no Ray cluster answers there" in p.stderr
    except ImportError:
        assert "ray is not installed" in p.stderr
    # a Python where `import ray` fails, as without the extra
    fake = tmp_path.parent / f"{tmp_path.name}-noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]))
    p = _cli("sweep", "quickstart", "--grid", "optim.lr=0.05", "--out", "sw", "--ray", *TINY, cwd=tmp_path, env=env)
    assert p.returncode == 2 and p.stderr.strip() == ("nclab: error: --ray: ray is not installed; install the "
                                                      "extra: pip install 'nclab[ray]'"), p.stderr
    assert os.listdir(tmp_path) == []


# --- a real cluster ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    """``ray start --head --block`` on loopback in its own process group, stopped (killed by its
    group id) after the tests. Yields (address, environment for the clients)."""
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    assert ray_cli.exists(), f"ray is importable but its command {ray_cli} is missing"
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",   # stay on loopback (Ray's local-only mode)
               RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    temp = tempfile.mkdtemp(prefix="nclab-ray-", dir="/tmp")       # short: Ray's unix sockets live there
    port = _free_port()
    log = open(Path(temp) / "ray-start.log", "w")
    proc = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                             "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
                             "--disable-usage-stats", "--temp-dir", temp], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while "Ray runtime started" not in (Path(temp) / "ray-start.log").read_text():
            assert proc.poll() is None, (Path(temp) / "ray-start.log").read_text()[-2000:]
            assert time.time() < deadline, "ray start --head did not come up in 180 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
        os.killpg(proc.pid, signal.SIGKILL)       # our group only: ray start and the daemons it spawned
        proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _table(root):
    import pandas as pd
    t = pd.read_csv(root / "results.csv")
    return t[~t["metric"].isin(TIMING)].sort_values(["run", "epoch", "metric"]).reset_index(drop=True)


@pytest.mark.slow
def test_sweep_on_a_ray_cluster_equals_the_local_pool(tmp_path, ray_cluster):
    import pandas as pd
    address, env = ray_cluster
    grid = ["--grid", "optim.lr=0.05,0.1,-1"]           # -1: a point that fails, reported, the rest goes on
    p = _cli("sweep", "quickstart", *grid, "--out", "local", "--threads", "1", *TINY, cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    # Ray: a relative --out resolves in the coordinator's directory, on the workers too
    p = _cli("sweep", "quickstart", *grid, "--out", "ray", "--ray", address, "--threads", "1", *TINY,
             cwd=tmp_path, env=env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"on the Ray cluster at {address}: 1 CPUs and 0 GPUs per run" in p.stdout
    assert "optim.lr=-1_seed=0: failed" in p.stdout and "optim.lr" in p.stdout.split("runs failed:")[1]
    done = sorted(q.parent.name for q in (tmp_path / "ray" / "runs").glob("*/summary.json"))
    assert done == ["optim.lr=0.05_seed=0", "optim.lr=0.1_seed=0"]
    pd.testing.assert_frame_equal(_table(tmp_path / "local"), _table(tmp_path / "ray"))
    # again: finished points are skipped, only the failed one is tried again
    stamps = {q: q.stat().st_mtime_ns for q in (tmp_path / "ray" / "runs").glob("*/summary.json")}
    p = _cli("sweep", "quickstart", *grid, "--out", "ray", "--ray", address, "--threads", "1", *TINY,
             cwd=tmp_path, env=env)
    assert p.returncode == 1 and "(2 finished already)" in p.stdout
    assert stamps == {q: q.stat().st_mtime_ns for q in (tmp_path / "ray" / "runs").glob("*/summary.json")}
    # resources no node has: refused before anything is written
    p = _cli("sweep", "quickstart", *grid, "--out", "big", "--ray", address, "--threads", "64", *TINY,
             cwd=tmp_path, env=env)
    assert p.returncode == 2 and "--threads 64: no node of the Ray cluster has that many CPUs" in p.stderr
    assert not (tmp_path / "big").exists()


@pytest.mark.slow
def test_experiment_on_a_ray_cluster(tmp_path, ray_cluster):
    import json
    address, env = ray_cluster
    only_base = ["settings.base={lr: 0.05, batch: 32, l2: 0.0005, alpha: 0}", "settings.lr=[0.05]",
                 "settings.batch=[32]", "settings.l2=[0.0005]", "settings.alpha=[0]"]
    p = _cli("experiment", "gc-sweep", "--out", "exp", "--ray", address, "--threads", "1", *TINY,
             "probes.max_classes=30", "probes.fewshot.episodes=40", "probes.gc.max_samples=64", *only_base,
             cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    done = sorted(q.parent.name for q in (tmp_path / "exp" / "runs").glob("*/summary.json"))
    assert done == ["base_seed=0", "base_seed=1", "base_seed=2"]
    s = json.loads((tmp_path / "exp" / "analysis.json").read_text())["summary"]
    assert s["runs"] == 3 and s["directions"] == {} and s["spearman"]["GC ~ CDNV"]["n"] == 3   # one setting: no knob moved
