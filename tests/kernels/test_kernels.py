"""Tests of the numba kernels against plain references.

The radix-sorted histogram against ``np.unique``, the coarse colour sets against
``np.bincount``, the blocked scan against the per-point scan, the dense Lloyd run
against the bounded one, k-means++ and the swap moves.
"""

from __future__ import annotations

import numpy as np
import pytest

from bigquant import colour_histogram, kernels
from bigquant.cluster.init import kmeans_plusplus
from bigquant.cluster.lloyd import lloyd
from bigquant.cluster.points import BoundedPoints, InMemoryPoints
from bigquant.kernels import scans


# --------------------------------------------------------------------------- histogram


@pytest.mark.parametrize("n_rows", [1, 1000, 300_000])
def test_unique_colours_match_numpy(n_rows):
    rng = np.random.default_rng(n_rows)
    X = rng.integers(0, 50, (n_rows, 3)).astype(np.uint8)
    hist = colour_histogram(X)  # two threads and a merge above 2 x 65536 rows
    codes = kernels.encode_colours(X, 8)
    expected, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(hist.codes, expected)
    np.testing.assert_array_equal(hist.counts, counts)
    np.testing.assert_array_equal(hist.inverse, inverse)
    np.testing.assert_array_equal(hist.colours[hist.inverse], X)


def test_coarse_colours_are_weighted_bin_means(many_colours):
    hist = colour_histogram(many_colours)
    coarse = hist.coarse(3)
    X = hist.colours.astype(np.int64)
    w = hist.counts.astype(np.float64)
    code = ((X[:, 0] >> 3) << 10) | ((X[:, 1] >> 3) << 5) | (X[:, 2] >> 3)
    bins, inverse = np.unique(code, return_inverse=True)
    weight = np.bincount(inverse, weights=w)
    means = np.stack([np.bincount(inverse, weights=w * X[:, c]) for c in range(3)], 1) / weight[:, None]
    np.testing.assert_array_equal(coarse.weights, weight)
    np.testing.assert_allclose(coarse.X, means, rtol=1e-12)
    assert coarse.weights.sum() == many_colours.shape[0] * many_colours.shape[1]


@pytest.mark.parametrize("first_channel", ["spread", "constant"])
def test_two_range_histogram_matches_one_thread(first_channel):
    # the two code ranges split at a sampled median; a constant first channel puts every row in one
    rng = np.random.default_rng(11)
    X = rng.integers(0, 256, (200_000, 3)).astype(np.uint8)
    if first_channel == "constant":
        X[:, 0] = 77
    alone = kernels.unique_colours(X, 8)
    both = kernels.unique_colours_parallel(X, 8, lambda f, items: [f(x) for x in items])
    for a, b in zip(alone, both):
        np.testing.assert_array_equal(a, b)


def test_coarse_sets_are_the_same_bits_however_built(many_colours):
    hist = colour_histogram(many_colours)
    direct = kernels.coarse_bins(hist.colours, None, hist.counts, 3, 5)
    via_six = kernels.coarse_bins(*hist.coarse_sums(2), 1, 5)
    for a, b in zip(direct, via_six):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(hist.coarse_sums(3), direct):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- scans


@pytest.mark.parametrize("n_rows", [1, 127, 1000])
@pytest.mark.parametrize("k", [1, 3, 4, 9, 33])
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_blocked_scan_matches_the_per_point_scan(n_rows, k, dtype):
    rng = np.random.default_rng(n_rows * k)
    X = rng.integers(0, 256, (n_rows, 3)).astype(dtype)
    X[: n_rows // 2] = X[0]  # ties between points, and (with repeated centres) between centres
    centers = rng.uniform(0, 255, (k, 3))
    centers[k // 2] = centers[0]
    centers_t = np.ascontiguousarray(centers.T)
    dist = np.empty(k)
    expected = [scans._nearest_two(X, i, centers_t, dist) for i in range(n_rows)]
    columns = kernels.as_columns(X)
    for rows in (None, np.arange(n_rows)[::-1].copy()):
        order = np.arange(n_rows) if rows is None else rows
        labels, best, second = np.empty(len(order), np.int64), np.empty(len(order)), np.empty(len(order))
        scans._scan_two(X, columns, np.empty(0, np.int64) if rows is None else rows, rows is None, centers_t,
                        labels, best, second)
        assert [(int(a), b, c) for a, b, c in zip(labels, best, second)] == [expected[i] for i in order]


def test_dense_lloyd_matches_the_bounded_one(many_colours):
    hist = colour_histogram(many_colours)
    X, w = hist.colours, hist.counts
    for k in (2, 7, 20):
        centers0 = kmeans_plusplus(X.astype(float), w.astype(float), k, np.random.default_rng(k))
        dense, dense_inertia = kernels.lloyd_dense(X, kernels.as_columns(X), w, centers0, 300, 0.0)
        bounded = lloyd(BoundedPoints(X, w, n_parts=1), centers0, max_iter=300, tol=0.0)
        np.testing.assert_array_equal(dense, bounded.centers)  # integer sums: exact either way
        assert dense_inertia == pytest.approx(bounded.inertia, rel=1e-12)


# --------------------------------------------------------------------------- seeding and swaps


def test_kmeans_plusplus_picks_distinct_weighted_points():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3)) * 50
    w = rng.integers(0, 3, 500).astype(float)  # a third of the points weigh nothing
    centers = kmeans_plusplus(X, w, 20, np.random.default_rng(1))
    rows = [int(np.flatnonzero(np.all(X == c, axis=1))[0]) for c in centers]
    assert len(set(rows)) == 20
    assert np.all(w[rows] > 0)
    again = kmeans_plusplus(X, w, 20, np.random.default_rng(1))
    np.testing.assert_array_equal(centers, again)


def test_swaps_never_raise_the_inertia(many_colours):
    hist = colour_histogram(many_colours)
    coarse = hist.coarse(3, n_parts=1)
    rng = np.random.default_rng(5)
    for k in (4, 12, 30):
        centers, inertia, *_ = coarse.run(kmeans_plusplus(coarse.X, coarse.weights, k, rng), 300, 0.0)
        swapped, swapped_inertia = kernels.improve_by_swaps(
            coarse.X, coarse.weights, centers, inertia, rng.random((8, 4)), 300, 0.0, 8
        )
        assert swapped_inertia <= inertia
        direct = InMemoryPoints(coarse.X, coarse.weights).partial_sums(swapped)[2]
        assert direct == pytest.approx(swapped_inertia, rel=1e-9)


# --------------------------------------------------------------------------- Morton tables


def test_morton_table_takes_back_every_count():
    """Counts read back from the touched blocks only equal np.unique of the Morton codes,
    the first and last counters and block edges included; sparse histograms add up."""
    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, (200_000, 3), dtype=np.uint8)
    X[:5] = [[0, 0, 0], [255, 255, 255], [0, 0, 7], [0, 0, 8], [255, 255, 255]]
    X[5:2000] = X[7]  # one colour many times
    table = kernels.MortonTable()
    table.add(X[:120_000])
    table.add(X[120_000:])
    codes, counts = table.take()
    want_codes, want_counts = np.unique(kernels.encode_morton(X), return_counts=True)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(counts, want_counts)
    assert counts.dtype == np.uint32 and codes[0] == 0 and codes[-1] == (1 << 24) - 1
    merged = kernels.merge_counts([(codes[::2], counts[::2]), (codes[1::2], counts[1::2]), (codes, counts)])
    np.testing.assert_array_equal(merged[0], want_codes)
    np.testing.assert_array_equal(merged[1], 2 * want_counts)
    empty = kernels.MortonTable().take()
    assert empty[0].shape == (0,) and empty[1].shape == (0,)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_take_sum_reads_two_tables_added(dtype):
    """The non-zero sums of two counter tables, the first and last codes included, in their type."""
    rng = np.random.default_rng(4)
    a = np.zeros(1 << 12, dtype=dtype)
    b = np.zeros(1 << 12, dtype=dtype)
    a[rng.integers(0, 1 << 12, 900)] = rng.integers(1, 50, 900)
    b[rng.integers(0, 1 << 12, 700)] = rng.integers(1, 50, 700)
    a[0], b[-1] = 3, 2**31 if dtype == np.uint32 else 2**40
    codes, counts = kernels.take_sum(a, b)
    want = np.flatnonzero(a + b)
    np.testing.assert_array_equal(codes, want)
    np.testing.assert_array_equal(counts, (a + b)[want])
    assert codes.dtype == np.uint32 and counts.dtype == dtype
    none = kernels.take_sum(np.zeros(8, dtype), np.zeros(8, dtype))
    assert none[0].shape == (0,) and none[1].shape == (0,)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_count_indices_is_bincount(dtype):
    from bigquant.kernels.nbits import count_indices

    rng = np.random.default_rng(3)
    a = rng.integers(0, 17, (37, 53)).astype(dtype)
    a[:, :20] = 5  # a long run of one index
    view = a[3:30, 7:50]  # not contiguous
    for arr in (a, view):
        assert count_indices(arr, 17).tolist() == np.bincount(arr.ravel(), minlength=17).tolist()
    # values past the length are not counted
    assert count_indices(a, 6).tolist() == np.bincount(a.ravel(), minlength=17)[:6].tolist()
