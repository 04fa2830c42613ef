"""Plots of the image-quantization walkthrough: images, colour clouds, k sweeps.

Every function builds a new :class:`matplotlib.figure.Figure` and returns it,
and never calls ``plt.show``, so the functions work the same headless (Agg
backend, in tests and scripts that save the figures), in scripts that call
``plt.show()``, and in notebooks. The figures are made through
:mod:`matplotlib.pyplot`, so a notebook shows each once when the cell ends;
when a call is the cell's last line, end it with ``;`` (or assign the figure),
or the returned figure is shown a second time as the cell's result.

Big inputs are never drawn whole: images held as dask arrays are strided down
to at most ``max_side`` pixels per side before they are computed, and colour
clouds with more than ``max_points`` points are subsampled with a seeded
generator, so the same input always gives the same plot.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["display_images", "plot_rgb_vector", "plot_k_metrics", "subsample_rows", "preview"]

logger = logging.getLogger(__name__)

#: Default number of points drawn by :func:`plot_rgb_vector`.
DEFAULT_MAX_POINTS = 20_000
#: Largest number of points drawn with an edge by :func:`plot_rgb_vector`.
FEW_POINTS = 256
#: Default longest side, in pixels, of a lazy image drawn by :func:`display_images`.
DEFAULT_MAX_SIDE = 1024


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """Return a figure usable with any backend.

    Made through :mod:`matplotlib.pyplot` so that notebooks display it, and so
    that it is managed like any other figure (``plt.close(fig)`` frees it).
    """
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize)


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.")


def _as_array(x: Any) -> Any:
    """Return the pixel array of an :class:`~bigquant.image.Image` or the input itself."""
    return getattr(x, "rgb_matrix", x)


def subsample_rows(
    x: Any, max_points: int | None = DEFAULT_MAX_POINTS, random_state: int | None = 0
) -> np.ndarray:
    """Return at most ``max_points`` rows of ``x`` as a numpy array, deterministically.

    Parameters
    ----------
    x : array-like or dask array of shape (n_samples, n_channels) or (H, W, n_channels)
        The points, or an image's pixels.
    max_points : int or None, default=20000
        Largest number of rows returned; ``None`` keeps every row.
    random_state : int or None, default=0
        Seed of the generator choosing the rows. The chosen rows are returned
        in their original order.

    Returns
    -------
    rows : ndarray of shape (min(n_samples, max_points), n_channels)

    Notes
    -----
    An image of shape (H, W, C) is taken as its H·W pixels in row-major
    order, and gives the same rows as its reshape to (H·W, C); a dask image is
    sampled pixel by pixel (``vindex``), without reshaping it, which would
    rechunk it to whole rows.

    Examples
    --------
    >>> import numpy as np
    >>> subsample_rows(np.arange(20).reshape(10, 2), max_points=3).shape
    (3, 2)
    """
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points={max_points} must be >= 1 or None")
    n = int(np.prod(x.shape[:-1]))
    if max_points is None or n <= max_points:
        rows = x.reshape(n, x.shape[-1]) if x.ndim != 2 else x
    else:
        rng = np.random.default_rng(random_state)
        index = np.sort(rng.choice(n, size=max_points, replace=False))
        if x.ndim == 2:
            rows = x[index]
        elif _is_dask(x):
            rows = x.vindex[np.unravel_index(index, x.shape[:-1])]
        else:
            rows = x.reshape(n, x.shape[-1])[index]
        logger.debug("subsampled %d of %d points", max_points, n)
    if _is_dask(rows):
        rows = rows.compute()
    return np.asarray(rows)


def preview(x: Any, max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Return an in-memory image small enough to draw.

    Numpy images are returned unchanged (matplotlib resamples them itself).
    Dask images are strided by the smallest integer step that brings their
    longest side to at most ``max_side`` and then computed, which reads every
    chunk once but keeps only the preview in memory.

    Parameters
    ----------
    x : Image, ndarray or dask array of shape (H, W) or (H, W, C)
        The image.
    max_side : int or None, default=1024
        Longest side of the preview of a dask image; ``None`` computes it whole.

    Returns
    -------
    pixels : ndarray
    """
    x = _as_array(x)
    if not _is_dask(x):
        return np.asarray(x)
    longest = max(int(x.shape[0]), int(x.shape[1]))
    if max_side is not None and longest > max_side:
        step = math.ceil(longest / max_side)
        x = x[::step, ::step]
        logger.debug("previewing a lazy image of longest side %d with step %d", longest, step)
    return np.asarray(x.compute())


def _scale(points: np.ndarray) -> float:
    """Return the value of full intensity: 255 for integer data or data above 1, else 1."""
    if np.issubdtype(points.dtype, np.integer) or (points.size and float(np.max(points)) > 1.0):
        return 255.0
    return 1.0


def _rgb_colours(points: np.ndarray) -> np.ndarray:
    """Map points to matplotlib colours in [0, 1] (see :func:`_scale`)."""
    return np.clip(np.asarray(points, dtype=np.float64) / _scale(points), 0.0, 1.0)


def _displayable(pixels: np.ndarray) -> np.ndarray:
    """Scale pixels to what ``imshow`` expects: uint8, or floats in [0, 1].

    Floats above 1 are taken as 0..255 (e.g. ``centroids[labels]``); wider
    integers (uint16...) are scaled by their dtype's maximum.
    """
    if pixels.dtype.kind == "f" and pixels.size and float(np.nanmax(pixels)) > 1.0:
        return np.clip(pixels, 0.0, 255.0) / 255.0
    if pixels.dtype.kind in "ui" and pixels.dtype.itemsize > 1:
        top = np.iinfo(pixels.dtype).max if pixels.size and pixels.max() > 255 else 255
        return np.clip(pixels, 0, top).astype(np.float64) / top
    return pixels


def display_images(
    *images: Any,
    figsize: tuple[float, float] = (10, 5),
    titles: Sequence[str | None] | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> Figure:
    """Show images side by side, one axes per image, each titled.

    Parameters
    ----------
    *images : Image, ndarray or dask array of shape (H, W, 3) or (H, W)
        The images, drawn left to right. An :class:`~bigquant.image.Image`'s
        ``title`` is used as its axes title. uint8 and floats in [0, 1] are
        drawn as they are; floats above 1 are taken as 0..255 and wider
        integers (uint16) are scaled by their dtype's maximum.
    figsize : tuple of float, default=(10, 5)
        Figure size in inches.
    titles : sequence of str or None, default=None
        Titles overriding the images' own.
    max_side : int or None, default=1024
        Longest side of the preview drawn for a lazy (dask) image.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure, with ``len(images)`` axes.

    Examples
    --------
    >>> import numpy as np
    >>> fig = display_images(np.zeros((4, 6, 3), np.uint8), np.ones((4, 6, 3), np.uint8))
    >>> len(fig.axes)
    2
    """
    if not images:
        raise ValueError("display_images needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"titles has {len(titles)} entries for {len(images)} images")
    fig = _new_figure(figsize)
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for i, (ax, img) in enumerate(zip(axes, images)):
        pixels = _displayable(preview(img, max_side=max_side))
        title = titles[i] if titles is not None else getattr(img, "title", None)
        if pixels.ndim == 2:
            ax.imshow(pixels, cmap="gray", interpolation="nearest")
        else:
            ax.imshow(pixels, interpolation="nearest")
        if title:
            ax.set_title(title)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def plot_rgb_vector(
    rgb_vector: Any,
    figsize: tuple[float, float] = (10, 5),
    title: str | None = None,
    alpha: float = 0.6,
    s: float = 4,
    *,
    max_points: int | None = DEFAULT_MAX_POINTS,
    random_state: int | None = 0,
    ax: Any = None,
) -> Figure:
    """Draw colours as a 3-D scatter in RGB space, each point in its own colour.

    Parameters
    ----------
    rgb_vector : array-like or dask array of shape (n_samples, 3), or an image
        The colours: 0..255 (any integer dtype, or floats above 1, such as
        fitted ``cluster_centers_``) or floats in [0, 1]. An
        :class:`~bigquant.image.Image` or an (H, W, 3) array is flattened.
    figsize : tuple of float, default=(10, 5)
        Figure size in inches.
    title : str or None, default=None
        Axes title.
    alpha : float, default=0.6
        Opacity of the points.
    s : float, default=4
        Marker size in points². When at most 256 points are drawn (a palette),
        they get a thin grey edge, so that near-white colours stay visible.
    max_points : int or None, default=20000
        At most this many points are drawn, chosen by a generator seeded with
        ``random_state`` (so the plot is reproducible); ``None`` draws all.
    random_state : int or None, default=0
        Seed of the subsampling.
    ax : mpl_toolkits.mplot3d.axes3d.Axes3D or None, default=None
        Draw on this 3-D axes (e.g. ``fig.add_subplot(1, 2, 1, projection="3d")``)
        instead of a new figure; ``figsize`` is then ignored.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure: a new one with one 3-D axes whose single collection holds
        the points, or ``ax``'s figure.

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_rgb_vector(np.array([[255, 0, 0], [0, 0, 255]], np.uint8))
    >>> fig.axes[0].name
    '3d'
    """
    x = _as_array(rgb_vector)
    if x.ndim not in (2, 3) or x.shape[-1] != 3:
        raise ValueError(f"rgb_vector of shape {tuple(x.shape)} must have shape (n_samples, 3)")
    points = subsample_rows(x, max_points=max_points, random_state=random_state)
    colours = _rgb_colours(points)
    if ax is None:
        fig = _new_figure(figsize)
        ax = fig.add_subplot(projection="3d")
    elif getattr(ax, "name", None) != "3d":
        raise ValueError("ax must be a 3-D axes: add_subplot(..., projection='3d')")
    else:
        fig = ax.figure
    ax.scatter(
        points[:, 0],
        points[:, 1],
        points[:, 2],
        c=colours,
        s=s,
        alpha=alpha,
        depthshade=False,
        # a few big points (a palette) get a thin grey edge so near-white ones show
        edgecolors="0.4" if len(points) <= FEW_POINTS else "none",
        linewidths=0.5,
    )
    top = _scale(points)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_zlim(0, top)
    ax.set_xlabel("Red")
    ax.set_ylabel("Green")
    ax.set_zlabel("Blue", labelpad=8)
    if title:
        ax.set_title(title)
    return fig


def plot_k_metrics(
    k_values: Sequence[int],
    clusters_cost_list: Sequence[float],
    execution_time_list: Sequence[float],
    figsize: tuple[float, float] = (10, 4),
) -> Figure:
    """Plot a k sweep: clustering cost and fit time against the number of clusters.

    Parameters
    ----------
    k_values : sequence of int
        The numbers of clusters tried.
    clusters_cost_list : sequence of float
        The cost for each k (see :func:`bigquant.model.clusters_cost`).
    execution_time_list : sequence of float
        The fit time in seconds for each k.
    figsize : tuple of float, default=(10, 4)
        Figure size in inches.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure, with two axes: cost (left) and time (right) against k.

    Examples
    --------
    >>> fig = plot_k_metrics([2, 4, 8], [30.0, 12.0, 5.0], [0.1, 0.2, 0.4])
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['Cost (sum of squared errors)', 'Fit time (s)']
    """
    n = len(k_values)
    if len(clusters_cost_list) != n or len(execution_time_list) != n:
        raise ValueError(
            f"k_values, clusters_cost_list and execution_time_list have lengths "
            f"{n}, {len(clusters_cost_list)} and {len(execution_time_list)}; they must match"
        )
    fig = _new_figure(figsize)
    ax_cost, ax_time = fig.subplots(1, 2)
    ax_cost.plot(list(k_values), list(clusters_cost_list), marker="o", color="tab:blue")
    ax_cost.set_xlabel("Number of clusters k")
    ax_cost.set_ylabel("Cost (sum of squared errors)")
    ax_cost.set_title("Clustering cost")
    ax_time.plot(list(k_values), list(execution_time_list), marker="o", color="tab:orange")
    ax_time.set_xlabel("Number of clusters k")
    ax_time.set_ylabel("Fit time (s)")
    ax_time.set_title("Execution time")
    for ax in (ax_cost, ax_time):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig
