"""Pixel size, Aperio fields, OME physical sizes and ICC profiles carried from input to output.

Read back by the tools people use: OpenSlide (``openslide.mpp-x``/``mpp-y``,
generic-tiff vendor), tifffile (resolution tags of every level, OME-XML, tag
34675), GDAL through rasterio (COG layout still valid), and the PNG chunks as
stored (parsed here, not by bigquant).
"""

from __future__ import annotations

import functools
import pathlib
import re
import struct
import warnings
import zlib
from fractions import Fraction

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image, ImageCms
from rasterio.errors import NotGeoreferencedWarning
from rio_cogeo.cogeo import cog_validate

from bigquant import quantize, quantize_many, read_image, write_image
from bigquant.errors import InvalidParameterError

K = 6
TILE = 128
SIZE = (512, 768)
#: the fields of the slide's Aperio description, after its first line
FIELDS = "AppMag = 20|StripeWidth = 2040|ScanScope ID = SS1234|Filename = slide|Date = 03/14/24|MPP = 0.25"


def _pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Blocks of a few colours plus seeded noise: many colours, fast to fit."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (shape[0] // 64 + 1, shape[1] // 64 + 1) + shape[2:], dtype=np.int16)
    img = np.repeat(np.repeat(base, 64, 0), 64, 1)[: shape[0], : shape[1]]
    return np.clip(img + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _srgb_icc() -> bytes:
    """Little CMS's sRGB profile (made once: its header holds the time it was made)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _gray_icc() -> bytes:
    """A profile whose header says grey (the sRGB profile's bytes with colour space ``GRAY``)."""
    icc = bytearray(_srgb_icc())
    icc[16:20] = b"GRAY"
    return bytes(icc)


def _aperio(path: pathlib.Path, img: np.ndarray, *, fields: str = FIELDS, resolution: bool = True,
            icc: bytes | None = None) -> pathlib.Path:
    """An Aperio-like slide: level 0 tiled, a stripped thumbnail, a level reduced by 4."""
    h, w = img.shape[:2]
    extratags = [(34675, 7, len(icc), icc, True)] if icc is not None else []
    res = {"resolution": (40000, 40000), "resolutionunit": "CENTIMETER"} if resolution else {}
    head = f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({TILE}x{TILE}) JPEG/RGB Q=70"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(img, tile=(TILE, TILE), photometric="rgb", compression="zlib", metadata=None,
                 description=f"{head}|{fields}", extratags=extratags, **res)
        tw.write(img[::8, ::8].copy(), photometric="rgb", rowsperstrip=16, compression="zlib", metadata=None,
                 description=f"Aperio Image Library v12.0.15 \r\n{w}x{h} -> {w // 8}x{h // 8} - |{fields}")
        tw.write(img[::4, ::4].copy(), tile=(TILE, TILE), photometric="rgb", compression="zlib", metadata=None,
                 description=f"{head} -> {w // 4}x{h // 4}|{fields}")
    return path


@pytest.fixture
def slide(tmp_path) -> pathlib.Path:
    """Aperio-like slide at 0.25 µm/px: MPP = 0.25 and 40000 px/cm, an sRGB ICC profile."""
    return _aperio(tmp_path / "slide.svs", _pixels(SIZE + (3,)), icc=_srgb_icc())


def _mpp(path: pathlib.Path) -> tuple[str | None, str | None, str | None]:
    with openslide.OpenSlide(str(path)) as s:
        props = s.properties
        return props.get("openslide.vendor"), props.get("openslide.mpp-x"), props.get("openslide.mpp-y")


def _png_chunks(path: pathlib.Path) -> dict[bytes, bytes]:
    """The chunks of a PNG as stored (the first of each kind)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    order = []
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.setdefault(kind, data[pos + 8 : pos + 8 + length])
        order.append(kind)
        pos += 12 + length
    assert order.index(b"IDAT") > max(order.index(k) for k in chunks if k not in (b"IDAT", b"IEND"))
    return chunks


def _iccp(chunks: dict[bytes, bytes]) -> bytes:
    name, rest = chunks[b"iCCP"].split(b"\x00", 1)
    assert rest[0] == 0  # deflate
    return zlib.decompress(rest[1:])


# --------------------------------------------------------------------------- OpenSlide, Aperio fields


def test_slide_output_has_the_slides_openslide_mpp_and_aperio_fields(slide, tmp_path):
    out = tmp_path / "q.tif"
    quantize(slide, out, K, random_state=0, tile=TILE)
    vendor_in, *mpp_in = _mpp(slide)
    vendor_out, *mpp_out = _mpp(out)
    assert vendor_in == "aperio" and mpp_in == ["0.25", "0.25"]
    # a palette TIFF is not an Aperio slide: generic-tiff, its mpp from XResolution/YResolution in cm
    assert vendor_out == "generic-tiff"
    assert mpp_out == mpp_in
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert page.resolution == (40000.0, 40000.0) and page.resolutionunit == tifffile.RESUNIT.CENTIMETER
        description = page.description
    assert not description.startswith("Aperio")
    assert description.split("|")[1:] == FIELDS.split("|")
    # bigquant reads its own output's fields back (a second generation keeps them)
    assert dict(read_image(out).metadata.fields)["ScanScope ID"] == "SS1234"


def test_aperio_mpp_alone_gives_the_output_resolution(svs_jpeg, tmp_path):
    """The conftest slide says only ``MPP = 0.4990`` (no resolution tags), as many SVS files do."""
    out = tmp_path / "q.tif"
    quantize(svs_jpeg.path, out, K, random_state=0, tile=TILE)
    _, mpp_x, mpp_y = _mpp(svs_jpeg.path)
    vendor, out_x, out_y = _mpp(out)
    assert vendor == "generic-tiff"
    # libtiff hands OpenSlide a float32 resolution: equal to its precision
    assert float(out_x) == pytest.approx(float(mpp_x), rel=1e-6)
    assert float(out_y) == pytest.approx(float(mpp_y), rel=1e-6)


@pytest.mark.parametrize("name", ["ndpi_like", "ome_pyramid"])
def test_other_slides_pixel_size_reaches_openslide(request, tmp_path, name):
    """NDPI says 20000 px/cm in its resolution tags, the OME file 0.5 µm in its OME-XML (and its tags)."""
    real = request.getfixturevalue(name)
    with tifffile.TiffFile(real.path) as tf:
        page = tf.series[0].levels[0].keyframe if name == "ndpi_like" else tf.series[0].keyframe
        assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
        expected = tuple(str(10_000 / r) for r in page.resolution)
    out = tmp_path / "q.tif"
    quantize(real.path, out, K, random_state=0, tile=TILE)
    assert expected == ("0.5", "0.5")
    assert _mpp(out) == ("generic-tiff",) + expected


def test_reduced_level_input_scales_pixel_size_and_fields(slide, tmp_path):
    out = tmp_path / "q.tif"
    quantize(slide, out, K, random_state=0, tile=TILE, level=1)
    _, mpp_x, mpp_y = _mpp(out)
    assert (float(mpp_x), float(mpp_y)) == (1.0, 1.0)  # level 1 is reduced by 4
    with tifffile.TiffFile(out) as tf:
        fields = dict(part.split(" = ") for part in tf.pages[0].description.split("|")[1:])
    assert fields["MPP"] == "1" and fields["AppMag"] == "5" and fields["ScanScope ID"] == "SS1234"


# --------------------------------------------------------------------------- resolution of every level


@pytest.mark.parametrize("layout", [{}, {"pyramid": True}, {"overviews": True}, {"cog": True}],
                         ids=["plain", "pyramid", "overviews", "cog"])
def test_resolution_tags_of_every_level_are_scaled(slide, tmp_path, layout):
    out = tmp_path / "q.tif"
    quantize(slide, out, K, random_state=0, tile=TILE, **layout)
    with tifffile.TiffFile(out) as tf:
        levels = [level.keyframe for level in tf.series[0].levels]
        assert (len(levels) > 1) == bool(layout)
        for page in levels:
            step = SIZE[1] // page.imagewidth  # 1, 2, 4, ...: every level of this size divides exactly
            assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
            assert page.resolution == (40000 / step, 40000 / step)
        assert 34675 in levels[0].tags and levels[0].tags[34675].value == _srgb_icc()
    if layout.get("cog"):  # still a COG with its description and ICC profile before the tiles
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            valid, errors, _ = cog_validate(str(out), quiet=True)
        assert valid, errors


# --------------------------------------------------------------------------- OME-TIFF


@pytest.mark.parametrize("layout", [{}, {"pyramid": 2}], ids=["plain", "pyramid"])
def test_ome_input_gives_ome_output_with_physical_size(ome_pyramid, tmp_path, layout):
    out = tmp_path / "q.ome.tif"
    quantize(ome_pyramid.path, out, K, random_state=0, tile=TILE, **layout)
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome
        pixels = tifffile.xml2dict(tf.ome_metadata)["OME"]["Image"]["Pixels"]
        assert (pixels["PhysicalSizeX"], pixels["PhysicalSizeY"]) == (0.5, 0.5)
        assert pixels["PhysicalSizeXUnit"] == pixels["PhysicalSizeYUnit"] == "µm"
        assert (pixels["SizeY"], pixels["SizeX"]) == ome_pyramid.reference.shape[:2]
        series = tf.series[0]
        assert len(tf.series) == 1 and len(series.levels) == (3 if layout else 1)
        labels = series.asarray()
        assert labels.shape == ome_pyramid.reference.shape[:2] and labels.max() < K
        for level in series.levels[1:]:  # SubIFDs, subsampled
            step = round(labels.shape[1] / level.shape[1])
            np.testing.assert_array_equal(level.asarray(), labels[::step, ::step])
            assert level.keyframe.resolution == (20000 / step, 20000 / step)
    assert read_image(out).metadata.physical_size == (0.5, 0.5)


def test_ome_physical_size_is_the_series_read(ome_macro_first):
    """The macro is OME Image 0 (no physical size), the slide Image 1 (0.5 µm)."""
    assert read_image(ome_macro_first.path).metadata.physical_size == (0.5, 0.5)
    assert read_image(ome_macro_first.path, series=0).metadata.physical_size is None
    assert read_image(ome_macro_first.path, level=1).metadata.physical_size == (1.0, 1.0)


def test_slide_to_ome_output_carries_mpp_and_fields(slide, tmp_path):
    out = tmp_path / "slide.ome.tiff"
    quantize(slide, out, K, random_state=0, tile=TILE, mode="rgb")
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome
        image = tifffile.xml2dict(tf.ome_metadata)["OME"]
        pixels = image["Image"]["Pixels"]
        assert (pixels["PhysicalSizeX"], pixels["PhysicalSizeY"]) == (0.25, 0.25)
        values = image["StructuredAnnotations"]["MapAnnotation"]["Value"]["M"]
        assert {m["K"]: str(m["value"]) for m in values}["ScanScope ID"] == "SS1234"
        assert tf.pages[0].tags[34675].value == _srgb_icc()
    assert _mpp(out)[1:] == ("0.25", "0.25")


def test_ome_set_output_named_ome_is_ome(ome_pyramid, tmp_path):
    """The issue's case: a set keeps the input's name, ``pyramid.ome.tif``; that file must be OME."""
    result = quantize_many([ome_pyramid.path], tmp_path / "q", K, random_state=0, tile=TILE)
    out = pathlib.Path(result.files[0].dst)
    assert out.name == "pyramid.ome.tif"
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome
        assert tifffile.xml2dict(tf.ome_metadata)["OME"]["Image"]["Pixels"]["PhysicalSizeX"] == 0.5


@pytest.mark.parametrize("option", [{"overviews": True}, {"cog": True}], ids=["overviews", "cog"])
def test_ome_name_with_overview_ifds_is_refused_up_front(slide, ome_pyramid, tmp_path, option):
    out = tmp_path / "q.ome.tif"
    with pytest.raises(InvalidParameterError, match=r"q\.ome\.tif: an OME-TIFF keeps its reduced levels as SubIFDs"):
        quantize(slide, out, K, random_state=0, tile=TILE, **option)
    with pytest.raises(InvalidParameterError, match="OME-TIFF keeps its reduced levels as SubIFDs"):
        write_image(np.zeros((64, 64), np.uint8), out, palette=[[0, 0, 0]], tile=32, **option)
    if "overviews" in option:  # a set's output takes the input's name
        with pytest.raises(InvalidParameterError, match=r"pyramid\.ome\.tif: an OME-TIFF"):
            quantize_many([ome_pyramid.path], tmp_path / "set", K, **option)
    assert sorted(tmp_path.iterdir()) == [slide]  # nothing written, no folder made


# --------------------------------------------------------------------------- ICC profiles, PNG pHYs


def test_icc_profile_tiff_to_tiff_png_and_jpeg(slide, tmp_path):
    quantize(slide, tmp_path / "q.tif", K, random_state=0, tile=TILE)
    quantize(slide, tmp_path / "q.png", K, random_state=0)
    quantize(slide, tmp_path / "q.jpg", K, random_state=0, mode="rgb")
    with Image.open(tmp_path / "q.jpg") as im:
        assert im.info["icc_profile"] == _srgb_icc()
    with tifffile.TiffFile(tmp_path / "q.tif") as tf:
        assert tf.pages[0].tags[34675].value == _srgb_icc()
    chunks = _png_chunks(tmp_path / "q.png")
    assert _iccp(chunks) == _srgb_icc()
    # TIFF 40000 px/cm -> PNG pHYs 4,000,000 px/m, unit metre
    assert struct.unpack(">IIB", chunks[b"pHYs"]) == (4_000_000, 4_000_000, 1)
    with Image.open(tmp_path / "q.png") as im:
        assert im.info["icc_profile"] == _srgb_icc()


@pytest.mark.parametrize("kind", ["png", "jpeg", "jpeg-split-icc"])
def test_icc_profile_and_density_png_or_jpeg_to_png_and_tiff(tmp_path, kind):
    src = tmp_path / f"in.{'png' if kind == 'png' else 'jpg'}"
    img = Image.fromarray(_pixels((96, 160, 3)))
    # past 65519 bytes a JPEG holds the profile in several numbered APP2 segments
    icc = _srgb_icc() + (bytes(70_000) if kind == "jpeg-split-icc" else b"")
    if kind == "png":  # pHYs: 20000 px/m, i.e. 50 µm pixels
        img.save(src, icc_profile=icc, dpi=(20000 * 0.0254, 20000 * 0.0254))
    else:  # JFIF density in dots per inch
        img.save(src, icc_profile=icc, dpi=(508, 508), quality=95)
    quantize(src, tmp_path / "q.png", K, random_state=0)
    quantize(src, tmp_path / "q.tif", K, random_state=0, tile=32)
    chunks = _png_chunks(tmp_path / "q.png")
    assert _iccp(chunks) == icc
    assert struct.unpack(">IIB", chunks[b"pHYs"]) == (20000, 20000, 1)
    with tifffile.TiffFile(tmp_path / "q.tif") as tf:
        page = tf.pages[0]
        assert page.tags[34675].value == icc
        if kind == "png":
            assert (page.resolution, page.resolutionunit) == ((200.0, 200.0), tifffile.RESUNIT.CENTIMETER)
        else:
            assert (page.resolution, page.resolutionunit) == ((508.0, 508.0), tifffile.RESUNIT.INCH)


def test_icc_profile_carried_only_to_pixels_of_its_colour_space(tmp_path):
    src = tmp_path / "grey.tif"
    grey = _pixels((128, 192))
    tifffile.imwrite(src, grey, photometric="minisblack", metadata=None,
                     extratags=[(34675, 7, len(_gray_icc()), _gray_icc(), True)])
    quantize(src, tmp_path / "grey.tif.out.tif", K, random_state=0, tile=32, mode="rgb")
    quantize(src, tmp_path / "palette.tif", K, random_state=0, tile=32)
    quantize(src, tmp_path / "grey.png", K, random_state=0, mode="rgb")
    with tifffile.TiffFile(tmp_path / "grey.tif.out.tif") as tf:  # grey pixels: the grey profile
        assert tf.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
        assert tf.pages[0].tags[34675].value == _gray_icc()
    assert _iccp(_png_chunks(tmp_path / "grey.png")) == _gray_icc()
    with tifffile.TiffFile(tmp_path / "palette.tif") as tf:  # a palette shows RGB: no grey profile
        assert tf.pages[0].photometric == tifffile.PHOTOMETRIC.PALETTE
        assert 34675 not in tf.pages[0].tags


def test_transposing_orientation_swaps_resolution(tmp_path):
    src = tmp_path / "turned.tif"
    img = _pixels((96, 160, 3))
    tifffile.imwrite(src, img, photometric="rgb", metadata=None, resolution=(1000, 4000),
                     resolutionunit="CENTIMETER", extratags=[(274, 3, 1, 6, True)])
    source = read_image(src)
    assert source.shape[:2] == (160, 96)
    assert source.metadata.resolution == (Fraction(4000), Fraction(1000))
    quantize(src, tmp_path / "q.tif", K, random_state=0, tile=32)
    with tifffile.TiffFile(tmp_path / "q.tif") as tf:
        assert tf.pages[0].shape == (160, 96)
        assert tf.pages[0].resolution == (4000.0, 1000.0)


def test_write_image_takes_metadata_and_arrays_have_none(tmp_path):
    from bigquant.io.metadata import ImageMetadata

    out = write_image(np.zeros((64, 64), np.uint8), tmp_path / "q.tif", palette=[[0, 0, 0]], tile=32,
                      metadata=ImageMetadata(resolution=(Fraction(3, 2), Fraction(3, 2)), resolution_unit="inch"))
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].resolution == (1.5, 1.5) and tf.pages[0].resolutionunit == tifffile.RESUNIT.INCH
    assert read_image(np.zeros((8, 8), np.uint8)).metadata == ImageMetadata()


def test_cli_info_shows_the_pixel_size_and_profile_outputs_carry(slide, tmp_path, capsys):
    from bigquant.cli import main

    out = tmp_path / "q.png"
    quantize(slide, out, K, random_state=0)
    shown = rf"^pixel size +0\.25 x 0\.25 µm; ICC profile of {len(_srgb_icc())} bytes$"
    assert main(["info", str(slide)]) == 0
    assert re.search(shown, capsys.readouterr().out, flags=re.M)
    assert main(["info", str(out)]) == 0  # the PNG's pHYs (4,000,000 px/m) and iCCP
    assert re.search(shown, capsys.readouterr().out, flags=re.M)
