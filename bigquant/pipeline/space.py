"""k-means in a perceptual colour space (OKLab or CIELAB), with the palette kept as sRGB.

For 8-bit RGB the exact-histogram strategy is kept: the image's distinct
colours are counted in one pass (:func:`bigquant.colour_histogram`),
transformed once to the space (float64), and weighted Lloyd runs on them with
their counts as weights -- the same centres as Lloyd on every pixel in that
space.  Each distinct colour's label (its nearest centre *in the space*) fills
a colour -> label table, which maps the pixels as in the RGB fit.  Other
inputs (uint16, floats in [0, 1]) are transformed blockwise and fitted pixel
by pixel.

The fitted :class:`SpaceKMeans` looks, to :func:`bigquant.quantize`, like a
fitted :class:`bigquant.KMeans`: ``cluster_centers_`` are the centres
converted back to sRGB (clipped to the gamut, on the source's scale),
``labels_`` the lazy labels of the pixels, and ``lookup_table`` the table.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np

from bigquant import kernels, tasks
from bigquant.cluster.histogram import colour_histogram, histogram_bits
from bigquant.cluster.kmeans import KMeans
from bigquant.errors import InvalidInputError, InvalidParameterError
from bigquant.io.palette import index_dtype
from bigquant.kernels.spaces import SPACES, from_space, to_space

__all__ = ["SPACES", "SpaceKMeans", "check_space", "fit_in_space", "source_scale", "sweep_in_space"]

logger = logging.getLogger(__name__)


def check_space(space: Any) -> str:
    """Validate ``space``; return it lower-case.

    Raises
    ------
    InvalidParameterError
        ``space`` is not one of :data:`SPACES`.
    """
    name = space.lower() if isinstance(space, str) else space
    if name not in SPACES:
        raise InvalidParameterError(f"space={space!r} must be one of {', '.join(map(repr, SPACES))}")
    return name


def source_scale(dtype: np.dtype) -> float:
    """The value of full intensity: 255 (uint8), 65535 (uint16), 1.0 (floats in [0, 1])."""
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        return float(np.iinfo(dtype).max)
    if dtype.kind == "f":
        return 1.0
    raise InvalidParameterError(f"a colour space other than 'rgb' needs unsigned or float pixels, not {dtype}")


def _inflate(payload: bytes, dtype: str, size: int) -> np.ndarray:
    return np.frombuffer(zlib.decompress(payload), dtype=dtype, count=size)


def _block_lookup(block: np.ndarray, lut: np.ndarray, bits: int, sentinel: int, centers: np.ndarray,
                  dtype: np.dtype) -> np.ndarray:
    labels = kernels.lookup_labels(block.reshape(-1, block.shape[-1]), bits, lut, sentinel, centers, dtype)
    return labels.reshape(block.shape[:-1])


def _block_to_space(block: np.ndarray, space: str, scale: float) -> np.ndarray:
    flat = to_space(block.reshape(-1, block.shape[-1]), space, scale)
    return flat.reshape(block.shape[:-1] + (3,))


class SpaceKMeans:
    """A k-means fit done in a colour space, presented as the sRGB palette it gives.

    Attributes
    ----------
    space_ : str
        "oklab" or "lab".
    cluster_centers_ : ndarray of shape (k, 3)
        The centres in sRGB on the source's scale (float64, clipped to the gamut).
    centers_space_ : ndarray of shape (k, 3)
        The centres in the space (OKLab and CIELAB with L in [0, 100]).
    labels_ : dask array of shape (H, W)
        Label of every pixel: its nearest centre in the space.
    inertia_ : float
        Weighted sum of squared distances in the space.
    n_iter_ : int
    strategy_ : str
        "histogram" (distinct colours, weighted) or "pixels".
    histogram_ : ColourHistogram or None
    estimator_ : KMeans
        The estimator fitted on the transformed colours or pixels.
    """

    def __init__(self, space: str, estimator: KMeans, scale: float) -> None:
        self.space_ = space
        self.estimator_ = estimator
        self.centers_space_ = np.asarray(estimator.cluster_centers_, dtype=np.float64)
        self.cluster_centers_ = np.clip(from_space(self.centers_space_, space, scale), 0.0, scale)
        self.inertia_ = float(estimator.inertia_)
        self.n_iter_ = int(getattr(estimator, "n_iter_", 0))
        self.histogram_: Any = None
        self.strategy_ = "pixels"
        self.labels_: Any = None
        self._lut: tuple[np.ndarray, int, int] | None = None

    def lookup_table(self) -> tuple[np.ndarray, int, int] | None:
        """(lut, bits, sentinel) of a histogram fit, as :meth:`bigquant.KMeans.lookup_table`; else None."""
        return self._lut

    def lookup_table_key(self) -> Any:
        """The table as one dask graph key, shipped zlib-compressed and inflated once per worker."""
        lut, _, _ = self._lut
        payload = zlib.compress(lut.tobytes(), 1)
        token = dask.base.tokenize(payload)
        return dask.delayed(_inflate, pure=True)(payload, lut.dtype.str, lut.shape[0],
                                                 dask_key_name=f"{tasks.SPACE_LUT}-{token}")


def fit_in_space(
    data: da.Array,
    n_clusters: int,
    space: str,
    *,
    valid: da.Array | None = None,
    strategy: str = "auto",
    random_state: Any = None,
    **kmeans_kwargs: Any,
) -> SpaceKMeans:
    """Fit k-means to the colours of an RGB image in ``space``.

    Parameters
    ----------
    data : dask array of shape (H, W, 3)
        sRGB pixels: uint8, uint16 or floats in [0, 1].
    n_clusters : int
    space : {"oklab", "lab"}
    valid : dask array of shape (H, W) of bool or None, default=None
        Pixels that take part in the fit.
    strategy : {"auto", "histogram", "pixels", "minibatch"}, default="auto"
        "auto" and "histogram" use the distinct colours of 8-bit input.
    random_state, **kmeans_kwargs
        Passed to :class:`bigquant.KMeans`.

    Returns
    -------
    SpaceKMeans

    Raises
    ------
    InvalidParameterError
        The image does not have 3 bands, or an unusable type.
    """
    space = check_space(space)
    if data.ndim != 3 or data.shape[2] != 3:
        raise InvalidParameterError(
            f"space={space!r} needs an RGB image of 3 bands, not shape {tuple(data.shape)}"
        )
    scale = source_scale(data.dtype)
    bits = histogram_bits(data.dtype, 3)
    if bits is not None and strategy in ("auto", "histogram"):
        hist = colour_histogram(data, valid=valid)
        if hist.n_colours == 0:
            raise InvalidInputError("every sample is masked: nothing to fit")
        coords = to_space(hist.colours, space, scale)
        est = KMeans(min(n_clusters, hist.n_colours), strategy="pixels", random_state=random_state,
                     **kmeans_kwargs).fit(coords, sample_weight=hist.counts.astype(np.float64))
        model = SpaceKMeans(space, est, scale)
        model.histogram_ = hist
        model.strategy_ = "histogram"
        colour_labels = np.asarray(est.labels_).reshape(-1)
        sentinel = len(model.cluster_centers_)
        model._lut = (kernels.build_lut(hist.codes, colour_labels, bits * 3, sentinel), bits, sentinel)
        lut_key = model.lookup_table_key()
        dtype = index_dtype(sentinel)
        if data.numblocks[2] != 1:
            data = data.rechunk({2: -1})
        # colours outside the table (only masked ones) take the nearest sRGB centre
        model.labels_ = data.map_blocks(
            _block_lookup, lut_key, bits, sentinel, model.cluster_centers_, dtype,
            drop_axis=2, dtype=dtype, token=tasks.SPACE_LABELS,
        )
        logger.info("fitted %d colours in %s on %d distinct colours", sentinel, space, hist.n_colours)
        return model
    coords = data.map_blocks(_block_to_space, space, scale, dtype=np.float64, chunks=data.chunks[:2] + ((3,),))
    pixel_strategy = "pixels" if strategy in ("auto", "histogram") else strategy
    est = KMeans(n_clusters, strategy=pixel_strategy, random_state=random_state, **kmeans_kwargs).fit(
        coords, sample_weight=valid
    )
    model = SpaceKMeans(space, est, scale)
    model.strategy_ = getattr(est, "strategy_", pixel_strategy)
    model.labels_ = est.labels_
    return model


def sweep_in_space(
    hist: Any,
    ks: list[int],
    space: str,
    *,
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    seeds: dict[int, int] | None = None,
) -> Iterator[tuple[int, float, float, int, float, np.ndarray]]:
    """Fit every k in ``space`` on one colour histogram (the distinct colours transformed once).

    Yields
    ------
    (k, cost, inertia, n_iter, seconds, palette)
        ``cost``: the weighted sum of squared sRGB errors of the rounded sRGB
        ``palette``; ``inertia``: the k-means objective in the space.
    """
    space = check_space(space)
    scale = source_scale(hist.colours.dtype)
    coords = to_space(hist.colours, space, scale)
    weights = hist.counts.astype(np.float64)
    colours = hist.colours.astype(np.float64)
    for k in ks:
        start = time.perf_counter()
        est = KMeans(min(k, hist.n_colours), strategy="pixels", n_init=n_init, max_iter=max_iter, tol=tol,
                     random_state=None if seeds is None else seeds.get(k)).fit(coords, sample_weight=weights)
        seconds = time.perf_counter() - start
        palette = np.clip(np.rint(from_space(np.asarray(est.cluster_centers_), space, scale)), 0, scale)
        labels = np.asarray(est.labels_).reshape(-1)
        diff = colours - palette[labels]
        cost = float(np.einsum("i,ij,ij->", weights, diff, diff))
        yield k, cost, float(est.inertia_), int(getattr(est, "n_iter_", 0)), seconds, palette
