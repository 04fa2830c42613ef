"""Map an image to a palette it was not fitted on: the estimator that applies a given palette.

:class:`FixedPalette` has the fitted face of :class:`~bigquant.KMeans`
(``cluster_centers_``, ``labels_``, ``predict``, lookup tables) for colours
given up front; ``fit`` fits nothing.  Labels are the nearest palette colour
with the lowest index on ties, the distance and tie-break of every k-means
path, so applying the palette a fit wrote gives the fit's own labels.

The colours of an 8-bit image (code space of at most 24 bits) are labelled
once for every possible colour (:func:`bigquant.cluster.palette.full_lookup_table`),
so an image is mapped in one read pass; given the image's colour histogram,
only its colours are.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np

from bigquant.cluster.base import _LUT_MIN_PIXELS, KMeansBase
from bigquant.cluster.cells import CellGrid
from bigquant.cluster.histogram import ColourHistogram, histogram_bits
from bigquant.cluster.palette import (
    MAX_FULL_TABLE_BITS,
    full_lookup_table,
    palette_error,
)
from bigquant.cluster.validation import check_data
from bigquant.errors import InvalidInputError, InvalidParameterError

__all__ = ["FixedPalette"]


class FixedPalette(KMeansBase):
    """Nearest-colour mapping to a given palette.

    Parameters
    ----------
    palette : array-like of shape (k, n_channels)
        The colours, in the units of the data (e.g. 0..255 for uint8).
    split_every : int, default=8
        Fan-in of reductions (as :class:`bigquant.KMeans`).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (k, n_channels)
        The palette as float64.
    labels_ : ndarray or dask array of shape (n_samples,) or (H, W)
        Index of the nearest palette colour of each sample (lazy for dask input).
    inertia_ : float
        Squared error of the samples to their palette colour when the colour
        histogram was given to ``fit``; NaN otherwise (no pass over the data
        is made to fit a given palette).
    n_iter_ : int
        Always 0.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0, 0, 0], [250, 250, 250], [10, 10, 10]], dtype=np.uint8)
    >>> FixedPalette([[0, 0, 0], [255, 255, 255]]).fit(X).labels_.tolist()
    [0, 1, 0]
    """

    def __init__(self, palette: Any = None, *, split_every: int = 8):
        self.palette = palette
        self.split_every = split_every

    def _check_palette(self, n_channels: int) -> np.ndarray:
        if self.palette is None:
            raise InvalidParameterError("palette=None: FixedPalette needs the colours to map to")
        pal = np.asarray(self.palette, dtype=np.float64)
        if pal.ndim == 1 and n_channels == 1:
            pal = pal[:, None]
        if pal.ndim != 2 or pal.shape[0] < 1:
            raise InvalidParameterError(f"palette of shape {pal.shape} must be (n_colours >= 1, n_channels)")
        if pal.shape[1] != n_channels:
            raise InvalidInputError(
                f"the palette has {pal.shape[1]} channel(s) per colour but the image has {n_channels}"
            )
        if not np.all(np.isfinite(pal)):
            raise InvalidParameterError("palette holds NaN or infinite values")
        return np.ascontiguousarray(pal)

    def fit(
        self, X: Any, y: Any = None, sample_weight: Any = None, *, histogram: ColourHistogram | None = None,
        histogram_labels: tuple[float, np.ndarray] | None = None, cells: CellGrid | None = None,
    ) -> FixedPalette:
        """Prepare the mapping of ``X`` to the palette (nothing is fitted).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_channels) or (height, width, n_channels)
        y : Ignored
        sample_weight : Ignored
            Accepted for the estimator contract; a mask is applied by the caller.
        histogram : ColourHistogram, default=None
            The colours of ``X`` if already counted: only they are looked up,
            and ``inertia_`` is their exact squared error.
        histogram_labels : (float, ndarray of shape (n_colours,)), default=None
            The squared error of ``histogram`` and the nearest palette colour
            of each of its colours, when already known (what
            :func:`bigquant.cluster.palette.palette_error` gives, e.g. from
            :meth:`bigquant.KMeans.palette_labels`): not computed again.
        cells : CellGrid, default=None
            A grid of value cells over the range of ``X`` (e.g.
            :meth:`bigquant.KMeans.cell_grid` of the fit): the labels are
            looked up through it (the same labels; used without a lookup table).

        Returns
        -------
        self : FixedPalette
        """
        data = check_data(X)
        centers = self._check_palette(data.n_channels)
        if histogram is not None:
            if histogram_labels is not None and len(histogram_labels[1]) == histogram.n_colours:
                inertia, colour_labels = float(histogram_labels[0]), np.asarray(histogram_labels[1])
            else:
                inertia, colour_labels = palette_error(histogram.colours, histogram.counts, centers)
            if data.is_dask or histogram.inverse is None or histogram.inverse.shape[0] != data.n_samples:
                # the pixel -> colour index of in-memory data only serves that data
                histogram = ColourHistogram(histogram.colours, histogram.counts, histogram.codes, histogram.bits)
            # the labels of the distinct colours, computed with the error: the lookup table's
            return self._set_fitted(data, "palette", histogram, centers, inertia, 0, colour_labels)
        bits = histogram_bits(data.array.dtype, data.n_channels)
        lut = None
        if (
            bits is not None
            and bits * data.n_channels <= MAX_FULL_TABLE_BITS
            and (data.is_dask or data.n_samples >= _LUT_MIN_PIXELS)  # else a direct scan is cheaper
        ):
            lut = (full_lookup_table(centers, bits, data.n_channels), bits, len(centers))
        # the table is a function of the palette: its token need not hash its 16 MiB
        token = None if lut is None else dask.base.tokenize("full-table", centers, bits, data.n_channels)
        return self._set_fitted(data, "palette", None, centers, float("nan"), 0, lut=lut, lut_token=token,
                                cells=cells if lut is None else None)
