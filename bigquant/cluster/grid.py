"""The grid strategy: k-means of 16-bit, float and multi-band pixels in two or three passes.

The colour histogram (:mod:`bigquant.cluster.histogram`) needs few enough
distinct colours to count them; data of more than 24 bits per pixel (uint16,
int16, float32, 4 or more bands) have too many.  The grid strategy:

1. **Range** (:func:`value_range`): per-band bounds from 16 tiles of the file
   (or a few blocks of another dask array; all of an in-memory array) -- no
   pass over the pixels.
2. **Grid pass** (:func:`value_grid`, one read): every pixel falls in a cell of
   a coarse grid over that range (``bits`` per band, :func:`grid_bits`: 6 for
   RGB, 5 for 4 bands, 2**12..2**20 cells); per cell the *exact* count and sum
   of the full-precision values (:mod:`bigquant.kernels.grid`), per block, summed
   as a tree.  Values outside the range fall in the edge cells: their sums stay
   exact.  The cells' means weighted by their counts are a small point set with
   the pixels' total and mean; the pixels' squared error for any labelling that
   gives every cell one label is that of the cell means plus the constant
   within-cell scatter.  Integer data of at most :data:`DISTINCT_MAX` distinct
   values (packed in 64 bits) are also counted value by value, exactly: the
   finishing passes of step 4 then run on those values, not on the pixels
   (the same sums: the fit ends in this one pass).
3. **Search on the cells** (:func:`search_cells`): 8 chains (per ``n_init``) of
   weighted k-means++, Lloyd and swap moves on at most 2**14 cells (merged to
   coarser ones when there are more); the two lowest run to Lloyd's fixed point
   on every cell and the lower wins.
4. **Finishing passes on the pixels** (:func:`finish_on_pixels`): exact Lloyd
   iterations over the pixels (:class:`~bigquant.cluster.points.DaskPoints`) from
   there, until one moves the centres by at most ``tol`` (usually the first: the
   cell solution is next to the pixel one).  The centres returned are those the
   last pass assigned the pixels to, so its inertia is theirs, exactly, and one
   more Lloyd step moves them by at most ``tol``: a fixed point within ``tol``
   without a pass only to measure the inertia.  These passes, and the labels
   of the pixels, find each pixel's nearest centre through cells over the
   pixels' exact range (:class:`bigquant.cluster.cells.CellGrid`: most cells
   have one possible centre), with the full scan's results bit for bit.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.core import flatten
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from bigquant import kernels, tasks
from bigquant.cluster.init import kmeans_plusplus, local_trials
from bigquant.cluster.lloyd import fill_stranded, relocate_empty_clusters
from bigquant.cluster.cells import CellGrid
from bigquant.cluster.points import (
    BoundedPoints,
    DaskPoints,
    PointSet,
    _segments,
    _sum_tuples,
    _thread_pool,
    block_tree,
    n_threads,
    tree_reduce,
)

__all__ = [
    "GRID_MAX_BITS", "BandCounts", "ValueGrid", "grid_bits", "value_range", "value_grid", "search_cells",
    "finish_on_pixels", "check_fixed_point", "DISTINCT_MAX", "LastPass", "deferring_last_pass", "deferral",
]

logger = logging.getLogger(__name__)

#: the dense cell table of a block has at most 2**GRID_MAX_BITS cells
GRID_MAX_BITS = 20
#: most bits per band (one or two bands)
_BAND_MAX_BITS = 12
#: tiles (or blocks) read to find the value range: a grid of this many per side
_PROBE_SIDE = 4
#: edge of a window read by the range probe (one tile of the file)
_PROBE_WINDOW = 256
#: cells the seeding and swap moves of a chain run on, at most (coarser cells above)
_SEARCH_CELLS = 1 << 14
#: swap moves per chain, rejected moves in a row that end it, Lloyd iterations judging one
_N_SWAPS, _SWAP_PATIENCE, _SWAP_ITER = 8, 2, 5
#: chains per initialisation (cheap: a few thousand cells each)
_CHAINS_PER_INIT = 8
#: chains run on every cell, when the chains ran on coarser ones
_FINE_CHAINS = 2


def grid_bits(dtype: np.dtype, n_channels: int) -> int | None:
    """Bits per band of the grid for data of ``dtype`` with ``n_channels`` bands, or None.

    ``min(12, 20 // C)``: 12 for one band, 10 for two, 6 for RGB, 5 for four
    bands, ..., 1 for up to 20 bands; None for more bands or non-numeric data.
    """
    kind = np.dtype(dtype).kind
    if kind not in "uif" or not 1 <= n_channels <= GRID_MAX_BITS:
        return None
    return min(_BAND_MAX_BITS, GRID_MAX_BITS // n_channels)


@dataclass(frozen=True)
class BandCounts:
    """One histogram a band: the pixels the grid pass counted in each bin of the band's value range.

    What a display stretch needs (e.g. QGIS's cumulative count cut at 2 and
    98 %), with no pass over the pixels: each band's bins are the grid's cells
    summed over the other bands.

    Attributes
    ----------
    edges : list of ndarray
        Per band, the ``2**bits + 1`` bin edges (float64); the outer ones
        reach the band's minimum and maximum, whose values fall in the edge
        bins.
    counts : list of ndarray
        Per band, the pixels in each bin (float64 holding integers).
    minimum, maximum : ndarray of shape (n_channels,)
        Of the pixels counted, per band.
    """

    edges: list[np.ndarray]
    counts: list[np.ndarray]
    minimum: np.ndarray
    maximum: np.ndarray


@dataclass
class ValueGrid:
    """Exact counts and sums of the pixels per occupied cell of a grid over the value range.

    Attributes
    ----------
    codes : ndarray of shape (n_cells,)
        Cell codes (int64, increasing): ``bits`` bits per band, first band highest.
    counts : ndarray of shape (n_cells,)
        Pixels per cell (float64 holding integers).
    sums : ndarray of shape (n_cells, n_channels)
        Summed values of the pixels of each cell (float64; exact for integer data).
    bits : int
        Bits per band.
    lo, scale : ndarray of shape (n_channels,)
        The cell of value ``x`` in band ``c`` is ``floor((x - lo[c]) * scale[c])``, clipped.
    minimum, maximum, sum_squares : ndarray of shape (n_channels,)
        Of the pixels counted, per band.
    values, value_counts : ndarray of shape (n_values, n_channels) and (n_values,), or None
        Integer data of at most :data:`DISTINCT_MAX` distinct values: each
        value (float64) and its pixels, exactly (the histogram); else None.
    """

    codes: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    bits: int
    lo: np.ndarray
    scale: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    sum_squares: np.ndarray
    values: np.ndarray | None = None
    value_counts: np.ndarray | None = None
    _coarse_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_cells(self) -> int:
        """Number of occupied cells."""
        return int(self.codes.shape[0])

    @property
    def n_pixels(self) -> float:
        """Number of pixels counted."""
        return float(self.counts.sum())

    @property
    def n_channels(self) -> int:
        return int(self.sums.shape[1])

    def means(self) -> np.ndarray:
        """Mean value of the pixels of each cell (float64)."""
        return self.sums / self.counts[:, None]

    def cells(self) -> np.ndarray:
        """Integer cell coordinates (n_cells, n_channels) of the codes."""
        C, bits = self.n_channels, self.bits
        shifts = np.arange(C - 1, -1, -1, dtype=np.int64) * bits
        return (self.codes[:, None] >> shifts[None, :]) & ((1 << bits) - 1)

    def band_counts(self) -> BandCounts:
        """The pixels counted per bin of each band (the cells summed over the other bands)."""
        cells = self.cells()
        n_bins = 1 << self.bits
        edges, counts = [], []
        for c in range(self.n_channels):
            counts.append(np.bincount(cells[:, c], weights=self.counts, minlength=n_bins).astype(np.float64))
            e = self.lo[c] + np.arange(n_bins + 1, dtype=np.float64) / self.scale[c]
            e[0], e[-1] = min(e[0], self.minimum[c]), max(e[-1], self.maximum[c])
            edges.append(e)
        return BandCounts(edges, counts, self.minimum.copy(), self.maximum.copy())

    def moments(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Pixel count, mean and variance per band of the pixels counted."""
        total = self.n_pixels
        mean = self.sums.sum(axis=0) / total
        return total, mean, np.maximum(self.sum_squares / total - mean * mean, 0.0)

    def points(self) -> BoundedPoints:
        """The cell means weighted by their counts, for Lloyd's iteration."""
        return BoundedPoints(self.means(), self.counts)

    def coarse(self, drop_bits: int) -> tuple[np.ndarray, np.ndarray]:
        """Means and weights of the cells merged on a grid of ``bits - drop_bits`` bits (cached)."""
        if drop_bits not in self._coarse_cache:
            width = self.bits - drop_bits
            self._coarse_cache[drop_bits] = kernels.coarse_bins(self.cells(), self.sums, self.counts,
                                                                drop_bits, width)
        _, sums, weights = self._coarse_cache[drop_bits]
        return sums / weights[:, None], weights


# --------------------------------------------------------------------------- range


def _finite_range(block: np.ndarray, valid: np.ndarray | None, n_channels: int) -> np.ndarray:
    """(2, C): per-band min and max of the finite values of the valid rows (inf/-inf when none)."""
    X = np.asarray(block).reshape(-1, n_channels)
    if valid is not None:
        X = X[np.asarray(valid).reshape(-1)]
    out = np.empty((2, n_channels))
    out[0], out[1] = np.inf, -np.inf
    if X.shape[0] == 0:
        return out
    if X.dtype.kind == "f":
        X = X[np.isfinite(X).all(axis=1)]
        if X.shape[0] == 0:
            return out
    bands = np.ascontiguousarray(X.T)  # a band a row: a reduction along the strided axis is ~40x slower
    out[0], out[1] = bands.min(axis=1), bands.max(axis=1)
    return out


def _reader_range(reader: Any, windows: list[tuple[int, int, int, int]], n_channels: int) -> np.ndarray:
    parts = [_finite_range(reader[y0:y1, x0:x1], None, n_channels) for y0, y1, x0, x1 in windows]
    return _combine_ranges(parts)


def _block_range(block: np.ndarray, valid: np.ndarray | None, n_channels: int) -> np.ndarray:
    return _finite_range(block, valid, n_channels)


def _combine_ranges(parts: list[np.ndarray]) -> np.ndarray:
    out = np.stack(parts)
    return np.stack([out[:, 0].min(axis=0), out[:, 1].max(axis=0)])


def _spread(n: int, m: int) -> list[int]:
    """``m`` indices spread evenly over ``range(n)``."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, m))})


def _range_graph(X: da.Array, valid: da.Array | None) -> Delayed:
    """Per-band bounds of a few tiles (a TIFF read directly) or blocks of ``X``, lazily."""
    from bigquant.io.tiff_read import segment_reader

    n_channels = X.shape[-1]
    token = tokenize(X, valid, "range")
    name = f"{tasks.GRID_RANGE}-{token}"
    reader = segment_reader(X) if X.ndim == 3 and valid is None else None
    if reader is not None:
        H, W = X.shape[:2]
        windows = []
        for y in _spread(H, _PROBE_SIDE):
            for x in _spread(W, _PROBE_SIDE):
                y0, x0 = (y // _PROBE_WINDOW) * _PROBE_WINDOW, (x // _PROBE_WINDOW) * _PROBE_WINDOW
                windows.append((y0, min(H, y0 + _PROBE_WINDOW), x0, min(W, x0 + _PROBE_WINDOW)))
        # a task a row of windows (the threads read them side by side), their bounds combined
        rows: dict[int, list[tuple[int, int, int, int]]] = {}
        for window in sorted(set(windows)):
            rows.setdefault(window[0], []).append(window)
        layer = {(name, i): (_reader_range, reader, row, n_channels) for i, row in enumerate(rows.values())}
        root = (f"{tasks.tree_sum(tasks.GRID_RANGE)}-{token}", 0)
        layer[root] = (_combine_ranges, list(layer))
        return Delayed(root, HighLevelGraph.from_collections(root[0], layer, dependencies=[]), layer=root[0])
    keys = list(flatten(X.__dask_keys__()))
    wkeys = None if valid is None else list(flatten(valid.__dask_keys__()))
    # a grid of blocks spread over the image: at most 1/8 of them
    picked = _spread(len(keys), max(1, min(_PROBE_SIDE * _PROBE_SIDE, len(keys) // 8)))
    layer: dict[Any, Any] = {}
    for i in picked:
        layer[(name, i)] = (_block_range, keys[i], None if wkeys is None else wkeys[i], n_channels)
    root = (f"{tasks.tree_sum(tasks.GRID_RANGE)}-{token}", 0)
    layer[root] = (_combine_ranges, [(name, i) for i in picked])
    deps = [X] if valid is None else [X, valid]
    return Delayed(root, HighLevelGraph.from_collections(root[0], layer, dependencies=deps), layer=root[0])


def _load_kernels(dtype: np.dtype, n_channels: int) -> bool:
    """Run the grid pass's block kernels once on one pixel of ``dtype``: loaded from numba's cache."""
    pixel = np.zeros((1, n_channels), dtype=dtype)
    table, stats = _empty_tables(0, n_channels)  # one cell: the zero pixel's (any number of bands)
    _count_into(pixel, None, np.zeros(n_channels), np.ones(n_channels), 1, (table, stats))
    kernels.take_grid_cells(table)
    _count_distinct(pixel, None)
    return True


def _kernels_loaded(dtype: np.dtype, n_channels: int) -> Delayed:
    """A task that loads the grid pass's kernels for ``dtype`` (:func:`_load_kernels`), lazily."""
    name = f"{tasks.GRID}-{tokenize(np.dtype(dtype).str, n_channels, 'load')}"
    layer = {(name, 0): (_load_kernels, np.dtype(dtype), int(n_channels))}
    return Delayed((name, 0), HighLevelGraph.from_collections(name, layer, dependencies=[]), layer=name)


def value_range(X: np.ndarray | da.Array, valid: np.ndarray | da.Array | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, high) bounds of the grid: exact for numpy, from a few tiles or blocks for dask.

    Only the resolution of the grid depends on them, never its sums.  A band
    whose probe saw no valid finite value spans the dtype's range (integers)
    or [0, 1] (floats).
    """
    n_channels = X.shape[-1]
    if isinstance(X, da.Array):
        # beside the probe's reads, a task loads the grid pass's kernels (numba's cache; a process's
        # first load also sets numba up, ~0.1 s) that the pass's threads would otherwise all wait for
        bounds, _ = dask.compute(_range_graph(X, valid), _kernels_loaded(X.dtype, n_channels))
    else:
        bounds = _finite_range(X, valid, n_channels)
    lo, hi = bounds[0].copy(), bounds[1].copy()
    dtype = np.dtype(X.dtype)
    unseen = ~(np.isfinite(lo) & np.isfinite(hi))
    if unseen.any():
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            lo[unseen], hi[unseen] = info.min, info.max
        else:
            lo[unseen], hi[unseen] = 0.0, 1.0
    return lo, hi


def _grid_scale(lo: np.ndarray, hi: np.ndarray, bits: int, integer: bool) -> np.ndarray:
    """Cells per unit of value: ``2**bits`` cells over ``[lo, hi]`` (integers: at least one value a cell)."""
    span = np.asarray(hi, np.float64) - np.asarray(lo, np.float64)
    if integer:
        span = span + 1.0
    scale = np.where(span > 0, (1 << bits) / np.where(span > 0, span, 1.0), 1.0)
    if integer:
        scale = np.minimum(scale, 1.0)  # no empty cells between integer values
    return scale


# --------------------------------------------------------------------------- the grid pass


def _empty_tables(bits: int, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    stats = np.zeros((3, n_channels))
    stats[0], stats[1] = np.inf, -np.inf
    return np.zeros((1 << (bits * n_channels), n_channels + 1)), stats


_NO_VALID = np.empty(0, dtype=np.bool_)


def _count_into(X: np.ndarray, valid: np.ndarray | None, lo: np.ndarray, scale: np.ndarray, bits: int,
                tables: tuple[np.ndarray, np.ndarray]) -> bool:
    table, stats = tables
    use_valid = valid is not None
    v = np.ascontiguousarray(valid, dtype=np.bool_).reshape(-1) if use_valid else _NO_VALID
    return bool(kernels.add_grid_cells(X, v, np.bool_(use_valid), lo, scale, np.int64(bits), table, stats))


#: distinct values counted exactly by the grid pass, at most (more: it stops counting them)
DISTINCT_MAX = 4096


def _distinct_layout(dtype: np.dtype, n_channels: int) -> tuple[int, int] | None:
    """(offset, bits a band) of the packed codes of integer rows, or None (not integers, or over 64 bits)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui" or dtype.itemsize * 8 * n_channels > 64:
        return None
    return int(np.iinfo(dtype).min), dtype.itemsize * 8


def _distinct_table(limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size = 1 << max(4, int(2 * limit - 1).bit_length())
    return np.zeros(size, np.uint64), np.zeros(size), np.zeros(size, np.bool_)


def _count_distinct(X: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct rows of ``X`` (packed codes) and their counts, or None past :data:`DISTINCT_MAX`."""
    layout = _distinct_layout(X.dtype, X.shape[1])
    if layout is None:
        return None
    keys, counts, used = _distinct_table(DISTINCT_MAX)
    use_valid = valid is not None
    v = np.ascontiguousarray(valid, dtype=np.bool_).reshape(-1) if use_valid else _NO_VALID
    n = kernels.add_distinct(X, v, np.bool_(use_valid), np.int64(layout[0]), np.int64(layout[1]), keys, counts,
                             used, np.int64(0), np.int64(DISTINCT_MAX))
    return None if n < 0 else (keys[used], counts[used])


def _merge_distinct(parts: list[tuple[np.ndarray, np.ndarray] | None]) -> tuple[np.ndarray, np.ndarray] | None:
    if any(p is None for p in parts):
        return None
    keys, counts, used = _distinct_table(DISTINCT_MAX)
    n = np.int64(0)
    for codes, weights in parts:  # type: ignore[misc]
        n = kernels.merge_distinct(codes, weights, keys, counts, used, n, np.int64(DISTINCT_MAX))
        if n < 0:
            return None
    order = np.argsort(keys[used], kind="stable")
    return keys[used][order], counts[used][order]


def _block_grid(block: np.ndarray, valid: np.ndarray | None, lo: np.ndarray, scale: np.ndarray, bits: int):
    n_channels = lo.shape[0]
    tables = _empty_tables(bits, n_channels)
    flat = block.reshape(-1, n_channels)
    finite = _count_into(flat, valid, lo, scale, bits, tables)
    codes, counts, sums = kernels.take_grid_cells(tables[0])
    return codes, counts, sums, tables[1], finite, _count_distinct(flat, valid)


def _merge_grids(parts: list[tuple]) -> tuple:
    """Sum partial grids (a tree node): sparse cells added into a dense table and read back."""
    if len(parts) == 1:
        p = parts[0]
        return p[:5] + (_merge_distinct([p[5]]),)  # sorted codes
    n_channels = parts[0][2].shape[1]
    top = max(int(p[0][-1]) for p in parts if p[0].shape[0]) if any(p[0].shape[0] for p in parts) else 0
    table = np.zeros((top + 1, n_channels + 1))
    for codes, counts, sums, *_ in parts:
        kernels.merge_grid_cells(codes, counts, sums, table)
    codes, counts, sums = kernels.take_grid_cells(table)
    stats = np.stack([p[3] for p in parts])
    merged = np.stack([stats[:, 0].min(axis=0), stats[:, 1].max(axis=0), stats[:, 2].sum(axis=0)])
    return codes, counts, sums, merged, all(p[4] for p in parts), _merge_distinct([p[5] for p in parts])


#: a probed range is kept when the exact one is at most this much wider (per band)
_RANGE_SLACK = 1.25


def _range_missed(lo: np.ndarray, hi: np.ndarray, low: np.ndarray, high: np.ndarray) -> bool:
    """Whether the exact per-band range [low, high] is much wider than the probed [lo, hi]."""
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return False  # nothing counted
    probed = np.maximum(np.asarray(hi, np.float64) - lo, 0.0)
    exact = np.asarray(high, np.float64) - low
    return bool(np.any(exact > _RANGE_SLACK * probed + 1e-12 * np.abs(high)))


def _grid_pass(X: Any, valid: Any, lo: np.ndarray, hi: np.ndarray, bits: int, integer: bool,
               split_every: int) -> tuple:
    """(codes, counts, sums, stats, finite) of one pass over ``X`` with cells over [lo, hi]."""
    n_channels = int(X.shape[-1])
    lo = np.ascontiguousarray(lo, dtype=np.float64)
    scale = np.ascontiguousarray(_grid_scale(lo, hi, bits, integer), dtype=np.float64)
    if isinstance(X, da.Array):
        root = block_tree(tasks.GRID, X, valid, _block_grid, (lo, scale, bits), _merge_grids,
                          split_every=split_every)
        (result,) = dask.compute(root)
        return result
    flat = np.ascontiguousarray(X).reshape(-1, n_channels)
    v = None if valid is None else np.asarray(valid, dtype=np.bool_).reshape(-1)
    segs = _segments(flat.shape[0], n_threads())
    parts = list(_thread_pool().map(
        lambda s: _block_grid(flat[s], None if v is None else v[s], lo, scale, bits), segs))
    return _merge_grids(parts)


def value_grid(
    X: np.ndarray | da.Array,
    *,
    valid: np.ndarray | da.Array | None = None,
    bits: int | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
    split_every: int = 8,
) -> tuple[ValueGrid, bool]:
    """The exact per-cell counts and sums of the pixels of ``X`` (one pass), and whether all were finite.

    Parameters
    ----------
    X : array of shape (n_samples, n_channels) or (H, W, n_channels)
        numpy or dask array of integer or float data.
    valid : boolean array of X's spatial shape, default=None
        Only the samples where it is True are counted.
    bits : int, default=None
        Bits per band (default :func:`grid_bits`).
    bounds : (low, high), default=None
        Per-band range the cells cover (default :func:`value_range`; when
        the pass then finds a range more than 1.25 times wider in some band,
        it counts again over the exact range).
    split_every : int, default=8
        Fan-in of the tree summing the blocks' grids.

    Returns
    -------
    grid : ValueGrid
    finite : bool
        False when some counted sample held a NaN or infinity (it was left out).
    """
    n_channels = int(X.shape[-1])
    bits = grid_bits(X.dtype, n_channels) if bits is None else int(bits)
    if bits is None:
        raise TypeError(f"no value grid for dtype={X.dtype} with {n_channels} channels")
    given = bounds is not None
    lo, hi = value_range(X, valid) if bounds is None else bounds
    if isinstance(X, da.Array):
        if X.numblocks[-1] != 1:
            X = X.rechunk({X.ndim - 1: -1})
        if valid is not None:
            valid = da.asarray(valid).rechunk(X.chunks[:-1])
    integer = np.dtype(X.dtype).kind in "ui"
    result = _grid_pass(X, valid, lo, hi, bits, integer, split_every)
    stats = result[3]
    if not given and _range_missed(lo, hi, stats[0], stats[1]):
        # the probe saw too little of the range: again with the exact one (the sums were
        # exact, but cells that far too wide approximate the pixels badly)
        logger.info("value grid: probed range %s..%s, exact %s..%s: counting again", lo, hi, stats[0], stats[1])
        lo, hi = stats[0].copy(), stats[1].copy()
        result = _grid_pass(X, valid, lo, hi, bits, integer, split_every)
    codes, counts, sums, stats, finite, distinct = result
    scale = _grid_scale(lo, hi, bits, integer)
    grid = ValueGrid(codes, counts, sums, bits, np.asarray(lo, np.float64), scale, stats[0], stats[1], stats[2])
    if distinct is not None:
        offset, band_bits = _distinct_layout(X.dtype, n_channels)  # type: ignore[misc]
        shifts = (np.arange(n_channels - 1, -1, -1) * band_bits).astype(np.uint64)
        mask = np.uint64((1 << band_bits) - 1)
        fields = (distinct[0][:, None] >> shifts[None, :]) & mask
        grid.values = fields.astype(np.float64) + offset
        grid.value_counts = distinct[1]
    logger.info("value grid: %d occupied cells of %d (%d bits a band) for %d pixels%s",
                grid.n_cells, 1 << (bits * n_channels), bits, int(grid.n_pixels),
                "" if grid.values is None else f", {grid.values.shape[0]} distinct values")
    return grid, bool(finite)


# --------------------------------------------------------------------------- search on the cells


def _chain(X: np.ndarray, w: np.ndarray, k: int, seed: int, tol: float, max_iter: int,
           seeder: Callable) -> tuple[float, np.ndarray]:
    """k-means++, Lloyd's iteration and swap moves on the weighted points ``X`` (cells); (inertia, centres)."""
    rng = np.random.default_rng(seed)
    centers = seeder(X, w, k, rng)
    centers, inertia = kernels.lloyd_dense(X, kernels.as_columns(X), w, centers, max_iter, tol)
    centers, inertia = kernels.improve_by_swaps(X, w, centers, inertia, rng.random((_N_SWAPS, local_trials(k))),
                                                _SWAP_ITER, tol, _SWAP_PATIENCE)
    return float(inertia), centers


def search_cells(
    grid: ValueGrid,
    k: int,
    *,
    n_init: int,
    tol: float,
    max_iter: int,
    rng: np.random.Generator,
    seeder: Callable = kmeans_plusplus,
) -> np.ndarray:
    """Centres of the best of ``8 * n_init`` search chains on the cells: a Lloyd fixed point of the cells.

    Each chain seeds (``seeder``, weighted by the counts), runs Lloyd's
    iteration and swap moves (:func:`bigquant.kernels.improve_by_swaps`) on
    the cells, merged to at most ``2**14`` coarser cells when there are more;
    the ``_FINE_CHAINS`` lowest then run Lloyd's iteration on every cell and
    the lowest of those wins.  The chains draw their seeds from ``rng``
    first, so the result does not depend on the threads.  Ranking by the
    cells' inertia ranks by the pixels' squared error of labellings constant
    per cell (the within-cell scatter is the same for all).
    """
    n_chains = _CHAINS_PER_INIT * int(n_init)
    seeds = [int(s) for s in rng.integers(0, 2**63 - 1, size=n_chains)]
    drop = 0  # coarser cells for the chains (cached before the threads)
    while drop < grid.bits - 1 and (grid.coarse(drop)[0].shape[0] if drop else grid.n_cells) > _SEARCH_CELLS:
        drop += 1
    X, w = grid.coarse(drop) if drop else (grid.means(), grid.counts)
    X = np.ascontiguousarray(X)

    def each(func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        if n_threads() > 1 and len(items) > 1:
            return list(_thread_pool().map(func, items))
        return [func(x) for x in items]

    chains = each(lambda seed: _chain(X, w, k, seed, tol, max_iter, seeder), seeds)
    ranked = sorted(range(n_chains), key=lambda i: chains[i][0])  # equal inertias keep the chain order
    if not drop:
        best = chains[ranked[0]]
    else:
        def fine(i: int) -> tuple[float, np.ndarray]:
            end, inertia, *_ = BoundedPoints(grid.means(), grid.counts, n_parts=1).run(chains[i][1], max_iter, tol)
            return float(inertia), end

        finals = each(fine, ranked[:_FINE_CHAINS])
        best = min(finals, key=lambda f: f[0])
    logger.info("grid search: best of %d chains on %d cells (%d coarse), cell inertia %.6g", n_chains,
                grid.n_cells, X.shape[0], best[0])
    return best[1]


# --------------------------------------------------------------------------- finishing passes


@dataclass
class Finished:
    """Outcome of :func:`finish_on_pixels`."""

    centers: np.ndarray
    inertia: float
    n_pass: int
    converged: bool
    shift: float


def finish_on_pixels(points: PointSet, centers: np.ndarray, *, tol: float, max_iter: int,
                     callback: Callable[[int, float, float], None] | None = None,
                     first: tuple[np.ndarray, np.ndarray, float] | None = None) -> Finished:
    """Exact Lloyd passes over the pixels from ``centers`` until one moves them by at most ``tol``.

    Returns the centres the last pass assigned (so ``inertia`` is theirs,
    exactly, and one more Lloyd step moves them by at most ``tol``), not the
    step's means: no extra pass to measure the inertia of new centres.  Data
    with fewer distinct values than centres end in one pass: every pixel sits
    on a centre, no empty cluster takes a pixel
    (:func:`~bigquant.cluster.lloyd.relocate_empty_clusters`), and the empty
    ones are copies (:func:`~bigquant.cluster.lloyd.fill_stranded`).
    ``first``, when given, is the first pass's ``points.partial_sums(centers)``,
    already summed elsewhere (:class:`LastPass`: in the write's read).
    """
    centers = np.array(centers, dtype=np.float64)
    shift = math.inf
    inertia = math.nan
    for n_pass in range(1, int(max_iter) + 1):
        sums, counts, inertia = first if n_pass == 1 and first is not None else points.partial_sums(centers)
        moved = relocate_empty_clusters(points, centers, sums, counts, inertia)
        new = centers.copy()
        nonzero = counts > 0
        new[nonzero] = sums[nonzero] / counts[nonzero, None]
        shift = float(kernels.squared_shift(new, centers))
        logger.info("pixel pass %d: inertia %.6g, centre shift %.3g (tol %.3g)", n_pass, inertia, shift, tol)
        if callback is not None:
            callback(n_pass, float(inertia), shift)
        if shift <= tol and not moved:
            # clusters still empty: every pixel sits on a centre (fewer distinct values than k)
            return Finished(fill_stranded(centers, counts), float(inertia), n_pass, True, shift)
        centers = new
    # out of passes: the last means, whose inertia one more pass measures
    inertia = points.partial_sums(centers)[2]
    return Finished(centers, float(inertia), int(max_iter), False, shift)


# --------------------------------------------------------------------------- the last pass, deferred


class LastPass:
    """A grid fit's first exact pass over the pixels, left for the write to make in its own read.

    The search on the cells ends next to the pixels' fixed point: the first
    exact pass (:func:`finish_on_pixels`) usually moves the centres by less
    than ``tol``, and the fit then returns the very centres that pass
    assigned.  Those centres, and so the palette written, are known before
    the pass: a writer that labels each chunk with the palette can add up
    the pass's sums in the same read (:meth:`block_step`), and
    :meth:`settle` finishes the fit from them.  When the pass does move the
    centres (or empties a cluster), :meth:`settle` runs the passes left over
    the pixels as :func:`finish_on_pixels` would, and what was written may
    need writing again.  Either way the fit ends with the
    centres, inertia and passes of :func:`finish_on_pixels` run before the
    write, bit for bit: the sums of each block are those of
    :class:`~bigquant.cluster.points.DaskPoints` (same blocks, same kernel
    arithmetic) and are added up in its tree's order.

    Parameters
    ----------
    points : DaskPoints
        The pixels (unweighted), in the blocks the writer reads.
    centers : ndarray of shape (k, n_channels)
        The centres of the pass (the search's).
    cells : CellGrid
        The value cells the pass and the labels look the nearest centre up in.
    finish : callable
        ``finish(Finished)``: sets the fitted model from the outcome.
    tol, max_iter, callback
        As :func:`finish_on_pixels`.
    """

    def __init__(self, points: DaskPoints, centers: np.ndarray, cells: CellGrid, finish: Callable[[Finished], None],
                 *, tol: float, max_iter: int, callback: Callable[[int, float, float], None] | None = None):
        self.points = points
        self.centers = np.array(centers, dtype=np.float64)
        self.cells = cells
        self.finish = finish
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.callback = callback
        self.parts: list[np.ndarray] | None = None
        self.n_labels = 0

    def block_step(self, palette: np.ndarray,
                   label_dtype: np.dtype) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """``step(block) -> (labels, sums)``: a block's labels for ``palette`` and this pass's sums, one read.

        ``sums`` packs :meth:`bigquant.cluster.cells.CellGrid.sums_and_labels`'
        step (k x C sums, k counts, the inertia), the block's height and
        width, and the pixels of each label; hand the sums of every block, in
        row-major block order, to :meth:`record`.
        """
        self.n_labels = len(palette)
        palette = np.ascontiguousarray(palette, dtype=np.float64)
        # both tables built here, once: the writer's threads find them in this process's cache
        # (else each thread builds both at its first block, all at once)
        self.cells.tables(self.centers)
        self.cells.tables(palette)
        return functools.partial(_block_step, cells=self.cells, centers=self.centers, palette=palette,
                                 dtype=np.dtype(label_dtype))

    def record(self, parts: Sequence[np.ndarray]) -> None:
        """Keep the sums :meth:`block_step` gave each block (row-major block order) for :meth:`settle`."""
        self.parts = [np.asarray(p, dtype=np.float64) for p in parts]

    def label_counts(self) -> np.ndarray | None:
        """The pixels of each label :meth:`block_step` gave, over the blocks recorded (None: none recorded)."""
        if not self.parts:
            return None
        k, n_channels = self.centers.shape
        start = k * n_channels + k + 3
        return np.sum([p[start:] for p in self.parts], axis=0).astype(np.int64)

    def _recorded_sums(self) -> tuple[np.ndarray, np.ndarray, float] | None:
        """The pass's (sums, counts, inertia) from the recorded blocks, when they are the points' blocks."""
        if self.parts is None:
            return None
        X = self.points.X
        shapes = [(h, w) for h in X.chunks[0] for w in X.chunks[1]]
        k, n_channels = self.centers.shape
        size = k * n_channels + k + 3
        if len(self.parts) != len(shapes) or any(
                p.shape != (size + self.n_labels,) or (p[size - 2], p[size - 1]) != shape
                for p, shape in zip(self.parts, shapes)):
            logger.info("the write read other blocks than the fit's: its pass is made again")
            return None
        leaves = {("block", i): (p[:k * n_channels].reshape(k, n_channels), p[k * n_channels:k * n_channels + k],
                                 float(p[size - 3])) for i, p in enumerate(self.parts)}
        layer, root = tree_reduce("sum", list(leaves), _sum_tuples, split_every=self.points.split_every)

        def value(key: Any) -> Any:  # the tree DaskPoints.partial_sums sums, in its order
            if key in leaves:
                return leaves[key]
            combine, children = layer[key]
            return combine([value(child) for child in children])

        sums, counts, inertia = value(root)
        return sums, counts, float(inertia)

    def settle(self) -> None:
        """Finish the fit from the pass the write made (the passes left, if it moved the centres).

        Without the write's sums (none recorded, or other blocks) the pass is
        made here, over the pixels.  Whether what was written stands is the
        writer's to judge: it depends on the palette, the centres rounded
        (:func:`bigquant.pipeline.quantize.write_quantized`).
        """
        first = self._recorded_sums()
        self.finish(finish_on_pixels(self.points, self.centers, tol=self.tol, max_iter=self.max_iter,
                                     callback=self.callback, first=first))


def _block_step(block: np.ndarray, cells: CellGrid, centers: np.ndarray, palette: np.ndarray,
                dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    X = np.ascontiguousarray(block).reshape(-1, block.shape[-1])
    (sums, counts, inertia), labels, label_counts = cells.sums_and_labels(X, centers, palette, dtype)
    packed = np.concatenate([sums.reshape(-1), counts, [inertia, float(block.shape[0]), float(block.shape[1])],
                             label_counts])
    return labels.reshape(block.shape[:-1]), packed


#: where a grid fit leaves its first pass for the write (see :func:`deferring_last_pass`)
_DEFERRED: contextvars.ContextVar[list[LastPass] | None] = contextvars.ContextVar("bigquant_deferred_pass",
                                                                                   default=None)


@contextlib.contextmanager
def deferring_last_pass() -> Iterator[list[LastPass]]:
    """Let a grid fit in the block leave its first exact pass to the write: yields where it is left.

    A grid fit on unweighted dask pixels (:class:`~bigquant.cluster.points.DaskPoints`)
    made in the block returns its model fitted provisionally with the
    search's centres and appends a :class:`LastPass` to the list: the caller
    then writes with :meth:`LastPass.block_step` and calls
    :meth:`LastPass.settle`, which finishes the model.  Other fits ignore it.
    """
    box: list[LastPass] = []
    token = _DEFERRED.set(box)
    try:
        yield box
    finally:
        _DEFERRED.reset(token)


def deferral() -> list[LastPass] | None:
    """Where a grid fit leaves its first pass (inside :func:`deferring_last_pass`), else None."""
    return _DEFERRED.get()


def check_fixed_point(X: Any, model: Any, valid: Any = None) -> tuple[int, float, float]:
    """One more exact Lloyd step over ``X`` from ``model``'s centres: (labels changed, centre shift, tol).

    The step assigns every pixel to its nearest centre (ties to the lowest
    index) and moves each centre to the mean of its pixels; "labels changed"
    counts the pixels whose nearest centre differs between the centres and
    the moved ones (0: an exact fixed point); the shift is the squared,
    summed centre move; ``tol`` the fit's absolute tolerance (``model.tol``
    times the mean per-band variance).  Two passes; for benchmarks and tests.
    """
    from bigquant.cluster.points import DaskPoints, InMemoryPoints

    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    n_channels = centers.shape[1]
    if X.ndim == 2 and X.shape[-1] != n_channels:
        X = X[..., None]
    w = None if valid is None else valid.astype(np.float32)
    if isinstance(X, da.Array):
        points: Any = DaskPoints(X, w)
    else:
        X = np.ascontiguousarray(X).reshape(-1, n_channels)
        points = InMemoryPoints(X, None if w is None else np.asarray(w).reshape(-1))
    sums, counts, _ = points.partial_sums(centers)
    total, _, var = points.moments()
    new = centers.copy()
    nz = counts > 0
    new[nz] = sums[nz] / counts[nz, None]

    def changed_in(block: np.ndarray, wblock: np.ndarray | None) -> np.ndarray:
        flat = block.reshape(-1, n_channels)
        a = kernels.assign_labels(flat, centers, np.int32)[0]
        b = kernels.assign_labels(flat, new, np.int32)[0]
        diff = a != b
        if wblock is not None:
            diff &= wblock.reshape(-1) > 0
        return np.array(int(diff.sum()))

    if isinstance(X, da.Array):
        (changed,) = dask.compute(block_tree(tasks.LABELS, points.X, points.weights, changed_in, (),
                                             lambda parts: sum(int(p) for p in parts)))
    else:
        changed = int(changed_in(X, None if w is None else np.asarray(w)))
    return int(changed), float(kernels.squared_shift(new, centers)), float(model.tol) * float(np.mean(var))
