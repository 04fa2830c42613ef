"""quantize on images with masks, nodata, georeferencing and many bands, read back by GDAL and Pillow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import tifffile
from PIL import Image

from bigquant import KMeans, quantize
from bigquant.cli import main
from bigquant.errors import InvalidInputError, InvalidParameterError
from tests.support.oracle import nearest_colour

UTM33 = [1, 1, 0, 5, 1024, 0, 1, 1, 1025, 0, 1, 1, 1026, 34737, 23, 0, 3072, 0, 1, 32633, 3076, 0, 1, 9001]


def _geotags(nodata: str | None) -> list[tuple]:
    tags = [
        (33550, 12, 3, (10.0, 10.0, 0.0), True),
        (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 5000000.0, 0.0), True),
        (34735, 3, len(UTM33), UTM33, True),
        (34737, 2, 0, "WGS 84 / UTM zone 33N|", True),
    ]
    return tags + ([(42113, 2, 0, nodata, True)] if nodata is not None else [])


@pytest.fixture
def scene(tmp_path, rgb_image):
    """A uint16 4-band GeoTIFF (EPSG:32633, 10 m pixels) with a nodata (0) border."""
    data = np.dstack([rgb_image.astype(np.uint16) * 40 + 1, rgb_image[..., 1:2].astype(np.uint16) * 30 + 7])
    valid = np.zeros(data.shape[:2], bool)
    valid[20:-30, 35:-15] = True
    data[~valid] = 0
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig", tile=(64, 64),
                     compression="zlib", predictor=True, extratags=_geotags("0"), metadata=None)
    return path, data, valid


def test_geotiff_scene_keeps_crs_transform_and_nodata(tmp_path, scene):
    path, data, valid = scene
    out = tmp_path / "q.tif"
    model = quantize(path, out, 6, random_state=0, palette_out=tmp_path / "p.json", overviews=2)
    assert model.cluster_centers_.shape == (6, 4)  # every band fitted
    reference = KMeans(6, random_state=0).fit(data[valid])
    np.testing.assert_allclose(model.cluster_centers_, reference.cluster_centers_)
    with rasterio.open(path) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.crs.to_epsg() == 32633
        assert dst.transform == src.transform
        assert dst.nodata == 6  # the index after the palette
        assert dst.overviews(1) == [2, 4]
        labels = dst.read(1)
        np.testing.assert_array_equal(labels == 6, ~valid)
        np.testing.assert_array_equal(dst.dataset_mask() > 0, valid)
        colormap = dst.colormap(1)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["nodata_index"] == 6 and doc["bands"] == 4 and len(doc["centres"][0]) == 4
    # the colours are the first three bands of the centres, as stored; the colour table shows them
    # through the display stretch the JSON records (issue #23), as GDAL reads it (16-bit entries / 257)
    for i, colour in enumerate(doc["colours"]):
        assert list(colour) == [int(round(c)) for c in doc["centres"][i][:3]]
        assert colormap[i][:3] == tuple(doc["display"]["colours"][i])


def test_rgb_bands_choose_the_displayed_colours(tmp_path, scene):
    path, _, _ = scene
    model = quantize(path, tmp_path / "q.tif", 4, random_state=0, rgb_bands=(3, 2, 1),
                     palette_out=tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    np.testing.assert_array_equal(doc["colours"], np.rint(model.cluster_centers_[:, [3, 2, 1]]))
    with pytest.raises(InvalidParameterError, match=r"rgb_bands=\(0, 1, 4\) must be three distinct"):
        quantize(path, tmp_path / "r.tif", 4, rgb_bands=(0, 1, 4))
    assert not (tmp_path / "r.tif").exists()


def test_user_mask_and_a_chosen_nodata_index(tmp_path, rgb_image):
    valid = np.ones(rgb_image.shape[:2], bool)
    valid[100:200, 50:300] = False
    model = quantize(rgb_image, tmp_path / "q.tif", 8, random_state=0, mask=valid, nodata_index=255)
    reference = KMeans(8, random_state=0).fit(rgb_image[valid])
    np.testing.assert_array_equal(model.cluster_centers_, reference.cluster_centers_)
    with rasterio.open(tmp_path / "q.tif") as dst:
        assert dst.nodata == 255
        labels = dst.read(1)
    np.testing.assert_array_equal(labels == 255, ~valid)
    expected = nearest_colour(rgb_image, reference.palette()[0])
    np.testing.assert_array_equal(labels[valid], expected[valid])


def test_rgb_mode_carries_the_mask_as_alpha(tmp_path, rgb_image):
    valid = np.ones(rgb_image.shape[:2], bool)
    valid[:40] = False
    quantize(rgb_image, tmp_path / "q.tif", 5, random_state=0, mask=valid, mode="rgb")
    out = tifffile.imread(tmp_path / "q.tif")
    assert out.shape == rgb_image.shape[:2] + (4,)
    np.testing.assert_array_equal(out[..., 3] > 0, valid)


def test_transparent_png_stays_transparent(tmp_path, rgb_image):
    rgba = np.dstack([rgb_image, np.full(rgb_image.shape[:2], 255, np.uint8)])
    rgba[50:150, 100:250, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "in.png")
    model = quantize(tmp_path / "in.png", tmp_path / "out.png", 7, random_state=0)
    reference = KMeans(7, random_state=0).fit(rgb_image[rgba[..., 3] > 0])
    np.testing.assert_array_equal(model.cluster_centers_, reference.cluster_centers_)  # not counted
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "P" and out.info["transparency"] == 7
    alpha = np.asarray(out.convert("RGBA"))[..., 3]
    np.testing.assert_array_equal(alpha == 0, rgba[..., 3] == 0)


def test_mask_false_ignores_the_files_own_masks(tmp_path, scene):
    path, data, _ = scene
    model = quantize(path, tmp_path / "q.tif", 6, random_state=0, mask=False)
    everything = KMeans(6, random_state=0).fit(data)  # the nodata border counted too
    np.testing.assert_allclose(model.cluster_centers_, everything.cluster_centers_)
    with rasterio.open(tmp_path / "q.tif") as dst:
        assert dst.nodata is None


def test_bad_masks_are_clear_errors_and_write_nothing(tmp_path, rgb_image):
    with pytest.raises(InvalidInputError, match=r"a mask must have the image's shape \(300, 400\)"):
        quantize(rgb_image, tmp_path / "a.tif", 4, mask=np.ones((30, 40), bool))
    with pytest.raises(InvalidInputError, match="every pixel is masked"):
        quantize(rgb_image, tmp_path / "b.tif", 4, mask=np.zeros((300, 400), bool))
    with pytest.raises(InvalidParameterError, match=r"nodata_index=3 must be an int outside the palette"):
        quantize(rgb_image, tmp_path / "c.tif", 4, nodata_index=3)
    assert list(tmp_path.iterdir()) == []


def test_cli_mask_file_nodata_index_overviews_and_bands(tmp_path, scene, capsys):
    path, data, valid = scene
    extra = np.ones(valid.shape, np.uint8)
    extra[:, :100] = 0
    tifffile.imwrite(tmp_path / "m.tif", extra)
    out = tmp_path / "q.tif"
    code = main(["quantize", str(path), str(out), "-k", "5", "--mask", str(tmp_path / "m.tif"),
                 "--nodata-index", "250", "--overviews", "1", "--rgb-bands", "3,2,1", "--no-cluster",
                 "--no-progress", "--random-state", "0"])
    assert code == 0, capsys.readouterr().err
    with rasterio.open(out) as dst:
        assert dst.nodata == 250 and dst.overviews(1) == [2] and dst.crs.to_epsg() == 32633
        np.testing.assert_array_equal(dst.read(1) == 250, ~(valid & (extra > 0)))



@pytest.mark.parametrize("strategy", ["histogram", "pixels"])
def test_sweep_counts_only_the_pixels_that_are_image(tmp_path, rgb_image, strategy):
    from bigquant import sweep

    rgba = np.dstack([rgb_image, np.full(rgb_image.shape[:2], 255, np.uint8)])
    rgba[:, :150, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "in.png")
    for mask, pixels in ((None, rgb_image[:, 150:]), (False, rgb_image)):
        row = sweep(tmp_path / "in.png", [5], random_state=0, strategy=strategy, mask=mask)[5]
        palette = np.asarray(row.palette_array(3), dtype=np.float64)
        x = pixels.reshape(-1, 3).astype(np.float64)
        nearest = ((x[:, None, :] - palette[None]) ** 2).sum(-1).min(1).sum()
        # the histogram sweep labels by the rounded palette; the pixel path by the fitted centres
        assert row.cost == pytest.approx(nearest, rel=1e-9 if strategy == "histogram" else 1e-4)
        assert row.cost >= nearest * (1 - 1e-12)
        assert row.psnr == pytest.approx(10 * np.log10(255.0**2 * x.size / row.cost), rel=1e-9)


@pytest.mark.parametrize("dtype, bands", [(np.int16, 4), (np.float32, 13), (np.uint16, 1)])
def test_bands_and_depths(tmp_path, rgb_image, dtype, bands):
    """1 to N bands of signed, float or 16-bit data: the fit uses every band, the palette JSON keeps
    them, and the label map is written with a display palette of the first three (or one) bands."""
    rng = np.random.default_rng(0)
    base = rgb_image.astype(np.float64)
    data = np.dstack([base[..., i % 3] * (1 + i) - (100 if dtype == np.int16 else 0) for i in range(bands)])
    data = (data / 255.0 if dtype == np.float32 else data).astype(dtype)
    if dtype == np.float32:
        data[rng.random(data.shape[:2]) < 0.01, 5] = np.nan  # NaN pixels are not image
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig" if bands > 1 else None,
                     tile=(64, 64), compression="zlib")
    model = quantize(path, tmp_path / "q.tif", 5, random_state=0, palette_out=tmp_path / "p.json")
    assert model.cluster_centers_.shape == (5, bands)
    valid = ~np.isnan(data.reshape(*data.shape[:2], -1)).any(-1)
    finite = np.where(valid[..., None], data.reshape(*data.shape[:2], -1), 0)
    reference = KMeans(5, random_state=0).fit(finite, sample_weight=valid)
    np.testing.assert_allclose(model.cluster_centers_, reference.cluster_centers_, rtol=1e-6)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["bands"] == bands and np.shape(doc["colours"]) == (5, 3 if bands >= 3 else 1)
    with rasterio.open(tmp_path / "q.tif") as dst:
        labels = dst.read(1)
        assert len(dst.colormap(1)) >= 5
    np.testing.assert_array_equal(labels == 5, ~valid)


def test_no_index_is_reserved_when_nothing_is_masked(tmp_path, rgb_image):
    """Float data always carry a NaN mask; without a NaN, the output has no nodata and k = 256 fits uint8."""
    model = quantize(rgb_image.astype(np.float32), tmp_path / "q.tif", 256, random_state=0, max_iter=5,
                     palette_out=tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["nodata_index"] is None
    with rasterio.open(tmp_path / "q.tif") as dst:
        assert dst.nodata is None and dst.dtypes[0] == "uint8"
    assert model.cluster_centers_.shape == (256, 3)
