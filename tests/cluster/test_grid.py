"""The grid strategy (bigquant/cluster/grid.py, bigquant/kernels/grid.py): exact cell sums, fixed points."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from bigquant import KMeans
from bigquant.cluster.grid import check_fixed_point, grid_bits, value_grid, value_range
from bigquant.errors import InvalidInputError, InvalidParameterError
from bigquant.io.sample import make_sample_image


def _photo16(shape=(90, 120), bands=3, seed=0) -> np.ndarray:
    """A photo at 16 bits: 8-bit values x 257 plus a sub-8-bit jitter (every level used)."""
    rgb = make_sample_image(shape, seed=seed).astype(np.int64) * 257
    rng = np.random.default_rng(seed)
    img = rgb + rng.integers(-128, 129, rgb.shape)
    if bands == 4:
        img = np.concatenate([img, (0.6 * img[..., :1] + 0.4 * img[..., 1:2]).astype(np.int64)], axis=-1)
    return np.clip(img, 0, 65535).astype(np.uint16)


def _data(kind: str) -> np.ndarray:
    if kind == "uint16 RGB":
        return _photo16()
    if kind == "uint16 4-band":
        return _photo16(bands=4)
    if kind == "int16":
        return (_photo16().astype(np.int32) - 32768).astype(np.int16)
    if kind == "float32":
        return (_photo16() / np.float32(65535)).astype(np.float32)
    raise AssertionError(kind)


def _mask(shape) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ~((yy < shape[0] // 3) & (xx < shape[1] // 2))  # a block of nodata


KINDS = ["uint16 RGB", "uint16 4-band", "int16", "float32"]


# ----------------------------------------------------------------------------- exact sums


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lazy", [False, True])
def test_cell_sums_are_the_pixel_sums(kind, lazy):
    img = _data(kind)
    X = da.from_array(img, chunks=(32, 48, -1)) if lazy else img
    grid, finite = value_grid(X)
    flat = img.reshape(-1, img.shape[-1])
    assert finite
    assert grid.n_pixels == flat.shape[0]
    assert grid.counts.sum() == flat.shape[0]
    if img.dtype.kind in "ui":
        # integer sums: exact, whatever the order of the tree
        assert np.array_equal(grid.sums.sum(axis=0), flat.astype(np.int64).sum(axis=0).astype(np.float64))
    else:
        np.testing.assert_allclose(grid.sums.sum(axis=0), flat.astype(np.float64).sum(axis=0), rtol=1e-12)
    # the weighted mean of the cell means is the pixel mean
    means = grid.means()
    np.testing.assert_allclose((means * grid.counts[:, None]).sum(axis=0) / grid.counts.sum(),
                               flat.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(grid.minimum, flat.min(axis=0))
    np.testing.assert_array_equal(grid.maximum, flat.max(axis=0))


def test_every_cell_holds_the_sum_of_its_pixels():
    img = _data("uint16 RGB")
    grid, _ = value_grid(img, bits=4)
    flat = img.reshape(-1, 3).astype(np.float64)
    q = np.clip(np.floor((flat - grid.lo) * grid.scale), 0, 15).astype(np.int64)
    code = (q[:, 0] << 8) | (q[:, 1] << 4) | q[:, 2]
    codes, inverse = np.unique(code, return_inverse=True)
    np.testing.assert_array_equal(grid.codes, codes)
    np.testing.assert_array_equal(grid.counts, np.bincount(inverse))
    for c in range(3):
        np.testing.assert_array_equal(grid.sums[:, c], np.bincount(inverse, weights=flat[:, c]))
    np.testing.assert_array_equal(grid.cells(), np.stack([codes >> 8, (codes >> 4) & 15, codes & 15], 1))


def test_toy_grid_by_hand():
    X = np.array([[0], [1], [2], [3], [3]], dtype=np.uint16)
    grid, _ = value_grid(X, bits=1, bounds=(np.array([0.0]), np.array([3.0])))
    assert grid.codes.tolist() == [0, 1]
    assert grid.counts.tolist() == [2, 3]
    assert grid.sums[:, 0].tolist() == [1, 8]


def test_values_outside_the_range_fall_in_edge_cells_with_exact_sums():
    img = _data("uint16 RGB")
    # a range narrower than the data (as a probe of a few tiles may find)
    grid, _ = value_grid(img, bounds=(np.full(3, 20000.0), np.full(3, 30000.0)))
    flat = img.reshape(-1, 3).astype(np.int64)
    assert np.array_equal(grid.sums.sum(axis=0), flat.sum(axis=0).astype(np.float64))
    assert grid.cells().max() == (1 << grid.bits) - 1 and grid.cells().min() == 0


@pytest.mark.parametrize("lazy", [False, True])
def test_masked_pixels_are_not_counted(lazy):
    img = _data("float32")
    valid = _mask(img.shape[:2])
    img[~valid] = np.nan  # nodata under the mask
    X = da.from_array(img, chunks=(32, 48, -1)) if lazy else img
    V = da.from_array(valid, chunks=(32, 48)) if lazy else valid
    grid, finite = value_grid(X, valid=V)
    assert finite
    assert grid.n_pixels == valid.sum()
    np.testing.assert_allclose(grid.sums.sum(axis=0), img[valid].astype(np.float64).sum(axis=0), rtol=1e-12)


def test_a_nan_outside_the_mask_is_reported():
    img = _data("float32")
    img[3, 4, 1] = np.nan
    _, finite = value_grid(img)
    assert not finite
    with pytest.raises(InvalidInputError, match="NaN"):
        KMeans(4, strategy="grid").fit(img)


def test_range_of_a_dask_array_comes_from_a_few_blocks():
    img = _data("uint16 RGB")
    lo, hi = value_range(da.from_array(img, chunks=(16, 16, -1)))
    flat = img.reshape(-1, 3)
    assert np.all(lo >= flat.min(axis=0)) and np.all(hi <= flat.max(axis=0))
    assert np.all(hi > lo)


def test_range_of_a_tiled_file_is_read_a_row_of_tiles_a_task(tmp_path):
    """The probe's 16 tiles of a tiled TIFF are read by several tasks (the threads read them side by side)
    and their bounds combined: the per-band min and max of exactly those tiles."""
    import tifffile

    from bigquant.cluster import grid as grid_module
    from bigquant.io import read_image

    img = _photo16((1280, 1280))
    img[1000:1010, 1100:1110] = [0, 1, 65535]  # inside a probed tile (the last row, the last column)
    tifffile.imwrite(tmp_path / "p.tif", img, tile=(256, 256), photometric="rgb")
    data = read_image(tmp_path / "p.tif").data
    graph = dict(grid_module._range_graph(data, None).__dask_graph__())
    readers = [task for task in graph.values() if getattr(task, "func", None) is grid_module._reader_range
               or (isinstance(task, tuple) and task[0] is grid_module._reader_range)]
    assert len(readers) == 4  # a task a row of windows
    lo, hi = value_range(data)
    starts = [0, 256, 768, 1024]  # the tiles of the 4 x 4 probe: at rows and columns 0, 426, 852, 1279
    tiles = np.stack([img[y:y + 256, x:x + 256].reshape(-1, 3) for y in starts for x in starts])
    np.testing.assert_array_equal(lo, tiles.reshape(-1, 3).min(axis=0))
    np.testing.assert_array_equal(hi, tiles.reshape(-1, 3).max(axis=0))
    assert lo[0] == 0 and hi[2] == 65535  # the values planted in a probed tile


def test_the_range_probe_loads_the_grid_kernels_beside_its_reads():
    """A task of the probe's compute runs the grid pass's block kernels on one pixel of the data's type
    (numba's cache loaded before the pass, whose threads would otherwise all wait for the first load)."""
    from dask.callbacks import Callback

    from bigquant import kernels, tasks

    ran = []

    class Seen(Callback):
        def _pretask(self, key, dsk, state):
            ran.append(key[0] if isinstance(key, tuple) else key)

    img = _data("uint16 RGB").astype(np.uint8)  # a type no other grid test counts: its kernels load here
    with Seen():
        value_range(da.from_array(img, chunks=(32, 32, -1)))
    assert any(str(k).startswith(tasks.GRID + "-") for k in ran), ran
    assert any("uint8" in str(sig[0]) for sig in kernels.add_grid_cells.signatures)


def test_the_last_pass_builds_its_cell_tables_before_the_writer_threads(monkeypatch):
    """LastPass.block_step builds the tables of the centres and of the palette in the calling process:
    the writer's threads, labelling their blocks at once, find them cached (none builds them again)."""
    from concurrent.futures import ThreadPoolExecutor

    from bigquant import kernels
    from bigquant.cluster import cells as cells_module
    from bigquant.cluster.cells import CellGrid
    from bigquant.cluster.grid import LastPass
    from bigquant.cluster.points import DaskPoints

    img = _photo16((64, 64))
    flat = img.reshape(-1, 3)
    centers = flat[[0, 700, 2100, 3500]].astype(np.float64) + 0.3
    palette = np.rint(centers)
    cells = CellGrid.over(flat.min(axis=0), flat.max(axis=0), len(centers))
    last = LastPass(DaskPoints(da.from_array(img, chunks=(32, 32, -1))), centers, cells, lambda done: None,
                    tol=1.0, max_iter=5)
    step = last.block_step(palette, np.uint8)

    def no_build(*args):
        raise AssertionError("a cell table built again in a writer thread")

    monkeypatch.setattr(cells_module, "cell_table", no_build)
    blocks = [img[y:y + 32, x:x + 32] for y in (0, 32) for x in (0, 32)]
    with ThreadPoolExecutor(4) as pool:
        labelled = list(pool.map(step, blocks))
    for block, (labels, _) in zip(blocks, labelled):
        expected = kernels.assign_labels(block.reshape(-1, 3), palette, np.int32)[0].reshape(32, 32)
        np.testing.assert_array_equal(labels, expected)


def test_grid_bits():
    assert grid_bits(np.uint16, 3) == 6
    assert grid_bits(np.uint16, 4) == 5
    assert grid_bits(np.float32, 1) == 12
    assert grid_bits(np.int16, 20) == 1
    assert grid_bits(np.uint16, 21) is None
    assert grid_bits(np.complex64, 3) is None


# ----------------------------------------------------------------------------- strategy choice


@pytest.mark.parametrize("kind", KINDS)
def test_auto_picks_the_grid_for_data_beyond_the_histogram(kind):
    model = KMeans(4, random_state=0).fit(_data(kind))
    assert model.strategy_ == "grid"


def test_auto_keeps_the_histogram_for_8bit_and_pixels_for_weights():
    img = make_sample_image((40, 50))
    assert KMeans(4, random_state=0).fit(img).strategy_ == "histogram"
    assert KMeans(4, random_state=0).fit(img, sample_weight=_mask(img.shape[:2])).strategy_ == "histogram"
    img16 = _data("uint16 RGB")
    w = np.random.default_rng(0).uniform(0.5, 2, img16.shape[:2])
    assert KMeans(4, random_state=0).fit(img16, sample_weight=w).strategy_ == "pixels"
    assert KMeans(4, random_state=0).fit(img16, sample_weight=_mask(img16.shape[:2])).strategy_ == "grid"
    assert KMeans(4, random_state=0, strategy="pixels").fit(img16).strategy_ == "pixels"
    uint8_4 = np.concatenate([img, img[..., :1]], axis=-1)
    assert KMeans(4, random_state=0).fit(uint8_4).strategy_ == "grid"


def test_grid_refuses_weights_and_too_many_bands():
    img16 = _data("uint16 RGB")
    with pytest.raises(InvalidParameterError, match="strategy='grid'"):
        KMeans(4, strategy="grid").fit(img16, sample_weight=np.ones(img16.shape[:2]))
    with pytest.raises(InvalidParameterError, match="strategy='grid'"):
        KMeans(4, strategy="grid").fit(np.zeros((50, 21), np.float32))


# ----------------------------------------------------------------------------- the fit


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_grid_fit_is_a_pixel_fixed_point_no_worse_than_pixels(kind, lazy, masked):
    img = _data(kind)
    valid = _mask(img.shape[:2]) if masked else None
    if masked and img.dtype.kind == "f" and lazy:
        img[~valid] = np.nan  # nodata the fit must never see (numpy input with a NaN is refused up front)
    X = da.from_array(img, chunks=(32, 48, -1)) if lazy else img
    V = None if valid is None else (da.from_array(valid, chunks=(32, 48)) if lazy else valid)
    grid = KMeans(8, random_state=0, strategy="grid").fit(X, sample_weight=V)
    # the pixel strategy on the same pixels (its sums cannot take a NaN, weight 0 or not)
    clean = np.where(valid[..., None], img, 0).astype(img.dtype) if masked else img
    Xc = da.from_array(clean, chunks=(32, 48, -1)) if lazy else clean
    pixels = KMeans(8, random_state=0, strategy="pixels").fit(Xc, sample_weight=V)
    assert grid.strategy_ == "grid" and pixels.strategy_ == "pixels"
    assert np.isfinite(grid.cluster_centers_).all()
    # no worse than the pixel strategy from the same seed (float sums: rounding only)
    assert grid.inertia_ <= pixels.inertia_ * (1 + 1e-9)
    # one more exact Lloyd step over the pixels moves the centres by at most tol
    changed, shift, tol = check_fixed_point(Xc, grid, valid=V)
    assert shift <= tol, (changed, shift, tol)
    # inertia_ is the pixels' squared error for the centres returned
    flat = clean.reshape(-1, clean.shape[-1]).astype(np.float64)
    keep = np.ones(flat.shape[0], bool) if valid is None else valid.reshape(-1)
    d = ((flat[keep, None, :] - grid.cluster_centers_[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(grid.inertia_, d.sum(), rtol=1e-9)


def test_labels_are_nearest_centres():
    img = _data("uint16 4-band")
    model = KMeans(6, random_state=0).fit(da.from_array(img, chunks=(32, 48, -1)))
    labels = np.asarray(model.labels_.compute())
    flat = img.reshape(-1, 4).astype(np.float64)
    d = ((flat[:, None, :] - model.cluster_centers_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels.reshape(-1), d.argmin(1))


def test_grid_is_deterministic_and_chunking_free_for_numpy_bounds():
    img = _data("uint16 RGB")
    a = KMeans(8, random_state=3).fit(img)
    b = KMeans(8, random_state=3).fit(img)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_


def test_few_values_and_explicit_init():
    X = np.repeat(np.array([[0, 0, 0], [1000, 0, 0], [0, 1000, 0]], dtype=np.uint16), 20, axis=0)
    model = KMeans(3, random_state=0, strategy="grid").fit(X)
    np.testing.assert_allclose(np.sort(model.cluster_centers_[:, 0]), [0, 0, 1000])
    assert model.inertia_ == 0
    init = np.array([[0, 0, 0], [900, 0, 0], [0, 900, 0]], dtype=np.float64)
    model = KMeans(3, init=init, strategy="grid").fit(X)
    assert model.inertia_ == 0
