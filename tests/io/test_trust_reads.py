"""Reads that never bend, never guess, never hang (issue #22): bit depth, orientation, size bounds, URLs.

- PNG keeps 16-bit samples (files written by imagecodecs and Pillow, not bigquant);
- EXIF orientation (PNG, JPEG) and the TIFF Orientation tag are applied as
  ``PIL.ImageOps.exif_transpose`` does, lazily for TIFF, to the mask too;
- one tile, strip or image decoding past ``max_task_bytes`` is refused before any
  graph is built (tiny hand-made TIFFs declare terabyte strips);
- Pillow's module-global bomb guard is never reassigned;
- URL schemes by allow-list, ``file://`` as a local path, network failures as
  one line naming the URL (a real HTTP server on loopback);
- corrupt palette files are one clear error.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import types
import zipfile
import zlib

import dask.array as da
import numpy as np
import pytest
import tifffile

from bigquant import read_image
from bigquant.errors import BigquantError, ImageReadError, InvalidInputError
from bigquant.io.palette_file import read_palette
from tests.support.range_server import make_server

ALLOWED = "file, http, https, s3, gs, az, abfs, memory"


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _photo(height: int, width: int) -> np.ndarray:
    """A smooth RGB picture with noise: every orientation of it is different."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // width, y * 255 // height, (x + 2 * y) % 256], axis=-1)
    img = img + _rng().integers(0, 16, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def server(tmp_path):
    """A range-request HTTP server of ``tmp_path / "www"`` on 127.0.0.1 (a thread), with a request log."""
    www = tmp_path / "www"
    www.mkdir()
    log = tmp_path / "requests.log"
    srv = make_server(str(www), 0, str(log))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield types.SimpleNamespace(base=f"http://127.0.0.1:{srv.server_address[1]}/", www=www, log=log)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- 1. 16-bit PNG


def test_png_of_every_kind_keeps_its_bit_depth(tmp_path):
    """Grey, grey+alpha, RGB, RGBA at 8 and 16 bits (imagecodecs' libpng writer), Pillow's I;16, palette."""
    import imagecodecs
    from PIL import Image

    rng = _rng()
    for dtype in (np.uint8, np.uint16):
        top = np.iinfo(dtype).max
        for channels in (1, 2, 3, 4):
            shape = (37, 53) if channels == 1 else (37, 53, channels)
            arr = rng.integers(0, top + 1, shape, dtype=dtype)
            if channels in (2, 4):
                arr[:5, :7, -1] = 0  # transparent corner: not image
            path = tmp_path / f"c{channels}-{np.dtype(dtype).itemsize * 8}.png"
            path.write_bytes(imagecodecs.png_encode(arr))
            src = read_image(path)
            assert src.format == "png"
            assert src.dtype == dtype, (path.name, src.dtype)
            if channels in (2, 4):
                colour = arr[..., :-1] if channels == 4 else arr[..., 0]
                np.testing.assert_array_equal(src.data.compute(), colour, err_msg=path.name)
                np.testing.assert_array_equal(src.mask.compute(), arr[..., -1] != 0, err_msg=path.name)
            else:
                np.testing.assert_array_equal(src.data.compute(), arr, err_msg=path.name)
                assert src.mask is None
    # an Adam7-interlaced PNG (written by hand: neither writer interlaces)
    rgb = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    raw = b"".join(b"\x00" + row.tobytes() for y0, x0, dy, dx in passes for row in rgb[y0::dy, x0::dx])
    (tmp_path / "adam7.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 17, 13, 8, 2, 0, 0, 1))
        + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    np.testing.assert_array_equal(read_image(tmp_path / "adam7.png").data.compute(), rgb)
    grey16 = rng.integers(0, 65536, (41, 29), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "pillow-i16.png")  # Pillow's own 16-bit grey writer
    assert Image.open(tmp_path / "pillow-i16.png").mode == "I;16"
    src = read_image(tmp_path / "pillow-i16.png")
    assert src.dtype == np.uint16
    np.testing.assert_array_equal(src.data.compute(), grey16)
    pal = Image.fromarray(_photo(40, 60)).quantize(7)
    pal.save(tmp_path / "palette.png", transparency=2)
    expected = np.asarray(Image.open(tmp_path / "palette.png").convert("RGBA"))
    src = read_image(tmp_path / "palette.png")
    np.testing.assert_array_equal(src.data.compute(), expected[..., :3])
    np.testing.assert_array_equal(src.mask.compute(), expected[..., 3] != 0)


# --------------------------------------------------------------------------- 2. orientation


def _exif(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_exif_orientation_is_applied_as_pillow_does(tmp_path, fmt):
    """A 300 x 200 stored photo comes out as ``ImageOps.exif_transpose`` shows it, for 1..8."""
    from PIL import Image, ImageOps

    stored = _photo(200, 300)
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.{'jpg' if fmt == 'jpeg' else 'png'}"
        Image.fromarray(stored).save(path, exif=_exif(orientation), **({"quality": 95} if fmt == "jpeg" else {}))
        with Image.open(path) as im:
            assert im.getexif().get(0x0112) == orientation
            expected = np.asarray(ImageOps.exif_transpose(im))
        src = read_image(path)
        assert src.shape == ((300, 200, 3) if orientation >= 5 else (200, 300, 3)), orientation
        np.testing.assert_array_equal(src.data.compute(), expected, err_msg=f"orientation {orientation}")


def test_xmp_orientation_and_jpeg_past_pillows_limit(tmp_path, monkeypatch):
    """Without an EXIF Orientation, Pillow reads XMP's tiff:Orientation; so do PNG, JPEG and big JPEG reads."""
    from PIL import Image, ImageOps, PngImagePlugin

    stored = _photo(20, 30)
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
           'tiff:Orientation="{}"/></rdf:RDF></x:xmpmeta>')
    for orientation in (3, 6, 7):
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.format(orientation), zip=orientation == 7)
        Image.fromarray(stored).save(tmp_path / "x.png", pnginfo=info)
        Image.fromarray(stored).save(tmp_path / "x.jpg", quality=95, xmp=xmp.format(orientation).encode())
        Image.fromarray(stored).save(tmp_path / "e.jpg", quality=95, exif=_exif(orientation))
        for name in ("x.png", "x.jpg", "e.jpg"):
            with Image.open(tmp_path / name) as im:
                expected = np.asarray(ImageOps.exif_transpose(im))
            assert expected.shape[:2] == ((30, 20) if orientation >= 5 else (20, 30))
            np.testing.assert_array_equal(read_image(tmp_path / name).data.compute(), expected, err_msg=name)
            if name.endswith(".jpg"):  # past Pillow's limit, decoded by imagecodecs: the same pixels
                with monkeypatch.context() as patch:
                    patch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
                    big = read_image(tmp_path / name, allow_large=True)
                np.testing.assert_array_equal(big.data.compute(), expected, err_msg=f"{name} past the limit")


def test_tiff_orientation_is_applied_lazily_to_data_and_mask(tmp_path):
    """The Orientation tag (274): data and alpha mask turned alike, lazily, chunks asked of the display."""
    from PIL import Image, ImageOps

    rgba = np.dstack([_photo(200, 300), np.full((200, 300), 255, np.uint8)])
    rgba[:40, :30, 3] = 0  # a transparent corner shows where the mask went
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.tif"
        tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=[2], tile=(64, 64), compression="zlib",
                         extratags=[(274, "H", 1, orientation, True)])
        with tifffile.TiffFile(path) as tf:
            assert tf.pages[0].tags[274].value == orientation
        png = tmp_path / f"o{orientation}.png"  # Pillow's reference orientation of the same pixels
        Image.fromarray(rgba, "RGBA").save(png, exif=_exif(orientation))
        with Image.open(png) as im:
            expected = np.asarray(ImageOps.exif_transpose(im))
        src = read_image(path, chunks=(128, 64))
        assert isinstance(src.data, da.Array) and isinstance(src.mask, da.Array)
        assert src.shape == expected[..., :3].shape
        assert src.data.chunksize[:2] == (128, 64), (orientation, src.data.chunksize)
        np.testing.assert_array_equal(src.data.compute(), expected[..., :3], err_msg=f"orientation {orientation}")
        np.testing.assert_array_equal(src.mask.compute(), expected[..., 3] != 0, err_msg=f"orientation {orientation}")


def test_tiff_mask_ifd_is_oriented_with_the_image(tmp_path):
    """A mask IFD (NewSubfileType 4, Photometric MASK) turns with the image it masks."""
    from PIL import Image, ImageOps

    rgb = _photo(64, 96)
    mask = np.full((64, 96), 255, np.uint8)
    mask[:10, :20] = 0
    with tifffile.TiffWriter(tmp_path / "m.tif") as tw:
        tw.write(rgb, photometric="rgb", tile=(32, 32), metadata=None, extratags=[(274, "H", 1, 6, True)])
        tw.write(mask, photometric=4, tile=(32, 32), metadata=None,
                 extratags=[(274, "H", 1, 6, True), (254, "I", 1, 4, True)])
    Image.fromarray(np.dstack([rgb, mask]), "RGBA").save(tmp_path / "m.png", exif=_exif(6))
    with Image.open(tmp_path / "m.png") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    src = read_image(tmp_path / "m.tif")
    assert src.shape == (96, 64, 3) and src.mask is not None
    np.testing.assert_array_equal(src.data.compute(), expected[..., :3])
    np.testing.assert_array_equal(src.mask.compute(), expected[..., 3] != 0)


# --------------------------------------------------------------------------- 3. size guard


def _tiny_tiff(path, *, width: int, height: int, tile: int | None = None) -> None:
    """A classic TIFF declaring ``width`` x ``height`` 8-bit grey in ONE deflate strip (or one tile).

    Written by hand: a few hundred bytes that declare a strip (or tile) of
    terabytes; every byte count is honest about the (tiny) data present.
    """
    data = zlib.compress(b"\x00" * 4096)
    header = b"II*\x00" + struct.pack("<I", 8)
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1)]
    if tile is None:
        tags += [(273, 4, 0), (278, 4, height), (279, 4, len(data))]
    else:
        tags += [(322, 4, tile), (323, 4, tile), (324, 4, 0), (325, 4, len(data))]
    tags.sort()
    ifd_size = 2 + 12 * len(tags) + 4
    offset = 8 + ifd_size
    ifd = struct.pack("<H", len(tags))
    for code, kind, value in tags:
        if code in (273, 324):
            value = offset
        if kind == 3:
            ifd += struct.pack("<HHIHH", code, kind, 1, value, 0)
        else:
            ifd += struct.pack("<HHII", code, kind, 1, value)
    ifd += struct.pack("<I", 0)
    path.write_bytes(header + ifd + data)


def test_a_tiny_tiff_declaring_a_terabyte_strip_is_refused(tmp_path):
    path = tmp_path / "strip.tif"
    _tiny_tiff(path, width=1 << 20, height=1 << 20)
    assert path.stat().st_size < 2048
    with tifffile.TiffFile(path) as tf:  # a legal file: tifffile reads its header
        assert tf.pages[0].shape == (1 << 20, 1 << 20) and tf.pages[0].compression == 8
    with pytest.raises(ImageReadError, match=r"strip\.tif: one strip of 1048576 x 1048576 px decodes to 1\.0 TiB "
                       r"in one task, above the limit of 1\.0 GiB per task; rewrite it as a tiled TIFF.*"
                       r"max_task_bytes.*BIGQUANT_MAX_TASK_BYTES"):
        read_image(path)


def test_a_tiny_tiff_declaring_a_4_gb_tile_is_refused(tmp_path):
    path = tmp_path / "tile.tif"
    _tiny_tiff(path, width=65536, height=65536, tile=65536)
    with tifffile.TiffFile(path) as tf:
        assert tf.pages[0].is_tiled and tf.pages[0].tilewidth == 65536
    with pytest.raises(ImageReadError, match=r"tile\.tif: one tile of 65536 x 65536 px decodes to 4\.0 GiB"):
        read_image(path)


def test_a_zarr_array_of_12_gb_chunks_is_refused(tmp_path):
    import zarr

    zarr.create_array(tmp_path / "big.zarr", shape=(100_000, 100_000, 3), chunks=(65536, 65536, 3), dtype="uint8")
    with pytest.raises(ImageReadError, match=r"big\.zarr: one zarr chunk of 65536 x 65536 px x 3 samples decodes "
                       r"to 12\.0 GiB in one task"):
        read_image(tmp_path / "big.zarr")


def test_the_task_bound_is_a_parameter_and_an_environment_variable(tmp_path, monkeypatch):
    img = _photo(600, 800)  # 1.4 MB decoded
    tifffile.imwrite(tmp_path / "deflate.tif", img, photometric="rgb", compression="zlib", rowsperstrip=600)
    with pytest.raises(ImageReadError, match=r"one strip of 800 x 600 px x 3 samples decodes to 1\.4 MiB in one "
                       r"task, above the limit of 1\.0 MiB"):
        read_image(tmp_path / "deflate.tif", max_task_bytes=1 << 20)
    monkeypatch.setenv("BIGQUANT_MAX_TASK_BYTES", "1M")
    with pytest.raises(ImageReadError, match=r"above the limit of 1\.0 MiB per task"):
        read_image(tmp_path / "deflate.tif")
    monkeypatch.setenv("BIGQUANT_MAX_TASK_BYTES", "2M")
    np.testing.assert_array_equal(read_image(tmp_path / "deflate.tif").data.compute(), img)
    # a PNG is decoded whole: one task, the whole image
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "a.png")
    with pytest.raises(ImageReadError, match=r"a\.png: one image of 800 x 600 px x 3 samples decodes to 1\.4 MiB"):
        read_image(tmp_path / "a.png", max_task_bytes=1 << 20)
    with pytest.raises(BigquantError, match=r"max_task_bytes=0 must be a positive number of bytes"):
        read_image(tmp_path / "a.png", max_task_bytes=0)


def test_an_uncompressed_single_strip_is_memory_mapped_and_chunked_freely(tmp_path):
    img = _photo(600, 800)
    tifffile.imwrite(tmp_path / "raw.tif", img, photometric="rgb", rowsperstrip=600)  # one 1.4 MB strip
    src = read_image(tmp_path / "raw.tif", chunks=256, max_task_bytes=1 << 20)
    assert src.data.chunksize == (256, 256, 3)
    np.testing.assert_array_equal(src.data.compute(), img)


# --------------------------------------------------------------------------- 4. Pillow's global guard


class _Watched(types.ModuleType):
    """A module class recording every assignment to ``MAX_IMAGE_PIXELS``."""

    assignments: list = []

    def __setattr__(self, name, value):
        if name == "MAX_IMAGE_PIXELS":
            type(self).assignments.append((threading.current_thread().name, value))
        super().__setattr__(name, value)


def test_pillow_bomb_guard_is_never_reassigned(tmp_path, monkeypatch):
    """Reads of PNG, JPEG and BMP, big (allow_large) and small, leave ``Image.MAX_IMAGE_PIXELS`` alone."""
    from PIL import Image

    img = _photo(120, 160)  # 19200 px
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(img).save(tmp_path / "a.bmp")
    Image.fromarray(img[:40, :50]).save(tmp_path / "small.bmp")
    sentinel = 9000  # 120 x 160 is "large" (over twice the limit), 40 x 50 is not
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", sentinel)
    module = sys.modules["PIL.Image"]
    _Watched.assignments = []
    monkeypatch.setattr(module, "__class__", _Watched)
    seen: list[object] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(Image.MAX_IMAGE_PIXELS)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for name in ("a.png", "a.jpg"):
            with pytest.raises(ImageReadError, match=rf"{name}: 160x120 pixels .* decompression-bomb limit"):
                read_image(tmp_path / name)
            assert read_image(tmp_path / name, allow_large=True).shape == (120, 160, 3)
            assert _Watched.assignments == [], name
        np.testing.assert_array_equal(read_image(tmp_path / "small.bmp").data.compute(), img[:40, :50])
        with pytest.raises(ImageReadError, match=r"a\.bmp: above Pillow's decompression-bomb limit"):
            read_image(tmp_path / "a.bmp", allow_large=True)  # 19200 > 2 x 9000: Pillow refuses it
    finally:
        stop.set()
        watcher.join()
    assert _Watched.assignments == []
    assert set(seen) == {sentinel}
    assert Image.MAX_IMAGE_PIXELS == sentinel


# --------------------------------------------------------------------------- 5. URLs


def test_url_schemes_outside_the_allow_list_are_refused_before_reading(tmp_path, server):
    tifffile.imwrite(tmp_path / "a.tif", _photo(32, 32), photometric="rgb")
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.write(tmp_path / "a.tif", "a.tif")
    (server.www / "a.tif").write_bytes((tmp_path / "a.tif").read_bytes())
    for url, scheme in [
        ("ftp://127.0.0.1/a.tif", "ftp"),
        (f"zip://a.tif::file://{tmp_path}/a.zip", "zip"),  # a readable archive: fsspec would open it
        (f"tar://a.tif::file://{tmp_path}/a.tar", "tar"),
        (f"simplecache::{server.base}a.tif", "simplecache"),
        ("sftp://127.0.0.1/a.tif", "sftp"),
    ]:
        with pytest.raises(ImageReadError, match=rf"scheme '{scheme}' is not read by bigquant; .*{ALLOWED}"):
            read_image(url)
    assert not server.log.exists() or server.log.read_text() == ""  # nothing was asked of the server
    np.testing.assert_array_equal(read_image(f"{server.base}a.tif").data.compute(), _photo(32, 32))
    (tmp_path / "x::y.tif").write_bytes((tmp_path / "a.tif").read_bytes())  # a path, not a chained URL
    np.testing.assert_array_equal(read_image(str(tmp_path / "x::y.tif")).data.compute(), _photo(32, 32))


def test_file_urls_are_local_paths(tmp_path):
    from PIL import Image

    img = _photo(30, 40)
    folder = tmp_path / "with space"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", img, photometric="rgb")
    Image.fromarray(img).save(folder / "a.png")
    for name in ("a.tif", "a.png"):
        url = (folder / name).as_uri()  # file:///.../with%20space/a.tif
        assert "%20" in url
        src = read_image(url)
        assert str(src.path) == str(folder / name)
        np.testing.assert_array_equal(src.data.compute(), img)
    with pytest.raises(ImageReadError, match=r"no such file"):
        read_image((folder / "missing.tif").as_uri())


def _one_line(exc: BaseException, url: str) -> str:
    text = str(exc)
    assert "\n" not in text and text.startswith(url), text
    assert isinstance(exc, ImageReadError)
    return text


def test_network_failures_are_one_line_naming_the_url(server, monkeypatch):
    from PIL import Image

    Image.fromarray(_photo(20, 20)).save(server.www / "a.png")
    dead = _free_port()
    for name in ("a.tif", "a.png"):
        url = f"http://127.0.0.1:{dead}/{name}"
        with pytest.raises(ImageReadError) as info:
            read_image(url)
        assert _one_line(info.value, url).endswith("connection refused")
    missing = f"{server.base}missing.png"
    with pytest.raises(ImageReadError) as info:
        read_image(missing)
    assert _one_line(info.value, missing) == f"{missing}: no such file (HTTP 404)"
    # a server that accepts connections and never answers
    monkeypatch.setenv("BIGQUANT_URL_TIMEOUT", "1")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/a.tif"
        with pytest.raises(ImageReadError) as info:
            read_image(url)
    assert "timed out after 1 s" in _one_line(info.value, url)
    np.testing.assert_array_equal(read_image(f"{server.base}a.png").data.compute(), _photo(20, 20))
    upper = "HTTP" + server.base[4:] + "a.png"  # schemes are case-insensitive (RFC 3986)
    np.testing.assert_array_equal(read_image(upper).data.compute(), _photo(20, 20))


# --------------------------------------------------------------------------- 6. palette files


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_palette_png_with_indices_past_its_colour_table(tmp_path):
    """Two colours in PLTE, a pixel of index 5 (written by hand: encoders refuse it)."""
    index = np.array([[0, 1, 1], [5, 1, 0]], np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in index)
    png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 3, 0, 0, 0))
           + _chunk(b"PLTE", bytes([255, 0, 0, 0, 0, 255])) + _chunk(b"IDAT", zlib.compress(raw))
           + _chunk(b"IEND", b""))
    (tmp_path / "bad.png").write_bytes(png)
    with pytest.raises(InvalidInputError, match=r"bad\.png: pixel index 5 is past the image's colour table of 2"):
        read_palette(tmp_path / "bad.png")


def test_deeply_nested_palette_json(tmp_path):
    depth = 100_000
    (tmp_path / "deep.json").write_text('{"palette": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(ImageReadError, match=r"deep\.json: not a palette JSON: .*nested too deeply"):
        read_palette(tmp_path / "deep.json")
    (tmp_path / "deep2.json").write_text("[" * depth + "]" * depth)
    with pytest.raises(ImageReadError, match=r"deep2\.json: .*nested too deeply"):
        read_palette(tmp_path / "deep2.json")
