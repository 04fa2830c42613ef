"""Tests of bigquant.io.spool: decoded tiles kept by one read, read back raw by the next."""

from __future__ import annotations

import os

import dask
import numpy as np
import pytest
import tifffile

from bigquant import read_image
from bigquant.io import spool as spool_module
from bigquant.io.spool import pixel_spool, spoolable
from bigquant.io.tiff_read import segment_reader


@pytest.fixture
def deflated(tmp_path):
    """A 300 x 400 RGB and a 300 x 400 grey image as deflated 64 px tiled TIFFs (edge tiles cut)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (300, 400), dtype=np.uint8)
    paths = {}
    for name, pix in (("rgb", rgb), ("grey", grey)):
        paths[name] = tmp_path / f"{name}.tif"
        tifffile.imwrite(paths[name], pix, tile=(64, 64), compression="zlib",
                         photometric="rgb" if pix.ndim == 3 else "minisblack")
    return paths, {"rgb": rgb, "grey": grey}


@pytest.mark.parametrize("kind", ["rgb", "grey"])
def test_the_spooled_array_reads_what_the_source_decodes(tmp_path, deflated, kind):
    paths, pixels = deflated
    data = read_image(paths[kind], chunks=128).data
    with dask.config.set(scheduler="threads"), pixel_spool(data, tmp_path / "out.tif") as kept:
        assert kept is not None and not kept.complete()
        np.testing.assert_array_equal(kept.counting.compute(), pixels[kind])  # read, and spooled
        assert kept.complete()
        np.testing.assert_array_equal(kept.spooled.compute(), pixels[kind])
        reader = segment_reader(kept.spooled)
        assert reader is not None and not reader.compressed  # read raw, any window
        for window in [(0, 300, 0, 400), (10, 77, 250, 400), (64, 128, 64, 128), (299, 300, 0, 1)]:
            y0, y1, x0, x1 = window
            got = np.zeros((y1 - y0, x1 - x0) + pixels[kind].shape[2:], np.uint8)
            for part, (ya, xa) in reader.segment_windows(window):
                got[ya - y0 : ya - y0 + part.shape[0], xa - x0 : xa - x0 + part.shape[1]] = part.reshape(
                    part.shape[:2] + pixels[kind].shape[2:])
            np.testing.assert_array_equal(got, pixels[kind][y0:y1, x0:x1])
        directory = os.path.dirname(kept.spool.data)
        assert os.path.dirname(directory) == str(tmp_path) and os.path.basename(directory).startswith(".")
    assert not os.path.exists(directory)


def test_tiles_into_copies_the_whole_tiles_under_the_windows_and_nothing_else(tmp_path, deflated):
    paths, pixels = deflated
    rgb = pixels["rgb"]
    data = read_image(paths["rgb"], chunks=128).data
    with dask.config.set(scheduler="threads"), pixel_spool(data, tmp_path / "out.tif") as kept:
        kept.counting.compute()
        reader = segment_reader(kept.spooled)
        out = np.full((192, 336, 3), 7, np.uint8)  # image rows 64..256, columns 64..400 (the cut edge tiles)
        assert reader.tiles_into(out, (64, 64), [(70, 100, 130, 140), (200, 256, 390, 400), (80, 80, 0, 400)])
        tiles = [(64, 128, 128, 192), (192, 256, 384, 400)]  # whole tiles under the windows (the last one empty)
        expected = np.full_like(out, 7)
        for y0, y1, x0, x1 in tiles:
            expected[y0 - 64:y1 - 64, x0 - 64:x1 - 64] = rgb[y0:y1, x0:x1]
        np.testing.assert_array_equal(out, expected)
        # a tile reaching past ``out``: nothing copied, False
        small = np.full((100, 100, 3), 7, np.uint8)
        assert not reader.tiles_into(small, (64, 64), [(64, 70, 64, 70), (70, 80, 150, 170)])
        assert (small == 7).all()


def test_only_whole_tiles_are_spooled(tmp_path, deflated):
    """Windows that cut tiles spool nothing of those tiles: the spool stays incomplete."""
    paths, _ = deflated
    data = read_image(paths["rgb"], chunks=128).data
    with pixel_spool(data, tmp_path / "out.tif") as kept:
        segment_reader(kept.counting)[0:300, 10:400]  # the first tile column is cut
        marks = np.fromfile(kept.spool.marks, np.uint8).reshape(kept.spool.grid)
        assert not marks[:, 0].any() and marks[:, 1:].all() and not kept.complete()


def test_a_full_disk_leaves_the_spool_unused(tmp_path, deflated, monkeypatch):
    paths, pixels = deflated
    data = read_image(paths["rgb"], chunks=128).data

    def full(fd, data, offset):
        raise OSError(28, "No space left on device")

    with pixel_spool(data, tmp_path / "out.tif") as kept:
        monkeypatch.setattr(spool_module.os, "pwrite", full)
        np.testing.assert_array_equal(kept.counting.compute(scheduler="threads"), pixels["rgb"])
        assert not kept.complete()


def test_what_is_not_spooled(tmp_path, deflated, monkeypatch):
    paths, _ = deflated
    tifffile.imwrite(tmp_path / "raw.tif", np.zeros((300, 400, 3), np.uint8), tile=(64, 64))
    assert spoolable(read_image(tmp_path / "raw.tif", chunks=128).data) is None  # read in place already
    assert spoolable(read_image(paths["rgb"], chunks=((100, 200), (150, 250))).data) is None  # chunks cut tiles
    assert spoolable(read_image(paths["rgb"], chunks=128).data[:, :, ::-1]) is None  # not the file's array
    data = read_image(paths["rgb"], chunks=128).data
    with pixel_spool(data, tmp_path / "out.tif", "s3://bucket/tmp") as kept:
        assert kept is None
    monkeypatch.setattr(spool_module, "FREE_MARGIN", 2**62)  # no room
    with pixel_spool(data, tmp_path / "out.tif") as kept:
        assert kept is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.tif", "raw.tif", "rgb.tif"]
