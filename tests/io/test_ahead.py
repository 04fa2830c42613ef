"""Tests of bigquant.io.ahead: a child process decodes a TIFF's tiles into the pixel spool the first pass adopts."""

from __future__ import annotations

import os
import threading

import dask
import numpy as np
import pytest
import tifffile

from bigquant import read_image
from bigquant.io import ahead
from bigquant.io import spool as spool_module
from bigquant.io import tiff_read
from bigquant.io.spool import SpoolingReader, TileSpool, decode_ahead, pixel_spool


@pytest.fixture
def deflated(tmp_path):
    """A 300 x 400 RGB image as a deflated TIFF of 64 px tiles (edge tiles cut), and its pixels."""
    rgb = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, rgb, tile=(64, 64), compression="zlib", photometric="rgb")
    return path, rgb


@pytest.fixture
def any_size(monkeypatch):
    monkeypatch.setattr(ahead, "MIN_FILE_BYTES", 0)


@pytest.fixture
def decodes(monkeypatch):
    """The tiles this process decodes, by index."""
    seen: list[int] = []
    original = tiff_read._SegmentIndex.decoded

    def decoded(self, fh, i, *args, **kwargs):
        seen.append(i)
        return original(self, fh, i, *args, **kwargs)

    monkeypatch.setattr(tiff_read._SegmentIndex, "decoded", decoded)
    return seen


@pytest.mark.parametrize("work", [None, decode_ahead], ids=["spawned", "forked"])
def test_the_first_pass_reads_the_tiles_the_child_decoded(tmp_path, deflated, any_size, decodes, work):
    path, rgb = deflated
    out = tmp_path / "out.tif"
    with ahead.decoding_ahead(str(path), out, work=work) as child:
        assert child is not None
        if work is not None and threading.active_count() == 1:
            assert isinstance(child.process, ahead._Forked)
        assert child.process.wait(timeout=60) == 0  # 35 small tiles: all decoded
        data = read_image(str(path), chunks=128).data
        with dask.config.set(scheduler="threads"), pixel_spool(data, out) as kept:
            assert kept is not None and os.path.dirname(kept.spool.data) == str(child.directory)
            assert kept.complete()  # every tile marked by the child
            np.testing.assert_array_equal(kept.counting.compute(), rgb)
            np.testing.assert_array_equal(kept.spooled.compute(), rgb)
        assert decodes == []  # not one tile decoded here
        assert not child.directory.exists()  # the spool removed it
    assert [p.name for p in tmp_path.iterdir()] == ["in.tif"]


def test_tiles_not_decoded_ahead_are_decoded_and_spooled(tmp_path, deflated, decodes, monkeypatch):
    """A child stopped early: the pass decodes only the tiles without a mark, and the spool ends complete."""
    path, rgb = deflated
    directory = tmp_path / "spool"
    directory.mkdir()
    monkeypatch.setattr(ahead, "MAX_BYTES", (400 + 3 * 64) * 64 * 3)  # a row of 7 tiles and 3 more, then it stops
    assert decode_ahead(str(path), directory, level=0, series=None, parent=None) == 10
    assert decodes == list(range(10))
    decodes.clear()
    reader = tiff_read.level_reader(str(path))
    spool = TileSpool(str(directory / spool_module.DATA_FILE), str(directory / spool_module.MARKS_FILE),
                      reader.shape, reader.segment, reader.dtype)
    fields = {name: getattr(reader, name) for name in reader.__dataclass_fields__}
    spooling = SpoolingReader(**fields, spool=spool)
    window = (10, 300, 30, 400)  # cuts tiles: marked ones are read back in part
    got = np.zeros((290, 370, 3), np.uint8)
    for part, (ya, xa) in spooling.segment_windows(window):
        got[ya - 10 : ya - 10 + part.shape[0], xa - 30 : xa - 30 + part.shape[1]] = part
    np.testing.assert_array_equal(got, rgb[10:300, 30:400])
    assert 0 not in decodes and 9 not in decodes and 10 in decodes  # marked tiles come from the spool
    np.testing.assert_array_equal(spooling[0:300, 0:400], rgb)
    assert spool.complete()


def test_a_spool_for_another_output_or_level_is_not_adopted(tmp_path, deflated, any_size):
    path, _ = deflated
    with ahead.decoding_ahead(str(path), tmp_path / "other.tif") as child:
        child.process.wait(timeout=60)
        data = read_image(str(path), chunks=128).data
        with pixel_spool(data, tmp_path / "out.tif") as kept:
            assert os.path.dirname(kept.spool.data) != str(child.directory)
        reader = tiff_read.level_reader(str(path))
        assert ahead.adopt(reader, tmp_path / "other.tif") == child.directory
        child.adopted = False
        changed = tiff_read.TiffBlockReader(**{**{n: getattr(reader, n) for n in reader.__dataclass_fields__},
                                               "level": 1})
        assert ahead.adopt(changed, tmp_path / "other.tif") is None
    assert not child.directory.exists()  # not adopted: removed when the block ends


def test_reading_the_file_stops_the_child(tmp_path, deflated, any_size, monkeypatch):
    path, rgb = deflated
    monkeypatch.setattr(ahead, "MAX_BYTES", 2**62)
    with ahead.decoding_ahead(str(path), tmp_path / "out.tif") as child:
        reader = tiff_read.level_reader(str(path))
        np.testing.assert_array_equal(reader[0:64, 0:64], rgb[:64, :64])
        assert child.process.poll() is not None  # killed (or done) before the read went on


def test_no_child_for_small_remote_or_other_files(tmp_path, deflated):
    path, _ = deflated
    with ahead.decoding_ahead(str(path), tmp_path / "out.tif") as child:
        assert child is None  # smaller than MIN_FILE_BYTES
    (tmp_path / "x.png").write_bytes(b"\x89PNG" + bytes(64))
    for other in ("s3://bucket/in.tif", str(tmp_path / "x.png"), str(tmp_path / "missing.tif")):
        with ahead.decoding_ahead(other, tmp_path / "out.tif") as child:
            assert child is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "x.png"]


def test_the_child_writes_nothing_for_tiles_it_would_not_spool(tmp_path):
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, np.zeros((128, 128, 3), np.uint8), tile=(64, 64))  # uncompressed: read in place
    directory = tmp_path / "spool"
    directory.mkdir()
    assert decode_ahead(str(raw), directory, level=0, series=None, parent=None) == 0
    assert list(directory.iterdir()) == []


def test_a_child_whose_parent_is_gone_stops_and_removes_its_spool(tmp_path, deflated):
    """The command killed (its child reparented): the child stops at its next tile and leaves no spool."""
    directory = tmp_path / "spool"
    directory.mkdir()
    gone = os.getppid() + 1 if os.getppid() + 1 != os.getpid() else os.getppid() + 2  # not this process's parent
    assert decode_ahead(str(deflated[0]), directory, level=0, series=None, parent=gone) == 1
    assert not directory.exists()
