"""Colour codes, counts, radix sorts and merges of sparse histograms.

A colour of ``C`` unsigned channels of ``bits`` bits is packed into one uint32
code, first channel highest; histograms are sorted codes with their counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT

__all__ = [
    "encode_colours",
    "decode_colours",
    "count_codes",
    "count_codes_dense",
    "add_dense_counts",
    "take_nonzero",
    "add_sparse_counts",
    "unique_colours",
    "unique_colours_parallel",
    "coarse_bins",
    "merge_sparse_counts",
    "take",
]


@numba.njit(inline="always", **_JIT)
def _code(X, i, bits):  # pragma: no cover
    """The colour code of row ``i``: its channels packed ``bits`` apart, first channel highest."""
    code = np.uint32(0)
    for c in range(X.shape[1]):
        code = (code << np.uint32(bits)) | np.uint32(X[i, c])
    return code


@numba.njit(**_JIT)
def _encode(X, bits, codes):  # pragma: no cover
    for i in range(X.shape[0]):
        codes[i] = _code(X, i, bits)


def encode_colours(X: np.ndarray, bits: int) -> np.ndarray:
    """Pack each row of unsigned integers into one uint32 colour code."""
    codes = np.empty(X.shape[0], dtype=np.uint32)
    _encode(X, bits, codes)
    return codes


def decode_colours(codes: np.ndarray, n_channels: int, bits: int, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`encode_colours`."""
    mask = (1 << bits) - 1
    out = np.empty((codes.shape[0], n_channels), dtype=dtype)
    for c in range(n_channels):
        shift = bits * (n_channels - 1 - c)
        out[:, c] = (codes >> np.uint32(shift)) & np.uint32(mask)
    return out


@numba.njit(**_JIT)
def add_dense_counts(X, bits, table):  # pragma: no cover
    for i in range(X.shape[0]):
        table[_code(X, i, bits)] += 1


def take_nonzero(table: np.ndarray, like: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted codes and counts of the non-zero entries of a counter table.

    The counts have the dtype of ``like`` (an empty array), int64 by default.
    """
    return _take_nonzero_as(table, _INT64_LIKE if like is None else like)


_INT64_LIKE = np.empty(0, dtype=np.int64)


@numba.njit(**_JIT)
def _take_nonzero_as(table, like):  # pragma: no cover
    n = 0
    for v in table:
        if v:
            n += 1
    codes = np.empty(n, dtype=np.uint32)
    counts = np.empty(n, dtype=like.dtype)
    j = 0
    for code in range(table.shape[0]):
        v = table[code]
        if v:
            codes[j] = code
            counts[j] = v
            j += 1
    return codes, counts


@numba.njit(**_JIT)
def add_sparse_counts(table, codes, counts):  # pragma: no cover
    for i in range(codes.shape[0]):
        table[codes[i]] += counts[i]


def count_codes_dense(X: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct colours of ``X`` as sorted uint32 codes and their int64 counts.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_channels)
        Unsigned integers below ``2 ** bits``; ``bits * n_channels <= 24``.
    bits : int
        Bits per channel.
    """
    total_bits = bits * X.shape[1]
    # a fresh calloc'd table: untouched pages cost nothing, and nothing stays allocated
    table = np.zeros(1 << total_bits, dtype=np.uint32 if X.shape[0] < 2**32 else np.uint64)
    add_dense_counts(X, bits, table)
    return take_nonzero(table)


def count_codes(X: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct colours of ``X`` as sorted uint32 codes and int64 counts.

    Small inputs are sorted (``np.unique``); large ones use a dense table of
    ``2 ** (bits * n_channels)`` counters, which is linear but costs a scan of
    the whole table.
    """
    if X.shape[0] * 16 < (1 << (bits * X.shape[1])):
        codes, counts = np.unique(encode_colours(X, bits), return_counts=True)
        return codes.astype(np.uint32), counts.astype(np.int64)
    return count_codes_dense(X, bits)


@numba.njit(**_JIT)
def _radix_sorted(X, bits, low, high):  # pragma: no cover
    """The rows of ``X`` with codes in ``[low, high)``, sorted by code, and how many distinct codes they have.

    Each row's code and position are packed in one uint64 (code above,
    position below) and sorted by an LSD radix sort of the code (12-bit
    digits; each pass counts the next digit as it goes): linear in the
    number of rows.
    """
    n = X.shape[0]
    total_bits = bits * X.shape[1]
    width = min(12, total_bits)  # of the first digit; each pass counts the next one's
    mask = np.uint64((1 << width) - 1)
    start = np.zeros((1 << width) + 1, dtype=np.int64)
    packed = np.empty(n, dtype=np.uint64)
    m = 0
    for i in range(n):  # branch-free: which range a row falls in is hard to predict
        code = _code(X, i, bits)
        inside = 1 if low <= code < high else 0
        packed[m] = (np.uint64(code) << np.uint64(32)) | np.uint64(i)
        start[(np.uint64(code) & mask) + 1] += inside
        m += inside
    packed = packed[:m]
    spare = np.empty_like(packed)
    shift = 32
    while shift < 32 + total_bits:
        following = min(12, 32 + total_bits - shift - width)
        next_mask = np.uint64((1 << following) - 1)
        next_start = np.zeros((1 << following) + 1, dtype=np.int64)
        for d in range(1 << width):
            start[d + 1] += start[d]
        for i in range(m):
            v = packed[i]
            d = (v >> np.uint64(shift)) & mask
            spare[start[d]] = v
            start[d] += 1
            next_start[((v >> np.uint64(shift + width)) & next_mask) + 1] += 1
        packed, spare = spare, packed
        shift += width
        width, mask, start = following, next_mask, next_start
    n_unique = 0
    previous = np.uint64(0)
    for i in range(m):
        code = packed[i] >> np.uint64(32)
        if i == 0 or code != previous:
            n_unique += 1
        previous = code
    return packed, n_unique


@numba.njit(**_JIT)
def _read_sorted(packed, n_unique, offset, inverse):  # pragma: no cover
    """Distinct codes and counts of :func:`_radix_sorted` rows; ``inverse[row]`` = ``offset`` + its code's index."""
    unique = np.empty(n_unique, dtype=np.uint32)
    counts = np.zeros(n_unique, dtype=np.int64)
    u = -1
    previous = np.uint64(0)
    for i in range(packed.shape[0]):
        code = packed[i] >> np.uint64(32)
        if i == 0 or code != previous:
            u += 1
            unique[u] = code
        previous = code
        counts[u] += 1
        inverse[packed[i] & np.uint64(0xFFFFFFFF)] = offset + u
    return unique, counts


def unique_colours(X: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct colours of ``X`` (fewer than 2**31 rows) with counts and the inverse index.

    Returns sorted uint32 codes, int64 counts and, for every row, the int32
    index of its colour, so that ``codes[inverse]`` encodes ``X``.
    """
    inverse = np.empty(X.shape[0], dtype=np.int32)
    packed, n_unique = _radix_sorted(X, bits, 0, 1 << (bits * X.shape[1]))
    return (*_read_sorted(packed, n_unique, 0, inverse), inverse)


def unique_colours_parallel(
    X: np.ndarray, bits: int, run: Callable[..., list[Any]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`unique_colours` counted as two code ranges at once.

    ``run(func, items)`` maps ``func`` over two items concurrently (a thread
    pool's ``map``, as a list). The ranges split at a code that halves a
    sample of the rows; each is sorted, then read with the lower range's
    count of distinct codes as the upper one's offset, so the two results
    simply concatenate.
    """
    inverse = np.empty(X.shape[0], dtype=np.int32)
    split = _balanced_split(X, bits)
    ranges = [(0, split), (split, 1 << (bits * X.shape[1]))]
    (lower, n_lower), (upper, n_upper) = run(lambda r: _radix_sorted(X, bits, *r), ranges)
    (codes_a, counts_a), (codes_b, counts_b) = run(
        lambda job: _read_sorted(*job, inverse), [(lower, n_lower, 0), (upper, n_upper, n_lower)])
    return np.concatenate([codes_a, codes_b]), np.concatenate([counts_a, counts_b]), inverse


@numba.njit(**_JIT)
def _balanced_split(X, bits):  # pragma: no cover
    """A code (a multiple of ``2**(bits * (C - 1))``) below which about half of a sample of the rows lie."""
    n, n_channels = X.shape
    top = np.zeros(1 << bits, dtype=np.int64)
    step = max(1, n // 4096)
    sampled = 0
    for i in range(0, n, step):
        top[np.int64(X[i, 0])] += 1
        sampled += 1
    below = 0
    for v in range(1 << bits):
        below += top[v]
        if 2 * below >= sampled:
            return (v + 1) << (bits * (n_channels - 1))
    return 1 << (bits * n_channels)


@numba.njit(**_JIT)
def coarse_bins(cells, sums, weights, shift, width):  # pragma: no cover
    """Merge weighted points into the cells of a coarser grid, in code order.

    Point ``i`` lies in grid cell ``cells[i]`` (integer coordinates, one per
    channel); its coarse cell is ``cells[i] >> shift``, numbered by the code
    of ``width`` bits per channel (a dense table of ``2**(width * C)``).
    ``sums[i]`` is the point's weighted coordinate sum (``None``: the cell
    itself is the point, ``sums = cells * weights``). Integer inputs give
    integer sums, exact in float64 whatever the order: every path to a
    coarse set gives the same bits.

    Returns the coarse cells (int64), their summed coordinates and weights.
    """
    n, n_channels = cells.shape
    table = np.full(1 << (width * n_channels), -1, dtype=np.int32)
    code = np.empty(n, dtype=np.int64)
    for i in range(n):
        q = 0
        for c in range(n_channels):
            q = (q << width) | (np.int64(cells[i, c]) >> shift)
        code[i] = q
        table[q] = 0
    m = 0
    for q in range(table.shape[0]):  # bins numbered in code order
        if table[q] == 0:
            table[q] = m
            m += 1
    out_cells = np.empty((m, n_channels), dtype=np.int64)
    out_sums = np.zeros((m, n_channels))
    out_weights = np.zeros(m)
    for i in range(n):
        b = table[code[i]]
        w = np.float64(weights[i])
        out_weights[b] += w
        for c in range(n_channels):
            out_cells[b, c] = np.int64(cells[i, c]) >> shift
        if sums is None:
            for c in range(n_channels):
                out_sums[b, c] += w * np.float64(cells[i, c])
        else:
            for c in range(n_channels):
                out_sums[b, c] += sums[i, c]
    return out_cells, out_sums, out_weights


@numba.njit(**_JIT)
def _merge(a_codes, a_counts, b_codes, b_counts):  # pragma: no cover
    na, nb = a_codes.shape[0], b_codes.shape[0]
    codes = np.empty(na + nb, dtype=np.uint32)
    counts = np.empty(na + nb, dtype=np.int64)
    i = j = n = 0
    while i < na and j < nb:
        if a_codes[i] < b_codes[j]:
            codes[n] = a_codes[i]
            counts[n] = a_counts[i]
            i += 1
        elif b_codes[j] < a_codes[i]:
            codes[n] = b_codes[j]
            counts[n] = b_counts[j]
            j += 1
        else:
            codes[n] = a_codes[i]
            counts[n] = a_counts[i] + b_counts[j]
            i += 1
            j += 1
        n += 1
    while i < na:
        codes[n] = a_codes[i]
        counts[n] = a_counts[i]
        i += 1
        n += 1
    while j < nb:
        codes[n] = b_codes[j]
        counts[n] = b_counts[j]
        j += 1
        n += 1
    return codes[:n].copy(), counts[:n].copy()


def merge_sparse_counts(
    parts: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Sum sparse histograms given as (sorted codes, counts) pairs.

    Several large parts are added into a dense counter table (linear in their
    total size); small or overflowing ones are merged pairwise.
    """
    parts = [p for p in parts if p[0].shape[0]]
    if not parts:
        return np.empty(0, np.uint32), np.empty(0, np.int64)
    if len(parts) == 1:
        return parts[0]
    max_code = max(int(p[0][-1]) for p in parts)
    size = 1 << max(int(max_code).bit_length(), 8)
    total_entries = sum(p[0].shape[0] for p in parts)
    total_count = sum(int(p[1].sum()) for p in parts)
    if size <= (1 << 24) and size <= 64 * total_entries and total_count < 2**32:
        table = np.zeros(size, dtype=np.uint32)
        for codes, counts in parts:
            add_sparse_counts(table, codes, counts)
        return take_nonzero(table)
    # merge pairwise, smallest first keeps the work near-linear
    parts = sorted(parts, key=lambda p: p[0].shape[0])
    codes, counts = parts[0]
    for other_codes, other_counts in parts[1:]:
        codes, counts = _merge(codes, counts, other_codes, other_counts)
    return codes, counts


@numba.njit(**_JIT)
def take(table, index):  # pragma: no cover
    """``table[index]`` for a 1-D table and index array (numpy's fancy indexing is ~3x slower)."""
    out = np.empty(index.shape[0], dtype=table.dtype)
    for i in range(index.shape[0]):
        out[i] = table[index[i]]
    return out
