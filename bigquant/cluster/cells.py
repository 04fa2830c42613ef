"""Nearest centres of 16-bit, float and multi-band pixels through a grid of value cells.

A full scan computes the distance from every pixel to every centre.  Most
pixels, though, lie in a cell of a coarse grid over the value range whose
nearest centre is the same for every value of the cell: :class:`CellGrid`
labels them from a table of such certain cells (one lookup and, for the
Lloyd sums, the one distance to that centre), and scans only the candidate
centres of the other cells (:mod:`bigquant.kernels.cells`).  Labels, Lloyd
sums and inertia are bit-identical to the full scans'; pixels outside the
grid's range are scanned in full.

The grid spans the pixels' per-band range (the value grid's exact minimum
and maximum, :class:`bigquant.cluster.grid.ValueGrid`): ``bits`` a band,
``2**18`` cells or fewer (a table of 1 MiB); the table of a set of centres is
built once a process (a few ms for k = 16, RGB) and cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from dask.base import tokenize

from bigquant.kernels.cells import cell_labels, cell_partial_sums, cell_sums_and_labels, cell_table

__all__ = ["CellGrid", "CELL_TABLE_BITS"]

#: cells of a table, at most 2**CELL_TABLE_BITS
CELL_TABLE_BITS = 18
#: fewest bits a band worth a table (below, most cells have several candidates)
_MIN_BITS = 2
#: work of a table build (cells x centres), at most
_MAX_WORK = 1 << 28
#: tables kept per process
_CACHED = 4

_cache: OrderedDict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
_lock = threading.Lock()
#: a lock per table being built: threads missing the same table wait for one build, not each make their own
_building: dict[str, threading.Lock] = {}


@dataclass(frozen=True, eq=False)
class CellGrid:
    """A grid of ``2**bits`` cells a band from ``lo`` in steps of ``width``.

    Attributes
    ----------
    lo, width : ndarray of shape (n_channels,)
        Float64; widths positive and finite.
    bits : int
        Bits per band.
    """

    lo: np.ndarray
    width: np.ndarray
    bits: int

    @classmethod
    def over(cls, low: Any, high: Any, n_clusters: int) -> CellGrid | None:
        """The grid over the per-band range ``[low, high]`` for ``n_clusters`` centres, or None.

        None when the range is not finite or the bands too many for cells of
        at least ``2**2`` a band.
        """
        low = np.asarray(low, dtype=np.float64).reshape(-1)
        high = np.asarray(high, dtype=np.float64).reshape(-1)
        n_channels = low.shape[0]
        if n_channels < 1 or high.shape != low.shape or not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            return None
        bits = min(12, CELL_TABLE_BITS // n_channels)
        while bits >= _MIN_BITS and (1 << (bits * n_channels)) * max(1, n_clusters) * n_channels > _MAX_WORK:
            bits -= 1
        if bits < _MIN_BITS or np.any(high < low):
            return None
        span = high - low
        # a little wider than the range: its top value falls inside the last cell
        width = np.where(span > 0, span, np.maximum(np.abs(low), 1.0)) * (1.0 + 2.0**-20) / (1 << bits)
        if not np.all(np.isfinite(width) & (width > 0)) or not np.all(np.isfinite(low + width * (1 << bits))):
            return None
        return cls(np.ascontiguousarray(low), np.ascontiguousarray(width), int(bits))

    def __dask_tokenize__(self) -> str:
        return tokenize("cell-grid", self.lo, self.width, self.bits)

    def tables(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(table, offsets, candidates, centres transposed) for ``centers``: built once a process."""
        centers = np.ascontiguousarray(centers, dtype=np.float64)
        key = tokenize(self, centers)
        with _lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                return hit
            building = _building.setdefault(key, threading.Lock())
        with building:  # one build a table: the threads that missed it too wait for it here
            with _lock:
                hit = _cache.get(key)
                if hit is not None:
                    return hit
            try:
                table, offsets, cand = cell_table(self.lo, self.width, self.bits, centers)
                built = (table, offsets, cand, np.ascontiguousarray(centers.T))
                with _lock:
                    _cache[key] = built
                    while len(_cache) > _CACHED:
                        _cache.popitem(last=False)
            finally:
                with _lock:
                    _building.pop(key, None)
        return built

    def certain_fraction(self, centers: np.ndarray) -> float:
        """Fraction of the cells whose nearest centre is certain (for logs and tests)."""
        return float(np.mean(self.tables(centers)[0] >= 0))

    def labels(self, X: np.ndarray, centers: np.ndarray, label_dtype: np.dtype | type = np.int32) -> np.ndarray:
        """Nearest centre of every row of ``X`` (n, C): those of :func:`bigquant.kernels.assign_labels`."""
        table, offsets, cand, centers_t = self.tables(centers)
        labels = np.empty(X.shape[0], dtype=label_dtype)
        if X.shape[0]:
            cell_labels(X, self.lo, 1.0 / self.width, self.bits, table, offsets, cand, centers_t, labels)
        return labels

    def partial_sums(self, X: np.ndarray, centers: np.ndarray,
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Per-cluster sums, counts and inertia of the rows of ``X``: those of :func:`bigquant.kernels.partial_sums`."""
        table, offsets, cand, centers_t = self.tables(centers)
        k, n_channels = centers_t.shape[1], centers_t.shape[0]
        sums = np.zeros((k, n_channels))
        counts = np.zeros(k)
        if X.shape[0] == 0:
            return sums, counts, 0.0
        use = weights is not None
        w = np.asarray(weights).reshape(-1) if use else np.empty(0, dtype=np.float32)
        inertia = cell_partial_sums(X, w, use, self.lo, 1.0 / self.width, self.bits, table, offsets,
                                    cand, centers_t, sums, counts)
        return sums, counts, float(inertia)

    def sums_and_labels(self, X: np.ndarray, centers: np.ndarray, palette: np.ndarray,
                        label_dtype: np.dtype | type = np.int32
                        ) -> tuple[tuple[np.ndarray, np.ndarray, float], np.ndarray, np.ndarray]:
        """A Lloyd step's sums for ``centers`` and the labels for ``palette`` of the rows of ``X``, in one read.

        The sums, counts and inertia are :meth:`partial_sums`' (unweighted),
        the labels :meth:`labels`' for ``palette``, bit for bit: the step of
        a fit's last pass and the labels written with the colours its centres
        round to, from one look at each pixel.  Last, the rows of each
        label (int64, one per palette colour).
        """
        tables = self.tables(centers)
        palette_tables = self.tables(palette)
        k, n_channels = tables[3].shape[1], tables[3].shape[0]
        sums = np.zeros((k, n_channels))
        counts = np.zeros(k)
        labels = np.empty(X.shape[0], dtype=label_dtype)
        label_counts = np.zeros(palette_tables[3].shape[1], dtype=np.int64)
        if X.shape[0] == 0:
            return (sums, counts, 0.0), labels, label_counts
        inertia = cell_sums_and_labels(X, self.lo, 1.0 / self.width, self.bits, tables, palette_tables, sums, counts,
                                       labels, label_counts)
        return (sums, counts, float(inertia)), labels, label_counts
