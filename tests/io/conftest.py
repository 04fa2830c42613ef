"""Small real-like files: Aperio SVS, NDPI, OME-TIFF, GeoTIFF, GDAL masks, codecs, a URL.

Every fixture writes its file once per session (``tmp_path_factory``) from a real
photograph (matplotlib's ``grace_hopper.jpg``, resized, with seeded noise so
that it has many colours) and returns a :class:`RealFile`: the path, the pixels
of each pyramid level of the image series decoded *independently of bigquant*
(the array written for lossless codecs; the codec, Pillow, GDAL or tifffile's
whole-page ``asarray()`` for lossy ones), how exactly a reader must reproduce
them, and what :func:`bigquant.io.inspect.classify_series` must say.

The layouts follow the real files (research notes in the "Real files" issue):

- Aperio SVS: BigTIFF; IFD0 level 0 (tiled 256, JPEG tiles sharing JPEGTables),
  IFD1 a stripped JPEG thumbnail, then the reduced levels (tiled, NewSubfileType
  **0**: with 1, tifffile takes them for labels), then the label (LZW strips,
  NewSubfileType 1) and the macro (JPEG strips, NewSubfileType 9); every
  description starts ``Aperio Image Library``, the label's and macro's end in
  ``label WxH`` / ``macro WxH``.  tifffile never writes JPEGTables, so tiles are
  encoded here and split into tables + abbreviated streams.  JPEG 2000 slides:
  33003 holds Y, Cb, Cr codestreams without MCT (the reader converts to RGB),
  33005 RGB codestreams with MCT.
- NDPI: tifffile cannot write it (classic TIFF header with 8-byte IFD offsets and
  4 high bytes per tag); written byte by byte here, one JPEG strip per level with
  restart markers and the McuStarts tag (65426).
- GeoTIFF: uint16, 4 bands, pixel-interleaved (``planarconfig='contig'`` or
  tifffile writes one page per row), deflate tiles, EPSG:32633, GDAL_NODATA 0
  and a nodata border.
- GDAL internal mask: written by rasterio with ``GDAL_TIFF_INTERNAL_MASK``; IFD1
  is the 1-bit mask (NewSubfileType 4, Photometric MASK), overviews follow.
"""

from __future__ import annotations

import io
import pathlib
import struct
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

SUPPORT = pathlib.Path(__file__).resolve().parents[1] / "support"

APERIO = "Aperio Image Library v12.0.15"
TILE = 256
#: size (H, W) of the slide-like fixtures (SVS family) and of ``mask_tiff``
SLIDE = (640, 896)
#: size (H, W) of the codec fixtures: edge tiles and a short last strip
CODEC = (360, 480)


@dataclass(frozen=True)
class RealFile:
    """A fixture file and what a reader must find in it.

    Attributes
    ----------
    path : pathlib.Path
        The file (for ``http_url``: the local copy the server serves).
    levels : tuple of numpy.ndarray
        The pixels of each pyramid level of the image series, decoded
        independently of bigquant (see ``decoder``); ``levels[0]`` is
        full resolution.
    exact : bool
        A reader must give ``levels`` bit for bit; else within ``max_diff``
        and ``match_psnr``.
    max_diff : int
        Largest absolute difference allowed per sample when not ``exact``.
    match_psnr : float
        Lowest PSNR (dB) of a reader's pixels against ``levels`` when not ``exact``.
    decoder : str
        Where ``levels`` come from.
    kinds : tuple of str
        What ``classify_series`` must say of each series.
    original : numpy.ndarray or None
        The array that was encoded (level 0), before any lossy codec.
    min_psnr : float
        PSNR (dB) of ``levels[0]`` against ``original`` the codec reaches.
    url : str or None
        ``http_url`` only: the address of ``path`` on the test server.
    extra : dict
        Fixture-specific facts (nodata, masks, request log...).
    """

    path: pathlib.Path
    levels: tuple[np.ndarray, ...]
    exact: bool
    decoder: str
    kinds: tuple[str, ...]
    max_diff: int = 0
    match_psnr: float = 99.0
    original: np.ndarray | None = None
    min_psnr: float = 99.0
    url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> np.ndarray:
        """Level 0 of the image, decoded independently."""
        return self.levels[0]


# --------------------------------------------------------------------------- pixels


def photo(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """Grace Hopper resized to (height, width, 3) uint8, plus uniform noise in [-3, 3]."""
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        im = Image.open(fh).convert("RGB").resize((width, height), Image.LANCZOS)
    rng = np.random.default_rng(seed)
    noisy = np.asarray(im).astype(np.int16) + rng.integers(-3, 4, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def shrink(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-filtered reduction by an integer factor (Pillow BOX), as slide scanners do."""
    from PIL import Image

    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((w // factor, h // factor), Image.BOX))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit arrays in dB (99 when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def tiles_of(img: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """The tiles of ``img`` in TIFF order (row-major), edge tiles zero-padded."""
    h, w = img.shape[:2]
    for y in range(0, h, size):
        for x in range(0, w, size):
            t = img[y : y + size, x : x + size]
            if t.shape[:2] != (size, size):
                pad = np.zeros((size, size) + img.shape[2:], img.dtype)
                pad[: t.shape[0], : t.shape[1]] = t
                t = pad
            yield np.ascontiguousarray(t)


def untile(tiles: list[np.ndarray], shape: tuple[int, ...], size: int) -> np.ndarray:
    """Inverse of :func:`tiles_of`: paste decoded tiles into an array of ``shape``."""
    out = np.zeros(shape, tiles[0].dtype)
    h, w = shape[:2]
    nx = -(-w // size)
    for i, t in enumerate(tiles):
        y, x = (i // nx) * size, (i % nx) * size
        out[y : y + size, x : x + size] = t[: min(size, h - y), : min(size, w - x)]
    return out


def rgb_to_ycc(a: np.ndarray) -> np.ndarray:
    """RGB -> Y, Cb, Cr (JPEG/JFIF full-range BT.601), uint8."""
    a = a.astype(np.float64)
    y = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    cb = 128 - 0.168736 * a[..., 0] - 0.331264 * a[..., 1] + 0.5 * a[..., 2]
    cr = 128 + 0.5 * a[..., 0] - 0.418688 * a[..., 1] - 0.081312 * a[..., 2]
    return np.clip(np.round(np.stack([y, cb, cr], -1)), 0, 255).astype(np.uint8)


def ycc_to_rgb(a: np.ndarray) -> np.ndarray:
    """Y, Cb, Cr -> RGB (JPEG/JFIF full-range BT.601), uint8."""
    a = a.astype(np.float64)
    y, cb, cr = a[..., 0], a[..., 1] - 128, a[..., 2] - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- JPEG streams


def _jpeg_segments(buf: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment of a JPEG, up to and including SOS."""
    assert buf[:2] == b"\xff\xd8", "not a JPEG stream"
    i = 2
    while i < len(buf):
        assert buf[i] == 0xFF, (i, buf[i])
        marker = buf[i + 1]
        length = struct.unpack(">H", buf[i + 2 : i + 4])[0]
        yield marker, i, i + 2 + length
        if marker == 0xDA:  # SOS: entropy-coded data follow
            return
        i += 2 + length


def split_jpeg(buf: bytes, *, drop_app: bool = False) -> tuple[bytes, bytes]:
    """Split a JPEG into TIFF JPEGTables (SOI DQT DHT EOI) and the abbreviated stream.

    ``drop_app`` removes APPn markers (JFIF, Adobe) as Aperio's RGB JPEG tiles lack them.
    """
    tables, rest, last = [b"\xff\xd8"], [b"\xff\xd8"], 0
    for marker, start, end in _jpeg_segments(buf):
        if marker in (0xDB, 0xC4):
            tables.append(buf[start:end])
        elif not (drop_app and 0xE0 <= marker <= 0xEF):
            rest.append(buf[start:end])
        last = end
    rest.append(buf[last:])
    tables.append(b"\xff\xd9")
    return b"".join(tables), b"".join(rest)


# --------------------------------------------------------------------------- SVS


def _encode_level(level: np.ndarray, codec: str) -> tuple[list[bytes], bytes | None, dict[str, Any], np.ndarray]:
    """Encode the tiles of one slide level.

    Returns the tile bytes, the JPEGTables (JPEG) or None, tifffile write options,
    and the level decoded from those bytes without tifffile (None for JPEG: see
    :func:`write_svs`).
    """
    import imagecodecs

    if codec in ("jpeg", "jpeg-rgb"):
        kw: dict[str, Any] = {"level": 80, "optimize": False}  # standard Huffman tables: identical
        if codec == "jpeg-rgb":
            kw.update(colorspace="rgb", outcolorspace="rgb")  # no colour transform, ids 'R','G','B'
        tables, tiles = None, []
        for t in tiles_of(level, TILE):
            tb, abbreviated = split_jpeg(imagecodecs.jpeg8_encode(t, **kw), drop_app=codec == "jpeg-rgb")
            assert tables is None or tb == tables, "JPEG tables differ between tiles"
            tables = tb
            tiles.append(abbreviated)
        if codec == "jpeg":  # photometric YCbCr, 4:2:0
            opts = {"photometric": "rgb", "compression": "jpeg", "subsampling": (2, 2)}
        else:  # photometric RGB
            opts = {"photometric": "rgb", "compression": "jpeg", "subsampling": (1, 1),
                    "compressionargs": {"outcolorspace": "rgb"}}
        return tiles, tables, opts, None
    if codec == "j2k-33003":  # Y, Cb, Cr components, no multiple-component transform
        tiles = [imagecodecs.jpeg2k_encode(t, level=40, codecformat="j2k", mct=False)
                 for t in tiles_of(rgb_to_ycc(level), TILE)]
        decoded = untile([imagecodecs.jpeg2k_decode(t) for t in tiles], level.shape, TILE)
        return tiles, None, {"photometric": "rgb", "compression": 33003}, ycc_to_rgb(decoded)
    if codec == "j2k-33005":  # RGB components with the MCT
        tiles = [imagecodecs.jpeg2k_encode(t, level=40, codecformat="j2k", mct=True)
                 for t in tiles_of(level, TILE)]
        decoded = untile([imagecodecs.jpeg2k_decode(t) for t in tiles], level.shape, TILE)
        return tiles, None, {"photometric": "rgb", "compression": 33005}, decoded
    raise ValueError(f"codec={codec!r}")


def write_svs(path: pathlib.Path, base: np.ndarray, codec: str) -> list[np.ndarray]:
    """Write an Aperio-like slide; return the independently decoded pixels of each level.

    JPEG levels are decoded by tifffile's whole-page ``asarray()`` (libjpeg-turbo
    through imagecodecs, with the JPEGTables); JPEG 2000 levels by imagecodecs
    from the codestreams written, 33003 converted from YCbCr here.
    """
    import tifffile
    from PIL import Image

    h, w = base.shape[:2]
    levels = [base]
    while min(levels[-1].shape[:2]) >= 4 * 64:  # Aperio reduces by 4
        levels.append(shrink(levels[-1], 4))
    thumb_h = 160
    thumb = np.asarray(Image.fromarray(base).resize((w * thumb_h // h, thumb_h), Image.BOX))
    label = np.full((240, 224, 3), 255, np.uint8)
    label[40:200:8, 30:190] = 0
    macro = np.asarray(Image.fromarray(base).resize((480, 160), Image.BILINEAR))
    name = {"jpeg": "JPEG/YCC Q=80", "jpeg-rgb": "JPEG/RGB Q=80", "j2k-33003": "J2K/YUV16 Q=70",
            "j2k-33005": "J2K/KDU Q=70"}[codec]
    common = {"metadata": None, "software": False}
    decoded = []
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, lev in enumerate(levels):
            tiles, tables, opts, independent = _encode_level(lev, codec)
            desc = f"{APERIO} \r\n{w}x{h} [0,0 {w}x{h}] ({TILE}x{TILE})"
            if i:
                desc += f" -> {lev.shape[1]}x{lev.shape[0]}"
            desc += f" {name}|AppMag = 20|MPP = 0.4990|Filename = fixture"
            tw.write(iter(tiles), shape=lev.shape, dtype=np.uint8, tile=(TILE, TILE), jpegtables=tables,
                     description=desc, subfiletype=0, **opts, **common)
            decoded.append(independent)
            if i == 0:  # IFD1: the stripped JPEG thumbnail
                tw.write(thumb, rowsperstrip=16, photometric="rgb", compression="jpeg", subfiletype=0,
                         description=f"{APERIO} \r\n{w}x{h} -> {thumb.shape[1]}x{thumb.shape[0]} - "
                                     "|AppMag = 20|MPP = 0.4990", **common)
        tw.write(label, photometric="rgb", compression="lzw", rowsperstrip=16, subfiletype=1,
                 description=f"{APERIO}\r\nlabel {label.shape[1]}x{label.shape[0]}", **common)
        tw.write(macro, photometric="rgb", compression="jpeg", rowsperstrip=16, subfiletype=9,
                 description=f"{APERIO}\r\nmacro {macro.shape[1]}x{macro.shape[0]}", **common)
    if codec.startswith("jpeg"):
        with tifffile.TiffFile(path) as tf:
            pages = [p for p in tf.pages if p.is_tiled]
            decoded = [p.asarray() for p in pages]
    return decoded


def _svs(tmp_path_factory: pytest.TempPathFactory, codec: str, name: str, min_psnr: float,
         exact: bool = True, max_diff: int = 0, match_psnr: float = 99.0) -> RealFile:
    base = photo(*SLIDE)
    path = tmp_path_factory.mktemp("svs") / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile's notes on pre-encoded data
        levels = write_svs(path, base, codec)
    decoder = ("tifffile whole-page asarray (imagecodecs libjpeg-turbo)" if codec.startswith("jpeg")
               else "imagecodecs.jpeg2k_decode of the codestreams" + (" + YCbCr->RGB" if codec.endswith("3") else ""))
    return RealFile(path=path, levels=tuple(levels), exact=exact, max_diff=max_diff, match_psnr=match_psnr,
                    decoder=decoder,
                    kinds=("image", "thumbnail", "label", "macro"), original=base, min_psnr=min_psnr,
                    extra={"codec": codec})


@pytest.fixture(scope="session")
def svs_jpeg(tmp_path_factory) -> RealFile:
    """Aperio-like BigTIFF: JPEG (YCbCr 4:2:0) 256² tiles with JPEGTables, thumbnail, 2 levels, label, macro."""
    return _svs(tmp_path_factory, "jpeg", "jpeg_ycbcr.svs", 35.0)


@pytest.fixture(scope="session")
def svs_jpeg_rgb(tmp_path_factory) -> RealFile:
    """As ``svs_jpeg`` with Photometric RGB JPEG tiles (no colour transform, no APP markers)."""
    return _svs(tmp_path_factory, "jpeg-rgb", "jpeg_rgb.svs", 37.0)


@pytest.fixture(scope="session")
def svs_j2k_33003(tmp_path_factory) -> RealFile:
    """Aperio JPEG 2000 33003: Y, Cb, Cr codestreams without MCT; the reader must convert to RGB.

    ``levels`` are the codestreams decoded by imagecodecs and converted here
    (float64, rounded); a reader converting in another precision may differ by 1.
    """
    return _svs(tmp_path_factory, "j2k-33003", "j2k_33003.svs", 30.0, exact=False, max_diff=1,
                match_psnr=60.0)


@pytest.fixture(scope="session")
def svs_j2k_33005(tmp_path_factory) -> RealFile:
    """Aperio JPEG 2000 33005: RGB codestreams with the MCT."""
    return _svs(tmp_path_factory, "j2k-33005", "j2k_33005.svs", 35.0)


# --------------------------------------------------------------------------- codecs


def _codec_file(tmp_path_factory: pytest.TempPathFactory, name: str, lossless: bool, **options: Any) -> RealFile:
    import tifffile

    img = photo(*CODEC, seed=1)
    path = tmp_path_factory.mktemp("codecs") / f"{name}.tif"
    tifffile.imwrite(path, img, photometric="rgb", metadata=None, **options)
    if lossless:
        return RealFile(path=path, levels=(img,), exact=True, decoder="the array written (lossless)",
                        kinds=("image",), original=img)
    with tifffile.TiffFile(path) as tf:
        ref = tf.pages[0].asarray()
    return RealFile(path=path, levels=(ref,), exact=True, decoder="tifffile whole-page asarray",
                    kinds=("image",), original=img, min_psnr=35.0)


@pytest.fixture(scope="session")
def lzw_strips(tmp_path_factory) -> RealFile:
    """LZW strips of 64 rows (the last one short) with the horizontal predictor."""
    return _codec_file(tmp_path_factory, "lzw_strips", True, compression="lzw", rowsperstrip=64, predictor=True)


@pytest.fixture(scope="session")
def deflate_predictor(tmp_path_factory) -> RealFile:
    """Deflate (ADOBE_DEFLATE, 8) 256² tiles with the horizontal predictor."""
    return _codec_file(tmp_path_factory, "deflate_predictor", True, compression="zlib",
                       compressionargs={"level": 6}, predictor="horizontal", tile=(TILE, TILE))


@pytest.fixture(scope="session")
def zstd_tiles(tmp_path_factory) -> RealFile:
    """Zstandard (50000) 256² tiles."""
    return _codec_file(tmp_path_factory, "zstd_tiles", True, compression="zstd",
                       compressionargs={"level": 9}, tile=(TILE, TILE))


@pytest.fixture(scope="session")
def webp_tiles(tmp_path_factory) -> RealFile:
    """Lossy WebP (50001) 256² tiles (imagecodecs is lossless unless told ``lossless=False``)."""
    return _codec_file(tmp_path_factory, "webp_tiles", False, compression="webp",
                       compressionargs={"level": 85, "lossless": False}, tile=(TILE, TILE))


@pytest.fixture(scope="session")
def packbits(tmp_path_factory) -> RealFile:
    """PackBits (32773) strips of 32 rows."""
    return _codec_file(tmp_path_factory, "packbits", True, compression="packbits", rowsperstrip=32)


# --------------------------------------------------------------------------- OME-TIFF


def _ome(path: pathlib.Path, levels: list[np.ndarray], macro: np.ndarray, *, macro_first: bool) -> None:
    import tifffile

    opts = {"photometric": "rgb", "tile": (TILE, TILE), "compression": "zlib", "predictor": True}
    meta = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 0.5, "PhysicalSizeYUnit": "µm"}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        if macro_first:
            tw.write(macro, metadata={"axes": "YXS", "Name": "macro"}, photometric="rgb", compression="zlib")
        tw.write(levels[0], subifds=len(levels) - 1, resolutionunit="CENTIMETER",
                 resolution=(1e4 / 0.5, 1e4 / 0.5), metadata={**meta, "Name": "slide"}, **opts)
        for lev in levels[1:]:  # SubIFDs of the page just written
            tw.write(lev, subfiletype=1, **opts)
        if not macro_first:
            tw.write(macro, metadata={"axes": "YXS", "Name": "macro"}, photometric="rgb", compression="zlib")


@pytest.fixture(scope="session")
def ome_pyramid(tmp_path_factory) -> RealFile:
    """OME-TIFF: a 3-level SubIFD pyramid (deflate + predictor tiles), then a second image "macro"."""
    img = photo(512, 768, seed=2)
    levels = [img, shrink(img, 2), shrink(img, 4)]
    path = tmp_path_factory.mktemp("ome") / "pyramid.ome.tif"
    _ome(path, levels, levels[2], macro_first=False)
    return RealFile(path=path, levels=tuple(levels), exact=True, decoder="the arrays written (lossless)",
                    kinds=("image", "macro"), original=img)


@pytest.fixture(scope="session")
def ome_macro_first(tmp_path_factory) -> RealFile:
    """As ``ome_pyramid`` with the macro as OME Image 0: the slide is series 1, not 0."""
    img = photo(512, 768, seed=2)
    levels = [img, shrink(img, 2), shrink(img, 4)]
    path = tmp_path_factory.mktemp("ome") / "macro_first.ome.tif"
    _ome(path, levels, levels[2], macro_first=True)
    return RealFile(path=path, levels=tuple(levels), exact=True, decoder="the arrays written (lossless)",
                    kinds=("macro", "image"), original=img, extra={"image_series": 1})


# --------------------------------------------------------------------------- NDPI

_SHORT, _LONG, _RATIONAL, _ASCII, _FLOAT = 3, 4, 5, 2, 11
#: largest difference between tifffile's per-interval NDPI decode and a whole-stream decode
NDPI_MAX_DIFF = 48


def _jpeg_with_restarts(a: np.ndarray, *, quality: int = 85, interval: int = 8) -> tuple[bytes, list[int]]:
    """A baseline 4:2:0 JPEG with a restart marker every ``interval`` MCUs, and where each interval starts."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality, subsampling="4:2:0", restart_marker_blocks=interval)
    j = buf.getvalue()
    sos = j.index(b"\xff\xda")
    start = sos + 2 + struct.unpack(">H", j[sos + 2 : sos + 4])[0]  # first entropy-coded byte
    starts, i = [start], start
    while True:  # RSTn = FF D0..D7, never byte-stuffed
        i = j.find(b"\xff", i)
        if i < 0 or i + 1 >= len(j):
            break
        if 0xD0 <= j[i + 1] <= 0xD7:
            starts.append(i + 2)
        i += 2
    return j, starts


def write_ndpi(path: pathlib.Path, pages: list[tuple[np.ndarray, float, bool]], *, photometric: int = 6) -> list[bytes]:
    """Write an NDPI-like file: one JPEG strip per page, McuStarts (65426) when restarts.

    ``pages`` are (pixels, magnification (-1 for the macro), with restart markers).
    NDPI is classic TIFF whose IFD offsets are 8 bytes, each IFD followed by the
    high 4 bytes of every tag value (tifffile reads it so).  Photometric 6
    (YCbCr) keeps tifffile's per-tile and whole-strip decodes in agreement.
    Returns the JPEG stream of each page.
    """
    from PIL import Image

    streams = []
    with open(path, "wb") as f:
        f.write(b"II*\x00" + struct.pack("<Q", 0))  # first-IFD offset, read as 8 bytes
        link = 4  # where the offset of the next IFD goes
        for a, magnification, restarts in pages:
            h, w = a.shape[:2]
            if restarts:
                j, starts = _jpeg_with_restarts(a)
            else:
                buf = io.BytesIO()
                Image.fromarray(a).save(buf, "JPEG", quality=85)
                j, starts = buf.getvalue(), None
            streams.append(j)
            data = f.tell()
            f.write(j)
            tags = [(254, _LONG, [0]), (256, _LONG, [w]), (257, _LONG, [h]), (258, _SHORT, [8, 8, 8]),
                    (259, _SHORT, [7]), (262, _SHORT, [photometric]), (271, _ASCII, b"Hamamatsu\0"),
                    (272, _ASCII, b"NanoZoomer\0"), (273, _LONG, [data]), (277, _SHORT, [3]),
                    (278, _LONG, [h]), (279, _LONG, [len(j)]), (282, _RATIONAL, [20000, 1]),
                    (283, _RATIONAL, [20000, 1]), (296, _SHORT, [3]), (65420, _LONG, [1]),
                    (65421, _FLOAT, [magnification]), (65422, _LONG, [0]), (65423, _LONG, [0]),
                    (65424, _LONG, [0])]
            if starts:
                tags.append((65426, _LONG, starts))
            entries = []
            for code, typ, val in sorted(tags):
                if typ == _ASCII:
                    raw, count = val, len(val)
                else:
                    fmt = {_SHORT: "H", _LONG: "I", _RATIONAL: "I", _FLOAT: "f"}[typ]
                    raw = struct.pack(f"<{len(val)}{fmt}", *val)
                    count = len(val) // (2 if typ == _RATIONAL else 1)
                if len(raw) <= 4:
                    entries.append(struct.pack("<HHI", code, typ, count) + raw.ljust(4, b"\0"))
                else:  # value out of line, word-aligned
                    if f.tell() % 2:
                        f.write(b"\0")
                    offset = f.tell()
                    f.write(raw)
                    entries.append(struct.pack("<HHII", code, typ, count, offset))
            if f.tell() % 2:
                f.write(b"\0")
            ifd = f.tell()
            f.write(struct.pack("<H", len(entries)) + b"".join(entries))
            next_link = f.tell()
            f.write(struct.pack("<Q", 0))  # 8-byte offset of the next IFD
            f.write(b"\0" * 4 * len(entries))  # high 32 bits of each tag value
            end = f.tell()
            f.seek(link)
            f.write(struct.pack("<I" if link == 4 else "<Q", ifd))
            f.seek(end)
            link = next_link
    return streams


@pytest.fixture(scope="session")
def ndpi_like(tmp_path_factory) -> RealFile:
    """NDPI-like: 3 levels (512 x 1024, /2, /4), each one JPEG strip with restart markers, and a macro.

    ``levels`` are the JPEG streams decoded whole by Pillow (bit for bit what
    tifffile's whole-page ``asarray()`` gives).  tifffile's tile paths decode
    NDPI per restart interval (virtual 16 x 128 tiles), whose chroma
    upsampling cannot see across interval edges: there a reader differs from
    the whole-stream decode (measured: at most 32 levels, 47-54 dB).
    """
    from PIL import Image

    img = photo(512, 1024, seed=3)
    levels = [img, shrink(img, 2), shrink(img, 4)]
    macro = np.asarray(Image.fromarray(img).resize((320, 120), Image.BILINEAR))
    path = tmp_path_factory.mktemp("ndpi") / "slide.ndpi"
    streams = write_ndpi(path, [(levels[0], 20.0, True), (levels[1], 10.0, True), (levels[2], 5.0, True),
                                (macro, -1.0, False)])
    decoded = tuple(np.asarray(Image.open(io.BytesIO(s)).convert("RGB")) for s in streams[:3])
    return RealFile(path=path, levels=decoded, exact=False, max_diff=NDPI_MAX_DIFF, match_psnr=44.0,
                    decoder="Pillow, whole JPEG stream (= tifffile's whole-page asarray)",
                    kinds=("image", "macro"), original=img, min_psnr=35.0)


# --------------------------------------------------------------------------- GeoTIFF and masks


def geotiff_extratags(*, epsg: int = 32633, x0: float = 500000.0, y0: float = 5000000.0, res: float = 10.0,
                      nodata: float | None = None, citation: str = "WGS 84 / UTM zone 33N") -> list[tuple]:
    """tifffile ``extratags`` of a north-up projected GeoTIFF (PixelIsArea, metres)."""
    ascii_params = citation + "|"
    keys = [1, 1, 0, 5,  # directory version, revision, minor revision, number of keys
            1024, 0, 1, 1,  # GTModelType: projected
            1025, 0, 1, 1,  # GTRasterType: PixelIsArea
            1026, 34737, len(ascii_params), 0,  # GTCitation in GeoAsciiParams
            3072, 0, 1, epsg,  # ProjectedCSType
            3076, 0, 1, 9001]  # ProjLinearUnits: metre
    tags = [(33550, 12, 3, (res, res, 0.0), True),  # ModelPixelScale
            (33922, 12, 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True),  # ModelTiepoint
            (34735, 3, len(keys), tuple(keys), True),  # GeoKeyDirectory
            (34737, 2, 0, ascii_params, True)]  # GeoAsciiParams
    if nodata is not None:
        tags.append((42113, 2, 0, str(nodata), True))  # GDAL_NODATA
    return tags


@pytest.fixture(scope="session")
def geotiff_u16(tmp_path_factory) -> RealFile:
    """GeoTIFF: uint16, 4 bands pixel-interleaved, deflate + predictor 256² tiles, EPSG:32633,
    GDAL_NODATA 0 and a nodata border (``extra["valid"]``: where the data are)."""
    import tifffile

    img = photo(384, 512, seed=4).astype(np.uint16)
    nir = img[..., 1] // 2 + 64
    data = np.dstack([img * 257 // 4 + 1, nir * 200 + 1]).astype(np.uint16)  # every value >= 1
    valid = np.zeros(data.shape[:2], bool)
    valid[24:-24, 40:-40] = True
    data[~valid] = 0
    path = tmp_path_factory.mktemp("geotiff") / "u16_4band.tif"
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig", tile=(TILE, TILE),
                     compression="zlib", predictor=True, metadata=None, extratags=geotiff_extratags(nodata=0))
    return RealFile(path=path, levels=(data,), exact=True, decoder="the array written (lossless)",
                    kinds=("image",), original=data,
                    extra={"nodata": 0, "epsg": 32633, "valid": valid,
                           "transform": (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)})


def _tissue(height: int, width: int) -> np.ndarray:
    """uint8 0/255: an ellipse of "tissue" nearly filling the frame."""
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - height / 2) / (0.47 * height)) ** 2 + ((xx - width / 2) / (0.46 * width)) ** 2 <= 1
    return np.where(inside, 255, 0).astype(np.uint8)


@pytest.fixture(scope="session")
def gdal_mask_tiff(tmp_path_factory) -> RealFile:
    """Written by GDAL: JPEG YCbCr 256² tiles, an internal 1-bit mask (IFD1), overviews 2 and 4.

    ``levels`` are tifffile's whole-page decodes of the image and its overviews;
    ``extra["gdal_levels"]`` GDAL's (libtiff upsamples chroma its own way: up to
    40 dB apart at the smallest overview); ``extra["mask"]`` is the mask written
    (uint8 0/255) and ``extra["mask_series"]`` its series.
    """
    import rasterio
    import tifffile
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    img = photo(512, 768, seed=5)
    mask = _tissue(512, 768)
    path = tmp_path_factory.mktemp("gdal") / "internal_mask.tif"
    profile = {"driver": "GTiff", "width": 768, "height": 512, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": TILE, "blockysize": TILE, "compress": "JPEG", "photometric": "YCBCR",
               "jpeg_quality": 85, "crs": "EPSG:32633"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        profile["transform"] = from_origin(500000, 5000000, 10, 10)
    with warnings.catch_warnings(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # affine's `*` inside rasterio
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.moveaxis(img, -1, 0))
            dst.write_mask(mask)
        with rasterio.open(path, "r+") as dst:
            dst.build_overviews([2, 4], Resampling.average)
    gdal = []
    with rasterio.open(path) as src:
        gdal.append(np.moveaxis(src.read(), 0, -1))
        for factor in src.overviews(1):
            shape = (3, src.height // factor, src.width // factor)
            gdal.append(np.moveaxis(src.read(out_shape=shape), 0, -1))
    with tifffile.TiffFile(path) as tf:
        levels = tuple(level.asarray() for level in tf.series[0].levels)
    return RealFile(path=path, levels=levels, exact=True, decoder="tifffile whole-page asarray",
                    kinds=("image", "mask"), original=img, min_psnr=35.0,
                    extra={"mask": mask, "mask_series": 1, "gdal_levels": tuple(gdal)})


@pytest.fixture(scope="session")
def mask_tiff(tmp_path_factory, svs_jpeg) -> RealFile:
    """A user's mask file for ``svs_jpeg``: uint8 0/255, same height and width, deflate 256² tiles."""
    import tifffile

    mask = _tissue(*svs_jpeg.reference.shape[:2])
    path = tmp_path_factory.mktemp("mask") / "tissue_mask.tif"
    tifffile.imwrite(path, mask, photometric="minisblack", tile=(TILE, TILE), compression="zlib", metadata=None)
    return RealFile(path=path, levels=(mask,), exact=True, decoder="the array written (lossless)",
                    kinds=("image",), original=mask, extra={"for": svs_jpeg.path})


@pytest.fixture(scope="session")
def rgba_png(tmp_path_factory) -> RealFile:
    """RGBA PNG whose top-left quarter and a right-hand band are transparent (alpha 0)."""
    from PIL import Image

    rgb = photo(240, 320, seed=6)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:120, :160] = 0
    alpha[:, 288:] = 0
    rgba = np.dstack([rgb, alpha])
    path = tmp_path_factory.mktemp("png") / "transparent.png"
    Image.fromarray(rgba).save(path)
    ref = np.asarray(Image.open(path).convert("RGBA"))
    return RealFile(path=path, levels=(ref,), exact=True, decoder="Pillow", kinds=(), original=rgba,
                    extra={"valid": alpha > 0})


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="session")
def http_url(tmp_path_factory) -> Iterator[RealFile]:
    """A tiled JPEG TIFF served over HTTP with byte ranges (``tests/support/range_server.py``).

    Runs the server as a subprocess on 127.0.0.1 (any free port) for the
    session; ``url`` is the file's address, ``path`` the file served and
    ``extra["log"]`` the server's request log (one line per request with its
    Range header).  The server is terminated at teardown.
    """
    import tifffile

    folder = tmp_path_factory.mktemp("http")
    served = folder / "www"
    served.mkdir()
    img = photo(512, 768, seed=7)
    path = served / "tiled.tif"
    tifffile.imwrite(path, img, photometric="rgb", tile=(TILE, TILE), compression="jpeg",
                     compressionargs={"level": 90}, metadata=None)
    with tifffile.TiffFile(path) as tf:
        ref = tf.pages[0].asarray()
    log = folder / "requests.log"
    proc = subprocess.Popen([sys.executable, str(SUPPORT / "range_server.py"), str(served), "0", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = _first_line(proc, timeout=30.0)
        yield RealFile(path=path, levels=(ref,), exact=True, decoder="tifffile whole-page asarray",
                       kinds=("image",), original=img, min_psnr=35.0, url=f"{base}{path.name}",
                       extra={"log": log, "base": base})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first stdout line of ``proc`` (the server's base URL), or fail the fixture."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not line or not line[0].startswith("http://"):
        proc.kill()
        err = proc.stderr.read() if proc.poll() is not None else ""
        pytest.fail(f"range server did not start: {line!r} {err}")
    return line[0].strip()
