"""Names of bigquant's Dask tasks and phases, in one place.

Every task key bigquant builds starts with :data:`PREFIX` and one of the names
below (then ``-<token>`` and block indices), so the phases read apart where
Dask shows task prefixes: the dashboard's progress panel cuts labels to about
15 characters, and every name here is at most :data:`MAX_LENGTH` long. The
phases of the work (:func:`bigquant.cluster.scheduler.phase`, as
:func:`distributed.span` s) use the same names.

======================  =====================================================
name                    tasks
======================  =====================================================
``bq-read``             read one chunk of the source image
``bq-read-pal``         read a palette image's chunk and expand it to colours
``bq-mask``             the slide-background mask (``mask="auto"``)
``bq-count``            count the colours of one chunk (histogram strategy)
``bq-count-sum``        add the counts of neighbouring chunks
``bq-merge``            merge partial histograms, two at a time
``bq-codes``            the histogram's distinct colours and counts
``bq-moments[-sum]``    per-chunk weighted moments (pixel strategy), and their sum
``bq-range[-sum]``      value range of a few tiles or chunks (grid strategy)
``bq-grid[-sum]``       exact counts and sums per value-grid cell of one chunk, tree-summed
``bq-init[-sum]``       one k-means|| oversampling pass
``bq-lloyd[-sum]``      one Lloyd iteration: per-chunk partial sums, tree-summed
``bq-relocate[-sum]``   points far from their centre, for empty clusters
``bq-mb-gather``        mini-batch sampling: pixels gathered from random tiles
``bq-mb-batch``         mini-batch sampling: one batch
``bq-lut``              the colour -> label lookup table, shipped once
``bq-labels``           nearest-centre labels of one chunk
``bq-transform``        distances to every centre of one chunk
``bq-write``            map and encode one output tile
``bq-sweep``            one k of a sweep
``bq-cost``             SSE / PSNR of a sweep's palettes on the pixels
``bq-fs-slant``         Floyd-Steinberg, pass 1: one slanted tile of the wavefront
``bq-fs-edges``         Floyd-Steinberg: the edge errors a chunk's pass 2 starts from
``bq-fs-labels``        Floyd-Steinberg, pass 2: one chunk re-dithered from its edges
``bq-fs-outcome``       Floyd-Steinberg: pass 1's quality sums and whether every tile was spooled
``bq-dither-grid``      the palette's candidate grid, shared by a dither's chunks
``bq-blue-noise``       blue-noise ordered dithering of one chunk
``bq-space-lut``        the colour -> label table of a palette in OKLab / Lab
``bq-space-labels``     nearest-colour labels in OKLab / Lab of one chunk
``bq-quality``          PSNR and mean Delta E of the written colours, per chunk
======================  =====================================================

Dask's own array operations that bigquant applies (rechunking, reshaping,
``where``, ``!=``, slicing, storing into zarr) keep Dask's names; the few that
bigquant's graphs legitimately contain are listed in :data:`DASK_NAMES`, and no
other task name may appear in them.
"""

from __future__ import annotations

__all__ = [
    "PREFIX", "MAX_LENGTH", "READ", "READ_PALETTE", "MASK", "COUNT", "COUNT_SUM", "MERGE", "CODES",
    "MOMENTS", "GRID", "GRID_RANGE", "INIT", "LLOYD", "RELOCATE", "MB_GATHER", "MB_BATCH", "LUT", "LABELS", "TRANSFORM",
    "WRITE", "SWEEP", "COST", "FS_SLANT", "FS_EDGES", "FS_LABELS", "BLUE_NOISE", "SPACE_LUT", "SPACE_LABELS",
    "QUALITY", "FS_OUTCOME", "DITHER_GRID", "HISTOGRAM", "NAMES", "DASK_NAMES", "tree_sum",
]

#: what every bigquant task key starts with
PREFIX = "bq-"
#: longest name (and ``-sum`` name), so that no two are cut to the same label
MAX_LENGTH = 15

READ = "bq-read"
READ_PALETTE = "bq-read-pal"
MASK = "bq-mask"
COUNT = "bq-count"
COUNT_SUM = "bq-count-sum"
MERGE = "bq-merge"
CODES = "bq-codes"
MOMENTS = "bq-moments"
GRID = "bq-grid"
GRID_RANGE = "bq-range"
INIT = "bq-init"
LLOYD = "bq-lloyd"
RELOCATE = "bq-relocate"
MB_GATHER = "bq-mb-gather"
MB_BATCH = "bq-mb-batch"
LUT = "bq-lut"
LABELS = "bq-labels"
TRANSFORM = "bq-transform"
WRITE = "bq-write"
SWEEP = "bq-sweep"
COST = "bq-cost"
FS_SLANT = "bq-fs-slant"
FS_EDGES = "bq-fs-edges"
FS_LABELS = "bq-fs-labels"
FS_OUTCOME = "bq-fs-outcome"
DITHER_GRID = "bq-dither-grid"
BLUE_NOISE = "bq-blue-noise"
SPACE_LUT = "bq-space-lut"
SPACE_LABELS = "bq-space-labels"
QUALITY = "bq-quality"

#: the phase (span) of counting and merging colours
HISTOGRAM = "bq-histogram"


def tree_sum(name: str) -> str:
    """The name of the tree reduction summing the per-chunk results of task ``name``."""
    return f"{name}-sum"


#: every task name, tree sums included
NAMES = frozenset(
    [READ, READ_PALETTE, MASK, COUNT, COUNT_SUM, MERGE, CODES, MB_GATHER, MB_BATCH, LUT, LABELS,
     TRANSFORM, WRITE, SWEEP, COST, FS_SLANT, FS_EDGES, FS_LABELS, FS_OUTCOME, DITHER_GRID, BLUE_NOISE, SPACE_LUT,
     SPACE_LABELS, QUALITY]
    + [n for base in (MOMENTS, GRID, GRID_RANGE, INIT, LLOYD, RELOCATE) for n in (base, tree_sum(base))]
)

#: Dask's own task names that bigquant's graphs legitimately contain: Dask array
#: operations bigquant applies to whole arrays (rechunking, ``reshape``,
#: ``where``, ``!=`` on a user's mask, a user's array taken as is), Dask's store
#: into a zarr array, and the final step of ``compute`` -- nothing else may
#: appear (``tests/test_tasks.py`` walks every key of real jobs).
DASK_NAMES = (
    "rechunk-merge",
    "rechunk-split",
    "reshape",
    "where",
    "ne",
    "array",
    "store-map",
    "finalize-hlgfinalizecompute",
)
