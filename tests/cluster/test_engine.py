"""Tests of the engine's Lloyd runs and search.

The whole-run Lloyd kernel against the step-by-step loop, the coarse search's
determinism and quality, and the client-side allocator tuning.
"""

from __future__ import annotations

import ctypes
import warnings

import numpy as np
import pytest

from bigquant import KMeans, colour_histogram, kernels
from bigquant.cluster.init import kmeans_plusplus
from bigquant.cluster.lloyd import lloyd
from bigquant.cluster.points import BoundedPoints
from bigquant.cluster.search import COARSE_MIN_COLOURS, default_chains, search, uses_coarse_search


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


def test_allocator_is_tuned_once_where_asked(monkeypatch):
    import bigquant.cluster.allocator as allocator

    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setenv("BIGQUANT_TUNE_MALLOC", "0")
    assert allocator.tune_allocator() is False
    assert allocator.tune_allocator() is False  # settled for the process
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.delenv("BIGQUANT_TUNE_MALLOC")
    expected = allocator.is_glibc()  # glibc has mallopt; musl, macOS and Windows are left alone
    assert allocator.tune_allocator() is expected
    assert allocator._tuned is expected
    assert allocator.release_freed_memory() is expected


def test_fit_leaves_the_callers_allocator_alone(monkeypatch, many_colours):
    import bigquant.cluster.allocator as allocator

    calls = []
    monkeypatch.setattr(allocator, "_libc", lambda: calls.append("libc"))
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.delenv("BIGQUANT_TUNE_MALLOC", raising=False)
    KMeans(4, random_state=0).fit(many_colours)
    quantized = KMeans(4, random_state=0, strategy="pixels").fit(many_colours.reshape(-1, 3))
    assert quantized.n_iter_ >= 1
    assert allocator._tuned is None and calls == []  # not even looked at
    assert allocator.release_freed_memory() is False and calls == []
    # the explicit opt-in
    monkeypatch.setattr(allocator, "_libc", lambda: calls.append("libc") or ctypes.CDLL(None))
    monkeypatch.setenv("BIGQUANT_TUNE_MALLOC", "1")
    KMeans(4, random_state=0).fit(many_colours)
    assert allocator._tuned is allocator.is_glibc()
    assert calls == (["libc"] if allocator.is_glibc() else [])


def test_allocator_without_mallopt_is_left_alone(monkeypatch):
    """musl (and other C libraries) have no mallopt: nothing is assumed."""
    import bigquant.cluster.allocator as allocator

    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setattr(allocator, "is_glibc", lambda: True)
    monkeypatch.setattr(allocator, "_libc", lambda: object())  # a libc exposing neither function
    monkeypatch.delenv("BIGQUANT_TUNE_MALLOC", raising=False)
    assert allocator.tune_allocator() is False
    assert allocator.release_freed_memory() is False


def test_allocator_is_left_alone_inside_a_dask_worker(local_cluster, monkeypatch):
    import bigquant.cluster.allocator as allocator

    monkeypatch.setattr(allocator, "_tuned", None)
    assert local_cluster.submit(allocator.tune_allocator, pure=False).result() is False
