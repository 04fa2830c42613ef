"""Tests of the histogram pass's counting: lanes against the merge tree, and the Morton order the octree reuses.

RGB uint8 tiles read from a TIFF are counted in lanes (one table per thread,
handed from block to block) when the tasks share this process; the histogram
must be the one per-block counting and merging gives, and the colours' Morton
order (kept for the octree) must be the order the octree would sort them in.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import tifffile

from bigquant import colour_histogram, kernels, read_image, tasks
from bigquant.cluster.histogram import ColourHistogram, histogram_graph
from bigquant.cluster.octree import ColourOctree
from bigquant.io.sample import make_sample_image
from bigquant.kernels.octree import build_octree, sorted_octree


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    """A 2048 x 3072 photo-like RGB TIFF in 256 px tiles, read in 1024 px chunks (6 blocks of 1 MP)."""
    img = make_sample_image((2048, 3072), seed=11)
    img[:40, :50] = [255, 255, 255]  # one colour many times, and the extreme codes
    img[40, :3] = [[0, 0, 0], [0, 0, 7], [0, 0, 8]]
    path = tmp_path_factory.mktemp("counting") / "tiled.tif"
    tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb", compression="zlib", bigtiff=True)
    return img, path


def _expected(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes = img.reshape(-1, 3).astype(np.uint32) @ np.array([65536, 256, 1], np.uint32)
    return np.unique(codes, return_counts=True)


def _count_keys(graph) -> tuple[int, int]:
    """Keys of count tasks, and of tasks that sum per-block counts, in a histogram graph."""
    names = [key[0] if isinstance(key, tuple) else key for key in dict(graph.__dask_graph__())]
    counts = sum(1 for n in names if n.startswith(tasks.COUNT + "-") and not n.startswith(tasks.COUNT_SUM))
    return counts, sum(1 for n in names if n.startswith(tasks.COUNT_SUM))


def test_lanes_count_what_per_block_histograms_count(tiled):
    img, path = tiled
    X = read_image(path, chunks=1024).data
    assert X.numblocks[:2] == (2, 3)
    want_codes, want_counts = _expected(img)
    lanes = histogram_graph(X, 8)
    tree = histogram_graph(X, 8, lanes=False)
    assert _count_keys(lanes) == (6, 0)  # one count task a block, no per-block sums
    assert _count_keys(tree)[1] > 0
    for graph in (lanes, tree):
        for scheduler in ("threads", "sync"):
            codes, counts = dask.compute(graph, scheduler=scheduler)[0]
            np.testing.assert_array_equal(codes, want_codes)
            np.testing.assert_array_equal(counts, want_counts)
            assert counts.dtype == np.int64


def test_lanes_only_where_tasks_share_this_process(tiled):
    _, path = tiled
    X = read_image(path, chunks=1024).data
    with dask.config.set(scheduler="processes"):  # results would be pickled between processes: a merge tree
        assert _count_keys(histogram_graph(X, 8))[1] > 0
    with dask.config.set(scheduler="threads"):
        assert _count_keys(histogram_graph(X, 8))[1] == 0


def test_the_kept_morton_order_is_the_octrees_own(tiled):
    img, path = tiled
    hist = colour_histogram(read_image(path, chunks=1024).data)
    assert hist.morton is not None
    perm, mcodes, mcounts = hist.morton
    # the colours in Morton order, with their counts
    np.testing.assert_array_equal(kernels.encode_morton(hist.colours[perm]), mcodes)
    assert np.all(np.diff(mcodes.astype(np.int64)) > 0)
    np.testing.assert_array_equal(hist.counts[perm], mcounts)
    kept = sorted_octree(mcodes, mcounts, 2, 6, perm)
    sorted_here = build_octree(hist.colours, hist.counts, 2, 6)
    for name, a, b in zip(kept._fields, kept, sorted_here):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # the octree takes it (and the histogram lets it go)
    hist.octree()
    assert hist.morton is None


def test_morton_to_codes_gives_the_order_back():
    rng = np.random.default_rng(2)
    mcodes = np.unique(rng.integers(0, 1 << 24, 5000).astype(np.uint32))
    counts = rng.integers(1, 100, len(mcodes)).astype(np.uint32)
    codes, out, order = kernels.morton_to_codes((mcodes, counts), return_order=True)
    assert np.all(np.diff(codes.astype(np.int64)) > 0)
    colours = kernels.decode_colours(codes, 3, 8, np.uint8)
    np.testing.assert_array_equal(kernels.encode_morton(colours[order]), mcodes)
    np.testing.assert_array_equal(out[order], counts)
    plain = kernels.morton_to_codes((mcodes, counts))
    np.testing.assert_array_equal(plain[0], codes)
    empty = kernels.morton_to_codes((mcodes[:0], counts[:0]), return_order=True)
    assert [a.shape for a in empty] == [(0,), (0,), (0,)]


def test_coarse_sets_from_the_octree_are_the_colours_own(tiled):
    img, path = tiled
    hist = colour_histogram(read_image(path, chunks=1024).data)
    plain = ColourHistogram(hist.colours, hist.counts, hist.codes, hist.bits)
    with_tree = ColourHistogram(hist.colours, hist.counts, hist.codes, hist.bits)
    with_tree._derived.octree.append(ColourOctree(hist.colours, hist.counts))
    for drop in (2, 3, 4):  # levels 6 and 5 of the octree; 4 dropped bits is a level the octree has
        for a, b in zip(with_tree.coarse_sums(drop), plain.coarse_sums(drop)):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
    assert with_tree.octree().cells(7) is None  # finer than the leaves: not the octree's


def test_fits_on_a_histogram_share_its_octree(monkeypatch, tiled):
    import bigquant.cluster.octree as octree_mod
    from bigquant import KMeans

    monkeypatch.setattr(octree_mod, "OCTREE_MIN_COLOURS", 1000)
    _, path = tiled
    hist = colour_histogram(read_image(path, chunks=1024).data)
    built = []
    original = ColourOctree.__init__
    monkeypatch.setattr(ColourOctree, "__init__", lambda self, *a: built.append(1) or original(self, *a))
    first = KMeans(4, random_state=0).fit_histogram(hist)
    second = KMeans(5, random_state=0).fit_histogram(hist)
    assert len(built) == 1
    assert hist.octree() is first.histogram_.octree() is second.histogram_.octree()
    # the same fits as on a histogram of its own
    alone = KMeans(5, random_state=0).fit_histogram(ColourHistogram(hist.colours, hist.counts, hist.codes, 8))
    np.testing.assert_array_equal(alone.cluster_centers_, second.cluster_centers_)
    assert alone.inertia_ == second.inertia_


def test_the_octree_built_beside_the_code_order_is_the_colours_own(monkeypatch, tiled):
    import bigquant.cluster.octree as octree_mod

    monkeypatch.setattr(octree_mod, "OCTREE_MIN_COLOURS", 1000)
    _, path = tiled
    hist = colour_histogram(read_image(path, chunks=1024).data, octree=True)
    assert hist._derived.octree and hist.morton is None  # built with the histogram, the order handed over
    built = hist.octree()
    alone = build_octree(hist.colours, hist.counts, octree_mod.TOP_LEVEL, octree_mod.LEAF_LEVEL)
    for name, a, b in zip(alone._fields, built._tree, alone):
        np.testing.assert_array_equal(a, b, err_msg=name)
    centers = hist.colours[:: hist.n_colours // 7][:7].astype(np.float64)
    np.testing.assert_array_equal(built.labels(centers), kernels.assign_labels(hist.colours, centers, np.int64)[0])
    # built from Morton codes alone, then given the colours' rows: the same labels; a wrong order refused
    order = np.argsort(kernels.encode_morton(hist.colours)).astype(np.int32)
    build = ColourOctree.of_morton(kernels.encode_morton(hist.colours)[order], hist.counts[order])
    np.testing.assert_array_equal(build(order).labels(centers), built.labels(centers))
    with pytest.raises(ValueError, match="rows"):
        build(order[:-1])
