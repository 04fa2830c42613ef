"""Default chunking of bigquant.io.chunks: 4096 px chunks up to 1.07 GP, bounded passes above."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest

from bigquant.io.chunks import (
    ADAPT_ABOVE_PIXELS,
    DEFAULT_CHUNK_EDGE,
    MAX_CHUNK_PIXELS,
    MAX_CHUNKS_PER_PASS,
    aligned_chunks,
)


def _n_chunks(shape, chunks):
    return math.ceil(shape[0] / chunks[0]) * math.ceil(shape[1] / chunks[1])


@pytest.mark.parametrize("shape", [(16384, 16384), (32768, 32768), (20000, 50000), (1 << 15, 1 << 15)])
def test_up_to_a_gigapixel_the_chunks_are_unchanged(shape):
    assert shape[0] * shape[1] <= ADAPT_ABOVE_PIXELS
    assert aligned_chunks(shape, (512, 512)) == (DEFAULT_CHUNK_EDGE, DEFAULT_CHUNK_EDGE)


@pytest.mark.parametrize(
    "shape, grid",
    [
        ((316416, 316416), (512, 512)),  # 100 GP, the usual 512 px tiles
        ((316416, 316416), (240, 240)),  # Aperio-like tiles: not a divisor of 1024
        ((1_000_000, 100_000), (256, 256)),  # a long strip of slides
        ((100_000, 1_000_000), (512, 1024)),
        ((300_000, 400_000), (1, 1)),  # free chunking (an array, an untiled file)
        ((327680, 327680), (240, 240)),  # 5120 px rounded down to whole tiles: 66 x 66 chunks, grown
        ((20_900_000, 5121), (1, 1)),  # one pixel wider than the edge: two columns of chunks, grown
    ],
)
def test_tasks_per_pass_stay_bounded_for_a_100_gp_lazy_image(shape, grid):
    from bigquant import tasks
    from bigquant.cluster.histogram import histogram_graph
    from bigquant.cluster.points import block_tree

    cy, cx = aligned_chunks(shape, grid)
    assert cy % grid[0] == 0 and cx % grid[1] == 0  # still whole tiles
    n = _n_chunks(shape, (cy, cx))
    assert n <= MAX_CHUNKS_PER_PASS
    assert n >= MAX_CHUNKS_PER_PASS * 3 // 4  # grown no more than needed: still work for many workers
    # as wide as below 1 GP: a band of chunks (what the TIFF writer computes at once) keeps its chunks
    assert abs(cx - DEFAULT_CHUNK_EDGE) < max(grid[1], 1024) or cx == shape[1]
    assert cy * cx <= MAX_CHUNK_PIXELS
    # the real graphs of a pass over the lazy image: one task per chunk (plus the
    # source key of the lazy array), and a tree of an eighth as many
    X = da.zeros(shape + (3,), dtype=np.uint8, chunks=(cy, cx, 3))
    assert X.numblocks[0] * X.numblocks[1] == n
    count = len(dict(histogram_graph(X, 8).__dask_graph__())) - n
    lloyd = len(dict(block_tree(tasks.LLOYD, X, None, _block, (), _combine).__dask_graph__())) - n
    for keys in (count, lloyd):
        assert n < keys <= n * 8 // 7 + 2 * math.ceil(math.log(n, 8)) + 4, (n, keys)


def _block(block, weights):
    return 0


def _combine(parts):
    return 0


def test_chunks_grow_with_the_image_up_to_the_pixel_cap():
    sides = [100352, 200704, 316416, 500000, 1_000_000]  # 10 GP .. 1 TP
    heights = [aligned_chunks((side, side), (512, 512))[0] for side in sides]
    assert heights == sorted(heights) and heights[0] == DEFAULT_CHUNK_EDGE
    assert all(h % 1024 == 0 for h in heights)
    cy, cx = aligned_chunks((1_000_000, 1_000_000), (512, 512))
    assert cy * cx == MAX_CHUNK_PIXELS  # past ~275 GP the chunk's memory, not the task count, decides


def test_explicit_chunks_are_kept_at_any_size():
    assert aligned_chunks((316416, 316416), (512, 512), 4096) == (4096, 4096)
    assert aligned_chunks((316416, 316416), (512, 512), (1000, 2000)) == (1024, 2048)
