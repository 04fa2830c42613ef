"""Tests of bigquant.io reading: every source kind, metadata, laziness, bad input."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile

from bigquant import ImageSource, read_image
from bigquant.errors import (
    ImageReadError,
    InputTypeError,
    InvalidInputError,
    InvalidParameterError,
)


def _read_keys(arr: da.Array) -> set[str]:
    return {k[0] if isinstance(k, tuple) else k for k in dict(arr.__dask_graph__())}


# --- TIFF layouts -------------------------------------------------------------


def test_tiled_tiff_metadata_and_pixels(tiled_tiff, rgb_image):
    src = read_image(tiled_tiff)
    assert isinstance(src, ImageSource)
    assert src.shape == (300, 400, 3)
    assert src.dtype == np.uint8
    assert src.tile == (64, 64)
    assert src.photometric == "rgb"
    assert src.channels == 3
    assert src.format == "tiff"
    assert src.levels == 1
    assert src.nbytes == rgb_image.nbytes
    assert src.path == tiled_tiff
    assert isinstance(src.data, da.Array)
    assert any(str(k).startswith("bq-read") for k in _read_keys(src.data))
    np.testing.assert_array_equal(src.data.compute(), rgb_image)


def test_chunks_are_multiples_of_tiles(tiled_tiff, rgb_image):
    src = read_image(tiled_tiff, chunks=100)
    assert src.data.chunks[0] == (128, 128, 44)
    assert src.data.chunks[1] == (128, 128, 128, 16)
    assert src.data.chunks[2] == (3,)
    np.testing.assert_array_equal(src.data.compute(), rgb_image)
    src = read_image(tiled_tiff, chunks=(64, 192))
    assert src.data.chunksize[:2] == (64, 192)


def test_default_chunks_large_tiled_file(tmp_path):
    path = tmp_path / "big.tif"
    # shape only matters: write an all-zero 5000 x 9000 tiled image cheaply
    tifffile.imwrite(path, np.zeros((5000, 9000), np.uint8), tile=(512, 512), compression="zlib")
    src = read_image(path)
    assert src.data.chunksize == (4096, 4096)
    assert src.tile == (512, 512)


def test_striped_tiff_reads_full_width_bands(tmp_path, rgb_image):
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, rgb_image, rowsperstrip=8, compression="zlib", photometric="rgb")
    src = read_image(path, chunks=20)
    assert src.tile == (8, 400)
    assert src.data.chunksize[:2] == (24, 400)
    np.testing.assert_array_equal(src.data.compute(), rgb_image)


def test_contiguous_uncompressed_tiff_is_memory_mapped(tmp_path, rgb_image, monkeypatch):
    path = tmp_path / "contig.tif"
    tifffile.imwrite(path, rgb_image, photometric="rgb")
    src = read_image(path, chunks=128)
    assert src.tile is None
    calls = []
    memmap = tifffile.memmap
    monkeypatch.setattr(tifffile, "memmap", lambda *a, **k: calls.append(a) or memmap(*a, **k))
    np.testing.assert_array_equal(src.data.compute(scheduler="sync"), rgb_image)
    assert len(calls) == src.data.npartitions


def test_planar_separate_tiff_is_channels_last(tmp_path, rgb_image):
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(rgb_image, -1, 0), planarconfig="separate",
                     photometric="rgb", tile=(64, 64))
    src = read_image(path)
    assert src.shape == (300, 400, 3)
    np.testing.assert_array_equal(src.data.compute(), rgb_image)


def test_gray_uint16_tiff(tmp_path):
    gray = np.random.default_rng(0).integers(0, 65535, (130, 170), dtype=np.uint16)
    path = tmp_path / "gray.tif"
    tifffile.imwrite(path, gray, tile=(32, 32))
    src = read_image(path)
    assert src.shape == (130, 170) and src.channels == 1 and src.dtype == np.uint16
    assert src.photometric == "minisblack"
    np.testing.assert_array_equal(src.data.compute(), gray)


def test_big_endian_tiff(tmp_path, rgb_image):
    path = tmp_path / "be.tif"
    data = rgb_image.astype(np.uint16) * 200
    tifffile.imwrite(path, data, byteorder=">", tile=(64, 64), photometric="rgb")
    src = read_image(path)
    assert src.dtype == np.dtype("=u2")
    np.testing.assert_array_equal(src.data.compute(), data)


def test_pyramid_levels_and_series(tmp_path, rgb_image):
    path = tmp_path / "pyr.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(rgb_image, tile=(64, 64), subifds=1, photometric="rgb")
        tw.write(rgb_image[::2, ::2], tile=(64, 64), subfiletype=1, photometric="rgb")
        tw.write(rgb_image[:50, :60, 0], photometric="minisblack")  # a second series
    src = read_image(path)
    assert src.levels == 2
    low = read_image(path, level=1)
    assert low.shape == (150, 200, 3)
    np.testing.assert_array_equal(low.data.compute(), rgb_image[::2, ::2])
    second = read_image(path, series=1)
    np.testing.assert_array_equal(second.data.compute(), rgb_image[:50, :60, 0])
    with pytest.raises(InvalidParameterError, match="level=2"):
        read_image(path, level=2)
    with pytest.raises(InvalidParameterError, match="series=5"):
        read_image(path, series=5)


def test_ome_tiff_channels_first(tmp_path, rgb_image):
    path = tmp_path / "img.ome.tif"
    tifffile.imwrite(path, np.moveaxis(rgb_image, -1, 0), ome=True, metadata={"axes": "CYX"},
                     tile=(64, 64))
    src = read_image(path)
    assert src.format == "ome-tiff"
    assert src.shape == (300, 400, 3)
    np.testing.assert_array_equal(src.data.compute(), rgb_image)


def test_palette_tiff_is_expanded_to_colours(tmp_path):
    labels = np.random.default_rng(0).integers(0, 4, (60, 70), dtype=np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    colours = np.array([[255, 0, 0], [0, 128, 0], [0, 0, 255], [9, 9, 9]], np.uint16)
    cmap[:, :4] = (colours * 257).T
    path = tmp_path / "pal.tif"
    tifffile.imwrite(path, labels, photometric="palette", colormap=cmap, tile=(16, 16))
    src = read_image(path)
    assert src.photometric == "palette" and src.channels == 3 and src.dtype == np.uint8
    np.testing.assert_array_equal(src.data.compute(), colours.astype(np.uint8)[labels])


def test_stack_of_images_is_rejected(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((4, 32, 32), np.uint8), photometric="minisblack")
    with pytest.raises(ImageReadError, match="stack.tif.*axes"):
        read_image(path)


# --- other formats --------------------------------------------------------------


def test_zarr_path_array_and_group(tmp_path, rgb_image):
    import zarr

    path = tmp_path / "img.zarr"
    z = zarr.create_array(str(path), shape=rgb_image.shape, chunks=(64, 64, 3), dtype="u1")
    z[:] = rgb_image
    src = read_image(path, chunks=100)
    assert src.format == "zarr" and src.tile == (64, 64)
    assert src.data.chunksize[:2] == (128, 128)
    np.testing.assert_array_equal(src.data.compute(), rgb_image)
    np.testing.assert_array_equal(read_image(z).data.compute(), rgb_image)
    group = zarr.open_group(str(tmp_path / "ms.zarr"), mode="w")
    group.create_array("0", data=rgb_image, chunks=(64, 64, 3))
    group.create_array("1", data=rgb_image[::2, ::2], chunks=(64, 64, 3))
    assert read_image(tmp_path / "ms.zarr").levels == 2
    np.testing.assert_array_equal(read_image(tmp_path / "ms.zarr", level=1).data.compute(),
                                  rgb_image[::2, ::2])


def test_png_jpeg_and_palette_png(tmp_path, rgb_image, few_colour_image):
    from PIL import Image

    Image.fromarray(rgb_image).save(tmp_path / "a.png")
    src = read_image(tmp_path / "a.png")
    assert src.format == "png" and src.shape == (300, 400, 3)
    np.testing.assert_array_equal(src.data.compute(), rgb_image)
    Image.fromarray(rgb_image).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.jpg").format == "jpeg"
    Image.fromarray(few_colour_image).quantize(8).save(tmp_path / "p.png")
    pal = read_image(tmp_path / "p.png")
    assert pal.shape == (200, 260, 3)
    np.testing.assert_array_equal(pal.data.compute(), few_colour_image)
    Image.fromarray(rgb_image[..., 0]).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (300, 400)


def test_pillow_decompression_bomb_guard(tmp_path, rgb_image, monkeypatch):
    from PIL import Image

    Image.fromarray(rgb_image).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match=r"a\.png.*decompression-bomb.*TIFF"):
        read_image(tmp_path / "a.png")
    src = read_image(tmp_path / "a.png", allow_large=True)
    assert src.shape == (300, 400, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_arrays_pass_through(rgb_image):
    src = read_image(rgb_image, chunks=128)
    assert src.format == "array" and src.path is None
    assert src.data.chunksize == (128, 128, 3)
    np.testing.assert_array_equal(src.data.compute(), rgb_image)
    lazy = da.from_array(rgb_image, chunks=(100, 100, 3))
    assert read_image(lazy).data is lazy
    assert read_image(src) is src


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (np.zeros((4, 4), np.complex64), InputTypeError, "dtype complex64"),
        (np.zeros((4,), np.uint8), InvalidInputError, "2-D"),
        (np.zeros((2, 3, 4, 5), np.uint8), InvalidInputError, "2-D"),
        (np.zeros((0, 5, 3), np.uint8), InvalidInputError, "empty"),
        (object(), InputTypeError, "object"),
    ],
)
def test_bad_arrays(data, error, match):
    with pytest.raises(error, match=match):
        read_image(data)


# --- bad files ------------------------------------------------------------------


def test_missing_empty_directory_and_garbage(tmp_path):
    with pytest.raises(ImageReadError, match="nope.tif.*no such file"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.tif.*empty"):
        read_image(tmp_path / "empty.tif")
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)
    (tmp_path / "junk.png").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ImageReadError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + np.random.default_rng(1).bytes(500))
    with pytest.raises(ImageReadError, match="junk.tif"):
        read_image(tmp_path / "junk.tif")


def test_truncated_tiff(tmp_path, tiled_tiff):
    data = tiled_tiff.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match="cut.tif.*truncated"):
        read_image(cut)


def test_corrupt_tile_data_fails_at_compute_naming_file(tmp_path, rgb_image):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, rgb_image, tile=(64, 64), compression="zlib", photometric="rgb")
    with tifffile.TiffFile(path) as tf:
        offset = int(tf.pages[0].dataoffsets[3])
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(raw))
    src = read_image(path)
    with pytest.raises(ImageReadError, match="bad.tif"):
        src.data.compute(scheduler="sync")


# --- distributed ----------------------------------------------------------------


@pytest.mark.distributed
def test_tiff_reads_on_worker_processes(local_cluster, tiled_tiff, rgb_image):
    from distributed import get_task_stream

    src = read_image(tiled_tiff, chunks=128)
    total = local_cluster.compute(src.data.sum(axis=(0, 1), dtype=np.int64)).result()
    np.testing.assert_array_equal(total, rgb_image.sum(axis=(0, 1), dtype=np.int64))
    with get_task_stream(local_cluster) as ts:
        pixels = local_cluster.compute(src.data).result()
    np.testing.assert_array_equal(pixels, rgb_image)
    keys = {str(t["key"]) for t in ts.data}
    assert sum("bq-read" in k for k in keys) == src.data.npartitions
    workers = {t["worker"] for t in ts.data}
    assert workers <= set(local_cluster.scheduler_info()["workers"])


# --- direct reads of uncompressed tiles and strips ------------------------------


def _reader(src: ImageSource):
    """The TiffBlockReader behind a TIFF source's dask array."""
    from bigquant.io.tiff_read import TiffBlockReader

    for task in dict(src.data.__dask_graph__()).values():
        for arg in getattr(task, "args", ()):
            value = getattr(arg, "value", arg)
            if isinstance(value, TiffBlockReader):
                return value
    raise AssertionError("no TiffBlockReader in the graph")


def _no_tifffile_reads(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("read through tifffile")

    monkeypatch.setattr(tifffile, "imread", fail)
    monkeypatch.setattr(tifffile, "memmap", fail)


@pytest.mark.parametrize("bigtiff", [False, True])
@pytest.mark.parametrize("chunks", [None, 64, (128, 192), 1000])
def test_uncompressed_tiles_read_directly(tmp_path, rgb_image, monkeypatch, bigtiff, chunks):
    path = tmp_path / "raw.tif"
    # 300 x 400 in 48 x 80 tiles: the last tile row and column are partly padding
    tifffile.imwrite(path, rgb_image, tile=(48, 80), photometric="rgb", bigtiff=bigtiff)
    src = read_image(path, chunks=chunks)
    assert _reader(src).segment == (48, 80)
    _no_tifffile_reads(monkeypatch)
    np.testing.assert_array_equal(src.data.compute(scheduler="sync"), rgb_image)
    # selections the getter may receive after dask fuses slicing into it
    np.testing.assert_array_equal(src.data[13:250:3, 7:391:5, 1:].compute(), rgb_image[13:250:3, 7:391:5, 1:])
    np.testing.assert_array_equal(src.data[::-7, 5].compute(), rgb_image[::-7, 5])
    np.testing.assert_array_equal(src.data[299, 399].compute(), rgb_image[299, 399])


def test_uncompressed_gray_big_endian_and_float_tiles(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    cases = {
        "u2be": (rng.integers(0, 65535, (97, 130), dtype=np.uint16), ">"),
        "f4": (rng.random((97, 130, 2), dtype=np.float32), "<"),
        "u1": (rng.integers(0, 255, (97, 130), dtype=np.uint8), "<"),
    }
    sources = {}
    for name, (data, order) in cases.items():
        path = tmp_path / f"{name}.tif"
        tifffile.imwrite(path, data, tile=(32, 48), byteorder=order,
                         photometric="minisblack", planarconfig="contig")
        sources[name] = read_image(path, chunks=64)
        assert _reader(sources[name]).segment == (32, 48)
    _no_tifffile_reads(monkeypatch)
    for name, (data, _) in cases.items():
        got = sources[name].data.compute(scheduler="sync")
        assert got.dtype == data.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, data)


def test_uncompressed_strips_read_directly(tmp_path, rgb_image, monkeypatch):
    """Strips that are not one contiguous run (here: a second page between them) are
    read strip by strip; the last strip holds only the remaining rows."""
    from dataclasses import replace

    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, rgb_image, rowsperstrip=7, photometric="rgb")
    src = read_image(path, chunks=21)
    reader = _reader(src)
    assert reader.memmap  # contiguous: memory-mapped
    from bigquant.io.tiff_read import _segment_layout

    with tifffile.TiffFile(path) as tf:
        lev = tf.series[0].levels[0]
        segment, file_dtype, compressed = _segment_layout(tf, lev, "YXS", (300, 400, 3), np.dtype("u1"))
    assert segment == (7, 400) and not compressed
    direct = replace(reader, memmap=False, segment=segment, tiled=False, file_dtype=file_dtype)
    _no_tifffile_reads(monkeypatch)
    np.testing.assert_array_equal(direct[:, :], rgb_image)
    np.testing.assert_array_equal(direct[5:296, 17:33], rgb_image[5:296, 17:33])
    np.testing.assert_array_equal(direct[294:300, :, 2:], rgb_image[294:300, :, 2:])


def test_direct_reads_of_pages_series_and_levels(tmp_path, rgb_image, monkeypatch):
    path = tmp_path / "multi.tif"
    gray = rgb_image[:50, :60, 0]
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(rgb_image, tile=(64, 64), subifds=1, photometric="rgb")
        tw.write(rgb_image[::2, ::2], tile=(32, 32), subfiletype=1, photometric="rgb")
        tw.write(gray, tile=(16, 32), photometric="minisblack")
        tw.write(rgb_image, tile=(64, 64), photometric="rgb", compression="zlib")
    full, low = read_image(path), read_image(path, level=1)
    second, third = read_image(path, series=1), read_image(path, series=2)
    assert [_reader(s).segment for s in (full, low, second)] == [(64, 64), (32, 32), (16, 32)]
    third_reader = _reader(third)  # compressed: decoded tile by tile
    assert third_reader.segment == (64, 64) and third_reader.compressed
    np.testing.assert_array_equal(third.data.compute(), rgb_image)
    _no_tifffile_reads(monkeypatch)
    np.testing.assert_array_equal(full.data.compute(), rgb_image)
    np.testing.assert_array_equal(low.data.compute(), rgb_image[::2, ::2])
    np.testing.assert_array_equal(second.data.compute(), gray)


def test_planar_and_palette_files_keep_their_paths(tmp_path, rgb_image):
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(rgb_image, -1, 0), planarconfig="separate",
                     photometric="rgb", tile=(64, 64))
    assert _reader(read_image(path)).segment is None
    labels = np.random.default_rng(0).integers(0, 4, (60, 70), dtype=np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :4] = np.arange(12, dtype=np.uint16).reshape(3, 4) * 20 * 257
    path = tmp_path / "pal.tif"
    tifffile.imwrite(path, labels, photometric="palette", colormap=cmap, tile=(16, 16))
    src = read_image(path)
    assert _reader(src).segment == (16, 16)
    np.testing.assert_array_equal(src.data.compute(), (cmap.T[:4] // 257).astype(np.uint8)[labels])


def test_direct_read_of_file_truncated_after_open(tmp_path, rgb_image):
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, rgb_image, tile=(64, 64), photometric="rgb")
    src = read_image(path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(ImageReadError, match="raw.tif"):
        src.data.compute(scheduler="sync")


@pytest.mark.distributed
def test_direct_reads_on_worker_processes(local_cluster, tmp_path, rgb_image):
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, rgb_image, tile=(64, 64), photometric="rgb", bigtiff=True)
    src = read_image(path, chunks=128)
    assert _reader(src).segment == (64, 64)
    pixels = local_cluster.compute(src.data).result()
    np.testing.assert_array_equal(pixels, rgb_image)
    pids = local_cluster.run(lambda: __import__("os").getpid())
    assert __import__("os").getpid() not in pids.values()
