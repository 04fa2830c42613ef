"""Workers that do not see the output's directory: writes reach the output, or nothing is claimed.

A ``dask scheduler`` and ``dask worker`` subprocesses on 127.0.0.1; the
"remote" workers run in a private mount namespace with a tmpfs mounted on the
output directory (``unshare --mount``), so what they write there stays in
their own, empty, directory -- as on a worker of another machine.  zarr output
must still hold every pixel (the client stores the chunks), and the
Floyd--Steinberg label spool must not be used by workers that cannot see it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import dask
import dask.array as da
import numpy as np
import pytest
from dask.utils import key_split

from bigquant import tasks
from tests.support.processes import dask_command, wait_or_kill

pytestmark = pytest.mark.distributed

REPO = pathlib.Path(__file__).resolve().parents[2]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs tmpfs /mnt"], capture_output=True, timeout=30)
    return probe.returncode == 0


class _Cluster:
    """A scheduler and its workers, as subprocesses; workers are added by the tests."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.out = root / "out"  # the directory the private workers do not see
        self.out.mkdir()
        self.env = dict(os.environ, PYTHONPATH=str(REPO), DASK_DISTRIBUTED__WORKER__DAEMON="False")
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list = []
        self.address: str | None = None

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")
        self.logs.append(log)
        proc = subprocess.Popen(args, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start_scheduler(self) -> None:
        scheduler_file = self.root / "scheduler.json"
        proc = self._spawn([*dask_command(), "scheduler", "--host", "127.0.0.1", "--port", "0",
                            "--no-dashboard", "--scheduler-file", str(scheduler_file)], "scheduler")
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start:\n" + (self.root / "scheduler.log").read_text())
            time.sleep(0.2)
        self.address = json.loads(scheduler_file.read_text())["address"]

    def add_worker(self, client, name: str, *, private: bool) -> str:
        """Start worker ``name`` (``private``: with a tmpfs of its own on :attr:`out`); its address."""
        assert self.address is not None
        before = set(client.scheduler_info(n_workers=-1)["workers"])
        worker = [*dask_command(), "worker", self.address, "--nthreads", "1", "--no-dashboard", "--no-nanny",
                  "--name", name, "--memory-limit", "2GiB", "--host", "127.0.0.1",
                  "--local-directory", str(self.root / f"{name}-space")]
        if private:
            script = f"mount -t tmpfs tmpfs {self.out} && exec " + " ".join(worker)
            worker = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        self._spawn(worker, name)
        client.wait_for_workers(len(before) + 1, timeout=120)
        (address,) = set(client.scheduler_info(n_workers=-1)["workers"]) - before
        return address

    def stop_worker(self, client, name: str, address: str) -> None:
        client.retire_workers([address], close_workers=True)
        self._wait(self.procs.pop(name))

    @staticmethod
    def _wait(proc: subprocess.Popen) -> None:
        wait_or_kill(proc, timeout=15)

    def stop(self) -> None:
        """Shut everything down cleanly, then make sure every process is gone."""
        from distributed import Client

        if self.address is not None and any(p.poll() is None for p in self.procs.values()):
            with contextlib.suppress(Exception), Client(self.address, timeout=5, set_as_default=False) as c:
                c.shutdown()
        for name in sorted(self.procs, key=lambda n: n == "scheduler"):  # workers first
            self._wait(self.procs[name])
        for log in self.logs:
            log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[_Cluster, object, str]]:
    """A scheduler, one worker that does not see ``out`` (private tmpfs), and a client."""
    if not _can_unshare():
        pytest.skip("needs unshare --mount and mount -t tmpfs (root, or a user namespace)")
    from distributed import Client

    c = _Cluster(tmp_path_factory.mktemp("unshared"))
    try:
        c.start_scheduler()
        with Client(c.address, timeout=30, set_as_default=False) as client:
            private = c.add_worker(client, "private", private=True)
            assert client.run(os.listdir, str(c.out)) == {private: []}  # its own, empty, directory
            yield c, client, private
    finally:
        c.stop()


@pytest.fixture(scope="module")
def source(cluster) -> pathlib.Path:
    """A photo-like RGB tiled TIFF where every process sees it (not in ``out``)."""
    import tifffile

    from bigquant.io.sample import make_sample_image

    c, _, _ = cluster
    path = c.root / "source.tif"
    tifffile.imwrite(path, make_sample_image((200, 264), seed=3), tile=(64, 64), photometric="rgb")
    return path


def _private_view(client, worker: str, directory: pathlib.Path) -> list[str]:
    return sorted(client.run(os.listdir, str(directory), workers=[worker])[worker])


def test_the_probe_names_the_worker_that_does_not_see_the_directory(cluster, tmp_path):
    from bigquant.io.reach import unreachable_workers

    c, client, private = cluster
    unseen = unreachable_workers(c.out, client=client)
    assert list(unseen) == [private] and str(c.out) in unseen[private]
    assert unreachable_workers(c.root, client=client) == {}  # the directory it does see
    # no sentinel is left, neither here nor in the worker's own directory
    assert os.listdir(c.out) == [] and _private_view(client, private, c.out) == []
    with dask.config.set(scheduler="threads"):  # no distributed client: nothing to prove
        assert unreachable_workers(c.out) == {}


def test_zarr_output_holds_every_pixel_when_the_workers_do_not_see_it(cluster, source, tmp_path, caplog):
    import zarr

    from bigquant import quantize

    c, client, private = cluster
    args = dict(random_state=0, tile=32, chunks=64)
    quantize(source, tmp_path / "threads.zarr", 6, **args)
    client.get_task_stream()  # installs the scheduler's task-stream plugin
    start = time.time()
    with caplog.at_level(logging.WARNING, logger="bigquant.io.write"):
        quantize(source, c.out / "q.zarr", 6, client=client, **args)
    got = zarr.open_array(str(c.out / "q.zarr"), mode="r")
    want = zarr.open_array(str(tmp_path / "threads.zarr"), mode="r")
    assert got.shape == want.shape == (200, 264)
    np.testing.assert_array_equal(np.asarray(got[:]), np.asarray(want[:]))  # every pixel
    assert dict(got.attrs) == dict(want.attrs)
    assert "the workers do not see" in caplog.text and str(c.out) in caplog.text
    # the pixels were labelled on the worker, not here
    ran = {key_split(r["key"]) for r in client.get_task_stream(start=start)}
    assert tasks.LABELS in ran or tasks.LUT in ran, ran
    assert _private_view(client, private, c.out) == []  # nothing left where only the worker looks
    assert sorted(os.listdir(c.out)) == ["q.zarr"]


def test_floyd_steinberg_does_not_spool_where_the_workers_cannot_see(cluster, tmp_path, caplog):
    from bigquant.io.sample import make_sample_image
    from bigquant.kernels.dither import floyd_steinberg
    from bigquant.pipeline.dither import dither_labels, label_spool

    c, client, private = cluster
    photo = make_sample_image((150, 203), seed=4)
    palette = np.random.default_rng(0).integers(0, 256, (12, 3))
    data = da.from_array(photo, chunks=(32, 40, 3))
    reference = floyd_steinberg(photo, palette)
    with client.as_current(), caplog.at_level(logging.INFO, logger="bigquant.pipeline.dither"):
        with label_spool(c.out / "q.tif") as spool:
            assert spool is None
            labels = client.compute(dither_labels(data, palette, spool=spool)).result()
    assert "do not see the spool" in caplog.text
    np.testing.assert_array_equal(labels, reference)
    hidden = [n for n in os.listdir(c.out) if n.startswith(".")]  # no spool, no sentinel left
    assert hidden == [] and _private_view(client, private, c.out) == []


def test_a_spool_written_by_one_worker_and_read_by_another(cluster, caplog):
    """Pass 1 on a worker that sees the spool, pass 2 on one that does not: the same labels."""
    from bigquant.io.sample import make_sample_image
    from bigquant.kernels.dither import floyd_steinberg
    from bigquant.pipeline.dither import dither_labels, label_spool

    c, client, private = cluster
    shared = c.add_worker(client, "shared", private=False)
    try:
        photo = make_sample_image((150, 203), seed=5)
        palette = np.random.default_rng(1).integers(0, 256, (10, 3))
        data = da.from_array(photo, chunks=(32, 40, 3))
        with client.as_current(), label_spool(c.out / "q.tif") as spool:
            with dask.annotate(workers=[shared], allow_other_workers=False):  # pass 1 where the spool is
                lazy = dither_labels(data, palette, spool=spool)
            labels = client.compute(lazy, workers=[private]).result()  # pass 2 where it is not
        np.testing.assert_array_equal(labels, floyd_steinberg(photo, palette))
    finally:
        c.stop_worker(client, "shared", shared)


def test_a_dithered_quantize_writes_the_same_labels(cluster, source, tmp_path, caplog):
    """``quantize(dither="floyd-steinberg")`` beside a directory the worker does not see: the threads' labels."""
    import tifffile

    from bigquant import quantize

    c, client, private = cluster
    args = dict(random_state=0, tile=32, chunks=64, dither="floyd-steinberg")
    quantize(source, tmp_path / "threads.tif", 6, **args)
    with caplog.at_level(logging.INFO, logger="bigquant.pipeline.dither"):
        quantize(source, c.out / "fs.tif", 6, client=client, **args)
    assert "do not see the spool" in caplog.text
    np.testing.assert_array_equal(tifffile.imread(c.out / "fs.tif"), tifffile.imread(tmp_path / "threads.tif"))
    assert [n for n in os.listdir(c.out) if n.startswith(".")] == []
    assert _private_view(client, private, c.out) == []


@pytest.fixture(scope="module")
def compressed_source(cluster) -> pathlib.Path:
    """A photo-like RGB tiled TIFF, deflated: its tiles are worth keeping decoded (a pixel spool)."""
    import tifffile

    from bigquant.io.sample import make_sample_image

    c, _, _ = cluster
    path = c.root / "deflated.tif"
    tifffile.imwrite(path, make_sample_image((200, 264), seed=6), tile=(64, 64), photometric="rgb",
                     compression="zlib")
    return path


def test_the_pixel_spool_only_where_every_worker_sees_it(cluster, compressed_source, tmp_path, caplog):
    """Written beside an output the worker does not see: no pixel spool, the tiles decoded again;
    beside one it sees: its count tasks spool every tile and the write reads them back.  Both write
    the threads' labels, and leave nothing behind."""
    import tifffile

    from bigquant import quantize

    c, client, private = cluster
    args = dict(random_state=0, tile=32, chunks=128)
    quantize(compressed_source, tmp_path / "threads.tif", 6, **args)
    want = tifffile.imread(tmp_path / "threads.tif")
    with caplog.at_level(logging.DEBUG, logger="bigquant.io.spool"):
        quantize(compressed_source, c.out / "unseen.tif", 6, client=client, **args)
    assert "no pixel spool: the workers do not see" in caplog.text
    np.testing.assert_array_equal(tifffile.imread(c.out / "unseen.tif"), want)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="bigquant"):
        quantize(compressed_source, c.root / "seen.tif", 6, client=client, **args)
    assert "pixel spool" in caplog.text and "no pixel spool" not in caplog.text
    assert "decoded again" not in caplog.text  # every tile was spooled by the worker process
    np.testing.assert_array_equal(tifffile.imread(c.root / "seen.tif"), want)
    assert [n for n in os.listdir(c.out) if n.startswith(".")] == []
    assert [n for n in os.listdir(c.root) if n.startswith(".")] == []
    assert _private_view(client, private, c.out) == []
