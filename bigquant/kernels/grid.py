"""Exact counts and sums of pixels per cell of a coarse grid over the value range.

The grid strategy's one pass over the pixels (any dtype, any number of bands):
each pixel falls in the cell ``q_c = clip(floor((x_c - lo_c) * scale_c), 0, 2**bits - 1)``
per band, numbered by the code ``q_0 q_1 ... q_{C-1}`` (``bits`` bits each,
first band highest); a dense table of ``2**(bits * C)`` cells holds the count
and the per-band sum of the full-precision values of its pixels.  The cells are
only buckets: whatever their bounds (a value outside ``[lo, hi]`` lands in an
edge cell), the sums are those of the pixels.  Sums are float64: exact for
integer data of up to 16 bits below 2**37 pixels; counts are float64 integers.
"""

from __future__ import annotations

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT

__all__ = ["add_grid_cells", "merge_grid_cells", "take_grid_cells", "add_distinct", "merge_distinct"]


@numba.njit(**_JIT)
def add_grid_cells(X, valid, use_valid, lo, scale, bits, table, stats):  # pragma: no cover
    """Add the pixels of ``X`` (n, C) to the dense cell table; returns False on a non-finite value.

    ``table`` (2**(bits*C), C + 1) float64 holds per cell the count (column 0)
    and the per-band sums, side by side (one cache line a pixel); ``stats``
    (3, C) float64 holds per band the minimum, the maximum and the sum of
    squares of the values added, updated.  With ``use_valid`` only rows where
    ``valid`` is True count.  Rows holding a NaN or infinity are not added.
    """
    n, n_channels = X.shape
    topf = np.float64((1 << bits) - 1)
    finite = True
    if n_channels == 3:  # the same sums, the running statistics kept in registers
        l0, l1, l2 = lo[0], lo[1], lo[2]
        s0, s1, s2 = scale[0], scale[1], scale[2]
        mn0, mn1, mn2 = stats[0, 0], stats[0, 1], stats[0, 2]
        mx0, mx1, mx2 = stats[1, 0], stats[1, 1], stats[1, 2]
        q0 = q1 = q2 = 0.0
        for i in range(n):
            if use_valid and not valid[i]:
                continue
            x0, x1, x2 = np.float64(X[i, 0]), np.float64(X[i, 1]), np.float64(X[i, 2])
            if not (np.isfinite(x0) and np.isfinite(x1) and np.isfinite(x2)):
                finite = False
                continue
            c0 = np.int64(min(max((x0 - l0) * s0, 0.0), topf))
            c1 = np.int64(min(max((x1 - l1) * s1, 0.0), topf))
            c2 = np.int64(min(max((x2 - l2) * s2, 0.0), topf))
            code = (((c0 << bits) | c1) << bits) | c2
            table[code, 0] += 1.0
            table[code, 1] += x0
            table[code, 2] += x1
            table[code, 3] += x2
            mn0, mn1, mn2 = min(mn0, x0), min(mn1, x1), min(mn2, x2)
            mx0, mx1, mx2 = max(mx0, x0), max(mx1, x1), max(mx2, x2)
            q0 += x0 * x0
            q1 += x1 * x1
            q2 += x2 * x2
        stats[0, 0], stats[0, 1], stats[0, 2] = mn0, mn1, mn2
        stats[1, 0], stats[1, 1], stats[1, 2] = mx0, mx1, mx2
        stats[2, 0] += q0
        stats[2, 1] += q1
        stats[2, 2] += q2
        return finite
    v = np.empty(n_channels)
    mn = stats[0].copy()
    mx = stats[1].copy()
    sq = np.zeros(n_channels)
    for i in range(n):
        if use_valid and not valid[i]:
            continue
        code = 0
        ok = True
        for c in range(n_channels):
            x = np.float64(X[i, c])
            if not np.isfinite(x):
                ok = False
                break
            v[c] = x
            code = (code << bits) | np.int64(min(max((x - lo[c]) * scale[c], 0.0), topf))
        if not ok:
            finite = False
            continue
        table[code, 0] += 1.0
        for c in range(n_channels):
            x = v[c]
            table[code, c + 1] += x
            mn[c] = min(mn[c], x)
            mx[c] = max(mx[c], x)
            sq[c] += x * x
    for c in range(n_channels):
        stats[0, c] = mn[c]
        stats[1, c] = mx[c]
        stats[2, c] += sq[c]
    return finite


@numba.njit(**_JIT)
def take_grid_cells(table):  # pragma: no cover
    """The occupied cells of a dense table: codes (int64, increasing), counts and sums."""
    n_channels = table.shape[1] - 1
    m = 0
    for q in range(table.shape[0]):
        if table[q, 0] != 0:
            m += 1
    codes = np.empty(m, dtype=np.int64)
    counts = np.empty(m)
    sums = np.empty((m, n_channels))
    j = 0
    for q in range(table.shape[0]):
        if table[q, 0] != 0:
            codes[j] = q
            counts[j] = table[q, 0]
            for c in range(n_channels):
                sums[j, c] = table[q, c + 1]
            j += 1
    return codes, counts, sums


@numba.njit(**_JIT)
def merge_grid_cells(codes, counts, sums, table):  # pragma: no cover
    """Add sparse cells (codes, counts, sums) into a dense table (the merge of partial grids)."""
    for j in range(codes.shape[0]):
        q = codes[j]
        table[q, 0] += counts[j]
        for c in range(sums.shape[1]):
            table[q, c + 1] += sums[j, c]


@numba.njit(inline="always", **_JIT)
def _slot(code, mask):  # pragma: no cover - jitted
    """First slot of ``code`` in a table of ``mask + 1`` slots (a multiplicative hash)."""
    return np.int64((code * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) & mask


@numba.njit(inline="always", **_JIT)
def _add_code(code, weight, keys, counts, used, n, limit):  # pragma: no cover - jitted
    """Add ``weight`` to ``code``'s count; the number of codes after, or -1 past ``limit``."""
    mask = keys.shape[0] - 1
    s = _slot(code, mask)
    while used[s]:
        if keys[s] == code:
            counts[s] += weight
            return n
        s = (s + 1) & mask
    if n >= limit:
        return -1
    used[s] = True
    keys[s] = code
    counts[s] = weight
    return n + 1


@numba.njit(**_JIT)
def add_distinct(X, valid, use_valid, offset, band_bits, keys, counts, used, n, limit):  # pragma: no cover
    """Count the distinct rows of integer ``X`` (n, C) in a hash table while there are at most ``limit``.

    A row's code packs ``X[i, c] - offset`` in ``band_bits`` bits a band,
    first band highest (at most 64 bits in all).  ``keys`` (uint64), ``counts``
    (float64) and ``used`` (bool) are the open-addressing table (a power of
    two of at least twice ``limit`` slots), ``n`` the codes it holds.  Returns
    the codes held after, or -1 as soon as one more than ``limit`` was met
    (the table is then incomplete).
    """
    n_channels = X.shape[1]
    for i in range(X.shape[0]):
        if use_valid and not valid[i]:
            continue
        code = np.uint64(0)
        for c in range(n_channels):
            code = (code << np.uint64(band_bits)) | np.uint64(np.int64(X[i, c]) - offset)
        n = _add_code(code, 1.0, keys, counts, used, n, limit)
        if n < 0:
            return -1
    return n


@numba.njit(**_JIT)
def merge_distinct(codes, weights, keys, counts, used, n, limit):  # pragma: no cover
    """Add codes and their counts into a table of :func:`add_distinct`; the codes held after, or -1."""
    for j in range(codes.shape[0]):
        n = _add_code(codes[j], weights[j], keys, counts, used, n, limit)
        if n < 0:
            return -1
    return n
