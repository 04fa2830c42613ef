"""Tests of GDAL-valid output: GeoTIFF tags, nodata, overviews and COG, read back by GDAL."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
import rasterio
import tifffile
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rio_cogeo.cogeo import cog_validate

from bigquant import write_image
from bigquant.errors import InputTypeError, InvalidInputError, InvalidParameterError
from bigquant.io.geotiff import GDAL_NODATA, GEOTIFF_TAGS, GeoTiff, read_nodata

pytestmark = pytest.mark.filterwarnings(f"ignore::{NotGeoreferencedWarning.__module__}."
                                        f"{NotGeoreferencedWarning.__name__}")

COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]],
                   dtype=np.uint8)
NODATA = 255
#: UTM 33N, 10 m pixels, upper-left corner (500 000 E, 5 000 000 N)
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)


def _geotiff_extratags(nodata: str | None = None) -> list[tuple]:
    """GeoTIFF tags of a north-up EPSG:32633 image (PixelIsArea, metres)."""
    citation = "WGS 84 / UTM zone 33N|"
    keys = (1, 1, 0, 5, 1024, 0, 1, 1, 1025, 0, 1, 1, 1026, 34737, len(citation), 0,
            3072, 0, 1, 32633, 3076, 0, 1, 9001)
    tags = [(33550, 12, 3, (10.0, 10.0, 0.0), True),
            (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 5000000.0, 0.0), True),
            (34735, 3, len(keys), keys, True),
            (34737, 2, 0, citation, True)]
    if nodata is not None:
        tags.append((GDAL_NODATA, 2, 0, nodata, True))
    return tags


@pytest.fixture
def labels() -> np.ndarray:
    """Labels 0..4 with a no-data (255) band on top and on the right."""
    lab = np.random.default_rng(0).integers(0, len(COLOURS), (600, 700)).astype(np.uint8)
    lab[:40] = NODATA
    lab[:, -56:] = NODATA
    return lab


@pytest.fixture
def geo_input(tmp_path, labels) -> tifffile.TiffFile:
    """A 4-band uint16 GeoTIFF (the input the labels came from), GDAL_NODATA 0."""
    path = tmp_path / "in" / "scene.tif"
    path.parent.mkdir()
    data = np.random.default_rng(1).integers(1, 4000, labels.shape + (4,), dtype=np.uint16)
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig", tile=(64, 64),
                     compression="zlib", metadata=None, extratags=_geotiff_extratags("0"))
    with tifffile.TiffFile(path) as tf:
        yield tf


@pytest.fixture
def geo(geo_input) -> GeoTiff:
    found = GeoTiff.from_page(geo_input.pages[0])
    assert found is not None
    return found


def _files(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


# --- GeoTiff -----------------------------------------------------------------


def test_geotiff_from_page_reads_the_tags(geo_input, geo, tmp_path):
    assert [code for code, *_ in geo.tags] == [33550, 33922, 34735, 34737]
    assert all(code in GEOTIFF_TAGS for code, *_ in geo.tags)
    assert geo.tags[0] == (33550, 12, 3, (10.0, 10.0, 0.0))
    assert geo.tags[3][3] == "WGS 84 / UTM zone 33N|"
    assert read_nodata(geo_input.pages[0]) == 0.0
    hash(geo)  # frozen, tuples only: usable as a dask token / dict key
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((8, 8), np.uint8))
    with tifffile.TiffFile(plain) as tf:
        assert GeoTiff.from_page(tf.pages[0]) is None
        assert read_nodata(tf.pages[0]) is None


def test_geotiff_metadata_keeps_dataset_items_only(tmp_path):
    xml = ('<GDALMetadata><Item name="AREA">forest</Item>'
           '<Item name="STATISTICS_MEAN" sample="0">12.5</Item>'
           '<Item name="SCALE" sample="0" role="scale">0.01</Item></GDALMetadata>')
    path = tmp_path / "meta.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), metadata=None,
                     extratags=_geotiff_extratags("n/a") + [(42112, 2, 0, xml, True)])
    with tifffile.TiffFile(path) as tf:
        geo = GeoTiff.from_page(tf.pages[0])
        assert read_nodata(tf.pages[0]) is None  # not a number
    meta = dict((code, value) for code, _, _, value in geo.tags)[42112]
    assert "AREA" in meta and "forest" in meta
    assert "STATISTICS_MEAN" not in meta and "SCALE" not in meta


def test_geotiff_scaled_and_extratags():
    geo = GeoTiff(((33550, 12, 3, (10.0, 10.0, 0.0)),
                   (33922, 12, 6, (4.0, 8.0, 0.0, 500040.0, 4999920.0, 0.0)),
                   (34264, 12, 16, (10.0, 0.0, 0.0, 500000.0, 0.0, -10.0, 0.0, 5000000.0,
                                    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))))
    half = dict((code, value) for code, _, _, value in geo.scaled(4).tags)
    assert half[33550] == (40.0, 40.0, 0.0)
    assert half[33922] == (1.0, 2.0, 0.0, 500040.0, 4999920.0, 0.0)  # same ground point
    assert half[34264][:8] == (40.0, 0.0, 0.0, 500000.0, 0.0, -40.0, 0.0, 5000000.0)
    assert geo.scaled(1) == geo
    tags = geo.extratags()
    assert [t[0] for t in tags] == [33550, 33922, 34264] and all(t[4] is True for t in tags)
    assert geo.extratags(NODATA)[-1] == (GDAL_NODATA, 2, 4, "255", True)
    with pytest.raises(InvalidParameterError, match="factor=0"):
        geo.scaled(0)
    with pytest.raises(InvalidParameterError, match="geotiff tag"):
        GeoTiff(((1234, 3, 1, (1,)),))


# --- TIFF read back by GDAL -------------------------------------------------


def test_palette_geotiff_roundtrip_rasterio(tmp_path, labels, geo):
    out = write_image(da.from_array(labels, chunks=128), tmp_path / "q.tif", palette=COLOURS,
                      tile=64, nodata=NODATA, geotiff=geo)
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32633
        assert tuple(src.transform)[:6] == TRANSFORM
        assert src.nodata == NODATA
        assert src.dtypes == ("uint8",) and src.block_shapes == [(64, 64)]
        colormap = src.colormap(1)
        # the TIFF holds colours x 257: GDAL reads the 8-bit palette back
        assert [colormap[i][:3] for i in range(len(COLOURS))] == list(map(tuple, COLOURS.tolist()))
        assert colormap[NODATA][:3] == (0, 0, 0)
        np.testing.assert_array_equal(src.read(1), labels)
        np.testing.assert_array_equal(src.dataset_mask(), np.where(labels == NODATA, 0, 255))
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].nodata == NODATA
        assert tf.pages[0].tags[34735].value == _geotiff_extratags()[2][3]
    assert _files(tmp_path) == ["q.tif"]


def test_nodata_tag_without_geotiff(tmp_path, labels):
    out = write_image(labels, tmp_path / "q.tif", palette=COLOURS, tile=64, nodata=NODATA)
    with tifffile.TiffFile(out) as tf:
        assert read_nodata(tf.pages[0]) == NODATA
        assert GeoTiff.from_page(tf.pages[0]) is None
    with rasterio.open(out) as src:
        assert src.nodata == NODATA and src.crs is None


@pytest.mark.parametrize("overviews", [True, 2])
def test_overviews_are_strided_labels(tmp_path, labels, geo, overviews):
    out = write_image(da.from_array(labels, chunks=(128, 192)), tmp_path / "o.tif",
                      palette=COLOURS, tile=64, nodata=NODATA, geotiff=geo, overviews=overviews)
    factors = [2, 4, 8, 16] if overviews is True else [2, 4]
    with rasterio.open(out) as src:
        assert src.overviews(1) == factors
        assert src.crs.to_epsg() == 32633
    for j, factor in enumerate(factors):
        with rasterio.open(out, overview_level=j) as ovr:
            np.testing.assert_array_equal(ovr.read(1), labels[::factor, ::factor])
    with tifffile.TiffFile(out) as tf:
        assert len(tf.pages) == 1 + len(factors)
        assert tf.pages[0].subfiletype == 0 and not tf.pages[0].subifds
        assert [p.subfiletype for p in tf.pages[1:]] == [1] * len(factors)
        assert [p.shape for p in tf.pages[1:]] == [
            (-(-600 // f), -(-700 // f)) for f in factors
        ]
        assert 34735 not in tf.pages[1].tags  # georeferencing on the full resolution only
        # True: down to one tile
        assert (max(tf.pages[-1].shape) <= 64) == (overviews is True)


def test_pyramid_subifds_keep_nodata(tmp_path, labels):
    out = write_image(labels, tmp_path / "p.tif", palette=COLOURS, tile=64, nodata=NODATA,
                      pyramid=2)
    with tifffile.TiffFile(out) as tf:
        assert len(tf.pages) == 1 and len(tf.pages[0].subifds) == 2
        for i, level in enumerate(tf.series[0].levels):
            np.testing.assert_array_equal(level.asarray(), labels[:: 2**i, :: 2**i])


def _cog_layout(path) -> tuple[list[int], list[int]]:
    """IFD offsets and first-tile offsets of every IFD, in file order of the IFDs."""
    with tifffile.TiffFile(path) as tf:
        return [p.offset for p in tf.pages], [p.dataoffsets[0] for p in tf.pages]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"compression": None},
        {"compression": "zstd", "compression_level": 5},
        {"compression": "lzw"},
        {"mode": "rgb"},
        {"overviews": 1},
    ],
)
def test_cog_passes_cog_validate(tmp_path, labels, geo, kwargs):
    out = write_image(da.from_array(labels, chunks=128), tmp_path / "c.tif", palette=COLOURS,
                      tile=64, nodata=NODATA, geotiff=geo, cog=True, **kwargs)
    assert cog_validate(str(out), quiet=True) == (True, [], [])
    ifds, first_tiles = _cog_layout(out)
    assert ifds == sorted(ifds) and ifds[0] < 300
    assert max(ifds) < min(first_tiles)
    assert first_tiles == sorted(first_tiles, reverse=True)  # smallest level first, full res last
    factors = [2] if kwargs.get("overviews") == 1 else [2, 4, 8, 16]
    with rasterio.open(out) as src:
        assert src.overviews(1) == factors
        assert src.crs.to_epsg() == 32633 and tuple(src.transform)[:6] == TRANSFORM
        if kwargs.get("mode") == "rgb":
            np.testing.assert_array_equal(src.read(4) == 0, labels == NODATA)
        else:
            assert src.nodata == NODATA
            np.testing.assert_array_equal(src.read(1), labels)
    for j, factor in enumerate(factors):
        with rasterio.open(out, overview_level=j) as ovr:
            expected = labels[::factor, ::factor]
            if kwargs.get("mode") == "rgb":
                colours = COLOURS[np.where(expected == NODATA, 0, expected)]
                expected = np.where(expected[..., None] == NODATA, 0, colours)
                expected = np.moveaxis(expected, 2, 0)
                np.testing.assert_array_equal(ovr.read((1, 2, 3)), expected)
            else:
                np.testing.assert_array_equal(ovr.read(1), expected)
    with tifffile.TiffFile(out) as tf:
        levels = tf.series[0].levels
        assert len(tf.series) == 1 and len(levels) == 1 + len(factors)
    assert _files(tmp_path) == ["c.tif"]  # the tile spool is gone


def test_cog_uncompressed_level_of_exactly_one_tile(tmp_path):
    # 256 x 256 at step 4 is one whole tile: tifffile writes it contiguously
    lab = np.random.default_rng(2).integers(0, 5, (1024, 1024)).astype(np.uint8)
    out = write_image(lab, tmp_path / "one.tif", palette=COLOURS, tile=256, cog=True,
                      compression=None)
    assert cog_validate(str(out), quiet=True) == (True, [], [])
    with rasterio.open(out) as src:
        assert src.overviews(1) == [2, 4]
        np.testing.assert_array_equal(src.read(1), lab)
    with rasterio.open(out, overview_level=1) as ovr:
        np.testing.assert_array_equal(ovr.read(1), lab[::4, ::4])


def test_plain_overviews_are_not_a_cog(tmp_path, labels):
    out = write_image(labels, tmp_path / "o.tif", palette=COLOURS, tile=64, nodata=NODATA,
                      overviews=True)
    valid, errors, _ = cog_validate(str(out), quiet=True)
    assert not valid and any("main resolution" in e for e in errors)


def test_cog_failure_leaves_nothing(tmp_path, labels):
    def boom(block, block_info=None):
        if block_info[0]["chunk-location"] == (3, 2):
            raise RuntimeError("worker died")
        return block

    bad = da.from_array(labels, chunks=128).map_blocks(boom, dtype=labels.dtype)
    with pytest.raises(RuntimeError, match="worker died"):
        write_image(bad, tmp_path / "c.tif", palette=COLOURS, tile=64, nodata=NODATA, cog=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("palette", "samples", "photometric", "extrasamples"),
    [
        (COLOURS, 4, "RGB", ("UNASSALPHA",)),
        (COLOURS[:, :1], 2, "MINISBLACK", ("UNASSALPHA",)),
        (np.c_[COLOURS, COLOURS[:, :1]], 5, "RGB", ("UNSPECIFIED", "UNASSALPHA")),
        (COLOURS.astype(np.uint16) * 257, 4, "RGB", ("UNASSALPHA",)),
    ],
)
def test_rgb_nodata_adds_alpha(tmp_path, labels, palette, samples, photometric, extrasamples):
    out = write_image(labels, tmp_path / "rgba.tif", palette=palette, mode="rgb", tile=64,
                      nodata=NODATA, overviews=1)
    opaque = np.iinfo(palette.dtype).max
    masked = labels == NODATA
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert page.photometric.name == photometric and page.samplesperpixel == samples
        assert [e.name for e in page.extrasamples] == list(extrasamples)
        assert read_nodata(page) is None  # alpha, not a nodata value, marks the mask
        stored = page.asarray()
    assert stored.dtype == palette.dtype
    np.testing.assert_array_equal(stored[..., -1], np.where(masked, 0, opaque))
    assert not stored[masked].any()  # colour 0 too
    colour = np.asarray(palette)[np.where(masked, 0, labels)]
    np.testing.assert_array_equal(stored[~masked][:, :-1], colour[~masked])
    with rasterio.open(out) as src:
        assert src.colorinterp[-1] == rasterio.enums.ColorInterp.alpha
        if samples in (2, 4):  # GDAL masks with the alpha of grey + alpha and RGBA only
            np.testing.assert_array_equal(src.dataset_mask(), np.where(masked, 0, 255))


def test_uint16_colormap_with_many_colours(tmp_path):
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 300, (96, 128))
    lab[:8] = 1000
    pal = rng.integers(0, 65536, (300, 3)).astype(np.uint16)
    out = write_image(lab, tmp_path / "big.tif", palette=pal, tile=32, nodata=1000, cog=True)
    assert cog_validate(str(out), quiet=True)[0]
    with rasterio.open(out) as src:
        assert src.dtypes == ("uint16",) and src.nodata == 1000
        colormap = src.colormap(1)
        assert len(colormap) == 65536
        # 16-bit colours: GDAL shows them divided by 257
        np.testing.assert_array_equal([colormap[i][:3] for i in range(300)], pal // 257)
        np.testing.assert_array_equal(src.read(1), lab)
    pal8 = rng.integers(0, 256, (300, 3)).astype(np.uint8)
    out = write_image(np.where(lab == 1000, 300, lab), tmp_path / "big8.tif", palette=pal8,
                      tile=32, nodata=300)
    with rasterio.open(out) as src:
        np.testing.assert_array_equal([src.colormap(1)[i][:3] for i in range(300)], pal8)
        assert src.nodata == 300
    with pytest.raises(InvalidInputError, match="1000"):  # 1000 is not this write's nodata
        write_image(lab, tmp_path / "x.tif", palette=pal8, tile=32, nodata=300)


# --- PNG, JPEG, zarr, preview -----------------------------------------------


def test_png_palette_nodata_is_transparent(tmp_path, labels):
    out = write_image(labels, tmp_path / "q.png", palette=COLOURS, nodata=NODATA)
    with Image.open(out) as im:
        assert im.mode == "P" and im.info["transparency"] == NODATA
        assert len(im.getpalette()) == 3 * (NODATA + 1)
        np.testing.assert_array_equal(np.asarray(im), labels)
        rgba = np.asarray(im.convert("RGBA"))
    masked = labels == NODATA
    np.testing.assert_array_equal(rgba[..., 3], np.where(masked, 0, 255))
    np.testing.assert_array_equal(rgba[~masked][:, :3], COLOURS[labels[~masked]])


def test_png_rgb_nodata_is_rgba_and_jpeg_black(tmp_path, labels):
    masked = labels == NODATA
    out = write_image(labels, tmp_path / "q.png", palette=COLOURS, mode="rgb", nodata=NODATA)
    with Image.open(out) as im:
        assert im.mode == "RGBA"
        rgba = np.asarray(im)
    np.testing.assert_array_equal(rgba[..., 3], np.where(masked, 0, 255))
    np.testing.assert_array_equal(rgba[~masked][:, :3], COLOURS[labels[~masked]])
    out = write_image(labels, tmp_path / "q.jpg", palette=COLOURS, nodata=NODATA)
    with Image.open(out) as im:
        assert im.mode == "RGB"
        assert np.asarray(im)[5:30, 5:600].max() < 16  # inside the no-data band: black


def test_zarr_records_nodata(tmp_path, labels):
    import zarr

    out = write_image(labels, tmp_path / "q.zarr", palette=COLOURS, tile=64, nodata=NODATA)
    z = zarr.open_array(str(out), mode="r")
    assert z.attrs["bigquant"]["nodata"] == NODATA
    np.testing.assert_array_equal(z[:], labels)
    out = write_image(labels, tmp_path / "r.zarr", palette=COLOURS, tile=64, nodata=NODATA,
                      mode="rgb")
    z = zarr.open_array(str(out), mode="r")
    assert z.shape == labels.shape + (4,)
    np.testing.assert_array_equal(z[..., 3], np.where(labels == NODATA, 0, 255))


@pytest.mark.parametrize(("suffix", "mode"), [(".tif", "palette"), (".tif", "rgb"),
                                              (".zarr", "palette"), (".png", "palette")])
def test_preview_shows_nodata_transparent(tmp_path, labels, suffix, mode):
    write_image(labels, tmp_path / f"q{suffix}", palette=COLOURS, tile=64, nodata=NODATA,
                mode=mode, preview=tmp_path / "prev.png", preview_size=175)
    with Image.open(tmp_path / "prev.png") as im:
        assert im.mode == "RGBA" and im.size == (175, 150)
        alpha = np.asarray(im)[..., 3]
    assert (alpha[:8, :150] == 0).all()  # the no-data band (top 40 of 600 rows -> 10 of 150)
    assert (alpha[14:, :150] == 255).all()


def test_geotiff_ignored_outside_tiff(tmp_path, labels, geo, caplog):
    with caplog.at_level(logging.DEBUG, logger="bigquant.io.write"):
        out = write_image(labels, tmp_path / "q.png", palette=COLOURS, geotiff=geo,
                          nodata=NODATA)
    assert "geotiff tags ignored" in caplog.text
    with Image.open(out) as im:
        np.testing.assert_array_equal(np.asarray(im), labels)


# --- bad parameters ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("q.tif", {"nodata": 3}, InvalidParameterError, "nodata=3 lies inside the palette"),
        ("q.tif", {"nodata": 256, "palette": np.zeros((256, 3), np.uint8)},
         InvalidParameterError, "nodata=256 does not fit the uint8"),
        ("q.tif", {"nodata": 300}, InvalidParameterError, "nodata=300 does not fit"),
        ("q.tif", {"nodata": 7.5}, InvalidParameterError, "nodata=7.5"),
        ("q.tif", {"nodata": True}, InvalidParameterError, "nodata=True"),
        ("q.tif", {"nodata": 9, "palette": None}, InvalidParameterError, "nodata=9.*palette"),
        ("q.png", {"overviews": True}, InvalidParameterError, "overviews=True.*TIFF"),
        ("q.zarr", {"cog": True}, InvalidParameterError, "cog=True.*TIFF"),
        ("q.tif", {"cog": "yes"}, InvalidParameterError, "cog='yes'"),
        ("q.tif", {"cog": True, "pyramid": True}, InvalidParameterError, "pyramid=True"),
        ("q.tif", {"overviews": 2, "pyramid": 1}, InvalidParameterError, "overviews=2"),
        ("q.tif", {"overviews": 9}, InvalidParameterError, "overviews=9"),
        ("q.tif", {"overviews": -1}, InvalidParameterError, "overviews=-1"),
        ("q.tif", {"cog": True, "mode": "rgb", "compression": "webp"}, InvalidParameterError,
         "cog=True cannot use compression='webp'"),
        ("q.tif", {"geotiff": {"crs": 32633}}, InputTypeError, "geotiff of type dict"),
    ],
)
def test_bad_parameters_leave_nothing(tmp_path, name, kwargs, error, match):
    lab = np.zeros((64, 64), np.uint8)
    kwargs = {"palette": COLOURS, "tile": 32} | kwargs
    with pytest.raises(error, match=match):
        write_image(lab, tmp_path / name, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_stray_labels_are_not_nodata(tmp_path, labels):
    bad = labels.copy()
    bad[300, 300] = 7
    with pytest.raises(InvalidInputError, match="labels hold 7.*nodata=255"):
        write_image(bad, tmp_path / "q.tif", palette=COLOURS, tile=64, nodata=NODATA, cog=True)
    with pytest.raises(InvalidInputError, match="palette has 5 colours"):
        write_image(labels, tmp_path / "q.tif", palette=COLOURS, tile=64)  # no nodata given
    assert list(tmp_path.iterdir()) == []
