"""Mini-batch k-means for data too big to iterate over.

:class:`MiniBatchKMeans` follows scikit-learn's ``MiniBatchKMeans``: each step
assigns a random batch to the nearest centres and moves every centre to the
running mean of all the points it has received (step ``weight / count``),
clusters with very little weight are randomly reassigned to batch points, and
the run stops early when an exponentially smoothed batch inertia stops
improving or when the centres move by less than ``tol``. Then, by default, a
short Lloyd refinement on the samples already fetched removes the lag of the
running means, and one final pass over the data gives the exact ``inertia_``.

Samples that are colours (unweighted unsigned data of at most 24 bits per
pixel, e.g. uint8 RGB) are *counted* (a histogram of the samples, at most a
round's worth): by default (``refine=True``) the initialisation is then the
coarse-to-fine search of :class:`KMeans` (:mod:`bigquant.cluster.search`) run
on the first round's counted colours, ending at a Lloyd fixed point of that
sample; the steps continue the running means from it (each centre starts with
the weight of its cluster in the sample, not zero), and the refinement runs
Lloyd's iteration on the counted colours in one compiled call. On
grace_hopper (k = 8..64, 5 seeds) this keeps the final SSE within 0.6% of the
full fit (``KMeans()``) where k-means++ on ``init_size`` samples and running
means ended up to 4% above it (scikit-learn's MiniBatchKMeans: 4-10%): the
running means only move within the basin their start lies in. A round of
colours is 2**20 samples whatever the size of the data (with replacement on
small images): counted, it costs at most its distinct colours.

Where the batches come from
---------------------------
*Pixels* (``strategy="pixels"``). Batches are fetched in *rounds* of 2**20
pixels, each round serving many steps (256 batches of 4096). The image is cut
into a fixed grid of *virtual tiles* of 32 x 32 pixels (1,024 rows of 2-D
data), independent of the chunking. A round takes 65,536 tiles, each the tile
under a uniformly drawn pixel (so tiles are chosen in proportion to their
area), and 16 uniform pixels in each: every pixel is equally likely. The
global positions are drawn on the client from the seeded generator, shuffled
so that every batch mixes all the round's tiles, and fetched by one small task
per chunk holding some of them, which returns only those pixels; a final task
puts them back in draw order. The batches, hence the centres, are therefore
identical for any chunking and for numpy and dask input.

Why tiles: drawing pixels one by one over the whole image (as
``DaskPoints.sample`` does) is as reproducible but touches every chunk at every
draw, and its graph grows with the sample; taking many pixels from a few tiles
touches few chunks but spatially clustered samples fit the colours of a few
places (measured: the inertia of centres fitted on 64 tiles of 256 x 256 was
25-35% higher on the whole image than on the sample). Many small tiles per
round keep the sample spread: on a 64 MP photo-like image at k = 16, six
seeds ended 1.0034-1.0171 x the full fit's SSE with 4,096 tiles of 256
pixels, 1.0007-1.0051 with 16,384 of 64 and 1.0004-1.0015 with 65,536 of 16.
A round reads at most 65,536 chunks -- all of them for the usual chunks of
512 x 512 up to 16 GP or 4096 x 4096 up to ~1 TP, in one read-only task per
chunk, which costs a fraction of a Lloyd pass (no assignment); most fits need
one to three rounds.

*Colours* (``strategy="histogram"``, unsigned data of at most 24 bits per
pixel such as uint8 RGB): one pass counts the colours exactly; batches are
colours drawn in proportion to their counts, and the final inertia and the
labels come from the histogram and a lookup table.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from bigquant import kernels, tasks
from bigquant._typing import INIT_METHODS
from bigquant.cluster.base import KMeansBase, warn_few_clusters
from bigquant.cluster.histogram import ColourHistogram, colour_histogram, histogram_bits
from bigquant.cluster.init import kmeans_plusplus, random_init
from bigquant.cluster.lloyd import lloyd, repeat_heaviest
from bigquant.cluster.points import BoundedPoints, DaskPoints, InMemoryPoints
from bigquant.cluster.search import search, uses_coarse_search
from bigquant.cluster.validation import (
    Data,
    check_choice,
    check_data,
    check_float,
    check_init,
    check_int,
    check_random_state,
    check_sample_weight,
    label_dtype,
)
from bigquant.errors import ConvergenceWarning, InvalidInputError, InvalidParameterError

__all__ = ["MiniBatchKMeans", "MINIBATCH_STRATEGIES"]

logger = logging.getLogger(__name__)

#: strategies of :class:`MiniBatchKMeans`
MINIBATCH_STRATEGIES: tuple[str, ...] = ("auto", "pixels", "histogram")

#: edge of the virtual tiles of an image (pixels); rows of a tile of 2-D data
_TILE_EDGE = 32
_TILE_ROWS = _TILE_EDGE * _TILE_EDGE
#: tiles a draw takes its pixels from
_ROUND_TILES = 1 << 16
#: pixels fetched per round (one dask computation serves many steps)
_ROUND_PIXELS = 1 << 20
#: pixels of the first round that judge the initialisations
_VALID_PIXELS = 1 << 16
#: the smoothed inertia averages over at most about this many samples
_EWA_MAX_SAMPLES = 1 << 20
#: the refinement runs on at most this many of the pixels fetched
_REFINE_PIXELS = 1 << 20
#: Lloyd's iteration of the refinement: relative tolerance and iteration cap
_REFINE_TOL = 1e-4
_REFINE_MAX_ITER = 300

#: coarse-search chains per initialisation, and how many of them run to the sample's fixed point
_SEARCH_CHAINS = 4
_SEARCH_EXACT = 2

#: signature of the per-step callback: (step, batch inertia per unit weight, centre shift)
StepCallback = Callable[[int, float, float], None]


# --------------------------------------------------------------------------- samplers


class _Batch:
    """Values (n, C) in the data's dtype and weights (n,) or None."""

    __slots__ = ("X", "w")

    def __init__(self, X: np.ndarray, w: np.ndarray | None) -> None:
        self.X = X
        self.w = w

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def take(self, sl: slice) -> _Batch:
        return _Batch(self.X[sl], None if self.w is None else self.w[sl])


def _gather_block(block: np.ndarray, wblock: np.ndarray | None, local: np.ndarray) -> tuple:
    """Rows ``local`` (flat indices) of one chunk, and their weights."""
    X = block.reshape(-1, block.shape[-1])
    w = None if wblock is None else np.asarray(wblock).reshape(-1)[local]
    return np.ascontiguousarray(X[local]), w


def _assemble(parts: list[tuple]) -> tuple:
    """Concatenate the per-chunk rows (in chunk order; the client puts them back in draw order)."""
    X = np.concatenate([p[0] for p in parts])
    if parts[0][1] is None:
        return X, None
    return X, np.concatenate([p[1] for p in parts])


class _PixelSampler:
    """Uniform pixels of an array drawn through a fixed grid of virtual tiles.

    The positions drawn depend only on the generator and the array's shape,
    never on its chunks; numpy and dask arrays give the same values.
    """

    def __init__(self, data: Data, weights: np.ndarray | da.Array | None) -> None:
        self.data = data
        self.weights = weights
        self.spatial = data.spatial_shape
        self.n_samples = data.n_samples
        tile = (_TILE_ROWS,) if len(self.spatial) == 1 else (_TILE_EDGE, _TILE_EDGE)
        self.tile = np.array(tile, dtype=np.int64)
        self.shape = np.array(self.spatial, dtype=np.int64)
        if data.is_dask:
            X = data.array
            self._bounds = [np.concatenate([[0], np.cumsum(c)]) for c in X.chunks[:-1]]
            self._keys = X.__dask_keys__()
            self._wkeys = None if weights is None else weights.__dask_keys__()
        else:
            self._flat = data.flat()
            self._wflat = None if weights is None else np.ascontiguousarray(weights).reshape(-1)

    # -- positions

    def positions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Flat indices of ``n`` pixels, each uniform over the data, in random order."""
        n_tiles = _ROUND_TILES
        per_tile = math.ceil(n / n_tiles)
        # the tile under a uniform random pixel: tiles are chosen in proportion
        # to their area (edge tiles are smaller), so every pixel is equally likely
        anchors = np.unravel_index(rng.integers(0, self.n_samples, size=n_tiles), self.spatial)
        coords = []
        for d, a in enumerate(anchors):
            start = a // self.tile[d] * self.tile[d]
            extent = np.minimum(self.tile[d], self.shape[d] - start)
            offset = rng.integers(0, extent[:, None], size=(n_tiles, per_tile))
            coords.append((start[:, None] + offset).ravel())
        flat = np.ravel_multi_index(tuple(coords), self.spatial)
        return flat[rng.permutation(flat.shape[0])[:n]]

    # -- values

    def fetch(self, flat: np.ndarray) -> _Batch:
        """The values (and weights) at flat positions, in the order given."""
        if not self.data.is_dask:
            return _Batch(self._flat[flat], None if self._wflat is None else self._wflat[flat])
        graph, inverse = self._graph(flat)
        (result,) = dask.compute(graph)
        X, w = result
        return _Batch(X[inverse], None if w is None else w[inverse])

    def _graph(self, flat: np.ndarray) -> tuple[Delayed, np.ndarray]:
        """The gather graph, and the permutation that puts its rows in the order of ``flat``.

        The graph carries each chunk's row indices in the smallest unsigned type
        that holds them (4 bytes a pixel for chunks below 4 G pixels), and no
        permutation: a round of 2**20 pixels is a 4 MiB graph, under
        distributed's large-graph warning.
        """
        X = self.data.array
        coords = np.unravel_index(flat, self.spatial)
        block_ids = []
        local = []
        for d, c in enumerate(coords):
            b = np.searchsorted(self._bounds[d], c, side="right") - 1
            block_ids.append(b)
            local.append(c - self._bounds[d][b])
        nblocks = X.numblocks[:-1]
        block_lin = np.ravel_multi_index(tuple(block_ids), nblocks)
        order = np.argsort(block_lin, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.shape[0])
        sorted_lin = block_lin[order]
        starts = np.flatnonzero(np.r_[True, sorted_lin[1:] != sorted_lin[:-1]])
        ends = np.r_[starts[1:], sorted_lin.shape[0]]
        token = tokenize(X, self.weights, flat)
        name = f"{tasks.MB_GATHER}-{token}"
        layer: dict[Any, Any] = {}
        parts = []
        for i, (a, b) in enumerate(zip(starts, ends)):
            sel = order[a:b]
            bidx = np.unravel_index(int(sorted_lin[a]), nblocks)
            chunk_shape = tuple(int(X.chunks[d][bidx[d]]) for d in range(len(nblocks)))
            loc = np.ravel_multi_index(tuple(l[sel] for l in local), chunk_shape)
            loc = loc.astype(np.min_scalar_type(max(int(np.prod(chunk_shape)) - 1, 0)))
            key = self._keys
            for j in bidx:
                key = key[j]
            key = key[0]
            wkey = None
            if self._wkeys is not None:
                wkey = self._wkeys
                for j in bidx:
                    wkey = wkey[j]
            layer[(name, i)] = (_gather_block, key, wkey, loc)
            parts.append((name, i))
        root = (f"{tasks.MB_BATCH}-{token}",)
        layer[root] = (_assemble, parts)
        deps = [X] if self.weights is None else [X, self.weights]
        graph = HighLevelGraph.from_collections(root[0], layer, dependencies=deps)
        return Delayed(root, graph, layer=root[0]), inverse

    def draw(self, n: int, rng: np.random.Generator) -> _Batch:
        """``n`` pixels, uniform over the data, from random tiles."""
        return self.fetch(self.positions(n, rng))


class _ColourSampler:
    """Colours of a histogram drawn with probability proportional to their counts."""

    def __init__(self, histogram: ColourHistogram) -> None:
        self.histogram = histogram
        self.n_samples = histogram.n_pixels
        self._cum = np.cumsum(histogram.counts)

    def draw(self, n: int, rng: np.random.Generator) -> _Batch:
        """``n`` colours drawn with replacement, in proportion to their counts."""
        u = rng.integers(0, int(self._cum[-1]), size=n)
        idx = np.searchsorted(self._cum, u, side="right")
        return _Batch(self.histogram.colours[idx], None)


def _weights_of(histogram: ColourHistogram, labels: np.ndarray, k: int) -> np.ndarray:
    """Pixels of a histogram in each cluster, from its colours' labels."""
    return np.bincount(labels, weights=histogram.counts, minlength=k).astype(np.float64)


# --------------------------------------------------------------------------- estimator


class MiniBatchKMeans(KMeansBase):
    """Mini-batch k-means (Sculley 2010) of pixels or samples, in memory or on Dask.

    scikit-learn's ``MiniBatchKMeans`` semantics on data that need not fit in
    memory: the batches are random pixels fetched in rounds from random virtual
    tiles (see :mod:`bigquant.cluster.minibatch`), so a fit reads a small part of the
    data, plus one final pass for ``inertia_`` (see ``compute_labels``).
    Results depend only on ``random_state``, not on the chunking, and numpy and
    dask versions of the same data give the same centres. ``predict``,
    ``transform``, ``score`` and ``fit_predict`` are those of :class:`KMeans`
    (this class derives from it).

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters (palette size).
    batch_size : int, default=4096
        Pixels (samples) per step.
    max_iter : int, default=100
        Maximum number of passes over the data, counted in samples drawn:
        at most ``max_iter * n_samples // batch_size`` steps (as in
        scikit-learn); ``max_steps`` can bound them further.
    max_steps : int or None, default=None
        Maximum number of steps, whatever the size of the data.
    tol : float, default=0.0
        Stop when the summed squared centre change of a step is at most ``tol``
        times the mean per-channel variance of the data (estimated on the
        first round of samples). 0 disables this test.
    max_no_improvement : int or None, default=10
        Stop after this many consecutive steps without improvement of the
        smoothed batch inertia. ``None`` disables this test. The smoothing is
        scikit-learn's exponentially weighted average over about one pass of
        the data, but over at most 2**20 samples, so that the test also works
        on gigapixel data.
    reassignment_ratio : float, default=0.01
        Clusters whose accumulated weight is below this fraction of the largest
        one are moved to random batch points (every ``10 * n_clusters``
        samples, and whenever a cluster is empty).
    init : {"k-means++", "k-means||", "random"} or ndarray of shape (n_clusters, n_channels), \
default="k-means++"
        Initialisation, computed on ``init_size`` random samples (weighted by
        ``sample_weight``). ``"k-means||"`` needs passes over all the data:
        here it is k-means++. With ``refine=True`` on colour samples
        (unweighted unsigned data of at most 24 bits per pixel), k-means++ or
        random seeds start the chains of :class:`KMeans`'s coarse search on
        the counted samples of the first round (see
        :mod:`bigquant.cluster.minibatch`).
    init_size : int or None, default=None
        Samples of the first round seeding each initialisation (the next
        65,536 pick the best of ``n_init``); ``None`` means
        ``3 * batch_size``, at least ``3 * n_clusters`` -- or, for the coarse
        search on colour samples, the whole first round (2**20 samples).
    n_init : int or "auto", default="auto"
        Number of initialisations; the one with the lowest inertia on the
        validation sample is kept (for the coarse search: 4 chains per
        initialisation, the lowest on the sample kept). ``"auto"``: 1 for
        ``"k-means++"``, 3 for ``"random"``.
    refine : bool, default=True
        After the mini-batch steps, run Lloyd's iteration (to the relative
        tolerance 1e-4 of :class:`KMeans`) on up to 2**20 of the samples
        already fetched, starting from the mini-batch centres. The running
        means of mini-batch k-means lag behind (every centre averages points
        assigned to it under older centres): on photos this costs 2-9% of
        inertia, which the refinement recovers without reading more data.
        On colour samples it also brings the coarse-search initialisation
        (see ``init``). ``False`` gives scikit-learn's algorithm (k-means++ on
        ``init_size`` samples, running means only).
    compute_labels : bool, default=True
        After the last step, compute ``inertia_`` exactly with one pass over
        the data (and ``labels_``, lazily for dask input). ``False`` skips the
        pass: ``inertia_`` is then the smoothed batch inertia scaled to the
        whole data (an estimate) and ``labels_`` is not set.
    random_state : int, numpy Generator or None, default=None
        Seed of the initialisation, the batches and the reassignments.
    strategy : {"auto", "pixels", "histogram"}, default="auto"
        ``"pixels"``: batches of pixels from random virtual tiles; a round of
        batches reads only the chunks under its tiles. ``"histogram"``: one exact pass
        counts the colours (unsigned data of at most 24 bits per pixel, e.g.
        uint8 RGB, without ``sample_weight``), then batches are colours drawn
        in proportion to their counts. ``"auto"`` is ``"pixels"``.
    split_every : int, default=8
        Fan-in of the tree reductions of the final pass and of ``score``.
    callback : callable, default=None
        Called after every step with ``(step, batch_inertia, centre_shift)``,
        the batch inertia being per unit of weight.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_channels)
        Centres (float64). When the data hold fewer distinct values than
        ``n_clusters`` (seen in the first round of samples, or the colour
        histogram), the fit ends without a step: every value is a centre, the
        others repeat the most frequent, and a
        :class:`~bigquant.errors.FewColoursWarning` (a
        :class:`~bigquant.errors.ConvergenceWarning`) says so, as
        :class:`KMeans` and scikit-learn's ``KMeans`` do.
    labels_ : ndarray or dask array
        Label of each sample of the data given to ``fit``: shape (n_samples,)
        for 2-D input and (H, W) for an image; numpy for numpy input, lazy dask
        for dask input. After ``partial_fit``: the labels of its batch.
    inertia_ : float
        After ``fit``: weighted sum of squared distances of all samples to
        their nearest centre, computed in one final pass (an estimate when
        ``compute_labels=False``). After ``partial_fit``: that of its batch.
    n_iter_ : int
        Passes over the data the steps amount to, ``ceil(n_steps_ *
        batch_size / n_samples)``; 1 for data of fewer distinct values than
        ``n_clusters`` (no step: the one pass that finds them).
    n_steps_ : int
        Number of mini-batch steps run.
    n_samples_fetched_ : int
        Samples drawn by ``fit`` (pixels read at random positions, or colours
        drawn from the histogram), the initialisation's and the
        refinement's included: with the final pass, what the fit reads.
    n_refine_iter_ : int
        Lloyd iterations of the refinement (only with ``refine=True``).
    n_features_in_ : int
        Number of channels seen in ``fit``.
    strategy_ : str
        The strategy used.
    histogram_ : ColourHistogram or None
        The colour histogram, for the histogram strategy.

    See Also
    --------
    KMeans : exact Lloyd's iteration; ``KMeans(strategy="minibatch")`` runs
        this estimator.

    Notes
    -----
    ``partial_fit`` uses each block it is given as one batch and seeds the
    centres on the first block, as scikit-learn does: the blocks should be
    representative samples. Spatial tiles of a photo are not (the first tile
    holds a few of its colours; streaming the tiles of a 256 x 320 photo in
    row order ended 10-50% above ``fit``); give ``fit`` the whole dask array
    instead, which draws its batches across the image.

    Examples
    --------
    >>> import numpy as np
    >>> from bigquant import MiniBatchKMeans
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(20, 2, (500, 3)), rng.normal(200, 2, (500, 3))])
    >>> mbk = MiniBatchKMeans(n_clusters=2, batch_size=256, random_state=0).fit(X)
    >>> np.round(np.sort(mbk.cluster_centers_[:, 0]), -1)
    array([ 20., 200.])
    >>> mbk.predict(np.array([[0.0, 0.0, 0.0]])).shape
    (1,)
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        batch_size: int = 4096,
        max_iter: int = 100,
        max_steps: int | None = None,
        tol: float = 0.0,
        max_no_improvement: int | None = 10,
        reassignment_ratio: float = 0.01,
        init: str | np.ndarray = "k-means++",
        init_size: int | None = None,
        n_init: int | str = "auto",
        refine: bool = True,
        compute_labels: bool = True,
        random_state: Any = None,
        strategy: str = "auto",
        split_every: int = 8,
        callback: StepCallback | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.max_steps = max_steps
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.reassignment_ratio = reassignment_ratio
        self.init = init
        self.init_size = init_size
        self.n_init = n_init
        self.refine = refine
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.strategy = strategy
        self.split_every = split_every
        self.callback = callback

    # ------------------------------------------------------------------ checks

    def _check_params(self, n_channels: int) -> np.ndarray | None:
        check_int(self.n_clusters, "n_clusters", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.max_iter, "max_iter", minimum=1)
        if self.max_steps is not None:
            check_int(self.max_steps, "max_steps", minimum=1)
        check_float(self.tol, "tol", minimum=0.0)
        if self.max_no_improvement is not None:
            check_int(self.max_no_improvement, "max_no_improvement", minimum=0)
        check_float(self.reassignment_ratio, "reassignment_ratio", minimum=0.0)
        if self.init_size is not None:
            check_int(self.init_size, "init_size", minimum=1)
        if not (isinstance(self.n_init, str) and self.n_init == "auto"):
            check_int(self.n_init, "n_init", minimum=1)
        for name in ("refine", "compute_labels"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise InvalidParameterError(f"{name}={value!r} must be True or False")
        check_choice(self.strategy, "strategy", MINIBATCH_STRATEGIES)
        check_int(self.split_every, "split_every", minimum=2)
        if self.callback is not None and not callable(self.callback):
            raise InvalidParameterError(f"callback={self.callback!r} must be callable")
        # k-means|| is a distributed pass over all the data: here it is k-means++
        return check_init(self.init, self.n_clusters, n_channels, INIT_METHODS)

    def _n_init(self, init_array: np.ndarray | None) -> int:
        if init_array is not None:
            return 1
        if self.n_init == "auto":
            return 3 if self.init == "random" else 1
        return int(self.n_init)

    def _init_size(self) -> int:
        if self.init_size is not None:
            size = int(self.init_size)
        else:
            size = 3 * int(self.batch_size)
        return max(size, 3 * int(self.n_clusters))

    def _resolve_strategy(self, data: Data, weights: Any) -> str:
        if self.strategy != "histogram":
            return "pixels"
        if histogram_bits(data.array.dtype, data.n_channels) is None:
            raise InvalidParameterError(
                f"strategy='histogram' needs unsigned integer data of at most 24 bits per "
                f"pixel (e.g. uint8 RGB); got dtype={data.array.dtype} with "
                f"{data.n_channels} channels: use strategy='pixels'"
            )
        if weights is not None:
            raise InvalidParameterError(
                "strategy='histogram' does not take sample_weight: use strategy='pixels'"
            )
        return "histogram"

    # ------------------------------------------------------------------ steps

    def _start(self, centers: np.ndarray, batch_size: int, counts: np.ndarray | None = None) -> None:
        """Reset the state of the steps (counts, smoothing, reassignment clock).

        ``counts``: the weight each centre already averages (the samples an
        initialisation fitted it on); zeros by default, as in scikit-learn.
        """
        self.cluster_centers_ = np.array(centers, dtype=np.float64)
        self._counts = np.zeros(len(centers), dtype=np.float64) if counts is None else np.array(counts, np.float64)
        self._batch_size = int(batch_size)
        self._n_since_last_reassign = 0
        self._ewa_inertia: float | None = None
        self._ewa_inertia_min: float | None = None
        self._no_improvement = 0

    def _random_reassign(self) -> bool:
        """Whether this step reassigns small clusters (scikit-learn's clock)."""
        self._n_since_last_reassign += self._batch_size
        if (self._counts == 0).any() or self._n_since_last_reassign >= 10 * self.n_clusters:
            self._n_since_last_reassign = 0
            return True
        return False

    def _step(self, batch: _Batch, rng: np.random.Generator) -> tuple[float, float, float]:
        """One mini-batch update of the centres in place.

        Returns the batch inertia (before the update), the batch weight and
        the summed squared change of the centres.
        """
        centers = self.cluster_centers_
        X = batch.X
        w = batch.w
        sums, bw, inertia = kernels.partial_sums(X, centers, w)
        old = centers.copy()
        hit = bw > 0
        counts = self._counts
        new_counts = counts[hit] + bw[hit]
        centers[hit] = (centers[hit] * counts[hit, None] + sums[hit]) / new_counts[:, None]
        counts[hit] = new_counts
        if self._random_reassign() and self.reassignment_ratio > 0:
            self._reassign(batch, rng)
        shift = float(((centers - old) ** 2).sum())
        return float(inertia), float(bw.sum()), shift

    def _reassign(self, batch: _Batch, rng: np.random.Generator) -> None:
        """Move clusters of very small weight to random batch points."""
        counts = self._counts
        to_reassign = counts < float(self.reassignment_ratio) * counts.max()
        n_batch = len(batch)
        if to_reassign.sum() > 0.5 * n_batch:
            keep = np.argsort(counts, kind="stable")[int(0.5 * n_batch) :]
            to_reassign[keep] = False
        if to_reassign.all():
            to_reassign[int(np.argmax(counts))] = False
        n = int(to_reassign.sum())
        if not n:
            return
        if batch.w is None:
            rows = rng.choice(n_batch, size=n, replace=False)
        else:
            positive = np.flatnonzero(batch.w > 0)
            if positive.shape[0] < n:
                return
            p = batch.w[positive] / batch.w[positive].sum()
            rows = positive[rng.choice(positive.shape[0], size=n, replace=False, p=p)]
        logger.debug("reassigning %d cluster centre(s)", n)
        self.cluster_centers_[to_reassign] = batch.X[rows]
        counts[to_reassign] = counts[~to_reassign].min()

    def _converged(self, step: int, n_samples: int, shift: float, batch_inertia: float, tol: float) -> bool:
        """scikit-learn's early stopping on the smoothed inertia and the centre change."""
        if step == 1:
            # the first batch inertia is that of the initial centres
            return False
        window = min(n_samples, _EWA_MAX_SAMPLES)
        alpha = min(1.0, self._batch_size * 2.0 / (window + 1))
        if self._ewa_inertia is None:
            self._ewa_inertia = batch_inertia
        else:
            self._ewa_inertia = self._ewa_inertia * (1 - alpha) + batch_inertia * alpha
        if tol > 0.0 and shift <= tol:
            logger.info("converged (small centre change) at step %d", step)
            return True
        if self._ewa_inertia_min is None or self._ewa_inertia < self._ewa_inertia_min:
            self._no_improvement = 0
            self._ewa_inertia_min = self._ewa_inertia
        else:
            self._no_improvement += 1
        if self.max_no_improvement is not None and self._no_improvement >= self.max_no_improvement:
            logger.info("converged (no improvement of the smoothed inertia) at step %d", step)
            return True
        return False

    # ------------------------------------------------------------------ init

    def _initial_centers(
        self, pool: _Batch, init_array: np.ndarray | None, rng: np.random.Generator,
        counted: ColourHistogram | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Best of ``n_init`` initialisations on the head of ``pool``, judged on the next samples.

        Run ``i`` seeds on samples ``[i * init_size, (i + 1) * init_size)``; the
        ``_VALID_PIXELS`` samples after the last run's pick the best.
        """
        if init_array is not None:
            return init_array.copy(), None
        k = int(self.n_clusters)
        n_init = self._n_init(init_array)
        if self.refine and self._colours_apply(pool):
            return self._search_init(pool, n_init, rng, counted)
        size = self._init_size()
        X = np.asarray(pool.X, dtype=np.float64)
        w = np.ones(len(pool)) if pool.w is None else np.asarray(pool.w, dtype=np.float64)
        valid = slice(n_init * size, n_init * size + _VALID_PIXELS)
        best, best_inertia = None, np.inf
        for run in range(n_init):
            sl = slice(run * size, (run + 1) * size)
            Xi, wi = X[sl], w[sl]
            if wi.sum() <= 0:
                Xi, wi = X, w
            if self.init == "random":
                centers = random_init(Xi, wi, k, rng)
            else:
                centers = kmeans_plusplus(Xi, wi, k, rng)
            if n_init == 1:
                return centers, None
            inertia = kernels.partial_sums(X[valid], centers, w[valid])[2]
            logger.debug("init %d/%d: validation inertia %.6g", run + 1, n_init, inertia)
            if inertia < best_inertia:
                best, best_inertia = centers, inertia
        assert best is not None
        return best, None

    @staticmethod
    def _colours_apply(batch: _Batch) -> bool:
        """Whether samples can be counted as colours: unweighted unsigned data of at most 24 bits."""
        return batch.w is None and histogram_bits(batch.X.dtype, batch.X.shape[1]) is not None

    def _search_init(
        self, pool: _Batch, n_init: int, rng: np.random.Generator, counted: ColourHistogram | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The coarse-to-fine search of :class:`KMeans` on the colours of (the head of) ``pool``.

        The samples are counted (a histogram of at most a round of samples),
        then :func:`bigquant.cluster.search.search` runs ``4 * n_init`` chains
        on it (k-means++, Lloyd and swap moves on coarse colours, the best
        ``2 * n_init`` to Lloyd's fixed point on the sampled colours); on few colours, ``n_init`` runs of k-means++ and
        Lloyd on them. The centres are a Lloyd fixed point of the sample.
        """
        k = int(self.n_clusters)
        size = len(pool) if self.init_size is None else min(len(pool), self._init_size())
        if counted is not None and size == len(pool):
            hist = counted
        else:
            hist = colour_histogram(np.ascontiguousarray(pool.X[:size]))
        if hist.n_colours <= k:
            return random_init(hist.colours, hist.counts, k, rng), None
        points = hist.points()
        tol = _REFINE_TOL * float(np.mean(points.moments()[2]))
        seeder = random_init if self.init == "random" else kmeans_plusplus
        if uses_coarse_search(hist):
            found = search(hist, k, n_chains=_SEARCH_CHAINS * n_init, tol=tol, max_iter=_REFINE_MAX_ITER,
                           rng=rng, seeder=seeder, n_exact=_SEARCH_EXACT * n_init)
            if found.fine is not None:
                logger.info("init: coarse search on %d sampled colours, sample inertia %.6g",
                            hist.n_colours, found.fine.inertia)
                return found.fine.centers, _weights_of(hist, found.fine.labels, k)
            starts = [found.start]
        else:
            starts = [seeder(hist.colours.astype(np.float64), hist.counts.astype(np.float64), k, rng)
                      for _ in range(n_init)]
        best = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for start in starts:
                result = lloyd(points, start, max_iter=_REFINE_MAX_ITER, tol=tol)
                if best is None or result.inertia < best.inertia:
                    best = result
        assert best is not None
        logger.info("init: Lloyd on %d sampled colours, sample inertia %.6g", hist.n_colours, best.inertia)
        return best.centers, _weights_of(hist, best.labels, k)

    @staticmethod
    def _check_batch(batch: _Batch) -> None:
        if batch.X.dtype.kind == "f" and not np.isfinite(batch.X).all():
            raise InvalidInputError("X contains NaN or infinity")
        if batch.w is not None:
            if not np.isfinite(batch.w).all() or (batch.w < 0).any():
                raise InvalidInputError("sample_weight must be finite and non-negative")

    @staticmethod
    def _variance(batch: _Batch) -> np.ndarray:
        """Weighted per-channel variance of a sample."""
        X = np.asarray(batch.X, dtype=np.float64)
        w = np.ones(len(batch)) if batch.w is None else np.asarray(batch.w, dtype=np.float64)
        total = w.sum()
        if total <= 0:
            return np.zeros(X.shape[1])
        mean = (w @ X) / total
        return (w @ (X - mean) ** 2) / total

    # ------------------------------------------------------------------ fit

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MiniBatchKMeans:
        """Compute the centres from random mini-batches of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_channels) or (height, width, n_channels)
            numpy or dask array of integer or float data. Dask arrays are read
            only where the samples fall (plus one final pass for ``inertia_``
            when ``compute_labels=True``).
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or (height, width), default=None
            Weights of the samples: samples are drawn uniformly and weighted.

        Returns
        -------
        self : MiniBatchKMeans
        """
        data = check_data(X)
        init_array = self._check_params(data.n_channels)
        weights = check_sample_weight(sample_weight, data)
        strategy = self._resolve_strategy(data, weights)
        rng = check_random_state(self.random_state)
        sample_rng, init_rng, step_rng, refine_rng = rng.spawn(4)

        histogram: ColourHistogram | None = None
        if strategy == "histogram":
            histogram = colour_histogram(data.array, split_every=self.split_every)
            if histogram.n_colours <= self.n_clusters:
                self._fit_few_colours(data, histogram)
                centers = self.cluster_centers_
                self._start(centers, int(self.batch_size))
                self._random_state = step_rng
                self.n_steps_ = 0
                self.n_samples_fetched_ = 0
                return self
            sampler: Any = _ColourSampler(histogram)
        else:
            sampler = _PixelSampler(data, weights)
        n_samples = sampler.n_samples
        batch_size = int(self.batch_size)
        n_steps = max(1, int(self.max_iter) * n_samples // batch_size)
        if self.max_steps is not None:
            n_steps = min(n_steps, int(self.max_steps))

        # the first round also seeds the centres, judges the n_init runs and scales tol
        n_init = self._n_init(init_array)
        colours = self.refine and weights is None and histogram_bits(data.array.dtype, data.n_channels) is not None
        # counted samples cost at most their distinct colours: a round is 2**20 samples
        # whatever the size of the data (drawn with replacement), the refinement uses up to 2**20
        self._full_rounds = colours
        round_cap = _ROUND_PIXELS if colours else max(n_samples, batch_size)
        first = max(
            min(_ROUND_PIXELS, n_steps * batch_size, round_cap),
            n_init * self._init_size() + (_VALID_PIXELS if n_init > 1 else 0),
        )
        pool = sampler.draw(first, sample_rng)
        self._check_batch(pool)
        if pool.w is not None and pool.w.sum() <= 0:
            raise InvalidInputError("sample_weight is zero on every sample drawn")
        # unweighted samples of 8-bit-like data are counted once: the search, the
        # variance and (when the steps need no other round) the refinement use the counts
        counted = colour_histogram(np.ascontiguousarray(pool.X)) if colours else None
        variance = counted.points().moments()[2] if counted is not None else self._variance(pool)
        centers, counts = self._initial_centers(pool, init_array, init_rng, counted)
        if init_array is None and self._fit_few_values(data, weights, pool, centers, strategy, step_rng):
            return self
        self._start(centers, batch_size, counts)
        seen = [pool]
        tol = float(self.tol) * float(np.mean(variance))
        step = self._run(pool, seen, sampler, n_steps, n_samples, tol, sample_rng, step_rng)
        if self.refine:
            self._refine(seen, n_samples, variance, refine_rng, counted)

        self._random_state = step_rng  # partial_fit may continue from here
        self.strategy_ = strategy
        self.histogram_ = histogram
        self.n_steps_ = step
        self.n_iter_ = int(math.ceil(step * batch_size / n_samples))
        self.n_samples_fetched_ = sum(len(p) for p in seen)
        self.n_features_in_ = data.n_channels
        self._dtype_in = data.array.dtype
        self._lut = None
        self._lut_source = histogram  # the colour -> label table is built on first use
        self._finish(data, weights, histogram)
        n_distinct = np.unique(self.cluster_centers_, axis=0).shape[0]
        if n_distinct < int(self.n_clusters):  # e.g. a value the first round missed: as KMeans says it
            warn_few_clusters(n_distinct, int(self.n_clusters))
        return self

    def _fit_few_values(
        self, data: Data, weights: Any, pool: _Batch, centers: np.ndarray, strategy: str,
        rng: np.random.Generator,
    ) -> bool:
        """The fit at once when the first round holds fewer distinct values than ``n_clusters``.

        The initialisation then repeats a centre (it found every value of the
        sample), and when every sample sits on a centre, neither the steps nor
        the refinement would move one: the centres are the sampled values and
        copies of the most frequent, as :class:`KMeans` and scikit-learn give
        them. The final pass (``compute_labels``) checks that every sample of
        the data sits on one; if not (a value the sample missed), returns False
        and the mini-batch run goes on as usual.
        """
        k = int(self.n_clusters)
        if np.unique(centers, axis=0).shape[0] >= k:
            return False
        _, weight, inertia = kernels.partial_sums(pool.X, centers, pool.w)
        if inertia != 0.0:
            return False
        used = weight > 0
        self._start(repeat_heaviest(centers[used], weight[used], k), int(self.batch_size))
        self._random_state = rng
        self.strategy_ = strategy
        self.histogram_ = None
        self.n_steps_ = 0
        self.n_iter_ = 1
        self.n_refine_iter_ = 0
        self.n_samples_fetched_ = len(pool)
        self.n_features_in_ = data.n_channels
        self._dtype_in = data.array.dtype
        self._lut = None
        self._lut_source = None
        self._finish(data, weights, None)
        if self.compute_labels and self.inertia_ != 0.0:
            logger.info("%d distinct values sampled, but not every sample of the data is one: mini-batch steps",
                        int(used.sum()))
            return False
        warn_few_clusters(int(used.sum()), k)
        return True

    def _run(
        self,
        pool: _Batch,
        seen: list[_Batch],
        sampler: Any,
        n_steps: int,
        n_samples: int,
        tol: float,
        sample_rng: np.random.Generator,
        step_rng: np.random.Generator,
    ) -> int:
        """The mini-batch steps, a round of batches per fetch. Returns the step count.

        ``pool`` is the first round; every round fetched is appended to ``seen``.
        """
        batch_size = self._batch_size
        step = 0
        while True:
            n_batches = max(1, min(len(pool) // batch_size, n_steps - step))
            for s in range(n_batches):
                batch = pool.take(slice(s * batch_size, (s + 1) * batch_size))
                inertia, weight, shift = self._step(batch, step_rng)
                step += 1
                per_weight = inertia / weight if weight > 0 else 0.0
                if self.callback is not None:
                    self.callback(step, per_weight, shift)
                if self._converged(step, n_samples, shift, per_weight, tol):
                    n_steps = step
                    break
            if step >= n_steps:
                break
            n_next = min(min(_ROUND_PIXELS, n_samples) // batch_size, n_steps - step) * batch_size
            pool = sampler.draw(max(n_next, batch_size), sample_rng)
            self._check_batch(pool)
            seen.append(pool)
        logger.info(
            "mini-batch k-means: %d steps of %d samples, %d samples fetched, smoothed batch inertia %.6g",
            step, batch_size, sum(len(p) for p in seen),
            self._ewa_inertia if self._ewa_inertia is not None else float("nan"),
        )
        return step

    def _refine(
        self, seen: list[_Batch], n_samples: int, variance: np.ndarray, rng: np.random.Generator,
        counted: ColourHistogram | None = None,
    ) -> None:
        """Lloyd's iteration on (at most ``_REFINE_PIXELS`` of) the samples fetched."""
        X = np.concatenate([p.X for p in seen]) if len(seen) > 1 else seen[0].X
        w = None if seen[0].w is None else np.concatenate([p.w for p in seen]).astype(np.float64)
        cap = _REFINE_PIXELS if self._full_rounds else min(_REFINE_PIXELS, max(n_samples, _VALID_PIXELS))
        if X.shape[0] > cap:
            keep = np.sort(rng.choice(X.shape[0], size=cap, replace=False))
            X = X[keep]
            w = None if w is None else w[keep]
        elif len(seen) == 1 and counted is not None:
            X = None  # the first round only: already counted
        if X is None:
            points: InMemoryPoints = counted.points()
        elif w is None and histogram_bits(X.dtype, X.shape[1]) is not None:
            # counted colours: the same Lloyd run as on the samples, on fewer points
            points = colour_histogram(np.ascontiguousarray(X)).points()
        else:
            points = BoundedPoints(X, np.ones(X.shape[0]) if w is None else w, n_parts=1)
        tol = _REFINE_TOL * float(np.mean(variance))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = lloyd(points, self.cluster_centers_, max_iter=_REFINE_MAX_ITER, tol=tol)
        logger.info(
            "refinement: %d Lloyd iterations on %d samples, sample inertia %.6g",
            result.n_iter, sum(len(p) for p in seen) if X is None else X.shape[0], result.inertia,
        )
        self.cluster_centers_ = result.centers
        self.n_refine_iter_ = result.n_iter

    def _finish(self, data: Data, weights: Any, histogram: ColourHistogram | None) -> None:
        """``inertia_`` and ``labels_``: one exact pass, or the smoothed estimate."""
        centers = self.cluster_centers_
        if not self.compute_labels:
            total = float(data.n_samples)
            if weights is not None:
                total = float(weights.sum().compute() if data.is_dask else weights.sum())
            ewa = self._ewa_inertia if self._ewa_inertia is not None else 0.0
            self.inertia_ = float(ewa * total)
            if hasattr(self, "labels_"):
                del self.labels_
            return
        if histogram is not None:
            inertia = histogram.points().partial_sums(centers)[2]
        elif data.is_dask:
            inertia = DaskPoints(data.array, weights, split_every=self.split_every).partial_sums(centers)[2]
        else:
            w = None if weights is None else np.ascontiguousarray(weights, dtype=np.float64).reshape(-1)
            inertia = InMemoryPoints(data.flat(), w).partial_sums(centers)[2]
        if not np.isfinite(inertia):
            raise InvalidInputError("X contains NaN or infinity")
        self.inertia_ = float(inertia)
        self.labels_ = self._labels(data)

    # ------------------------------------------------------------------ streaming

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MiniBatchKMeans:
        """Update the centres with one mini-batch: all the samples of ``X``.

        The first call initialises the centres on (a sample of) ``X``. Dask
        input is computed: pass blocks, e.g. ``for b in arr.blocks: ...``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_channels) or (height, width, n_channels)
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or (height, width), default=None

        Returns
        -------
        self : MiniBatchKMeans
            ``labels_`` and ``inertia_`` are those of ``X`` after the update.
        """
        if isinstance(X, da.Array):
            X = X.compute()
        if isinstance(sample_weight, da.Array):
            sample_weight = sample_weight.compute()
        data = check_data(X)
        weights = check_sample_weight(sample_weight, data)
        flat = data.flat()
        w = None if weights is None else np.ascontiguousarray(weights, dtype=np.float64).reshape(-1)
        fitted = hasattr(self, "cluster_centers_")
        if fitted:
            if data.n_channels != self.n_features_in_:
                raise InvalidInputError(
                    f"X has {data.n_channels} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input (channels)"
                )
        else:
            init_array = self._check_params(data.n_channels)
            rng = check_random_state(self.random_state)
            self._random_state, init_rng = rng.spawn(2)
            n_init = self._n_init(init_array)
            pool = _PixelSampler(data, weights).draw(
                n_init * self._init_size() + (_VALID_PIXELS if n_init > 1 else 0), init_rng
            )
            centers, _ = self._initial_centers(pool, init_array, init_rng)
            self._start(centers, min(int(self.batch_size), data.n_samples))
            self.n_features_in_ = data.n_channels
            self.n_steps_ = 0
            self.strategy_ = "pixels"
            self.histogram_ = None
            self._lut = None
            self._lut_source = None
        self._dtype_in = data.array.dtype
        batch = _Batch(flat, w)
        self._check_batch(batch)
        self._step(batch, self._random_state)
        self.n_steps_ += 1
        labels, dist = kernels.assign_labels(flat, self.cluster_centers_, label_dtype(self.n_clusters))
        self.inertia_ = float(dist @ w) if w is not None else float(math.fsum(dist))
        self.labels_ = labels.reshape(data.spatial_shape)
        return self
