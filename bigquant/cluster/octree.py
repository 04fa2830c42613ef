"""Lloyd's iteration over millions of distinct RGB colours, through an octree of colour cells.

A photo-like gigapixel image has 5--10 M distinct colours; a Lloyd step that
scans them all against 16 centres costs 60--70 ms of a core even with
Hamerly's bounds (which also hold 56 bytes a colour).  Most colours lie deep
inside one cluster's region: :mod:`bigquant.kernels.octree` sorts the colours in
Morton order, sums them per cube of side 32 down to 4 (levels 3--6 of the
colour cube), and a step adds a cube's sums to its centre whenever the whole
cube is provably nearer that centre than any other; only the colours of the
cubes that straddle a boundary are scanned one by one (about a tenth of
them).  The sums are integers, exact in float64, so a step gives the sums,
counts and inertia of a full scan bit for bit: :class:`OctreePoints` is a
drop-in for :class:`~bigquant.cluster.points.BoundedPoints` whose runs are
the same runs, number for number, at a sixth of the cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from bigquant import kernels
from bigquant.cluster.points import InMemoryPoints, _thread_pool, _weighted_moments, n_threads, on_pool_thread
from bigquant.kernels.octree import Octree, build_octree, octree_labels, octree_sums, sorted_octree, top_parts

__all__ = ["ColourOctree", "OctreePoints", "OCTREE_MIN_COLOURS"]

#: histograms of more distinct colours than this run Lloyd through the octree
#: (below, one compiled bounded run over every colour is as fast)
OCTREE_MIN_COLOURS = 1 << 18
#: the octree's cells: cubes of side 2**(8 - level) for levels TOP_LEVEL..LEAF_LEVEL
TOP_LEVEL = 2
LEAF_LEVEL = 6
#: the sums of squared norms stay exact integers in float64 up to this many pixels
#: (3 * 255**2 per pixel, with room for the inertia's terms)
_EXACT_MAX_PIXELS = (1 << 53) // (4 * 3 * 255 * 255)


class ColourOctree:
    """The distinct colours of an 8-bit RGB histogram in cubes, with their exact sums.

    Parameters
    ----------
    colours : ndarray of shape (n_colours, 3) of uint8
        Distinct colours.
    counts : ndarray of shape (n_colours,)
        Their pixel counts (integers).
    order : tuple of ndarray, optional
        The colours' Morton order when it is known (a histogram counted in
        Morton order, :attr:`bigquant.cluster.histogram.ColourHistogram.morton`):
        ``(perm, mcodes, mcounts)``, the row of each colour in Morton order,
        their sorted Morton codes and their counts.  Without it the colours
        are sorted here.

    Raises
    ------
    ValueError
        A colour repeats.
    """

    def __init__(self, colours: np.ndarray, counts: np.ndarray,
                 order: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        if order is None:
            tree = build_octree(colours, counts, TOP_LEVEL, LEAF_LEVEL)
            if tree is None:
                raise ValueError("the colours of an octree must be distinct")
        else:
            perm, mcodes, mcounts = order
            tree = sorted_octree(mcodes, mcounts, TOP_LEVEL, LEAF_LEVEL, perm)
        self._set(tree)

    @classmethod
    def of_morton(cls, mcodes: np.ndarray, mcounts: np.ndarray) -> Callable[[np.ndarray], ColourOctree]:
        """Build the octree of a histogram counted in Morton order before its colours are put in code order.

        The cells and sums need only the sorted Morton codes and counts;
        the returned function takes the row of each colour in the
        histogram (see :func:`bigquant.kernels.morton_colours`) and gives the
        octree.
        """
        tree = sorted_octree(mcodes, mcounts, TOP_LEVEL, LEAF_LEVEL, None)

        def ordered(perm: np.ndarray) -> ColourOctree:
            if perm.shape != (tree.X.shape[0],):
                raise ValueError(f"the order of {tree.X.shape[0]} colours has {perm.shape[0]} rows")
            octree = cls.__new__(cls)
            octree._set(tree._replace(perm=perm))
            return octree

        return ordered

    def _set(self, tree: Octree) -> None:
        self._tree = tree
        self.n_colours = int(tree.X.shape[0])
        self._parts: list[tuple[int, int] | None] = list(top_parts(tree, n_threads())) if n_threads() > 1 else [None]
        top = slice(0, int(tree.offsets[1]))
        # exact integers: the same numbers in any order
        self._moments = _weighted_moments(float(np.sum(tree.weight[top])), tree.sums[top].sum(axis=0), tree.squares)

    @staticmethod
    def suits(colours: np.ndarray, counts: np.ndarray) -> bool:
        """Whether a histogram of these colours and counts is worth (and safe for) an octree.

        8-bit RGB, more than :data:`OCTREE_MIN_COLOURS` colours, and few enough
        pixels that every sum stays an exact integer in float64.
        """
        return (colours.dtype == np.uint8 and colours.ndim == 2 and colours.shape[1] == 3
                and ColourOctree.suits_rgb(colours.shape[0], float(np.sum(counts, dtype=np.float64))))

    @staticmethod
    def suits_rgb(n_colours: int, n_pixels: float) -> bool:
        """:meth:`suits` for RGB uint8 colours, from how many there are and the pixels they count."""
        return n_colours > OCTREE_MIN_COLOURS and n_pixels <= _EXACT_MAX_PIXELS

    def _each_part(self, func: Callable[[tuple[int, int]], Any]) -> list[Any]:
        """``func(tops)`` for the top cells cut in one part per thread, on the shared pool (in turn on its threads)."""
        parts = self._parts if not on_pool_thread() else [None]
        if len(parts) == 1:
            return [func(parts[0])]
        return list(_thread_pool().map(func, parts))

    def sums(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per nearest centre (ties to the lowest index): weighted colour sums, weights, weighted squared norms.

        The numbers of a full scan of the colours, bit for bit (the parts'
        sums are integers: exact in any order).
        """
        found = self._each_part(lambda tops: octree_sums(self._tree, centers, tops))
        sums, counts, sqnorm, _ = found[0]
        for more in found[1:]:
            sums, counts, sqnorm = sums + more[0], counts + more[1], sqnorm + more[2]
        return sums, counts, sqnorm

    def labels(self, centers: np.ndarray) -> np.ndarray:
        """The nearest centre of every colour, in the histogram's order (int64; a full scan's labels)."""
        labels = np.empty(self.n_colours, dtype=np.int64)
        self._each_part(lambda tops: octree_labels(self._tree, centers, labels, tops))
        return labels

    def cells(self, level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The cells of ``level`` (side ``2**(8 - level)``) in Morton order: lowest colours (uint8), sums, weights.

        The sums of the colours in each cell, weighted by their counts, and
        the summed counts: exact integers (in float64).  ``None`` for a level
        the octree does not hold.
        """
        if not TOP_LEVEL <= level <= LEAF_LEVEL:
            return None
        tree = self._tree
        cut = slice(int(tree.offsets[level - TOP_LEVEL]), int(tree.offsets[level - TOP_LEVEL + 1]))
        return tree.corner[cut], tree.sums[cut], tree.weight[cut]

    def moments(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Total weight, weighted mean and weighted variance per channel (exact sums)."""
        total, mean, var = self._moments
        return total, mean.copy(), var.copy()


class OctreePoints(InMemoryPoints):
    """The distinct colours of an 8-bit RGB histogram as a weighted point set, stepped through a :class:`ColourOctree`.

    The same partial sums, inertia, labels, farthest points and moments as
    :class:`~bigquant.cluster.points.BoundedPoints` of the same colours and
    counts, bit for bit, so :func:`bigquant.cluster.lloyd.lloyd` runs the same
    iterations over it.

    Parameters
    ----------
    colours : ndarray of shape (n_colours, 3) of uint8
    counts : ndarray of shape (n_colours,)
    octree : ColourOctree
        Of these colours and counts.
    """

    def __init__(self, colours: np.ndarray, counts: np.ndarray, octree: ColourOctree) -> None:
        super().__init__(colours, counts, multiplicity=True)
        self.octree = octree

    def partial_sums(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        centers = np.asarray(centers, dtype=np.float64)
        sums, counts, sqnorm = self.octree.sums(centers)
        # the inertia from the clusters' moments, as BoundedPoints computes it
        inertia = float(np.sum(sqnorm - 2 * (centers * sums).sum(axis=1) + counts * (centers**2).sum(axis=1)))
        return sums, counts, max(inertia, 0.0)

    def labels(self, centers: np.ndarray, label_dtype: np.dtype | type = np.int32) -> np.ndarray:
        return self.octree.labels(centers).astype(label_dtype, copy=False)

    def finish(self, centers: np.ndarray) -> tuple[float, np.ndarray]:
        """Inertia (a direct sum over the colours, by segments) and labels for the last centres of a run."""
        centers_t = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).T)
        labels = self.octree.labels(centers)
        parts = self._map(lambda seg: kernels.labelled_inertia(self.X[seg], self.weights[seg], centers_t, labels[seg]))
        return float(math.fsum(parts)), labels

    def moments(self) -> tuple[float, np.ndarray, np.ndarray]:
        return self.octree.moments()
