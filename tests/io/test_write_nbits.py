"""Palette TIFFs packed at 1, 2 or 4 bits an index (GDAL's NBITS), read back by tifffile, GDAL and Pillow."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import tifffile
from PIL import Image

from bigquant import write_image
from bigquant.errors import InvalidParameterError
from bigquant.io.nbits import pack_rows
from bigquant.io.palette import index_bits

rasterio = pytest.importorskip("rasterio")


def _palette(k: int) -> np.ndarray:
    return np.random.default_rng(k).integers(0, 256, (k, 3)).astype(np.uint8)


def _labels(n_values: int, shape: tuple[int, int] = (101, 77), seed: int = 0) -> np.ndarray:
    """Every value present, odd width and height (rows that end mid-byte, partial edge tiles)."""
    lab = np.random.default_rng(seed).integers(0, n_values, shape).astype(np.uint8)
    lab.ravel()[:n_values] = np.arange(n_values)
    return lab


def _gdal(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning
        ds = rasterio.open(path)
    return ds


@pytest.mark.parametrize(("k", "bits"), [(2, 1), (3, 2), (4, 2), (5, 4), (16, 4), (17, 8)])
@pytest.mark.parametrize("compression", ["zlib", None, "lzw", "zstd"])
def test_packed_palette_reads_back_in_tifffile_gdal_and_pillow(tmp_path, k, bits, compression):
    lab = _labels(k)
    pal = _palette(k)
    out = write_image(da.from_array(lab, chunks=(64, 32)), tmp_path / "q.tif", palette=pal, tile=32,
                      compression=compression)
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert page.bitspersample == bits
        assert page.colormap.shape == (3, 2**bits)
        np.testing.assert_array_equal(page.colormap[:, :k].T, pal.astype(np.uint16) * 257)
        np.testing.assert_array_equal(page.asarray(), lab)
    with _gdal(out) as ds:
        assert ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == (None if bits == 8 else str(bits))
        np.testing.assert_array_equal(ds.read(1), lab)
        cmap = ds.colormap(1)
        assert len(cmap) == 2**bits
        assert [cmap[i][:3] for i in range(k)] == [tuple(c) for c in pal.tolist()]
    if compression != "zstd":  # Pillow's libtiff has no zstd
        with Image.open(out) as im:
            assert im.mode == "P"
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), pal[lab])


@pytest.mark.parametrize("layout", [{"pyramid": True}, {"overviews": True}, {"cog": True},
                                    {"cog": True, "compression": None}])
def test_every_level_is_packed(tmp_path, layout):
    lab = _labels(5, (150, 133))
    out = write_image(lab, tmp_path / "q.tif", palette=_palette(5), tile=32, **layout)
    with tifffile.TiffFile(out) as tf:
        levels = tf.series[0].levels
        assert len(levels) == 4  # 150 -> 75 -> 38 -> 19: down to one tile
        for i, level in enumerate(levels):
            assert level.keyframe.bitspersample == 4
            np.testing.assert_array_equal(level.asarray(), lab[:: 2**i, :: 2**i])
    with _gdal(out) as ds:
        assert ds.overviews(1) == [2, 4, 8]
        np.testing.assert_array_equal(ds.read(1, out_shape=(75, 67)), lab[::2, ::2])
    if layout.get("cog"):
        from rio_cogeo.cogeo import cog_validate

        valid, errors, _ = cog_validate(str(out), quiet=True)
        assert valid, errors


def test_one_uncompressed_tile(tmp_path):
    """An uncompressed image of exactly one tile (tifffile writes it contiguously)."""
    lab = _labels(3, (32, 32))
    out = write_image(lab, tmp_path / "q.tif", palette=_palette(3), tile=32, compression=None)
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].bitspersample == 2
        assert tuple(tf.pages[0].databytecounts) == (32 * 8,)
        np.testing.assert_array_equal(tf.pages[0].asarray(), lab)
    with _gdal(out) as ds:
        np.testing.assert_array_equal(ds.read(1), lab)


@pytest.mark.parametrize(("k", "nodata", "bits"), [(3, 3, 2), (4, 4, 4), (15, 15, 4), (16, 16, 8), (5, 255, 8)])
def test_the_nodata_index_counts_among_the_indices(tmp_path, k, nodata, bits):
    lab = _labels(k, (90, 71))
    lab[:7] = nodata
    out = write_image(lab, tmp_path / "q.tif", palette=_palette(k), tile=32, nodata=nodata)
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].bitspersample == bits
        assert tf.pages[0].nodata == nodata
        np.testing.assert_array_equal(tf.pages[0].asarray(), lab)
    with _gdal(out) as ds:
        assert ds.nodata == nodata
        np.testing.assert_array_equal(ds.read(1), lab)
        np.testing.assert_array_equal(ds.read_masks(1) == 0, lab == nodata)


def test_nbits_8_turns_packing_off_and_explicit_bits_are_kept(tmp_path):
    lab = _labels(3)
    byte = write_image(lab, tmp_path / "b.tif", palette=_palette(3), tile=32, nbits=8)
    wide = write_image(lab, tmp_path / "w.tif", palette=_palette(3), tile=32, nbits=4)
    for path, bits in ((byte, 8), (wide, 4)):
        with tifffile.TiffFile(path) as tf:
            assert tf.pages[0].bitspersample == bits
            np.testing.assert_array_equal(tf.pages[0].asarray(), lab)


def test_packing_makes_smaller_files(tmp_path):
    lab = _labels(4, (256, 256))
    packed = write_image(lab, tmp_path / "p.tif", palette=_palette(4), tile=64, compression=None)
    byte = write_image(lab, tmp_path / "b.tif", palette=_palette(4), tile=64, compression=None, nbits=8)
    assert packed.stat().st_size < byte.stat().st_size / 3


@pytest.mark.parametrize("bad", [dict(nbits=1), dict(nbits=3), dict(nbits=16), dict(nbits=True),
                                 dict(nbits=4, mode="rgb"), dict(nbits=2, nodata=4)])
def test_nbits_that_cannot_hold_the_palette_is_refused(tmp_path, bad):
    with pytest.raises(InvalidParameterError, match="nbits"):
        write_image(_labels(3), tmp_path / "q.tif", palette=_palette(3), tile=32, **bad)
    assert not (tmp_path / "q.tif").exists()


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("width", [1, 7, 8, 9, 31, 32, 513])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])  # uint8: the numba kernel; others numpy's shifts
def test_pack_rows_is_tiffs_layout(bits, width, dtype):
    """MSB first, each row padded to a byte: what imagecodecs (tifffile's decoder) unpacks."""
    import imagecodecs

    lab = np.random.default_rng(width).integers(0, 2**bits, (5, width)).astype(np.uint8)
    packed = pack_rows(lab.astype(dtype), bits)
    assert packed.shape == (5, -(-width * bits // 8))
    back = imagecodecs.packints_decode(packed.tobytes(), np.uint8, bits, runlen=width)
    np.testing.assert_array_equal(back.reshape(5, width), lab)
    theirs = np.frombuffer(imagecodecs.packints_encode(lab, bits, runlen=width), np.uint8)
    np.testing.assert_array_equal(packed.ravel(), theirs)


def test_index_bits():
    assert [index_bits(n) for n in (1, 2, 3, 4, 5, 16, 17, 256, 257)] == [1, 1, 2, 2, 4, 4, 8, 8, 16]
    assert index_bits(300, 16) == 16
    with pytest.raises(InvalidParameterError):
        index_bits(300, 8)


def test_bigquant_reads_its_packed_output(tmp_path):
    """read_image (colours through the table, levels) and a palette file from a packed TIFF."""
    from bigquant import read_image
    from bigquant.io.palette_file import read_palette

    lab = _labels(5, (140, 99))
    lab.ravel()[:5] = [3, 1, 0, 4, 2]
    pal = _palette(5)
    out = write_image(lab, tmp_path / "q.tif", palette=pal, tile=32, pyramid=True)
    np.testing.assert_array_equal(np.asarray(read_image(out).data), pal[lab])
    np.testing.assert_array_equal(np.asarray(read_image(out, level=1).data), pal[lab[::2, ::2]])
    np.testing.assert_array_equal(read_palette(out), pal[[3, 1, 0, 4, 2]])
