"""Task names: short, distinct, from one module, and the only ones bigquant's graphs use.

Every key of every graph a quantize job computes is walked (not only the
``bq-`` ones): its name must be one of :data:`bigquant.tasks.NAMES`, one of
the Dask operations listed in :data:`bigquant.tasks.DASK_NAMES`, or several of
those fused by Dask's optimisation (``bq-read-bq-labels``).
"""

from __future__ import annotations

import numpy as np
import pytest
from dask.callbacks import Callback
from distributed.utils import key_split

from bigquant import tasks


def test_names_are_short_distinct_and_prefixed():
    assert len(tasks.NAMES) == len({n[: tasks.MAX_LENGTH] for n in tasks.NAMES})
    for name in tasks.NAMES | {tasks.HISTOGRAM}:
        assert name.startswith(tasks.PREFIX) and len(name) <= tasks.MAX_LENGTH, name
        assert key_split(f"{name}-0123456789abcdef0123456789abcdef") == name
    assert tasks.tree_sum(tasks.LLOYD) in tasks.NAMES
    for name in tasks.DASK_NAMES:  # Dask's names are not bigquant's
        assert not name.startswith(tasks.PREFIX) and name not in tasks.NAMES, name


class _Keys(Callback):
    """Every key of every graph computed (and every task run) on a local scheduler, as task names."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()
        self.graphs = 0

    def _start(self, dsk):  # noqa: D401 - dask callback
        self.graphs += 1
        self.keys.update(key_split(k) for k in dsk)

    def _pretask(self, key, dsk, state):  # noqa: D401 - dask callback
        self.keys.add(key_split(key))


def _known(label: str) -> bool:
    """A name of the module (or of Dask's listed there), or several fused by dask's optimisation."""
    names = tasks.NAMES | set(tasks.DASK_NAMES)
    if label in names:
        return True
    return any(label.startswith(name + "-") and _known(label[len(name) + 1:]) for name in names)


def test_known_accepts_fused_names_only_of_known_parts():
    assert _known("bq-read-bq-labels") and _known("rechunk-merge-reshape") and _known("bq-labels-store-map")
    for label in ("candidate_grid", "outcome", "ndarray", "empty_like", "bq-read-x", "rechunk-merge-ndarray",
                  "bq-nonsense"):
        assert not _known(label), label


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    import tifffile

    from bigquant.io.sample import make_sample_image

    tmp = tmp_path_factory.mktemp("sources")
    img = make_sample_image((96, 128), seed=1)
    tifffile.imwrite(tmp / "rgb8.tif", img, tile=(32, 32), photometric="rgb")
    tifffile.imwrite(tmp / "rgb16.tif", img.astype(np.uint16) * 257, tile=(32, 32), photometric="rgb")
    return tmp


#: one job per path through the pipeline: (source, output suffix, quantize options, names it must run)
JOBS = {
    "histogram": ("rgb8.tif", ".tif", {}, {tasks.COUNT, tasks.MERGE, tasks.WRITE}),
    "pixels": ("rgb8.tif", ".tif", {"strategy": "pixels"}, {tasks.LLOYD, tasks.MOMENTS, tasks.WRITE}),
    "grid": ("rgb16.tif", ".tif", {}, {tasks.GRID, tasks.tree_sum(tasks.GRID), tasks.GRID_RANGE, tasks.LLOYD}),
    "floyd-steinberg": ("rgb8.tif", ".tif", {"dither": "floyd-steinberg"},
                        {tasks.FS_SLANT, tasks.FS_EDGES, tasks.FS_LABELS, tasks.DITHER_GRID}),
    "blue-noise": ("rgb8.tif", ".tif", {"dither": "blue-noise"}, {tasks.BLUE_NOISE, tasks.DITHER_GRID}),
    "zarr": ("rgb8.tif", ".zarr", {}, {tasks.COUNT}),
    "auto-mask": ("rgb8.tif", ".tif", {"mask": "auto"}, {tasks.MASK, tasks.WRITE}),
    "user-mask": ("rgb8.tif", ".zarr", {"mask": "user", "dither": "floyd-steinberg"}, {tasks.FS_SLANT}),
}


def _job(sources, tmp_path, job: str, **kwargs):
    from bigquant import quantize

    source, suffix, options, _ = JOBS[job]
    options = dict(options)
    if options.get("mask") == "user":
        valid = np.ones((96, 128), dtype=np.uint8)
        valid[10:40, 20:70] = 0
        options["mask"] = valid
    return quantize(sources / source, tmp_path / f"q{suffix}", 5, random_state=0, tile=32, chunks=48,
                    **options, **kwargs)


@pytest.mark.parametrize("job", list(JOBS))
def test_every_key_of_a_job_is_named_in_the_module(sources, tmp_path, job):
    with _Keys() as seen:
        _job(sources, tmp_path, job)
    assert seen.graphs > 0
    assert not {k for k in seen.keys if k.startswith("bigquant")}
    unknown = {k for k in seen.keys if not _known(k)}
    assert not unknown, f"task names neither bq- nor listed in bigquant.tasks.DASK_NAMES: {sorted(unknown)}"
    assert JOBS[job][3] <= seen.keys, JOBS[job][3] - seen.keys


@pytest.mark.distributed
def test_every_task_a_cluster_ran_is_named_in_the_module(sources, tmp_path, local_cluster):
    """The same on worker processes: every task prefix the scheduler has seen."""
    client = local_cluster
    for job in ("histogram", "floyd-steinberg", "auto-mask", "zarr"):
        (tmp_path / job).mkdir()
        _job(sources, tmp_path / job, job, client=client)
    prefixes = set(client.run_on_scheduler(lambda dask_scheduler: [str(p) for p in dask_scheduler.task_prefixes]))
    assert {tasks.FS_SLANT, tasks.COUNT, tasks.MASK} <= prefixes  # the work reached the scheduler
    unknown = {p for p in prefixes if not _known(p)}
    assert not unknown, f"task names neither bq- nor listed in bigquant.tasks.DASK_NAMES: {sorted(unknown)}"
