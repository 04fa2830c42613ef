"""Tests of bigquant.plotting: figures returned, right axes, right data, Agg-safe."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from bigquant import plotting
from bigquant.image import Image


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


def _renders(fig: Figure) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")


# display_images ----------------------------------------------------------


def test_display_images_one_axes_per_image(rgb):
    a, b = Image(rgb, title="a"), Image(255 - rgb, title="b")
    fig = plotting.display_images(a, b, rgb, figsize=(9, 3))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", ""]
    assert all(not ax.axison for ax in fig.axes)
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), 255 - rgb)
    np.testing.assert_allclose(fig.get_size_inches(), (9, 3))
    _renders(fig)


def test_display_images_titles_override(rgb):
    fig = plotting.display_images(Image(rgb, title="own"), titles=["given"])
    assert fig.axes[0].get_title() == "given"


def test_display_images_grey(rgb):
    fig = plotting.display_images(rgb[..., 0])
    assert fig.axes[0].images[0].get_cmap().name == "gray"


def test_display_images_previews_lazy_images(rgb):
    big = np.tile(rgb, (50, 40, 1))  # 300 x 320
    lazy = Image(da.from_array(big, chunks=(64, 64, 3)), title="lazy")
    fig = plotting.display_images(lazy, max_side=100)
    shown = np.asarray(fig.axes[0].images[0].get_array())
    # the smallest integer step bringing 320 to <= 100 is 4
    np.testing.assert_array_equal(shown, big[::4, ::4])
    assert max(shown.shape[:2]) <= 100
    assert fig.axes[0].get_title() == "lazy"


def test_preview_keeps_numpy_and_small_lazy(rgb):
    assert plotting.preview(rgb) is rgb
    np.testing.assert_array_equal(plotting.preview(da.from_array(rgb)), rgb)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((), {}, "at least one image"),
        ((np.zeros((2, 2, 3)),), {"titles": ["a", "b"]}, "titles has 2 entries for 1 images"),
    ],
)
def test_display_images_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plotting.display_images(*args, **kwargs)


# plot_rgb_vector ---------------------------------------------------------


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a[np.lexsort(a.T[::-1])]


def _scatter_colours(fig: Figure) -> np.ndarray:
    """The RGBA colours of the drawn points, sorted (a 3-D scatter draws them depth-sorted)."""
    (ax,) = fig.axes
    assert ax.name == "3d"
    (collection,) = ax.collections
    fig.canvas.draw()
    return _sorted_rows(collection.get_facecolors())


def test_plot_rgb_vector_points_in_their_own_colours(rgb):
    vector = rgb.reshape(-1, 3)
    fig = plotting.plot_rgb_vector(vector, title="cloud", alpha=0.5, s=7)
    assert isinstance(fig, Figure)
    colours = _scatter_colours(fig)
    assert colours.shape == (48, 4)
    np.testing.assert_allclose(colours[:, :3], _sorted_rows(vector / 255.0))
    np.testing.assert_allclose(colours[:, 3], 0.5)
    ax = fig.axes[0]
    assert ax.get_title() == "cloud"
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_zlabel()) == ("Red", "Green", "Blue")
    assert ax.get_xlim() == (0, 255)
    np.testing.assert_allclose(ax.collections[0].get_sizes(), 7)
    _renders(fig)


def test_plot_rgb_vector_float_centres_are_0_255():
    centres = np.array([[255.0, 0.0, 0.0], [10.5, 200.25, 30.0]])
    colours = _scatter_colours(plotting.plot_rgb_vector(centres))
    np.testing.assert_allclose(colours[:, :3], _sorted_rows(centres / 255.0))


def test_plot_rgb_vector_unit_floats_are_kept():
    unit = np.array([[1.0, 0.0, 0.5], [0.25, 0.75, 0.0]])
    fig = plotting.plot_rgb_vector(unit)
    np.testing.assert_allclose(_scatter_colours(fig)[:, :3], _sorted_rows(unit))
    assert fig.axes[0].get_xlim() == (0, 1)


def test_plot_rgb_vector_accepts_images(rgb):
    colours = _scatter_colours(plotting.plot_rgb_vector(Image(rgb)))
    np.testing.assert_allclose(colours[:, :3], _sorted_rows(rgb.reshape(-1, 3) / 255.0))


def test_plot_rgb_vector_subsamples_deterministically():
    rng = np.random.default_rng(0)
    vector = rng.integers(0, 256, size=(5000, 3), dtype=np.uint8)
    first = _scatter_colours(plotting.plot_rgb_vector(vector, max_points=300))
    second = _scatter_colours(plotting.plot_rgb_vector(vector, max_points=300))
    assert first.shape == (300, 4)
    np.testing.assert_array_equal(first, second)
    rows = plotting.subsample_rows(vector, max_points=300)
    np.testing.assert_allclose(first[:, :3], _sorted_rows(rows / 255.0))
    # the rows are input rows, distinct, in input order
    codes = vector.astype(np.int64) @ np.array([65536, 256, 1])
    picked = rows.astype(np.int64) @ np.array([65536, 256, 1])
    positions = [int(np.flatnonzero(codes == c)[0]) for c in picked]
    assert positions == sorted(positions)
    other = plotting.subsample_rows(vector, max_points=300, random_state=1)
    assert not np.array_equal(rows, other)


def test_plot_rgb_vector_lazy_matches_numpy():
    rng = np.random.default_rng(0)
    vector = rng.integers(0, 256, size=(4000, 3), dtype=np.uint8)
    eager = _scatter_colours(plotting.plot_rgb_vector(vector, max_points=500))
    lazy = _scatter_colours(
        plotting.plot_rgb_vector(da.from_array(vector, chunks=(700, 3)), max_points=500)
    )
    np.testing.assert_array_equal(eager, lazy)


def test_subsample_rows_all_and_errors(rgb):
    vector = rgb.reshape(-1, 3)
    np.testing.assert_array_equal(plotting.subsample_rows(vector, max_points=None), vector)
    np.testing.assert_array_equal(plotting.subsample_rows(vector, max_points=1000), vector)
    with pytest.raises(ValueError, match="max_points=0 must be >= 1"):
        plotting.subsample_rows(vector, max_points=0)


def test_plot_rgb_vector_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"must have shape \(n_samples, 3\)"):
        plotting.plot_rgb_vector(np.zeros((4, 2)))


# plot_k_metrics ----------------------------------------------------------


def test_plot_k_metrics_two_axes_with_the_data():
    ks, costs, times = [2, 4, 8], [30.0, 12.0, 5.0], [0.1, 0.2, 0.4]
    fig = plotting.plot_k_metrics(ks, costs, times, figsize=(8, 3))
    assert isinstance(fig, Figure)
    ax_cost, ax_time = fig.axes
    np.testing.assert_array_equal(ax_cost.lines[0].get_xdata(), ks)
    np.testing.assert_array_equal(ax_cost.lines[0].get_ydata(), costs)
    np.testing.assert_array_equal(ax_time.lines[0].get_ydata(), times)
    assert ax_time.get_ylabel() == "Fit time (s)"
    assert ax_cost.get_xlabel() == "Number of clusters k"
    np.testing.assert_allclose(fig.get_size_inches(), (8, 3))
    _renders(fig)


def test_plot_k_metrics_lengths_must_match():
    with pytest.raises(ValueError, match="lengths 3, 2 and 3"):
        plotting.plot_k_metrics([2, 4, 8], [1.0, 2.0], [0.1, 0.2, 0.3])


def test_plot_rgb_vector_on_given_axes(rgb):
    fig = plt.figure()
    left = fig.add_subplot(1, 2, 1, projection="3d")
    right = fig.add_subplot(1, 2, 2, projection="3d")
    assert plotting.plot_rgb_vector(rgb.reshape(-1, 3), ax=left) is fig
    assert plotting.plot_rgb_vector(np.array([[1.0, 2.0, 3.0]]) * 50, ax=right, title="c") is fig
    assert len(fig.axes) == 2 and right.get_title() == "c"
    assert len(left.collections) == 1 and len(right.collections) == 1


def test_plot_rgb_vector_needs_3d_axes(rgb):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="ax must be a 3-D axes"):
        plotting.plot_rgb_vector(rgb.reshape(-1, 3), ax=ax)


def test_subsample_rows_of_images_match_their_vectors():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(60, 70, 3), dtype=np.uint8)
    expected = plotting.subsample_rows(pixels.reshape(-1, 3), max_points=500)
    np.testing.assert_array_equal(plotting.subsample_rows(pixels, max_points=500), expected)
    lazy = da.from_array(pixels, chunks=(16, 16, 3))
    np.testing.assert_array_equal(plotting.subsample_rows(lazy, max_points=500), expected)
    np.testing.assert_array_equal(plotting.subsample_rows(lazy, max_points=None), pixels.reshape(-1, 3))
    colours = _scatter_colours(plotting.plot_rgb_vector(Image(lazy), max_points=500))
    np.testing.assert_allclose(colours[:, :3], _sorted_rows(expected / 255.0))


def test_display_images_scales_floats_and_wide_integers(rgb):
    centres = rgb.astype(np.float64) + 0.25  # like centroids[labels]: floats on 0..255
    wide = rgb.astype(np.uint16) * 257  # 16-bit
    fig = plotting.display_images(Image(centres), Image(wide), Image(rgb / 255.0))
    shown = [np.asarray(ax.images[0].get_array(), dtype=np.float64) for ax in fig.axes]
    np.testing.assert_allclose(shown[0], (rgb + 0.25) / 255.0)
    np.testing.assert_allclose(shown[1], rgb / 255.0)
    np.testing.assert_allclose(shown[2], rgb / 255.0)


def test_docstring_examples_run():
    import doctest

    from bigquant import plotting as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
