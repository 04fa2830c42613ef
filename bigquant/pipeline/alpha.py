"""Soft alpha kept as pngquant keeps it: alpha fitted as a fourth channel, colours premultiplied.

An RGBA image whose alpha has levels strictly between 0 and full (a feathered
edge, an anti-aliased logo) is quantized as libimagequant does (``src/pal.rs``,
``f_pixel::from_rgba``): every pixel with some opacity becomes the point

    (R * a, G * a, B * a, ALPHA_WEIGHT * A)        a = A / full

in the data's units, and k-means runs on those points.  Premultiplying makes a
nearly transparent pixel's colour count as little as it shows: its colour
barely pulls a centre, and averaging a cluster averages what is seen.
Fully transparent pixels (alpha 0) take no part in the fit: they are masked,
as before, and share one palette entry of alpha 0 (the nodata index).  The
palette is the centres un-premultiplied -- straight RGBA, alpha ``A`` =
centre / ``ALPHA_WEIGHT``, colour = centre / a -- rounded to the source's type;
each pixel takes the entry nearest in the premultiplied space.

The weight of alpha follows libimagequant's colour difference: it weighs R, G,
B by 0.5, 1.0, 0.45 and alpha by 0.625, and counts a pixel's error on black
and on white backgrounds, so an error of alpha alone (a black pixel made more
or less opaque) costs ``3 * 0.625**2`` where an error of one colour channel
costs on average ``(0.5**2 + 1 + 0.45**2) / 3``.  bigquant weighs R, G and B
equally (and without libimagequant's gamma), so alpha gets the same ratio to
the average colour channel: ``ALPHA_WEIGHT = sqrt(3 * 0.625**2 / 0.484)``,
about 1.56 -- an alpha error counts as much as a colour error of about 1.56
times its size.
libimagequant premultiplies after converting to its internal gamma (0.57);
bigquant premultiplies the stored sRGB values, which its RGB fit works on.
Its k-means is Lloyd's on every pixel (strategy "pixels": RGBA has 32 bits a
pixel, past the exact colour histogram's 24), with squared distances, where
libimagequant takes the larger of the errors on black and on white.

Images whose alpha is only 0 or full keep the binary mask: no alpha channel is
fitted (``alpha="auto"`` checks the alpha channel once to know).

Outputs: a palette PNG keeps each entry's alpha in its tRNS chunk; ``mode="rgb"``
(PNG, or a TIFF with ExtraSamples = unassociated alpha) writes RGBA; a zarr
array keeps the RGBA palette in its attributes.  A palette TIFF's colormap
holds no alpha, and JPEG holds none at all: ``alpha="fit"`` refuses them and
``alpha="auto"`` reads the alpha as a mask for them, as before.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import dask.array as da
import numpy as np

from bigquant.errors import InvalidParameterError

__all__ = [
    "ALPHA_MODES", "ALPHA_WEIGHT", "AlphaKMeans", "alpha_blocker", "check_alpha", "fit_alpha",
    "has_partial_alpha", "premultiply", "transparent_entry", "unpremultiply",
]

logger = logging.getLogger(__name__)

#: how an image's alpha channel is used: "auto" (fitted when it has levels between 0 and full,
#: else a mask), "mask" (alpha 0 is masked, every other pixel opaque), "fit" (fitted as a channel)
ALPHA_MODES = ("auto", "mask", "fit")

# libimagequant's channel weights (src/pal.rs: LIQ_WEIGHT_R, _G, _B, _A)
_LIQ_WEIGHTS_RGB = (0.5, 1.0, 0.45)
_LIQ_WEIGHT_A = 0.625
#: weight of alpha against R, G and B (equal weights) in the premultiplied fit: libimagequant's
#: cost of an alpha error (on black and white, three channels) over its mean cost of a colour error
ALPHA_WEIGHT = math.sqrt(3 * _LIQ_WEIGHT_A**2 / (sum(w * w for w in _LIQ_WEIGHTS_RGB) / 3))


def check_alpha(value: Any) -> str:
    """Validate the ``alpha`` option; return it.

    Raises
    ------
    InvalidParameterError
        ``value`` is not one of :data:`ALPHA_MODES`.
    """
    if not isinstance(value, str) or value not in ALPHA_MODES:
        raise InvalidParameterError(f"alpha={value!r} must be one of {', '.join(map(repr, ALPHA_MODES))}")
    return value


def alpha_blocker(request: Any, source: Any) -> str | None:
    """Why the alpha of ``source`` cannot be fitted for ``request``; None when it can.

    Only metadata are read: the image has an RGBA alpha channel, the options
    leave it (no ``mask=False``, a palette fitted in RGB by k-means without
    dither, display bands or quality target) and every output holds alpha.
    """
    from bigquant.io.write import FORMATS

    fit, write = request.fit, request.write
    if getattr(source, "alpha", None) is None:
        return "the image has no alpha channel"
    if source.channels != 3:
        return f"the image has {source.channels} colour band(s) besides alpha; only RGBA is fitted with its alpha"
    if np.dtype(source.dtype) not in (np.uint8, np.uint16):
        return f"the image is {np.dtype(source.dtype)}; alpha is fitted on uint8 or uint16 RGBA"
    if request.read.mask is False:
        return "mask=False ignores the file's alpha"
    reasons = [
        (fit.palette is not None, "a given palette"), (request.target is not None, "a quality target"),
        (fit.space != "rgb", f"space={fit.space!r}"), (request.map.dither is not None, "dither"),
        (write.rgb_bands is not None, "rgb_bands"),
        (fit.strategy in ("histogram", "grid"), f"strategy={fit.strategy!r} (alpha needs 'pixels' or 'minibatch')"),
    ]
    for present, what in reasons:
        if present:
            return f"{what} does not fit alpha"
    for dst in request.outputs:
        fmt = FORMATS.get(dst.suffix.lower())
        if fmt == "jpeg":
            return f"{dst}: JPEG holds no alpha"
        if fmt == "tiff" and write.mode == "palette":
            return (f"{dst}: a palette TIFF's colormap holds no alpha; write mode='rgb' (RGBA, unassociated "
                    "alpha) or a .png")
    return None


def has_partial_alpha(alpha: da.Array) -> bool:
    """Whether some alpha lies strictly between 0 and its type's full value (one pass over the alpha)."""
    full = np.iinfo(alpha.dtype).max
    return bool(((alpha > 0) & (alpha < full)).any().compute())


def _premultiply_block(block: np.ndarray, full: float, weight: float) -> np.ndarray:
    rgba = block.astype(np.float32)
    a = rgba[..., 3:4] / np.float32(full)
    out = np.empty(block.shape, dtype=np.float32)
    out[..., :3] = rgba[..., :3] * a
    out[..., 3] = rgba[..., 3] * np.float32(weight)
    return out


def premultiply(rgba: Any, *, weight: float = ALPHA_WEIGHT) -> Any:
    """The points the fit clusters: (R a, G a, B a, ``weight`` A), a = A / full, as float32.

    Parameters
    ----------
    rgba : ndarray or dask array of shape (..., 4), uint8 or uint16
        Straight (not premultiplied) RGBA.
    weight : float, default=ALPHA_WEIGHT

    Examples
    --------
    >>> premultiply(np.array([[255, 0, 0, 51]], np.uint8), weight=1.0).tolist()
    [[51.0, 0.0, 0.0, 51.0]]
    """
    full = float(np.iinfo(rgba.dtype).max)
    if isinstance(rgba, da.Array):
        if rgba.numblocks[-1] != 1:
            rgba = rgba.rechunk({rgba.ndim - 1: -1})
        return rgba.map_blocks(_premultiply_block, full, weight, dtype=np.float32)
    return _premultiply_block(np.asarray(rgba), full, weight)


def unpremultiply(points: np.ndarray, dtype: Any, *, weight: float = ALPHA_WEIGHT) -> np.ndarray:
    """Straight RGBA of ``dtype`` of premultiplied points (:func:`premultiply`'s inverse, rounded).

    Alpha is rounded first and the colour divided by the rounded alpha; a
    point of alpha 0 is transparent black.

    Examples
    --------
    >>> unpremultiply(np.array([[51.0, 0.0, 0.0, 51.0]]), np.uint8, weight=1.0).tolist()
    [[255, 0, 0, 51]]
    """
    dtype = np.dtype(dtype)
    full = float(np.iinfo(dtype).max)
    points = np.asarray(points, dtype=np.float64)
    alpha = np.clip(np.rint(points[:, 3] / weight), 0, full)
    a = alpha / full
    colour = np.divide(points[:, :3], a[:, None], out=np.zeros_like(points[:, :3]), where=a[:, None] > 0)
    out = np.empty((len(points), 4), dtype=dtype)
    out[:, :3] = np.clip(np.rint(colour), 0, full)
    out[:, 3] = alpha
    return out


def transparent_entry(colours: np.ndarray, index: int) -> np.ndarray:
    """RGBA ``colours`` with transparent black entries up to ``index`` (the fully transparent pixels' entry).

    Examples
    --------
    >>> transparent_entry(np.array([[9, 9, 9, 128]], np.uint8), 1).tolist()
    [[9, 9, 9, 128], [0, 0, 0, 0]]
    """
    out = np.zeros((max(len(colours), index + 1), colours.shape[1]), dtype=colours.dtype)
    out[: len(colours)] = colours
    return out


class AlphaKMeans:
    """A k-means fit of premultiplied RGBA, presented as the straight RGBA palette it gives.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (k, 4)
        The palette: straight RGBA on the source's scale (float64 of the rounded entries).
    centers_premultiplied_ : ndarray of shape (k, 4)
        The palette as points of the fit (:func:`premultiply`): what pixels are mapped to.
    labels_ : dask array of shape (H, W)
        Every pixel's entry: the nearest in the premultiplied space.
    inertia_ : float
        The fit's weighted sum of squared distances, in the premultiplied space.
    n_iter_ : int
    strategy_ : str
    estimator_ : KMeans
        The estimator fitted on the premultiplied pixels.
    histogram_ : None
        No colour histogram (RGBA has 32 bits a pixel).
    """

    def __init__(self, estimator: Any, palette: np.ndarray, labels: Any, weight: float) -> None:
        self.estimator_ = estimator
        self.cluster_centers_ = np.asarray(palette, dtype=np.float64)
        self.centers_premultiplied_ = premultiply(np.asarray(palette), weight=weight).astype(np.float64)
        self.labels_ = labels
        self.inertia_ = float(getattr(estimator, "inertia_", float("nan")))
        self.n_iter_ = int(getattr(estimator, "n_iter_", 0))
        self.strategy_ = getattr(estimator, "strategy_", "pixels")
        self.histogram_: Any = None

    def lookup_table(self) -> None:
        """No colour -> label table (32-bit RGBA): labels come from :attr:`labels_`."""
        return None


def fit_alpha(
    rgba: da.Array,
    valid: da.Array | None,
    n_clusters: int,
    *,
    weight: float = ALPHA_WEIGHT,
    strategy: str = "auto",
    **kmeans_kwargs: Any,
) -> AlphaKMeans:
    """Fit ``n_clusters`` RGBA entries to premultiplied pixels; label every pixel.

    Parameters
    ----------
    rgba : dask array of shape (H, W, 4), uint8 or uint16
        Straight RGBA pixels.
    valid : dask array of shape (H, W) of bool or None
        Pixels fitted (alpha 0 and other masked pixels are not).
    n_clusters : int
    weight : float, default=ALPHA_WEIGHT
        Weight of alpha against each colour channel.
    strategy : {"auto", "pixels", "minibatch"}, default="auto"
        "auto" is "pixels" (exact Lloyd over every pixel).
    **kmeans_kwargs
        Passed to :class:`bigquant.KMeans`.

    Returns
    -------
    AlphaKMeans

    Raises
    ------
    InvalidInputError
        Every pixel is masked (as :meth:`bigquant.KMeans.fit`).
    """
    from bigquant.cluster.fixed import FixedPalette
    from bigquant.cluster.kmeans import KMeans

    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise InvalidParameterError(f"alpha is fitted on RGBA pixels (H, W, 4), not shape {tuple(rgba.shape)}")
    points = premultiply(rgba, weight=weight)
    pixel_strategy = "pixels" if strategy in ("auto", "histogram", "grid") else strategy
    estimator = KMeans(n_clusters, strategy=pixel_strategy, **kmeans_kwargs).fit(points, sample_weight=valid)
    palette = unpremultiply(estimator.cluster_centers_, rgba.dtype, weight=weight)
    # the labels of the entries written (rounded), not of the centres
    mapper = FixedPalette(premultiply(palette, weight=weight).astype(np.float64)).fit(points)
    model = AlphaKMeans(estimator, palette, mapper.labels_, weight)
    levels = np.unique(palette[:, 3]).size
    logger.info("fitted %d RGBA entries (alpha weight %.3f, %d alpha levels, %s iterations)", len(palette),
                weight, levels, model.n_iter_)
    return model
