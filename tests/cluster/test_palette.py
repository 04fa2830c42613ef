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
