"""A real remote cluster: ``dask scheduler`` + 2 ``dask worker`` subprocesses on 127.0.0.1.

The command line and the sweep connect to it by address; the scheduler's task
stream shows that the work (reading, histogram, labels, writing, the per-k
fits) ran on those two workers.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pytest
from tests.support.processes import Spawned, dask_command

pytestmark = pytest.mark.distributed

REPO = pathlib.Path(__file__).resolve().parents[2]


def _stop(spawned: Spawned, address: str | None) -> None:
    """Shut the cluster down cleanly, then make sure every process is gone."""
    if address is not None and any(p.poll() is None for p in spawned.procs):
        from distributed import Client

        try:
            with Client(address, timeout=5, set_as_default=False) as client:
                client.shutdown()
        except Exception:
            pass
    spawned.close()


@pytest.fixture(scope="module")
def remote_cluster(tmp_path_factory):
    """Address of a scheduler with 2 single-thread workers, all separate processes."""
    from distributed import Client

    tmp = tmp_path_factory.mktemp("remote")
    spawned = Spawned(tmp)
    address: str | None = None
    try:
        address = spawned.scheduler()
        for i in range(2):
            spawned.spawn([*dask_command(), "worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny",
                           "--name", f"remote-{i}", "--memory-limit", "2GiB", "--host", "127.0.0.1"], f"worker{i}")
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=90)
            workers = set(client.scheduler_info(n_workers=-1)["workers"])
        yield address, workers
    finally:
        _stop(spawned, address)


@pytest.fixture
def observer(remote_cluster):
    """A client of the remote cluster that reads the scheduler's task stream."""
    from distributed import Client

    address, _ = remote_cluster
    with Client(address, timeout=30, set_as_default=False) as client:
        client.get_task_stream()  # installs the scheduler's task-stream plugin
        yield client


def _tasks_since(client, start: float) -> list[dict]:
    return client.get_task_stream(start=start)


def _prefixes(records: list[dict]) -> set[str]:
    from dask.utils import key_split

    return {key_split(r["key"]) for r in records}


@pytest.fixture(scope="module")
def tiff(tmp_path_factory) -> pathlib.Path:
    from bigquant.io.sample import make_sample_tiff

    return make_sample_tiff(tmp_path_factory.mktemp("img") / "img.tif", size=(384, 512), tile=128, seed=5)


def test_cli_quantize_runs_on_the_remote_workers(remote_cluster, observer, tiff, tmp_path, capsys):
    import tifffile

    from bigquant.cli import main

    address, workers = remote_cluster
    start = time.time()
    out = tmp_path / "q.tif"
    argv = ["quantize", str(tiff), str(out), "-k", "8", "--scheduler", address, "--tile", "128",
            "--random-state", "0", "--preview", str(tmp_path / "p.png")]
    assert main(argv) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"connected to {address}: 2 workers" in err
    labels = tifffile.imread(out)
    assert labels.shape == (384, 512) and labels.max() < 8

    records = _tasks_since(observer, start)
    ran_on = {r["worker"] for r in records}
    assert ran_on and ran_on <= workers
    prefixes = _prefixes(records)
    # the workers read the file themselves and did every pass
    assert {"bq-read", "bq-count"} <= prefixes, prefixes
    assert any(p.startswith(("bq-labels", "bq-write", "bq-lut")) for p in prefixes), prefixes
    spans = observer.run_on_scheduler(
        lambda dask_scheduler: [s.name for s in dask_scheduler.extensions["spans"].spans.values()]
    )
    assert any("bq-histogram" in name for name in spans), spans


def test_sweep_fits_every_k_on_the_remote_workers(remote_cluster, observer, tiff):
    from bigquant.cluster.histogram import colour_histogram
    from bigquant.pipeline.runtime import connect
    from bigquant.pipeline.sweep import sweep

    address, workers = remote_cluster
    start = time.time()
    ks = [2, 4, 6, 8, 10, 12]
    with connect(address, timeout=30) as rt:
        result = sweep(tiff, ks, client=rt.client, random_state=0)
    assert result.ks == ks and result.strategy == "histogram"

    records = _tasks_since(observer, start)
    fits = [r for r in records if isinstance(r["key"], str) and r["key"].startswith("bq-sweep-")]
    assert sorted(int(r["key"].split("-")[2]) for r in fits) == ks  # one task per k
    assert {r["worker"] for r in fits} <= workers
    assert {r["worker"] for r in records} == workers  # both workers took part
    assert "bq-count" in _prefixes(records)

    # the same palettes as a local sweep: the result does not depend on where it ran
    import tifffile

    local = sweep(colour_histogram(tifffile.imread(tiff)), ks, random_state=0)
    assert local.costs == result.costs


def test_cli_sweep_with_scheduler(remote_cluster, tiff, tmp_path, capsys):
    from bigquant.cli import main

    address, _ = remote_cluster
    out = tmp_path / "s.csv"
    assert main(["sweep", str(tiff), "--k", "2:6:2", "--scheduler", address, "--out", str(out)]) == 0
    assert "suggested k (elbow)" in capsys.readouterr().out
    assert out.read_text().count("\n") == 4


def test_quantize_library_call_with_remote_client(remote_cluster, observer, tiff, tmp_path):
    """The pipeline's own client argument: labels are computed by the workers."""
    from distributed import Client

    from bigquant import quantize

    address, workers = remote_cluster
    start = time.time()
    with Client(address, timeout=30, set_as_default=False) as client:
        model = quantize(tiff, tmp_path / "q.tif", 4, client=client, random_state=0, tile=128)
    assert model.cluster_centers_.shape == (4, 3)
    assert np.isfinite(model.inertia_)
    assert {r["worker"] for r in _tasks_since(observer, start)} <= workers
