"""Tests of bigquant.cluster.palette: the integer palette refined on the histogram."""

from __future__ import annotations

import numpy as np
import pytest

from bigquant.cluster import palette as palette_module
from bigquant.cluster.histogram import colour_histogram
from bigquant.cluster.palette import palette_error, refine_integer_palette


@pytest.mark.parametrize("k", [8, 48, 96])
def test_bounded_refinement_equals_full_scans(monkeypatch, rgb_image, k):
    """Bounded steps (32+ colours) give the palette, error and labels of full scans at every pass."""
    hist = colour_histogram(rgb_image)
    rng = np.random.default_rng(0)
    centers = hist.colours[rng.choice(hist.n_colours, k, replace=False)].astype(np.float64) + 0.4
    got = refine_integer_palette(hist.colours, hist.counts, centers, lo=0, hi=255, return_labels=True)
    monkeypatch.setattr(palette_module, "_BOUNDED_MIN_COLOURS", 10**9)  # full scans only
    want = refine_integer_palette(hist.colours, hist.counts, centers, lo=0, hi=255, return_labels=True)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]
    np.testing.assert_array_equal(got[2], want[2])
    error, labels = palette_error(hist.colours, hist.counts, got[0])
    assert error == got[1]
    np.testing.assert_array_equal(labels, got[2])


def _labels_then_sums(colours, counts, centers, lo, hi):
    """The refinement as first written: full labels, then a weighted bincount per channel, per pass."""
    X, w = colours.astype(np.float64), counts.astype(np.float64)
    pal = np.clip(np.rint(centers), lo, hi)
    total, labels = palette_error(X, w, pal)
    for _ in range(50):
        weight = np.bincount(labels, weights=w, minlength=len(pal))
        sums = np.stack([np.bincount(labels, weights=w * X[:, c], minlength=len(pal)) for c in range(X.shape[1])], 1)
        new = pal.copy()
        new[weight > 0] = np.clip(np.rint(sums[weight > 0] / weight[weight > 0, None]), lo, hi)
        new_total, new_labels = palette_error(X, w, new)
        if new_total >= total:
            break
        pal, total, labels = new, new_total, new_labels
    return pal, total, labels


@pytest.mark.parametrize("n_channels", [1, 3])
def test_small_palettes_refine_as_labels_then_sums(monkeypatch, n_channels):
    """Fused label-and-sum passes split over threads take the very steps of the first loop."""
    monkeypatch.setattr(palette_module, "n_threads", lambda: 3)
    rng = np.random.default_rng(4)
    colours = np.unique(rng.integers(0, 4096, (400_000, n_channels)), axis=0).astype(np.uint16)
    counts = rng.integers(1, 1000, len(colours))
    centers = rng.uniform(0, 4095, (7, n_channels))
    got = refine_integer_palette(colours, counts, centers, lo=0, hi=4095, return_labels=True)
    want = _labels_then_sums(colours, counts, centers, 0, 4095)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]
    np.testing.assert_array_equal(got[2], want[2])
    assert not np.array_equal(want[0], np.clip(np.rint(centers), 0, 4095))  # some passes were taken
