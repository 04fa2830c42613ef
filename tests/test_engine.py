"""Tests of the engine's compiled pieces against plain references.

The whole-run Lloyd kernel against the step-by-step loop, the radix-sorted
histogram against ``np.unique``, the coarse colour sets against ``np.bincount``,
k-means++ and the swap moves, and the coarse search's determinism and quality.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bigquant import KMeans, colour_histogram, kernels
from bigquant.kernels import scans
from bigquant.cluster.init import kmeans_plusplus
from bigquant.cluster.lloyd import lloyd
from bigquant.cluster.points import BoundedPoints, InMemoryPoints
from bigquant.cluster.search import (
    COARSE_MIN_COLOURS,
    default_chains,
    search,
    uses_coarse_search,
)


@pytest.fixture
def many_colours() -> np.ndarray:
    """A 240 x 240 photo-like image with more colours than the coarse-search threshold."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:240, 0:240]
    img = np.stack([xx, yy, (xx + 2 * yy) // 3], axis=-1) + rng.normal(0, 14, (240, 240, 3))
    img[60:120, 30:90] = [200, 40, 40] + rng.normal(0, 8, (60, 60, 3))  # a red patch
    return np.clip(img, 0, 255).astype(np.uint8)


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
        scans._scan_two(X, columns, rows, centers_t, labels, best, second)
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


# --------------------------------------------------------------------------- Lloyd in one call


@pytest.mark.parametrize("k", [1, 5, 24])
def test_whole_run_kernel_equals_step_by_step_loop(many_colours, k):
    hist = colour_histogram(many_colours)
    rng = np.random.default_rng(k)
    centers0 = kmeans_plusplus(hist.colours.astype(float), hist.counts.astype(float), k, rng)
    one_call = lloyd(BoundedPoints(hist.colours, hist.counts, n_parts=1), centers0, max_iter=300, tol=0.0)
    steps = []
    stepwise = lloyd(BoundedPoints(hist.colours, hist.counts), centers0, max_iter=300, tol=0.0,
                     callback=lambda i, inertia, shift: steps.append(i))
    assert steps  # the callback forces the per-iteration loop
    np.testing.assert_array_equal(one_call.centers, stepwise.centers)
    assert one_call.n_iter == stepwise.n_iter
    assert one_call.inertia == pytest.approx(stepwise.inertia, rel=1e-12)
    labels, _ = kernels.assign_labels(hist.colours, one_call.centers, np.int64)
    np.testing.assert_array_equal(one_call.labels, labels)


def test_whole_run_kernel_relocates_empty_clusters_as_the_loop_does():
    # two far groups and three centres stuck on one side: a cluster empties
    X = np.array([[0, 0, 0]] * 3 + [[1, 1, 1]] * 2 + [[200, 200, 200], [210, 210, 210]], dtype=np.uint8)
    hist = colour_histogram(X)
    centers0 = np.array([[0.0, 0, 0], [1, 1, 1], [255, 0, 255]])
    one_call = lloyd(BoundedPoints(hist.colours, hist.counts, n_parts=1), centers0, max_iter=50, tol=0.0)
    stepwise = lloyd(BoundedPoints(hist.colours, hist.counts), centers0, max_iter=50, tol=0.0,
                     callback=lambda *a: None)
    np.testing.assert_array_equal(one_call.centers, stepwise.centers)
    assert not np.any(np.all(one_call.centers == [255, 0, 255], axis=1))


def test_not_converging_warns_once_from_the_kernel(many_colours):
    hist = colour_histogram(many_colours)
    centers0 = hist.colours[:6].astype(float)
    with pytest.warns(Warning, match="did not converge within max_iter=2"):
        result = lloyd(BoundedPoints(hist.colours, hist.counts, n_parts=1), centers0, max_iter=2, tol=0.0)
    assert result.n_iter == 2 and not result.converged


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


# --------------------------------------------------------------------------- the search


def test_search_is_deterministic_and_thread_independent(many_colours):
    hist = colour_histogram(many_colours)
    assert uses_coarse_search(hist) and hist.n_colours > COARSE_MIN_COLOURS
    runs = [
        search(hist, 10, n_chains=default_chains(1), tol=1e-3, max_iter=300,
               rng=np.random.default_rng(7), seeder=kmeans_plusplus, parallel=parallel)
        for parallel in (True, False, True)
    ]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.start, runs[0].start)
        np.testing.assert_array_equal(other.fine.centers, runs[0].fine.centers)
    # the kept run is an exact Lloyd fixed point from its start
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = lloyd(hist.points(), runs[0].start, max_iter=300, tol=1e-3, callback=lambda *a: None)
    np.testing.assert_array_equal(again.centers, runs[0].fine.centers)


def test_search_effort_does_not_depend_on_the_core_count(monkeypatch, many_colours):
    import bigquant.cluster.points as points_mod
    import bigquant.cluster.search as search_mod

    two = KMeans(7, random_state=3).fit(many_colours)
    monkeypatch.setattr(points_mod, "n_threads", lambda: 8)
    monkeypatch.setattr(search_mod, "n_threads", lambda: 8)
    assert default_chains(1) == 2 and default_chains(3) == 6
    eight = KMeans(7, random_state=3).fit(many_colours)
    np.testing.assert_array_equal(two.cluster_centers_, eight.cluster_centers_)


def test_fit_with_a_callback_gives_the_same_palette(many_colours):
    plain = KMeans(9, random_state=2).fit(many_colours)
    seen = []
    watched = KMeans(9, random_state=2, callback=lambda i, inertia, shift: seen.append(inertia)).fit(many_colours)
    np.testing.assert_array_equal(plain.cluster_centers_, watched.cluster_centers_)
    np.testing.assert_array_equal(plain.labels_, watched.labels_)
    assert seen and plain.n_iter_ == watched.n_iter_ == len(seen)


@pytest.mark.parametrize("k", [8, 24])
def test_search_is_at_least_as_good_as_scikit_learn_best_of_five(many_colours, k):
    sklearn = pytest.importorskip("sklearn.cluster")
    X = many_colours.reshape(-1, 3)
    ours = KMeans(k, random_state=0).fit(many_colours)
    theirs = sklearn.KMeans(k, n_init=5, random_state=0).fit(X.astype(float))
    assert ours.inertia_ <= 1.005 * theirs.inertia_
    # and the reported inertia is the true one of the labels
    d = ((X - ours.cluster_centers_[ours.labels_.reshape(-1)]) ** 2).sum()
    assert ours.inertia_ == pytest.approx(d, rel=1e-9)


# --------------------------------------------------------------------------- allocator


def test_allocator_is_tuned_once_in_the_client(monkeypatch):
    import sys

    import bigquant.cluster.allocator as allocator

    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setenv("BIGQUANT_TUNE_MALLOC", "0")
    assert allocator.tune_allocator() is False
    assert allocator.tune_allocator() is False  # settled for the process
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.delenv("BIGQUANT_TUNE_MALLOC")
    expected = sys.platform.startswith("linux")  # glibc here; elsewhere it is left alone
    assert allocator.tune_allocator() is expected
    assert allocator._tuned is expected


def test_allocator_is_left_alone_inside_a_dask_worker(local_cluster, monkeypatch):
    import bigquant.cluster.allocator as allocator

    monkeypatch.setattr(allocator, "_tuned", None)
    assert local_cluster.submit(allocator.tune_allocator, pure=False).result() is False
