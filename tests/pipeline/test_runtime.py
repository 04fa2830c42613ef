"""Tests of bigquant.pipeline.runtime (connect, phase) and bigquant.pipeline.progress."""

from __future__ import annotations

import io
import re
import socket
import time
import urllib.request

import pytest

from bigquant.errors import ClusterConnectionError, InvalidParameterError
from bigquant.pipeline.progress import LloydProgress, TaskProgress
from bigquant.pipeline.runtime import active_client, connect, machine_layout, phase


def _closed_port() -> int:
    """A local TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- without a cluster


def test_phase_without_client_is_a_cheap_no_op():
    assert active_client() is None
    start = time.perf_counter()
    for _ in range(10_000):
        with phase("bq-histogram") as span_id:
            assert span_id is None
    assert time.perf_counter() - start < 1.0


def test_phase_propagates_exceptions():
    with pytest.raises(KeyError):
        with phase("bq-lloyd"):
            raise KeyError("x")


def test_machine_layout():
    workers, threads = machine_layout()
    assert workers >= 1 and threads >= 1
    assert machine_layout(3, 2) == (3, 2)
    assert machine_layout(1)[0] == 1
    assert machine_layout(threads_per_worker=1)[1] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_workers": 0}, "n_workers="),
        ({"threads_per_worker": -1}, "threads_per_worker="),
        ({"timeout": 0}, "timeout="),
        ({"scheduler": "tcp://host:port:x"}, "scheduler="),
        ({"scheduler": 42}, "scheduler="),
    ],
)
def test_connect_rejects_parameters(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        connect(**kwargs)


def test_connect_unreachable_scheduler_fails_fast_and_clearly():
    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.perf_counter()
    with pytest.raises(ClusterConnectionError, match="could not reach the Dask scheduler") as info:
        connect(address, timeout=1)
    assert time.perf_counter() - start < 15
    assert address in str(info.value)
    assert isinstance(info.value, OSError)
    assert active_client() is None


def test_lloyd_progress_off_a_terminal_writes_a_few_lines():
    out = io.StringIO()
    bar = LloydProgress(max_iter=100, stream=out, every=10)
    for i in range(1, 26):
        bar(i, 1000.0 / i, 1.0 / i)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [re.search(r"iteration\s+(\d+)", line).group(1) for line in lines] == ["1", "10", "20", "25"]
    assert "inertia 40" in lines[-1] and "centre shift 0.04" in lines[-1]


def _sleepy(block):
    time.sleep(0.05)
    return block


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lloyd_progress_on_a_terminal_rewrites_one_line():
    out = _Tty()
    bar = LloydProgress(max_iter=10, stream=out)
    for i in range(1, 4):
        bar(i, 10.0, 0.5)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1


def test_task_progress_without_client_uses_dask_progressbar():
    import dask.array as da

    out = _Tty()
    with TaskProgress(None, stream=out) as bar:
        da.ones((100, 100), chunks=10).sum().compute()
    assert bar._local is None  # stopped
    bar.stop()  # idempotent


# --------------------------------------------------------------------------- real clusters


@pytest.mark.distributed
def test_connect_local_cluster_dashboard_spans_and_shutdown():
    with connect(n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0", timeout=60) as rt:
        assert rt.cluster is not None and rt.owns_client
        assert active_client() is rt.client
        # worker processes, not threads
        pids = rt.client.run(lambda: __import__("os").getpid())
        assert len(pids) == 1 and set(pids.values()) != {__import__("os").getpid()}
        link = rt.dashboard_link
        assert link and link.startswith("http://")
        with urllib.request.urlopen(link.replace("/status", "/health"), timeout=10) as resp:
            assert resp.status == 200 and resp.read() == b"ok"
        with urllib.request.urlopen(link, timeout=20) as resp:
            assert resp.status == 200

        import dask.array as da

        with phase("bq-histogram") as span_id:
            assert span_id is not None
            assert int(da.ones(100, chunks=10).sum().compute()) == 100
        names = rt.client.run_on_scheduler(
            lambda dask_scheduler: [s.name for s in dask_scheduler.extensions["spans"].spans.values()]
        )
        assert ("bq-histogram",) in names
        # the terminal bar, drawn from the events of its scheduler plugin
        out = _Tty()
        with TaskProgress(rt.client, stream=out, interval=0.05) as bar:
            from distributed import wait

            slow = da.ones((40, 10), chunks=(1, 10)).map_blocks(_sleepy, name="bq-slow", dtype=float)
            wait(slow.persist())
        assert "tasks [" in out.getvalue() and "slow" in out.getvalue() and bar.updates
        assert not any(name.startswith("bigquant-progress") for name in rt.client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.plugins)))  # unregistered when done
        client = rt.client
    assert client.status == "closed"
    assert rt.cluster.status.name == "closed"
    assert active_client() is None
    with pytest.raises(OSError):
        urllib.request.urlopen(link.replace("/status", "/health"), timeout=5)


@pytest.mark.distributed
def test_connect_without_processes_runs_the_worker_in_this_process_with_a_dashboard():
    import os

    with connect(processes=False, threads_per_worker=2, dashboard_address="127.0.0.1:0", timeout=60) as rt:
        pids = rt.client.run(os.getpid)
        assert list(pids.values()) == [os.getpid()]  # one worker, in this process
        assert rt.nthreads == 2
        link = rt.dashboard_link
        assert link and link.startswith("http://")
        with urllib.request.urlopen(link.replace("/status", "/health"), timeout=10) as resp:
            assert resp.status == 200
    with pytest.raises(InvalidParameterError, match="n_workers=2"):
        connect(processes=False, n_workers=2)


@pytest.mark.distributed
def test_connect_passes_a_client_through_and_leaves_it_open():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            with connect(client) as rt:
                assert rt.client is client and not rt.owns_client and rt.cluster is None
            assert client.status == "running"
            # an address connects a second client, which the runtime closes
            with connect(cluster.scheduler_address, timeout=10) as rt2:
                assert rt2.owns_client and rt2.client is not client
                assert rt2.nthreads == 1
            assert rt2.client.status == "closed" and client.status == "running"
