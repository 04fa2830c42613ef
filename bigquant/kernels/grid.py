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

__all__ = ["add_grid_cells", "merge_grid_cells", "take_grid_cells"]


@numba.njit(**_JIT)
def add_grid_cells(X, valid, use_valid, lo, scale, bits, counts, sums, stats):  # pragma: no cover
    """Add the pixels of ``X`` (n, C) to the dense cell table; returns False on a non-finite value.

    ``counts`` (2**(bits*C),) and ``sums`` (2**(bits*C), C) are float64 tables
    added to; ``stats`` (3, C) float64 holds per band the minimum, the maximum
    and the sum of squares of the values added, updated.  With ``use_valid``
    only rows where ``valid`` is True count.  Rows holding a NaN or infinity
    are not added.
    """
    n, n_channels = X.shape
    top = (1 << bits) - 1
    finite = True
    v = np.empty(n_channels)
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
            t = (x - lo[c]) * scale[c]
            q = 0
            if t >= top:
                q = top
            elif t > 0:
                q = np.int64(t)
            code = (code << bits) | q
        if not ok:
            finite = False
            continue
        counts[code] += 1.0
        for c in range(n_channels):
            x = v[c]
            sums[code, c] += x
            if x < stats[0, c]:
                stats[0, c] = x
            if x > stats[1, c]:
                stats[1, c] = x
            stats[2, c] += x * x
    return finite


@numba.njit(**_JIT)
def take_grid_cells(counts, sums):  # pragma: no cover
    """The occupied cells of a dense table: codes (int64, increasing), counts and sums."""
    m = 0
    for q in range(counts.shape[0]):
        if counts[q] != 0:
            m += 1
    codes = np.empty(m, dtype=np.int64)
    out_counts = np.empty(m)
    out_sums = np.empty((m, sums.shape[1]))
    j = 0
    for q in range(counts.shape[0]):
        if counts[q] != 0:
            codes[j] = q
            out_counts[j] = counts[q]
            for c in range(sums.shape[1]):
                out_sums[j, c] = sums[q, c]
            j += 1
    return codes, out_counts, out_sums


@numba.njit(**_JIT)
def merge_grid_cells(codes, counts, sums, table_counts, table_sums):  # pragma: no cover
    """Add sparse cells (codes, counts, sums) into dense tables (the merge of partial grids)."""
    for j in range(codes.shape[0]):
        q = codes[j]
        table_counts[q] += counts[j]
        for c in range(sums.shape[1]):
            table_sums[q, c] += sums[j, c]
