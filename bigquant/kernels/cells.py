"""Nearest centres through a grid of value cells: a centre per cell where it is certain, a short scan elsewhere.

A regular grid over a per-band value range ``[lo, lo + 2**bits * width)`` cuts
the values into cells (``bits`` bits a band, code ``q_0 q_1 ... q_{C-1}``,
first band highest, as :mod:`bigquant.kernels.grid`).  For every cell and
centre the squared distances from the centre to the nearest and the farthest
point of the cell's box give:

- a *certain* cell: one centre whose farthest distance is below every other
  centre's nearest one (both with a relative margin far above the rounding
  of the distances): every value of the cell has that nearest centre, strictly;
- otherwise the cell's *candidates*: the centres whose nearest distance is at
  most the smallest farthest distance; no other centre can be nearest, or
  tie, for a value of the cell.

:func:`cell_labels` and :func:`cell_partial_sums` then take a value's label
from its cell, or scan the candidates (increasing index) with the arithmetic
of :mod:`bigquant.kernels.scans` (``sum_c (x_c - m_c) ** 2`` in float64,
channels in order, ties to the lowest index); a value outside the grid (or
not finite) is scanned against every centre.  Labels, sums and inertia are
bit-identical to the full scans'.
"""

from __future__ import annotations

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT
from bigquant.kernels.scans import _nearest, _sqdist

__all__ = ["cell_table", "cell_labels", "cell_partial_sums", "cell_sums_and_labels"]

#: relative margin on the box distances (the distances round at about 1e-16)
_MARGIN = 1e-9


@numba.njit(**_JIT)
def _axis_bounds(lo, width, pad, bits, centers_t):  # pragma: no cover - jitted
    """Per band, cell and centre: squared distances to the nearest and farthest point of the cell's slab."""
    n_channels, k = centers_t.shape
    side = 1 << bits
    near = np.empty((n_channels, side, k))
    far = np.empty((n_channels, side, k))
    for c in range(n_channels):
        for q in range(side):
            a = lo[c] + q * width[c] - pad[c]
            b = lo[c] + (q + 1) * width[c] + pad[c]
            for j in range(k):
                m = centers_t[c, j]
                da = m - a
                db = b - m
                if da >= 0.0 and db >= 0.0:
                    near[c, q, j] = 0.0
                else:
                    t = -da if da < 0.0 else -db
                    near[c, q, j] = t * t
                t = max(abs(da), abs(db))
                far[c, q, j] = t * t
    return near, far


@numba.njit(**_JIT)
def _fill_cells(near, far, bits, table, offsets, cand, fill):  # pragma: no cover - jitted
    """Certain label (>= 0) or -1 per cell; with ``fill``, the candidates of the others into ``cand``."""
    n_channels, side, k = near.shape
    mask = side - 1
    lower = np.empty(k)
    upper = np.empty(k)
    pos = 0
    for code in range(table.shape[0]):
        for j in range(k):
            lower[j] = 0.0
            upper[j] = 0.0
        for c in range(n_channels):
            q = (code >> ((n_channels - 1 - c) * bits)) & mask
            for j in range(k):
                lower[j] += near[c, q, j]
                upper[j] += far[c, q, j]
        best = 0
        for j in range(1, k):
            if upper[j] < upper[best]:
                best = j
        bound = upper[best] * (1.0 + _MARGIN)
        certain = True
        for j in range(k):
            if j != best and not (lower[j] * (1.0 - _MARGIN) > bound):
                certain = False
                break
        if not fill:
            offsets[code] = pos
        if certain:
            table[code] = best
            continue
        table[code] = -1
        for j in range(k):
            if lower[j] <= bound:
                if fill:
                    cand[pos] = j
                pos += 1
    if not fill:
        offsets[table.shape[0]] = pos


def cell_table(lo: np.ndarray, width: np.ndarray, bits: int, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                              np.ndarray]:
    """The certain label or candidates of every cell of a grid, for ``centers``.

    Parameters
    ----------
    lo, width : ndarray of shape (n_channels,)
        Cell ``q`` of band ``c`` holds the values ``lo[c] + q * width[c] <= x < lo[c] + (q + 1) * width[c]``
        (widths positive and finite).
    bits : int
        Bits per band: ``2**bits`` cells a band.
    centers : ndarray of shape (k, n_channels)

    Returns
    -------
    table : ndarray of shape (2**(bits * n_channels),), int32
        The label of a certain cell, -1 for the others.
    offsets : ndarray of shape (2**(bits * n_channels) + 1,), int64
        Cell ``i``'s candidates are ``cand[offsets[i]:offsets[i + 1]]`` (none for a certain cell).
    cand : ndarray of int32
        Candidate centres, increasing within a cell.
    """
    centers_t = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).T)
    lo = np.ascontiguousarray(lo, dtype=np.float64)
    width = np.ascontiguousarray(width, dtype=np.float64)
    # the boxes widened a little: a value rounded into a neighbouring cell still lies in its box
    pad = 1e-6 * width + 1e-13 * np.maximum(np.abs(lo), np.abs(lo + width * (1 << bits)))
    near, far = _axis_bounds(lo, width, pad, np.int64(bits), centers_t)
    n_cells = 1 << (int(bits) * centers_t.shape[0])
    table = np.empty(n_cells, dtype=np.int32)
    offsets = np.empty(n_cells + 1, dtype=np.int64)
    _fill_cells(near, far, np.int64(bits), table, offsets, np.empty(0, dtype=np.int32), False)
    cand = np.empty(int(offsets[-1]), dtype=np.int32)
    _fill_cells(near, far, np.int64(bits), table, offsets, cand, True)
    return table, offsets, cand


@numba.njit(**_JIT)
def _nearest_rgb(X, lo, inv_width, bits, table, offsets, cand, centers_t, labels, min_dist, distances):  # pragma: no cover
    """Labels (and with ``distances`` squared distances) of RGB rows: the cells' arithmetic unrolled."""
    side = np.float64(1 << bits)
    l0, l1, l2 = lo[0], lo[1], lo[2]
    s0, s1, s2 = inv_width[0], inv_width[1], inv_width[2]
    dist = np.empty(centers_t.shape[1])
    for i in range(X.shape[0]):
        x0, x1, x2 = np.float64(X[i, 0]), np.float64(X[i, 1]), np.float64(X[i, 2])
        u0, u1, u2 = (x0 - l0) * s0, (x1 - l1) * s1, (x2 - l2) * s2
        if not (u0 >= 0.0 and u0 < side and u1 >= 0.0 and u1 < side and u2 >= 0.0 and u2 < side):
            best, best_d = _nearest(X, i, centers_t, dist)  # outside the grid: every centre
            labels[i] = best
            if distances:
                min_dist[i] = best_d
            continue
        code = (((np.int64(u0) << bits) | np.int64(u1)) << bits) | np.int64(u2)
        lab = table[code]
        if lab >= 0:
            labels[i] = lab
            if distances:
                a, b, c = x0 - centers_t[0, lab], x1 - centers_t[1, lab], x2 - centers_t[2, lab]
                min_dist[i] = a * a + b * b + c * c
            continue
        best, best_d = _scan_candidates(x0, x1, x2, offsets[code], offsets[code + 1], cand, centers_t)
        labels[i] = best
        if distances:
            min_dist[i] = best_d


@numba.njit(**_JIT)
def _nearest_any(X, lo, inv_width, bits, table, offsets, cand, centers_t, labels, min_dist, distances):  # pragma: no cover
    """:func:`_nearest_rgb` for any number of bands."""
    n_channels = X.shape[1]
    side = np.float64(1 << bits)
    dist = np.empty(centers_t.shape[1])
    for i in range(X.shape[0]):
        code = np.int64(0)
        for c in range(n_channels):
            u = (np.float64(X[i, c]) - lo[c]) * inv_width[c]
            if not (u >= 0.0 and u < side):
                code = -1
                break
            code = (code << bits) | np.int64(u)
        if code < 0:
            best, best_d = _nearest(X, i, centers_t, dist)
            labels[i] = best
            if distances:
                min_dist[i] = best_d
            continue
        lab = table[code]
        if lab >= 0:
            labels[i] = lab
            if distances:
                min_dist[i] = _sqdist(X, i, centers_t, lab)
            continue
        p0 = offsets[code]
        best = cand[p0]
        best_d = _sqdist(X, i, centers_t, best)
        for p in range(p0 + 1, offsets[code + 1]):
            j = cand[p]
            d = _sqdist(X, i, centers_t, j)
            if d < best_d:
                best_d = d
                best = j
        labels[i] = best
        if distances:
            min_dist[i] = best_d


@numba.njit(**_JIT)
def _nearest_cells(X, lo, inv_width, bits, table, offsets, cand, centers_t, labels, min_dist, distances):  # pragma: no cover
    if X.shape[1] == 3:
        _nearest_rgb(X, lo, inv_width, bits, table, offsets, cand, centers_t, labels, min_dist, distances)
    else:
        _nearest_any(X, lo, inv_width, bits, table, offsets, cand, centers_t, labels, min_dist, distances)


_NO_DIST = np.empty(0)


def cell_labels(X, lo, inv_width, bits, table, offsets, cand, centers_t, labels):
    """Nearest centre of every row of ``X`` (n, C) into ``labels`` (ties to the lowest index).

    ``table``, ``offsets`` and ``cand`` from :func:`cell_table` for the grid
    ``lo``, ``1 / inv_width``, ``bits`` and the centres ``centers_t`` (C, k).
    """
    _nearest_cells(X, lo, inv_width, np.int64(bits), table, offsets, cand, centers_t, labels, _NO_DIST,
                   np.bool_(False))


#: rows labelled at a time by :func:`cell_partial_sums`
_SUM_ROWS = 4096


@numba.njit(**_JIT)
def _add_rows(X, start, stop, weights, use_weights, labels, min_dist, sums, counts, inertia):  # pragma: no cover
    """Rows ``start:stop`` added to their centres' sums and counts, in row order; the inertia carried on."""
    n_channels = X.shape[1]
    for i in range(start, stop):  # added in row order: the sums of a row-by-row scan
        best = labels[i - start]
        if use_weights:
            w = np.float64(weights[i])
            counts[best] += w
            for c in range(n_channels):
                sums[best, c] += np.float64(X[i, c]) * w
            inertia += min_dist[i - start] * w
        else:
            counts[best] += 1.0
            for c in range(n_channels):
                sums[best, c] += np.float64(X[i, c])
            inertia += min_dist[i - start]
    return inertia


@numba.njit(**_JIT)
def _cell_partial_sums(X, weights, use_weights, lo, inv_width, bits, table, offsets, cand, centers_t,
                       sums, counts):  # pragma: no cover
    n = X.shape[0]
    labels = np.empty(_SUM_ROWS, dtype=np.int64)
    min_dist = np.empty(_SUM_ROWS)
    inertia = 0.0
    for start in range(0, n, _SUM_ROWS):
        stop = min(n, start + _SUM_ROWS)
        _nearest_cells(X[start:stop], lo, inv_width, bits, table, offsets, cand, centers_t, labels, min_dist,
                       np.bool_(True))
        inertia = _add_rows(X, start, stop, weights, use_weights, labels, min_dist, sums, counts, inertia)
    return inertia


def cell_partial_sums(X, weights, use_weights, lo, inv_width, bits, table, offsets, cand, centers_t, sums, counts):
    """:func:`bigquant.kernels.partial_sums` through the cells: sums and counts added, inertia returned.

    The same per-row values added in the same order as the full scan's, so
    the results are bit-identical.
    """
    return _cell_partial_sums(X, weights, np.bool_(use_weights), lo, inv_width, np.int64(bits), table, offsets,
                              cand, centers_t, sums, counts)


@numba.njit(**_JIT)
def _scan_candidates(x0, x1, x2, p0, p1, cand, centers_t):  # pragma: no cover
    """Nearest of the candidates ``cand[p0:p1]`` of an RGB value and its squared distance (as :func:`_nearest_rgb`)."""
    best = cand[p0]
    a, b, c = x0 - centers_t[0, best], x1 - centers_t[1, best], x2 - centers_t[2, best]
    best_d = a * a + b * b + c * c
    for p in range(p0 + 1, p1):
        j = cand[p]
        a, b, c = x0 - centers_t[0, j], x1 - centers_t[1, j], x2 - centers_t[2, j]
        d = a * a + b * b + c * c
        if d < best_d:
            best_d = d
            best = j
    return best, best_d


@numba.njit(**_JIT)
def _sums_and_labels_rgb(X, lo, inv_width, bits, table, offsets, cand, centers_t, p_table, p_offsets, p_cand,
                         palette_t, sums, counts, out, out_counts):  # pragma: no cover
    """:func:`_cell_sums_and_labels` for RGB rows: one cell code a pixel serves both sets of centres."""
    side = np.float64(1 << bits)
    l0, l1, l2 = lo[0], lo[1], lo[2]
    s0, s1, s2 = inv_width[0], inv_width[1], inv_width[2]
    dist = np.empty(max(centers_t.shape[1], palette_t.shape[1]))
    inertia = 0.0
    for i in range(X.shape[0]):
        x0, x1, x2 = np.float64(X[i, 0]), np.float64(X[i, 1]), np.float64(X[i, 2])
        u0, u1, u2 = (x0 - l0) * s0, (x1 - l1) * s1, (x2 - l2) * s2
        if not (u0 >= 0.0 and u0 < side and u1 >= 0.0 and u1 < side and u2 >= 0.0 and u2 < side):
            best, best_d = _nearest(X, i, centers_t, dist)  # outside the grid: every centre
            out[i] = _nearest(X, i, palette_t, dist)[0]
        else:
            code = (((np.int64(u0) << bits) | np.int64(u1)) << bits) | np.int64(u2)
            best = table[code]
            if best >= 0:
                a, b, c = x0 - centers_t[0, best], x1 - centers_t[1, best], x2 - centers_t[2, best]
                best_d = a * a + b * b + c * c
            else:
                best, best_d = _scan_candidates(x0, x1, x2, offsets[code], offsets[code + 1], cand, centers_t)
            lab = p_table[code]
            if lab < 0:
                lab = _scan_candidates(x0, x1, x2, p_offsets[code], p_offsets[code + 1], p_cand, palette_t)[0]
            out[i] = lab
        out_counts[out[i]] += 1
        counts[best] += 1.0  # added in row order: the sums of a row-by-row scan
        sums[best, 0] += x0
        sums[best, 1] += x1
        sums[best, 2] += x2
        inertia += best_d
    return inertia


#: rows :func:`_sums_and_labels_small_ints` takes at a time (its scratch stays in the first-level cache)
_RUN = 256
#: interleaved partial sums per centre of :func:`_sums_and_labels_small_ints` (independent chains of adds)
_SUM_LANES = 4
#: rows between two flushes of :func:`_sums_and_labels_small_ints`' packed sums (``(2**16 - 1) * 2**15 < 2**32``)
_FLUSH_ROWS = 1 << 15


@numba.njit(inline="always", **_JIT)
def _scan_rows(g, n, centers_t, best_d, best):  # pragma: no cover - jitted
    """Nearest of all centres for the RGB values ``g[:, :n]`` (float64), as :func:`_nearest`: vectorised over the rows.

    The distances are :func:`_scan_candidates`' expression and the ties go to
    the lowest index (a strictly smaller distance replaces), so the labels are
    the full scan's and the candidates' scan's (no centre but a candidate can
    be nearest or tie).
    """
    for t in range(n):
        a, b, c = g[0, t] - centers_t[0, 0], g[1, t] - centers_t[1, 0], g[2, t] - centers_t[2, 0]
        best_d[t] = a * a + b * b + c * c
        best[t] = 0
    for j in range(1, centers_t.shape[1]):
        m0, m1, m2 = centers_t[0, j], centers_t[1, j], centers_t[2, j]
        for t in range(n):
            a, b, c = g[0, t] - m0, g[1, t] - m1, g[2, t] - m2
            d = a * a + b * b + c * c
            closer = d < best_d[t]
            best_d[t] = d if closer else best_d[t]
            best[t] = j if closer else best[t]


@numba.njit(**_JIT)
def _sums_and_labels_small_ints(X, lo, inv_width, bits, table, p_table, centers_t, palette_t, sums, counts, out,
                                out_counts):  # pragma: no cover - jitted
    """:func:`_sums_and_labels_rgb` for unsigned RGB integers of 16 bits or fewer, without unpredictable branches.

    A run of :data:`_RUN` rows at a time: their values and cell codes
    (vectorised; the codes clipped to the grid, the rows outside it flagged),
    the two table lookups, then the rows whose cell is not certain for either
    set of centres (or outside the grid) gathered and scanned against every
    centre, the rows vectorised (:func:`_scan_rows`: the same labels as the
    candidates' scans, without a branch a row); the squared distances to the
    nearest centres (the one expression, so bit for bit) and the inertia
    added in row order; last the sums and counts, as integers: the three
    values and a one packed in two int64 (32 bits each), added in
    :data:`_SUM_LANES` interleaved partial sums (no chain of adds through
    memory), flushed to int64 totals every :data:`_FLUSH_ROWS` rows.  Sums of
    integers are exact in any order: the float64 sums of the row-by-row scan.
    """
    n = X.shape[0]
    k = centers_t.shape[1]
    side = np.float64(1 << bits)
    top = side - 1.0
    l0, l1, l2 = lo[0], lo[1], lo[2]
    s0, s1, s2 = inv_width[0], inv_width[1], inv_width[2]
    f = np.empty((3, _RUN))
    code = np.empty(_RUN, dtype=np.int64)
    outside = np.empty(_RUN, dtype=np.bool_)
    near = np.empty(_RUN, dtype=np.int64)
    lab = np.empty(_RUN, dtype=np.int64)
    d = np.empty(_RUN)
    rows = np.empty(_RUN, dtype=np.int64)
    g = np.empty((3, _RUN))
    best_d = np.empty(_RUN)
    best = np.empty(_RUN, dtype=np.int64)
    packed = np.zeros((_SUM_LANES, k, 2), dtype=np.int64)
    total = np.zeros((k, 4), dtype=np.int64)
    lane_labels = np.zeros((_SUM_LANES, out_counts.shape[0]), dtype=np.int64)
    low32 = np.int64(0xFFFFFFFF)
    one = np.int64(1) << 32
    inertia = 0.0
    since = 0
    for start in range(0, n, _RUN):
        m = min(_RUN, n - start)
        for i in range(m):  # values (vectorised)
            f[0, i] = np.float64(X[start + i, 0])
            f[1, i] = np.float64(X[start + i, 1])
            f[2, i] = np.float64(X[start + i, 2])
        for i in range(m):  # cell codes, clipped to the grid; the rows outside it flagged (vectorised)
            u0, u1, u2 = (f[0, i] - l0) * s0, (f[1, i] - l1) * s1, (f[2, i] - l2) * s2
            q0 = np.int64(min(max(u0, 0.0), top))
            q1 = np.int64(min(max(u1, 0.0), top))
            q2 = np.int64(min(max(u2, 0.0), top))
            code[i] = (((q0 << bits) | q1) << bits) | q2
            outside[i] = (u0 < 0.0) | (u0 >= side) | (u1 < 0.0) | (u1 >= side) | (u2 < 0.0) | (u2 >= side)
        n_scan = 0
        for i in range(m):  # the certain cells' labels; the other rows listed
            c = code[i]
            a, b = np.int64(table[c]), np.int64(p_table[c])
            near[i] = -1 if outside[i] else a
            lab[i] = -1 if outside[i] else b
            rows[n_scan] = i
            n_scan += 1 if (near[i] < 0) | (lab[i] < 0) else 0
        if n_scan:
            for t in range(n_scan):
                i = rows[t]
                g[0, t] = f[0, i]
                g[1, t] = f[1, i]
                g[2, t] = f[2, i]
            _scan_rows(g, n_scan, centers_t, best_d, best)
            for t in range(n_scan):
                near[rows[t]] = best[t]
            _scan_rows(g, n_scan, palette_t, best_d, best)
            for t in range(n_scan):
                lab[rows[t]] = best[t]
        for i in range(m):  # squared distances to the nearest centres (vectorised)
            j = near[i]
            a, b, c = f[0, i] - centers_t[0, j], f[1, i] - centers_t[1, j], f[2, i] - centers_t[2, j]
            d[i] = a * a + b * b + c * c
        for i in range(m):
            out[start + i] = lab[i]
            inertia += d[i]  # in row order: the inertia of a row-by-row scan
        for i in range(m):
            r = i & (_SUM_LANES - 1)
            j = near[i]
            packed[r, j, 0] += np.int64(X[start + i, 0]) | (np.int64(X[start + i, 1]) << 32)
            packed[r, j, 1] += np.int64(X[start + i, 2]) | one
            lane_labels[r, lab[i]] += 1
        since += m
        if since >= _FLUSH_ROWS or start + m == n:
            for r in range(_SUM_LANES):
                for j in range(k):
                    v, w = packed[r, j, 0], packed[r, j, 1]
                    total[j, 0] += v & low32
                    total[j, 1] += v >> 32
                    total[j, 2] += w & low32
                    total[j, 3] += w >> 32
                    packed[r, j, 0] = 0
                    packed[r, j, 1] = 0
            since = 0
    for j in range(k):
        counts[j] += np.float64(total[j, 3])
        for c in range(3):
            sums[j, c] += np.float64(total[j, c])
    for r in range(_SUM_LANES):
        for j in range(out_counts.shape[0]):
            out_counts[j] += lane_labels[r, j]
    return inertia


@numba.njit(**_JIT)
def _cell_sums_and_labels(X, lo, inv_width, bits, table, offsets, cand, centers_t, p_table, p_offsets, p_cand,
                          palette_t, sums, counts, out, out_counts):  # pragma: no cover
    n = X.shape[0]
    if X.shape[1] == 3:
        return _sums_and_labels_rgb(X, lo, inv_width, bits, table, offsets, cand, centers_t, p_table, p_offsets,
                                    p_cand, palette_t, sums, counts, out, out_counts)
    labels = np.empty(_SUM_ROWS, dtype=np.int64)
    min_dist = np.empty(_SUM_ROWS)
    no_weights = np.empty(0, dtype=np.float32)
    inertia = 0.0
    for start in range(0, n, _SUM_ROWS):
        stop = min(n, start + _SUM_ROWS)
        rows = X[start:stop]
        _nearest_cells(rows, lo, inv_width, bits, table, offsets, cand, centers_t, labels, min_dist, np.bool_(True))
        inertia = _add_rows(X, start, stop, no_weights, False, labels, min_dist, sums, counts, inertia)
        _nearest_cells(rows, lo, inv_width, bits, p_table, p_offsets, p_cand, palette_t, out[start:stop], min_dist,
                       np.bool_(False))
        for i in range(start, stop):
            out_counts[out[i]] += 1
    return inertia


def cell_sums_and_labels(X, lo, inv_width, bits, tables, palette_tables, sums, counts, out, out_counts):
    """One Lloyd step's sums of ``X`` (n, C) for some centres and its labels for others, in one read.

    ``tables`` and ``palette_tables`` are (table, offsets, candidates,
    centres transposed) of :func:`cell_table` on the same grid for the two
    sets of centres (e.g. a fit's centres and the palette they round to).
    The sums and counts are added (unweighted) and the inertia returned as
    :func:`cell_partial_sums` gives them, bit for bit; ``out`` receives the
    nearest of the second centres (:func:`cell_labels`' labels), and
    ``out_counts`` (int64, one per second centre) is added the pixels of each.
    """
    table, offsets, cand, centers_t = tables
    p_table, p_offsets, p_cand, palette_t = palette_tables
    if X.ndim == 2 and X.shape[1] == 3 and X.dtype.kind == "u" and X.dtype.itemsize <= 2:
        return _sums_and_labels_small_ints(X, lo, inv_width, np.int64(bits), table, p_table, centers_t, palette_t,
                                           sums, counts, out, out_counts)
    return _cell_sums_and_labels(X, lo, inv_width, np.int64(bits), table, offsets, cand, centers_t, p_table,
                                 p_offsets, p_cand, palette_t, sums, counts, out, out_counts)
