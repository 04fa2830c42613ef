"""Subprocesses the tests start (``dask scheduler``, ``dask worker``), and their certain end."""

from __future__ import annotations

import subprocess


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
