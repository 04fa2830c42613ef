"""Lloyd's iteration over a :class:`~bigquant.cluster.points.PointSet`.

One iteration = one call of ``points.partial_sums(centers)``: for Dask data a
single task graph (blockwise fused assign + partial sums, tree-reduced), for
in-memory data a thread pool. Only k x C numbers come back each time.

The loop mirrors scikit-learn's ``_kmeans_single_lloyd``: new centres are the
weighted means of the current assignment; empty clusters take the points
farthest from their centre; the loop stops when the squared centre shift is
<= ``tol`` (absolute; the caller scales it by the data variance), which
includes the exact fixed point where labels stop changing.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bigquant import kernels
from bigquant.cluster.points import PointSet
from bigquant.errors import ConvergenceWarning

__all__ = [
    "LloydResult", "lloyd", "relocate_empty_clusters", "repeat_heaviest", "fill_stranded", "warn_not_converged",
]

logger = logging.getLogger(__name__)

#: signature of the per-iteration callback: (iteration, inertia, centre shift)
IterationCallback = Callable[[int, float, float], None]


@dataclass
class LloydResult:
    """Outcome of one Lloyd run."""

    centers: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    #: labels of the points for ``centers``, when the run computed them
    labels: np.ndarray | None = None


def relocate_empty_clusters(
    points: PointSet, centers: np.ndarray, sums: np.ndarray, counts: np.ndarray, inertia: float | None = None
) -> int:
    """Give every empty cluster one of the points farthest from its centre.

    Works on the weighted sums in place, as scikit-learn's
    ``_relocate_empty_clusters_dense`` does: the point leaves its old cluster's
    sums and becomes the new cluster's only member. Only points off their
    centre move: when every point sits on a centre (fewer distinct points than
    clusters), the empty clusters stay empty -- a copy of a point would not
    lower the inertia, and moving copies round would keep the iteration from
    ending. ``inertia``, the assignment's, when 0 says so without a look
    for the farthest points (a pass over the data). Returns how many
    clusters were refilled.
    """
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0 or (inertia is not None and inertia <= 0):
        return 0
    far = points.farthest(centers, empty.size)
    # expand colours into unit points (a colour of count c gives up to c points)
    row = 0
    used = 0
    filled = 0
    for cluster in empty:
        while row < far.points.shape[0] and used >= far.multiplicity[row]:
            row += 1
            used = 0
        if row >= far.points.shape[0] or not far.distances[row] > 0:
            break  # the others sit on their centres
        point, weight, old = far.points[row], far.weights[row], far.labels[row]
        sums[old] -= point * weight
        counts[old] -= weight
        sums[cluster] = point * weight
        counts[cluster] = weight
        used += 1
        filled += 1
    logger.debug("relocated %d empty cluster(s)", filled)
    return filled


def repeat_heaviest(centers: np.ndarray, weights: np.ndarray, n_clusters: int) -> np.ndarray:
    """``centers`` followed by copies of the heaviest one (ties to the lowest index), ``n_clusters`` rows.

    The centres of data with fewer distinct points than ``n_clusters``: every
    distinct point is a centre and the others repeat one of them, as
    scikit-learn returns them; labels (ties to the lowest index) never point
    at a copy.
    """
    centers = np.asarray(centers, dtype=np.float64)
    missing = int(n_clusters) - centers.shape[0]
    if missing <= 0:
        return centers
    heaviest = int(np.argmax(np.asarray(weights, dtype=np.float64)))
    return np.concatenate([centers, np.repeat(centers[heaviest : heaviest + 1], missing, axis=0)])


def fill_stranded(centers: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Centres of a run that ended with empty clusters: each empty one that is no other centre's copy becomes one.

    Clusters stay empty only when every point sits on a centre (see
    :func:`relocate_empty_clusters`): an empty cluster's centre is then a
    copy of a centre with points -- as k-means++ leaves them -- or, from an
    explicit start, a point anywhere; the latter becomes a copy of the
    heaviest cluster's centre, as scikit-learn's relocation makes it one of
    the (duplicate) points. The inertia does not change.
    """
    empty = np.asarray(counts) == 0
    if not empty.any() or empty.all():
        return centers
    used = centers[~empty]
    out = np.array(centers, dtype=np.float64)
    heaviest = centers[int(np.argmax(counts))]
    for j in np.flatnonzero(empty):
        if not (used == centers[j]).all(axis=1).any():
            out[j] = heaviest
    return out


def _update(centers: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    new = centers.copy()
    nonzero = counts > 0
    new[nonzero] = sums[nonzero] / counts[nonzero, None]
    return new


def lloyd(
    points: PointSet,
    centers: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    callback: IterationCallback | None = None,
    start_iter: int = 0,
    on_iteration: Callable[[int, np.ndarray], None] | None = None,
) -> LloydResult:
    """Run Lloyd's algorithm from ``centers``.

    Parameters
    ----------
    points : PointSet
        The data, in memory or on Dask.
    centers : ndarray of shape (n_clusters, n_channels)
        Initial centres.
    max_iter : int
        Maximum number of iterations.
    tol : float
        Absolute tolerance on the summed squared centre shift.
    callback : callable, default=None
        Called after each iteration with ``(iteration, inertia, shift)``.
    start_iter : int, default=0
        Iterations already done (when resuming from a checkpoint).
    on_iteration : callable, default=None
        Called after each iteration with ``(iteration, new_centers)`` (checkpoints).

    Returns
    -------
    LloydResult
        ``inertia`` is for the returned centres.
    """
    centers = np.array(centers, dtype=np.float64)
    if on_iteration is None and start_iter == 0 and getattr(points, "single_call", False):
        # one compiled call, with or without a callback (which then sees the
        # iterations once the run is over): the same kernels either way
        centers, final_inertia, n_iter, converged, shift, labels, history = points.run(
            centers, max_iter, tol, record=callback is not None)
        logger.info("%d iterations in one call: inertia %.6g, last centre shift %.3g",
                    n_iter, final_inertia, shift)
        if callback is not None:
            for i, (inertia_i, shift_i) in enumerate(history, start=1):
                callback(i, float(inertia_i), float(shift_i))
        if not converged:
            warn_not_converged(max_iter, shift, tol)
        return LloydResult(centers, final_inertia, n_iter, converged, labels)
    if hasattr(points, "reset"):
        points.reset()
    converged = False
    shift = np.inf
    n_iter = start_iter
    counts = None
    for n_iter in range(start_iter + 1, max_iter + 1):
        sums, counts, inertia = points.partial_sums(centers)
        relocate_empty_clusters(points, centers, sums, counts, inertia)
        # every point on its centre: a fixed point, whose weighted means would only round
        new_centers = centers.copy() if inertia <= 0 else _update(centers, sums, counts)
        shift = kernels.squared_shift(new_centers, centers)
        logger.info("iteration %d: inertia %.6g, centre shift %.3g", n_iter, inertia, shift)
        if callback is not None:
            callback(n_iter, inertia, shift)
        centers = new_centers
        if on_iteration is not None:
            on_iteration(n_iter, centers)
        if shift <= tol:
            converged = True
            break
    if converged and counts is not None:
        centers = fill_stranded(centers, counts)  # every point on a centre: the empty ones become copies
    labels = None
    if hasattr(points, "finish"):
        final_inertia, labels = points.finish(centers)
    elif converged and shift == 0.0:
        # exact fixed point: the last assignment was to these very centres
        final_inertia = inertia
    else:
        final_inertia = points.partial_sums(centers)[2]
    if not converged:
        warn_not_converged(max_iter, shift, tol)
    return LloydResult(centers, float(final_inertia), n_iter, converged, labels)


def warn_not_converged(max_iter: int, shift: float, tol: float, *, stacklevel: int = 4) -> None:
    """Warn (:class:`ConvergenceWarning`) that a Lloyd run stopped at ``max_iter``."""
    warnings.warn(
        f"Lloyd's iteration did not converge within max_iter={max_iter} iterations "
        f"(last centre shift {shift:.3g} > tol {tol:.3g}); increase max_iter or tol.",
        ConvergenceWarning,
        stacklevel=stacklevel,
    )
