"""Reliability: killed workers, killed fits and sweeps that resume, concurrent jobs.

A user running an hour-long job on a shared cluster must never lose work or get
a half-written file: tasks are pure and idempotent (Dask recomputes what a dead
worker held), fits resume from their checkpoint, sweeps from their CSV, and
several jobs can share one cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bigquant import quantize
from bigquant.errors import ConvergenceWarning
from bigquant.io.sample import make_sample_image


def _stray(directory: Path, expected: set[str]) -> set[str]:
    """Entries of ``directory`` (hidden temporary files included) not in ``expected``."""
    return {p.name for p in directory.iterdir()} - expected


@pytest.fixture
def source_tiff(tmp_path: Path) -> Path:
    """A photo-like 512 x 512 RGB tiled TIFF on disk: any lost chunk can be re-read."""
    path = tmp_path / "source.tif"
    tifffile.imwrite(path, make_sample_image((512, 512), seed=7), tile=(64, 64), compression="zlib",
                     photometric="rgb")
    return path


def _kill_a_worker(client, which: int, killed: list[int]) -> None:
    """SIGKILL the ``which``-th worker process (sorted by address); its nanny restarts it."""
    client.wait_for_workers(2, timeout=60)
    pids = client.run(os.getpid)
    pid = pids[sorted(pids)[which]]
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


def _wait_restarted(client, killed: list[int], timeout: float = 60) -> None:
    """Wait until the nannies have replaced every killed worker process."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pids = set(client.run(os.getpid).values())
        except OSError:  # a dead worker not yet removed by the scheduler
            pids = set()
        if len(pids) == 2 and pids.isdisjoint(killed):
            return
        assert time.monotonic() < deadline, "the killed workers were not restarted"
        time.sleep(0.2)


# ---------------------------------------------------------------- worker failure


@pytest.mark.distributed
def test_workers_killed_in_lloyd_loop_and_in_write(fresh_cluster, source_tiff, tmp_path, monkeypatch):
    """One worker SIGKILLed at Lloyd iteration 2, another while tiles are written: same result."""
    import bigquant.io.tiff_write as tiff_write

    client = fresh_cluster
    out = tmp_path / "out"
    out.mkdir()
    params = dict(strategy="pixels", random_state=0, tile=64, chunks=128, tol=0, max_iter=6,
                  client=client)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = quantize(source_tiff, out / "reference.tif", 8, **params)

        killed: list[int] = []
        bands = tiff_write.compute_bands

        def bands_with_a_kill(*args, **kwargs):
            for i, band in enumerate(bands(*args, **kwargs)):
                yield band
                if i == 0:  # the next bands are being computed
                    _kill_a_worker(client, 1, killed)

        def kill_at_iteration_2(iteration, inertia, shift):
            if iteration == 2:
                _kill_a_worker(client, 0, killed)

        monkeypatch.setattr(tiff_write, "compute_bands", bands_with_a_kill)
        disturbed = quantize(source_tiff, out / "disturbed.tif", 8, callback=kill_at_iteration_2, **params)

    assert len(killed) == 2
    _wait_restarted(client, killed)
    assert disturbed.n_iter_ == reference.n_iter_ == 6
    np.testing.assert_array_equal(disturbed.cluster_centers_, reference.cluster_centers_)
    assert (out / "disturbed.tif").read_bytes() == (out / "reference.tif").read_bytes()
    assert _stray(out, {"reference.tif", "disturbed.tif", "reference.tif.aux.xml", "disturbed.tif.aux.xml"}) == set()


def _lookup_table_holders(dask_scheduler) -> list[str]:
    return sorted({
        ws.address
        for key, ts in dask_scheduler.tasks.items()
        if "bq-lut" in str(key)
        for ws in (ts.who_has or ())
    })


@pytest.mark.distributed
def test_worker_holding_the_lookup_table_killed_during_write(fresh_cluster, source_tiff, tmp_path,
                                                             monkeypatch):
    import bigquant.io.tiff_write as tiff_write

    client = fresh_cluster
    params = dict(random_state=1, tile=64, chunks=128)
    reference = quantize(source_tiff, tmp_path / "reference.tif", 8, **params)  # threads: nothing scattered
    bands = tiff_write.compute_bands
    killed: list[int] = []

    def kill_the_holder_first(*args, **kwargs):
        """After the first band, kill a worker holding the lookup table (or any worker)."""
        for i, band in enumerate(bands(*args, **kwargs)):
            if i == 0:
                holders = client.run_on_scheduler(_lookup_table_holders)
                pids = client.run(os.getpid)
                victim = holders[0] if holders else sorted(pids)[0]
                os.kill(pids[victim], signal.SIGKILL)
                killed.append(pids[victim])
            yield band

    monkeypatch.setattr(tiff_write, "compute_bands", kill_the_holder_first)
    disturbed = quantize(source_tiff, tmp_path / "disturbed.tif", 8, client=client, **params)
    assert killed
    np.testing.assert_array_equal(disturbed.cluster_centers_, reference.cluster_centers_)
    assert (tmp_path / "disturbed.tif").read_bytes() == (tmp_path / "reference.tif").read_bytes()


# ---------------------------------------------------------------- resumable fit

_FIT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from bigquant import KMeans

    checkpoint, slow = sys.argv[1], float(sys.argv[2])
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (20000, 3)) + rng.integers(0, 6, (20000, 1)) * 3.0

    def progress(iteration, inertia, shift):
        print("iteration", iteration, flush=True)
        time.sleep(slow)

    km = KMeans(12, random_state=3, strategy="pixels", tol=0, max_iter=60,
                checkpoint=checkpoint or None, checkpoint_every=2, callback=progress).fit(X)
    np.save(sys.stdout.buffer, km.cluster_centers_)
    """
)


def _run_fit(script: Path, checkpoint: str, slow: float) -> tuple[list[int], np.ndarray]:
    import io

    proc = subprocess.run([sys.executable, str(script), checkpoint, str(slow)], capture_output=True,
                          timeout=120, check=True)
    head, _, tail = proc.stdout.partition(b"\x93NUMPY")
    iterations = [int(line.split()[1]) for line in head.decode().splitlines() if line.startswith("iteration")]
    return iterations, np.load(io.BytesIO(b"\x93NUMPY" + tail))


@contextlib.contextmanager
def _subprocess(args: list[str]) -> Iterator[subprocess.Popen]:
    """A Python subprocess with piped stdout, killed and reaped on the way out."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()


def _sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def test_fit_killed_in_a_subprocess_resumes_in_another(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(_FIT_SCRIPT)
    checkpoint = tmp_path / "fit.ckpt.json"
    reference_iterations, reference = _run_fit(script, "", 0)
    assert len(reference_iterations) > 12

    with _subprocess([sys.executable, str(script), str(checkpoint), "0.25"]) as proc:
        seen = 0
        deadline = time.monotonic() + 90
        while seen < 7 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(b"iteration"):
                seen = int(line.split()[1])
        assert seen == 7, "the fit did not get to iteration 7"
        _sigkill(proc)
    assert checkpoint.exists()

    iterations, resumed = _run_fit(script, str(checkpoint), 0)
    assert iterations[0] in (7, 8), "resumed from the checkpoint of iteration 6 or 7, not from scratch"
    assert iterations[-1] == reference_iterations[-1]
    np.testing.assert_array_equal(resumed, reference)
    assert not checkpoint.exists(), "the checkpoint is removed once the fit completes"
    assert _stray(tmp_path, {"fit.py"}) == set(), "no temporary checkpoint files left"


def test_checkpoint_of_other_data_of_the_same_shape_is_not_resumed(tmp_path):
    from bigquant import KMeans

    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (4000, 3)) + rng.integers(0, 6, (4000, 1)) * 3.0
    b = rng.normal(0, 5, (4000, 3))
    checkpoint = tmp_path / "fit.json"

    def stop_at_4(iteration, inertia, shift):
        if iteration == 4:
            raise KeyboardInterrupt

    params = dict(random_state=0, strategy="pixels", tol=0, max_iter=40, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        KMeans(6, checkpoint=checkpoint, callback=stop_at_4, **params).fit(a)
    assert checkpoint.exists()
    iterations: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        on_b = KMeans(6, checkpoint=checkpoint, callback=lambda i, *_: iterations.append(i), **params).fit(b)
        fresh = KMeans(6, **params).fit(b)
    assert iterations[0] == 1, "started over: the checkpoint was of other data"
    np.testing.assert_array_equal(on_b.cluster_centers_, fresh.cluster_centers_)


# ---------------------------------------------------------------- resumable sweep


@pytest.fixture
def sweep_module():
    import bigquant.pipeline.sweep

    return bigquant.pipeline.sweep


@pytest.fixture
def sweep_image() -> np.ndarray:
    return make_sample_image((128, 160), seed=5)


class _Interrupted(Exception):
    pass


def test_sweep_interrupted_resumes_from_its_csv(sweep_module, sweep_image, tmp_path, monkeypatch):
    ks = [2, 3, 4, 5, 6, 8]
    full = sweep_module.sweep(sweep_image, ks, random_state=0)

    # interrupt: the fit of k = 8 (started first) stops after the others are done, as a killed run would
    fit_task = sweep_module._fit_task

    def failing(hist, k, *args, **kwargs):
        if k == 8:
            time.sleep(1.0)
            raise _Interrupted(k)
        return fit_task(hist, k, *args, **kwargs)

    csv_path = tmp_path / "sweep.csv"
    with monkeypatch.context() as m:
        m.setattr(sweep_module, "_fit_task", failing)
        with pytest.raises(_Interrupted):
            sweep_module.sweep(sweep_image, ks, random_state=0, out=csv_path)
    done = {row.k for row in sweep_module.read_rows(csv_path)}
    assert done and 8 not in done

    fitted: list[int] = []

    def counting(hist, k, *args, **kwargs):
        fitted.append(k)
        return fit_task(hist, k, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "_fit_task", counting)
    resumed = sweep_module.sweep(sweep_image, ks, random_state=0, out=csv_path, resume_from=csv_path)
    assert sorted(resumed.resumed) == sorted(done)
    assert sorted(fitted) == sorted(set(ks) - done), "the ks already in the CSV were not fitted again"
    assert resumed.ks == full.ks
    for k in ks:
        assert resumed[k].cost == full[k].cost
        np.testing.assert_array_equal(resumed.palette(k), full.palette(k))
    assert sorted(r.k for r in sweep_module.read_rows(csv_path)) == ks


def test_sweep_resumes_after_a_torn_last_line(sweep_module, sweep_image, tmp_path):
    """A run killed while writing a row leaves half a line: it is dropped and fitted again."""
    ks = [2, 3, 4]
    csv_path = tmp_path / "sweep.csv"
    full = sweep_module.sweep(sweep_image, ks, random_state=0, out=csv_path)
    text = csv_path.read_text()
    lines = text.splitlines(keepends=True)
    last_k = int(lines[-1].split(",")[0])
    torn = "".join(lines[:-1]) + lines[-1][: len(lines[-1]) - 12]  # cut inside the palette column
    csv_path.write_text(torn)

    resumed = sweep_module.sweep(sweep_image, ks, random_state=0, out=csv_path, resume_from=csv_path)
    assert last_k not in resumed.resumed, "a torn row is not trusted"
    for k in ks:
        np.testing.assert_array_equal(resumed.palette(k), full.palette(k))
    rows = sweep_module.read_rows(csv_path)
    assert sorted(r.k for r in rows) == ks
    for row in rows:
        np.testing.assert_array_equal(row.palette_array(3), full.palette(row.k))


# ---------------------------------------------------------------- concurrency


@pytest.mark.distributed
def test_concurrent_quantize_jobs_on_one_cluster(local_cluster, tmp_path):
    """Four jobs submitted at once from client threads, all writing into one directory."""
    import dask

    sources = []
    for i in range(4):
        path = tmp_path / f"src{i}.tif"
        tifffile.imwrite(path, make_sample_image((256, 320), seed=10 + i), tile=(64, 64),
                         compression="zlib", photometric="rgb")
        sources.append(path)
    out = tmp_path / "out"
    out.mkdir()
    jobs = [  # mixed strategies and modes; every job its own output (and palette JSON)
        dict(n_clusters=6, strategy="histogram", mode="palette"),
        dict(n_clusters=7, strategy="pixels", mode="rgb", max_iter=20),
        dict(n_clusters=5, strategy="histogram", mode="rgb"),
        dict(n_clusters=8, strategy="pixels", mode="palette", max_iter=20),
    ]
    scheduler_before = dask.config.get("scheduler", None)

    def run(i: int, name: str, client) -> np.ndarray:
        model = quantize(sources[i], out / f"{name}{i}.tif", random_state=i, tile=64, chunks=128,
                         client=client, palette_out=out / f"{name}{i}.json", **jobs[i])
        return model.cluster_centers_

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sequential = [run(i, "seq", None) for i in range(4)]
        start = threading.Barrier(4)

        def concurrent(i: int) -> np.ndarray:
            start.wait(30)
            return run(i, "par", local_cluster)

        with ThreadPoolExecutor(4) as pool:
            parallel = list(pool.map(concurrent, range(4)))

    for i in range(4):
        np.testing.assert_array_equal(parallel[i], sequential[i])
        assert (out / f"par{i}.tif").read_bytes() == (out / f"seq{i}.tif").read_bytes()
    expected = {f"{n}{i}.{ext}" for n in ("seq", "par") for i in range(4) for ext in ("tif", "json")}
    expected |= {f"{n}{i}.tif.aux.xml" for n in ("seq", "par") for i in range(4) if jobs[i]["mode"] == "palette"}
    assert _stray(out, expected) == set()
    assert dask.config.get("scheduler", None) == scheduler_before, "the global dask config was restored"


# ---------------------------------------------------------------- killed while writing

_WRITE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import bigquant.io.tiff_write as tiff_write
    from bigquant import quantize

    bands = tiff_write.compute_bands

    def slow_bands(*args, **kwargs):
        for i, band in enumerate(bands(*args, **kwargs)):
            yield band
            if i == 1:
                print("writing", flush=True)
                time.sleep(60)

    tiff_write.compute_bands = slow_bands
    quantize(sys.argv[1], sys.argv[2], 6, random_state=0, tile=64, chunks=64, palette_out=sys.argv[3])
    """
)


def test_process_killed_while_writing_leaves_no_output(source_tiff, tmp_path):
    """SIGKILL in the middle of the tiled write: no (half-written) output appears; a re-run works."""
    script = tmp_path / "write.py"
    script.write_text(_WRITE_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    dst, palette = out / "q.tif", out / "q.json"
    with _subprocess([sys.executable, str(script), str(source_tiff), str(dst), str(palette)]) as proc:
        assert proc.stdout.readline().strip() == b"writing"
        _sigkill(proc)
    assert not dst.exists() and not palette.exists()
    leftovers = {p.name for p in out.iterdir()}
    assert all(name.startswith(".q.") for name in leftovers), leftovers  # only hidden temporaries

    quantize(source_tiff, dst, 6, random_state=0, tile=64, chunks=64, palette_out=palette)
    quantize(source_tiff, tmp_path / "clean.tif", 6, random_state=0, tile=64, chunks=64)
    assert dst.read_bytes() == (tmp_path / "clean.tif").read_bytes()


# ---------------------------------------------------------------- Ctrl-C


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory) -> Path:
    """A 12.6 MP tiled TIFF: its write lasts long enough (about a second) to be interrupted in the middle."""
    from bigquant.io.sample import make_sample_tiff

    return make_sample_tiff(tmp_path_factory.mktemp("big") / "big.tif", size=(3072, 4096), tile=256, seed=1)


@pytest.mark.parametrize("cluster", ["--no-cluster", "--cluster"])
def test_ctrl_c_while_writing_exits_130_and_leaves_the_output_as_it_was(big_tiff, tmp_path, cluster):
    """``bigquant quantize`` in a subprocess gets a real SIGINT (to its process group, as a
    terminal's Ctrl-C) once its temporary output exists: exit 130, the old output byte for
    byte, no temporary left."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "q.tif"
    dst.write_bytes(b"the old output, kept")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    args = [sys.executable, "-m", "bigquant", "quantize", str(big_tiff), str(dst), "-k", "8", "--overwrite",
            "--no-progress", cluster, *(["--workers", "1", "--dashboard", "none"] if cluster == "--cluster" else [])]
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out_dir.glob(".q.*.tmp*")):  # the write has started (bigquant.io.atomic's names)
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the write never started"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == 130, err.decode()
    assert err.decode().strip().splitlines()[-1] == "bigquant: interrupted"
    assert dst.read_bytes() == b"the old output, kept"
    assert _stray(out_dir, {"q.tif"}) == set()  # no hidden .q.*.tmp* (nor .tiles, .spool) left
