"""scikit-learn-style k-means estimators over numpy and dask arrays."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np

from bigquant import tasks
from bigquant._typing import INIT_METHODS, STRATEGIES
from bigquant.cluster.allocator import tune_if_asked
from bigquant.cluster.base import KMeansBase, warn_few_clusters
from bigquant.cluster.checkpoint import Checkpoint
from bigquant.cluster.cells import CellGrid
from bigquant.cluster.grid import (
    GRID_MAX_BITS,
    Finished,
    LastPass,
    deferral,
    finish_on_pixels,
    grid_bits,
    search_cells,
    value_grid,
)
from bigquant.cluster.histogram import ColourHistogram, colour_histogram, histogram_bits
from bigquant.cluster.init import (
    init_sample_size,
    kmeans_parallel,
    kmeans_plusplus,
    random_init,
)
from bigquant.cluster.lloyd import (
    IterationCallback,
    LloydResult,
    lloyd,
    warn_not_converged,
)
from bigquant.cluster.points import BoundedPoints, DaskPoints, InMemoryPoints, PointSet
from bigquant.cluster.resources import memory_limit
from bigquant.cluster.scheduler import active_client, phase
from bigquant.cluster.search import default_chains, search, uses_coarse_search
from bigquant.cluster.validation import (
    Data,
    check_choice,
    check_data,
    check_float,
    check_init,
    check_int,
    check_mask,
    check_random_state,
    check_sample_weight,
)
from bigquant.errors import (
    BigquantWarning,
    InvalidInputError,
    InvalidParameterError,
)

__all__ = ["KMeans"]

logger = logging.getLogger(__name__)

def _check_total_weight(total: float) -> None:
    """A fit needs some weight: a mask (or weights) of zeros everywhere leaves nothing to fit."""
    if not total > 0:
        raise InvalidInputError("every sample is masked: sample_weight is False (or 0) everywhere")


def _as_state(result: LloydResult | None) -> dict[str, Any] | None:
    """A Lloyd result as checkpoint state."""
    if result is None:
        return None
    return {"centers": result.centers, "inertia": result.inertia, "n_iter": result.n_iter,
            "converged": result.converged}


def _memory_budget() -> int:
    """Bytes of memory the data may take when persisted: the cluster's, or what this process may use.

    This process's share is :func:`bigquant.cluster.resources.memory_limit`
    (cgroup limits included), 0 when unknown (then nothing is persisted by default).
    """
    client = active_client()
    if client is not None:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        total = sum(int(w.get("memory_limit") or 0) for w in workers.values())
        if total:
            return total
    return memory_limit() or 0


class KMeans(KMeansBase):
    """K-means clustering (Lloyd) of pixels or samples, in memory or on Dask.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters (palette size).
    init : {"k-means++", "k-means||", "random"} or ndarray of shape (n_clusters, n_channels), \
default="k-means++"
        Initialisation. ``"k-means++"`` is weighted by colour counts or
        ``sample_weight`` and, for large pixel data, runs on a uniform sample;
        ``"k-means||"`` (Bahmani et al. 2012) oversamples in a few distributed
        passes (pixel strategy on dask data; elsewhere it is k-means++).
    n_init : int, default=1
        Number of initialisations; the run with the lowest inertia is kept.
    max_iter : int, default=300
        Maximum number of Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence when the summed squared centre shift is at most ``tol``
        times the weighted mean per-channel variance of the data.
    random_state : int, numpy Generator or None, default=None
        Seed; results do not depend on the chunking of the data.
    strategy : {"auto", "histogram", "grid", "pixels", "minibatch"}, default="auto"
        ``"histogram"``: exact Lloyd on the distinct colours weighted by their
        counts (unsigned data of at most 24 bits per pixel, e.g. uint8 RGB);
        ``"grid"``: for other data (uint16, int16, float, 4 or more bands):
        one pass sums the pixels exactly per cell of a coarse grid over the
        value range (:mod:`bigquant.cluster.grid`), a search with Lloyd's
        iteration runs on the cells' means weighted by their counts, and exact
        passes over the pixels finish it (usually one) -- the result is a
        Lloyd fixed point of the pixels within ``tol``, as with ``"pixels"``,
        in two or three passes instead of one per iteration (it takes no
        ``checkpoint``);
        ``"pixels"``: every iteration is one distributed pass over the pixels
        (the exact baseline);
        ``"minibatch"``: :class:`~bigquant.MiniBatchKMeans`. ``"auto"`` picks
        the histogram where it applies, else the grid (up to 20 bands,
        without ``sample_weight`` other than a mask), else pixels.
    persist : {"auto", True, False}, default="auto"
        Pixel strategy on dask data: keep the data in (cluster) memory during
        the iterations. ``"auto"`` persists when it takes at most half of the
        cluster's memory, and otherwise re-reads it from its source each
        iteration (out-of-core).
    split_every : int, default=8
        Fan-in of the tree reductions.
    callback : callable, default=None
        Called after every Lloyd iteration with ``(iteration, inertia, shift)``.
        A callback with a ``limits(max_iter, tol)`` method is first told the
        fit's limits, ``tol`` scaled as the shift is (absolute), so that a
        progress bar can fill towards convergence.
    checkpoint : str or path, default=None
        File where the fit saves its centres and iteration every
        ``checkpoint_every`` iterations. A fit started with an existing
        checkpoint of the same data and parameters resumes from it and reaches
        the same result as an uninterrupted fit; the file is removed when the
        fit completes.
    checkpoint_every : int, default=10
        Iterations between checkpoints.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_channels)
        Centres (float64). When the data hold fewer distinct values than
        ``n_clusters``, every one is a centre and the other centres repeat one
        of them, as in scikit-learn (the fit ends at once, inertia 0, with a
        :class:`~bigquant.errors.FewColoursWarning`, which is a
        :class:`~bigquant.errors.ConvergenceWarning`).
    labels_ : ndarray or dask array
        Label of each sample: shape (n_samples,) for 2-D input and (H, W) for
        an image; numpy for numpy input, lazy dask for dask input.
    inertia_ : float
        Weighted sum of squared distances of the samples to their centre.
    n_iter_ : int
        Lloyd iterations of the kept run on the exact data. For 8-bit
        histograms with many colours, runs are first screened on coarse
        (5- and 6-bit) colour sets; those cheap iterations are not counted.
        For the grid strategy: the exact passes over the pixels. Data of at
        most ``n_clusters`` distinct values take 1 (the histogram puts every
        colour on itself; on pixels, one more for a value too rare for the
        k-means++ sample).
    n_features_in_ : int
        Number of channels seen in ``fit``.
    strategy_ : str
        The strategy used.
    histogram_ : ColourHistogram or None
        The colour histogram, for the histogram strategy.
    band_counts_ : BandCounts
        For the grid strategy only: the pixels counted per band in bins of the
        value grid (:meth:`bigquant.cluster.grid.ValueGrid.band_counts`).

    Examples
    --------
    >>> import numpy as np
    >>> from bigquant import KMeans
    >>> X = np.array([[0, 0, 0], [0, 0, 2], [250, 250, 250], [250, 250, 248]], dtype=np.uint8)
    >>> km = KMeans(n_clusters=2, random_state=0).fit(X)
    >>> np.sort(km.cluster_centers_[:, 2])
    array([  1., 249.])
    >>> float(km.inertia_)
    4.0
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | np.ndarray = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: Any = None,
        strategy: str = "auto",
        persist: str | bool = "auto",
        split_every: int = 8,
        callback: IterationCallback | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.strategy = strategy
        self.persist = persist
        self.split_every = split_every
        self.callback = callback
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    # ------------------------------------------------------------------ checks

    def _check_params(self, n_channels: int) -> np.ndarray | None:
        check_int(self.n_clusters, "n_clusters", minimum=1)
        check_int(self.n_init, "n_init", minimum=1)
        check_int(self.max_iter, "max_iter", minimum=1)
        check_int(self.split_every, "split_every", minimum=2)
        check_int(self.checkpoint_every, "checkpoint_every", minimum=1)
        check_float(self.tol, "tol", minimum=0.0)
        check_choice(self.strategy, "strategy", STRATEGIES)
        if self.persist not in ("auto", True, False):
            raise InvalidParameterError(f"persist={self.persist!r} must be 'auto', True or False")
        if self.callback is not None and not callable(self.callback):
            raise InvalidParameterError(f"callback={self.callback!r} must be callable")
        return check_init(self.init, self.n_clusters, n_channels, INIT_METHODS)

    def _resolve_strategy(self, data: Data, weights: Any) -> str:
        strategy = self.strategy
        bits = histogram_bits(data.array.dtype, data.n_channels)
        if strategy == "auto":
            if bits is not None and weights is None:
                return "histogram"
            if grid_bits(data.array.dtype, data.n_channels) is not None and weights is None:
                return "grid"
            return "pixels"
        if strategy == "grid":
            if grid_bits(data.array.dtype, data.n_channels) is None:
                raise InvalidParameterError(
                    f"strategy='grid' needs numeric data of at most {GRID_MAX_BITS} channels; got "
                    f"dtype={data.array.dtype} with {data.n_channels} channels: use strategy='pixels'"
                )
            if weights is not None:
                raise InvalidParameterError(
                    "strategy='grid' takes a boolean mask as sample_weight, not weights: use strategy='pixels'"
                )
        if strategy == "histogram":
            if bits is None:
                raise InvalidParameterError(
                    f"strategy='histogram' needs unsigned integer data of at most 24 bits per "
                    f"pixel (e.g. uint8 RGB); got dtype={data.array.dtype} with "
                    f"{data.n_channels} channels: use strategy='pixels'"
                )
            if weights is not None:
                raise InvalidParameterError(
                    "strategy='histogram' does not take sample_weight: use strategy='pixels'"
                )
        return strategy

    # ------------------------------------------------------------------ fit

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KMeans:
        """Compute the k-means clustering.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_channels) or (height, width, n_channels)
            numpy or dask array of integer or float data.
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or (height, width), default=None
            Weights of the samples. A boolean array is a mask: samples where it
            is False take no part in the fit and are not counted (8-bit data
            keep the exact histogram strategy).

        Returns
        -------
        self : KMeans
        """
        tune_if_asked()  # the caller's allocator is theirs: only with BIGQUANT_TUNE_MALLOC=1
        data = check_data(X)
        init_array = self._check_params(data.n_channels)
        valid = check_mask(sample_weight, data)
        weights = check_sample_weight(sample_weight, data) if valid is None else None
        strategy = self._resolve_strategy(data, weights)
        if valid is not None and strategy != "histogram":
            weights = valid.astype(np.float32)  # a mask is a weight of 0 or 1
        if strategy == "minibatch":
            return self._fit_minibatch(data, weights)
        rng = check_random_state(self.random_state)
        self._ckpt = self._make_checkpoint(data, strategy, weights is not None or valid is not None)

        if strategy == "grid":
            return self._fit_grid(data, valid, init_array, rng)
        if strategy == "histogram":
            with phase(tasks.HISTOGRAM):
                histogram = colour_histogram(data.array, split_every=self.split_every, valid=valid, octree=True)
            if histogram.n_colours == 0:
                raise InvalidInputError("every sample is masked: sample_weight is False everywhere")
            return self._fit_histogram(data, histogram, init_array, rng)
        with phase(tasks.MOMENTS):
            points, variance = self._pixel_points(data, weights)
        tol = float(self.tol) * float(np.mean(variance))
        self._tell_limits(tol)
        with phase(tasks.LLOYD):
            best = self._best_of_runs(points, init_array, int(self.n_clusters), self._n_init(init_array), tol, rng)
        return self._finish(data, strategy, None, best)

    def fit_histogram(self, histogram: ColourHistogram) -> KMeans:
        """Compute the k-means clustering of the colours of a histogram, weighted by their counts.

        The same fit as :meth:`fit` on the image the histogram counts (same
        ``random_state``, same centres), without reading it again: what a
        sweep over k or one palette for several images fits on.

        Parameters
        ----------
        histogram : ColourHistogram
            Distinct colours and their pixel counts (see
            :func:`bigquant.colour_histogram`).

        Returns
        -------
        self : KMeans
            ``labels_`` are the labels of the histogram's distinct colours.
        """
        tune_if_asked()
        data = check_data(histogram.colours)
        init_array = self._check_params(data.n_channels)
        if histogram.n_colours == 0 or histogram.n_pixels == 0:
            raise InvalidInputError("the histogram counts no pixel: nothing to fit")
        rng = check_random_state(self.random_state)
        self._ckpt = self._make_checkpoint(data, "histogram", True)
        # without its pixel index (labels_ label the colours), sharing its octree and coarse sets
        return self._fit_histogram(data, histogram.sharing(), init_array, rng)

    def _tell_limits(self, tol: float) -> None:
        """Tell a callback with a ``limits`` method the fit's ``max_iter`` and absolute ``tol``."""
        limits = getattr(self.callback, "limits", None)
        if callable(limits):
            limits(int(self.max_iter), float(tol))

    def _n_init(self, init_array: np.ndarray | None) -> int:
        n_init = int(self.n_init)
        if init_array is not None and n_init != 1:
            warnings.warn(
                f"explicit initial centres given: running once instead of n_init={n_init}",
                BigquantWarning,
                stacklevel=3,
            )
            n_init = 1
        return n_init

    def _fit_histogram(
        self, data: Data, histogram: ColourHistogram, init_array: np.ndarray | None, rng: np.random.Generator
    ) -> KMeans:
        """The fit on an exact colour histogram (``data`` is what ``labels_`` label)."""
        k = int(self.n_clusters)
        points: PointSet = histogram.points()
        if histogram.n_colours <= k:
            return self._fit_few_colours(data, histogram)
        _, _, variance = points.moments()
        tol = float(self.tol) * float(np.mean(variance))
        self._tell_limits(tol)
        n_init = self._n_init(init_array)
        if init_array is None and uses_coarse_search(histogram):
            best = self._fit_coarse_to_fine(histogram, points, k, n_init, tol, rng)
        else:
            with phase(tasks.LLOYD):
                best = self._best_of_runs(points, init_array, k, n_init, tol, rng)
        return self._finish(data, "histogram", histogram, best)

    def _finish(self, data: Data, strategy: str, histogram: ColourHistogram | None, best: LloydResult,
                cells: CellGrid | None = None) -> KMeans:
        # labels of the distinct colours, when the last run computed them for these centres
        colour_labels = best.labels if histogram is not None else None
        if self._ckpt is not None:
            self._ckpt.clear()
        n_distinct = np.unique(best.centers, axis=0).shape[0]
        if n_distinct < int(self.n_clusters):
            # fewer distinct points than clusters: every point sits on a centre, the
            # others repeat one (kept, as scikit-learn keeps them)
            warn_few_clusters(n_distinct, int(self.n_clusters))
        return self._set_fitted(data, strategy, histogram, best.centers, best.inertia, best.n_iter, colour_labels,
                                cells=cells)

    def _best_of_runs(
        self,
        points: PointSet,
        init_array: np.ndarray | None,
        k: int,
        n_init: int,
        tol: float,
        rng: np.random.Generator,
    ) -> LloydResult:
        """Run Lloyd ``n_init`` times from fresh initialisations; keep the lowest inertia."""
        cb = self.callback
        ckpt = self._ckpt
        state = ckpt.load() if ckpt is not None else None
        best: LloydResult | None = None
        first_run = 0
        if state is not None and state.get("stage") == "runs":
            first_run = int(state["run"])
            rng.bit_generator.state = state["rng"]
            if state.get("best") is not None:
                b = state["best"]
                best = LloydResult(b["centers"], float(b["inertia"]), int(b["n_iter"]), bool(b["converged"]))
        for run in range(first_run, n_init):
            start_iter = 0
            if state is not None and run == first_run and state.get("centers") is not None:
                centers0, start_iter = state["centers"], int(state["n_iter"])
            elif init_array is not None:
                centers0 = init_array
            else:
                centers0 = self._initial_centers(points, k, rng)
            rng_state = rng.bit_generator.state
            save = None
            if ckpt is not None:
                save = self._saver(ckpt, {"stage": "runs", "run": run, "rng": rng_state, "best": _as_state(best)})
            result = lloyd(points, centers0, max_iter=int(self.max_iter), tol=tol, callback=cb,
                           start_iter=start_iter, on_iteration=save)
            logger.info("run %d/%d: inertia %.6g after %d iterations", run + 1, n_init, result.inertia, result.n_iter)
            if best is None or result.inertia < best.inertia:
                best = result
            if best.inertia == 0.0:
                break  # every point on a centre (fewer distinct points than clusters): nothing to improve
            if ckpt is not None and run + 1 < n_init:
                ckpt.save({"stage": "runs", "run": run + 1, "rng": rng.bit_generator.state,
                           "centers": None, "n_iter": 0, "best": _as_state(best)})
        assert best is not None
        return best

    def _saver(self, ckpt: Checkpoint, base: dict[str, Any]) -> Callable[[int, np.ndarray], None]:
        """An ``on_iteration`` hook saving ``base`` plus the centres every few iterations."""
        every = int(self.checkpoint_every)

        def save(n_iter: int, centers: np.ndarray) -> None:
            if n_iter % every == 0:
                ckpt.save({**base, "centers": centers, "n_iter": n_iter})

        return save

    def _make_checkpoint(self, data: Data, strategy: str, weighted: bool) -> Checkpoint | None:
        if self.checkpoint is None:
            return None
        init = self.init if isinstance(self.init, str) else np.asarray(self.init, dtype=np.float64)
        seed = self.random_state if isinstance(self.random_state, (int, np.integer, type(None))) else repr(self.random_state)
        fingerprint = {
            "estimator": type(self).__name__, "n_clusters": self.n_clusters, "init": init,
            "n_init": self.n_init, "max_iter": self.max_iter, "tol": self.tol, "random_state": seed,
            "strategy": strategy, "shape": list(data.array.shape), "dtype": str(data.array.dtype),
            "weighted": weighted,
            # the data themselves: a dask array's name (e.g. path, size and mtime of its file),
            # a hash of numpy data; a checkpoint of other data of the same shape is not resumed
            "data": data.array.name if data.is_dask else dask.base.tokenize(data.array),
        }
        return Checkpoint(self.checkpoint, int(self.checkpoint_every), fingerprint)

    def _fit_coarse_to_fine(
        self,
        histogram: ColourHistogram,
        points: PointSet,
        k: int,
        n_init: int,
        tol: float,
        rng: np.random.Generator,
    ) -> LloydResult:
        """Search on coarse colours for a good start, then converge on the exact ones.

        See :mod:`bigquant.cluster.search`: ``2 * n_init`` chains of k-means++,
        Lloyd and swap moves on 5-bit colours, refined on 6-bit colours, each
        ending (on histograms of moderate size) with Lloyd's iteration on the
        exact colours (for large k x colours one chain per initialisation:
        :func:`~bigquant.cluster.search.default_chains`); the lowest wins. The result is an exact fixed point of
        the full problem.
        """
        ckpt = self._ckpt
        state = ckpt.load() if ckpt is not None else None
        if state is not None and state.get("stage") == "fine":
            with phase(tasks.LLOYD):
                return lloyd(points, state["centers"], max_iter=int(self.max_iter), tol=tol,
                             callback=self.callback, start_iter=int(state["n_iter"]),
                             on_iteration=self._saver(ckpt, {"stage": "fine"}))
        seeder = random_init if self.init == "random" else kmeans_plusplus
        with phase(tasks.INIT):
            found = search(histogram, k, n_chains=default_chains(n_init, k, histogram.n_colours), tol=tol,
                           max_iter=int(self.max_iter), rng=rng, seeder=seeder)
        if found.fine is not None and self.callback is None and ckpt is None:
            if not found.fine.converged:
                warn_not_converged(int(self.max_iter), found.shift, tol, stacklevel=4)
            return found.fine
        # the same run again, step by step, for the callback or the checkpoints
        save = self._saver(ckpt, {"stage": "fine"}) if ckpt is not None else None
        with phase(tasks.LLOYD):
            return lloyd(points, found.start, max_iter=int(self.max_iter), tol=tol,
                         callback=self.callback, on_iteration=save)

    def _fit_grid(self, data: Data, valid: Any, init_array: np.ndarray | None, rng: np.random.Generator) -> KMeans:
        """Grid strategy (see :mod:`bigquant.cluster.grid`): one grid pass, a search on the cells, pixel passes."""
        k = int(self.n_clusters)
        X = data.array
        with phase(tasks.GRID):
            grid, finite = value_grid(X, valid=valid, split_every=self.split_every)
        if not finite:
            raise InvalidInputError("X contains NaN or infinity")
        if grid.n_pixels == 0:
            raise InvalidInputError("every sample is masked: sample_weight is False everywhere")
        _, _, variance = grid.moments()
        tol = float(self.tol) * float(np.mean(variance))
        self._tell_limits(tol)
        if init_array is not None:
            self._n_init(init_array)  # warns when n_init is not 1
            start = init_array
        elif grid.n_cells >= 2 * k:
            seeder = random_init if self.init == "random" else kmeans_plusplus
            with phase(tasks.INIT):
                start = search_cells(grid, k, n_init=int(self.n_init), tol=tol, max_iter=int(self.max_iter),
                                     rng=rng, seeder=seeder)
        else:
            # too few cells to seed k centres apart: the pixel strategy's own start
            logger.info("grid: %d cells for k=%d, seeding on pixels", grid.n_cells, k)
            start = None
        weights = None
        if valid is not None:
            if data.array.dtype.kind == "f":
                # masked NaN would poison the sums of the pixel passes, weight 0 or not
                X = da.where(valid[..., None], X, 0) if data.is_dask else np.where(np.asarray(valid)[..., None], X, 0)
            weights = valid.astype(np.float32)
        # the Lloyd passes and the labels look the nearest centre up in cells over the exact range
        cells = CellGrid.over(grid.minimum, grid.maximum, k)
        if grid.values is not None:
            # few distinct values: the grid pass counted them exactly, Lloyd's passes run on them
            logger.info("grid: %d distinct values: the fit ends on them, no pass over the pixels",
                        grid.values.shape[0])
            points: PointSet = BoundedPoints(grid.values, grid.value_counts)
        else:
            points = self._grid_pixel_points(X, weights, data.is_dask, cells)
        if start is None:
            start = self._initial_centers(points, k, rng)
        self._ckpt = None  # a grid fit is two or three passes: nothing to resume

        def finish(done: Finished) -> None:
            if not done.converged:
                warn_not_converged(int(self.max_iter), done.shift, tol, stacklevel=4)
            result = LloydResult(done.centers, done.inertia, done.n_pass, done.converged)
            self._finish(data, "grid", None, result, cells)
            self._values = None if grid.values is None else (grid.values, grid.value_counts)
            self.band_counts_ = grid.band_counts()  # per band, what the grid pass counted (a display stretch)

        box = deferral()
        if box is not None and isinstance(points, DaskPoints) and points.weights is None and cells is not None:
            # the write makes the first pass (LastPass.settle finishes the fit): fitted meanwhile with these centres
            box.append(LastPass(points, start, cells, finish, tol=tol, max_iter=int(self.max_iter),
                                callback=self.callback))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # told when settled
                finish(Finished(np.array(start, dtype=np.float64), math.nan, 1, True, 0.0))
            return self
        with phase(tasks.LLOYD):
            finish(finish_on_pixels(points, start, tol=tol, max_iter=int(self.max_iter), callback=self.callback))
        return self

    def value_counts(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The distinct values of the pixels fitted and their pixels, when the grid pass counted them exactly.

        Integer data of at most :data:`bigquant.cluster.grid.DISTINCT_MAX`
        distinct values fitted with the grid strategy: their exact histogram
        (values of shape (n_values, n_channels) as float64, counts), from
        which the error of any palette needs no pass over the pixels; else None.
        """
        self._check_fitted()
        return getattr(self, "_values", None) if self.strategy_ == "grid" else None

    def _grid_pixel_points(self, X: Any, weights: Any, is_dask: bool, cells: CellGrid | None) -> PointSet:
        if not is_dask:
            flat = np.ascontiguousarray(X).reshape(-1, X.shape[-1])
            return InMemoryPoints(flat, None if weights is None else np.ascontiguousarray(weights).reshape(-1),
                                  cells=cells)
        if self.persist is True:
            X, weights = dask.persist(X, weights) if weights is not None else (X.persist(), None)
        return DaskPoints(X, weights, split_every=self.split_every, cells=cells)

    def _pixel_points(self, data: Data, weights: Any) -> tuple[PointSet, np.ndarray]:
        if not data.is_dask:
            points = InMemoryPoints(data.flat(), None if weights is None else np.ascontiguousarray(weights).reshape(-1))
            total, _, variance = points.moments()
            _check_total_weight(total)
            return points, variance
        X = data.array
        if self.persist is True or (self.persist == "auto" and X.nbytes <= 0.5 * _memory_budget()):
            logger.info("persisting %.1f MB of pixels in memory", X.nbytes / 1e6)
            X, weights = dask.persist(X, weights) if weights is not None else (X.persist(), None)
        else:
            logger.info("pixels do not fit in memory: every iteration re-reads them")
        points = DaskPoints(X, weights, split_every=self.split_every)
        total, _, variance, finite, wmin = points.moments_and_checks()
        if not finite:
            raise InvalidInputError("X contains NaN or infinity")
        if weights is not None and wmin < 0:
            raise InvalidInputError("sample_weight must be non-negative; found negative values")
        _check_total_weight(total)
        return points, variance

    def _initial_centers(self, points: PointSet, k: int, rng: np.random.Generator) -> np.ndarray:
        if self.init == "k-means||" and isinstance(points, DaskPoints):
            return kmeans_parallel(points, k, rng)
        sample, weights = points.sample(init_sample_size(k), rng)
        if self.init == "random":
            return random_init(sample, weights, k, rng)
        return kmeans_plusplus(sample, weights, k, rng)

    def _fit_minibatch(self, data: Data, weights: Any) -> KMeans:
        from bigquant.cluster.minibatch import MiniBatchKMeans

        # max_iter is not passed: it counts Lloyd iterations here, passes over the data there
        mb = MiniBatchKMeans(
            self.n_clusters,
            init=self.init,
            n_init=self.n_init,
            random_state=self.random_state,
            split_every=self.split_every,
            callback=self.callback,
        ).fit(data.array, sample_weight=weights)
        for name in ("cluster_centers_", "inertia_", "n_iter_", "n_features_in_", "labels_"):
            setattr(self, name, getattr(mb, name))
        self.strategy_ = "minibatch"
        self.histogram_ = None
        self._palette = None
        self._lut = mb._lut
        self._lut_source = getattr(mb, "_lut_source", None)
        self._dtype_in = data.array.dtype
        return self



