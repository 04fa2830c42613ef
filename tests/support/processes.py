"""Subprocesses the tests start (``dask scheduler``, ``dask worker``), and their certain end."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from typing import IO

#: the checkout, put on the subprocesses' PYTHONPATH so that they import this bigquant
REPO = pathlib.Path(__file__).resolve().parents[2]


def dask_command() -> list[str]:
    """The ``dask`` command of this environment (its script, else ``python -m dask``)."""
    script = pathlib.Path(sys.executable).parent / "dask"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dask"]


def wait_or_kill(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Wait for ``proc`` to exit; terminate it after ``timeout`` seconds, then kill it."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Spawned:
    """Processes started in ``folder``, each logging to ``<name>.log`` there; see :meth:`close`."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.env = dict(os.environ, PYTHONPATH=str(REPO), DASK_DISTRIBUTED__WORKER__DAEMON="False")
        self.procs: list[subprocess.Popen] = []
        self.logs: list[IO[str]] = []

    def spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")
        self.logs.append(log)
        proc = subprocess.Popen(args, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def scheduler(self, *extra: str, timeout: float = 60.0) -> str:
        """Start ``dask scheduler`` on 127.0.0.1 (``extra`` arguments added); its address once it listens."""
        scheduler_file = self.folder / "scheduler.json"
        proc = self.spawn([*dask_command(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                           "--scheduler-file", str(scheduler_file), *extra], "scheduler")
        deadline = time.monotonic() + timeout
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start:\n" + (self.folder / "scheduler.log").read_text())
            time.sleep(0.2)
        return json.loads(scheduler_file.read_text())["address"]

    def close(self) -> None:
        """Make sure every process is gone (workers first, then the scheduler) and close the logs."""
        for proc in reversed(self.procs):
            wait_or_kill(proc)
        for log in self.logs:
            log.close()
