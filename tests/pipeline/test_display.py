"""What each field's tools show of the output (bigquant.pipeline.display; issue #23).

A uint16 4-band reflectance scene (B, G, R, NIR; nodata 0) written as a
palette TIFF, COG or PNG is rendered as GDAL and QGIS render it -- the colour
table expanded to RGB, 8 bits a channel -- and as the preview shows it; it
must be about as bright as the same scene stretched 2--98 % to 8 bits by hand
and quantized at the same k (the 8-bit rendering), not near black.
"""

from __future__ import annotations

import json
import logging

import dask.array as da
import numpy as np
import pytest
import rasterio
import tifffile
from PIL import Image

import bigquant
from bigquant.cli import main
from bigquant.errors import InvalidParameterError
from bigquant.io.palette_file import write_palette
from bigquant.pipeline.display import (
    band_percentile,
    parse_display_range,
    stretch,
    weighted_percentile,
)

K = 8
BANDS = (2, 1, 0)  # R, G, B of a B, G, R, NIR scene


# --------------------------------------------------------------------------- the scene


def _reflectance_scene(height: int = 192, width: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A uint16 B, G, R, NIR scene of water, vegetation, soil and built-up land, and its valid mask.

    Reflectances x 10000 as a Sentinel-2 or Landsat surface-reflectance
    product stores them (about 200..4000), smooth fields of each cover with
    sensor noise, and a nodata (0) border of 12 pixels.
    """
    rng = np.random.default_rng(0)
    covers = np.array([  # B, G, R, NIR
        [600, 500, 300, 200],       # water
        [300, 600, 350, 3600],      # vegetation
        [1200, 1500, 1900, 2600],   # bare soil
        [1700, 1800, 2000, 2300],   # built-up
        [2600, 2800, 3000, 3300],   # bright roofs / sand
    ], dtype=np.float64)
    yy, xx = np.mgrid[0:height, 0:width]
    field = (np.sin(xx / 23.0) + np.cos(yy / 17.0) + 0.6 * np.sin((xx + yy) / 9.0))
    cover = np.digitize(field, [-1.2, -0.2, 0.6, 1.4])
    img = covers[cover] * (1.0 + 0.15 * np.sin(xx / 7.0)[..., None])
    img += rng.normal(0.0, 60.0, img.shape)
    img = np.clip(np.rint(img), 200, 4000).astype(np.uint16)
    valid = np.zeros((height, width), dtype=bool)
    valid[12:-12, 12:-12] = True
    img[~valid] = 0
    return img, valid


def _write_geotiff(path, img: np.ndarray, nodata: float = 0) -> None:
    height, width, bands = img.shape
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype=img.dtype.name, nodata=nodata,
                   crs="EPSG:32632", transform=rasterio.transform.from_origin(500000, 5000000, 10, 10),
                   tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(img, 2, 0))


@pytest.fixture(scope="module")
def scene():
    return _reflectance_scene()


@pytest.fixture
def scene_tif(tmp_path, scene):
    path = tmp_path / "scene.tif"
    _write_geotiff(path, scene[0])
    return path


# --------------------------------------------------------------------------- renderings


def _luminance(rgb: np.ndarray, valid: np.ndarray) -> float:
    """Mean Rec. 709 luminance (0..1) of the valid pixels of an 8-bit RGB image."""
    rgb = rgb[..., :3].astype(np.float64) / 255.0
    lum = rgb @ np.array([0.2126, 0.7152, 0.0722])
    return float(lum[valid].mean())


def _render_gdal(path) -> tuple[np.ndarray, np.ndarray]:
    """The RGB GDAL (``-expand rgb``) and QGIS show of a palette TIFF or PNG, and its valid pixels."""
    with rasterio.open(path) as src:
        labels = src.read(1)
        table = src.colormap(1)  # GDAL's 8-bit colour table (a TIFF's 16-bit colormap / 257)
        nodata = src.nodata
    lut = np.zeros((max(table) + 1, 3), dtype=np.uint8)
    for i, rgba in table.items():
        lut[i] = rgba[:3]
    valid = np.ones(labels.shape, bool) if nodata is None else labels != int(nodata)
    return lut[labels], valid


def _render_preview(path) -> tuple[np.ndarray, np.ndarray]:
    """The preview PNG's RGB and its opaque pixels."""
    im = np.asarray(Image.open(path).convert("RGBA"))
    return im[..., :3], im[..., 3] > 0


def _reference_luminance(tmp_path, img: np.ndarray, valid: np.ndarray) -> float:
    """The 8-bit rendering: the displayed bands stretched 2--98 % by hand, quantized at the same k."""
    shown = img[..., list(BANDS)].astype(np.float64)
    low = np.percentile(shown[valid], 2, axis=0)
    high = np.percentile(shown[valid], 98, axis=0)
    rgb8 = np.clip(np.rint((shown - low) * 255.0 / (high - low)), 0, 255).astype(np.uint8)
    out = tmp_path / "reference8.tif"
    bigquant.quantize(rgb8, out, K, mask=valid, random_state=0, tile=64)
    rgb, _ = _render_gdal(out)
    return _luminance(rgb, valid)


# --------------------------------------------------------------------------- 16-bit scene, every output


@pytest.mark.parametrize("output", ["palette.tif", "cog.tif", "palette.png"])
def test_a_16bit_scene_shows_about_as_bright_as_its_8bit_rendering(tmp_path, scene, scene_tif, output):
    img, valid = scene
    reference = _reference_luminance(tmp_path, img, valid)
    dst, preview = tmp_path / output, tmp_path / f"preview-{output}.png"
    bigquant.quantize(scene_tif, dst, K, rgb_bands=BANDS, cog=output.startswith("cog"), tile=64,
                      preview=preview, palette_out=tmp_path / "palette.json")
    rgb, shown_valid = _render_gdal(dst)
    np.testing.assert_array_equal(shown_valid, valid)  # nodata is the nodata entry, not a colour
    assert _luminance(rgb, valid) >= 0.5 * reference
    rgb, opaque = _render_preview(preview)
    assert opaque.mean() > 0.5
    assert _luminance(rgb, opaque) >= 0.5 * reference


def test_the_cli_cog_of_the_issue_shows_the_scene(tmp_path, scene, scene_tif, capsys):
    img, valid = scene
    reference = _reference_luminance(tmp_path, img, valid)
    dst, preview = tmp_path / "out.tif", tmp_path / "preview.png"
    code = main(["quantize", str(scene_tif), str(dst), "-k", str(K), "--rgb-bands", "2,1,0", "--cog",
                 "--tile", "64", "--preview", str(preview), "--no-cluster", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rgb, _ = _render_gdal(dst)
    assert _luminance(rgb, valid) >= 0.5 * reference
    rgb, opaque = _render_preview(preview)
    assert _luminance(rgb, opaque) >= 0.5 * reference


def test_the_palette_json_keeps_full_depth_and_records_the_stretch(tmp_path, scene, scene_tif):
    img, valid = scene
    out = tmp_path / "palette.json"
    model = bigquant.quantize(scene_tif, tmp_path / "q.tif", K, rgb_bands=BANDS, tile=64, palette_out=out)
    doc = json.loads(out.read_text())
    assert model.strategy_ == "grid"
    np.testing.assert_array_equal(np.asarray(doc["palette"]), model.palette()[0])  # every band, uint16 values
    assert np.asarray(doc["palette"]).max() > 255
    shown = doc["display"]
    assert shown["bands"] == list(BANDS) and shown["range"] == "p2,p98" and shown["counted"] == "grid"
    pixels = img[valid][:, list(BANDS)].astype(np.float64)
    width = (pixels.max(axis=0) - pixels.min(axis=0)) / 32  # a bin of the 4-band grid (5 bits a band)
    np.testing.assert_allclose(shown["min"], np.percentile(pixels, 2, axis=0), atol=width.max())
    np.testing.assert_allclose(shown["max"], np.percentile(pixels, 98, axis=0), atol=width.max())
    with rasterio.open(tmp_path / "q.tif") as src:
        table = src.colormap(1)
    expected = stretch(np.asarray(doc["palette"])[:, list(BANDS)], shown["min"], shown["max"])
    np.testing.assert_array_equal(np.asarray(shown["colours"]), expected)
    np.testing.assert_array_equal([table[i][:3] for i in range(K)], expected)


def test_rgb_output_keeps_the_values_and_its_preview_is_stretched(tmp_path, scene, scene_tif):
    img, valid = scene
    reference = _reference_luminance(tmp_path, img, valid)
    dst, preview = tmp_path / "rgb.tif", tmp_path / "rgb.png"
    model = bigquant.quantize(scene_tif, dst, K, rgb_bands=BANDS, mode="rgb", tile=64, preview=preview)
    stored = tifffile.imread(dst)
    assert stored.dtype == np.uint16  # the data's own values, as the palette holds them
    colours = model.palette()[0][:, list(BANDS)]
    assert stored.shape[2] == 4 and (stored[..., 3] == 65535).sum() == valid.sum()  # R, G, B and alpha
    assert {tuple(c) for c in stored[valid][:, :3]} <= {tuple(c) for c in colours}
    rgb, opaque = _render_preview(preview)
    assert _luminance(rgb, opaque) >= 0.5 * reference


def test_a_grey_16bit_image_is_stretched_from_its_exact_histogram(tmp_path, scene):
    img, valid = scene
    grey = img[..., 3]  # NIR
    out = tmp_path / "grey.png"
    bigquant.quantize(grey, out, K, mask=valid, palette_out=tmp_path / "p.json", tile=64)
    doc = json.loads((tmp_path / "p.json").read_text())
    shown = doc["display"]
    assert shown["counted"] == "histogram" and shown["bands"] == [0]
    values = np.sort(grey[valid])
    assert shown["min"] == [float(values[int(np.ceil(0.02 * values.size)) - 1])]
    assert shown["max"] == [float(values[int(np.ceil(0.98 * values.size)) - 1])]
    rgb = np.asarray(Image.open(out).convert("RGB"))
    assert rgb[valid].mean() > 60  # not the high byte of 200..4000 (at most 15)


# --------------------------------------------------------------------------- float data


@pytest.mark.parametrize("scale", [1e-4, 1.0], ids=["in-0-1", "outside-0-1"])
def test_float_data_show_as_bright_as_their_8bit_rendering(tmp_path, scene, scale):
    img, valid = scene
    data = (img.astype(np.float32) * np.float32(scale))
    data[~valid] = np.nan  # float nodata
    reference = _reference_luminance(tmp_path, img, valid)
    dst, preview = tmp_path / "f.tif", tmp_path / "f.png"
    bigquant.quantize(data, dst, K, rgb_bands=BANDS, tile=64, preview=preview, random_state=0)
    rgb, _ = _render_gdal(dst)
    assert _luminance(rgb, valid) >= 0.5 * reference
    rgb, opaque = _render_preview(preview)
    assert _luminance(rgb, opaque) >= 0.5 * reference


# --------------------------------------------------------------------------- uint8 unchanged


def test_uint8_data_keep_their_colours_as_they_are(tmp_path, rgb_image):
    dst, png, preview = tmp_path / "q.tif", tmp_path / "q.png", tmp_path / "p.png"
    model = bigquant.quantize(rgb_image, dst, K, random_state=0, tile=64, preview=preview,
                              palette_out=tmp_path / "p.json")
    colours = model.palette()[0]
    assert colours.dtype == np.uint8
    with tifffile.TiffFile(dst) as tf:
        cmap = tf.pages[0].colormap
        entries = 2 ** tf.pages[0].bitspersample  # packed: as many entries as the indices address
    expected = np.zeros((3, entries), np.uint16)
    expected[:, :K] = colours.T.astype(np.uint16) * 257
    np.testing.assert_array_equal(cmap, expected)  # byte for byte today's colour table
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["display"]["range"] is None and doc["display"]["colours"] == colours.tolist()
    assert doc["display"]["min"] == [0.0] * 3 and doc["display"]["max"] == [255.0] * 3
    bigquant.quantize(rgb_image, png, K, random_state=0)
    pal = np.asarray(Image.open(png).getpalette()[: 3 * K]).reshape(K, 3)
    np.testing.assert_array_equal(pal, colours)


# --------------------------------------------------------------------------- display_range, display_palette


def test_display_range_values_per_band_and_percentiles(tmp_path, scene, scene_tif):
    cases = {
        "0,4000": ([0.0] * 3, [4000.0] * 3),
        "100,3000;200,3500;300,4000": ([100.0, 200.0, 300.0], [3000.0, 3500.0, 4000.0]),
    }
    for i, (text, (low, high)) in enumerate(cases.items()):
        dst, doc_path = tmp_path / f"q{i}.tif", tmp_path / f"p{i}.json"
        model = bigquant.quantize(scene_tif, dst, K, rgb_bands=BANDS, tile=64, display_range=text,
                                  palette_out=doc_path)
        doc = json.loads(doc_path.read_text())
        assert doc["display"]["min"] == low and doc["display"]["max"] == high
        with rasterio.open(dst) as src:
            table = src.colormap(1)
        expected = stretch(model.palette()[0][:, list(BANDS)], low, high)
        np.testing.assert_array_equal([table[j][:3] for j in range(K)], expected)
    wide = bigquant.quantize(scene_tif, tmp_path / "wide.png", K, rgb_bands=BANDS, tile=64,
                             display_range="p0,p100", palette_out=tmp_path / "wide.json")
    doc = json.loads((tmp_path / "wide.json").read_text())
    img, valid = scene
    pixels = img[valid][:, list(BANDS)]
    np.testing.assert_allclose(doc["display"]["min"], pixels.min(axis=0))
    np.testing.assert_allclose(doc["display"]["max"], pixels.max(axis=0))
    assert wide.palette()[0].shape == (K, 4)


def test_display_range_from_the_command_line(tmp_path, scene_tif, capsys):
    dst, doc = tmp_path / "q.tif", tmp_path / "p.json"
    code = main(["quantize", str(scene_tif), str(dst), "-k", str(K), "--rgb-bands", "2,1,0", "--tile", "64",
                 "--display-range", "p5,p95", "--palette-out", str(doc), "--no-cluster", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(doc.read_text())["display"]["range"] == "p5,p95"


@pytest.mark.parametrize(("value", "match"), [
    ("p2", "two ends"), ("5,1", "below"), ("a,b", "neither a number"), ("p2,p101", "p0..p100"),
    ("0,1;0,2", "2 ranges but 3 band"),
])
def test_a_bad_display_range_is_refused_before_a_pixel_is_read(tmp_path, value, match):
    def never(block):
        raise AssertionError("a pixel was read")

    lazy = da.zeros((64, 64, 4), dtype=np.uint16, chunks=32).map_blocks(never, dtype=np.uint16)
    with pytest.raises(InvalidParameterError, match=match):
        bigquant.quantize(lazy, tmp_path / "q.tif", K, rgb_bands=BANDS, display_range=value)
    assert list(tmp_path.iterdir()) == []


def test_display_palette_is_shown_as_given(tmp_path, scene_tif):
    colours = np.array([[i * 30, 255 - i * 30, (i * 70) % 256] for i in range(K)], dtype=np.uint8)
    gpl = write_palette(tmp_path / "shown.gpl", colours)
    dst, png, doc_path = tmp_path / "q.tif", tmp_path / "q.png", tmp_path / "p.json"
    bigquant.quantize(scene_tif, dst, K, rgb_bands=BANDS, tile=64, display_palette=gpl, palette_out=doc_path)
    with rasterio.open(dst) as src:
        table = src.colormap(1)
    np.testing.assert_array_equal([table[j][:3] for j in range(K)], colours)
    doc = json.loads(doc_path.read_text())
    assert doc["display"]["palette_file"] == str(gpl) and doc["display"]["colours"] == colours.tolist()
    assert np.asarray(doc["palette"]).max() > 255  # the data's own values stay in the palette
    bigquant.quantize(scene_tif, png, K, rgb_bands=BANDS, display_palette=colours)
    pal = np.asarray(Image.open(png).getpalette()[: 3 * K]).reshape(K, 3)
    np.testing.assert_array_equal(pal, colours)


def test_a_display_palette_of_another_count_is_refused_up_front(tmp_path, capsys):
    gpl = write_palette(tmp_path / "five.gpl", np.arange(15, dtype=np.uint8).reshape(5, 3))

    def never(block):
        raise AssertionError("a pixel was read")

    lazy = da.zeros((64, 64, 4), dtype=np.uint16, chunks=32).map_blocks(never, dtype=np.uint16)
    with pytest.raises(InvalidParameterError, match="5 colours but n_clusters=8"):
        bigquant.quantize(lazy, tmp_path / "q.tif", K, rgb_bands=BANDS, display_palette=gpl)
    with pytest.raises(InvalidParameterError, match="quality"):
        bigquant.quantize(lazy, tmp_path / "q.tif", display_palette=gpl, quality=30)
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"palette": [[i * 100] * 4 for i in range(K)]}))
    with pytest.raises(InvalidParameterError, match="5 colours but the palette has 8"):
        bigquant.quantize(lazy, tmp_path / "q.tif", palette=given, display_palette=gpl)
    image = tmp_path / "in.tif"
    tifffile.imwrite(image, np.zeros((32, 32, 4), np.uint16))
    code = main(["quantize", str(image), str(tmp_path / "q.tif"), "-k", "8", "--display-palette", str(gpl),
                 "--no-cluster"])
    assert code == 2
    assert "5 colours but -k 8" in capsys.readouterr().err  # the CLI speaks its own spelling
    assert sorted(p.name for p in tmp_path.iterdir()) == ["five.gpl", "given.json", "in.tif"]


def test_a_given_palette_is_stretched_from_its_colours(tmp_path, scene_tif):
    given = tmp_path / "given.json"
    palette = [[600, 500, 300, 200], [300, 600, 350, 3600], [1200, 1500, 1900, 2600], [2600, 2800, 3000, 3300]]
    given.write_text(json.dumps({"palette": palette}))
    bigquant.quantize(scene_tif, tmp_path / "q.tif", palette=given, rgb_bands=BANDS, tile=64,
                      palette_out=tmp_path / "p.json")
    shown = json.loads((tmp_path / "p.json").read_text())["display"]
    assert shown["counted"] == "palette"
    assert shown["min"] == [300.0, 500.0, 300.0] and shown["max"] == [3000.0, 2800.0, 2600.0]


def test_a_set_shows_one_display_in_every_file(tmp_path, scene):
    img, valid = scene
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    _write_geotiff(a, img)
    _write_geotiff(b, (img // 2) * valid[..., None].astype(np.uint16))  # half as bright
    out = tmp_path / "out"
    bigquant.quantize_many([a, b], out, K, rgb_bands=BANDS, tile=64, palette_out=tmp_path / "p.json")
    tables = []
    for name in ("a.tif", "b.tif"):
        with rasterio.open(out / name) as src:
            tables.append([src.colormap(1)[j] for j in range(K)])
    assert tables[0] == tables[1]
    shown = json.loads((tmp_path / "p.json").read_text())["display"]
    assert shown["range"] == "p2,p98" and np.asarray(shown["colours"]).max() > 200


# --------------------------------------------------------------------------- lossy outputs


def test_rgb_jpeg_output_warns_that_it_holds_more_colours_than_k(tmp_path, rgb_image, caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="bigquant"):
        bigquant.quantize(rgb_image, tmp_path / "q.jpg", 4, mode="rgb", random_state=0)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "more colours" in r.getMessage()]
    assert len(warned) == 1 and "4" in warned[0].getMessage()
    colours = np.unique(np.asarray(Image.open(tmp_path / "q.jpg")).reshape(-1, 3), axis=0)
    assert len(colours) > 4  # what the warning says
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bigquant"):
        bigquant.quantize(rgb_image, tmp_path / "q.png", 4, mode="rgb", random_state=0)
    assert not [r for r in caplog.records if "more colours" in r.getMessage()]
    source = tmp_path / "in.png"
    Image.fromarray(rgb_image).save(source)
    capsys.readouterr()
    code = main(["quantize", str(source), str(tmp_path / "cli.jpg"), "-k", "4", "--mode", "rgb", "--no-cluster",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("more colours than the palette") == 1


# --------------------------------------------------------------------------- the pieces


def test_the_pieces_on_hand_computed_cases():
    assert parse_display_range("0,4000").bands == (((False, 0.0), (False, 4000.0)),)
    assert parse_display_range((0.0, 1.0)).text == "0,1"
    assert parse_display_range("p2, 4000").bands == (((True, 2.0), (False, 4000.0)),)
    # 10 pixels of value 1, 80 of 2, 10 of 3: the 5 % point is 1, the 50 % point 2, the 95 % point 3
    assert [weighted_percentile(np.array([1, 2, 3], np.uint16), np.array([10, 80, 10]), q)
            for q in (5, 50, 95)] == [1.0, 2.0, 3.0]
    assert weighted_percentile(np.array([0.5, 0.1, 0.9]), None, 50) == 0.5
    # bins [0, 10) with 1 pixel, [10, 20) with 3: the 50 % point is a third into the second bin
    assert band_percentile(np.array([0.0, 10.0, 20.0]), np.array([1.0, 3.0]), 50, 0, 20) == pytest.approx(40 / 3)
    np.testing.assert_array_equal(stretch(np.array([[100.0, 0.0], [300.0, 5.0]]), [100.0, 5.0], [300.0, 5.0]),
                                  [[0, 0], [255, 128]])
