"""``quantize`` on every real-like file of ``tests/io/conftest.py``, read back by GDAL, tifffile, Pillow.

For each kind (slides in JPEG and JPEG 2000, LZW strips, deflate + predictor,
zstd, WebP, PackBits, OME and NDPI pyramids, a GeoTIFF with nodata, a GDAL
internal mask, a user's mask file, a transparent PNG, a URL) the output must:
open in GDAL (rasterio) with the palette as its colour table and the overviews
asked for; carry the georeferencing of a GeoTIFF; mark masked pixels with the
nodata index GDAL reports; and label every other pixel with its nearest palette
centre -- of the pixels decoded independently of bigquant where the decode is
exact, of bigquant's own decode otherwise.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
import tifffile
from PIL import Image

from bigquant import KMeans, quantize, read_image

KINDS = [
    "svs_jpeg", "svs_jpeg_rgb", "svs_j2k_33003", "svs_j2k_33005", "lzw_strips", "deflate_predictor",
    "zstd_tiles", "webp_tiles", "packbits", "ome_pyramid", "ndpi_like", "geotiff_u16", "gdal_mask_tiff",
]
K = 8


def _nearest(pixels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    x = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64)
    return ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1).reshape(pixels.shape[:2])


@pytest.mark.parametrize("name", KINDS)
def test_quantized_file_opens_in_gdal_with_palette_overviews_and_labels(tmp_path, request, name):
    real = request.getfixturevalue(name)
    out, palette_json = tmp_path / "q.tif", tmp_path / "p.json"
    source = read_image(real.path)
    model = quantize(real.path, out, K, random_state=0, overviews=1, palette_out=palette_json)
    doc = json.loads(palette_json.read_text())
    nodata = doc["nodata_index"]
    valid = np.ones(source.shape[:2], bool) if source.mask is None else source.mask.compute()
    assert (nodata is None) == bool(valid.all())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(out) as dst:
            labels = dst.read(1)
            assert dst.count == 1 and labels.shape == source.shape[:2]
            assert dst.overviews(1) == [2]
            colormap = dst.colormap(1)
            # the colours shown (issue #23): uint8 ones as they are, others through the display stretch
            if source.dtype == np.uint8:
                assert doc["display"]["colours"] == doc["colours"]
            for i, colour in enumerate(doc["display"]["colours"]):
                shown = colour if len(colour) == 3 else colour * 3
                assert colormap[i][:3] == tuple(int(c) for c in shown)
            assert dst.nodata == nodata
        with rasterio.open(out, OVERVIEW_LEVEL=0) as overview:  # nearest, never averaged
            np.testing.assert_array_equal(overview.read(1), labels[::2, ::2])
    if nodata is not None:
        np.testing.assert_array_equal(labels == nodata, ~valid)
    # every pixel that is image: its nearest palette colour (the JSON's, every band), of pixels
    # decoded independently when exact
    pixels = real.reference if real.exact and real.reference.shape == source.shape else source.data.compute()
    np.testing.assert_array_equal(doc["palette"], model.palette()[0])
    expected = _nearest(pixels, np.asarray(doc["palette"], dtype=np.float64))
    agree = (labels == expected)[valid].mean()
    assert agree == 1.0 if real.exact else agree > 0.98, agree
    np.testing.assert_array_equal(tifffile.imread(out), labels)  # tifffile reads what GDAL reads


def test_geotiff_output_keeps_crs_transform_and_nodata(tmp_path, geotiff_u16):
    out = tmp_path / "q.tif"
    quantize(geotiff_u16.path, out, K, random_state=0, cog=True)
    from rio_cogeo.cogeo import cog_validate

    valid, errors, _ = cog_validate(str(out))
    assert valid and not errors, errors
    with rasterio.open(geotiff_u16.path) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.crs.to_epsg() == 32633
        assert dst.transform == src.transform
        assert dst.nodata == K
        np.testing.assert_array_equal(dst.dataset_mask() > 0, src.dataset_mask() > 0)


def test_user_mask_file_and_auto_mask_on_a_slide(tmp_path, svs_jpeg, mask_tiff):
    quantize(svs_jpeg.path, tmp_path / "m.tif", K, random_state=0, mask=mask_tiff.path)
    with rasterio.open(tmp_path / "m.tif") as dst:
        np.testing.assert_array_equal(dst.read(1) == K, mask_tiff.reference == 0)
    model = quantize(svs_jpeg.path, tmp_path / "a.tif", K, random_state=0, mask="auto")
    with rasterio.open(tmp_path / "a.tif") as dst:
        tissue = dst.read(1) != K
    assert 0.05 < tissue.mean() < 0.95  # background left out, tissue kept
    assert model.histogram_.n_pixels == tissue.sum()


def test_transparent_png_quantized_to_png_and_rgb_tiff(tmp_path, rgba_png):
    alpha = rgba_png.reference[..., 3]
    model = quantize(rgba_png.path, tmp_path / "q.png", K, random_state=0)
    out = Image.open(tmp_path / "q.png")
    assert out.mode == "P" and out.info["transparency"] == K
    rgba = np.asarray(out.convert("RGBA"))
    np.testing.assert_array_equal(rgba[..., 3] == 0, alpha == 0)
    reference = KMeans(K, random_state=0).fit(rgba_png.reference[..., :3][alpha > 0])
    np.testing.assert_array_equal(model.cluster_centers_, reference.cluster_centers_)
    quantize(rgba_png.path, tmp_path / "q.tif", K, random_state=0, mode="rgb")
    with rasterio.open(tmp_path / "q.tif") as dst:
        assert dst.count == 4
        np.testing.assert_array_equal(dst.read(4) == 0, alpha == 0)


def test_slide_thumbnail_label_and_macro_are_not_quantized_as_the_image(tmp_path, svs_jpeg):
    quantize(svs_jpeg.path, tmp_path / "q.tif", K, random_state=0)
    assert tifffile.imread(tmp_path / "q.tif").shape == svs_jpeg.reference.shape[:2]
    quantize(svs_jpeg.path, tmp_path / "label.tif", 4, random_state=0, series=2)
    with tifffile.TiffFile(svs_jpeg.path) as tf:
        assert tifffile.imread(tmp_path / "label.tif").shape == tuple(tf.series[2].shape[:2])
