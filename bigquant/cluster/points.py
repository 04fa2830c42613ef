"""Weighted point sets that Lloyd's iteration runs over.

Two kinds share one small interface:

- :class:`InMemoryPoints` holds a numpy array (pixels of an in-memory image, or
  the distinct colours of a histogram with their counts) and splits the work
  over a thread pool of GIL-free numba kernels.
- :class:`DaskPoints` holds a dask array (n_samples, C) or (H, W, C): every call
  is one task graph of per-block kernels whose small results are summed as a
  tree; only the k x C result comes back to the client.

Both return the same partial sums, so the iteration in :mod:`bigquant.cluster.lloyd`
does not know where the data lives.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.core import flatten
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from bigquant import kernels, tasks
from bigquant.cluster.cells import CellGrid
from bigquant.cluster.resources import cpu_count

__all__ = [
    "Farthest",
    "PointSet",
    "InMemoryPoints",
    "DaskPoints",
    "tree_reduce",
    "block_tree",
    "n_threads",
    "on_pool_thread",
]

#: rows per thread-pool segment below which splitting is not worth it
_MIN_SEGMENT = 1 << 16
#: bounded point sets up to this many rows run Lloyd in one compiled call
_SINGLE_CALL_MAX_ROWS = 1 << 18


def n_threads() -> int:
    """Threads to use for in-memory kernels: numba's configured count, at most the usable cores.

    numba counts the host's cores; a container's CPU quota or the process's
    affinity may allow fewer (:func:`bigquant.cluster.resources.cpu_count`).
    """
    import numba

    configured = int(numba.config.NUMBA_NUM_THREADS or cpu_count())
    return max(1, min(configured, cpu_count()))


@dataclass
class Farthest:
    """The points farthest from their nearest centre, farthest first.

    ``multiplicity[i]`` identical points of unit weight ``weights[i]`` stand
    behind row ``i`` (1 for pixels, the colour count for a histogram).
    """

    points: np.ndarray
    weights: np.ndarray
    multiplicity: np.ndarray
    labels: np.ndarray
    distances: np.ndarray

    @staticmethod
    def merge(parts: Sequence[Farthest], n: int) -> Farthest:
        """Keep the ``n`` farthest rows of several candidate lists."""
        parts = [p for p in parts if p.points.shape[0]]
        if not parts:
            return parts_empty()
        points = np.concatenate([p.points for p in parts])
        weights = np.concatenate([p.weights for p in parts])
        mult = np.concatenate([p.multiplicity for p in parts])
        labels = np.concatenate([p.labels for p in parts])
        dist = np.concatenate([p.distances for p in parts])
        # farthest first; ties by the order given (stable), which is data order
        order = np.argsort(-dist, kind="stable")
        # keep enough rows to cover n unit points
        cum = np.cumsum(mult[order])
        keep = order[: int(np.searchsorted(cum, n) + 1)]
        return Farthest(points[keep], weights[keep], mult[keep], labels[keep], dist[keep])


def parts_empty() -> Farthest:
    """An empty candidate list."""
    return Farthest(
        np.empty((0, 0)), np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    )


def _farthest_of(
    X: np.ndarray, weights: np.ndarray | None, mult: np.ndarray | None, centers: np.ndarray, n: int
) -> Farthest:
    labels, dist = kernels.assign_labels(X, centers, np.int64)
    # the n farthest, ties in data order (as the in-kernel relocation picks them)
    idx = np.sort(np.argsort(-dist, kind="stable")[:n])
    w = np.ones(idx.shape[0]) if weights is None else np.asarray(weights[idx], dtype=np.float64)
    mu = np.ones(idx.shape[0], np.int64) if mult is None else mult[idx].astype(np.int64)
    cand = Farthest(np.asarray(X[idx], dtype=np.float64), w, mu, labels[idx], dist[idx])
    return Farthest.merge([cand], n)


class PointSet(Protocol):
    """What Lloyd's iteration needs from the data."""

    n_channels: int

    def partial_sums(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Per-cluster weighted sums, weights and the inertia for ``centers``."""

    def farthest(self, centers: np.ndarray, n: int) -> Farthest:
        """The ``n`` unit points farthest from their nearest centre."""

    def moments(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Total weight, weighted mean and weighted variance per channel."""

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` points (float64) and their weights, for initialisation."""


_POOL: ThreadPoolExecutor | None = None
#: the names of its threads start with this and "_"
_POOL_PREFIX = "bigquant"


def _thread_pool() -> ThreadPoolExecutor:
    """One shared pool for the in-memory kernels (they release the GIL)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(n_threads(), thread_name_prefix=_POOL_PREFIX)
    return _POOL


def on_pool_thread() -> bool:
    """Whether this thread is one of :func:`_thread_pool`'s (which must not wait on the pool itself)."""
    return threading.current_thread().name.startswith(_POOL_PREFIX + "_")


def _segments(n_rows: int, n_parts: int) -> list[slice]:
    n_parts = max(1, min(n_parts, math.ceil(n_rows / _MIN_SEGMENT)))
    bounds = np.linspace(0, n_rows, n_parts + 1).astype(np.int64)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _weighted_moments(total: float, s: np.ndarray, s2: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    mean = s / total
    var = np.maximum(s2 / total - mean * mean, 0.0)
    return total, mean, var


class InMemoryPoints:
    """A numpy point set, optionally weighted, worked on by a thread pool.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_channels)
    weights : ndarray of shape (n_samples,), default=None
    multiplicity : bool, default=False
        ``True`` when ``weights`` are integer counts of identical points (a
        colour histogram): empty clusters are then refilled point by point.
    n_parts : int, default=None
        Row segments worked on in parallel (default: one per thread; 1 when
        the caller itself runs several point sets in parallel).
    cells : CellGrid, default=None
        A grid of value cells over the points' range: the partial sums and
        labels go through it (:mod:`bigquant.cluster.cells`; the same results).
    """

    def __init__(
        self,
        X: np.ndarray,
        weights: np.ndarray | None = None,
        *,
        multiplicity: bool = False,
        n_parts: int | None = None,
        cells: CellGrid | None = None,
    ):
        self.X = X
        self.weights = weights
        self.multiplicity = multiplicity
        self.cells = cells
        self.n_channels = X.shape[1]
        self._segments = _segments(X.shape[0], n_threads() if n_parts is None else n_parts)

    def _map(self, func: Callable[..., Any], *per_segment: Sequence[Any]) -> list[Any]:
        """``func(segment, *items)`` for every row segment (with its item of each of ``per_segment``)."""
        if len(self._segments) == 1:
            return [func(self._segments[0], *(items[0] for items in per_segment))]
        return list(_thread_pool().map(func, self._segments, *per_segment))

    def _w(self, seg: slice) -> np.ndarray | None:
        return None if self.weights is None else self.weights[seg]

    def partial_sums(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        parts = self._map(lambda seg: _partial_sums(self.X[seg], self._w(seg), centers, self.cells))
        sums = np.sum([p[0] for p in parts], axis=0)
        counts = np.sum([p[1] for p in parts], axis=0)
        return sums, counts, float(math.fsum(p[2] for p in parts))

    def labels(self, centers: np.ndarray, label_dtype: np.dtype | type = np.int32) -> np.ndarray:
        if self.cells is not None:
            parts = self._map(lambda seg: self.cells.labels(self.X[seg], centers, label_dtype))
        else:
            parts = self._map(lambda seg: kernels.assign_labels(self.X[seg], centers, label_dtype)[0])
        return np.concatenate(parts)

    def farthest(self, centers: np.ndarray, n: int) -> Farthest:
        mult = self.weights if self.multiplicity else None
        weights = None if self.multiplicity else self.weights

        def one(seg: slice) -> Farthest:
            f = _farthest_of(
                self.X[seg],
                None if weights is None else weights[seg],
                None if mult is None else mult[seg],
                centers,
                n,
            )
            return f

        return Farthest.merge(self._map(one), n)

    def moments(self) -> tuple[float, np.ndarray, np.ndarray]:
        use_w = self.weights is not None
        dummy = np.empty(0)

        def one(seg: slice) -> tuple[float, np.ndarray, np.ndarray, bool]:
            return kernels.moments(self.X[seg], self.weights[seg] if use_w else dummy, use_w)

        # one pass is cheaper than a round trip through the pool below a few hundred thousand rows
        parts = [one(slice(None))] if self.X.shape[0] <= _SINGLE_CALL_MAX_ROWS else self._map(one)
        total = float(sum(p[0] for p in parts))
        s = np.sum([p[1] for p in parts], axis=0)
        s2 = np.sum([p[2] for p in parts], axis=0)
        if not all(p[3] for p in parts):
            raise FloatingPointError("non-finite values")
        return _weighted_moments(total, s, s2)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        m = self.X.shape[0]
        w = np.ones(m) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        if m <= n:
            return np.asarray(self.X, dtype=np.float64), w
        if self.multiplicity:
            # colours drawn in proportion to their counts, duplicates merged
            idx = rng.choice(m, size=n, replace=True, p=w / w.sum())
            idx, cnt = np.unique(idx, return_counts=True)
            return np.asarray(self.X[idx], dtype=np.float64), cnt.astype(np.float64)
        idx = np.sort(rng.choice(m, size=n, replace=False))
        return np.asarray(self.X[idx], dtype=np.float64), w[idx]


# --------------------------------------------------------------------------- dask


def tree_reduce(
    name: str,
    keys: Sequence[Any],
    combine: Callable[..., Any],
    *,
    split_every: int = 8,
) -> tuple[dict[Any, Any], Any]:
    """Graph layer summing ``keys`` as a tree of ``combine(list)`` tasks.

    Returns the layer and the key of its root. The order of combination only
    depends on the number of keys, so results are reproducible.
    """
    layer: dict[Any, Any] = {}
    level = 0
    current = list(keys)
    while len(current) > 1 or level == 0:
        nxt = []
        for i in range(0, len(current), split_every):
            key = (f"{name}", level, i // split_every)
            layer[key] = (combine, list(current[i : i + split_every]))
            nxt.append(key)
        current = nxt
        level += 1
    return layer, current[0]


def block_tree(
    name: str,
    X: da.Array,
    weights: da.Array | None,
    block_func: Callable,
    extra: tuple,
    combine: Callable,
    *,
    split_every: int = 8,
    per_block: Sequence[Any] | None = None,
    sum_name: str | None = None,
) -> Delayed:
    """One ``block_func`` task per block of ``X``, tree-reduced by ``combine``.

    Each task is ``block_func(block, weight_block_or_None, [per_block[i],] *extra)``;
    keys are ``<name>-<token>`` and ``<sum_name>-<token>`` (default
    ``<name>-sum``; names from :mod:`bigquant.tasks`), so the dashboard shows
    what runs.
    """
    token = tokenize(X, weights, block_func.__name__, per_block, *extra)
    sum_name = tasks.tree_sum(name) if sum_name is None else sum_name
    name = f"{name}-{token}"
    wkeys = None if weights is None else list(flatten(weights.__dask_keys__()))
    layer: dict[Any, Any] = {}
    block_keys = []
    for i, key in enumerate(flatten(X.__dask_keys__())):
        wkey = None if wkeys is None else wkeys[i]
        own = () if per_block is None else (per_block[i],)
        layer[(name, i)] = (block_func, key, wkey, *own, *extra)
        block_keys.append((name, i))
    tree, root = tree_reduce(f"{sum_name}-{token}", block_keys, combine, split_every=split_every)
    layer.update(tree)
    deps = [X] if weights is None else [X, weights]
    graph = HighLevelGraph.from_collections(root[0], layer, dependencies=deps)
    return Delayed(root, graph, layer=root[0])


def _sum_tuples(parts: list[tuple]) -> tuple:
    """Element-wise sum of (sums, counts, inertia) tuples."""
    sums = np.sum([p[0] for p in parts], axis=0)
    counts = np.sum([p[1] for p in parts], axis=0)
    inertia = math.fsum(p[2] for p in parts)
    return sums, counts, inertia


def _block_2d(block: np.ndarray, n_channels: int) -> np.ndarray:
    return block.reshape(-1, n_channels)


def _partial_sums(X: np.ndarray, w: np.ndarray | None, centers: np.ndarray,
                  cells: CellGrid | None) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`bigquant.kernels.partial_sums`, through ``cells`` when given (the same results)."""
    if cells is None:
        return kernels.partial_sums(X, centers, w)
    return cells.partial_sums(X, centers, w)


def _block_partial_sums(block, wblock, centers, cells=None):
    X = _block_2d(block, centers.shape[1])
    w = None if wblock is None else wblock.reshape(-1)
    return _partial_sums(X, w, centers, cells)


def _block_farthest(block, wblock, centers, n):
    X = _block_2d(block, centers.shape[1])
    w = None if wblock is None else wblock.reshape(-1)
    return _farthest_of(X, w, None, centers, n)


def _block_moments(block, wblock, n_channels):
    X = _block_2d(block, n_channels)
    use_w = wblock is not None
    w = wblock.reshape(-1) if use_w else np.empty(0)
    total, s, s2, finite = kernels.moments(X, w, use_w)
    wmin = float(w.min()) if use_w and w.size else 0.0
    return np.concatenate([[total], s, s2]), finite, wmin


def _combine_moments(parts):
    return (
        np.sum([p[0] for p in parts], axis=0),
        all(p[1] for p in parts),
        min(p[2] for p in parts),
    )


class DaskPoints:
    """A dask point set: (n_samples, C) or an image (H, W, C), optionally weighted.

    Parameters
    ----------
    X : dask array of shape (n_samples, n_channels) or (H, W, n_channels)
        The channel axis must be one chunk.
    weights : dask array of X.shape[:-1], default=None
        Chunked like the spatial axes of ``X``.
    split_every : int, default=8
        Fan-in of the tree reduction.
    cells : CellGrid, default=None
        A grid of value cells over the points' range: the partial sums go
        through it (:mod:`bigquant.cluster.cells`; the same results).
    """

    def __init__(self, X: da.Array, weights: da.Array | None = None, *, split_every: int = 8,
                 cells: CellGrid | None = None):
        if X.numblocks[-1] != 1:
            X = X.rechunk({X.ndim - 1: -1})
        if weights is not None and weights.chunks != X.chunks[:-1]:
            weights = weights.rechunk(X.chunks[:-1])
        self.X = X
        self.weights = weights
        self.n_channels = X.shape[-1]
        self.split_every = split_every
        self.cells = cells

    def _run(
        self,
        prefix: str,
        block_func: Callable,
        extra: tuple,
        combine: Callable,
        per_block: Sequence[Any] | None = None,
    ) -> Delayed:
        return block_tree(prefix, self.X, self.weights, block_func, extra, combine,
                          split_every=self.split_every, per_block=per_block)

    def partial_sums(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        centers = np.asarray(centers, dtype=np.float64)
        (result,) = dask.compute(self._run(tasks.LLOYD, _block_partial_sums, (centers, self.cells), _sum_tuples))
        sums, counts, inertia = result
        return sums, counts, float(inertia)

    def farthest(self, centers: np.ndarray, n: int) -> Farthest:
        centers = np.asarray(centers, dtype=np.float64)

        def combine(parts, _n=n):
            return Farthest.merge(parts, _n)

        (result,) = dask.compute(self._run(tasks.RELOCATE, _block_farthest, (centers, n), combine))
        return result

    def moments_and_checks(self) -> tuple[float, np.ndarray, np.ndarray, bool, float]:
        """Moments plus finiteness of the data and the smallest weight, in one pass."""
        C = self.n_channels
        (result,) = dask.compute(self._run(tasks.MOMENTS, _block_moments, (C,), _combine_moments))
        packed, finite, wmin = result
        total, mean, var = _weighted_moments(float(packed[0]), packed[1 : 1 + C], packed[1 + C :])
        return total, mean, var, bool(finite), wmin

    def moments(self) -> tuple[float, np.ndarray, np.ndarray]:
        total, mean, var, finite, _ = self.moments_and_checks()
        if not finite:
            raise FloatingPointError("non-finite values")
        return total, mean, var

    def oversample(self, centers: np.ndarray, seed: int, scale: float) -> tuple[np.ndarray, float]:
        """One k-means|| round: kept points and the cost for ``centers``."""
        return _oversample_pass(self, centers, seed, scale)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        spatial = self.X.shape[:-1]
        m = int(np.prod(spatial))
        if m <= n:
            pts = np.asarray(self.X.reshape(-1, self.n_channels).compute(), dtype=np.float64)
            w = np.ones(m) if self.weights is None else np.asarray(self.weights.reshape(-1).compute(), np.float64)
            return pts, w
        flat = np.sort(rng.choice(m, size=n, replace=False))
        index = np.unravel_index(flat, spatial)
        pts = self.X.vindex[index]
        w = None if self.weights is None else self.weights.vindex[index]
        pts, w = dask.compute(pts, w)
        w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
        return np.asarray(pts, dtype=np.float64), w


def _block_oversample(block, wblock, offset, centers_t, seed, scale):
    X = _block_2d(block, centers_t.shape[0])
    use_w = wblock is not None
    w = wblock.reshape(-1) if use_w else np.empty(0)
    row0, col0, width, image_width = offset
    keep, cost = kernels.oversample(X, w, use_w, centers_t, row0, col0, width, image_width, seed, scale)
    return np.asarray(X[keep], dtype=np.float64), cost


def _combine_oversample(parts):
    return np.concatenate([p[0] for p in parts]), math.fsum(p[1] for p in parts)


def _block_offsets(X: da.Array) -> list[tuple[int, int, int, int]]:
    """(row0, col0, block width, image width) of every block, in key order."""
    rows = np.concatenate([[0], np.cumsum(X.chunks[0])])
    if X.ndim == 2:
        return [(int(rows[i]), 0, 1, 1) for i in range(len(X.chunks[0]))]
    cols = np.concatenate([[0], np.cumsum(X.chunks[1])])
    width = int(X.shape[1])
    return [
        (int(rows[i]), int(cols[j]), int(X.chunks[1][j]), width)
        for i in range(len(X.chunks[0]))
        for j in range(len(X.chunks[1]))
    ]


def _oversample_pass(points: DaskPoints, centers: np.ndarray, seed: int, scale: float):
    """One k-means|| round: points kept with probability ``scale * w * d^2``, and the cost."""
    centers_t = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).T)
    graph = points._run(tasks.INIT, _block_oversample, (centers_t, seed, scale), _combine_oversample,
                        per_block=_block_offsets(points.X))
    (result,) = dask.compute(graph)
    return result


class BoundedPoints(InMemoryPoints):
    """In-memory integer points with integer weights, iterated with Hamerly's bounds.

    For a colour histogram (uint8 colours, int64 counts) every per-cluster sum
    is an integer, exact in float64, so keeping the sums up to date point by
    point gives exactly the sums of a full pass; most points are skipped once
    the centres settle. :meth:`partial_sums` is stateful: it expects to be
    called with the successive centres of one Lloyd run (a call with centres of
    another shape or a :meth:`reset` starts over). The returned inertia is
    computed from per-cluster moments (``sum w|x|^2 - 2 c.S + W|c|^2``), exact
    up to rounding; :meth:`inertia` gives the direct sum.
    """

    def __init__(self, X: np.ndarray, weights: np.ndarray, *, n_parts: int | None = None):
        # one compiled specialisation of every Lloyd kernel: integer colours and
        # counts are exact in float64, and the kernels read float64 columns anyway
        X = np.ascontiguousarray(X, dtype=np.float64)
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        super().__init__(X, weights, multiplicity=True, n_parts=n_parts)
        self.reset()

    def reset(self) -> None:
        """Forget the state of the previous run."""
        self._state: list[dict[str, np.ndarray]] | None = None
        self._previous: np.ndarray | None = None

    def _new_state(self, k: int) -> list[dict[str, np.ndarray]]:
        states = []
        for seg in self._segments:
            n = seg.stop - seg.start
            states.append(
                dict(
                    columns=kernels.as_columns(self.X[seg]),
                    travelled=np.zeros(k + 1),
                    labels=np.zeros(n, np.int64),
                    upper=np.zeros(n),
                    lower=np.zeros(n),
                    sums=np.zeros((k, self.n_channels)),
                    counts=np.zeros(k),
                    sqnorm=np.zeros(k),
                )
            )
        return states

    def partial_sums(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        centers = np.asarray(centers, dtype=np.float64)
        first = self._state is None or self._previous is None or self._previous.shape != centers.shape
        if first:
            self._state = self._new_state(centers.shape[0])
            drift = np.zeros(centers.shape[0])
        else:
            drift = np.sqrt(((centers - self._previous) ** 2).sum(axis=1))
        centers_t = np.ascontiguousarray(centers.T)
        states = self._state
        assert states is not None

        def one(seg: slice, st: dict[str, np.ndarray]) -> int:
            return kernels.bounded_step(
                self.X[seg], st["columns"], self.weights[seg], centers_t, drift, st["travelled"], st["labels"],
                st["upper"], st["lower"], st["sums"], st["counts"], st["sqnorm"], first,
            )

        self._map(one, states)
        self._previous = centers.copy()
        sums = np.sum([st["sums"] for st in states], axis=0)
        counts = np.sum([st["counts"] for st in states], axis=0)
        sqnorm = np.sum([st["sqnorm"] for st in states], axis=0)
        inertia = float(np.sum(sqnorm - 2 * (centers * sums).sum(axis=1) + counts * (centers**2).sum(axis=1)))
        return sums, counts, max(inertia, 0.0)

    def step_labels(self, centers: np.ndarray) -> np.ndarray:
        """The nearest of ``centers`` for every point (ties to the lowest index), by one bounded step.

        Successive calls with centres that move little (e.g. a palette being
        refined) rescan only the points whose bounds fail; the labels are
        those of a full scan.
        """
        self.partial_sums(centers)
        assert self._state is not None
        return np.concatenate([st["labels"] for st in self._state])

    def finish(self, centers: np.ndarray) -> tuple[float, np.ndarray]:
        """Inertia and labels for the last centres of a run: one more bounded step.

        Cheaper than a full pass: the step skips most points, and then each
        point's distance is the one to its own centre.
        """
        self.partial_sums(centers)
        assert self._state is not None
        centers_t = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).T)
        parts = self._map(
            lambda seg, st: kernels.labelled_inertia(self.X[seg], self.weights[seg], centers_t, st["labels"]),
            self._state,
        )
        return float(math.fsum(parts)), np.concatenate([st["labels"] for st in self._state])

    def run(
        self, centers: np.ndarray, max_iter: int, tol: float, *, record: bool = False
    ) -> tuple[np.ndarray, float, int, bool, float, np.ndarray, np.ndarray]:
        """A whole Lloyd run in one compiled call (:func:`bigquant.kernels.lloyd_bounded`).

        Step for step the loop of :func:`bigquant.cluster.lloyd.lloyd` over this point
        set, without the Python round trip per iteration; single-threaded.
        Returns centres, inertia, iterations, converged, last shift, the
        labels of the points for the centres returned, and (with ``record``)
        each iteration's inertia and shift as rows of an (n_iter, 2) array
        (else an empty one).
        """
        self.reset()
        history = np.zeros((int(max_iter) if record else 0, 2))
        centers, inertia, n_iter, converged, shift, labels = kernels.lloyd_bounded(
            self.X, self.weights, np.ascontiguousarray(centers, dtype=np.float64),
            int(max_iter), float(tol), bool(self.multiplicity), history,
        )
        return (centers, float(inertia), int(n_iter), bool(converged), float(shift), labels,
                history[: int(n_iter)])

    @property
    def single_call(self) -> bool:
        """Whether :meth:`run` beats the threaded per-iteration loop (small sets)."""
        return len(self._segments) == 1 or self.X.shape[0] <= _SINGLE_CALL_MAX_ROWS
