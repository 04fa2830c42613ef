"""Shared pytest fixtures.  Each section belongs to one area; append, don't rewrite."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

# --- io / quantize fixtures -------------------------------------------------


@pytest.fixture
def rgb_image() -> np.ndarray:
    """A small photo-like RGB uint8 image (300 x 400) with many colours."""
    from bigquant.io.sample import make_sample_image

    return make_sample_image((300, 400), seed=1)


@pytest.fixture
def few_colour_image() -> np.ndarray:
    """RGB uint8 image (200 x 260) made of 6 flat colours in blocks."""
    rng = np.random.default_rng(0)
    colours = np.array(
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 250], [10, 10, 10], [200, 120, 40]],
        dtype=np.uint8,
    )
    labels = rng.integers(0, len(colours), (10, 13)).repeat(20, 0).repeat(20, 1)
    return colours[labels]


@pytest.fixture
def tiled_tiff(tmp_path, rgb_image):
    """The ``rgb_image`` as a tiled (64 px), zlib-compressed BigTIFF."""
    import tifffile

    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, rgb_image, tile=(64, 64), compression="zlib", bigtiff=True,
                     photometric="rgb")
    return path


@contextlib.contextmanager
def _running_cluster(n_workers: int = 2, threads_per_worker: int = 1):
    """A real LocalCluster with worker processes, and a Client of it; both closed after."""
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
        dashboard_address=":0", memory_limit="2GiB",
    )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def local_cluster():
    """A LocalCluster of 2 single-thread worker processes, shared by a test module."""
    with _running_cluster() as client:
        yield client


@pytest.fixture
def fresh_cluster():
    """A LocalCluster of 2 single-thread worker processes for one test (it may kill workers)."""
    with _running_cluster() as client:
        yield client


@pytest.fixture(scope="module")
def one_worker_two_threads():
    """A LocalCluster of one worker process with two threads."""
    with _running_cluster(n_workers=1, threads_per_worker=2) as client:
        yield client


@pytest.fixture
def many_colours() -> np.ndarray:
    """A 240 x 240 photo-like image with more colours than the coarse-search threshold."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:240, 0:240]
    img = np.stack([xx, yy, (xx + 2 * yy) // 3], axis=-1) + rng.normal(0, 14, (240, 240, 3))
    img[60:120, 30:90] = [200, 40, 40] + rng.normal(0, 8, (60, 60, 3))  # a red patch
    return np.clip(img, 0, 255).astype(np.uint8)
