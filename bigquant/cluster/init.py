"""Initial centres: k-means++ (weighted, greedy), random, and k-means|| on Dask."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from bigquant import kernels

__all__ = ["kmeans_plusplus", "local_trials", "random_init", "init_sample_size"]

logger = logging.getLogger(__name__)


def init_sample_size(n_clusters: int) -> int:
    """How many points k-means++ looks at: all up to this many, else a sample."""
    return max(1 << 18, 256 * n_clusters)


def local_trials(n_clusters: int) -> int:
    """Candidates per greedy k-means++ draw: scikit-learn's ``2 + log(k)``."""
    return 2 + int(np.log(n_clusters))


def kmeans_plusplus(
    X: np.ndarray,
    weights: np.ndarray,
    n_clusters: int,
    rng: np.random.Generator,
    *,
    n_local_trials: int | None = None,
) -> np.ndarray:
    """Greedy weighted k-means++ seeding (Arthur & Vassilvitskii 2007).

    Follows scikit-learn's ``_kmeans_plusplus``: each new centre is the best of
    ``2 + log(k)`` candidates drawn with probability proportional to
    ``weight * D(x)^2``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_channels)
        Candidate points (float64).
    weights : ndarray of shape (n_samples,)
        Non-negative weights (colour counts or sample weights).
    n_clusters : int
    rng : numpy.random.Generator

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_channels)
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if n_local_trials is None:
        n_local_trials = local_trials(n_clusters)
    uniforms = rng.random((n_clusters, n_local_trials))
    return X[kernels.kmeans_plusplus_greedy(X, weights, n_clusters, uniforms)]


def random_init(
    X: np.ndarray, weights: np.ndarray, n_clusters: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_clusters`` distinct rows of ``X`` drawn with probability proportional to weight."""
    weights = np.asarray(weights, dtype=np.float64)
    positive = np.flatnonzero(weights > 0)
    p = weights[positive] / weights[positive].sum()
    size = min(n_clusters, positive.shape[0])
    idx = positive[rng.choice(positive.shape[0], size=size, replace=False, p=p)]
    centers = np.asarray(X[idx], dtype=np.float64)
    if size < n_clusters:
        centers = np.concatenate([centers, np.repeat(centers[-1:], n_clusters - size, axis=0)])
    return centers


def kmeans_parallel(
    points,
    n_clusters: int,
    rng: np.random.Generator,
    *,
    rounds: int = 5,
    oversampling: float = 2.0,
) -> np.ndarray:
    """k-means|| (Bahmani et al. 2012) over a :class:`~bigquant.cluster.points.DaskPoints`.

    Each round is one distributed pass that keeps every point with probability
    ``oversampling * k * w * D(x)^2 / cost``; the draws come from a counter-based
    generator keyed by the pixel's global index, so the result does not depend
    on the chunking. The candidates are weighted by the points nearest to them
    (one more pass) and reduced to ``n_clusters`` centres by weighted k-means++
    followed by Lloyd's iteration in memory.
    """
    from bigquant.cluster.lloyd import lloyd
    from bigquant.cluster.points import InMemoryPoints

    first, _ = points.sample(1, rng)
    candidates = first
    cost = points.partial_sums(candidates)[2]
    for r in range(rounds):
        if cost <= 0:
            break
        seed = int(rng.integers(0, 2**63 - 1))
        new, cost = points.oversample(candidates, seed, oversampling * n_clusters / cost)
        if new.shape[0]:
            candidates = np.unique(np.concatenate([candidates, new]), axis=0)
        logger.debug("k-means|| round %d: %d candidates", r + 1, candidates.shape[0])
    weights = points.partial_sums(candidates)[1]
    keep = weights > 0
    candidates, weights = candidates[keep], weights[keep]
    if candidates.shape[0] <= n_clusters:
        extra, _ = points.sample(n_clusters, rng)
        candidates = np.concatenate([candidates, extra])
        weights = np.concatenate([weights, np.full(extra.shape[0], 1e-9)])
    centers = kmeans_plusplus(candidates, weights, n_clusters, rng)
    local = InMemoryPoints(candidates, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lloyd(local, centers, max_iter=50, tol=0.0).centers
