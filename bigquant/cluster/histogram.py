"""Exact colour histograms of 8-bit (and 16-bit grey) images, on Dask or numpy.

One pass counts the colours of each block with a numba kernel (a dense table
of ``2**bits`` counters, read back as sorted codes and int64 counts); the
sparse per-block histograms are merged as a tree. Lloyd's iteration then runs
on the distinct colours weighted by their counts, which gives exactly the same
centres and labels as running it on every pixel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed

from bigquant import kernels, tasks
from bigquant.cluster.octree import ColourOctree, OctreePoints
from bigquant.cluster.points import (
    _MIN_SEGMENT,
    BoundedPoints,
    InMemoryPoints,
    _segments,
    _thread_pool,
    block_tree,
    n_threads,
    on_pool_thread,
)
from bigquant.io.compute import current_scheduler

__all__ = ["ColourHistogram", "histogram_bits", "colour_histogram", "histogram_of_morton", "MAX_HISTOGRAM_BITS"]

logger = logging.getLogger(__name__)

#: largest code width counted with a dense table (2**24 counters = 64 MB)
MAX_HISTOGRAM_BITS = 24
#: in-memory inputs up to this many rows are sorted, which also maps every row to its colour
_INVERSE_MAX_ROWS = 1 << 22


def histogram_bits(dtype: np.dtype, n_channels: int) -> int | None:
    """Bits per channel if data of this dtype and channel count can be histogrammed.

    Unsigned integers whose total code width ``bits * n_channels`` is at most
    24 qualify: uint8 grey/RGB (8 or 24 bits), uint8 two-channel, uint16 grey.
    Returns ``None`` otherwise.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "u":
        return None
    bits = dtype.itemsize * 8
    if bits * n_channels > MAX_HISTOGRAM_BITS:
        return None
    return bits


@dataclass
class ColourHistogram:
    """Distinct colours and how many pixels have each.

    Attributes
    ----------
    colours : ndarray of shape (n_colours, n_channels)
        Distinct colours, in increasing code order, in the image's dtype.
    counts : ndarray of shape (n_colours,)
        Pixel count of each colour (int64).
    codes : ndarray of shape (n_colours,)
        Packed colour codes (uint32), sorted.
    bits : int
        Bits per channel used for the codes.
    inverse : ndarray of shape (n_pixels,) or None
        For (small) in-memory input: the index of each pixel's colour, so
        that ``colours[inverse]`` is the image; ``None`` otherwise.
    """

    colours: np.ndarray
    counts: np.ndarray
    codes: np.ndarray
    bits: int
    inverse: np.ndarray | None = field(default=None, repr=False, compare=False)
    _derived: _Derived = field(default_factory=lambda: _Derived(), init=False, repr=False, compare=False)

    @property
    def n_colours(self) -> int:
        """Number of distinct colours."""
        return int(self.codes.shape[0])

    @property
    def n_pixels(self) -> int:
        """Number of pixels counted."""
        return int(self.counts.sum())

    @property
    def morton(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The colours' Morton order, when they were counted in it and no :meth:`octree` was built yet.

        ``(perm, mcodes, mcounts)``: the row of each colour in Morton order,
        their Morton codes (increasing) and counts (:func:`histogram_of_morton`);
        the octree is built from them without sorting the colours again, and
        drops them.
        """
        return self._derived.morton

    def points(self) -> InMemoryPoints:
        """The colours as a weighted point set for Lloyd's iteration.

        Stepped through the :meth:`octree` when there is one (millions of
        8-bit RGB colours), with Hamerly's bounds otherwise: the same
        iterations either way.
        """
        octree = self.octree()
        if octree is not None:
            return OctreePoints(self.colours, self.counts, octree)
        return BoundedPoints(self.colours, self.counts)

    def octree(self) -> ColourOctree | None:
        """The colours' :class:`~bigquant.cluster.octree.ColourOctree` (cached), or ``None`` when it would not pay."""
        derived = self._derived
        if not derived.octree:
            octree = None
            if self.bits == 8 and ColourOctree.suits(self.colours, self.counts):
                try:
                    octree = ColourOctree(self.colours, self.counts, derived.morton)
                except ValueError:  # repeated colours (a histogram made by hand): the bounded steps
                    logger.debug("the histogram repeats colours: no octree")
            derived.octree.append(octree)
            derived.morton = None  # the octree keeps the order it needs
        return derived.octree[0]

    def sharing(self) -> ColourHistogram:
        """The same colours and counts without the pixel index, sharing what is derived from them.

        A fit on the copy labels the distinct colours (not the pixels) and
        leaves this histogram as it is; the :meth:`octree`, the coarse colour
        sets and the Morton order they are built from are shared by this
        histogram and all its copies (e.g. the fits of a sweep over k): built
        once, by whichever needs them first.
        """
        copy = ColourHistogram(self.colours, self.counts, self.codes, self.bits)
        copy._derived = self._derived
        return copy

    def coarse(self, drop_bits: int, *, n_parts: int | None = None) -> BoundedPoints:
        """A smaller weighted point set: colours merged on a coarser grid (cached).

        Colours sharing their top ``bits - drop_bits`` bits in every channel
        become one point at their count-weighted mean, weighted by the summed
        count. Lloyd's iteration on it approximates the full problem at a
        fraction of the cost; it is used to choose among initialisations.
        """
        means, weight = self.coarse_colours(drop_bits)
        # the incremental sums of BoundedPoints are not exact for these float
        # means, which is fine here: the coarse set only screens initialisations
        return BoundedPoints(means, weight, n_parts=n_parts)

    def coarse_colours(self, drop_bits: int) -> tuple[np.ndarray, np.ndarray]:
        """The arrays behind :meth:`coarse`: bin means (float64) and weights (cached)."""
        _, sums, weights = self.coarse_sums(drop_bits)
        return sums / weights[:, None], weights

    def coarse_sums(self, drop_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cells, summed colours and weights of the coarse set for ``drop_bits`` (cached).

        Sets of more than 2 dropped bits merge the next finer set (4x fewer
        points than the colours); once the :meth:`octree` is built, its cells
        of that side are the set. The sums are exact integers, so the set is
        the same whichever way it is built.
        """
        cache = self._derived.coarse
        if drop_bits not in cache:
            width = self.bits - drop_bits
            octree = self._derived.octree[0] if self._derived.octree else None
            cells = octree.cells(self.bits - drop_bits) if octree is not None else None
            if cells is not None:  # the octree's cells of that side, put in code order
                corners, sums, weights = cells
                found = kernels.coarse_bins(corners.astype(np.int64), sums, weights, drop_bits, width)
            elif drop_bits > 2:
                cells, sums, weights = self.coarse_sums(drop_bits - 1)
                found = kernels.coarse_bins(cells, sums, weights, 1, width)
            else:
                found = kernels.coarse_bins(self.colours, None, self.counts, drop_bits, width)
            cache[drop_bits] = found
        return cache[drop_bits]


@dataclass
class _Derived:
    """What a histogram's colours and counts give, shared by its copies (:meth:`ColourHistogram.sharing`)."""

    #: the Morton order (see :attr:`ColourHistogram.morton`) until the octree is built
    morton: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    #: [the octree, or None when it would not pay] once decided
    octree: list[ColourOctree | None] = field(default_factory=list)
    #: drop_bits -> the coarse set's cells, sums and weights
    coarse: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


def _block_counts(
    block: np.ndarray, valid: np.ndarray | None, bits: int, n_channels: int, morton: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    from bigquant.cluster.counting import block_counts

    if valid is not None:
        block = block[valid]  # only the pixels that are image
    return block_counts(block, bits, n_channels, morton)


def _histogram_numpy(X: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Codes, counts and (for inputs up to ``_INVERSE_MAX_ROWS``) each row's colour index."""
    if X.shape[0] <= _INVERSE_MAX_ROWS:
        if n_threads() == 1 or X.shape[0] < 2 * _MIN_SEGMENT:
            return kernels.unique_colours(X, bits)
        return kernels.unique_colours_parallel(X, bits, lambda f, items: list(_thread_pool().map(f, items)))
    # each segment costs a table of 2**bits counters: only split big inputs
    n_parts = min(n_threads(), X.shape[0] // (1 << 22))
    segs = _segments(X.shape[0], n_parts)
    if len(segs) == 1:
        return (*kernels.count_codes(X, bits), None)
    parts = list(_thread_pool().map(lambda s: kernels.count_codes(X[s], bits), segs))
    return (*kernels.merge_sparse_counts(parts), None)


def histogram_graph(
    X: da.Array, bits: int, *, split_every: int = 8, valid: da.Array | None = None, lanes: bool = True,
    as_morton: bool = False,
) -> Delayed:
    """The lazy histogram of a dask array (..., C) as a Delayed (codes, counts).

    Large blocks of a TIFF read by segments (tiles) are counted tile by tile
    as they are read, in the same task; RGB uint8 colours are counted in
    Morton order, merged with uint32 counts and converted to the usual codes
    and int64 counts at the end.  With ``valid`` (a boolean array of X's
    spatial shape, any chunks) only the pixels where it is True are counted.

    ``lanes`` lets RGB uint8 blocks read by tiles be counted in lanes (one
    table of counters per thread, see :mod:`bigquant.cluster.counting`) when
    the tasks run in this process; ``False`` always merges per-block
    histograms (several graphs computed at once hold less).  With
    ``as_morton``, RGB uint8 colours are left as sorted Morton codes and
    their counts (uint32 while they fit), for :func:`histogram_of_morton`.
    """
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from bigquant.cluster.counting import region_counts
    from bigquant.cluster.points import tree_reduce
    from bigquant.io.tiff_read import segment_reader
    from bigquant.kernels import merge_counts, morton_to_codes

    if X.numblocks[-1] != 1:
        X = X.rechunk({X.ndim - 1: -1})
    if valid is not None:
        valid = da.asarray(valid).rechunk(X.chunks[:-1])
    n_channels = X.shape[-1]
    morton = bits == 8 and n_channels == 3
    # Morton partials carry uint32 counts: a third fewer bytes held and sent
    merge = merge_counts if morton else kernels.merge_sparse_counts
    reader = segment_reader(X) if X.ndim == 3 and valid is None else None
    if reader is not None and max(X.chunks[0]) * max(X.chunks[1]) * 16 < (1 << (bits * n_channels)):
        reader = None  # small blocks are sorted, not tabled: reading them whole costs nothing
    n_lanes = _count_lanes(X, reader, morton) if lanes else 0
    if n_lanes:
        root = _lane_graph(X, reader, n_lanes)
    elif reader is None:
        root = block_tree(tasks.COUNT, X, valid, _block_counts, (bits, n_channels, morton),
                          merge, split_every=split_every, sum_name=tasks.MERGE)
    else:
        token = tokenize(X.name, bits, morton, split_every)
        name = f"{tasks.COUNT}-{token}"
        ys, xs = np.cumsum((0,) + X.chunks[0]), np.cumsum((0,) + X.chunks[1])
        layer: dict = {}
        for a in range(len(ys) - 1):
            for b in range(len(xs) - 1):
                window = (int(ys[a]), int(ys[a + 1]), int(xs[b]), int(xs[b + 1]))
                layer[(name, len(layer))] = (region_counts, reader, window, bits, n_channels, morton)
        # fan-in split_every over the blocks, then pairs: the merged histograms near
        # the top overlap a lot, and a pair of them holds far less than eight
        first, tops = f"{tasks.COUNT_SUM}-{token}", []
        blocks = list(layer)
        for i in range(0, len(blocks), split_every):
            tops.append((first, 0, i // split_every))
            layer[tops[-1]] = (merge, blocks[i : i + split_every])
        tree, top = tree_reduce(f"{tasks.MERGE}-{token}", tops, merge, split_every=2)
        layer.update(tree)
        root = Delayed(top, HighLevelGraph.from_collections(top[0], layer, dependencies=[]), layer=top[0])
    if morton and not as_morton:
        root = dask.delayed(morton_to_codes, pure=True)(
            root, dask_key_name=f"{tasks.CODES}-{tokenize(root.key)}"
        )
    return root


def histogram_of_morton(mcodes: np.ndarray, mcounts: np.ndarray, *, octree: bool = False) -> ColourHistogram:
    """The histogram of RGB uint8 colours counted in Morton order (sorted Morton codes and their counts).

    The colours are put in code order in one pass, which also gives their
    Morton order (:attr:`ColourHistogram.morton`).  With ``octree``, its
    :meth:`~ColourHistogram.octree` is built at the same time on another
    thread, when it suits the histogram: it needs only the Morton codes.
    """
    from bigquant.kernels import morton_colours

    build = (octree and n_threads() > 1 and not on_pool_thread()
             and ColourOctree.suits_rgb(int(mcodes.shape[0]), float(np.sum(mcounts, dtype=np.float64))))
    pending = _thread_pool().submit(ColourOctree.of_morton, mcodes, mcounts) if build else None
    try:
        colours, codes, counts, perm = morton_colours(mcodes, mcounts)
    finally:
        ordered = pending.result() if pending is not None else None
    hist = ColourHistogram(colours, counts, codes, 8)
    if ordered is not None:
        hist._derived.octree.append(ordered(perm))
    else:
        hist._derived.morton = (perm, mcodes, mcounts)
        if octree:
            hist.octree()
    return hist


def _count_lanes(X: da.Array, reader: Any, morton: bool) -> int:
    """Lanes to count ``X``'s blocks in (see :mod:`bigquant.cluster.counting`), or 0 for a merge tree.

    Lanes need RGB uint8 blocks read tile by tile (``reader``) and tasks that
    share this process's memory; one lane per thread, at most one per block.
    """
    from bigquant.cluster.scheduler import shares_memory

    if reader is None or not morton or not shares_memory():
        return 0
    n_blocks = X.numblocks[0] * X.numblocks[1]
    return min(n_threads(), n_blocks) if n_blocks > 1 else 0


def _lane_graph(X: da.Array, reader: Any, lanes: int) -> Delayed:
    """The count of ``X``'s blocks as ``lanes`` chains of tasks, each adding into one table, then their total."""
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from bigquant.cluster.counting import lane_counts, lanes_total

    token = tokenize(X.name, "lanes", lanes)
    name = f"{tasks.COUNT}-{token}"
    # uint32 counters while even one colour of every pixel would fit
    dtype = np.uint32 if X.shape[0] * X.shape[1] < 2**32 else np.uint64
    ys, xs = np.cumsum((0,) + X.chunks[0]), np.cumsum((0,) + X.chunks[1])
    windows = [(int(ys[a]), int(ys[a + 1]), int(xs[b]), int(xs[b + 1]))
               for a in range(len(ys) - 1) for b in range(len(xs) - 1)]
    layer: dict = {}
    last: list[Any] = [None] * lanes
    for i, window in enumerate(windows):  # block i in lane i % lanes: both lanes read down the image
        key = (name, i)
        layer[key] = (lane_counts, last[i % lanes], reader, window, dtype)
        last[i % lanes] = key
    top = (f"{tasks.MERGE}-{token}", 0)
    layer[top] = (lanes_total, list(last))
    return Delayed(top, HighLevelGraph.from_collections(top[0], layer, dependencies=[]), layer=top[0])


def colour_histogram(
    X: np.ndarray | da.Array, *, split_every: int = 8, valid: np.ndarray | da.Array | None = None,
    octree: bool = False,
) -> ColourHistogram:
    """Exact histogram of the colours of ``X``.

    Parameters
    ----------
    X : array of shape (n_samples, n_channels) or (H, W, n_channels)
        Unsigned integer data (see :func:`histogram_bits`), numpy or dask.
    split_every : int, default=8
        Fan-in of the merge tree for dask input.
    valid : boolean array of shape (n_samples,) or (H, W), default=None
        Which samples are image (True) and counted; masked samples (False) are
        not.  None counts every sample.
    octree : bool, default=False
        Also build the histogram's :meth:`~ColourHistogram.octree` (what a
        fit steps through), where it suits; for RGB uint8 colours counted on
        Dask, on another thread while the colours are put in code order.

    Returns
    -------
    ColourHistogram
    """
    n_channels = X.shape[-1]
    bits = histogram_bits(X.dtype, n_channels)
    if bits is None:
        raise TypeError(
            f"a colour histogram needs unsigned integer data of at most "
            f"{MAX_HISTOGRAM_BITS} bits per pixel, got dtype={X.dtype} with {n_channels} channels"
        )
    if isinstance(X, da.Array):
        graph = histogram_graph(X, bits, split_every=split_every, valid=valid, as_morton=True)
        # no client can exist before distributed is imported: not imported to look for one
        (codes, counts), = dask.compute(graph, scheduler=current_scheduler([graph]))
        inverse = None
        if bits == 8 and n_channels == 3:  # Morton codes
            hist = histogram_of_morton(codes, counts, octree=octree)
            logger.info("colour histogram: %d distinct colours in %d pixels", hist.n_colours, hist.n_pixels)
            return hist
    else:
        flat = np.ascontiguousarray(X).reshape(-1, n_channels)
        if valid is not None:
            flat = flat[np.asarray(valid).reshape(-1)]
        codes, counts, inverse = _histogram_numpy(flat, bits)
        if valid is not None:
            inverse = None  # indexes the valid samples only, not every pixel
    colours = kernels.decode_colours(codes, n_channels, bits, X.dtype)
    logger.info("colour histogram: %d distinct colours in %d pixels", codes.shape[0], int(counts.sum()))
    hist = ColourHistogram(colours, counts, codes, bits, inverse)
    if octree:
        hist.octree()
    return hist
