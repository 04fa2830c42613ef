"""Nearest centres of RGB uint8 colours through an octree of Morton cells: exact sums at a fraction of a scan.

The distinct colours of a histogram, sorted in Morton (bit-interleaved) order,
nest into cubes: the colours whose Morton codes share their top ``3 L`` bits
fill one cell of side ``2**(8 - L)`` at level ``L``, a contiguous run of the
sorted colours, and the eight cells of level ``L + 1`` inside it follow one
another.  :func:`build_octree` keeps, for every cell of the levels ``top`` to
``leaf``, its run of colours, its children and the exact sums of its colours
(count-weighted coordinates, counts and squared norms: integers, exact in
float64).

A Lloyd step then walks the cells from the top (Kanungo et al.'s filtering
algorithm): a cell keeps the centres that may be nearest to one of its
colours -- centre ``z`` is dropped when even the corner of the cell most
towards ``z`` is nearer the centre ``z*`` nearest the cell's middle, with a
margin far above the rounding of the distances -- and passes them to its
children.  A cell left with one centre adds its sums to that centre at once;
a leaf cell with several scans its colours against them (increasing index,
``sum_c (x_c - m_c) ** 2`` in float64, ties to the lowest index: the
arithmetic of :mod:`bigquant.kernels.scans`).  Every colour gets the label a
full scan gives it, so the sums are those of a full scan, bit for bit, while
only the colours near a boundary between two clusters are looked at (a tenth
of them for k = 16 on a photo's 7 M colours).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT
from bigquant.kernels.morton import MORTON_TABLES, _unmorton

__all__ = ["Octree", "build_octree", "sorted_octree", "octree_sums", "octree_labels", "top_parts"]

#: absolute and relative margin of the pruning test (distances round at about 1e-16 of 2e5)
_MARGIN = 1e-9


@numba.njit(**_JIT)
def _morton_order(colours, s0, s1, s2):  # pragma: no cover - jitted
    """The rows of distinct ``colours`` in Morton order and their Morton codes; ``ok`` False if a colour repeats."""
    n = colours.shape[0]
    # a table of 2**24 slots (row + 1): the colours are distinct
    index = np.zeros(1 << 24, dtype=np.int32)
    for i in range(n):
        index[s0[colours[i, 0]] | s1[colours[i, 1]] | s2[colours[i, 2]]] = i + 1
    perm = np.empty(n, dtype=np.int32)
    mcodes = np.empty(n, dtype=np.uint32)
    j = 0
    for m in range(1 << 24):
        v = index[m]
        if v:
            if j < n:
                perm[j] = v - 1
                mcodes[j] = m
            j += 1
    return j == n, perm, mcodes


@numba.njit(**_JIT)
def _build(mcodes, weights, top, leaf):  # pragma: no cover - jitted
    """The cells of the colours of sorted Morton codes ``mcodes`` with float64 counts ``weights`` (kept as ``w``)."""
    n = mcodes.shape[0]
    n_levels = leaf - top + 1
    # the first level whose cell changes from the colour before (n_levels: none), and cells per level
    opens = np.empty(n, dtype=np.uint8)
    per_level = np.zeros(n_levels + 1, dtype=np.int64)
    for i in range(n):
        lv = 0
        if i > 0:
            x = mcodes[i] ^ mcodes[i - 1]
            while lv < n_levels and (x >> np.uint32(3 * (8 - top - lv))) == 0:
                lv += 1
        opens[i] = lv
        per_level[lv] += 1
    offsets = np.zeros(n_levels + 1, dtype=np.int64)
    for lv in range(n_levels):  # a cell opens at its level and at every level below it
        offsets[lv + 1] = offsets[lv] + np.sum(per_level[: lv + 1])
    n_nodes = offsets[n_levels]
    first = np.empty(n_nodes, dtype=np.int32)
    stop = np.empty(n_nodes, dtype=np.int32)
    child_lo = np.full(n_nodes, -1, dtype=np.int32)
    child_hi = np.full(n_nodes, -1, dtype=np.int32)
    corner = np.empty((n_nodes, 3), dtype=np.uint8)
    level = np.empty(n_nodes, dtype=np.uint8)
    sums = np.zeros((n_nodes, 3))
    weight = np.zeros(n_nodes)
    sqnorm = np.zeros(n_nodes)
    X = np.empty((n, 3), dtype=np.uint8)
    w = weights
    squares = np.zeros(3)
    nxt = offsets[:n_levels].copy()
    for i in range(n):
        m = mcodes[i]
        rgb = _unmorton(m)
        X[i, 0] = (rgb >> np.uint32(16)) & np.uint32(255)
        X[i, 1] = (rgb >> np.uint32(8)) & np.uint32(255)
        X[i, 2] = rgb & np.uint32(255)
        for lv in range(np.int64(opens[i]), n_levels):
            shift = np.uint32(3 * (8 - top - lv))
            node = nxt[lv]
            nxt[lv] += 1
            first[node] = i
            if node > offsets[lv]:
                stop[node - 1] = i
            rgb = _unmorton((m >> shift) << shift)
            corner[node, 0] = (rgb >> np.uint32(16)) & np.uint32(255)
            corner[node, 1] = (rgb >> np.uint32(8)) & np.uint32(255)
            corner[node, 2] = rgb & np.uint32(255)
            level[node] = top + lv
            if lv > 0:
                parent = nxt[lv - 1] - 1
                if child_lo[parent] < 0:
                    child_lo[parent] = node
                child_hi[parent] = node + 1
        leaf_node = nxt[n_levels - 1] - 1
        r = np.float64(X[i, 0])
        g = np.float64(X[i, 1])
        b = np.float64(X[i, 2])
        sums[leaf_node, 0] += r * w[i]
        sums[leaf_node, 1] += g * w[i]
        sums[leaf_node, 2] += b * w[i]
        weight[leaf_node] += w[i]
        sqnorm[leaf_node] += (r * r + g * g + b * b) * w[i]
        squares[0] += r * r * w[i]
        squares[1] += g * g * w[i]
        squares[2] += b * b * w[i]
    for lv in range(n_levels):
        if offsets[lv + 1] > offsets[lv]:
            stop[offsets[lv + 1] - 1] = n
    # every other level's sums from its children's (integers: exact in any order)
    for lv in range(n_levels - 2, -1, -1):
        for node in range(offsets[lv], offsets[lv + 1]):
            for ch in range(child_lo[node], child_hi[node]):
                for c in range(3):
                    sums[node, c] += sums[ch, c]
                weight[node] += weight[ch]
                sqnorm[node] += sqnorm[ch]
    return X, w, first, stop, child_lo, child_hi, corner, level, sums, weight, sqnorm, offsets, squares


class Octree(NamedTuple):
    """The arrays of an octree of colours (see :func:`build_octree`)."""

    #: ``X = colours[perm]``: the colours in Morton order, ``w`` their counts (float64)
    perm: np.ndarray
    X: np.ndarray
    w: np.ndarray
    #: cell ``i`` holds ``X[first[i]:stop[i]]`` and has the cells ``child_lo[i]:child_hi[i]`` (-1: a leaf)
    first: np.ndarray
    stop: np.ndarray
    child_lo: np.ndarray
    child_hi: np.ndarray
    #: its lowest colour (uint8) and level (its side is ``2**(8 - level)``)
    corner: np.ndarray
    level: np.ndarray
    #: the sums of its colours: count-weighted coordinates, counts, count-weighted squared norms
    sums: np.ndarray
    weight: np.ndarray
    sqnorm: np.ndarray
    #: the cells of level ``top + l`` are ``offsets[l]:offsets[l + 1]``, in Morton order
    offsets: np.ndarray
    #: count-weighted sums of every channel's squares, over all colours
    squares: np.ndarray


def build_octree(colours: np.ndarray, counts: np.ndarray, top: int, leaf: int) -> Octree | None:
    """The octree of distinct RGB uint8 ``colours`` weighted by ``counts``, cells of levels ``top`` to ``leaf``.

    Returns ``None`` when ``colours`` repeat a colour.
    """
    ok, perm, mcodes = _morton_order(np.ascontiguousarray(colours, dtype=np.uint8), *MORTON_TABLES)
    if not ok:
        return None
    return sorted_octree(mcodes, np.asarray(counts)[perm], top, leaf, perm)


def sorted_octree(mcodes: np.ndarray, mcounts: np.ndarray, top: int, leaf: int, perm: np.ndarray | None) -> Octree:
    """The octree of the distinct colours of increasing Morton codes ``mcodes``, weighted by ``mcounts``.

    What :func:`build_octree` builds once it has sorted the colours; a
    histogram counted in Morton order (:func:`bigquant.kernels.morton_to_codes`)
    has them so already.  ``perm`` is the row of each colour in the caller's
    order (labels are written there); ``None`` leaves it to be set with
    ``tree._replace(perm=...)`` before any labels are asked for.
    """
    if not 0 <= top <= leaf <= 8:
        raise ValueError(f"levels top={top}, leaf={leaf} must satisfy 0 <= top <= leaf <= 8")
    arrays = _build(np.ascontiguousarray(mcodes, dtype=np.uint32), np.asarray(mcounts).astype(np.float64),
                    np.int64(top), np.int64(leaf))
    return Octree(perm, *arrays)  # type: ignore[arg-type]


@numba.njit(inline="always", **_JIT)
def _nearest_point(x0, x1, x2, centers_t, cand, n_cand):  # pragma: no cover - jitted
    """Nearest of the candidate centres ``cand[:n_cand]`` to the point (x0, x1, x2), ties to the first; its distance."""
    best = cand[0]
    best_d = np.inf
    for q in range(n_cand):
        j = cand[q]
        a = x0 - centers_t[0, j]
        b = x1 - centers_t[1, j]
        c = x2 - centers_t[2, j]
        d = a * a + b * b + c * c
        if d < best_d:
            best_d = d
            best = j
    return best, best_d


@numba.njit(inline="always", **_JIT)
def _filter(node, corner, level, centers_t, cand, n_cand):  # pragma: no cover - jitted
    """Keep in ``cand[:n_cand]`` (in order) the centres that may be nearest to a colour of the cell; how many."""
    side = np.float64((1 << (8 - np.int64(level[node]))) - 1)
    lo0 = np.float64(corner[node, 0])
    lo1 = np.float64(corner[node, 1])
    lo2 = np.float64(corner[node, 2])
    hi0 = lo0 + side
    hi1 = lo1 + side
    hi2 = lo2 + side
    m0 = lo0 + 0.5 * side
    m1 = lo1 + 0.5 * side
    m2 = lo2 + 0.5 * side
    best, _ = _nearest_point(m0, m1, m2, centers_t, cand, n_cand)
    z0 = centers_t[0, best]
    z1 = centers_t[1, best]
    z2 = centers_t[2, best]
    kept = 0
    for q in range(n_cand):
        j = cand[q]
        if j != best:
            # the cell's corner farthest along z - z*: nearest to z of all its points, relative to z*
            v0 = hi0 if centers_t[0, j] > z0 else lo0
            v1 = hi1 if centers_t[1, j] > z1 else lo1
            v2 = hi2 if centers_t[2, j] > z2 else lo2
            a = v0 - centers_t[0, j]
            b = v1 - centers_t[1, j]
            c = v2 - centers_t[2, j]
            dz = a * a + b * b + c * c
            a = v0 - z0
            b = v1 - z1
            c = v2 - z2
            ds = a * a + b * b + c * c
            if dz - ds > _MARGIN * (dz + ds) + _MARGIN:
                continue  # every colour of the cell is strictly nearer z* than z
        cand[kept] = j
        kept += 1
    return kept, best


@numba.njit(inline="always", **_JIT)
def _nearest_of(X, i, centers_t, cand, n_cand):  # pragma: no cover - jitted
    """Nearest of the candidate centres to colour ``i`` (increasing index, ties to the lowest) and its distance."""
    return _nearest_point(np.float64(X[i, 0]), np.float64(X[i, 1]), np.float64(X[i, 2]), centers_t, cand, n_cand)


@numba.njit(**_JIT)
def _walk(X, w, first, stop, child_lo, child_hi, corner, level, node_sums, node_weight, node_sqnorm, top_lo,
          top_hi, depth, centers_t, perm, labels, sums, counts, sqnorm, want_sums):  # pragma: no cover - jitted
    """Depth-first filtering walk from the top cells ``top_lo:top_hi``; adds to ``sums``/``counts``/``sqnorm``
    or writes ``labels`` (via ``perm``)."""
    k = centers_t.shape[1]
    size = 8 * depth + 1
    stack = np.empty(size, dtype=np.int64)
    kept = np.empty(size, dtype=np.int64)
    cands = np.empty((size, k), dtype=np.int64)
    cand = np.empty(k, dtype=np.int64)
    scanned = 0
    for top_node in range(top_lo, top_hi):
        stack[0] = top_node
        kept[0] = k
        for j in range(k):
            cands[0, j] = j
        sp = 1
        while sp > 0:
            sp -= 1
            node = stack[sp]
            n_cand = kept[sp]
            for q in range(n_cand):
                cand[q] = cands[sp, q]
            n_cand, best = _filter(node, corner, level, centers_t, cand, n_cand)
            if n_cand == 1:
                if want_sums:
                    for c in range(3):
                        sums[best, c] += node_sums[node, c]
                    counts[best] += node_weight[node]
                    sqnorm[best] += node_sqnorm[node]
                else:
                    for i in range(first[node], stop[node]):
                        labels[perm[i]] = best
                continue
            if child_lo[node] < 0:  # a leaf cell on a boundary: its colours one by one
                scanned += stop[node] - first[node]
                for i in range(first[node], stop[node]):
                    j, _ = _nearest_of(X, i, centers_t, cand, n_cand)
                    if want_sums:
                        x0 = np.float64(X[i, 0])
                        x1 = np.float64(X[i, 1])
                        x2 = np.float64(X[i, 2])
                        wi = w[i]
                        sums[j, 0] += x0 * wi
                        sums[j, 1] += x1 * wi
                        sums[j, 2] += x2 * wi
                        counts[j] += wi
                        sqnorm[j] += (x0 * x0 + x1 * x1 + x2 * x2) * wi
                    else:
                        labels[perm[i]] = j
                continue
            for ch in range(child_lo[node], child_hi[node]):
                stack[sp] = ch
                kept[sp] = n_cand
                for q in range(n_cand):
                    cands[sp, q] = cand[q]
                sp += 1
    return scanned


def _cells(tree: Octree) -> tuple:
    """The arguments of :func:`_walk` that describe the tree (the top cells apart)."""
    return (tree.X, tree.w, tree.first, tree.stop, tree.child_lo, tree.child_hi, tree.corner, tree.level,
            tree.sums, tree.weight, tree.sqnorm)


def _top_range(tree: Octree, tops: tuple[int, int] | None) -> tuple[np.int64, np.int64, np.int64]:
    lo, hi = (0, int(tree.offsets[1])) if tops is None else tops
    return np.int64(lo), np.int64(hi), np.int64(len(tree.offsets) - 1)


def top_parts(tree: Octree, n_parts: int) -> list[tuple[int, int]]:
    """The top cells cut into up to ``n_parts`` ranges of about as many colours, for walks on several threads."""
    n_top = int(tree.offsets[1])
    n = int(tree.X.shape[0])
    cuts = np.searchsorted(tree.first[:n_top], np.linspace(0, n, max(1, n_parts) + 1)[1:-1])
    bounds = np.unique(np.concatenate([[0], cuts, [n_top]]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def octree_sums(
    tree: Octree, centers: np.ndarray, tops: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per nearest centre: the weighted colour sums, the weights and the weighted squared norms.

    ``tree`` is :func:`build_octree`'s; ``centers`` (k, 3), finite.  Bit-identical to the sums of a full scan of the colours
    (:func:`bigquant.kernels.partial_sums`); also returns how many colours were
    scanned one by one.  ``tops`` (a range of :func:`top_parts`) sums the
    colours of those top cells only: the sums of the parts, integers, add up
    to the whole's exactly.
    """
    centers_t = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).T)
    k = centers_t.shape[1]
    sums = np.zeros((k, 3))
    counts = np.zeros(k)
    sqnorm = np.zeros(k)
    scanned = _walk(*_cells(tree), *_top_range(tree, tops), centers_t, tree.perm, np.empty(0, np.int64), sums,
                    counts, sqnorm, np.bool_(True))
    return sums, counts, sqnorm, int(scanned)


def octree_labels(tree: Octree, centers: np.ndarray, labels: np.ndarray, tops: tuple[int, int] | None = None) -> int:
    """Write the nearest centre of every colour (in the colours' own order) into ``labels``.

    The labels of a full scan (:func:`bigquant.kernels.assign_labels`); returns
    how many colours were scanned one by one.  ``tops``: the colours of those
    top cells only (see :func:`octree_sums`).
    """
    centers_t = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).T)
    k = centers_t.shape[1]
    scanned = _walk(*_cells(tree), *_top_range(tree, tops), centers_t, tree.perm, labels, np.zeros((k, 3)),
                    np.zeros(k), np.zeros(k), np.bool_(False))
    return int(scanned)
