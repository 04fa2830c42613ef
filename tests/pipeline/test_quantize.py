"""Tests of bigquant.quantize: the read -> fit -> write pipeline."""

from __future__ import annotations

import functools
import json
import pathlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from bigquant import quantize, read_image
from bigquant.errors import (
    FewColoursWarning,
    ImageReadError,
    ImageWriteError,
    InvalidParameterError,
)
from tests.support.oracle import nearest_colour


@pytest.fixture
def count_reads(monkeypatch):
    """Count blocks read from TIFF files (in this process: threaded scheduler)."""
    from bigquant.io.tiff_read import TiffBlockReader

    calls = []
    original = TiffBlockReader.__getitem__

    def counting(self, key):
        calls.append(key)
        return original(self, key)

    monkeypatch.setattr(TiffBlockReader, "__getitem__", counting)
    return calls


def test_quantize_tiled_tiff_end_to_end(tmp_path, tiled_tiff):
    out = tmp_path / "q.tif"
    model = quantize(tiled_tiff, out, 8, random_state=0, tile=64,
                     palette_out=tmp_path / "pal.json", preview=tmp_path / "prev.png")
    assert model.cluster_centers_.shape == (8, 3)
    src = np.asarray(read_image(tiled_tiff).data.compute())
    palette, error = model.palette()
    # every pixel is written as its nearest palette colour (lowest index on ties)
    d = ((src[:, :, None, :].astype(np.float64) - palette[None, None].astype(np.float64)) ** 2).sum(-1)
    expected = d.argmin(-1)
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        np.testing.assert_array_equal(page.asarray(), expected)
        np.testing.assert_array_equal(page.colormap[:, :8].T, palette.astype(np.uint16) * 257)
    # the palette: the centres rounded and refined, never worse than rounding them
    rounded = np.rint(model.cluster_centers_)
    rounded_error = ((src[:, :, None, :] - rounded[None, None]) ** 2).sum(-1).min(-1).sum()
    assert error == d.min(-1).sum() <= rounded_error
    doc = json.loads((tmp_path / "pal.json").read_text())
    assert doc["n_colours"] == 8 and doc["dtype"] == "uint8"
    np.testing.assert_array_equal(doc["colours"], palette)
    np.testing.assert_array_equal(doc["palette"], palette)
    assert doc["error"] == error
    assert doc["psnr"] == pytest.approx(10 * np.log10(255**2 * src.size / error))
    assert doc["shape"] == [300, 400, 3]
    with Image.open(tmp_path / "prev.png") as im:
        assert im.mode == "RGB" and max(im.size) <= 1024
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pal.json", "prev.png", "q.tif", "q.tif.aux.xml",
                                                          "tiled.tif"]


@pytest.fixture
def count_decodes(monkeypatch):
    """Count the compressed tiles decoded (in this process: threaded scheduler), by tile index."""
    from bigquant.io.tiff_read import _SegmentIndex

    calls: list[int] = []
    original = _SegmentIndex.decoded

    def counting(self, fh, i, *args):
        calls.append(i)
        return original(self, fh, i, *args)

    monkeypatch.setattr(_SegmentIndex, "decoded", counting)
    return calls


@pytest.mark.parametrize("tile", [64, 96])
def test_histogram_strategy_decodes_every_tile_once(tmp_path, tiled_tiff, count_decodes, tile):
    """Decoded once to count colours; the write reads the decoded tiles back from the pixel spool,
    tile by tile when the output tiles are whole input tiles (64 over 64) or not (96 over 64),
    and the file is the one the tiles decoded again give; the spool is gone after."""
    import bigquant.io.spool as spool

    src = read_image(tiled_tiff, chunks=192)
    quantize(src, tmp_path / "q.tif", 6, strategy="histogram", random_state=0, tile=tile,
             preview=tmp_path / "p.png", pyramid=True)
    n_tiles = 5 * 7  # 300 x 400 in 64 px tiles
    assert sorted(count_decodes) == list(range(n_tiles))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the spool beside q.tif is gone
    with pytest.MonkeyPatch.context() as mp:  # no room for a spool: every tile is decoded twice
        mp.setattr(spool, "FREE_MARGIN", 2**62)
        count_decodes.clear()
        quantize(src, tmp_path / "again.tif", 6, strategy="histogram", random_state=0, tile=tile,
                 preview=tmp_path / "p2.png", pyramid=True)
    assert sorted(count_decodes) == sorted(list(range(n_tiles)) * 2)
    assert (tmp_path / "q.tif").read_bytes() == (tmp_path / "again.tif").read_bytes()


def test_pixel_spool_in_scratch_and_only_when_complete(tmp_path, tiled_tiff, count_decodes, monkeypatch):
    """The spool goes under ``scratch``; a fit that leaves a tile unread leaves it unused (decoded again)."""
    import bigquant.io.spool as spool

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = []
    real = spool.TileSpool.complete

    def complete(self):
        seen.append(pathlib.Path(self.data).parent.parent)
        with open(self.marks, "r+b") as fh:  # as if the fit had not read tile 3
            fh.seek(3)
            fh.write(b"\0")
        return real(self)

    monkeypatch.setattr(spool.TileSpool, "complete", complete)
    quantize(read_image(tiled_tiff, chunks=128), tmp_path / "q.tif", 6, random_state=0, tile=64,
             scratch=scratch)
    assert seen == [scratch] and list(scratch.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.tif", "q.tif.aux.xml", "scratch", "tiled.tif"]
    assert sorted(count_decodes) == sorted(list(range(5 * 7)) * 2)
    with tifffile.TiffFile(tmp_path / "q.tif") as tf:
        palette = tf.pages[0].colormap[:, :6].T // 257
    expected = nearest_colour(tifffile.imread(tiled_tiff), palette)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "q.tif"), expected)


def test_rgb_mode_and_pixels_strategy(tmp_path, rgb_image):
    model = quantize(rgb_image, tmp_path / "q.tif", 5, strategy="pixels", mode="rgb",
                     random_state=0, tile=32, max_iter=20)
    back = tifffile.imread(tmp_path / "q.tif")
    assert back.shape == rgb_image.shape and back.dtype == np.uint8
    colours = np.rint(model.cluster_centers_).astype(np.uint8)
    assert {tuple(c) for c in back.reshape(-1, 3)} <= {tuple(c) for c in colours}


def test_png_labels_are_looked_up_by_the_writer(tmp_path, tiled_tiff, monkeypatch):
    """A PNG output gets the colour -> label table, as a TIFF does: labels looked up tile by tile."""
    import imagecodecs

    import bigquant.pipeline.quantize as pipeline

    lookups = []
    real = pipeline.write_image

    def spy(*args, **kwargs):
        lookups.append(kwargs.get("_lookup") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "write_image", spy)
    quantize(tiled_tiff, tmp_path / "q.png", 8, random_state=0, tile=64)
    assert lookups == [True]
    with Image.open(tmp_path / "q.png") as im:
        labels, palette = np.asarray(im), np.array(im.getpalette()).reshape(-1, 3)[:8]
    np.testing.assert_array_equal(labels, nearest_colour(tifffile.imread(tiled_tiff), palette))
    np.testing.assert_array_equal(imagecodecs.png_decode((tmp_path / "q.png").read_bytes()), palette[labels])


def test_gray_image_is_fitted_as_one_channel(tmp_path, rgb_image):
    gray = rgb_image[..., 1]
    model = quantize(gray, tmp_path / "g.png", 4, random_state=0)
    assert model.cluster_centers_.shape == (4, 1)
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "P"
        pal = np.array(im.getpalette()[:12]).reshape(4, 3)
    assert (pal[:, 0] == pal[:, 1]).all() and (pal[:, 1] == pal[:, 2]).all()


def test_uint16_source_keeps_16_bit_colours(tmp_path, rgb_image):
    deep = rgb_image.astype(np.uint16) * 257 + 3
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, deep, tile=(64, 64), photometric="rgb")
    model = quantize(path, tmp_path / "q.tif", 4, random_state=0, tile=64, strategy="pixels",
                     max_iter=10, display_range="0,65535")
    pal, _ = model.palette()
    assert pal.dtype == np.uint16
    np.testing.assert_array_equal(pal, np.rint(model.cluster_centers_))
    with tifffile.TiffFile(tmp_path / "q.tif") as tf:
        cmap = tf.pages[0].colormap
    # the colour table shows them at 8 bits (GDAL reads 8-bit x 257; issue #23), over the range asked
    np.testing.assert_array_equal(cmap[:, :4].T, np.rint(pal / 257.0) * 257)


def test_few_colours_zarr_output(tmp_path, few_colour_image):
    import zarr

    with pytest.warns(FewColoursWarning):
        model = quantize(few_colour_image, tmp_path / "q.zarr", 10, random_state=0, tile=32)
    assert len(model.cluster_centers_) == 10 and len(np.unique(model.cluster_centers_, axis=0)) == 6
    z = zarr.open_array(str(tmp_path / "q.zarr"), mode="r")
    pal = np.array(z.attrs["palette"], dtype=np.uint8)
    np.testing.assert_array_equal(pal[z[:]], few_colour_image)


def test_outputs_checked_before_reading(tmp_path, tiled_tiff, count_reads, count_decodes):
    (tmp_path / "exists.tif").write_bytes(b"x")
    with pytest.raises(ImageWriteError, match="exists.tif.*exists"):
        quantize(tiled_tiff, tmp_path / "exists.tif", 4)
    with pytest.raises(ImageWriteError, match="p.json.*exists"):
        (tmp_path / "p.json").write_text("{}")
        quantize(tiled_tiff, tmp_path / "new.tif", 4, palette_out=tmp_path / "p.json")
    with pytest.raises(InvalidParameterError, match="tile=30"):
        quantize(tiled_tiff, tmp_path / "new.tif", 4, tile=30)
    with pytest.raises(InvalidParameterError, match="mode="):
        quantize(tiled_tiff, tmp_path / "new.tif", 4, mode="cmyk")
    with pytest.raises(ImageWriteError, match="suffix"):
        quantize(tiled_tiff, tmp_path / "new.gif", 4)
    assert count_reads == [] and count_decodes == []
    assert not (tmp_path / "new.tif").exists()
    with pytest.raises(ImageReadError, match="missing.tif"):
        quantize(tmp_path / "missing.tif", tmp_path / "new.tif", 4)


@pytest.mark.distributed
def test_quantize_on_worker_processes(local_cluster, tmp_path, tiled_tiff):
    from distributed import get_task_stream

    with get_task_stream(local_cluster) as ts:
        model = quantize(tiled_tiff, tmp_path / "q.tif", 6, client=local_cluster,
                         random_state=0, tile=64, pyramid=True, chunks=128)
    keys = [str(t["key"]) for t in ts.data]
    assert any("bq-write" in k for k in keys)
    # the passes as distributed spans: the fit's histogram, then labels looked up while writing
    spans = local_cluster.run_on_scheduler(
        lambda dask_scheduler: [s.name for s in dask_scheduler.extensions["spans"].spans.values()])
    assert ("bq-histogram",) in spans and ("bq-labels", "bq-write") in spans, spans
    src = np.asarray(read_image(tiled_tiff).data.compute(scheduler="sync"))
    expected = nearest_colour(src, model.palette()[0])
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "q.tif"), expected)


# --- labels looked up by the TIFF writer, tile by tile --------------------------


@pytest.mark.parametrize("mode", ["palette", "rgb"])
def test_writer_lookup_gives_the_model_labels(tmp_path, rgb_image, monkeypatch, mode):
    """TIFF output of a histogram fit: the encoder looks labels up per tile (no chunk of
    labels is computed), bit-identical to ``labels_``, pyramid and preview included."""
    import bigquant.cluster.base

    path = tmp_path / "src.tif"
    # 300 x 400 with 64 px output tiles and 128 px chunks: partial edge tiles
    tifffile.imwrite(path, rgb_image, tile=(64, 64), photometric="rgb")
    from bigquant.io.tiff_read import TiffBlockReader

    calls = []
    original = bigquant.cluster.base._block_lookup
    monkeypatch.setattr(bigquant.cluster.base, "_block_lookup",
                        lambda *a: calls.append(a[0].size) or original(*a))
    blocks, windows = [], []
    getitem, segment_windows = TiffBlockReader.__getitem__, TiffBlockReader.segment_windows
    monkeypatch.setattr(TiffBlockReader, "__getitem__", lambda self, key: blocks.append(key) or getitem(self, key))
    monkeypatch.setattr(TiffBlockReader, "segment_windows",
                        lambda self, w, *a: windows.append(w) or segment_windows(self, w, *a))
    model = quantize(path, tmp_path / "q.tif", 7, strategy="histogram", mode=mode,
                     random_state=0, tile=64, chunks=128, pyramid=2, preview=tmp_path / "p.png")
    assert not any(calls)  # dask's meta probe only
    # small blocks are counted from whole blocks; the writer reads tile by tile
    assert len(blocks) == read_image(path, chunks=128).data.npartitions
    assert len(windows) == len(blocks) + 5 * 7  # each getitem reads through segment_windows
    model.labels_.compute()
    assert any(calls)  # labels_ itself still uses the kmeans lookup
    colours = model.palette()[0]
    labels = nearest_colour(rgb_image, colours)
    stored = labels if mode == "palette" else colours[labels]
    with tifffile.TiffFile(tmp_path / "q.tif") as tf:
        page = tf.pages[0]
        np.testing.assert_array_equal(page.asarray(), stored)
        np.testing.assert_array_equal(page.pages[0].asarray(), stored[::2, ::2])
        np.testing.assert_array_equal(page.pages[1].asarray(), stored[::4, ::4])
    with Image.open(tmp_path / "p.png") as im:
        assert im.size == (400, 300)


def test_lookup_window_matches_kernel_lookup_with_absent_colours():
    from bigquant import kernels
    from bigquant.kernels import lookup_window

    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    centers = rng.random((5, 3)) * 255
    known = kernels.encode_colours(block.reshape(-1, 3)[::2], 8)  # every other pixel in the table
    codes = np.unique(known)
    labels = kernels.assign_labels(kernels.decode_colours(codes, 3, 8, np.uint8), centers, np.uint8)[0]
    lut = kernels.build_lut(codes, labels, 24, 5)
    expected = kernels.lookup_labels(block.reshape(-1, 3), 8, lut, 5, centers, np.uint8).reshape(37, 53)
    out = np.full((16, 16), 99, np.uint8)
    lookup_window(block, (30, 37, 40, 53), 8, lut, 5, np.ascontiguousarray(centers.T), out)
    np.testing.assert_array_equal(out[:7, :13], expected[30:, 40:])
    assert (out[7:] == 99).all() and (out[:, 13:] == 99).all()


def test_uint16_gray_histogram_lookup(tmp_path):
    gray = (np.random.default_rng(1).normal(30000, 6000, (90, 110)).clip(0, 65535)).astype(np.uint16)
    model = quantize(gray, tmp_path / "g.tif", 5, strategy="histogram", random_state=0, tile=32)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "g.tif"), nearest_colour(gray, model.palette()[0]))


# --- the histogram pass: tiles counted as read, Morton order --------------------


def _expected_histogram(img):
    flat = img.reshape(-1, img.shape[-1]).astype(np.uint32)
    codes = np.zeros(len(flat), np.uint32)
    for c in range(flat.shape[1]):
        codes = (codes << (8 * img.dtype.itemsize)) | flat[:, c]
    return np.unique(codes, return_counts=True)


@pytest.mark.parametrize("chunks", [None, 256, (1024, 768)])
def test_histogram_of_direct_tiff_counts_tiles_as_read(tmp_path, monkeypatch, chunks):
    """Blocks of >= 1 M pixels are counted from the tiles as they are read (no block
    read), small ones from the block; both in Morton order, merged to usual codes."""
    from bigquant import colour_histogram
    from bigquant.io.sample import make_sample_image
    from bigquant.io.tiff_read import TiffBlockReader

    img = make_sample_image((1100, 1300), seed=4)
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, img, tile=(128, 192), photometric="rgb")
    src = read_image(path, chunks=chunks)
    blocks = []
    original = TiffBlockReader.__getitem__
    monkeypatch.setattr(TiffBlockReader, "__getitem__",
                        lambda self, key: blocks.append(key) or original(self, key))
    hist = colour_histogram(src.data)
    codes, counts = _expected_histogram(img)
    np.testing.assert_array_equal(hist.codes, codes)
    np.testing.assert_array_equal(hist.counts, counts)
    assert hist.counts.dtype == np.int64 and hist.codes.dtype == np.uint32
    np.testing.assert_array_equal(hist.colours, img.reshape(-1, 3)[np.unique(
        img.reshape(-1, 3).astype(np.uint32) @ np.array([65536, 256, 1], np.uint32),
        return_index=True)[1]])
    big = [c for c in zip(*[np.repeat(src.data.chunks[0], len(src.data.chunks[1])),
                           np.tile(src.data.chunks[1], len(src.data.chunks[0]))])
           if c[0] * c[1] * 16 >= 1 << 24]
    assert len(blocks) == src.data.npartitions - len(big)


def test_histogram_of_other_arrays_and_types(tmp_path):
    from bigquant import colour_histogram
    from bigquant.io.sample import make_sample_image

    img = make_sample_image((1030, 1050), seed=5)
    import dask.array as da

    for data in (img, img[..., :1], img[..., :2], (img[..., :1].astype(np.uint16) * 251)):
        hist = colour_histogram(da.from_array(data, chunks=(1030, 1050, data.shape[2])))
        codes, counts = _expected_histogram(data)
        np.testing.assert_array_equal(hist.codes, codes)
        np.testing.assert_array_equal(hist.counts, counts)
    gray = img[..., 1]
    path = tmp_path / "g.tif"
    tifffile.imwrite(path, gray, tile=(256, 256))
    src = read_image(path)
    hist = colour_histogram(src.data[..., None])
    codes, counts = _expected_histogram(gray[..., None])
    np.testing.assert_array_equal(hist.codes, codes)
    np.testing.assert_array_equal(hist.counts, counts)


@pytest.mark.distributed
def test_histogram_tiles_counted_on_worker_processes(local_cluster, tmp_path):
    from bigquant import colour_histogram
    from bigquant.io.sample import make_sample_image

    img = make_sample_image((1100, 1000), seed=6)
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, img, tile=(128, 128), photometric="rgb", bigtiff=True)
    src = read_image(path)
    with local_cluster.as_current():
        hist = colour_histogram(src.data)
    codes, counts = _expected_histogram(img)
    np.testing.assert_array_equal(hist.codes, codes)
    np.testing.assert_array_equal(hist.counts, counts)


def test_histogram_partials_keep_uint32_counts_until_they_could_overflow():
    from bigquant.kernels import merge_counts, morton_to_codes

    a = (np.array([1, 5, 9], np.uint32), np.array([3, 4, 2**31], np.uint32))
    b = (np.array([5, 9], np.uint32), np.array([1, 2**31], np.uint32))
    codes, counts = merge_counts([a, (np.array([2], np.uint32), np.array([7], np.uint32))])
    assert counts.dtype == np.uint32
    np.testing.assert_array_equal(codes, [1, 2, 5, 9])
    codes, counts = merge_counts([a, b])  # 2**32 does not fit: int64
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [3, 5, 2**32])
    # Morton code 0b100 is red 1 (red bits are the highest of each triple)
    codes, counts = morton_to_codes((np.array([0b001, 0b100], np.uint32), np.array([5, 6], np.uint32)))
    np.testing.assert_array_equal(codes, [1, 1 << 16])
    np.testing.assert_array_equal(counts, [5, 6])
    assert counts.dtype == np.int64


@pytest.mark.distributed
def test_direct_tiff_quantize_on_worker_processes(local_cluster, tmp_path):
    """Uncompressed input on worker processes: tiles counted as read (large blocks),
    labels looked up and encoded tile by tile by the workers."""
    from distributed import get_task_stream

    from bigquant.io.sample import make_sample_image

    img = make_sample_image((1100, 1030), seed=7)
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, img, tile=(128, 128), photometric="rgb", bigtiff=True)
    with get_task_stream(local_cluster) as ts:
        model = quantize(path, tmp_path / "q.tif", 6, client=local_cluster, random_state=0,
                         tile=256, pyramid=True)
    prefixes = {str(t["key"]).split("-")[1] for t in ts.data if "bq-" in str(t["key"])}
    assert {"count", "write"} <= prefixes and "read" not in prefixes, prefixes
    expected = nearest_colour(img, model.palette()[0])
    with tifffile.TiffFile(tmp_path / "q.tif") as tf:
        np.testing.assert_array_equal(tf.pages[0].asarray(), expected)
        np.testing.assert_array_equal(tf.pages[0].pages[0].asarray(), expected[::2, ::2])


@pytest.mark.parametrize("tile", [64, 96])
def test_applying_a_palette_decodes_every_tile_once(tmp_path, tiled_tiff, count_decodes, tile):
    """A given palette on 8-bit data: no histogram pass, each tile read once to map and write it."""
    palette = np.array([[0, 0, 0], [255, 255, 255], [200, 40, 40], [40, 40, 200]], np.uint8)
    src = read_image(tiled_tiff, chunks=192)
    quantize(src, tmp_path / "q.tif", palette=palette, tile=tile, preview=tmp_path / "p.png", pyramid=True)
    assert sorted(count_decodes) == list(range(5 * 7))
    expected = nearest_colour(np.asarray(read_image(tiled_tiff).data), palette)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "q.tif"), expected)


def test_few_16_bit_values_are_read_twice_and_measured_without_a_pass(tmp_path, count_decodes, monkeypatch):
    """A uint16 image of 500 distinct colours: the grid pass counts them, then the write pass; the quality
    report comes from the counted values (the same figures as without the count, which reads every tile
    once more: a Lloyd pass; its quality is measured in the write pass, not in a pass of its own)."""
    from bigquant.cluster import grid as grid_module
    from bigquant.pipeline import quantize as quantize_module

    # every pass decodes (no pixel spool): the decodes count the passes
    monkeypatch.setattr(quantize_module, "_spool_worth_it", lambda *args: False)
    rng = np.random.default_rng(5)
    values = rng.integers(0, 65536, (500, 3)).astype(np.uint16)
    image = values[rng.integers(0, 500, (300, 400))]
    src = tmp_path / "few16.tif"
    tifffile.imwrite(src, image, tile=(64, 64), photometric="rgb", compression="zlib")
    n_tiles = 5 * 7
    model = quantize(src, tmp_path / "q.tif", 8, random_state=0, measure=True, chunks=128)
    few = np.bincount(count_decodes, minlength=n_tiles)
    assert model.strategy_ == "grid" and model.value_counts() is not None
    # (the range probe reads 16 windows of 256 px: here every tile once more)
    assert few.max() <= 3
    written = tifffile.imread(tmp_path / "q.tif")
    palette = model.palette()[0].astype(np.float64)
    np.testing.assert_array_equal(written, nearest_colour(image, palette))
    error = float(((image.astype(np.float64) - palette[written]) ** 2).sum())
    assert model.quality_["psnr"] == pytest.approx(10 * np.log10(65535.0**2 * image.size / error), rel=1e-12)
    assert model.quality_["pixels"] == 300 * 400

    count_decodes.clear()
    monkeypatch.setattr(grid_module, "_count_distinct", lambda X, valid: None)
    again = quantize(src, tmp_path / "q2.tif", 8, random_state=0, measure=True, chunks=128)
    assert again.value_counts() is None
    np.testing.assert_array_equal(np.bincount(count_decodes, minlength=n_tiles), few + 1)
    np.testing.assert_array_equal(again.cluster_centers_, model.cluster_centers_)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "q2.tif"), written)
    assert again.quality_["psnr"] == pytest.approx(model.quality_["psnr"], rel=1e-12)
    assert again.quality_["delta_e_ok"] == pytest.approx(model.quality_["delta_e_ok"], rel=1e-9)


def test_many_16_bit_values_are_measured_in_the_write_pass(tmp_path, count_decodes):
    """A uint16 image of many distinct colours: the quality report costs no read of its own (the write
    pass labels and measures each chunk), and its figures are those of the file written."""
    from bigquant.kernels.spaces import to_space

    rng = np.random.default_rng(11)
    base = rng.integers(0, 65536, (40, 3)).astype(np.int64)
    image = np.clip(base[rng.integers(0, 40, (300, 400))] + rng.integers(-900, 901, (300, 400, 3)), 0, 65535)
    image = image.astype(np.uint16)
    src = tmp_path / "many16.tif"
    tifffile.imwrite(src, image, tile=(64, 64), photometric="rgb", compression="zlib")
    n_tiles = 5 * 7
    silent = quantize(src, tmp_path / "q0.tif", 8, random_state=0, measure=False, chunks=128)
    reads = np.bincount(count_decodes, minlength=n_tiles)
    count_decodes.clear()
    model = quantize(src, tmp_path / "q.tif", 8, random_state=0, measure=True, chunks=128)
    assert model.strategy_ == "grid" and model.value_counts() is None
    np.testing.assert_array_equal(np.bincount(count_decodes, minlength=n_tiles), reads)
    assert silent.quality_ is None
    written = tifffile.imread(tmp_path / "q.tif")
    np.testing.assert_array_equal(written, tifffile.imread(tmp_path / "q0.tif"))
    palette = model.palette()[0].astype(np.float64)
    x = image.reshape(-1, 3).astype(np.float64)
    p = palette[written.reshape(-1)]
    error = float(((x - p) ** 2).sum())
    delta_e = float(np.linalg.norm(to_space(x, "oklab", 65535) - to_space(p, "oklab", 65535), axis=1).mean() / 100)
    assert model.quality_["psnr"] == pytest.approx(10 * np.log10(65535.0**2 * image.size / error), rel=1e-12)
    assert model.quality_["delta_e_ok"] == pytest.approx(delta_e, rel=1e-6)  # float32 OKLab in the kernels
    assert model.quality_["pixels"] == 300 * 400


def test_16_bit_tiles_are_decoded_once(tmp_path, count_decodes, monkeypatch):
    """A deflate-compressed uint16 tiled TIFF of many values: every tile is decoded once (and spooled;
    here by the range probe, whose 256-px windows are whole tiles), the grid pass, the Lloyd pass and
    the write read the spool back; the file is the one written without the spool (every pass decoding:
    the probe, the grid pass, each Lloyd pass and the write)."""
    from bigquant.pipeline import quantize as quantize_module

    rng = np.random.default_rng(12)
    base = rng.integers(0, 65536, (40, 3)).astype(np.int64)
    image = np.clip(base[rng.integers(0, 40, (320, 384))] + rng.integers(-900, 901, (320, 384, 3)), 0, 65535)
    src = tmp_path / "many16.tif"
    tifffile.imwrite(src, image.astype(np.uint16), tile=(64, 64), photometric="rgb", compression="zlib",
                     predictor=True)
    n_tiles = 5 * 6
    model = quantize(src, tmp_path / "q.tif", 8, random_state=0, measure=True, chunks=128)
    assert model.strategy_ == "grid" and model.value_counts() is None and model.n_iter_ >= 1
    decodes = np.bincount(count_decodes, minlength=n_tiles)
    np.testing.assert_array_equal(decodes, 1)
    count_decodes.clear()
    monkeypatch.setattr(quantize_module, "_spool_worth_it", lambda *args: False)
    again = quantize(src, tmp_path / "q2.tif", 8, random_state=0, measure=True, chunks=128)
    np.testing.assert_array_equal(np.bincount(count_decodes, minlength=n_tiles), decodes + 2 + again.n_iter_)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "q2.tif"), tifffile.imread(tmp_path / "q.tif"))
    assert again.quality_ == model.quality_


@pytest.mark.parametrize(("k", "tol", "passes", "tile"), [(8, 1e-4, 1, 128), (12, 1e-9, 13, 128), (8, 1e-4, 1, 256)])
def test_16_bit_first_pass_is_made_in_the_write(tmp_path, count_decodes, monkeypatch, k, tol, passes, tile):
    """The grid fit's first exact pass over the pixels is made in the write's read, not in one of its own:
    the file, its attribute table, the palette JSON, the centres, inertia, passes and quality are those of
    the fit made before the write.  When the pass moves the centres (k = 12 here needs 13 passes to
    reach a tol this small), the passes left run after it and the image is written again: the same file.
    Output tiles that do not hold whole chunks (256 over 128) are read in other blocks: no pass with the write
    (nor below ``PASS_WITH_WRITE_MIN_PIXELS``, where a second pass is more common)."""
    from bigquant.cluster import points as points_module
    from bigquant.pipeline import quantize as quantize_module

    monkeypatch.setattr(quantize_module, "_spool_worth_it", lambda *args: False)  # every read decodes
    monkeypatch.setattr(quantize_module, "PASS_WITH_WRITE_MIN_PIXELS", 0)  # small images too
    rng = np.random.default_rng(1)
    base = rng.integers(0, 65536, (8, 3)).astype(np.int64)
    image = np.clip(base[rng.integers(0, 8, (320, 384))] + rng.integers(-2000, 2001, (320, 384, 3)), 0, 65535)
    src = tmp_path / "blobs16.tif"
    tifffile.imwrite(src, image.astype(np.uint16), tile=(64, 64), photometric="rgb", compression="zlib")
    pixel_passes: list[int] = []
    original = points_module.DaskPoints.partial_sums

    def counting(self, centers):
        pixel_passes.append(1)
        return original(self, centers)

    monkeypatch.setattr(points_module.DaskPoints, "partial_sums", counting)

    def run(name: str) -> tuple[object, np.ndarray, int]:
        count_decodes.clear()
        pixel_passes.clear()
        model = quantize(src, tmp_path / f"{name}.tif", k, random_state=0, measure=True, chunks=128, tol=tol,
                         palette_out=tmp_path / f"{name}.json", tile=tile)
        return model, np.bincount(count_decodes, minlength=30), len(pixel_passes)

    model, decodes, made = run("fused")
    monkeypatch.setattr(quantize_module, "_pass_with_write", lambda *args: False)
    before, decodes_before, made_before = run("before")
    assert model.strategy_ == "grid" and model.value_counts() is None
    assert model.n_iter_ == before.n_iter_ == made_before == passes
    deferred = tile == 128
    assert made == passes - deferred  # the first in the write
    # reads: the range probe, the grid pass, the Lloyd passes, the write (twice when the centres moved)
    np.testing.assert_array_equal(decodes, decodes_before - deferred + (deferred and passes > 1))
    assert (tmp_path / "fused.tif").read_bytes() == (tmp_path / "before.tif").read_bytes()
    assert ((tmp_path / "fused.tif.aux.xml").read_text()
            == (tmp_path / "before.tif.aux.xml").read_text().replace("before.tif", "fused.tif"))
    np.testing.assert_array_equal(model.cluster_centers_, before.cluster_centers_)
    assert model.inertia_ == before.inertia_  # bit for bit: the same blocks added up in the same tree
    assert model.quality_ == before.quality_
    docs = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("fused", "before")]
    for doc in docs:
        doc.pop("output"), doc.pop("seconds")
    assert docs[0] == docs[1]
    monkeypatch.undo()
    assert not quantize_module._pass_with_write(read_image(src, chunks=128).data, None, None, None,
                                                tmp_path / "q.tif", 128)  # 0.12 MP


@pytest.mark.parametrize("fails", ["settle", "rewrite", None])
@pytest.mark.parametrize("existing", [False, True])
def test_a_write_made_with_an_unsettled_fit_replaces_nothing_until_it_settles(tmp_path, monkeypatch, fails, existing):
    """The image written in the pass that finishes the fit is provisional: should finishing the fit or
    writing the image again fail, it is removed with its attribute table and preview, and the files an
    ``overwrite`` was to replace are back as they were; once it settles, nothing else is left beside them."""
    from bigquant.pipeline import quantize as quantize_module

    monkeypatch.setattr(quantize_module, "PASS_WITH_WRITE_MIN_PIXELS", 0)
    rng = np.random.default_rng(1)
    base = rng.integers(0, 65536, (8, 3)).astype(np.int64)
    image = np.clip(base[rng.integers(0, 8, (320, 384))] + rng.integers(-2000, 2001, (320, 384, 3)), 0, 65535)
    src = tmp_path / "blobs16.tif"
    tifffile.imwrite(src, image.astype(np.uint16), tile=(64, 64), photometric="rgb", compression="zlib")
    dst, preview = tmp_path / "q.tif", tmp_path / "p.png"
    before = {dst: b"the user's image", tmp_path / "q.tif.aux.xml": b"<PAMDataset/>", preview: b"a preview"}
    if existing:
        for path, data in before.items():
            path.write_bytes(data)
    writes = []
    original_write = quantize_module.write_quantized
    original_settled = quantize_module._settled

    def write(*args, **kwargs):
        writes.append(1)
        if fails == "rewrite" and len(writes) == 2:
            raise OSError("disk full")
        return original_write(*args, **kwargs)

    def settle(*args):
        if fails == "settle":
            raise OSError("worker lost")
        return original_settled(*args)

    monkeypatch.setattr(quantize_module, "write_quantized", write)
    monkeypatch.setattr(quantize_module, "_settled", settle)
    # k = 12 at this tol moves the centres after the first pass (13 passes): the image is written again
    run = functools.partial(quantize, src, dst, 12, random_state=0, chunks=128, tol=1e-9, tile=128, preview=preview,
                            overwrite=existing)
    if fails is None:
        run()
        assert len(writes) == 2 and tifffile.imread(dst).shape == (320, 384)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs16.tif", "p.png", "q.tif", "q.tif.aux.xml"]
        return
    with pytest.raises(OSError):
        run()
    assert len(writes) == (1 if fails == "settle" else 2)
    names = ["blobs16.tif"] + (["p.png", "q.tif", "q.tif.aux.xml"] if existing else [])
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    if existing:
        assert all(path.read_bytes() == data for path, data in before.items())
