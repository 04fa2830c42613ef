"""What every k-means estimator shares once fitted: labels, lookup tables, predict/transform/score.

:class:`~bigquant.cluster.kmeans.KMeans` and
:class:`~bigquant.cluster.minibatch.MiniBatchKMeans` both derive from
:class:`KMeansBase`, as scikit-learn's two estimators derive from ``_BaseKMeans``;
``KMeans(strategy="minibatch")`` runs a ``MiniBatchKMeans`` and copies its result.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
import zlib
from typing import Any

import dask
import dask.array as da
import numpy as np

from bigquant import kernels, tasks
from bigquant.cluster.cells import CellGrid
from bigquant.cluster.histogram import ColourHistogram
from bigquant.cluster.lloyd import repeat_heaviest
from bigquant.cluster.palette import refine_integer_palette
from bigquant.cluster.points import DaskPoints, InMemoryPoints, PointSet
from bigquant.cluster.scheduler import active_client
from bigquant.cluster.validation import (
    Data,
    check_data,
    check_sample_weight,
    label_dtype,
)
from bigquant.errors import (
    FewColoursWarning,
    InvalidInputError,
    InvalidParameterError,
    not_fitted,
)

__all__ = ["BaseEstimator", "KMeansBase", "warn_few_clusters"]

#: in-memory inputs below this many pixels are labelled by a direct scan, not a table
_LUT_MIN_PIXELS = 1 << 22


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside bigquant, seen from the function calling this one."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back
        level += 1
    return level


def warn_few_clusters(n_distinct: int, n_clusters: int) -> None:
    """Warn, in scikit-learn's words, that a fit found fewer distinct clusters than ``n_clusters``.

    The category is :class:`~bigquant.errors.FewColoursWarning`, a
    :class:`~bigquant.errors.ConvergenceWarning` as scikit-learn's is; the
    warning points at the first line outside bigquant (the caller's ``fit``).
    """
    warnings.warn(
        f"Number of distinct clusters ({n_distinct}) found smaller than n_clusters ({n_clusters}). "
        "Possibly due to duplicate points in X.",
        FewColoursWarning,
        stacklevel=_caller_stacklevel(),
    )


class BaseEstimator:
    """``get_params`` / ``set_params`` / ``repr`` from the ``__init__`` signature."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of this estimator, as given to ``__init__``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> BaseEstimator:
        """Set parameters; unknown names raise ``InvalidParameterError``."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise InvalidParameterError(
                    f"invalid parameter {name!r} for {type(self).__name__}; valid: {sorted(valid)}"
                )
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags of a clusterer with ``transform`` (asked for by scikit-learn >= 1.6).

        scikit-learn is imported here only, when scikit-learn itself asks: it is
        not a dependency of bigquant.
        """
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type="clusterer", target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(), input_tags=InputTags(sparse=False))

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        changed = []
        for name in self._param_names():
            default = sig.parameters[name].default
            value = getattr(self, name)
            if isinstance(value, np.ndarray) or value is not default and value != default:
                shown = "array" if isinstance(value, np.ndarray) else repr(value)
                changed.append(f"{name}={shown}")
        return f"{type(self).__name__}({', '.join(changed)})"


def _inflate_lut(payload: bytes, dtype: str, size: int) -> np.ndarray:
    """Rebuild a lookup table shipped compressed (see ``KMeansBase.lookup_table_key``)."""
    return np.frombuffer(zlib.decompress(payload), dtype=dtype, count=size)


def _block_assign(block: np.ndarray, centers: np.ndarray, dtype: np.dtype) -> np.ndarray:
    labels, _ = kernels.assign_labels(block.reshape(-1, block.shape[-1]), centers, dtype)
    return labels.reshape(block.shape[:-1])


def _block_cell_labels(block: np.ndarray, cells: CellGrid, centers: np.ndarray, dtype: np.dtype) -> np.ndarray:
    labels = cells.labels(np.ascontiguousarray(block).reshape(-1, block.shape[-1]), centers, dtype)
    return labels.reshape(block.shape[:-1])


def _block_lookup(
    block: np.ndarray, lut: np.ndarray, bits: int, sentinel: int, centers: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    labels = kernels.lookup_labels(block.reshape(-1, block.shape[-1]), bits, lut, sentinel, centers, dtype)
    return labels.reshape(block.shape[:-1])


def _block_distances(block: np.ndarray, centers: np.ndarray) -> np.ndarray:
    X = block.reshape(-1, block.shape[-1]).astype(np.float64)
    out = np.empty((X.shape[0], centers.shape[0]))
    step = 1 << 16
    for i in range(0, X.shape[0], step):
        diff = X[i : i + step, None, :] - centers[None, :, :]
        out[i : i + step] = np.sqrt((diff * diff).sum(axis=-1))
    return out.reshape(block.shape[:-1] + (centers.shape[0],))

class KMeansBase(BaseEstimator):
    """Fitted-state behaviour shared by the k-means estimators (not used directly)."""

    split_every: int

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise not_fitted(
                f"this {type(self).__name__} instance is not fitted yet; call 'fit' first"
            )

    def _set_fitted(
        self,
        data: Data,
        strategy: str,
        histogram: ColourHistogram | None,
        centers: np.ndarray,
        inertia: float,
        n_iter: int,
        colour_labels: np.ndarray | None = None,
        lut: tuple[np.ndarray, int, int] | None = None,
        lut_token: str | None = None,
        cells: CellGrid | None = None,
    ) -> KMeansBase:
        """Store the fitted attributes and the (lazy) labels of the training data.

        ``lut`` is a lookup table already built (see :meth:`lookup_table`),
        ``lut_token`` a token of what it was built from (else the table is hashed).
        ``cells``, a grid of value cells over the data's range, labels the
        data without a lookup table (:mod:`bigquant.cluster.cells`).
        """
        self._cells = cells
        self.strategy_ = strategy
        self.histogram_ = histogram
        self.cluster_centers_ = centers
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        self.n_features_in_ = data.n_channels
        self._dtype_in = data.array.dtype
        self._lut = lut
        self._lut_token = lut_token
        self._lut_source = histogram
        self._palette = None
        self._palette_labels = None
        self._colour_labels = None if colour_labels is None else colour_labels.astype(label_dtype(len(centers)))
        if histogram is not None and histogram.inverse is not None:
            # in-memory input: every pixel's label is its colour's
            self.labels_ = kernels.take(self._labels_of_colours(), histogram.inverse).reshape(data.spatial_shape)
            histogram.inverse = None
        elif (histogram is not None and self._colour_labels is not None and not data.is_dask
              and data.array is histogram.colours):
            self.labels_ = self._colour_labels  # fitted on the histogram itself: its colours' labels
        else:
            self.labels_ = self._labels(data)
        return self

    def cell_grid(self) -> CellGrid | None:
        """The grid of value cells the labels are looked up through (:mod:`bigquant.cluster.cells`), if any.

        The grid strategy's, over the exact range of the pixels it counted;
        it serves the labels of any centres (e.g. a palette of the centres
        rounded): pass it to :meth:`bigquant.cluster.fixed.FixedPalette.fit`.
        """
        return getattr(self, "_cells", None)

    def block_labels(self) -> Any:
        """The function ``labels_`` maps each block of pixels (h, w, C) with, to labels (h, w), or None.

        That of a dask ``labels_`` labelled without a lookup table: through the
        value cells (:meth:`cell_grid`) or by a full scan.  A writer can call it
        on the pixels it holds (and measure them with the labels, in the same
        read): the labels are those of ``labels_``.  None when ``labels_`` is
        looked up in a table (8-bit data; see :meth:`lookup_table`) or was not
        built on dask.
        """
        import functools

        self._check_fitted()
        labels = getattr(self, "labels_", None)
        if not isinstance(labels, da.Array) or self._lut is not None or getattr(self, "_lut_source", None) is not None:
            return None
        centers = self.cluster_centers_
        dtype = label_dtype(len(centers))
        cells = getattr(self, "_cells", None)
        if cells is not None and cells.lo.shape[0] == self.n_features_in_:
            return functools.partial(_block_cell_labels, cells=cells, centers=centers, dtype=dtype)
        return functools.partial(_block_assign, centers=centers, dtype=dtype)

    def histogram_labels(self) -> np.ndarray | None:
        """Label of every distinct colour of ``histogram_`` (``None`` without a histogram).

        Known from the fit (or from the palette's error), else computed once.
        """
        self._check_fitted()
        if getattr(self, "_lut_source", None) is None:
            return None
        return self._labels_of_colours()

    def _labels_of_colours(self) -> np.ndarray:
        """Label of every distinct colour of the fitted histogram."""
        dtype = label_dtype(len(self.cluster_centers_))
        if getattr(self, "_colour_labels", None) is None:
            self._colour_labels = self._lut_source.points().labels(self.cluster_centers_, dtype)
        return self._colour_labels.astype(dtype, copy=False)

    def _fit_few_colours(self, data: Data, histogram: ColourHistogram) -> KMeansBase:
        """The fit of a histogram of at most ``n_clusters`` colours, at once: every colour a centre.

        As scikit-learn: ``n_clusters`` centres, the colours (in code order)
        and copies of the most frequent one, inertia 0; one Lloyd iteration
        (the assignment of every colour to itself) and, with fewer colours
        than ``n_clusters``, one :func:`warn_few_clusters`.
        """
        k = int(self.n_clusters)
        n = histogram.n_colours
        centers = repeat_heaviest(histogram.colours, histogram.counts, k)
        if n < k:
            warn_few_clusters(n, k)
        # each colour is its own nearest centre (the copies come after it)
        return self._set_fitted(data, "histogram", histogram, centers, 0.0, 1, np.arange(n))

    def _build_lut(self, histogram: ColourHistogram) -> tuple[np.ndarray, int, int]:
        labels = self._labels_of_colours()
        sentinel = len(self.cluster_centers_)
        lut = kernels.build_lut(histogram.codes, labels, histogram.bits * self.n_features_in_, sentinel)
        self._lut_token = self._table_token(histogram)
        return lut, histogram.bits, sentinel

    def _table_token(self, histogram: ColourHistogram) -> str:
        """A token of the lookup table of ``histogram``'s colours to the nearest centre.

        Any such table gives the same labels (a colour it does not hold takes
        its nearest centre, with the same ties), so the token names the
        centres and the histogram's size rather than hashing its codes (40 MB
        at 10 M colours) or the table (16 MiB).
        """
        return dask.base.tokenize("nearest", np.asarray(self.cluster_centers_), histogram.bits,
                                  len(self.cluster_centers_), histogram.n_colours, histogram.n_pixels)

    def _labels_table_key(self, X: da.Array) -> tuple[Any, int, int]:
        """The lookup table of the lazy ``labels_`` of ``X`` as a graph key, with its bits and sentinel.

        Without a distributed client and before anyone asked for the table, a
        task that builds it when the labels are computed (a fit whose labels
        are never computed, as :func:`bigquant.quantize`'s, whose writer
        looks up its palette's own table, builds none).  Any table of these
        centres gives the same labels (a colour it does not hold takes its
        nearest centre): the key is :meth:`_table_token`'s.
        """
        histogram = getattr(self, "_lut_source", None)
        if self._lut is not None or histogram is None or active_client() is not None:
            _, bits, sentinel = self.lookup_table()
            return self.lookup_table_key(), bits, sentinel
        sentinel = len(self.cluster_centers_)
        key = f"{tasks.LUT}-{self._table_token(histogram)}"
        lut = dask.delayed(kernels.build_lut, pure=True)(
            histogram.codes, self._labels_of_colours(), histogram.bits * self.n_features_in_, sentinel,
            dask_key_name=key)
        return lut, histogram.bits, sentinel

    def lookup_table_key(self) -> Any:
        """The lookup table as one key of a dask graph.

        A graph key (rather than a scattered future) is fetched once per worker
        and re-created if every worker holding it dies. The table, mostly the
        "absent colour" marker, travels zlib-compressed (16 MB -> typically a
        few MB) and is inflated once on each worker. Without a distributed
        client nothing travels: the key holds the table itself (compressing
        it would cost more than the rest of a small image's run).
        """
        lut, _, _ = self.lookup_table()
        token = getattr(self, "_lut_token", None)
        if active_client() is None:
            # hashing the table itself would cost more than the rest of a small image's run
            return dask.delayed(lut, name=f"{tasks.LUT}-{token or dask.base.tokenize(lut)}")
        payload = zlib.compress(lut.tobytes(), 1)
        token = dask.base.tokenize(payload)
        return dask.delayed(_inflate_lut, pure=True)(
            payload, lut.dtype.str, lut.shape[0], dask_key_name=f"{tasks.LUT}-{token}"
        )

    def lookup_table(self) -> tuple[np.ndarray, int, int] | None:
        """The colour -> label table of a histogram fit, built on first use.

        Returns
        -------
        (lut, bits, sentinel) or None
            ``lut[code]`` is the label of the colour with that code (see
            :func:`bigquant.kernels.encode_colours` with ``bits`` per channel);
            colours the fit never saw hold ``sentinel`` and take their nearest
            centre. ``None`` when the model was not fitted on a histogram.
        """
        if self._lut is None and getattr(self, "_lut_source", None) is not None:
            self._lut = self._build_lut(self._lut_source)
        return self._lut

    def palette(self) -> tuple[np.ndarray, float | None]:
        """The colours a quantized image is written with, and its squared error when known.

        For integer data the centres are rounded to integer colours; on a
        histogram fit they are refined on the exact histogram
        (:func:`bigquant.cluster.palette.refine_integer_palette`) and the error
        is exactly that of the image mapped to them (each pixel to its nearest
        palette colour).  For float data the palette is the centres.

        Returns
        -------
        palette : ndarray of shape (k, n_features)
            In the data's dtype for integer data, float64 otherwise.
        error : float or None
            Summed squared error of the (counted) pixels to their nearest
            palette colour; ``None`` when no histogram was fitted.
        """
        self._check_fitted()
        cached = getattr(self, "_palette", None)
        if cached is not None:
            return cached
        dtype = np.dtype(self._dtype_in)
        centers = np.asarray(self.cluster_centers_, dtype=np.float64)
        histogram = getattr(self, "histogram_", None)
        if dtype.kind not in "ui":
            error = float(self.inertia_) if histogram is not None else None
            self._palette = (centers.copy(), error)
            return self._palette
        info = np.iinfo(dtype)
        if histogram is not None:
            pal, error, self._palette_labels = refine_integer_palette(
                histogram.colours, histogram.counts, centers, lo=float(info.min), hi=float(info.max),
                return_labels=True, octree=histogram.octree())
        else:
            pal, error = np.clip(np.rint(centers), info.min, info.max), None
        self._palette = (pal.astype(dtype), error)
        return self._palette

    def palette_labels(self) -> np.ndarray | None:
        """The nearest :meth:`palette` colour of every colour of ``histogram_`` (ties to the lowest index).

        Known once :meth:`palette` refined the palette on the histogram (the
        labels its error was computed with); ``None`` otherwise.
        """
        if getattr(self, "_palette", None) is None:
            return None
        return getattr(self, "_palette_labels", None)

    def _labels(self, data: Data) -> np.ndarray | da.Array:
        centers = self.cluster_centers_
        dtype = label_dtype(len(centers))
        use_lut = (
            (self._lut is not None or getattr(self, "_lut_source", None) is not None)
            and data.array.dtype == self._dtype_in
            and data.n_channels == self.n_features_in_
            # small in-memory inputs: a direct scan is cheaper than building the table
            and (data.is_dask or data.n_samples >= _LUT_MIN_PIXELS)
        )
        cells = getattr(self, "_cells", None)
        if cells is not None and cells.lo.shape[0] != data.n_channels:
            cells = None
        if data.is_dask:
            X = data.array
            if use_lut:
                lut_d, bits, sentinel = self._labels_table_key(X)
                return X.map_blocks(
                    _block_lookup, lut_d, bits, sentinel, centers, dtype,
                    drop_axis=X.ndim - 1, dtype=dtype, token=tasks.LABELS,
                )
            if cells is not None:
                return X.map_blocks(
                    _block_cell_labels, cells, centers, dtype, drop_axis=X.ndim - 1, dtype=dtype, token=tasks.LABELS
                )
            return X.map_blocks(
                _block_assign, centers, dtype, drop_axis=X.ndim - 1, dtype=dtype, token=tasks.LABELS
            )
        flat = data.flat()
        if use_lut:
            lut, bits, sentinel = self.lookup_table()
            labels = kernels.lookup_labels(flat, bits, lut, sentinel, centers, dtype)
        else:
            labels = InMemoryPoints(flat, cells=cells).labels(centers, dtype)
        return labels.reshape(data.spatial_shape)

    def predict(self, X: Any) -> np.ndarray | da.Array:
        """Index of the nearest centre of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_channels) or (height, width, n_channels)

        Returns
        -------
        labels : ndarray or dask array of shape (n_samples,) or (height, width)
        """
        self._check_fitted()
        data = self._check_predict_data(X)
        return self._labels(data)

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray | da.Array:
        """Fit, then return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X: Any) -> np.ndarray | da.Array:
        """Euclidean distance of each sample to every centre.

        Returns
        -------
        distances : array of shape (n_samples, n_clusters) or (height, width, n_clusters)
        """
        self._check_fitted()
        data = self._check_predict_data(X)
        centers = self.cluster_centers_
        if data.is_dask:
            X = data.array
            chunks = X.chunks[:-1] + ((len(centers),),)
            return X.map_blocks(_block_distances, centers, chunks=chunks, dtype=np.float64, token=tasks.TRANSFORM)
        return _block_distances(np.asarray(data.array), centers)

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray | da.Array:
        """Fit, then return the distances of ``X`` to the centres."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Opposite of the (weighted) inertia of ``X`` on the fitted centres."""
        self._check_fitted()
        data = self._check_predict_data(X)
        weights = check_sample_weight(sample_weight, data)
        if data.is_dask:
            points: PointSet = DaskPoints(data.array, weights, split_every=self.split_every)
        else:
            w = None if weights is None else np.ascontiguousarray(weights).reshape(-1)
            points = InMemoryPoints(data.flat(), w)
        return -points.partial_sums(self.cluster_centers_)[2]

    def _check_predict_data(self, X: Any) -> Data:
        data = check_data(X)
        if data.n_channels != self.n_features_in_:
            raise InvalidInputError(
                f"X has {data.n_channels} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (channels)"
            )
        return data
