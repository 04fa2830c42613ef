"""Finding a good starting point for Lloyd's iteration on a large colour histogram.

Lloyd's iteration ends in the local minimum nearest its start, so the start
decides the quality of the palette. On a histogram of many colours the search
runs on *coarse* colour sets (colours merged by dropping low bits, each bin at
the mean colour of its pixels; see :meth:`ColourHistogram.coarse`), where every
step is cheap:

a few independent chains run in parallel, each: k-means++ seeds and Lloyd's
iteration on 5-bit colours, then swap moves there
(:func:`bigquant.kernels.improve_by_swaps`: move the centre whose removal
costs least to where k-means++ would put a new one, keep the move when a few
Lloyd iterations then end lower), then Lloyd's iteration (and optionally more
swap moves) on 6-bit colours. The rankings of coarse solutions and exact
ones agree only roughly, so on histograms of up to a few hundred thousand
colours the best chains also run the exact Lloyd iteration (one compiled
call each; for large ``k`` x colours there is one chain per initialisation,
see :func:`default_chains`) and the lowest exact inertia wins; on larger ones the best 6-bit
chain wins and the caller runs the exact iteration. Either way the result is
an exact fixed point of the full problem.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bigquant import kernels
from bigquant.cluster.histogram import ColourHistogram
from bigquant.cluster.init import local_trials
from bigquant.cluster.lloyd import LloydResult
from bigquant.cluster.points import BoundedPoints, _thread_pool, n_threads

__all__ = ["COARSE_MIN_COLOURS", "SearchResult", "default_chains", "prepare_search", "search", "uses_coarse_search"]

logger = logging.getLogger(__name__)

#: histograms with more distinct colours than this are searched on coarse colours
COARSE_MIN_COLOURS = 1 << 14
#: search chains per initialisation of a single fit
CHAINS_PER_INIT = 2
#: bits dropped per channel for the chains (8-bit -> 5-bit colours)
SEARCH_DROP_BITS = 3
#: bits dropped per channel to refine the best chain (8-bit -> 6-bit colours)
REFINE_DROP_BITS = 2
#: swap moves tried per chain, at most
N_SWAPS = 8
#: a chain stops after this many rejected swap moves in a row
SWAP_PATIENCE = 2
#: Lloyd iterations that judge a swap move (a few tell a better basin)
SWAP_ITER = 5
#: the coarse runs stop earlier: they only look for the right basin
COARSE_TOL_FACTOR = 10.0
#: histograms with at most this many colours run the best chains to the exact fixed point
FINE_IN_CHAINS_MAX_COLOURS = 1 << 18

#: histograms whose chains run to the exact fixed point (at most
#: ``FINE_IN_CHAINS_MAX_COLOURS`` colours) with more centre-colour pairs (k x distinct
#: colours) than this search with one chain per initialisation, not ``CHAINS_PER_INIT``:
#: the exact runs are most of a small image's fit, and on the README's five photos at
#: k = 256 (11-29 M pairs) the palettes' PSNR changed by -0.017 to 0 dB (libimagequant
#: stays 0.19-0.49 dB below)
EXACT_ALL_CHAINS_MAX_PAIRS = 1 << 23

#: draws initial centres from a weighted point set: (points, weights, k, rng) -> centres
Seeder = Callable[[np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]


def uses_coarse_search(histogram: ColourHistogram) -> bool:
    """Whether ``histogram`` is large enough (and integer enough) for the coarse search."""
    return histogram.n_colours > COARSE_MIN_COLOURS and histogram.bits > SEARCH_DROP_BITS


@dataclass
class SearchResult:
    """Outcome of :func:`search`.

    ``start`` are the centres the kept chain started its exact Lloyd run
    from; ``fine`` is that run (``None`` when the histogram is too large for
    the search to run it: the caller then runs Lloyd from ``start``) and
    ``shift`` its last centre shift.
    """

    start: np.ndarray
    fine: LloydResult | None
    shift: float


def _chain(
    histogram: ColourHistogram, k: int, seed: int, tol: float, max_iter: int, seeder: Seeder, polish: int,
    swap_iter: int,
) -> tuple[float, np.ndarray]:
    """One search chain on coarse colours; returns its 6-bit inertia and centres.

    k-means++ seeds, Lloyd and swap moves on 5-bit colours, then Lloyd (and
    ``polish`` more swap trials) on 6-bit colours.
    """
    # compiled runs only (BoundedPoints.run): nothing here warns from a worker thread
    coarse = histogram.coarse(SEARCH_DROP_BITS, n_parts=1)
    rng = np.random.default_rng(seed)
    coarse_tol = COARSE_TOL_FACTOR * tol
    n_trials = local_trials(k)
    # few thousand points: full scans beat bounds
    centers, inertia = kernels.lloyd_dense(coarse.X, kernels.as_columns(coarse.X), coarse.weights,
                                            seeder(coarse.X, coarse.weights, k, rng), max_iter, coarse_tol)
    centers, _ = kernels.improve_by_swaps(coarse.X, coarse.weights, centers, inertia,
                                           rng.random((N_SWAPS, n_trials)), swap_iter, coarse_tol, SWAP_PATIENCE)
    refine = histogram.coarse(REFINE_DROP_BITS, n_parts=1)
    centers, inertia, *_ = refine.run(centers, max_iter, tol)
    if polish:
        centers, inertia = kernels.improve_by_swaps(refine.X, refine.weights, centers, inertia,
                                                     rng.random((polish, n_trials)), swap_iter, tol, SWAP_PATIENCE)
    return float(inertia), centers


def _exact_run(histogram: ColourHistogram, centers: np.ndarray, tol: float, max_iter: int) -> tuple[LloydResult, float]:
    """Lloyd's iteration on every colour, in one compiled call, and its last centre shift."""
    exact = BoundedPoints(histogram.colours, histogram.counts, n_parts=1)
    end, inertia, n_iter, converged, shift, labels, _ = exact.run(centers, max_iter, tol)
    return LloydResult(end, inertia, n_iter, converged, labels), shift


def search(
    histogram: ColourHistogram,
    k: int,
    *,
    n_chains: int,
    tol: float,
    max_iter: int,
    rng: np.random.Generator,
    seeder: Seeder,
    parallel: bool = True,
    polish: int = 0,
    n_exact: int | None = None,
    swap_iter: int = SWAP_ITER,
) -> SearchResult:
    """Search for a good Lloyd run on a large histogram (see the module docstring).

    Parameters
    ----------
    histogram : ColourHistogram
        A histogram for which :func:`uses_coarse_search` holds.
    k : int
        Number of clusters.
    n_chains : int
        Independent search chains (a multiple of the thread count uses them all).
    tol : float
        Absolute tolerance of the exact run; coarse runs use ``COARSE_TOL_FACTOR`` times it.
    max_iter : int
        Maximum Lloyd iterations per run.
    rng : numpy.random.Generator
        Draws one seed per chain, so the result does not depend on the threads.
    seeder : callable
        Initial centres of a chain, e.g. :func:`bigquant.cluster.init.kmeans_plusplus`.
    parallel : bool, default=True
        Run the chains on the shared thread pool (``False`` when the caller
        already runs several searches at once).
    polish : int, default=0
        Swap trials on the 6-bit colours at the end of each chain.
    n_exact : int, default=None
        How many chains (those of lowest 6-bit inertia) run to the exact
        fixed point; ``None``: all of them.
    swap_iter : int, default=SWAP_ITER
        Lloyd iterations that judge each swap move.

    Returns
    -------
    SearchResult
        With up to ``FINE_IN_CHAINS_MAX_COLOURS`` colours the kept run is the
        lowest exact fixed point; above, the chain with the lowest 6-bit
        inertia is kept and ``fine`` is ``None``.
    """
    seeds = [int(s) for s in rng.integers(0, 2**63 - 1, size=n_chains)]
    prepare_search(histogram)  # before the threads
    use_pool = parallel and n_threads() > 1

    def each(func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(_thread_pool().map(func, items)) if use_pool and len(items) > 1 else [func(x) for x in items]

    exact_here = histogram.n_colours <= FINE_IN_CHAINS_MAX_COLOURS
    every_chain = exact_here and (n_exact is None or n_exact >= n_chains)

    def run_chain(seed: int) -> tuple[float, np.ndarray, tuple[LloydResult, float] | None]:
        inertia, centers = _chain(histogram, k, seed, tol, max_iter, seeder, polish, swap_iter)
        # when every chain runs exactly, it does so in the same task: no second round
        return inertia, centers, _exact_run(histogram, centers, tol, max_iter) if every_chain else None

    chains = each(run_chain, seeds)
    # lowest first; equal inertias keep the chain order: deterministic
    ranked = sorted(range(n_chains), key=lambda i: chains[i][0])
    if not exact_here:
        logger.info("coarse search: best of %d chains, 6-bit inertia %.6g", n_chains, chains[ranked[0]][0])
        return SearchResult(chains[ranked[0]][1], None, np.nan)
    finalists = ranked if every_chain else ranked[: max(1, int(n_exact))]
    exact = [chains[i][2] for i in finalists] if every_chain else each(
        lambda i: _exact_run(histogram, chains[i][1], tol, max_iter), finalists)
    best = min(range(len(finalists)), key=lambda j: exact[j][0].inertia)  # first of equals
    logger.info("coarse search: best of %d chains, inertia %.6g", n_chains, exact[best][0].inertia)
    return SearchResult(chains[finalists[best]][1], *exact[best])


def prepare_search(histogram: ColourHistogram) -> None:
    """Build (and cache in ``histogram``) the coarse colour sets the search runs on."""
    histogram.coarse_colours(REFINE_DROP_BITS)
    histogram.coarse_colours(SEARCH_DROP_BITS)


def default_chains(n_init: int, k: int | None = None, n_colours: int | None = None) -> int:
    """Search chains for ``n_init`` initialisations of a single fit of ``k`` colours to ``n_colours``.

    A fixed number, not one per core: the same ``random_state`` gives the
    same palette on every machine.  ``CHAINS_PER_INIT`` per initialisation;
    one when every chain would run the exact Lloyd iteration on more than
    ``EXACT_ALL_CHAINS_MAX_PAIRS`` centre-colour pairs.
    """
    if (k is not None and n_colours is not None and int(n_colours) <= FINE_IN_CHAINS_MAX_COLOURS
            and int(k) * int(n_colours) > EXACT_ALL_CHAINS_MAX_PAIRS):
        return int(n_init)
    return CHAINS_PER_INIT * int(n_init)
