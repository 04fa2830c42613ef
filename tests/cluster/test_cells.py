"""Nearest centres through cells of the value range: the labels and Lloyd sums of a full scan, bit for bit."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from bigquant import KMeans, kernels
from bigquant.cluster import cells as cells_module
from bigquant.cluster import points as points_module
from bigquant.cluster.cells import CellGrid
from bigquant.cluster.fixed import FixedPalette
from bigquant.cluster.grid import DISTINCT_MAX, value_grid


def _data(kind: str, n: int, bands: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uint16":
        return rng.integers(0, 65536, (n, bands)).astype(np.uint16)
    if kind == "uint16-narrow":  # 12-bit data in 16 bits
        return rng.integers(100, 4096, (n, bands)).astype(np.uint16)
    if kind == "int16":
        return rng.integers(-32768, 32768, (n, bands)).astype(np.int16)
    if kind == "uint8":
        return rng.integers(0, 256, (n, bands)).astype(np.uint8)
    if kind == "float32":
        return rng.normal(0.0, 1.0, (n, bands)).astype(np.float32)
    return rng.uniform(-1e3, 1e3, (n, bands))


def _check_same(X: np.ndarray, centers: np.ndarray, grid: CellGrid, weights: np.ndarray | None = None) -> None:
    expected = kernels.assign_labels(X, centers, np.int32)[0]
    np.testing.assert_array_equal(grid.labels(X, centers, np.int32), expected)
    for a, b in zip(grid.partial_sums(X, centers, weights), kernels.partial_sums(X, centers, weights)):
        np.testing.assert_array_equal(a, b)  # bit-identical sums, counts, inertia


@pytest.mark.parametrize("bands", [1, 3, 4])
@pytest.mark.parametrize("kind", ["uint16", "uint16-narrow", "int16", "float32", "float64"])
def test_labels_and_sums_are_the_full_scans(kind, bands):
    rng = np.random.default_rng(bands)
    X = _data(kind, 60_000, bands, rng)
    for k in (2, 16, 40):
        centers = X[rng.choice(X.shape[0], k, replace=False)].astype(np.float64)
        grid = CellGrid.over(X.min(axis=0), X.max(axis=0), k)
        assert grid is not None
        assert grid.certain_fraction(centers) > 0.05  # cells that take their label at once
        _check_same(X, centers, grid)
        _check_same(X, centers, grid, rng.random(X.shape[0]).astype(np.float32))


def test_ties_go_to_the_lowest_index_as_in_the_full_scan():
    """Repeated centres, centres mirrored about cell boundaries, values exactly half-way between two."""
    rng = np.random.default_rng(7)
    X = rng.integers(0, 65536, (50_000, 3)).astype(np.uint16)
    X[:4096] = (np.arange(4096)[:, None] * 16).astype(np.uint16)  # on every cell boundary of a 64-cell band
    centers = np.array([[1000.0, 2000.0, 3000.0], [1000.0, 2000.0, 3000.0],  # a copy: never labelled
                        [0.0, 0.0, 0.0], [2048.0, 2048.0, 2048.0],  # 1024 is half-way: a tie
                        [65535.0, 0.0, 65535.0], [32768.0, 32768.0, 32768.0], [32767.0, 32767.0, 32767.0]])
    grid = CellGrid.over(X.min(axis=0), X.max(axis=0), len(centers))
    _check_same(X, centers, grid)
    X_tie = np.array([[1024, 1024, 1024]], np.uint16)
    assert grid.labels(X_tie, centers)[0] == kernels.assign_labels(X_tie, centers)[0][0] == 2
    assert 1 not in grid.labels(X, centers)


def test_values_outside_the_grid_are_scanned_in_full():
    """A grid over part of the range (another image, a probe): the values outside still get their nearest centre."""
    rng = np.random.default_rng(3)
    X = rng.normal(0.0, 10.0, (40_000, 3))
    X[:10] = [np.inf, 0.0, 0.0]  # not finite: what the full scan gives
    X[10:20] = np.nan
    centers = rng.normal(0.0, 5.0, (12, 3))
    grid = CellGrid.over(np.full(3, -1.0), np.full(3, 1.0), 12)
    np.testing.assert_array_equal(grid.labels(X, centers), kernels.assign_labels(X, centers, np.int32)[0])
    finite = X[20:]
    _check_same(finite, centers, grid)


def test_no_grid_for_a_range_that_is_not_finite_or_too_many_bands():
    assert CellGrid.over([0.0, np.nan], [1.0, 2.0], 4) is None
    assert CellGrid.over([0.0, -np.inf], [1.0, 2.0], 4) is None
    assert CellGrid.over(np.zeros(12), np.ones(12), 4) is None  # one bit a band: mostly candidates
    one = CellGrid.over([5.0, 5.0], [5.0, 5.0], 3)  # a single value
    X = np.full((10, 2), 5.0)
    _check_same(X, np.array([[5.0, 5.0], [5.0, 5.0], [4.0, 6.0]]), one)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(("dtype", "bands"), [("uint16", 3), ("uint16", 4), ("float32", 3)])
def test_grid_fit_is_the_one_without_cells(monkeypatch, dtype, bands, masked):
    """The grid strategy through cells: the centres, inertia and labels of its full scans (and the palette's)."""
    rng = np.random.default_rng(11)
    base = rng.integers(0, 60000, (8, bands)).astype(np.float64)
    img = base[rng.integers(0, 8, (160, 200))] + rng.normal(0, 900, (160, 200, bands))
    img = np.clip(img, 0, 65535).astype(dtype)
    valid = rng.random((160, 200)) > 0.2 if masked else None
    X = da.from_array(img, chunks=(64, 64, bands))
    w = None if valid is None else da.from_array(valid, chunks=(64, 64))

    def fit():
        model = KMeans(12, strategy="grid", random_state=0).fit(X, sample_weight=w)
        palette = model.palette()[0]
        mapped = FixedPalette(palette).fit(X, cells=model.cell_grid()).labels_.compute()
        return model, model.labels_.compute(), mapped

    model, labels, mapped = fit()
    assert model.cell_grid() is not None
    monkeypatch.setattr(cells_module.CellGrid, "over", classmethod(lambda cls, *a, **k: None))
    plain, plain_labels, plain_mapped = fit()
    assert plain.cell_grid() is None
    np.testing.assert_array_equal(model.cluster_centers_, plain.cluster_centers_)
    assert model.inertia_ == plain.inertia_ and model.n_iter_ == plain.n_iter_
    np.testing.assert_array_equal(labels, plain_labels)
    np.testing.assert_array_equal(mapped, plain_mapped)
    np.testing.assert_array_equal(labels, kernels.assign_labels(img.reshape(-1, bands), model.cluster_centers_)[0]
                                  .reshape(160, 200))


@pytest.fixture
def pixel_passes(monkeypatch):
    """Passes of Lloyd's iteration over the pixels (the point sets of pixels, not the grid's values)."""
    count = {"n": 0}
    for cls in (points_module.DaskPoints, points_module.InMemoryPoints):
        original = cls.partial_sums

        def counted(self, *args, _original=original, **kwargs):
            count["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "partial_sums", counted)
    return count


def _few_values(n_values: int, bands: int = 3, shape=(300, 320)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n_values)
    values = np.unique(rng.integers(0, 65536, (n_values, bands)).astype(np.uint16), axis=0)
    return values[rng.integers(0, values.shape[0], shape)], values


@pytest.mark.parametrize("bands", [3, 4])
def test_few_values_are_counted_exactly_by_the_grid_pass(bands):
    image, values = _few_values(700, bands)
    X = da.from_array(image, chunks=(100, 100, bands))
    grid, _ = value_grid(X)
    seen, counts = np.unique(image.reshape(-1, bands), axis=0, return_counts=True)
    assert grid.values is not None
    np.testing.assert_array_equal(grid.values, seen.astype(np.float64))  # in code order: first band highest
    np.testing.assert_array_equal(grid.value_counts, counts)
    many, _ = value_grid(da.from_array(_few_values(DISTINCT_MAX + 500, bands, (400, 400))[0],
                                       chunks=(100, 100, bands)))
    assert many.values is None  # past the limit: not counted


def test_few_values_end_the_fit_in_the_grid_pass(monkeypatch, pixel_passes):
    """A few thousand distinct values: no Lloyd pass over the pixels; the centres and labels of the pixel passes."""
    from bigquant.cluster import grid as grid_module

    image, _ = _few_values(2000)
    X = da.from_array(image, chunks=(100, 100, 3))
    model = KMeans(16, strategy="grid", random_state=0).fit(X)
    assert pixel_passes["n"] == 0
    labels = model.labels_.compute()
    np.testing.assert_array_equal(labels, kernels.assign_labels(image.reshape(-1, 3), model.cluster_centers_)[0]
                                  .reshape(image.shape[:2]))
    # the same fit without the count of the values: passes over the pixels, the same centres
    monkeypatch.setattr(grid_module, "_count_distinct", lambda X, valid: None)
    plain = KMeans(16, strategy="grid", random_state=0).fit(X)
    assert pixel_passes["n"] >= 1
    np.testing.assert_array_equal(model.cluster_centers_, plain.cluster_centers_)
    np.testing.assert_array_equal(labels, plain.labels_.compute())
    assert model.inertia_ == pytest.approx(plain.inertia_, rel=1e-12)


@pytest.mark.parametrize("bands", [1, 3, 4])
@pytest.mark.parametrize("kind", ["uint16", "uint16-narrow", "uint8", "int16", "float32"])
def test_sums_and_labels_in_one_read_are_the_two_scans(kind, bands):
    """One look at each pixel: a Lloyd step's sums for the centres and the labels of their rounded palette,
    each bit for bit what the full scans give (values outside the grid included)."""
    rng = np.random.default_rng(20 + bands)
    X = _data(kind, 50_000, bands, rng)
    for k in (3, 16):
        centers = X[rng.choice(X.shape[0], k, replace=False)].astype(np.float64) + rng.uniform(-0.5, 0.5, (k, bands))
        palette = np.rint(centers)
        inner = np.sort(X, axis=0)[[500, -500]]  # a grid over part of the range: 2% of each band outside
        grid = CellGrid.over(inner[0], inner[1], k)
        (sums, counts, inertia), labels, label_counts = grid.sums_and_labels(X, centers, palette, np.uint8)
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, kernels.assign_labels(X, palette, np.int32)[0])
        np.testing.assert_array_equal(label_counts, np.bincount(labels, minlength=k))
        expected = kernels.partial_sums(X, centers, None)
        np.testing.assert_array_equal(sums, expected[0])
        np.testing.assert_array_equal(counts, expected[1])
        assert inertia == expected[2]  # the same additions in the same order


def test_sums_and_labels_in_one_read_break_ties_as_the_full_scans():
    """The fused kernel's rows scanned against every centre: repeated centres, values on cell boundaries and
    half-way between two centres take the lowest index, as the full scans do; sums and inertia bit for bit."""
    rng = np.random.default_rng(8)
    X = rng.integers(0, 65536, (70_000, 3)).astype(np.uint16)  # more rows than a flush of the packed sums
    X[:4096] = (np.arange(4096)[:, None] * 16).astype(np.uint16)
    X[4096:4200] = 1024  # half-way between centres 2 and 3
    centers = np.array([[1000.0, 2000.0, 3000.0], [1000.0, 2000.0, 3000.0], [0.0, 0.0, 0.0],
                        [2048.0, 2048.0, 2048.0], [65535.0, 0.0, 65535.0], [32768.0, 32768.0, 32768.0],
                        [32767.0, 32767.0, 32767.0]])
    palette = centers.copy()
    palette[5] = palette[6]  # a palette colour repeated: the lower index labels its pixels
    grid = CellGrid.over(X.min(axis=0), X.max(axis=0), len(centers))
    (sums, counts, inertia), labels, label_counts = grid.sums_and_labels(X, centers, palette, np.uint8)
    expected_labels = kernels.assign_labels(X, palette, np.int32)[0]
    np.testing.assert_array_equal(labels, expected_labels)
    assert (labels[4096:4200] == 2).all() and 6 not in labels and 1 not in labels
    np.testing.assert_array_equal(label_counts, np.bincount(expected_labels, minlength=len(palette)))
    expected = kernels.partial_sums(X, centers, None)
    np.testing.assert_array_equal(sums, expected[0])
    np.testing.assert_array_equal(counts, expected[1])
    assert inertia == expected[2]


def test_threads_missing_the_same_cell_table_wait_for_one_build(monkeypatch):
    """Threads that all find a table missing (a pass's first blocks at once) build it once, and all get it."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    X = _data("uint16", 4000, 3, rng)
    centers = X[:6].astype(np.float64) + 0.25
    grid = CellGrid.over(X.min(axis=0), X.max(axis=0), len(centers))
    built = []
    start = threading.Barrier(6)
    real = cells_module.cell_table

    def slow_build(*args):
        built.append(threading.get_ident())
        time.sleep(0.2)  # long enough for every thread to miss the cache meanwhile
        return real(*args)

    monkeypatch.setattr(cells_module, "cell_table", slow_build)

    def labels(_):
        start.wait()
        return grid.labels(X, centers)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(labels, range(6)))
    assert len(built) == 1, f"{len(built)} builds of one table"
    expected = kernels.assign_labels(X, centers, np.int32)[0]
    for got in results:
        np.testing.assert_array_equal(got, expected)
    assert not cells_module._building  # no lock left behind
