"""Per-block colour counting of the histogram pass (the Dask path).

:func:`region_counts` counts a block of a directly read TIFF tile by tile as
the tiles are read (no block of pixels in memory); :func:`block_counts` counts
a block that was computed.  RGB uint8 colours are counted in Morton order (see
:mod:`bigquant.kernels`); :func:`bigquant.cluster.histogram.histogram_graph`
converts the merged histogram back to the usual codes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bigquant import kernels
from bigquant.kernels import MortonTable, encode_morton

__all__ = ["block_counts", "region_counts"]

def block_counts(
    block: np.ndarray, bits: int, n_channels: int, morton: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted codes and counts of a block's colours.

    With ``morton``: Morton codes and uint32 counts (merged by
    :func:`bigquant.kernels.merge_counts`).
    """
    X = block.reshape(-1, n_channels)
    if not morton:
        return kernels.count_codes(X, bits)
    if X.shape[0] * 16 < (1 << 24):
        codes, counts = np.unique(encode_morton(X), return_counts=True)
        return codes.astype(np.uint32), counts.astype(np.uint32 if X.shape[0] < 2**32 else np.int64)
    table = MortonTable(np.uint32 if X.shape[0] < 2**32 else np.uint64)
    table.add(X)
    return table.take()

def region_counts(
    reader: Any, window: tuple[int, int, int, int], bits: int, n_channels: int, morton: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of ``reader``'s pixels ``[y0:y1, x0:x1]``, counted tile by tile as read."""
    y0, y1, x0, x1 = window
    total_bits = bits * n_channels
    if (y1 - y0) * (x1 - x0) * 16 < (1 << total_bits) or (y1 - y0) * (x1 - x0) >= 2**32:
        return block_counts(reader[y0:y1, x0:x1], bits, n_channels, morton)
    # a fresh calloc'd table: untouched pages cost nothing, nothing stays allocated
    counter = MortonTable() if morton else None
    table = np.zeros(1 << total_bits, dtype=np.uint32) if counter is None else counter.table
    for part, _ in reader.segment_windows(window):
        if part.dtype != reader.dtype:
            part = part.astype(reader.dtype)
        X = np.ascontiguousarray(part).reshape(-1, n_channels)
        if counter is not None:
            counter.add(X)
        else:
            kernels.add_dense_counts(X, bits, table)
    return counter.take() if counter is not None else kernels.take_nonzero(table)
