"""Tests of bigquant.io writing: TIFF palette/RGB/image, pyramids, zarr, PNG, atomicity."""

from __future__ import annotations


import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
from PIL import Image

from bigquant import read_image, write_image
from bigquant.errors import (
    ImageWriteError,
    InputTypeError,
    InvalidInputError,
    InvalidParameterError,
)

PALETTE = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 250], [10.4, 10.6, 9.5]], dtype=np.float64
)
COLOURS = np.rint(PALETTE).astype(np.uint8)


@pytest.fixture
def labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 5, (200, 260)).astype(np.int64)


@pytest.fixture
def lazy_labels(labels) -> da.Array:
    return da.from_array(labels, chunks=(64, 128))


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_palette_tiff_roundtrip_tifffile_and_pillow(tmp_path, labels, lazy_labels):
    out = write_image(lazy_labels, tmp_path / "q.tif", palette=PALETTE, tile=32)
    assert out == tmp_path / "q.tif"
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert tf.is_bigtiff
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (32, 32)
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.dtype == np.uint8
        assert page.bitspersample == 4  # 5 colours: packed two to a byte
        assert page.colormap.shape == (3, 16)
        np.testing.assert_array_equal(page.colormap[:, :5].T, COLOURS.astype(np.uint16) * 257)
        np.testing.assert_array_equal(page.asarray(), labels)
    with Image.open(out) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), labels)
        pal = np.array(im.getpalette()[:15]).reshape(5, 3)
        np.testing.assert_array_equal(pal, COLOURS)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), COLOURS[labels])
    assert _leftovers(tmp_path) == []


def test_rgb_mode_writes_colours(tmp_path, labels, lazy_labels):
    out = write_image(lazy_labels, tmp_path / "q.tif", palette=PALETTE, mode="rgb", tile=48)
    back = tifffile.imread(out)
    np.testing.assert_array_equal(back, COLOURS[labels])
    with Image.open(out) as im:
        assert im.mode == "RGB"


def test_gray_palette_rgb_mode_is_2d(tmp_path, labels):
    out = write_image(labels, tmp_path / "g.tif", palette=[[0], [60], [120], [180], [240]],
                      mode="rgb", tile=64)
    back = tifffile.imread(out)
    assert back.shape == labels.shape
    np.testing.assert_array_equal(back, (labels * 60).astype(np.uint8))


def test_uint16_palette_and_many_colours(tmp_path):
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 300, (64, 96))
    pal = rng.integers(0, 65535, (300, 3)).astype(np.uint16)
    out = write_image(lab, tmp_path / "big.tif", palette=pal, tile=32)
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert page.dtype == np.uint16
        assert page.colormap.shape == (3, 65536)
        np.testing.assert_array_equal(page.colormap[:, :300].T, pal)
        np.testing.assert_array_equal(page.asarray(), lab)
    rgb = write_image(lab, tmp_path / "big_rgb.tif", palette=pal, mode="rgb", tile=32)
    np.testing.assert_array_equal(tifffile.imread(rgb), pal[lab])
    with pytest.raises(InvalidParameterError, match="65536"):
        write_image(lab, tmp_path / "x.tif", palette=np.zeros((65537, 3)))


def test_labels_out_of_range_leave_nothing(tmp_path, labels):
    with pytest.raises(InvalidInputError, match="palette has 3 colours"):
        write_image(labels, tmp_path / "bad.tif", palette=PALETTE[:3], tile=32)
    assert list(tmp_path.iterdir()) == []


def test_failing_computation_leaves_nothing(tmp_path, lazy_labels):
    def boom(block, block_info=None):
        if block_info[0]["chunk-location"] == (2, 1):
            raise RuntimeError("worker died")
        return block

    bad = lazy_labels.map_blocks(boom, dtype=lazy_labels.dtype)
    with pytest.raises(RuntimeError, match="worker died"):
        write_image(bad, tmp_path / "fail.tif", palette=PALETTE, tile=32, pyramid=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("image", "photometric"),
    [
        (np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8), "RGB"),
        (np.random.default_rng(0).integers(0, 255, (90, 70, 4), dtype=np.uint8), "RGB"),
        (np.random.default_rng(0).integers(0, 65535, (90, 70), dtype=np.uint16), "MINISBLACK"),
        (np.random.default_rng(0).random((90, 70), dtype=np.float32), "MINISBLACK"),
    ],
)
def test_image_written_as_is(tmp_path, image, photometric):
    out = write_image(da.from_array(image, chunks=(40, 40) + image.shape[2:]),
                      tmp_path / "img.tif", tile=16)
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].photometric.name == photometric
        np.testing.assert_array_equal(tf.asarray(), image)


@pytest.mark.parametrize("compression", [None, "lzma", "zlib", "zstd", "lzw", "packbits"])
def test_compressions(tmp_path, labels, compression):
    out = write_image(labels, tmp_path / "c.tif", palette=PALETTE, tile=64,
                      compression=compression)
    np.testing.assert_array_equal(tifffile.imread(out), labels)
    out = write_image(labels, tmp_path / "c.tif", palette=PALETTE, tile=64, mode="rgb",
                      compression=compression, compression_level=9, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(out), COLOURS[labels])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"compression": "gzip9"}, InvalidParameterError, "compression='gzip9'"),
        ({"tile": 100}, InvalidParameterError, "tile=100"),
        ({"tile": 0}, InvalidParameterError, "tile=0"),
        ({"mode": "cmyk"}, InvalidParameterError, "mode='cmyk'"),
        ({"palette": np.zeros((3, 2))}, InvalidParameterError, "palette of shape"),
        ({"palette": [[np.nan, 0, 0]]}, InvalidParameterError, "NaN"),
        ({"pyramid": 9}, InvalidParameterError, "pyramid=9"),
    ],
)
def test_bad_parameters(tmp_path, labels, kwargs, error, match):
    kwargs = {"palette": PALETTE, "tile": 32} | kwargs
    with pytest.raises(error, match=match):
        write_image(labels, tmp_path / "x.tif", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_bad_data(tmp_path, labels):
    with pytest.raises(InputTypeError, match="float"):
        write_image(labels.astype(float), tmp_path / "x.tif", palette=PALETTE)
    with pytest.raises(InvalidInputError, match="2-D"):
        write_image(np.zeros((4, 4, 3), int), tmp_path / "x.tif", palette=PALETTE)
    with pytest.raises(InputTypeError, match="str"):
        write_image("labels", tmp_path / "x.tif", palette=PALETTE)


def test_existing_output_and_missing_directory(tmp_path, labels):
    out = write_image(labels, tmp_path / "q.tif", palette=PALETTE, tile=32)
    before = out.read_bytes()
    with pytest.raises(ImageWriteError, match="q.tif.*exists"):
        write_image(labels, out, palette=PALETTE, tile=32)
    assert out.read_bytes() == before
    write_image(labels[::-1], out, palette=PALETTE, tile=32, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(out), labels[::-1])
    with pytest.raises(ImageWriteError, match="does not exist"):
        write_image(labels, tmp_path / "no" / "q.tif", palette=PALETTE)
    with pytest.raises(ImageWriteError, match="suffix"):
        write_image(labels, tmp_path / "q.bmp", palette=PALETTE)


def test_pyramid_subifds_are_nearest_subsamples(tmp_path, labels, lazy_labels):
    out = write_image(lazy_labels, tmp_path / "p.tif", palette=PALETTE, tile=32, pyramid=True)
    with tifffile.TiffFile(out) as tf:
        levels = tf.series[0].levels
        assert [lv.shape for lv in levels] == [(200, 260), (100, 130), (50, 65), (25, 33), (13, 17)]
        for i, lv in enumerate(levels):
            np.testing.assert_array_equal(lv.asarray(), labels[:: 2**i, :: 2**i])
        assert len(tf.pages[0].subifds) == 4  # down to one 32 px tile
    np.testing.assert_array_equal(read_image(out, level=2).data.compute(),
                                  COLOURS[labels[::4, ::4]])
    out = write_image(lazy_labels, tmp_path / "p1.tif", palette=PALETTE, tile=32, pyramid=1,
                      mode="rgb")
    with tifffile.TiffFile(out) as tf:
        assert len(tf.series[0].levels) == 2
    assert _leftovers(tmp_path) == []


def test_unaligned_chunks_are_realigned(tmp_path, labels):
    odd = da.from_array(labels, chunks=(37, 51))
    out = write_image(odd, tmp_path / "odd.tif", palette=PALETTE, tile=32)
    np.testing.assert_array_equal(tifffile.imread(out), labels)


def test_each_chunk_is_computed_once(tmp_path, lazy_labels):
    calls = []

    def spy(block):
        if block.size:  # not dask's meta probe
            calls.append(block.shape)
        return block

    counted = lazy_labels.map_blocks(spy, dtype=lazy_labels.dtype)
    write_image(counted, tmp_path / "once.tif", palette=PALETTE, tile=64, pyramid=True,
                preview=tmp_path / "prev.png")
    assert len(calls) == lazy_labels.npartitions


def test_preview_png(tmp_path, labels, lazy_labels):
    write_image(lazy_labels, tmp_path / "q.tif", palette=PALETTE, tile=32,
                preview=tmp_path / "prev.png", preview_size=64)
    with Image.open(tmp_path / "prev.png") as im:
        assert max(im.size) == 64 and im.mode == "RGB"
        assert im.size == (64, 49)


def test_zarr_output(tmp_path, labels, lazy_labels):
    import zarr

    out = write_image(lazy_labels, tmp_path / "q.zarr", palette=PALETTE, tile=32)
    z = zarr.open_array(str(out), mode="r")
    assert z.chunks == (32, 32) and z.dtype == np.uint8
    np.testing.assert_array_equal(z[:], labels)
    np.testing.assert_array_equal(np.array(z.attrs["palette"]), COLOURS)
    out = write_image(lazy_labels, out, palette=PALETTE, tile=32, mode="rgb", overwrite=True,
                      compression=None, preview=tmp_path / "zp.png")
    np.testing.assert_array_equal(read_image(out).data.compute(), COLOURS[labels])
    assert (tmp_path / "zp.png").exists()
    with pytest.raises(ImageWriteError, match="exists"):
        write_image(lazy_labels, out, palette=PALETTE, tile=32)
    assert _leftovers(tmp_path) == []


def test_png_and_jpeg_outputs(tmp_path, labels, lazy_labels):
    out = write_image(lazy_labels, tmp_path / "q.png", palette=PALETTE)
    with Image.open(out) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), labels)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), COLOURS[labels])
    out = write_image(lazy_labels, tmp_path / "q_rgb.png", palette=PALETTE, mode="rgb")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), COLOURS[labels])
    out = write_image(lazy_labels, tmp_path / "q.jpg", palette=PALETTE)
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size == (260, 200)
    with pytest.raises(InvalidParameterError, match="256 colours"):
        write_image(labels, tmp_path / "many.png", palette=np.zeros((300, 3)))
    assert not (tmp_path / "many.png").exists()


def test_jpeg_size_guard(tmp_path, labels, monkeypatch):
    # JPEG is still written whole by Pillow; PNG is streamed (tests/io/test_png_write.py)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageWriteError, match=r"too large for JPEG.*\.png, \.tif"):
        write_image(labels, tmp_path / "q.jpg", palette=PALETTE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.distributed
def test_write_on_worker_processes(local_cluster, tmp_path, tiled_tiff, rgb_image):
    from distributed import get_task_stream

    src = read_image(tiled_tiff, chunks=128)
    labels = (src.data[..., 0] // 64).astype(np.uint8)  # 4 labels, computed on the workers
    with dask.config.set(scheduler=local_cluster), get_task_stream(local_cluster) as ts:
        out = write_image(labels, tmp_path / "w.tif", palette=PALETTE[:4], tile=64,
                          pyramid=True)
    np.testing.assert_array_equal(tifffile.imread(out), rgb_image[..., 0] // 64)
    keys = [str(t["key"]) for t in ts.data]
    assert sum("bq-write" in k for k in keys) == labels.npartitions
    assert _leftovers(tmp_path) == []
