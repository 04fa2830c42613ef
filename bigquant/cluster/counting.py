"""Per-block colour counting of the histogram pass (the Dask path).

:func:`region_counts` counts a block of a directly read TIFF tile by tile as
the tiles are read (no block of pixels in memory); :func:`block_counts` counts
a block that was computed.  RGB uint8 colours are counted in Morton order (see
:mod:`bigquant.kernels`); :func:`bigquant.cluster.histogram.histogram_graph`
converts the merged histogram back to the usual codes.

On a scheduler whose tasks share this process's memory (threads), the blocks
of an RGB uint8 TIFF are counted in *lanes* instead (:func:`lane_counts`):
each lane is a chain of tasks that adds its blocks into one table of 2**24
counters, handed from task to task, and :func:`lanes_total` adds the lanes'
tables and reads the counts once.  A block then costs only its counting: no
fresh 64 MB table to fault in, no counts read back per block, no merge tree
(about 1.5 ns a pixel less than counting each block apart).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from bigquant import kernels
from bigquant.kernels import MortonTable, count_morton, encode_morton, take_counts, take_sum

__all__ = ["block_counts", "lane_counts", "lanes_total", "region_counts"]


def _rows_read(reader: Any, window: tuple[int, int, int, int], n_channels: int) -> Iterator[np.ndarray]:
    """``reader``'s pixels ``[y0:y1, x0:x1]`` tile by tile as read, each as contiguous (n, n_channels) rows."""
    for part, _ in reader.segment_windows(window):
        if part.dtype != reader.dtype:
            part = part.astype(reader.dtype)
        yield np.ascontiguousarray(part).reshape(-1, n_channels)


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


def lane_counts(
    table: np.ndarray | None, reader: Any, window: tuple[int, int, int, int], dtype: np.dtype | type
) -> np.ndarray:
    """Add the RGB uint8 colours of ``reader``'s pixels ``[y0:y1, x0:x1]`` to a lane's table, tile by tile as read.

    ``table`` holds the 2**24 Morton-order counters of the lane's previous
    blocks (``None`` for its first block: a new table of ``dtype``); it is
    returned, counted on.  No block is marked as touched: the lanes' tables
    are read whole, once (:func:`lanes_total`).
    """
    if table is None:
        table = np.zeros(1 << 24, dtype=dtype)  # calloc'd: pages the counts never touch cost nothing
    for X in _rows_read(reader, window, 3):
        count_morton(X, table)
    return table


def lanes_total(tables: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted Morton codes and counts (the tables' type) of the lanes' tables added up (into the first)."""
    total = tables[0]
    if len(tables) == 1:
        return take_counts(total)
    for other in tables[1:-1]:
        np.add(total, other, out=total)
    return take_sum(total, tables[-1])  # the last addition and the read in one pass


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
    for X in _rows_read(reader, window, n_channels):
        if counter is not None:
            counter.add(X)
        else:
            kernels.add_dense_counts(X, bits, table)
    return counter.take() if counter is not None else kernels.take_nonzero(table)
