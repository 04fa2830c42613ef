"""Tests of bigquant.sweep: the per-k histogram fit and the k-sweep runner."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from bigquant.cluster.histogram import colour_histogram
from bigquant.errors import InvalidInputError, InvalidParameterError
from bigquant.pipeline.sweep import (
    SweepResult,
    elbow,
    fit_histogram,
    parse_ks,
    read_rows,
    sweep,
)
from tests.support.oracle import squared_error

# the module (``bigquant.sweep`` is also the function, re-exported by the package)
sweep_mod = importlib.import_module("bigquant.pipeline.sweep")


@pytest.fixture
def photo() -> np.ndarray:
    """A small photo-like uint8 RGB image with thousands of colours."""
    from bigquant.io.sample import make_sample_image

    return make_sample_image((96, 128), seed=3)


# --------------------------------------------------------------------------- parse / elbow


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("2:10:2", [2, 4, 6, 8, 10]), ("3:5", [3, 4, 5]), ("8,2,4,2", [2, 4, 8]), ([5, 1], [1, 5]), ("7", [7])],
)
def test_parse_ks(spec, expected):
    assert parse_ks(spec) == expected


@pytest.mark.parametrize("spec", ["", "a:b", "2:10:0", "0:4", "1:2:3:4", "2,x", [0, 2]])
def test_parse_ks_rejects(spec):
    with pytest.raises(InvalidParameterError, match="ks="):
        parse_ks(spec)


def test_elbow_toy_curve():
    assert elbow([1, 2, 3, 4, 5, 6], [100, 40, 20, 15, 12, 10]) == 3
    assert elbow([2, 4], [10, 5]) is None
    assert elbow([1, 2, 3], [5, 5, 5]) == 1


# --------------------------------------------------------------------------- fit_histogram


def test_fit_histogram_cost_is_the_quantized_image_error(photo):
    hist = colour_histogram(photo)
    fit = fit_histogram(hist, 8, random_state=0)
    assert fit.palette.dtype == np.uint8 and fit.palette.shape == (8, 3)
    pixels = photo.reshape(-1, 3).astype(np.int64)
    d = ((pixels[:, None, :] - fit.palette[None].astype(np.int64)) ** 2).sum(-1)
    # every pixel takes its nearest palette colour: the error of the quantized image
    assert fit.cost == int(d.min(axis=1).sum())
    # no worse than the walkthrough's cast of the float centres (truncation)
    truncated = np.clip(fit.centers, 0, 255).astype(np.uint8).astype(np.int64)
    labels = ((pixels[:, None, :] - fit.centers[None]) ** 2).sum(-1).argmin(axis=1)
    assert fit.cost <= int(((pixels - truncated[labels]) ** 2).sum())
    np.testing.assert_allclose(fit.inertia, ((pixels - fit.centers[labels]) ** 2).sum(), rtol=1e-9)


def test_fit_histogram_more_inits_not_worse_and_seeded(photo):
    hist = colour_histogram(photo)
    one = fit_histogram(hist, 10, n_init=1, random_state=1)
    again = fit_histogram(hist, 10, n_init=1, random_state=1)
    np.testing.assert_array_equal(one.palette, again.palette)
    several = fit_histogram(hist, 10, n_init=6, random_state=1)
    # the first of the six runs is the single run of the same seed: the best of six is not worse
    assert several.inertia <= one.inertia
    assert several.cost <= one.cost


def test_fit_histogram_searches_coarse_colours(monkeypatch, photo):
    """Above the threshold the fit is KMeans' coarse search: an exact Lloyd fixed point."""
    from bigquant.cluster.lloyd import lloyd

    search_mod = importlib.import_module("bigquant.cluster.search")
    kmeans_mod = importlib.import_module("bigquant.cluster.kmeans")
    hist = colour_histogram(photo)
    monkeypatch.setattr(search_mod, "COARSE_MIN_COLOURS", hist.n_colours // 4)
    assert search_mod.uses_coarse_search(hist)
    calls = []
    real_search = search_mod.search
    monkeypatch.setattr(kmeans_mod, "search", lambda *a, **kw: calls.append(kw) or real_search(*a, **kw))
    fit = fit_histogram(hist, 6, random_state=np.random.default_rng(5))
    assert calls and calls[0]["n_chains"] == search_mod.default_chains(1)
    assert fit.converged and fit.cost < fit_histogram(hist, 3, random_state=0).cost
    # one more Lloyd step from the result moves the centres by less than the tolerance
    tol = 1e-4 * float(np.mean(hist.points().moments()[2]))
    again = lloyd(hist.points(), fit.centers, max_iter=1, tol=tol)
    assert again.converged and again.inertia <= fit.inertia * (1 + 1e-12)
    # (colours, counts) in any order is the same histogram
    order = np.random.default_rng(0).permutation(hist.n_colours)
    shuffled = fit_histogram((hist.colours[order], hist.counts[order]), 6, random_state=np.random.default_rng(5))
    np.testing.assert_array_equal(shuffled.centers, fit.centers)


def test_fit_histogram_few_colours():
    colours = np.array([[0, 0, 0], [9, 9, 9]], dtype=np.uint8)
    fit = fit_histogram((colours, np.array([5, 5])), 4, random_state=0)
    assert fit.cost == 0 and fit.palette.shape == (4, 3)


@pytest.mark.parametrize("kwargs", [{"n_clusters": 0}, {"n_clusters": 2, "n_init": 0}])
def test_fit_histogram_rejects(kwargs):
    colours = np.array([[0, 0, 0], [9, 9, 9], [99, 9, 9]], dtype=np.uint8)
    with pytest.raises(InvalidParameterError):
        fit_histogram((colours, np.array([1, 2, 3])), **kwargs)


# --------------------------------------------------------------------------- sweep


def test_package_exports():
    import bigquant

    assert bigquant.sweep is sweep and bigquant.SweepResult is SweepResult
    assert callable(bigquant.connect) and "connect" in bigquant.__all__ and "sweep" in bigquant.__all__


def test_sweep_table(photo):
    result = sweep(photo, "2:8:2", random_state=0)
    assert isinstance(result, SweepResult)
    assert result.ks == [2, 4, 6, 8] and result.strategy == "histogram"
    assert result.costs[0] > result.costs[-1]
    n_values = photo.size
    for row in result.rows:
        assert row.psnr == pytest.approx(10 * math.log10(255**2 * n_values / row.cost))
        assert row.seconds >= 0 and row.n_iter >= 1
        assert result.palette(row.k).shape == (row.k, 3)
        # the cost is the squared error of the image mapped to the integer palette
        assert row.cost == squared_error(photo, result.palette(row.k))
    assert result.elbow() in result.ks
    frame = result.to_frame()
    assert list(frame.index) == result.ks and "cost" in frame.columns
    assert "| k | cost" in result.table()


def test_sweep_shares_one_histogram(monkeypatch, photo):
    calls = []
    real = sweep_mod.colour_histogram

    def counting(X, **kw):
        calls.append(X.shape)
        return real(X, **kw)

    monkeypatch.setattr(sweep_mod, "colour_histogram", counting)
    sweep(photo, [2, 3, 4, 5, 6], random_state=0)
    assert len(calls) == 1


def test_sweep_rows_depend_only_on_seed_and_k(photo):
    full = sweep(photo, [2, 4, 6], random_state=7)
    alone = sweep(photo, [4], random_state=7)
    assert alone[4].cost == full[4].cost and alone[4].palette == full[4].palette


def test_sweep_accepts_histogram_paths_and_dask(tmp_path, photo):
    import dask.array as da
    from PIL import Image

    ref = sweep(photo, [3], random_state=0)
    path = tmp_path / "p.png"
    Image.fromarray(photo).save(path)
    for src in (colour_histogram(photo), path, str(path), da.from_array(photo, chunks=(32, 64, 3))):
        assert sweep(src, [3], random_state=0)[3].cost == ref[3].cost


def test_sweep_csv_incremental_and_resume(tmp_path, photo, monkeypatch):
    out = tmp_path / "sweep.csv"
    ks = [2, 4, 6, 8]

    def interrupt_after_two(row):
        # called once a k's row is on disk: the second one ends the sweep (as Ctrl-C would)
        if len(read_rows(out)) == 2:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        sweep(photo, ks, random_state=0, out=out, callback=interrupt_after_two)
    before = {r.k: r for r in read_rows(out)}
    assert len(before) == 2 and set(before) < set(ks)  # rows written before the failure are on disk

    real = sweep_mod.fit_histogram
    fitted: list[int] = []

    def counting(hist, k, **kw):
        fitted.append(k)
        return real(hist, k, **kw)

    monkeypatch.setattr(sweep_mod, "fit_histogram", counting)
    result = sweep(photo, ks, random_state=0, out=out, resume_from=out)
    assert sorted(result.resumed) == sorted(before)
    assert sorted(fitted) == sorted(set(ks) - set(before))  # the resumed ks are not fitted again
    assert result.ks == ks
    rows = {r.k: r for r in read_rows(out)}
    assert sorted(rows) == ks  # one row per k, no duplicates
    assert all(rows[k] == before[k] for k in before)  # kept as written (times included), not refitted
    monkeypatch.setattr(sweep_mod, "fit_histogram", real)
    fresh = sweep(photo, ks, random_state=0)
    assert result.costs == fresh.costs


def test_sweep_to_csv_round_trip_and_plot(tmp_path, photo):
    import matplotlib

    matplotlib.use("Agg")
    result = sweep(photo, [2, 3, 4], random_state=0)
    rows = read_rows(result.to_csv(tmp_path / "r.csv"))
    assert rows == result.rows
    fig = result.plot()
    assert len(fig.axes) == 2
    assert [int(x) for x in fig.axes[0].lines[0].get_xdata()] == [2, 3, 4]


def test_sweep_float_image_uses_the_grid():
    """Float data take quantize's strategy for them (the value grid); pixels when asked."""
    rng = np.random.default_rng(0)
    img = rng.random((20, 24, 3))
    result = sweep(img, [2, 3], random_state=0)
    assert result.strategy == "grid" and result.n_colours is None
    assert sweep(img, [2], strategy="pixels", random_state=0).strategy == "pixels"
    assert result.costs[0] >= result.costs[1] > 0
    with pytest.raises(InvalidParameterError, match="strategy='histogram'"):
        sweep(img, [2], strategy="histogram")


def test_sweep_pixels_strategy_on_dask_matches_numpy(photo):
    import dask.array as da

    lazy = da.from_array(photo, chunks=(48, 64, 3))
    seen = []
    result = sweep(lazy, [3, 5], strategy="pixels", random_state=0, callback=seen.append)
    assert result.strategy == "pixels" and sorted(r.k for r in seen) == [3, 5]
    ref = sweep(photo, [3, 5], strategy="pixels", random_state=0)
    for a, b in zip(result.rows, ref.rows):
        assert a.cost == pytest.approx(b.cost, rel=1e-9)
        assert a.palette_array(3).shape == (a.k, 3)


def test_sweep_callback_sees_every_new_row(photo, tmp_path):
    seen = []
    sweep(photo, [2, 3, 4], random_state=0, callback=seen.append)
    assert sorted(r.k for r in seen) == [2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"strategy": "nope"}, "strategy="), ({"n_init": 0}, "n_init="), ({"random_state": "x"}, "random_state=")],
)
def test_sweep_rejects_parameters(photo, kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        sweep(photo, [2], **kwargs)


def test_sweep_rejects_bad_csv(tmp_path, photo):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInputError, match="not a sweep CSV"):
        sweep(photo, [2], resume_from=bad)
