"""Tests of the colour octree: its sums, labels and Lloyd runs are a full scan's, bit for bit.

The kernel's sums and labels against :func:`bigquant.kernels.partial_sums` and
:func:`bigquant.kernels.assign_labels` (ties, centres on colours, outside the
cube, many centres), :class:`OctreePoints` against :class:`BoundedPoints`
(whole Lloyd runs, empty clusters, moments), the palette refinement with and
without it, and the fit that uses it.
"""

from __future__ import annotations

import numpy as np
import pytest

import bigquant.cluster.octree as octree_mod
from bigquant import KMeans, colour_histogram, kernels
from bigquant.cluster.histogram import ColourHistogram
from bigquant.cluster.lloyd import lloyd
from bigquant.cluster.octree import ColourOctree, OctreePoints
from bigquant.cluster.palette import refine_integer_palette
from bigquant.cluster.points import BoundedPoints
from bigquant.kernels.octree import build_octree, octree_labels, octree_sums


@pytest.fixture(scope="module")
def histogram():
    """About 200 k distinct colours of a photo-like spread, with uneven counts."""
    rng = np.random.default_rng(5)
    n = 400_000
    base = rng.normal([120, 100, 90], [50, 40, 45], (n, 3))
    pixels = np.clip(np.rint(base), 0, 255).astype(np.uint8)
    return colour_histogram(pixels)


def _centre_sets(colours: np.ndarray) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    picked = colours[rng.choice(len(colours), 16, replace=False)].astype(np.float64)
    return [
        rng.uniform(0, 255, (16, 3)),
        picked,  # centres on colours: distance 0
        np.array([[10.0, 10, 10], [12, 10, 10], [11, 200, 3]]),  # colours at x = 11 tie: the lowest index wins
        np.repeat(picked[:4], 3, axis=0),  # duplicated centres: ties everywhere
        np.array([[-500.0, 0, 0], [900, 900, 900], [128, 128, 128]]),  # outside the cube
        np.array([[100.0, 100, 100]]),  # one centre
        rng.uniform(0, 255, (40, 3)),
        np.rint(rng.uniform(0, 255, (16, 3))) + 0.5,  # half-integers: many exact ties
    ]


def test_sums_and_labels_are_a_full_scans(histogram):
    tree = build_octree(histogram.colours, histogram.counts, 2, 6)
    w = histogram.counts.astype(np.float64)
    for centers in _centre_sets(histogram.colours):
        sums, counts, sqnorm, scanned = octree_sums(tree, centers)
        ref_sums, ref_counts, ref_inertia = kernels.partial_sums(histogram.colours, centers, w)
        np.testing.assert_array_equal(sums, ref_sums)
        np.testing.assert_array_equal(counts, ref_counts)
        labels = np.full(len(w), -1, np.int64)
        octree_labels(tree, centers, labels)
        ref_labels, _ = kernels.assign_labels(histogram.colours, centers, np.int64)
        np.testing.assert_array_equal(labels, ref_labels)
        X = histogram.colours.astype(np.float64)
        np.testing.assert_allclose(sqnorm, np.bincount(ref_labels, weights=w * (X * X).sum(1), minlength=len(centers)))
        assert scanned <= len(w)


def test_most_colours_are_not_scanned(histogram):
    tree = build_octree(histogram.colours, histogram.counts, 2, 6)
    centers = histogram.colours[:: len(histogram.colours) // 16][:16].astype(np.float64)
    *_, scanned = octree_sums(tree, centers)
    assert scanned < 0.5 * len(histogram.colours)


def test_repeated_colours_build_no_octree():
    colours = np.array([[1, 2, 3], [4, 5, 6], [1, 2, 3]], dtype=np.uint8)
    assert build_octree(colours, np.ones(3, np.int64), 2, 6) is None
    with pytest.raises(ValueError, match="distinct"):
        ColourOctree(colours, np.ones(3, np.int64))


@pytest.mark.filterwarnings("ignore:Lloyd's iteration did not converge")
def test_lloyd_runs_are_the_bounded_runs(histogram):
    octree = ColourOctree(histogram.colours, histogram.counts)
    fast = OctreePoints(histogram.colours, histogram.counts, octree)
    slow = BoundedPoints(histogram.colours, histogram.counts)
    for a, b in zip(fast.moments(), slow.moments()):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(1)
    starts = [
        histogram.colours[rng.choice(len(histogram.colours), 12, replace=False)].astype(np.float64),
        # a centre no colour is nearest: its cluster empties and takes the farthest colour
        np.vstack([rng.uniform(60, 180, (7, 3)), [[255.0, 0, 255]]]),
    ]
    for start in starts:
        seen_fast, seen_slow = [], []
        one = lloyd(fast, start, max_iter=60, tol=0.05, callback=lambda *a: seen_fast.append(a))
        two = lloyd(slow, start, max_iter=60, tol=0.05, callback=lambda *a: seen_slow.append(a),
                    on_iteration=lambda *a: None)  # the step-by-step loop
        np.testing.assert_array_equal(one.centers, two.centers)
        np.testing.assert_array_equal(one.labels, two.labels)
        assert one.inertia == two.inertia and one.n_iter == two.n_iter
        assert seen_fast == seen_slow
    assert not np.any(np.all(one.centers == [255.0, 0, 255], axis=1))  # the empty cluster was refilled


@pytest.mark.parametrize("k", [16, 40])
def test_palette_refinement_through_the_octree_is_the_same(histogram, k):
    rng = np.random.default_rng(k)
    centers = rng.uniform(20, 230, (k, 3))
    octree = ColourOctree(histogram.colours, histogram.counts)
    with_tree = refine_integer_palette(histogram.colours, histogram.counts, centers, lo=0, hi=255,
                                       return_labels=True, octree=octree)
    without = refine_integer_palette(histogram.colours, histogram.counts, centers, lo=0, hi=255,
                                     return_labels=True)
    np.testing.assert_array_equal(with_tree[0], without[0])
    assert with_tree[1] == without[1]
    np.testing.assert_array_equal(with_tree[2], without[2])


def test_large_rgb_histograms_step_through_the_octree(monkeypatch, histogram):
    monkeypatch.setattr(octree_mod, "OCTREE_MIN_COLOURS", 1000)
    fresh = colour_histogram(histogram.colours.repeat(2, axis=0))  # a new cache; twice each colour
    assert isinstance(fresh.points(), OctreePoints)
    grey = colour_histogram(np.arange(2000, dtype=np.uint16).reshape(-1, 1))
    assert grey.octree() is None and not isinstance(grey.points(), OctreePoints)
    # a histogram made by hand that repeats its colours keeps the bounded steps
    twice = ColourHistogram(np.concatenate([fresh.colours, fresh.colours[:5]]),
                            np.concatenate([fresh.counts, fresh.counts[:5]]),
                            np.concatenate([fresh.codes, fresh.codes[:5]]), 8)
    assert twice.octree() is None and isinstance(twice.points(), BoundedPoints)


def test_fit_and_palette_are_the_same_with_and_without_the_octree(monkeypatch):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:300, 0:300]
    img = np.stack([xx * 0.8, yy * 0.8, (xx + yy) * 0.4], axis=-1) + rng.normal(0, 14, (300, 300, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    fits = []
    for threshold in (1000, 1 << 30):
        monkeypatch.setattr(octree_mod, "OCTREE_MIN_COLOURS", threshold)
        model = KMeans(12, random_state=0).fit(img)
        assert isinstance(model.histogram_.points(), OctreePoints) == (threshold == 1000)
        fits.append((model, model.palette()))
    (a, (pal_a, err_a)), (b, (pal_b, err_b)) = fits
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_
    np.testing.assert_array_equal(pal_a, pal_b)
    assert err_a == err_b
    np.testing.assert_array_equal(a.palette_labels(), b.palette_labels())


def test_walks_of_the_top_cells_in_parts_add_up_to_the_whole(histogram):
    from bigquant.kernels.octree import top_parts

    tree = build_octree(histogram.colours, histogram.counts, 2, 6)
    for n_parts in (2, 3, 7):
        parts = top_parts(tree, n_parts)
        assert parts[0][0] == 0 and parts[-1][1] == tree.offsets[1] and len(parts) <= n_parts
        assert all(a[1] == b[0] for a, b in zip(parts[:-1], parts[1:]))
        for centers in _centre_sets(histogram.colours)[:3]:
            whole = octree_sums(tree, centers)
            found = [octree_sums(tree, centers, tops) for tops in parts]
            for i in range(3):
                np.testing.assert_array_equal(np.sum([f[i] for f in found], axis=0), whole[i])
            assert sum(f[3] for f in found) == whole[3]
            labels = np.full(len(histogram.colours), -1, np.int64)
            for tops in parts:
                octree_labels(tree, centers, labels, tops)
            np.testing.assert_array_equal(labels, kernels.assign_labels(histogram.colours, centers, np.int64)[0])
    # the octree of a fit walks in parts on the threads: the same numbers as one walk
    octree = ColourOctree(histogram.colours, histogram.counts)
    centers = _centre_sets(histogram.colours)[0]
    for got, want in zip(octree.sums(centers), octree_sums(tree, centers)[:3]):
        np.testing.assert_array_equal(got, want)
