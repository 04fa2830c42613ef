"""Determinism: the same palette and byte-identical files whatever the chunks and the cluster.

At a fixed ``random_state`` a result must not depend on how the work is cut
(chunk sizes, image sizes that are not a multiple of the chunks or tiles) or
where it runs (dask's threads, worker processes, one or several workers).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bigquant import quantize
from bigquant.errors import ConvergenceWarning
from bigquant.io.sample import make_sample_image

STRATEGIES = ["histogram", "pixels", "minibatch"]


@pytest.fixture(scope="module")
def odd_tiff(tmp_path_factory) -> Path:
    """A photo-like 300 x 470 RGB TIFF in 32 px tiles: no edge is a multiple of the chunks."""
    path = tmp_path_factory.mktemp("src") / "odd.tif"
    tifffile.imwrite(path, make_sample_image((300, 470), seed=11), tile=(32, 32), compression="zlib",
                     photometric="rgb")
    return path


def _quantize(src, dst: Path, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return quantize(src, dst, **{"n_clusters": 7, "random_state": 3, "tile": 64, "max_iter": 30,
                                     **params})


def _assert_same(models, files) -> None:
    first_model, first_file = models[0], files[0]
    for model, path in zip(models[1:], files[1:]):
        np.testing.assert_array_equal(model.cluster_centers_, first_model.cluster_centers_)
        assert model.n_iter_ == first_model.n_iter_
        assert path.read_bytes() == first_file.read_bytes(), f"{path.name} differs from {first_file.name}"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_result_for_any_chunking(odd_tiff, tmp_path, strategy):
    models, files = [], []
    for chunks in (32, (64, 160), None):
        name = "x".join(map(str, np.atleast_1d(chunks))) if chunks else "auto"
        path = tmp_path / f"c{name}.tif"
        models.append(_quantize(odd_tiff, path, strategy=strategy, chunks=chunks, pyramid=1))
        files.append(path)
    _assert_same(models, files)


def test_rgb_output_and_preview_for_any_chunking(odd_tiff, tmp_path):
    models, files = [], []
    for chunks in (32, 128):
        path = tmp_path / f"c{chunks}.tif"
        models.append(_quantize(odd_tiff, path, mode="rgb", chunks=chunks, preview=tmp_path / f"c{chunks}.png"))
        files += [path]
    _assert_same(models, files)
    assert (tmp_path / "c32.png").read_bytes() == (tmp_path / "c128.png").read_bytes()


def test_in_memory_source_matches_the_file(odd_tiff, tmp_path):
    image = tifffile.imread(odd_tiff)
    models = [_quantize(odd_tiff, tmp_path / "file.tif"), _quantize(image, tmp_path / "array.tif")]
    _assert_same(models, [tmp_path / "file.tif", tmp_path / "array.tif"])


def test_16_bit_source_for_any_chunking(tmp_path):
    """uint16 data (the pixel strategy): the partial sums do not depend on the chunks."""
    image = make_sample_image((200, 260), seed=4).astype(np.uint16) * 257
    src = tmp_path / "deep.tif"
    tifffile.imwrite(src, image, tile=(32, 32), photometric="rgb")
    models = [_quantize(src, tmp_path / f"c{c}.tif", chunks=c) for c in (32, 96)]
    _assert_same(models, [tmp_path / "c32.tif", tmp_path / "c96.tif"])


def test_zarr_output_for_any_chunking(odd_tiff, tmp_path):
    import zarr

    for chunks in (32, 128):
        _quantize(odd_tiff, tmp_path / f"c{chunks}.zarr", chunks=chunks)
        time.sleep(1.05)  # written in different seconds, as two real runs would be
    a, b = (zarr.open_array(str(tmp_path / f"c{c}.zarr"), mode="r") for c in (32, 128))
    np.testing.assert_array_equal(a[:], b[:])
    assert dict(a.attrs) == dict(b.attrs)
    files_a = sorted(p.relative_to(tmp_path / "c32.zarr") for p in (tmp_path / "c32.zarr").rglob("*") if p.is_file())
    for rel in files_a:
        assert (tmp_path / "c32.zarr" / rel).read_bytes() == (tmp_path / "c128.zarr" / rel).read_bytes()


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_result_on_threads_processes_and_worker_counts(odd_tiff, tmp_path, strategy, local_cluster,
                                                           one_worker_two_threads):
    """dask's threads, 2 worker processes x 1 thread, 1 worker process x 2 threads."""
    from distributed import get_task_stream

    runs = {"threads": None, "2x1": local_cluster, "1x2": one_worker_two_threads}
    models, files = [], []
    for name, client in runs.items():
        path = tmp_path / f"{name}.tif"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # distributed: large graph / port warnings
            if client is None:
                models.append(_quantize(odd_tiff, path, strategy=strategy, chunks=96))
            else:
                with get_task_stream(client) as stream:
                    models.append(_quantize(odd_tiff, path, strategy=strategy, chunks=96, client=client))
                assert any(t["key"][0].startswith("bq-read") for t in stream.data if
                           isinstance(t["key"], tuple)), "the pixels were read on the workers"
        files.append(path)
    _assert_same(models, files)


@pytest.mark.distributed
def test_sweep_same_palettes_on_threads_and_processes(local_cluster):
    from bigquant import sweep

    image = make_sample_image((128, 160), seed=8)
    on_threads = sweep(image, [3, 5, 9], random_state=2)
    on_cluster = sweep(image, [3, 5, 9], random_state=2, client=local_cluster)
    for k in (3, 5, 9):
        np.testing.assert_array_equal(on_threads.palette(k), on_cluster.palette(k))
        assert on_threads[k].cost == on_cluster[k].cost
