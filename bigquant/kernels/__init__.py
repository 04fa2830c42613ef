"""Numba kernels: the hot loops, and nothing of Dask or of the rest of the package.

Every kernel is serial and releases the GIL (``nogil=True``): parallelism comes
from Dask tasks or from a thread pool over row segments (see
:mod:`bigquant.cluster.points`), never from numba's own threading layer, which is
not safe to enter from several threads at once.

- :mod:`~bigquant.kernels.scans` -- distances, nearest centres, partial sums, moments
- :mod:`~bigquant.kernels.lloyd` -- bounded and dense Lloyd runs, swap moves
- :mod:`~bigquant.kernels.grid` -- exact per-cell counts and sums over a value grid (16-bit, float, multi-band)
- :mod:`~bigquant.kernels.cells` -- nearest centres through cells of the value range (certain cells, candidates)
- :mod:`~bigquant.kernels.colours` -- colour codes, counts, radix sorts, merges
- :mod:`~bigquant.kernels.morton` -- Morton-order counting of RGB uint8 colours
- :mod:`~bigquant.kernels.octree` -- exact Lloyd sums and labels of RGB colours through an octree of Morton cells
- :mod:`~bigquant.kernels.nbits` -- palette indices packed 2 or 4 to a byte
- :mod:`~bigquant.kernels.lookup` -- colour -> label lookup tables
- :mod:`~bigquant.kernels.seeding` -- k-means++ and k-means|| sampling
- :mod:`~bigquant.kernels.dither` -- exact integer Floyd--Steinberg, ordered dithering
- :mod:`~bigquant.kernels.spaces` -- sRGB <-> OKLab / CIELAB, quality sums
"""

from bigquant.kernels.colours import (
    add_dense_counts,
    add_sparse_counts,
    coarse_bins,
    count_codes,
    count_codes_dense,
    decode_colours,
    encode_colours,
    merge_sparse_counts,
    take,
    take_nonzero,
    unique_colours,
    unique_colours_parallel,
)
from bigquant.kernels.dither import candidate_grid, floyd_steinberg, fs_rows, ordered_dither
from bigquant.kernels.grid import add_distinct, add_grid_cells, merge_distinct, merge_grid_cells, take_grid_cells
from bigquant.kernels.lloyd import (
    bounded_step,
    improve_by_swaps,
    lloyd_bounded,
    lloyd_dense,
)
from bigquant.kernels.lookup import build_lut, lookup_labels, lookup_window
from bigquant.kernels.morton import (
    MortonTable,
    count_morton,
    encode_morton,
    merge_counts,
    morton_colours,
    morton_to_codes,
    take_counts,
    take_sum,
)
from bigquant.kernels.scans import (
    SCAN_BLOCK,
    as_columns,
    assign_labels,
    labelled_inertia,
    moments,
    partial_sums,
    squared_shift,
)
from bigquant.kernels.seeding import kmeans_plusplus_greedy, oversample
from bigquant.kernels.spaces import colour_error_sums, error_sums, from_space, to_space

__all__ = [
    "MortonTable",
    "add_dense_counts",
    "add_distinct",
    "add_grid_cells",
    "add_sparse_counts",
    "as_columns",
    "assign_labels",
    "bounded_step",
    "build_lut",
    "candidate_grid",
    "coarse_bins",
    "colour_error_sums",
    "count_codes",
    "count_codes_dense",
    "count_morton",
    "decode_colours",
    "encode_colours",
    "encode_morton",
    "error_sums",
    "floyd_steinberg",
    "from_space",
    "fs_rows",
    "improve_by_swaps",
    "kmeans_plusplus_greedy",
    "labelled_inertia",
    "merge_distinct",
    "merge_grid_cells",
    "take_grid_cells",
    "lloyd_bounded",
    "lloyd_dense",
    "lookup_labels",
    "lookup_window",
    "merge_counts",
    "merge_sparse_counts",
    "moments",
    "morton_colours",
    "morton_to_codes",
    "ordered_dither",
    "oversample",
    "partial_sums",
    "SCAN_BLOCK",
    "squared_shift",
    "take",
    "take_counts",
    "take_sum",
    "take_nonzero",
    "to_space",
    "unique_colours",
    "unique_colours_parallel",
]
