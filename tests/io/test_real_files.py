"""``read_image`` on real-like files: slides, codecs, OME, NDPI, GeoTIFF, GDAL masks, PNG, a URL.

The files come from ``tests/io/conftest.py``; each carries the pixels of its
image decoded independently of bigquant and how exactly a reader must match
them:

- lossless codecs (LZW, deflate, zstd, PackBits, OME deflate, GeoTIFF, masks):
  the arrays written, bit for bit;
- JPEG (SVS YCbCr and RGB, GDAL-written, the HTTP file) and lossy WebP:
  tifffile's whole-page ``asarray()``, bit for bit (the same libjpeg-turbo /
  libwebp through imagecodecs; a reader decoding tile by tile must agree);
- JPEG 2000 33005: imagecodecs' decode of the codestreams written, bit for bit;
  33003: the same, converted from YCbCr here in float64, within 1 level (a
  reader converting in float32 may round the other way);
- NDPI: Pillow's whole-stream JPEG decode (identical to tifffile's
  ``asarray()``) within 48 levels and 44 dB: tifffile's tile paths decode each
  restart interval alone, whose chroma upsampling cannot see the next interval.

GDAL cross-checks the references where it can read the file (not 33003/33005:
"missing codec"); its JPEG decode of YCbCr data upsamples chroma differently,
so there the check is a PSNR bound.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile

from bigquant import read_image
from bigquant.io.inspect import classify_series, image_series, mask_series

#: every TIFF fixture of tests/io/conftest.py
TIFF_FILES = [
    "svs_jpeg", "svs_jpeg_rgb", "svs_j2k_33003", "svs_j2k_33005",
    "lzw_strips", "deflate_predictor", "zstd_tiles", "webp_tiles", "packbits",
    "ome_pyramid", "ome_macro_first", "ndpi_like", "geotiff_u16", "gdal_mask_tiff", "mask_tiff",
]
PYRAMIDS = ["svs_jpeg", "svs_jpeg_rgb", "svs_j2k_33003", "svs_j2k_33005", "ome_pyramid", "ome_macro_first",
            "ndpi_like", "gdal_mask_tiff"]
SLIDES = ["svs_jpeg", "svs_jpeg_rgb", "svs_j2k_33003", "svs_j2k_33005"]
#: files GDAL opens, and whether its decode must equal the reference bit for bit
GDAL_EXACT = {"lzw_strips": True, "deflate_predictor": True, "zstd_tiles": True, "packbits": True,
              "ome_pyramid": True, "geotiff_u16": True, "mask_tiff": True, "rgba_png": True,
              "svs_jpeg": False, "svs_jpeg_rgb": False, "webp_tiles": False, "ndpi_like": False,
              "gdal_mask_tiff": False, "http_url": False}
#: lowest PSNR (dB) of GDAL's decode against the reference of a lossy file (measured: 40.2-54)
GDAL_MIN_PSNR = 38.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _assert_pixels(actual: np.ndarray, real, level: int = 0) -> None:
    expected = real.levels[level]
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if real.exact:
        np.testing.assert_array_equal(actual, expected)
        return
    diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= real.max_diff, f"max difference {diff.max()} > {real.max_diff} ({real.decoder})"
    assert _psnr(actual, expected) >= real.match_psnr


# --------------------------------------------------------------------------- the image


@pytest.mark.parametrize("name", TIFF_FILES)
def test_reads_the_image_of_every_tiff(request, name):
    real = request.getfixturevalue(name)
    src = read_image(real.path)
    expected = real.reference
    assert src.shape == expected.shape
    assert src.dtype == expected.dtype
    assert src.channels == (expected.shape[2] if expected.ndim == 3 else 1)
    assert src.levels == len(real.levels)
    _assert_pixels(src.data.compute(), real)


@pytest.mark.parametrize("name", PYRAMIDS)
def test_reads_every_pyramid_level(request, name):
    real = request.getfixturevalue(name)
    assert len(real.levels) >= 2
    for level in range(1, len(real.levels)):
        src = read_image(real.path, level=level)
        assert src.level == level
        _assert_pixels(src.data.compute(), real, level)


def test_reads_the_image_over_http(http_url):
    src = read_image(http_url.url)
    assert src.shape == http_url.reference.shape
    _assert_pixels(src.data.compute(), http_url)
    requests = http_url.extra["log"].read_text().splitlines()
    assert requests
    assert not any(r.startswith(f"GET /{http_url.path.name} ") and r.endswith("Range=None") for r in requests), requests


def test_reads_the_colours_of_a_transparent_png(rgba_png):
    src = read_image(rgba_png.path)
    assert src.shape == rgba_png.reference.shape[:2] + (3,)  # alpha is a mask, not a band
    np.testing.assert_array_equal(src.data.compute(), rgba_png.reference[..., :3])


def test_reads_a_geotiff_as_uint16_bands(geotiff_u16):
    src = read_image(geotiff_u16.path)
    assert (src.shape, src.dtype) == ((384, 512, 4), np.dtype(np.uint16))
    data = src.data.compute()
    valid = geotiff_u16.extra["valid"]
    assert (data[valid] > 0).all() and (data[~valid] == 0).all()


def test_reads_a_gdal_masked_tiff_without_its_mask_band(gdal_mask_tiff):
    src = read_image(gdal_mask_tiff.path)
    assert src.shape == (512, 768, 3)
    assert src.series == 0


# --------------------------------------------------------------------------- which series


@pytest.mark.parametrize("name", SLIDES + ["ndpi_like", "ome_pyramid", "ome_macro_first", "gdal_mask_tiff"])
def test_default_series_is_the_image(request, name):
    real = request.getfixturevalue(name)
    src = read_image(real.path)
    assert src.series == real.kinds.index("image")
    assert src.shape == real.reference.shape


@pytest.mark.parametrize("name", SLIDES)
def test_thumbnail_label_and_macro_read_when_asked(request, name):
    real = request.getfixturevalue(name)
    shapes = [read_image(real.path, series=i).shape for i in (1, 2, 3)]
    assert shapes == [(160, 224, 3), (240, 224, 3), (160, 480, 3)]


@pytest.mark.parametrize("name", TIFF_FILES)
def test_classify_series(request, name):
    real = request.getfixturevalue(name)
    with tifffile.TiffFile(real.path) as tf:
        assert classify_series(tf) == list(real.kinds)
        assert image_series(tf) == real.kinds.index("image")


def test_mask_series_of_a_gdal_mask(gdal_mask_tiff, svs_jpeg):
    with tifffile.TiffFile(gdal_mask_tiff.path) as tf:
        assert mask_series(tf, (512, 768, 3)) == gdal_mask_tiff.extra["mask_series"]
        assert mask_series(tf, (512, 769)) is None
        mask = tf.series[1].asarray()
    np.testing.assert_array_equal(mask, gdal_mask_tiff.extra["mask"] > 0)
    with tifffile.TiffFile(svs_jpeg.path) as tf:
        assert mask_series(tf, svs_jpeg.reference.shape) is None


# --------------------------------------------------------------------------- the fixtures are what they claim


@pytest.mark.parametrize("name", sorted(GDAL_EXACT))
def test_references_agree_with_gdal(request, name):
    rasterio = pytest.importorskip("rasterio")
    real = request.getfixturevalue(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning
        with rasterio.open(real.path) as ds:
            bands = ds.read()
    gdal = bands[0] if real.reference.ndim == 2 else np.moveaxis(bands, 0, -1)
    assert gdal.shape == real.reference.shape
    if GDAL_EXACT[name]:
        np.testing.assert_array_equal(gdal, real.reference)
    else:
        assert _psnr(gdal, real.reference) >= GDAL_MIN_PSNR


def test_gdal_overviews_of_the_masked_tiff(gdal_mask_tiff):
    for gdal, ours in zip(gdal_mask_tiff.extra["gdal_levels"], gdal_mask_tiff.levels, strict=True):
        assert gdal.shape == ours.shape
        assert _psnr(gdal, ours) >= GDAL_MIN_PSNR


@pytest.mark.parametrize("name", ["svs_jpeg", "svs_jpeg_rgb", "svs_j2k_33003", "svs_j2k_33005", "webp_tiles",
                                  "ndpi_like", "gdal_mask_tiff", "http_url"])
def test_lossy_references_are_close_to_the_photo_but_not_equal(request, name):
    real = request.getfixturevalue(name)
    assert real.original is not None
    quality = _psnr(real.reference, real.original)
    assert real.min_psnr <= quality < 99.0


def test_svs_layout_is_aperios(svs_jpeg, svs_jpeg_rgb):
    for real, photometric in ((svs_jpeg, "YCBCR"), (svs_jpeg_rgb, "RGB")):
        with tifffile.TiffFile(real.path) as tf:
            assert tf.is_bigtiff and tf.is_svs
            pages = list(tf.pages)
            assert [p.is_tiled for p in pages] == [True, False, True, False, False]
            assert [int(p.subfiletype) for p in pages] == [0, 0, 0, 1, 9]
            assert pages[0].jpegtables is not None and pages[2].jpegtables is not None
            assert pages[0].photometric.name == photometric
            assert pages[3].compression.name == "LZW"


def test_33003_holds_ycbcr_that_tifffile_does_not_convert(svs_j2k_33003):
    raw = tifffile.imread(svs_j2k_33003.path)
    assert _psnr(raw, svs_j2k_33003.original) < 20  # Y, Cb, Cr, not R, G, B
    with tifffile.TiffFile(svs_j2k_33003.path) as tf:
        page = tf.pages[0]
        assert int(page.compression) == 33003
        tf.filehandle.seek(page.dataoffsets[0])
        stream = tf.filehandle.read(page.databytecounts[0])
    assert stream[:4] == b"\xff\x4f\xff\x51"  # a raw J2K codestream
    assert stream[stream.find(b"\xff\x52") + 8] == 0  # COD: no multiple-component transform


def test_ndpi_is_read_by_tifffile_as_ndpi(ndpi_like):
    with tifffile.TiffFile(ndpi_like.path) as tf:
        assert tf.is_ndpi and not tf.is_bigtiff
        page = tf.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (16, 128)  # from McuStarts
        assert [s.name for s in tf.series] == ["Baseline", "Macro"]
        np.testing.assert_array_equal(tf.series[0].levels[1].asarray(), ndpi_like.levels[1])


def test_geotiff_is_georeferenced_for_gdal(geotiff_u16):
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(geotiff_u16.path) as ds:
        assert ds.crs.to_epsg() == geotiff_u16.extra["epsg"]
        assert tuple(ds.transform)[:6] == geotiff_u16.extra["transform"]
        assert ds.nodata == geotiff_u16.extra["nodata"]
        assert (ds.count, ds.dtypes[0], ds.block_shapes[0]) == (4, "uint16", (256, 256))
        valid = ds.dataset_mask() > 0
    np.testing.assert_array_equal(valid, geotiff_u16.extra["valid"])


def test_mask_file_matches_its_image(mask_tiff, svs_jpeg):
    mask = tifffile.imread(mask_tiff.path)
    assert mask.shape == svs_jpeg.reference.shape[:2] and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    assert 0.5 < (mask == 255).mean() < 0.8
