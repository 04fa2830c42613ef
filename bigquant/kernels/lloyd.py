"""Lloyd runs: Hamerly-bounded steps, dense runs on small sets, empty-cluster relocation, swaps."""

from __future__ import annotations

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT
from bigquant.kernels.scans import (
    _distances,
    _nearest,
    _scan_two,
    _sqdist,
    as_columns,
    labelled_inertia,
    squared_shift,
)
from bigquant.kernels.seeding import _draw, _weighted_sum

__all__ = [
    "bounded_step",
    "lloyd_dense",
    "lloyd_bounded",
    "improve_by_swaps",
]


_SLACK = 1e-9

# Flags passed from kernel to kernel are ``np.bool_(True)``, never a bare ``True``:
# numba types a bare constant as a literal and compiles the callee once per value.


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
    _scan_two(X, columns, rows, np.bool_(False), centers_t, nearest, best_d, second_d)
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


@numba.njit(**_JIT)
def _first_step(X, columns, weights, centers_t, labels, upper, lower, sums, counts, sqnorm):  # pragma: no cover
    """The first step of :func:`bounded_step`: a full scan that sets labels, bounds and sums."""
    n = X.shape[0]
    _scan_two(X, columns, np.empty(0, dtype=np.int64), np.bool_(True), centers_t, labels, upper, lower)
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
    """The clusters' weighted means, as the update step of :func:`bigquant.cluster.lloyd.lloyd` makes them.

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
    multiplicity = np.bool_(True)  # ``weights`` are counts
    centers = centers0.copy()
    labels = np.empty(n, dtype=np.int64)
    best_d = np.empty(n)
    second_d = np.empty(n)
    for _ in range(max_iter):
        centers_t = np.ascontiguousarray(centers.T)
        _scan_two(X, columns, np.empty(0, dtype=np.int64), np.bool_(True), centers_t, labels, best_d, second_d)
        sums = np.zeros((k, n_channels))
        counts = np.zeros(k)
        _add_label_sums(X, columns, weights, labels, sums, counts, np.zeros(k))
        new = _new_centres(X, weights, multiplicity, centers, centers_t, sums, counts)
        shift = squared_shift(new, centers)
        centers = new
        if shift <= tol:
            break
    _scan_two(X, columns, np.empty(0, dtype=np.int64), np.bool_(True), np.ascontiguousarray(centers.T), labels, best_d, second_d)
    return centers, _weighted_sum(weights, best_d)


@numba.njit(**_JIT)
def _relocate_empty(X, weights, multiplicity, centers_t, sums, counts):  # pragma: no cover
    """In-kernel twin of :func:`bigquant.cluster.lloyd.relocate_empty_clusters`.

    Empty clusters, in index order, take the unit points farthest from their
    nearest centre (ties in data order); with ``multiplicity`` row ``i`` stands
    for ``weights[i]`` points of weight 1, otherwise for one point of weight
    ``weights[i]``. Points on their centre never move (fewer distinct points
    than clusters leave the extra clusters empty).
    """
    n, n_channels = X.shape
    k = centers_t.shape[1]
    dist = np.empty(k, dtype=np.float64)
    far = np.empty(n, dtype=np.float64)
    near = np.empty(n, dtype=np.int64)
    for i in range(n):
        best, best_d = _nearest(X, i, centers_t, dist)
        near[i] = best
        far[i] = best_d
    # rows are taken farthest first, ties in data order: one scan per row taken
    # (at most one per empty cluster) instead of a sort, which would compile slowly
    taken = np.zeros(n, dtype=np.bool_)
    row = -1
    used = 0.0
    for j in range(k):
        if counts[j] != 0:
            continue
        while row < 0 or used >= (weights[row] if multiplicity else 1.0):
            row = _farthest_free(far, taken)
            if row < 0 or not far[row] > 0:
                row = -1  # the others sit on their centres: copies would not lower the inertia
                break
            taken[row] = True
            used = 0.0
        if row < 0:
            break
        i = row
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
def _farthest_free(far, taken):  # pragma: no cover
    """Index of the largest ``far`` not ``taken`` (the first of equals), or -1."""
    best = -1
    best_d = -np.inf
    for i in range(far.shape[0]):
        if not taken[i] and (best < 0 or far[i] > best_d):
            best = i
            best_d = far[i]
    return best


@numba.njit(**_JIT)
def lloyd_bounded(X, weights, centers0, max_iter, tol, multiplicity, history):  # pragma: no cover
    """A whole Lloyd run with Hamerly's bounds (see :func:`bounded_step`), in one call.

    The same iteration as :func:`bigquant.cluster.lloyd.lloyd` over a
    :class:`~bigquant.cluster.points.BoundedPoints`, step for step: centres are the
    weighted means, empty clusters are refilled by :func:`_relocate_empty`,
    and the loop stops when :func:`squared_shift` is at most ``tol``. With
    integer points and weights the sums are exact, so the centres are
    bit-identical to that loop's.

    Returns the centres, their inertia (a direct sum), the iterations run,
    whether it converged, the last shift, and the labels for the centres returned.
    Row ``it - 1`` of ``history`` (if it has that many rows; shape (0, 2)
    records nothing) gets iteration ``it``'s inertia, for the centres it
    started from, from the per-cluster moments as the step-by-step loop
    computes it, and its centre shift.
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
        if history.shape[0] >= it:
            energy = 0.0
            for j in range(k):
                dot = 0.0
                norm = 0.0
                for c in range(n_channels):
                    dot += centers[j, c] * sums[j, c]
                    norm += centers[j, c] * centers[j, c]
                energy += sqnorm[j] - 2.0 * dot + counts[j] * norm
            history[it - 1, 0] = max(energy, 0.0)
            history[it - 1, 1] = shift
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
    bounded_step(X, columns, weights, centers_t, drift, travelled, labels, upper, lower, sums, counts, sqnorm,
                 np.bool_(False))
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
            _scan_two(X, columns, np.empty(0, dtype=np.int64), np.bool_(True), centers_t, labels, fallback, second_d)
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
