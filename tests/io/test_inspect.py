"""Tests of bigquant.io.inspect: series classification, default and mask series, describe(), ``bigquant info``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile

from bigquant.cli import main
from bigquant.errors import ImageReadError
from bigquant.io.inspect import (
    SERIES_KINDS,
    ImageInfo,
    classify_series,
    describe,
    image_series,
    mask_series,
)


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)


def _write_pages(path, pages) -> None:
    """One IFD per (array, options) in ``pages``; ``mask=True`` sets NewSubfileType 4 (tifffile won't)."""
    masks = []
    with tifffile.TiffWriter(path) as tw:
        for i, (data, options) in enumerate(pages):
            options = dict(options)
            if options.pop("mask", False):
                masks.append(i)
                options["subfiletype"] = 1
            tw.write(data, metadata=None, **options)
    with tifffile.TiffFile(path, mode="r+") as tf:
        for i in masks:
            tf.pages[i].tags["NewSubfileType"].overwrite(4)


# --------------------------------------------------------------------------- classify_series


def test_plain_file_unnamed_series_largest_is_the_image(tmp_path, rgb):
    path = tmp_path / "small_first.tif"
    _write_pages(path, [(rgb[::4, ::4], {"photometric": "rgb"}), (rgb, {"photometric": "rgb"})])
    with tifffile.TiffFile(path) as tf:
        assert [s.shape for s in tf.series] == [(24, 32, 3), (96, 128, 3)]
        assert classify_series(tf) == ["thumbnail", "image"]
        assert image_series(tf) == 1


def test_mask_by_new_subfile_type(tmp_path, rgb):
    path = tmp_path / "masked.tif"
    mask = np.zeros(rgb.shape[:2], np.uint8)
    mask[10:50, 20:90] = 255
    _write_pages(path, [(rgb, {"photometric": "rgb"}), (mask, {"photometric": "minisblack", "mask": True})])
    with tifffile.TiffFile(path) as tf:
        assert classify_series(tf) == ["image", "mask"]
        assert mask_series(tf, rgb.shape) == 1
        assert mask_series(tf, (rgb.shape[0], rgb.shape[1] + 1)) is None


def test_a_file_of_masks_only_reads_series_0(tmp_path):
    path = tmp_path / "mask_only.tif"
    _write_pages(path, [(np.zeros((32, 32), np.uint8), {"mask": True})])
    with tifffile.TiffFile(path) as tf:
        assert classify_series(tf) == ["mask"]
        assert image_series(tf) == 0


def test_svs_level_mistyped_as_reduced_is_other_not_label(tmp_path, svs_jpeg):
    """A reduced level written with NewSubfileType 1 makes tifffile call it "Label" (and drop the macro)."""
    path = tmp_path / "mistyped.svs"
    path.write_bytes(svs_jpeg.path.read_bytes())
    with tifffile.TiffFile(path, mode="r+") as tf:
        tf.pages[2].tags["NewSubfileType"].overwrite(1)
    with tifffile.TiffFile(path) as tf:
        names = [s.name for s in tf.series]
        assert names == ["Baseline", "Thumbnail", "Label", "Label"]
        assert classify_series(tf) == ["image", "thumbnail", "other", "label"]


def test_kinds_are_from_the_documented_set(svs_jpeg, ndpi_like, ome_pyramid, gdal_mask_tiff):
    for real in (svs_jpeg, ndpi_like, ome_pyramid, gdal_mask_tiff):
        with tifffile.TiffFile(real.path) as tf:
            assert set(classify_series(tf)) <= set(SERIES_KINDS)


# --------------------------------------------------------------------------- describe


def test_describe_svs(svs_jpeg):
    info = describe(svs_jpeg.path)
    assert isinstance(info, ImageInfo)
    assert (info.format, info.is_svs, info.is_ndpi, info.is_ome, info.is_geotiff) == ("BigTIFF", True, False, False,
                                                                                       False)
    assert info.size == svs_jpeg.path.stat().st_size
    assert info.kinds == ["image", "thumbnail", "label", "macro"]
    assert info.image_series == 0
    image, thumb, label, macro = info.series
    assert (image.index, image.name, image.axes, image.dtype) == (0, "Baseline", "YXS", np.dtype(np.uint8))
    assert [lev.shape for lev in image.levels] == [(640, 896, 3), (160, 224, 3)]
    assert image.tile == (256, 256) and image.levels[0].rows_per_strip is None
    assert (image.compression, image.photometric, image.levels[0].predictor) == ("JPEG", "YCBCR", None)
    assert [lev.subfiletype for lev in image.levels] == [0, 0]
    assert (thumb.tile, thumb.levels[0].rows_per_strip, thumb.levels[0].layout) == (None, 16, "strips of 16 rows")
    assert (label.compression, label.photometric, label.levels[0].subfiletype) == ("LZW", "RGB", 1)
    assert (macro.shape, macro.levels[0].subfiletype) == ((160, 480, 3), 9)
    assert image.nodata is None and not image.georeferenced and image.epsg is None


def test_describe_codecs(svs_jpeg_rgb, svs_j2k_33003, svs_j2k_33005, lzw_strips, deflate_predictor, zstd_tiles,
                         webp_tiles, packbits):
    found = {real.path.name: (describe(real.path).series[0], real) for real in (
        svs_jpeg_rgb, svs_j2k_33003, svs_j2k_33005, lzw_strips, deflate_predictor, zstd_tiles, webp_tiles, packbits)}
    summary = {name: (s.compression, s.levels[0].predictor, s.photometric, s.tile, s.levels[0].rows_per_strip)
               for name, (s, _) in found.items()}
    assert summary == {
        "jpeg_rgb.svs": ("JPEG", None, "RGB", (256, 256), None),
        "j2k_33003.svs": ("APERIO_JP2000_YCBC", None, "RGB", (256, 256), None),
        "j2k_33005.svs": ("APERIO_JP2000_RGB", None, "RGB", (256, 256), None),
        "lzw_strips.tif": ("LZW", "HORIZONTAL", "RGB", None, 64),
        "deflate_predictor.tif": ("ADOBE_DEFLATE", "HORIZONTAL", "RGB", (256, 256), None),
        "zstd_tiles.tif": ("ZSTD", None, "RGB", (256, 256), None),
        "webp_tiles.tif": ("WEBP", None, "RGB", (256, 256), None),
        "packbits.tif": ("PACKBITS", None, "RGB", None, 32),
    }
    for s, real in found.values():
        assert s.shape == real.reference.shape


def test_describe_ome_ndpi_and_gdal_mask(ome_macro_first, ndpi_like, gdal_mask_tiff):
    ome = describe(ome_macro_first.path)
    assert ome.is_ome and ome.format == "BigTIFF"
    assert [(s.name, s.kind) for s in ome.series] == [("macro", "macro"), ("slide", "image")]
    assert ome.image_series == 1
    assert [lev.shape for lev in ome.series[1].levels] == [(512, 768, 3), (256, 384, 3), (128, 192, 3)]
    assert [lev.subfiletype for lev in ome.series[1].levels] == [0, 1, 1]

    ndpi = describe(ndpi_like.path)
    assert (ndpi.format, ndpi.is_ndpi, ndpi.is_svs) == ("NDPI", True, False)
    assert [(s.name, s.kind) for s in ndpi.series] == [("Baseline", "image"), ("Macro", "macro")]
    assert ndpi.series[0].tile == (16, 128)
    assert len(ndpi.series[0].levels) == 3

    gdal = describe(gdal_mask_tiff.path)
    assert gdal.is_geotiff and gdal.kinds == ["image", "mask"]
    image, mask = gdal.series
    assert (image.compression, image.photometric, image.georeferenced, image.epsg) == ("JPEG", "YCBCR", True, 32633)
    assert (mask.dtype, mask.photometric, mask.compression) == (np.dtype(bool), "MASK", "ADOBE_DEFLATE")
    assert [lev.subfiletype for lev in mask.levels] == [4, 5, 5]
    assert [lev.shape for lev in mask.levels] == [lev.shape[:2] for lev in image.levels]


def test_describe_geotiff(geotiff_u16, lzw_strips):
    s = describe(geotiff_u16.path).series[0]
    assert (s.dtype, s.shape, s.photometric) == (np.dtype(np.uint16), (384, 512, 4), "MINISBLACK")
    assert s.nodata == 0 and isinstance(s.nodata, int)
    assert (s.georeferenced, s.epsg) == (True, 32633)
    plain = describe(lzw_strips.path).series[0]
    assert (plain.nodata, plain.georeferenced, plain.epsg) == (None, False, None)


@pytest.mark.parametrize(("text", "dtype", "expected"), [
    ("-9999.5", np.float32, -9999.5),
    ("255", np.uint8, 255),
    ("1e+20", np.float32, 1e20),
])
def test_nodata_values(tmp_path, text, dtype, expected):
    path = tmp_path / "nodata.tif"
    tifffile.imwrite(path, np.zeros((8, 8), dtype), metadata=None, extratags=[(42113, 2, 0, text, True)])
    nodata = describe(path).series[0].nodata
    assert nodata == expected and type(nodata) is type(expected)


def test_nodata_nan(tmp_path):
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.float32), metadata=None, extratags=[(42113, 2, 0, "nan", True)])
    assert math.isnan(describe(path).series[0].nodata)


def test_describe_over_http_reads_ranges_only(http_url):
    info = describe(http_url.url)
    assert info.path == http_url.url
    assert info.size == http_url.path.stat().st_size
    assert info.series[0].shape == (512, 768, 3) and info.series[0].tile == (256, 256)
    requests = http_url.extra["log"].read_text().splitlines()
    assert any("Range=bytes=" in r for r in requests)
    assert not any(r.startswith(f"GET /{http_url.path.name} ") and r.endswith("Range=None") for r in requests), requests


@pytest.mark.parametrize("make", ["missing", "png", "garbage"])
def test_describe_refuses_what_is_not_a_tiff(tmp_path, rgba_png, make):
    path = {"missing": tmp_path / "nope.tif", "png": rgba_png.path, "garbage": tmp_path / "garbage.tif"}[make]
    if make == "garbage":
        path.write_bytes(b"II*\x00" + b"\xff" * 64)
    with pytest.raises(ImageReadError, match="no such file|not a readable TIFF"):
        describe(path)


def test_table_is_fixed_width(svs_jpeg, geotiff_u16):
    text = describe(svs_jpeg.path).table()
    lines = text.splitlines()
    assert lines[0] == "BigTIFF (svs)"
    header = lines[1]
    assert header.split() == ["series", "kind", "name", "level", "shape", "dtype", "tiles", "compression",
                              "photometric"]
    assert len(lines) == 2 + 5  # 2 levels of the image, thumbnail, label, macro
    # every row starts its columns where the header does
    for column in ("level", "shape", "tiles", "compression"):
        start = header.index(column)
        for row in lines[2:]:
            assert row[start - 2 : start] == "  " and row[start] != " ", (column, row)
    assert lines[2].split()[:5] == ["0", "image", "Baseline", "0", "640"]
    assert lines[3].split()[:2] == ["1", "160"]  # the second level: no series, kind or name
    assert "strips of 16 rows" in lines[4] and "thumbnail" in lines[4]
    geo = describe(geotiff_u16.path).table()
    assert "ADOBE_DEFLATE + horizontal predictor" in geo
    assert geo.splitlines()[-1] == "series 0: nodata 0, georeferenced (EPSG:32633)"


# --------------------------------------------------------------------------- bigquant info


def test_info_lists_series_and_levels_of_a_slide(capsys, svs_jpeg):
    assert main(["info", str(svs_jpeg.path)]) == 0
    out = capsys.readouterr().out
    # what info always printed
    assert "shape             640 x 896 x 3" in out and "tiles             256 x 256" in out
    assert "levels            2" in out and "distinct colours" in out
    # the series table
    assert "series            0 (image) of 4" in out
    assert describe(svs_jpeg.path).table() in out
    kinds = [line.split()[1] for line in out.splitlines() if line[:1].isdigit()]
    assert kinds == ["image", "thumbnail", "label", "macro"]


def test_info_says_which_series_it_read(capsys, ome_macro_first):
    assert main(["info", str(ome_macro_first.path)]) == 0
    out = capsys.readouterr().out
    assert "series            1 (image) of 2" in out
    assert "shape             512 x 768 x 3" in out


def test_info_geotiff_nodata(capsys, geotiff_u16):
    assert main(["info", str(geotiff_u16.path)]) == 0
    out = capsys.readouterr().out
    assert "uint16" in out and "series 0: nodata 0, georeferenced (EPSG:32633)" in out


def test_info_png_has_no_series_table(capsys, rgba_png):
    assert main(["info", str(rgba_png.path)]) == 0
    out = capsys.readouterr().out
    assert "format            png" in out
    assert "compression" not in out and "series" not in out


def test_info_url(capsys, http_url):
    assert main(["info", http_url.url]) == 0
    out = capsys.readouterr().out
    assert f"file              {http_url.url}" in out
    assert "shape             512 x 768 x 3" in out
    size = next(line for line in out.splitlines() if line.startswith("size on disk"))
    assert "unknown" not in size  # (the pixel size of this file is unknown: its own row says so)
    assert "256 x 256  JPEG" in out
