"""Numba kernels: fused assignment + partial sums, colour counting, label lookup.

Every kernel is serial and releases the GIL (``nogil=True``): parallelism comes
from Dask tasks or from a thread pool over row segments (see :mod:`bigquant._points`),
never from numba's own threading layer, which is not safe to enter from several
threads at once.

Distances are always computed the same way, ``sum_c (x_c - m_c) ** 2`` in float64
with channels in order, and ties go to the lowest centre index, so the pixel path,
the colour-histogram path and the lookup table give bit-identical labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np

__all__ = [
    "partial_sums",
    "assign_labels",
    "count_codes",
    "count_codes_dense",
    "merge_sparse_counts",
    "encode_colours",
    "decode_colours",
    "build_lut",
    "lookup_labels",
    "moments",
]

_JIT = dict(nogil=True, cache=True)


@numba.njit(inline="always", **_JIT)
def _distances(X, i, centers_t, dist):  # pragma: no cover - jitted
    """``dist[j] = sum_c (X[i, c] - centers_t[c, j]) ** 2``, channels added in order.

    The loop over centres is innermost so that it vectorises; RGB is
    unrolled. Both loops round identically.
    """
    n_channels, k = centers_t.shape
    if n_channels == 3:
        x0 = np.float64(X[i, 0])
        x1 = np.float64(X[i, 1])
        x2 = np.float64(X[i, 2])
        for j in range(k):
            a = x0 - centers_t[0, j]
            b = x1 - centers_t[1, j]
            c = x2 - centers_t[2, j]
            dist[j] = a * a + b * b + c * c
        return
    x0 = np.float64(X[i, 0])
    for j in range(k):
        t = x0 - centers_t[0, j]
        dist[j] = t * t
    for c in range(1, n_channels):
        xc = np.float64(X[i, c])
        for j in range(k):
            t = xc - centers_t[c, j]
            dist[j] += t * t


@numba.njit(inline="always", **_JIT)
def _nearest(X, i, centers_t, dist):  # pragma: no cover - jitted
    """Nearest centre of row ``i`` of ``X`` and its squared distance (ties -> lowest index)."""
    _distances(X, i, centers_t, dist)
    best = 0
    best_d = dist[0]
    for j in range(1, centers_t.shape[1]):
        if dist[j] < best_d:
            best_d = dist[j]
            best = j
    return best, best_d


@numba.njit(inline="always", **_JIT)
def _nearest_fused(X, i, centers_t, dist):  # pragma: no cover - jitted
    """:func:`_nearest` with the RGB distances compared as they are computed.

    Same arithmetic and ties; faster inside loops that also accumulate sums
    (there the distance buffer does not vectorise).
    """
    n_channels, k = centers_t.shape
    if n_channels != 3:
        return _nearest(X, i, centers_t, dist)
    x0 = np.float64(X[i, 0])
    x1 = np.float64(X[i, 1])
    x2 = np.float64(X[i, 2])
    best = 0
    best_d = np.inf
    for j in range(k):
        a = x0 - centers_t[0, j]
        b = x1 - centers_t[1, j]
        c = x2 - centers_t[2, j]
        d = a * a + b * b + c * c
        if d < best_d:
            best_d = d
            best = j
    return best, best_d


@numba.njit(inline="always", **_JIT)
def _nearest_two(X, i, centers_t, dist):  # pragma: no cover - jitted
    """Like :func:`_nearest`, plus the squared distance to the second nearest centre."""
    _distances(X, i, centers_t, dist)
    best = 0
    best_d = dist[0]
    second_d = np.inf
    for j in range(1, centers_t.shape[1]):  # branch-free: about twice as fast
        d = dist[j]
        second_d = min(second_d, max(best_d, d))
        best = j if d < best_d else best
        best_d = min(best_d, d)
    return best, best_d, second_d


@numba.njit(**_JIT)
def _partial_sums_unweighted(X, centers_t, sums, counts):  # pragma: no cover
    n = X.shape[0]
    n_channels, k = centers_t.shape
    dist = np.empty(k, dtype=np.float64)
    inertia = 0.0
    for i in range(n):
        best, best_d = _nearest_fused(X, i, centers_t, dist)
        counts[best] += 1.0
        for c in range(n_channels):
            sums[best, c] += np.float64(X[i, c])
        inertia += best_d
    return inertia


@numba.njit(**_JIT)
def _partial_sums_weighted(X, weights, centers_t, sums, counts):  # pragma: no cover
    n = X.shape[0]
    n_channels, k = centers_t.shape
    dist = np.empty(k, dtype=np.float64)
    inertia = 0.0
    for i in range(n):
        w = np.float64(weights[i])
        best, best_d = _nearest_fused(X, i, centers_t, dist)
        counts[best] += w
        for c in range(n_channels):
            sums[best, c] += np.float64(X[i, c]) * w
        inertia += best_d * w
    return inertia


def partial_sums(
    X: np.ndarray, centers: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Assign each row of ``X`` to its nearest centre and sum per cluster.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_channels)
        Points, any real dtype.
    centers : ndarray of shape (n_clusters, n_channels)
        Current centres (float64).
    weights : ndarray of shape (n_samples,), default=None
        Sample weights; ``None`` means every weight is 1.

    Returns
    -------
    sums : ndarray of shape (n_clusters, n_channels)
        Weighted sum of the points of each cluster (float64; exact for integer
        data while the sums stay below 2**53).
    counts : ndarray of shape (n_clusters,)
        Total weight of each cluster.
    inertia : float
        Weighted sum of squared distances to the nearest centre.
    """
    centers_t = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).T)
    k = centers_t.shape[1]
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    counts = np.zeros(k, dtype=np.float64)
    if X.shape[0] == 0:
        return sums, counts, 0.0
    if weights is None:
        inertia = _partial_sums_unweighted(X, centers_t, sums, counts)
    else:
        inertia = _partial_sums_weighted(X, weights, centers_t, sums, counts)
    return sums, counts, float(inertia)


@numba.njit(**_JIT)
def _assign(X, centers_t, labels, min_dist):  # pragma: no cover
    k = centers_t.shape[1]
    dist = np.empty(k, dtype=np.float64)
    for i in range(X.shape[0]):
        best, best_d = _nearest(X, i, centers_t, dist)
        labels[i] = best
        min_dist[i] = best_d


def assign_labels(
    X: np.ndarray, centers: np.ndarray, label_dtype: np.dtype | type = np.int32
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each row of ``X`` and the squared distance to it."""
    centers_t = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).T)
    labels = np.empty(X.shape[0], dtype=label_dtype)
    min_dist = np.empty(X.shape[0], dtype=np.float64)
    if X.shape[0]:
        _assign(X, centers_t, labels, min_dist)
    return labels, min_dist


@numba.njit(**_JIT)
def moments(X, weights, use_weights):  # pragma: no cover
    """Weighted count, per-channel sum and sum of squares, and a finiteness flag."""
    n, n_channels = X.shape
    total = 0.0
    s = np.zeros(n_channels, dtype=np.float64)
    s2 = np.zeros(n_channels, dtype=np.float64)
    if n_channels == 3:  # the same sums, kept in registers
        s0 = s1 = s2_ = q0 = q1 = q2 = 0.0
        for i in range(n):
            w = np.float64(weights[i]) if use_weights else 1.0
            total += w
            r, g, b = np.float64(X[i, 0]), np.float64(X[i, 1]), np.float64(X[i, 2])
            s0 += r * w
            s1 += g * w
            s2_ += b * w
            q0 += r * r * w
            q1 += g * g * w
            q2 += b * b * w
        s[0], s[1], s[2] = s0, s1, s2_
        s2[0], s2[1], s2[2] = q0, q1, q2
    else:
        for i in range(n):
            w = np.float64(weights[i]) if use_weights else 1.0
            total += w
            for c in range(n_channels):
                v = np.float64(X[i, c])
                s[c] += v * w
                s2[c] += v * v * w
    finite = True
    for c in range(n_channels):
        if not np.isfinite(s[c]) or not np.isfinite(s2[c]):
            finite = False
    return total, s, s2, finite


# --------------------------------------------------------------------------- colours


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
def _count_dense(X, bits, table):  # pragma: no cover
    for i in range(X.shape[0]):
        table[_code(X, i, bits)] += 1


def _take_nonzero(table: np.ndarray, like: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
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
def _add_sparse(table, codes, counts):  # pragma: no cover
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
    _count_dense(X, bits, table)
    return _take_nonzero(table)


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
            _add_sparse(table, codes, counts)
        return _take_nonzero(table)
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


@numba.njit(**_JIT)
def _fill_lut(codes, labels, lut):  # pragma: no cover
    for i in range(codes.shape[0]):
        lut[codes[i]] = labels[i]


def build_lut(codes: np.ndarray, labels: np.ndarray, total_bits: int, sentinel: int) -> np.ndarray:
    """Dense colour-code -> label table; codes not in ``codes`` hold ``sentinel``."""
    dtype = np.uint8 if sentinel <= np.iinfo(np.uint8).max else np.uint16
    if sentinel > np.iinfo(np.uint16).max:
        dtype = np.int32
    lut = np.full(1 << total_bits, sentinel, dtype=dtype)
    _fill_lut(codes, labels.astype(dtype), lut)
    return lut


@numba.njit(**_JIT)
def _lookup(X, bits, lut, sentinel, centers_t, labels):  # pragma: no cover
    n = X.shape[0]
    k = centers_t.shape[1]
    dist = np.empty(k, dtype=np.float64)
    for i in range(n):
        lab = lut[_code(X, i, bits)]
        if lab == sentinel:
            best, _ = _nearest(X, i, centers_t, dist)
            labels[i] = best
        else:
            labels[i] = lab


def lookup_labels(
    X: np.ndarray,
    bits: int,
    lut: np.ndarray,
    sentinel: int,
    centers: np.ndarray,
    label_dtype: np.dtype | type,
) -> np.ndarray:
    """Labels of the rows of ``X`` through a lookup table (nearest centre as fallback)."""
    centers_t = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).T)
    labels = np.empty(X.shape[0], dtype=label_dtype)
    if X.shape[0]:
        _lookup(X, bits, lut, lut.dtype.type(sentinel), centers_t, labels)
    return labels


# --------------------------------------------------------------------------- init


@numba.njit(inline="always", **_JIT)
def _splitmix64(x):  # pragma: no cover
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(**_JIT)
def oversample(X, weights, use_weights, centers_t, row0, col0, block_width, image_width, seed, scale):  # pragma: no cover
    """k-means|| sampling step for one block.

    Row ``i`` of the block is the pixel at image position
    ``(row0 + i // block_width, col0 + i % block_width)``; it is kept with
    probability ``min(1, scale * w * d^2)`` using a counter-based random number
    of its global index, so the draw does not depend on the chunking.

    Returns the kept row indices and the block's cost ``sum w * d^2``.
    """
    n = X.shape[0]
    k = centers_t.shape[1]
    dist = np.empty(k, dtype=np.float64)
    keep = np.empty(n, dtype=np.int64)
    n_keep = 0
    cost = 0.0
    s = np.uint64(seed)
    for i in range(n):
        _, d = _nearest(X, i, centers_t, dist)
        w = np.float64(weights[i]) if use_weights else 1.0
        cost += w * d
        gidx = np.uint64((row0 + i // block_width) * image_width + col0 + i % block_width)
        u = np.float64(_splitmix64(gidx ^ s) >> np.uint64(11)) * (1.0 / 9007199254740992.0)
        if u < scale * w * d:
            keep[n_keep] = i
            n_keep += 1
    return keep[:n_keep].copy(), cost


# --------------------------------------------------------------------------- bounded Lloyd


@numba.njit(inline="always", **_JIT)
def _sqdist(X, i, centers_t, j):  # pragma: no cover - jitted
    """Squared distance of row ``i`` to centre ``j``, rounded as :func:`_distances` does."""
    t = np.float64(X[i, 0]) - centers_t[0, j]
    d = t * t
    for c in range(1, centers_t.shape[0]):
        t = np.float64(X[i, c]) - centers_t[c, j]
        d += t * t
    return d


#: relative and absolute slack that keeps the bound tests safe from rounding
_SLACK = 1e-9


@numba.njit(**_JIT)
def bounded_step(X, columns, weights, centers_t, drift, travelled, labels, upper, lower, sums, counts,
                 sqnorm, first):  # pragma: no cover
    """One Lloyd assignment with Hamerly's bounds, updating the sums in place.

    ``columns`` is ``X`` as :func:`as_columns` gives it; ``drift[j]`` is how
    far centre ``j`` moved since the last step. The bounds are kept relative
    to how far the centres have travelled (``travelled[j]``, and the sum of
    each step's largest drift in ``travelled[k]``, both updated here), so
    that a settled point costs no write: point ``i``'s distance to its
    centre ``a`` is at most ``upper[i] + travelled[a]`` and to any other at
    least ``lower[i] - travelled[k]``. A point whose bounds no longer prove
    that its label stands (with a safety margin for rounding) gets its exact
    distance to its own centre; if that does not settle it, the point is
    rescanned against every centre, with the other unsettled points in one
    blocked scan (:func:`_scan_two`), ties to the lowest index. Every label is
    therefore what a full scan would give. Points that move carry their
    weighted coordinates between the per-cluster ``sums`` (and ``counts``,
    ``sqnorm``); with integer data and integer weights those sums are exact,
    so the result is identical to a full Lloyd step. Returns how many points
    were rescanned.
    """
    if first:
        travelled[:] = 0.0
        return _first_step(X, columns, weights, centers_t, labels, upper, lower, sums, counts, sqnorm)
    n, n_channels = X.shape
    k = centers_t.shape[1]
    largest = 0.0
    for j in range(k):
        travelled[j] += drift[j]
        largest = max(largest, drift[j])
    travelled[k] += largest
    far = travelled[k]
    # which points' bounds fail: a branch-free pass that vectorises
    failing = np.empty(n, dtype=np.bool_)
    for i in range(n):
        failing[i] = (upper[i] + travelled[labels[i]]) * (1.0 + _SLACK) + _SLACK >= lower[i] - far
    unsettled = np.empty(n, dtype=np.int64)
    n_unsettled = 0
    for i in range(n):
        if not failing[i]:
            continue
        a = labels[i]
        u = np.sqrt(_sqdist(X, i, centers_t, a))
        if u * (1.0 + _SLACK) + _SLACK < lower[i] - far:
            upper[i] = u - travelled[a]
        else:
            unsettled[n_unsettled] = i
            n_unsettled += 1
    rows = unsettled[:n_unsettled]
    nearest = np.empty(n_unsettled, dtype=np.int64)
    best_d = np.empty(n_unsettled)
    second_d = np.empty(n_unsettled)
    _scan_two(X, columns, rows, centers_t, nearest, best_d, second_d)
    for q in range(n_unsettled):
        i = rows[q]
        best = nearest[q]
        upper[i] = np.sqrt(best_d[q]) - travelled[best]
        lower[i] = np.sqrt(second_d[q]) + far
        a = labels[i]
        if best != a:
            w = np.float64(weights[i])
            s = 0.0
            for c in range(n_channels):
                v = np.float64(X[i, c])
                s += v * v
                sums[best, c] += v * w
                sums[a, c] -= v * w
            counts[best] += w
            sqnorm[best] += s * w
            counts[a] -= w
            sqnorm[a] -= s * w
            labels[i] = best
    return n_unsettled


#: points per block of :func:`_scan_two`: the block's state stays in L1
_SCAN_BLOCK = 128


@numba.njit(**_JIT)
def as_columns(X):  # pragma: no cover
    """``X`` (n, C) as float64 columns (C, n): the layout the blocked scans read."""
    n, n_channels = X.shape
    columns = np.empty((n_channels, n))
    if n_channels == 3:  # one pass with three output streams: it vectorises
        red, green, blue = columns[0], columns[1], columns[2]
        for i in range(n):
            red[i] = X[i, 0]
            green[i] = X[i, 1]
            blue[i] = X[i, 2]
        return columns
    for c in range(n_channels):
        for i in range(n):
            columns[c, i] = X[i, c]
    return columns


@numba.njit(inline="always", **_JIT)
def _scan_update(x0, x1, x2, c0, c1, c2, j, best, second, label):  # pragma: no cover - jitted
    """One centre ``j`` at ``(c0, c1, c2)`` against one point's running nearest two (branch-free)."""
    u = x0 - c0
    v = x1 - c1
    w = x2 - c2
    d = u * u + v * v + w * w
    return min(best, d), min(second, max(best, d)), j if d < best else label


@numba.njit(inline="always", **_JIT)
def _scan_block(x0, x1, x2, centers_t, labels, best_d, second_d):  # pragma: no cover - jitted
    """:func:`_nearest_two` of the ``_SCAN_BLOCK`` RGB points ``(x0, x1, x2)``, centres four at a time.

    The loop over the block's points vectorises (a point's own running
    minimum is a chain of dependent steps); distances, their rounding and
    the ties are exactly those of :func:`_nearest_two`.
    """
    k = centers_t.shape[1]
    k4 = k - k % 4
    for p in range(_SCAN_BLOCK):
        best_d[p] = np.inf
        second_d[p] = np.inf
        labels[p] = 0
    for j in range(0, k4, 4):
        a0, a1, a2 = centers_t[0, j], centers_t[1, j], centers_t[2, j]
        b0, b1, b2 = centers_t[0, j + 1], centers_t[1, j + 1], centers_t[2, j + 1]
        c0, c1, c2 = centers_t[0, j + 2], centers_t[1, j + 2], centers_t[2, j + 2]
        e0, e1, e2 = centers_t[0, j + 3], centers_t[1, j + 3], centers_t[2, j + 3]
        for p in range(_SCAN_BLOCK):
            best, second, label = best_d[p], second_d[p], labels[p]
            best, second, label = _scan_update(x0[p], x1[p], x2[p], a0, a1, a2, j, best, second, label)
            best, second, label = _scan_update(x0[p], x1[p], x2[p], b0, b1, b2, j + 1, best, second, label)
            best, second, label = _scan_update(x0[p], x1[p], x2[p], c0, c1, c2, j + 2, best, second, label)
            best, second, label = _scan_update(x0[p], x1[p], x2[p], e0, e1, e2, j + 3, best, second, label)
            best_d[p], second_d[p], labels[p] = best, second, label
    for j in range(k4, k):
        a0, a1, a2 = centers_t[0, j], centers_t[1, j], centers_t[2, j]
        for p in range(_SCAN_BLOCK):
            best_d[p], second_d[p], labels[p] = _scan_update(
                x0[p], x1[p], x2[p], a0, a1, a2, j, best_d[p], second_d[p], labels[p])


@numba.njit(**_JIT)
def _scan_two(X, columns, rows, centers_t, labels, best_d, second_d):  # pragma: no cover
    """:func:`_nearest_two` of the points ``rows``: ``labels[q]``, ``best_d[q]``, ``second_d[q]`` for ``rows[q]``.

    ``rows=None`` scans every point. ``columns`` is ``X`` as
    :func:`as_columns` gives it: for RGB the points go through
    :func:`_scan_block` a block at a time, read in place (``rows`` are
    gathered first).
    """
    n_channels, k = centers_t.shape
    n = X.shape[0] if rows is None else rows.shape[0]
    if n_channels != 3:
        dist = np.empty(k)
        for q in range(n):
            labels[q], best_d[q], second_d[q] = _nearest_two(X, q if rows is None else rows[q], centers_t, dist)
        return
    if rows is not None:  # gathered once: the blocks then read in place
        gathered = np.empty((3, n))
        for q in range(n):
            i = rows[q]
            gathered[0, q] = columns[0, i]
            gathered[1, q] = columns[1, i]
            gathered[2, q] = columns[2, i]
        columns = gathered
    B = _SCAN_BLOCK
    start = 0
    while start + B <= n:
        stop = start + B
        _scan_block(columns[0, start:stop], columns[1, start:stop], columns[2, start:stop], centers_t,
                    labels[start:stop], best_d[start:stop], second_d[start:stop])
        start = stop
    if start < n:  # the short last block repeats its last point: the trip count stays B
        x = np.empty((3, B))
        for p in range(B):
            q = min(start + p, n - 1)
            x[0, p] = columns[0, q]
            x[1, p] = columns[1, q]
            x[2, p] = columns[2, q]
        bl = np.empty(B, dtype=np.int64)
        bd = np.empty(B)
        sd = np.empty(B)
        _scan_block(x[0], x[1], x[2], centers_t, bl, bd, sd)
        labels[start:] = bl[: n - start]
        best_d[start:] = bd[: n - start]
        second_d[start:] = sd[: n - start]


@numba.njit(**_JIT)
def _first_step(X, columns, weights, centers_t, labels, upper, lower, sums, counts, sqnorm):  # pragma: no cover
    """The first step of :func:`bounded_step`: a full scan that sets labels, bounds and sums."""
    n = X.shape[0]
    _scan_two(X, columns, None, centers_t, labels, upper, lower)
    for i in range(n):
        upper[i] = np.sqrt(upper[i])
    for i in range(n):
        lower[i] = np.sqrt(lower[i])
    _add_label_sums(X, columns, weights, labels, sums, counts, sqnorm)
    return n


@numba.njit(**_JIT)
def _add_label_sums(X, columns, weights, labels, sums, counts, sqnorm):  # pragma: no cover
    """Add every point's weighted coordinates, weight and square norm to its label's ``sums``, ``counts``, ``sqnorm``."""
    n, n_channels = X.shape
    if n_channels == 3:
        # consecutive points often share a label: four interleaved tables of
        # (sums, count, square norm) keep the additions from waiting on each other
        tables = np.zeros((4, sums.shape[0], 5))
        for i in range(n):
            row = tables[i & 3, labels[i]]
            w = np.float64(weights[i])
            r, g, b = columns[0, i], columns[1, i], columns[2, i]
            row[0] += r * w
            row[1] += g * w
            row[2] += b * w
            row[3] += w
            row[4] += (r * r + g * g + b * b) * w
        for t in range(4):
            for j in range(sums.shape[0]):
                for c in range(3):
                    sums[j, c] += tables[t, j, c]
                counts[j] += tables[t, j, 3]
                sqnorm[j] += tables[t, j, 4]
        return
    for i in range(n):
        best = labels[i]
        w = np.float64(weights[i])
        q = 0.0
        for c in range(n_channels):
            v = np.float64(X[i, c])
            q += v * v
            sums[best, c] += v * w
        counts[best] += w
        sqnorm[best] += q * w


@numba.njit(**_JIT)
def _new_centres(X, weights, multiplicity, centers, centers_t, sums, counts):  # pragma: no cover
    """The clusters' weighted means, as the update step of :func:`bigquant._lloyd.lloyd` makes them.

    Empty clusters first take points by :func:`_relocate_empty` (on copies
    of ``sums`` and ``counts``); a cluster still empty keeps its centre.
    """
    k, n_channels = centers.shape
    sums = sums.copy()
    counts = counts.copy()
    for j in range(k):
        if counts[j] == 0:
            _relocate_empty(X, weights, multiplicity, centers_t, sums, counts)
            break
    new = centers.copy()
    for j in range(k):
        if counts[j] > 0:
            for c in range(n_channels):
                new[j, c] = sums[j, c] / counts[j]
    return new


@numba.njit(**_JIT)
def lloyd_dense(X, columns, weights, centers0, max_iter, tol):  # pragma: no cover
    """Lloyd's iteration with a full blocked scan at every step, for small point sets.

    On a few thousand points most labels change in the first steps and
    Hamerly's bounds do not pay for their upkeep; :func:`_scan_two` of every
    point does. Empty clusters are refilled by :func:`_relocate_empty`
    (``weights`` are counts); the loop stops when :func:`squared_shift` is at
    most ``tol``. Returns the centres and their inertia (a direct sum).
    """
    n, n_channels = X.shape
    k = centers0.shape[0]
    centers = centers0.copy()
    labels = np.empty(n, dtype=np.int64)
    best_d = np.empty(n)
    second_d = np.empty(n)
    for _ in range(max_iter):
        centers_t = np.ascontiguousarray(centers.T)
        _scan_two(X, columns, None, centers_t, labels, best_d, second_d)
        sums = np.zeros((k, n_channels))
        counts = np.zeros(k)
        _add_label_sums(X, columns, weights, labels, sums, counts, np.zeros(k))
        new = _new_centres(X, weights, True, centers, centers_t, sums, counts)
        shift = squared_shift(new, centers)
        centers = new
        if shift <= tol:
            break
    _scan_two(X, columns, None, np.ascontiguousarray(centers.T), labels, best_d, second_d)
    return centers, _weighted_sum(weights, best_d)


@numba.njit(inline="always", **_JIT)
def _draw(cumulative, u):  # pragma: no cover - jitted
    """Index drawn with probability proportional to its increment of ``cumulative``."""
    n = cumulative.shape[0]
    i = np.searchsorted(cumulative, u * cumulative[n - 1], side="right")
    return min(i, n - 1)


@numba.njit(**_JIT)
def _capped_distances(columns, point, cap, out):  # pragma: no cover
    """``out[i] = min(|x_i - point|^2, cap[i])``, rounded as :func:`_sqdist`; vectorises over ``i``."""
    n = columns.shape[1]
    p0 = point[0]
    for i in range(n):
        t = columns[0, i] - p0
        out[i] = t * t
    for c in range(1, columns.shape[0]):
        pc = point[c]
        for i in range(n):
            t = columns[c, i] - pc
            out[i] += t * t
    for i in range(n):
        out[i] = min(out[i], cap[i])


@numba.njit(**_JIT)
def _weighted_sum(weights, values):  # pragma: no cover
    """``sum_i weights[i] * values[i]`` over four interleaved partial sums (no serial add chain)."""
    n = values.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    n4 = n - n % 4
    for i in range(0, n4, 4):
        s0 += np.float64(weights[i]) * values[i]
        s1 += np.float64(weights[i + 1]) * values[i + 1]
        s2 += np.float64(weights[i + 2]) * values[i + 2]
        s3 += np.float64(weights[i + 3]) * values[i + 3]
    for i in range(n4, n):
        s0 += np.float64(weights[i]) * values[i]
    return (s0 + s1) + (s2 + s3)


@numba.njit(**_JIT)
def kmeans_plusplus_greedy(X, weights, n_clusters, uniforms):  # pragma: no cover
    """Greedy weighted k-means++ seeding; returns the indices of the chosen rows.

    As scikit-learn's ``_kmeans_plusplus``: the first centre is drawn in
    proportion to the weights, every next one is the best (lowest potential
    ``sum w * D^2``) of ``uniforms.shape[1]`` candidates drawn in proportion to
    ``w * D^2``. ``uniforms`` (n_clusters, n_trials) in [0, 1) drive every
    draw, so the caller's random generator alone decides the result.
    """
    n, n_channels = X.shape
    n_trials = uniforms.shape[1]
    columns = as_columns(X)
    chosen = np.empty(n_clusters, dtype=np.int64)
    cumulative = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc += np.float64(weights[i])
        cumulative[i] = acc
    chosen[0] = _draw(cumulative, uniforms[0, 0]) if cumulative[n - 1] > 0 else min(int(uniforms[0, 0] * n), n - 1)
    closest = np.full(n, np.inf)
    _capped_distances(columns, columns[:, chosen[0]].copy(), closest, closest)
    pot = _weighted_sum(weights, closest)
    trial_dist = np.empty((n_trials, n))
    cand = np.empty(n_trials, dtype=np.int64)
    pots = np.empty(n_trials)
    for c in range(1, n_clusters):
        if pot <= 0:
            # every point sits on a centre already: repeat the last one
            chosen[c:] = chosen[c - 1]
            break
        acc = 0.0
        for i in range(n):
            acc += np.float64(weights[i]) * closest[i]
            cumulative[i] = acc
        for t in range(n_trials):
            cand[t] = _draw(cumulative, uniforms[c, t])
            _capped_distances(columns, columns[:, cand[t]].copy(), closest, trial_dist[t])
            pots[t] = _weighted_sum(weights, trial_dist[t])
        best = 0
        for t in range(1, n_trials):
            if pots[t] < pots[best]:
                best = t
        chosen[c] = cand[best]
        closest[:] = trial_dist[best]
        pot = pots[best]
    return chosen


@numba.njit(**_JIT)
def labelled_inertia(X, weights, centers_t, labels):  # pragma: no cover
    """``sum_i w_i |x_i - c_{labels_i}|^2``, each distance rounded as a scan's."""
    inertia = 0.0
    for i in range(X.shape[0]):
        inertia += _sqdist(X, i, centers_t, labels[i]) * np.float64(weights[i])
    return inertia


@numba.njit(**_JIT)
def squared_shift(new, old):  # pragma: no cover
    """``sum_jc (new_jc - old_jc)^2``, summed in row-major order (every Lloyd path uses it)."""
    s = 0.0
    for j in range(new.shape[0]):
        for c in range(new.shape[1]):
            t = new[j, c] - old[j, c]
            s += t * t
    return s


@numba.njit(**_JIT)
def _relocate_empty(X, weights, multiplicity, centers_t, sums, counts):  # pragma: no cover
    """In-kernel twin of :func:`bigquant._lloyd.relocate_empty_clusters`.

    Empty clusters, in index order, take the unit points farthest from their
    nearest centre (ties in data order); with ``multiplicity`` row ``i`` stands
    for ``weights[i]`` points of weight 1, otherwise for one point of weight
    ``weights[i]``.
    """
    n, n_channels = X.shape
    k = centers_t.shape[1]
    dist = np.empty(k, dtype=np.float64)
    far = np.empty(n, dtype=np.float64)
    near = np.empty(n, dtype=np.int64)
    for i in range(n):
        best, best_d = _nearest(X, i, centers_t, dist)
        near[i] = best
        far[i] = -best_d
    order = np.argsort(far, kind="mergesort")
    row = 0
    used = 0.0
    for j in range(k):
        if counts[j] != 0:
            continue
        while row < n and used >= (weights[order[row]] if multiplicity else 1.0):
            row += 1
            used = 0.0
        if row >= n:
            break
        i = order[row]
        w = 1.0 if multiplicity else np.float64(weights[i])
        old = near[i]
        for c in range(n_channels):
            v = np.float64(X[i, c])
            sums[old, c] -= v * w
            sums[j, c] = v * w
        counts[old] -= w
        counts[j] = w
        used += 1.0


@numba.njit(**_JIT)
def lloyd_bounded(X, weights, centers0, max_iter, tol, multiplicity):  # pragma: no cover
    """A whole Lloyd run with Hamerly's bounds (see :func:`bounded_step`), in one call.

    The same iteration as :func:`bigquant._lloyd.lloyd` over a
    :class:`~bigquant._points.BoundedPoints`, step for step: centres are the
    weighted means, empty clusters are refilled by :func:`_relocate_empty`,
    and the loop stops when :func:`squared_shift` is at most ``tol``. With
    integer points and weights the sums are exact, so the centres are
    bit-identical to that loop's.

    Returns the centres, their inertia (a direct sum), the iterations run,
    whether it converged, the last shift, and the labels for the centres returned.
    """
    columns = as_columns(X)
    n, n_channels = X.shape
    k = centers0.shape[0]
    centers = centers0.copy()
    centers_t = np.ascontiguousarray(centers.T)
    labels = np.zeros(n, dtype=np.int64)
    upper = np.zeros(n)
    lower = np.zeros(n)
    sums = np.zeros((k, n_channels))
    counts = np.zeros(k)
    sqnorm = np.zeros(k)
    drift = np.zeros(k)
    travelled = np.zeros(k + 1)
    shift = np.inf
    converged = False
    n_iter = 0
    for it in range(1, max_iter + 1):
        n_iter = it
        bounded_step(X, columns, weights, centers_t, drift, travelled, labels, upper, lower, sums, counts,
                     sqnorm, it == 1)
        new = _new_centres(X, weights, multiplicity, centers, centers_t, sums, counts)
        shift = squared_shift(new, centers)
        for j in range(k):
            d = 0.0
            for c in range(n_channels):
                t = new[j, c] - centers[j, c]
                d += t * t
            drift[j] = np.sqrt(d)
        centers = new
        centers_t = np.ascontiguousarray(centers.T)
        if shift <= tol:
            converged = True
            break
    # one more bounded step makes every label exact for the final centres (mostly
    # skipping points); then each point's inertia is one distance, rounded as a scan's
    bounded_step(X, columns, weights, centers_t, drift, travelled, labels, upper, lower, sums, counts, sqnorm, False)
    return centers, labelled_inertia(X, weights, centers_t, labels), n_iter, converged, shift, labels


@numba.njit(**_JIT)
def improve_by_swaps(X, weights, centers, inertia, uniforms, max_iter, tol, patience):  # pragma: no cover
    """Try to lower a Lloyd solution's inertia by moving one centre at a time.

    Each of ``uniforms.shape[0]`` trials removes the centre whose removal
    costs least (every point falling back to its second-nearest centre),
    puts it back at the best of ``uniforms.shape[1]`` points drawn as in
    k-means++ (in proportion to ``w * D^2`` without that centre), and runs
    up to ``max_iter`` Lloyd iterations from there (:func:`lloyd_dense`);
    the move is kept when the inertia drops (the swap heuristic of I-k-means-+, Ismkhan 2018). The
    trials stop early after ``patience`` rejected moves in a row.

    Returns the centres and their inertia.
    """
    n, n_channels = X.shape
    k = centers.shape[0]
    n_trials = uniforms.shape[1]
    fallback = np.empty(n)
    cumulative = np.empty(n)
    labels = np.empty(n, dtype=np.int64)
    second_d = np.empty(n)
    cost = np.empty(k)
    trial_t = np.empty((n_channels, n_trials))
    trial_dist = np.empty(n_trials)
    pots = np.empty(n_trials)
    cand = np.empty(n_trials, dtype=np.int64)
    columns = as_columns(X)
    failures = 0
    removed = 0
    changed = True
    for swap in range(uniforms.shape[0]):
        if changed:  # after a rejected move the centres, and all of this, are as they were
            centers_t = np.ascontiguousarray(centers.T)
            cost[:] = 0.0
            _scan_two(X, columns, None, centers_t, labels, fallback, second_d)
            for i in range(n):
                cost[labels[i]] += np.float64(weights[i]) * (second_d[i] - fallback[i])
            removed = 0
            for j in range(1, k):
                if cost[j] < cost[removed]:
                    removed = j
            acc = 0.0
            for i in range(n):
                if labels[i] == removed:
                    fallback[i] = second_d[i]
                acc += np.float64(weights[i]) * fallback[i]
                cumulative[i] = acc
            if acc <= 0:
                break
            changed = False
        for t in range(n_trials):
            cand[t] = _draw(cumulative, uniforms[swap, t])
            for c in range(n_channels):
                trial_t[c, t] = X[cand[t], c]
            pots[t] = 0.0
        for i in range(n):
            _distances(X, i, trial_t, trial_dist)
            for t in range(n_trials):
                pots[t] += np.float64(weights[i]) * min(trial_dist[t], fallback[i])
        pick = 0
        for t in range(1, n_trials):
            if pots[t] < pots[pick]:
                pick = t
        trial = centers.copy()
        for c in range(n_channels):
            trial[removed, c] = X[cand[pick], c]
        moved, moved_inertia = lloyd_dense(X, columns, weights, trial, max_iter, tol)
        if moved_inertia < inertia:
            centers = moved
            inertia = moved_inertia
            failures = 0
            changed = True
        else:
            failures += 1
            if failures >= patience:
                break
    return centers, inertia
