"""Seeding kernels: greedy k-means++ and the k-means|| oversampling step."""

from __future__ import annotations

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT
from bigquant.kernels.scans import _nearest, as_columns

__all__ = [
    "kmeans_plusplus_greedy",
    "oversample",
]


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
        for i in range(n):  # a loop, not ``closest[:] = row``: no shape-check error path to compile
            closest[i] = trial_dist[best, i]
        pot = pots[best]
    return chosen
