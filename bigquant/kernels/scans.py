"""Distance scans: nearest centre, partial sums, labels, moments, blocked RGB scans.

Distances are always computed the same way, ``sum_c (x_c - m_c) ** 2`` in float64
with channels in order, and ties go to the lowest centre index, so the pixel path,
the colour-histogram path and the lookup table give bit-identical labels.
"""

from __future__ import annotations

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT

__all__ = [
    "partial_sums",
    "assign_labels",
    "moments",
    "as_columns",
    "labelled_inertia",
    "squared_shift",
    "SCAN_BLOCK",
]


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


#: rows labelled at a time by the partial sums (the nearest-centre loop vectorises alone)
_SUM_ROWS = 4096


@numba.njit(**_JIT)
def _nearest_rows(X, start, stop, centers_t, dist, labels, min_dist):  # pragma: no cover
    """Nearest centre and its squared distance of rows ``start:stop`` into ``labels``, ``min_dist``."""
    for i in range(start, stop):
        best, best_d = _nearest(X, i, centers_t, dist)
        labels[i - start] = best
        min_dist[i - start] = best_d


@numba.njit(**_JIT)
def _partial_sums_unweighted(X, centers_t, sums, counts):  # pragma: no cover
    n = X.shape[0]
    n_channels, k = centers_t.shape
    dist = np.empty(k, dtype=np.float64)
    labels = np.empty(_SUM_ROWS, dtype=np.int64)
    min_dist = np.empty(_SUM_ROWS, dtype=np.float64)
    inertia = 0.0
    for start in range(0, n, _SUM_ROWS):
        stop = min(n, start + _SUM_ROWS)
        _nearest_rows(X, start, stop, centers_t, dist, labels, min_dist)
        for i in range(start, stop):  # added in row order: the sums of a row-by-row scan
            best = labels[i - start]
            counts[best] += 1.0
            for c in range(n_channels):
                sums[best, c] += np.float64(X[i, c])
            inertia += min_dist[i - start]
    return inertia


@numba.njit(**_JIT)
def _partial_sums_weighted(X, weights, centers_t, sums, counts):  # pragma: no cover
    n = X.shape[0]
    n_channels, k = centers_t.shape
    dist = np.empty(k, dtype=np.float64)
    labels = np.empty(_SUM_ROWS, dtype=np.int64)
    min_dist = np.empty(_SUM_ROWS, dtype=np.float64)
    inertia = 0.0
    for start in range(0, n, _SUM_ROWS):
        stop = min(n, start + _SUM_ROWS)
        _nearest_rows(X, start, stop, centers_t, dist, labels, min_dist)
        for i in range(start, stop):
            w = np.float64(weights[i])
            best = labels[i - start]
            counts[best] += w
            for c in range(n_channels):
                sums[best, c] += np.float64(X[i, c]) * w
            inertia += min_dist[i - start] * w
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


SCAN_BLOCK = 128


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


@numba.njit(**_JIT)
def _scan_block(x0, x1, x2, centers_t, labels, best_d, second_d):  # pragma: no cover - jitted
    """:func:`_nearest_two` of the ``SCAN_BLOCK`` RGB points ``(x0, x1, x2)``, centres four at a time.

    The loop over the block's points vectorises (a point's own running
    minimum is a chain of dependent steps); distances, their rounding and
    the ties are exactly those of :func:`_nearest_two`.
    """
    k = centers_t.shape[1]
    k4 = k - k % 4
    for p in range(SCAN_BLOCK):
        best_d[p] = np.inf
        second_d[p] = np.inf
        labels[p] = 0
    for j in range(0, k4, 4):
        a0, a1, a2 = centers_t[0, j], centers_t[1, j], centers_t[2, j]
        b0, b1, b2 = centers_t[0, j + 1], centers_t[1, j + 1], centers_t[2, j + 1]
        c0, c1, c2 = centers_t[0, j + 2], centers_t[1, j + 2], centers_t[2, j + 2]
        e0, e1, e2 = centers_t[0, j + 3], centers_t[1, j + 3], centers_t[2, j + 3]
        for p in range(SCAN_BLOCK):
            best, second, label = best_d[p], second_d[p], labels[p]
            best, second, label = _scan_update(x0[p], x1[p], x2[p], a0, a1, a2, j, best, second, label)
            best, second, label = _scan_update(x0[p], x1[p], x2[p], b0, b1, b2, j + 1, best, second, label)
            best, second, label = _scan_update(x0[p], x1[p], x2[p], c0, c1, c2, j + 2, best, second, label)
            best, second, label = _scan_update(x0[p], x1[p], x2[p], e0, e1, e2, j + 3, best, second, label)
            best_d[p], second_d[p], labels[p] = best, second, label
    for j in range(k4, k):
        a0, a1, a2 = centers_t[0, j], centers_t[1, j], centers_t[2, j]
        for p in range(SCAN_BLOCK):
            best_d[p], second_d[p], labels[p] = _scan_update(
                x0[p], x1[p], x2[p], a0, a1, a2, j, best_d[p], second_d[p], labels[p])


@numba.njit(**_JIT)
def _scan_two(X, columns, rows, every, centers_t, labels, best_d, second_d):  # pragma: no cover
    """:func:`_nearest_two` of the points ``rows``: ``labels[q]``, ``best_d[q]``, ``second_d[q]`` for ``rows[q]``.

    ``every=True`` scans every point instead (``rows`` is then unused: pass
    an empty int64 array; one compiled version serves both). ``columns`` is ``X`` as
    :func:`as_columns` gives it: for RGB the points go through
    :func:`_scan_block` a block at a time, read in place (``rows`` are
    gathered first).
    """
    n_channels, k = centers_t.shape
    n = X.shape[0] if every else rows.shape[0]
    if n_channels != 3:
        dist = np.empty(k)
        for q in range(n):
            labels[q], best_d[q], second_d[q] = _nearest_two(X, q if every else rows[q], centers_t, dist)
        return
    if not every:  # gathered once: the blocks then read in place
        gathered = np.empty((3, n))
        for q in range(n):
            i = rows[q]
            gathered[0, q] = columns[0, i]
            gathered[1, q] = columns[1, i]
            gathered[2, q] = columns[2, i]
        columns = gathered
    B = SCAN_BLOCK
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
        for q in range(n - start):  # loops, not slice copies: no shape-check error path to compile
            labels[start + q] = bl[q]
            best_d[start + q] = bd[q]
            second_d[start + q] = sd[q]


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
