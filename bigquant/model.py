"""The walkthrough's model API: KMeans, clustering cost, quantization and k sweeps.

This module keeps the names of the blog walkthrough "K-Means Clustering for
Image Quantization" so that its code runs with ``from bigquant import model``.
:class:`KMeans` is :class:`bigquant.KMeans` (exact, numba and Dask backed)
with the walkthrough's positional parameters and its ``iterations`` attribute;
the helpers below are the walkthrough's notebook functions as library code,
working on in-memory and lazy (dask) images alike.

Examples
--------
>>> import numpy as np
>>> from bigquant import image, model
>>> rng = np.random.default_rng(0)
>>> img = image.Image(rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8))
>>> quantized, km, seconds = model.quantize_image(img, 4, random_state=0)
>>> quantized.shape, km.cluster_centers_.shape
((20, 30, 3), (4, 3))
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from bigquant._typing import InitMethod, SeedLike, Strategy
from bigquant.cluster.kmeans import KMeans as _KMeans
from bigquant.errors import InvalidInputError, not_fitted
from bigquant.image import Image, _is_dask, to_uint8
from bigquant.plotting import plot_k_metrics

__all__ = [
    "KMeans",
    "QuantizedImage",
    "clusters_cost",
    "quantize_image",
    "record_k_metrics",
    "plot_k_metrics",
]

logger = logging.getLogger(__name__)


def _pixels(x: Any) -> Any:
    """Return the array behind an :class:`~bigquant.image.Image`, or ``x`` itself."""
    return x.rgb_matrix if isinstance(x, Image) else x


class KMeans(_KMeans):
    """K-means clustering with the walkthrough's signature.

    The same estimator as :class:`bigquant.KMeans`; only the parameter order
    differs, so that ``KMeans(n_clusters, tol, max_iter, random_state)`` works
    positionally, and ``fit`` also accepts an :class:`~bigquant.image.Image`.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters (palette colours).
    tol : float, default=1e-4
        Convergence tolerance on the centres' movement (see :class:`bigquant.KMeans`).
    max_iter : int, default=300
        Largest number of Lloyd iterations.
    random_state : int, numpy Generator or RandomState, or None, default=None
        Seed of the initialisation.
    init : {"k-means++", "k-means||", "random"}, default="k-means++"
        Initialisation method.
    n_init : int, default=1
        Number of initialisations; the run with the lowest inertia is kept.
    strategy : {"auto", "histogram", "grid", "pixels", "minibatch"}, default="auto"
        How the data is visited (see :class:`bigquant.KMeans`).
    persist : {"auto", True, False}, default="auto"
        Whether dask data is persisted for the iterations (see :class:`bigquant.KMeans`).
    split_every : int, default=8
        Fan-in of the tree reductions.
    callback : callable, default=None
        Called after every iteration (see :class:`bigquant.KMeans`).
    checkpoint, checkpoint_every : path or None, int
        Resumable fits (see :class:`bigquant.KMeans`).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_channels)
        The centres (float64); when the data has fewer distinct colours than
        ``n_clusters``, every colour is one and the others repeat one of them.
    labels_ : ndarray or dask array
        Index of each sample's centre: shape (n_samples,) for 2-D input,
        (H, W) for an image.
    inertia_ : float
        Sum of squared distances of the samples to their (float) centres.
    n_iter_ : int
        Number of iterations run.
    iterations : int
        The walkthrough's name for ``n_iter_``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0, 0, 0], [0, 0, 2], [250, 250, 250], [250, 250, 252]], np.uint8)
    >>> km = KMeans(2, 1e-4, 100, 0).fit(X)
    >>> np.sort(km.cluster_centers_[:, 2])
    array([  1., 251.])
    """

    def __init__(
        self,
        n_clusters: int = 8,
        tol: float = 1e-4,
        max_iter: int = 300,
        random_state: SeedLike = None,
        *,
        init: InitMethod | np.ndarray = "k-means++",
        n_init: int = 1,
        strategy: Strategy = "auto",
        persist: str | bool = "auto",
        split_every: int = 8,
        callback: Callable[..., Any] | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
    ) -> None:
        super().__init__(
            n_clusters,
            init=init,
            n_init=n_init,
            max_iter=max_iter,
            tol=tol,
            random_state=random_state,
            strategy=strategy,
            persist=persist,
            split_every=split_every,
            callback=callback,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
        )

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KMeans:
        """Compute the clustering.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_channels) or (H, W, n_channels), \
or Image
            The data; an :class:`~bigquant.image.Image` is fitted on its ``rgb_matrix``.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,) or (H, W), default=None
            Weights of the samples (see :meth:`bigquant.KMeans.fit`).

        Returns
        -------
        self : KMeans
            The fitted estimator.
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            super().fit(_pixels(X), y, sample_weight=sample_weight)
        for warning in caught:  # re-issued so that they point at the caller's line
            warnings.warn(warning.message, warning.category, stacklevel=2)
        return self

    def predict(self, X: Any) -> Any:
        """Index of the nearest centre of each sample (or pixel of an Image).

        See :meth:`bigquant.KMeans.predict`; an :class:`~bigquant.image.Image`
        is predicted on its ``rgb_matrix``, giving labels of shape (H, W).
        """
        return super().predict(_pixels(X))

    @property
    def iterations(self) -> int:
        """int: number of Lloyd iterations of the fit (``n_iter_``)."""
        if not hasattr(self, "n_iter_"):
            raise not_fitted(
                "This KMeans instance is not fitted yet; call 'fit' before reading 'iterations'"
            )
        return int(self.n_iter_)


def _sse_block(x: np.ndarray, labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Sum of squared differences of one block of pixels to their palette colours."""
    diff = x.astype(np.int64) - palette[labels[..., 0]]
    total = np.einsum("ij,ij->", diff.reshape(-1, diff.shape[-1]), diff.reshape(-1, diff.shape[-1]))
    return np.full((1,) * x.ndim, total, dtype=np.int64)


def clusters_cost(X: Any, centroids: Any, labels: Any) -> int:
    """The walkthrough's clustering cost: squared error of the quantized image.

    The sum, over every pixel, of the squared Euclidean distance between its
    colour and its centroid *cast to uint8* (the colour the quantized image
    actually shows — see :func:`bigquant.image.rgb_vector_to_image`). It is
    computed exactly in int64. It differs slightly from the estimator's
    ``inertia_``, which measures distances to the float centres, and from the
    error of :func:`bigquant.quantize`'s output, whose palette rounds the
    centres to the nearest colour instead of truncating them.

    Parameters
    ----------
    X : array-like or dask array of shape (n_samples, 3) or (H, W, 3), or Image
        The original colours (0..255).
    centroids : array-like of shape (n_clusters, 3)
        The centres, e.g. ``cluster_centers_``.
    labels : array-like or dask array of shape X.shape[:-1], or of shape (n_samples,)
        The index of each pixel's centroid, e.g. ``labels_``.

    Returns
    -------
    cost : int
        The sum of squared errors. Lazy inputs are computed blockwise, in one pass.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0, 0, 0], [10, 0, 0]], dtype=np.uint8)
    >>> clusters_cost(X, np.array([[4.9, 0.0, 0.0]]), np.array([0, 0]))
    52
    """
    X = _pixels(X)
    if not _is_dask(X):
        X = np.asarray(X)
    if X.ndim < 2:
        raise InvalidInputError(f"X of shape {tuple(X.shape)} must have a channel axis")
    palette = to_uint8(np.asarray(centroids)).astype(np.int64)
    if palette.ndim != 2 or palette.shape[1] != X.shape[-1]:
        raise InvalidInputError(
            f"centroids of shape {palette.shape} must have shape (n_clusters, {X.shape[-1]})"
        )
    lead = tuple(int(n) for n in X.shape[:-1])
    if tuple(labels.shape) != lead:
        if int(np.prod(labels.shape)) != int(np.prod(lead)):
            raise InvalidInputError(
                f"labels of shape {tuple(labels.shape)} do not match X of shape {tuple(X.shape)}"
            )
        labels = labels.reshape(lead)
    if not _is_dask(X):
        if _is_dask(labels):
            labels = labels.compute()
        labels = np.asarray(labels)
        return int(_sse_block(X, labels[..., None], palette).sum())

    import dask.array as da

    X = X.rechunk({X.ndim - 1: -1})
    if _is_dask(labels):
        labels = labels.rechunk(X.chunks[:-1])
    else:
        labels = da.from_array(np.asarray(labels), chunks=X.chunks[:-1])
    per_block = da.map_blocks(
        _sse_block,
        X,
        labels[..., None],
        palette=palette,
        dtype=np.int64,
        chunks=tuple((1,) * len(c) for c in X.chunks),
    )
    return int(per_block.sum().compute())


class QuantizedImage(NamedTuple):
    """What :func:`quantize_image` returns; unpacks as ``image, model, seconds``."""

    image: Image
    """The image rebuilt with the fitted palette (uint8; lazy if the input was)."""
    model: KMeans
    """The fitted estimator: ``cluster_centers_``, ``labels_``, ``iterations``..."""
    seconds: float
    """Wall-clock time of the fit, in seconds."""


def _palette_image(palette: np.ndarray, labels: Any, title: str | None) -> Image:
    """Build the image whose pixel (i, j) is ``palette[labels[i, j]]``."""
    if _is_dask(labels):
        pixels = labels.map_blocks(
            lambda block: palette[block],
            dtype=palette.dtype,
            new_axis=labels.ndim,
            chunks=(*labels.chunks, (palette.shape[1],)),
        )
    else:
        pixels = palette[np.asarray(labels)]
    return Image(pixels, title=title)


def quantize_image(
    img: Image | Any, k: int, random_state: SeedLike = None, **kmeans_params: Any
) -> QuantizedImage:
    """Quantize an image to ``k`` colours with k-means.

    Parameters
    ----------
    img : Image, or ndarray or dask array of shape (H, W, 3)
        The image; lazy images stay lazy (the fit reads them; the result is a
        lazy image built blockwise from the labels).
    k : int
        Number of colours.
    random_state : int, numpy Generator or RandomState, or None, default=None
        Seed of the k-means initialisation.
    **kmeans_params
        Other :class:`KMeans` parameters (``tol``, ``max_iter``, ``strategy``...).

    Returns
    -------
    result : QuantizedImage
        A named tuple ``(image, model, seconds)``: the quantized ``uint8``
        image titled ``"k = {k}"``, the fitted :class:`KMeans` (its
        ``cluster_centers_`` are the palette, ``iterations`` the number of
        iterations) and the fit's wall-clock time in seconds.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.repeat(np.array([[[0, 0, 0]], [[200, 100, 50]]], np.uint8), 3, axis=1))
    >>> result = quantize_image(img, 2, random_state=0)
    >>> int(result.image.rgb_matrix[1, 0, 0]), result.model.cluster_centers_.shape
    (200, (2, 3))
    """
    pixels = _pixels(img)
    km = KMeans(k, random_state=random_state, **kmeans_params)
    start = time.perf_counter()
    km.fit(pixels)
    seconds = time.perf_counter() - start
    palette = to_uint8(np.asarray(km.cluster_centers_))
    quantized = _palette_image(palette, km.labels_, title=f"k = {k}")
    logger.info("k=%d: %d iterations in %.3f s", k, km.iterations, seconds)
    return QuantizedImage(quantized, km, seconds)


def record_k_metrics(
    img: Image | Any,
    k_values: Iterable[int],
    random_state: SeedLike = None,
    **kmeans_params: Any,
) -> tuple[list[int], list[float]]:
    """Fit k-means for each k and record the clustering cost and the fit time.

    Parameters
    ----------
    img : Image, or ndarray or dask array of shape (H, W, 3)
        The image.
    k_values : iterable of int
        The numbers of clusters to try, in order.
    random_state : int, numpy Generator or RandomState, or None, default=None
        Seed of every fit's initialisation.
    **kmeans_params
        Other :class:`KMeans` parameters.

    Returns
    -------
    clusters_cost_list : list of int
        :func:`clusters_cost` of each fit.
    execution_time_list : list of float
        Wall-clock time of each fit, in seconds (the cost is not timed).

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.random.default_rng(0).integers(0, 256, (10, 10, 3), dtype=np.uint8))
    >>> costs, times = record_k_metrics(img, [2, 4], random_state=0)
    >>> len(costs), len(times), costs[0] > costs[1]
    (2, 2, True)
    """
    pixels = _pixels(img)
    costs: list[int] = []
    times: list[float] = []
    for k in k_values:
        _, km, seconds = quantize_image(pixels, k, random_state=random_state, **kmeans_params)
        costs.append(clusters_cost(pixels, km.cluster_centers_, km.labels_))
        times.append(seconds)
    return costs, times
