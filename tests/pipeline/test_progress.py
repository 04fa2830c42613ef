"""Terminal progress on a remote scheduler that cannot import bigquant.

A user's remote scheduler usually does not have bigquant installed: the task
bar must still report, from public Dask APIs only (a scheduler plugin sent by
value from the client, its counts received as events).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from bigquant.pipeline.progress import TaskProgress

pytestmark = pytest.mark.distributed

REPO = pathlib.Path(__file__).resolve().parents[2]
#: `dask scheduler` in a Python where `import bigquant` fails
NO_BIGQUANT_SCHEDULER = (
    "import sys; sys.modules['bigquant'] = None; "
    "from distributed.cli.dask_scheduler import main; main()"
)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def scheduler_without_bigquant(tmp_path):
    """Address of a `dask scheduler` subprocess that cannot import bigquant, with one worker."""
    scheduler_file = tmp_path / "scheduler.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs: list[subprocess.Popen] = []
    log = open(tmp_path / "cluster.log", "w")
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-c", NO_BIGQUANT_SCHEDULER, "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(scheduler_file)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start:\n" + (tmp_path / "cluster.log").read_text())
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard",
             "--no-nanny", "--host", "127.0.0.1", "--memory-limit", "1GiB"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT))
        yield address
    finally:
        _stop(procs)
        log.close()


def test_task_progress_reports_from_a_scheduler_without_bigquant(scheduler_without_bigquant):
    import dask.array as da
    from distributed import Client

    with Client(scheduler_without_bigquant, set_as_default=False, timeout=30) as client:
        client.wait_for_workers(1, timeout=60)
        # the scheduler really cannot import bigquant
        assert client.run_on_scheduler(lambda: __import__("importlib").util.find_spec("bigquant")) is None
        out = _Tty()
        with TaskProgress(client, stream=out, interval=0.05) as bar:
            slow = da.ones((30, 10), chunks=(1, 10)).map_blocks(
                lambda block: (time.sleep(0.05), block)[1], name="bigquant-slow", dtype=float)
            assert float(client.compute(client.persist(slow).sum()).result()) == 300.0
            deadline = time.monotonic() + 10
            while "slow" not in out.getvalue() and time.monotonic() < deadline:
                time.sleep(0.05)
        assert bar.updates > 0
        shown = out.getvalue()
        assert "tasks [" in shown and "/30  slow" in shown, shown
        # done means done: the plugin is gone from the scheduler
        plugins = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins))
        assert not any(name.startswith("bigquant-progress") for name in plugins)
        client.shutdown()
