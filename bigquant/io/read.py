"""``read_image``: any supported source -> :class:`ImageSource` (lazy dask array).

Files come out as they are meant to be seen and at the depth they hold: PNG is
decoded by imagecodecs (16-bit samples stay uint16), EXIF orientation (PNG,
JPEG) and the TIFF Orientation tag are applied, Pillow's decompression-bomb
limit is read but never reassigned (another thread's reads keep it), and no
task decodes more than :func:`bigquant.io.chunks.max_task_bytes`.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pathlib
import warnings
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from bigquant import tasks
from bigquant.errors import ImageReadError, InputTypeError, InvalidInputError
from bigquant.io.chunks import MAX_TASK_BYTES_ENV, ChunksLike, aligned_chunks, check_task_bytes, format_bytes
from bigquant.io.chunks import max_task_bytes as task_bytes_limit
from bigquant.io.files import check_location, file_stamp, is_url, local_path, open_binary, read_bytes
from bigquant.io.mask import alpha_mask, combine_masks, finite_mask
from bigquant.io.metadata import ImageMetadata
from bigquant.io.source import ImageSource
from bigquant.io.tiff_read import TRANSPOSED_ORIENTATIONS, is_tiff, oriented, read_tiff

if TYPE_CHECKING:  # imported where a dask array is built (~0.4 s): `bigquant info` of a PNG needs none
    import dask.array as da

__all__ = ["read_image", "as_source", "decode_image", "DecodedImage"]

logger = logging.getLogger(__name__)


def _is_dask_array(obj: Any) -> bool:
    """Whether ``obj`` is a dask array (none can be before dask.array is imported)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(obj, module.Array)


def _is_zarr(src: Any) -> bool:
    if is_url(src):
        return str(src).rstrip("/").lower().endswith(".zarr")
    if isinstance(src, (str, os.PathLike)):
        p = pathlib.Path(src)
        return p.suffix.lower() == ".zarr" or (
            p.is_dir() and ((p / "zarr.json").exists() or (p / ".zarray").exists())
        )
    mod = type(src).__module__
    return mod.startswith("zarr")


def _check_array(data: Any, name: str) -> None:
    if data.ndim not in (2, 3):
        raise InvalidInputError(
            f"{name}: image must be 2-D (H, W) or 3-D (H, W, C), got shape {data.shape}"
        )
    if data.dtype.kind not in "uif" or data.dtype.itemsize > 8:
        raise InputTypeError(f"{name}: unsupported dtype {data.dtype}; use an integer or float type")
    if 0 in data.shape:
        raise InvalidInputError(f"{name}: image is empty, shape {data.shape}")


def _from_array(data: Any, chunks: ChunksLike, *, fmt: str, path: pathlib.Path | str | None,
                photometric: str | None = None, extra: dict[str, Any] | None = None,
                alpha: bool = False, metadata: ImageMetadata | None = None) -> ImageSource:
    """An in-memory (or dask) image as an ImageSource; ``alpha``: its last channel is alpha."""
    name = str(path) if path is not None else "array"
    _check_array(data, name)
    import dask.array as da
    from dask.base import tokenize

    if isinstance(data, da.Array):
        arr = data
        if chunks is not None:
            cy, cx = aligned_chunks(data.shape[:2], (1, 1), chunks, name=name)
            arr = arr.rechunk((cy, cx) + tuple(data.shape[2:]))
        elif arr.ndim == 3 and arr.numblocks[2] != 1:
            arr = arr.rechunk({2: -1})
    else:
        grid = (1, 1)
        cy, cx = aligned_chunks(data.shape[:2], grid, chunks, name=name)
        arr = da.from_array(
            data,
            chunks=(cy, cx) + tuple(data.shape[2:]),
            name=f"{tasks.READ}-{tokenize(data)}" if isinstance(data, np.ndarray) else None,
        )
    channels = int(arr.shape[2]) if arr.ndim == 3 else 1
    if photometric is None:
        photometric = "rgb" if channels in (3, 4) else "minisblack"
    mask = alpha_channel = None
    if alpha:
        alpha_channel = arr[:, :, -1]
        mask = alpha_mask(alpha_channel)
        arr = arr[:, :, :-1] if channels > 2 else arr[:, :, 0]
    mask = combine_masks(mask, finite_mask(arr))
    return ImageSource(
        data=arr,
        path=path,
        tile=None,
        photometric=photometric,
        format=fmt,
        levels=1,
        extra=extra or {},
        mask=mask,
        alpha=alpha_channel,
        metadata=metadata or ImageMetadata(),
    )


def _read_zarr(src: Any, chunks: ChunksLike, level: int, limit: int) -> ImageSource:
    import zarr

    path = pathlib.Path(src) if isinstance(src, (str, os.PathLike)) else None
    name = str(path) if path is not None else repr(src)
    if path is not None and not path.exists():
        raise ImageReadError(f"{path}: no such file or directory")
    try:
        node = src if isinstance(src, zarr.Array) else zarr.open(src, mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises many kinds
        raise ImageReadError(f"{name}: not a readable zarr array: {exc}") from exc
    levels = 1
    if isinstance(node, zarr.Group):
        arrays = sorted(k for k, _ in node.arrays())
        # OME-Zarr / multiscale groups keep levels as "0", "1", ...
        numbered = sorted((k for k in arrays if k.isdigit()), key=int)
        if numbered:
            levels = len(numbered)
            if not 0 <= level < levels:
                raise ImageReadError(f"{name}: level={level} out of range ({levels} levels)")
            node = node[numbered[level]]
        elif len(arrays) == 1:
            node = node[arrays[0]]
        else:
            raise ImageReadError(f"{name}: zarr group holds arrays {arrays}; open one of them")
    arr = node
    _check_array(arr, name)
    zchunks = tuple(int(c) for c in arr.chunks)
    check_task_bytes(name, "zarr chunk", tuple(min(c, s) for c, s in zip(zchunks[:2], arr.shape[:2]))
                     + tuple(arr.shape[2:]), arr.dtype.itemsize, limit,
                     advice="rewrite the array with smaller chunks (e.g. `zarr.create_array(..., chunks=(4096, 4096, C))`)")
    cy, cx = aligned_chunks(arr.shape[:2], zchunks[:2], chunks, name=name)
    import dask.array as da
    from dask.base import tokenize

    data = da.from_zarr(arr, chunks=(cy, cx) + tuple(arr.shape[2:]),
                        name=f"{tasks.READ}-{tokenize(name, arr.shape, str(arr.dtype), cy, cx)}")
    attrs = dict(arr.attrs)
    photometric = attrs.get("photometric")
    channels = int(arr.shape[2]) if arr.ndim == 3 else 1
    return ImageSource(
        data=data,
        path=path,
        tile=zchunks[:2],
        photometric=photometric or ("rgb" if channels in (3, 4) else "minisblack"),
        format="zarr",
        levels=levels,
        level=level,
        extra={"attrs": attrs},
    )


_PIL_MODES = {"1": "L", "P": None, "PA": "RGBA", "LA": "LA", "CMYK": "RGB", "YCbCr": "RGB",
              "HSV": "RGB", "LAB": "RGB", "F": "F", "I": "I", "I;16": "I;16", "L": "L",
              "RGB": "RGB", "RGBA": "RGBA", "RGBX": "RGB", "La": "LA", "RGBa": "RGBA"}
#: bytes per pixel of a Pillow mode once converted as above (for the task-bytes bound)
_PIL_PIXEL_BYTES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "F": 4, "I": 4, "I;16": 2}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
#: PNG colour type -> samples per pixel (without a tRNS chunk; with one, alpha is added)
_PNG_SAMPLES = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
#: JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass(frozen=True)
class _Header:
    """What a PNG or JPEG file declares: size, samples once decoded, bytes per sample, EXIF, XMP,
    resolution and ICC profile (:class:`ImageMetadata`, as stored: EXIF orientation not applied)."""

    width: int
    height: int
    samples: int
    itemsize: int
    exif: bytes | None = None
    xmp: bytes | None = None
    metadata: ImageMetadata = ImageMetadata()


def _stored_metadata(resolution: tuple[int, int, int] | None, icc: bytes | None, per: str) -> ImageMetadata:
    """ImageMetadata of a PNG pHYs or JPEG density (x, y, unit code) and ICC profile.

    ``per``: "png" (unit 1: per metre) or "jpeg" (unit 1: per inch, 2: per centimetre); unit 0 is an aspect ratio.
    """
    from fractions import Fraction

    if resolution is None or min(resolution[:2]) < 1:
        return ImageMetadata(icc_profile=icc)
    x, y, unit = resolution
    if unit == 0:
        return ImageMetadata(resolution=(Fraction(x), Fraction(y)), resolution_unit="none", icc_profile=icc)
    if per == "png" and unit == 1:
        return ImageMetadata(resolution=(Fraction(x, 100), Fraction(y, 100)), resolution_unit="centimeter",
                             icc_profile=icc)
    if per == "jpeg" and unit in (1, 2):
        return ImageMetadata(resolution=(Fraction(x), Fraction(y)),
                             resolution_unit="inch" if unit == 1 else "centimeter", icc_profile=icc)
    return ImageMetadata(icc_profile=icc)


def _png_header(data: bytes, name: str) -> _Header:
    """Parse the chunks of a PNG (no pixel is decoded): IHDR, tRNS, eXIf, ImageMagick's EXIF text, XMP,
    pHYs and iCCP."""
    import struct
    import zlib

    pos, header, trns, exif, xmp, phys, icc = 8, None, False, None, None, None, None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            header = struct.unpack(">IIBB", body[:10])
        elif kind == b"tRNS":
            trns = True
        elif kind == b"eXIf":
            exif = body
        elif kind in (b"tEXt", b"zTXt") and body.startswith(b"Raw profile type exif\x00") and exif is None:
            text = body.split(b"\x00", 1)[1]
            try:
                text = zlib.decompress(text[1:]) if kind == b"zTXt" else text
                exif = bytes.fromhex("".join(text.decode("latin-1").split("\n")[3:]))
            except (zlib.error, ValueError):
                logger.debug("%s: unreadable EXIF text chunk ignored", name)
        elif kind == b"iTXt" and body.startswith(b"XML:com.adobe.xmp\x00") and len(body) > 19:
            compressed, text = body[18], body[20:].split(b"\x00", 2)[-1]  # after language and keyword
            try:
                xmp = zlib.decompress(text) if compressed else text
            except zlib.error:
                logger.debug("%s: unreadable XMP chunk ignored", name)
        elif kind == b"pHYs" and len(body) == 9:
            phys = struct.unpack(">IIB", body)
        elif kind == b"iCCP" and b"\x00" in body[:80]:
            try:
                icc = zlib.decompress(body.split(b"\x00", 1)[1][1:])
            except zlib.error:
                logger.debug("%s: unreadable ICC profile ignored", name)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ImageReadError(f"{name}: not a readable PNG file (no IHDR chunk)")
    width, height, depth, colour = header
    if colour not in _PNG_SAMPLES or width == 0 or height == 0:
        raise ImageReadError(f"{name}: not a readable PNG file (colour type {colour}, size {width}x{height})")
    samples = _PNG_SAMPLES[colour] + (1 if trns and colour in (0, 2, 3) else 0)
    return _Header(width, height, samples, 2 if depth == 16 and colour != 3 else 1, exif, xmp,
                   _stored_metadata(phys, icc, "png"))


def _jpeg_header(data: bytes, name: str) -> _Header:
    """Parse the markers of a JPEG up to its first scan: the frame's size, the EXIF (APP1) block, XMP,
    the JFIF density (APP0) and the ICC profile (APP2, in numbered parts)."""
    pos, exif, xmp, density = 2, None, None, None
    icc: dict[int, bytes] = {}
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00") and exif is None:
            exif = body
        elif marker == 0xE1 and body.startswith(b"http://ns.adobe.com/xap/1.0/\x00"):
            xmp = body.split(b"\x00", 1)[1]
        elif marker == 0xE0 and body.startswith(b"JFIF\x00") and len(body) >= 12:
            density = (int.from_bytes(body[8:10], "big"), int.from_bytes(body[10:12], "big"), body[7])
        elif marker == 0xE2 and body.startswith(b"ICC_PROFILE\x00") and len(body) >= 14:
            icc[body[12]] = body[14:]
        elif marker in _JPEG_SOF and len(body) >= 6:
            precision = body[0]
            height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            components = body[5]
            if height == 0 or width == 0:
                break
            profile = b"".join(icc[i] for i in sorted(icc)) if icc else None
            return _Header(width, height, max(components, 1), 2 if precision > 8 else 1, exif, xmp,
                           _stored_metadata(density, profile, "jpeg"))
        elif marker == 0xDA:  # start of scan before any frame
            break
        pos += 2 + length
    raise ImageReadError(f"{name}: not a readable JPEG file (no frame header before the image data)")


def _orientation(exif: Any, name: str, xmp: bytes | None = None) -> int:
    """The Orientation of ``exif`` (raw bytes or a ``PIL.Image.Exif``), else of the XMP packet, as Pillow reads it.

    1 when absent or unreadable.
    """
    import re

    from PIL import Image

    try:
        if isinstance(exif, bytes):
            parsed = Image.Exif()
            parsed.load(exif)
            exif = parsed
        if exif is not None and _EXIF_ORIENTATION in exif:
            value = int(exif[_EXIF_ORIENTATION])
        else:
            match = re.search(rb'tiff:Orientation(="|>)([0-9])', xmp) if xmp else None
            value = int(match[2]) if match else 1
    except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
        logger.warning("%s: unreadable EXIF block; orientation not applied", name)
        return 1
    return value if value in range(1, 9) else 1


def _bomb_check(name: str, width: int, height: int, fmt: str, allow_large: bool) -> None:
    """Refuse more pixels than Pillow's ``MAX_IMAGE_PIXELS`` unless ``allow_large``; the limit is only read."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit and not allow_large:
        raise ImageReadError(
            f"{name}: {width}x{height} pixels ({width * height / 1e6:.0f} MP) is "
            f"above Pillow's decompression-bomb limit ({limit / 1e6:.0f} MP); "
            f"{fmt.upper()} images are decoded whole in memory - convert it to a "
            "tiled TIFF (e.g. `vips tiffsave in out.tif --tile --bigtiff`) or "
            "pass allow_large=True"
        )


_WHOLE = "convert it to a tiled TIFF (e.g. `vips tiffsave in out.tif --tile --bigtiff`)"


def _decode_whole(data: bytes, name: str, fmt: str, header: _Header, allow_large: bool,
                  limit: int) -> np.ndarray:
    """Decode a PNG (always) or a JPEG past Pillow's limit with imagecodecs, after both guards.

    PNG keeps 16-bit samples (uint16) and gives palette images as RGB(A),
    tRNS as alpha, 1/2/4-bit grey scaled to 8 bits, as Pillow does.
    """
    import imagecodecs

    _bomb_check(name, header.width, header.height, fmt, allow_large)
    check_task_bytes(name, "image", (header.height, header.width, header.samples), header.itemsize, limit,
                     advice=f"{fmt.upper()} images are decoded whole: {_WHOLE}")
    try:
        if fmt == "png":
            pixels = imagecodecs.png_decode(data)
        else:
            if header.samples not in (1, 3):
                raise ImageReadError(
                    f"{name}: a {header.samples}-component JPEG above Pillow's pixel limit cannot be "
                    f"decoded; {_WHOLE}"
                )
            pixels = imagecodecs.jpeg8_decode(data)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise ImageReadError(f"{name}: cannot decode image: {type(exc).__name__}: {exc}") from exc
    pixels = np.asarray(pixels)
    if pixels.shape[:2] != (header.height, header.width):
        raise ImageReadError(
            f"{name}: decoded {pixels.shape[1]}x{pixels.shape[0]} pixels, the file declares "
            f"{header.width}x{header.height}"
        )
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return pixels


def _decode_pillow(source: Any, name: str, fmt_hint: str, allow_large: bool,
                   limit: int) -> tuple[np.ndarray, str, str, int, ImageMetadata]:
    """Decode with Pillow, its bomb guard on: (pixels, format, mode, EXIF orientation, ICC profile).

    ``source`` is a path, an open file or bytes; Pillow reads the header first,
    so nothing more is read from a file it does not recognise.
    """
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except Image.DecompressionBombError as exc:
            extra = "" if allow_large else " or pass allow_large=True (PNG and JPEG only)"
            raise ImageReadError(
                f"{name}: above Pillow's decompression-bomb limit ({exc}); bigquant decodes only PNG "
                f"and JPEG files past that limit - {_WHOLE}{extra}"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds
            raise ImageReadError(f"{name}: not a recognised image file: {exc}") from exc
        with img:
            width, height = img.size
            fmt = (img.format or fmt_hint).lower()
            _bomb_check(name, width, height, fmt, allow_large)
            mode = img.mode
            target = _PIL_MODES.get(mode, "RGB")
            if mode == "P":
                target = "RGBA" if "transparency" in img.info else "RGB"
            check_task_bytes(name, "image", (height, width), _PIL_PIXEL_BYTES.get(target or mode, 4), limit,
                             advice=f"{fmt.upper()} images are decoded whole: {_WHOLE}")
            try:
                img.load()
                orientation = _orientation(img.getexif(), name)
                icc = img.info.get("icc_profile")
                metadata = ImageMetadata(icc_profile=bytes(icc) if isinstance(icc, (bytes, bytearray)) else None)
                if target is not None and target != mode:
                    img = img.convert(target)
                pixels = np.asarray(img)
            except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
                raise ImageReadError(f"{name}: cannot decode image: {exc}") from exc
    return pixels, fmt, mode, orientation, metadata


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """A PNG, JPEG or other Pillow-format file decoded whole into memory, as displayed.

    What :func:`read_image` wraps in a dask array, without dask (``bigquant
    info`` of a small file answers without importing dask.array).

    Attributes
    ----------
    pixels : numpy.ndarray of shape (H, W[, C])
        The decoded pixels, EXIF orientation applied, alpha (if any) last.
    path : pathlib.Path or str
        The file (a string for a URL).
    format : str
        "png", "jpeg", ...
    photometric : str
        "rgb" or "minisblack".
    alpha : bool
        Whether the last channel of ``pixels`` is alpha (LA, RGBA).
    metadata : ImageMetadata
        Pixel size and ICC profile, as ``pixels`` shows the image.
    extra : dict
        ``"mode"`` and ``"orientation"``, as :attr:`ImageSource.extra`.
    """

    pixels: np.ndarray
    path: pathlib.Path | str
    format: str
    photometric: str
    alpha: bool
    metadata: ImageMetadata
    extra: dict[str, Any]

    @property
    def data(self) -> np.ndarray:
        """The pixels without the alpha channel: what :attr:`ImageSource.data` computes to."""
        if not self.alpha:
            return self.pixels
        return self.pixels[:, :, :-1] if self.pixels.shape[2] > 2 else self.pixels[:, :, 0]


def _read_pillow(path: pathlib.Path | str, chunks: ChunksLike, allow_large: bool, limit: int) -> ImageSource:
    """A PNG, JPEG or other Pillow format as a (one-task) dask array: see :func:`_decode_file`."""
    decoded = _decode_file(path, allow_large, limit)
    return _from_array(decoded.pixels, chunks, fmt=decoded.format, path=decoded.path,
                       photometric=decoded.photometric, extra=decoded.extra, alpha=decoded.alpha,
                       metadata=decoded.metadata)


def _decode_file(path: pathlib.Path | str, allow_large: bool, limit: int) -> DecodedImage:
    """A PNG, JPEG or other Pillow format, decoded whole, as displayed (EXIF orientation applied).

    PNG is decoded by imagecodecs (16-bit samples stay uint16); JPEG by Pillow,
    or by imagecodecs past Pillow's pixel limit with ``allow_large``; other
    formats by Pillow.  Pillow's bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``)
    is read, never reassigned.
    """
    from PIL import Image

    name = str(path)
    suffix = pathlib.PurePosixPath(name).suffix.lstrip(".")
    with open_binary(path) as fh:
        magic = fh.read(len(_PNG_MAGIC))
        if not magic.startswith((_PNG_MAGIC, _JPEG_MAGIC)):  # Pillow reads what it needs
            pixels, fmt, mode, orientation, metadata = _decode_pillow(
                fh if is_url(path) else path, name, suffix, allow_large, limit
            )
            return _decoded(pixels, path, fmt, mode, orientation, metadata)
    size = file_stamp(path)[0]
    if size > limit:  # decoded whole, and (nearly) never smaller than its deflate or JPEG stream
        kind = "PNG" if magic.startswith(_PNG_MAGIC) else "JPEG"
        raise ImageReadError(
            f"{name}: a {kind} file of {format_bytes(size)} is decoded whole in one task, above the "
            f"limit of {format_bytes(limit)} per task; {_WHOLE}, or raise the limit "
            f"(read_image(..., max_task_bytes=N) or {MAX_TASK_BYTES_ENV}) if every worker has the memory"
        )
    data = read_bytes(path)
    fmt, header = "png" if data.startswith(_PNG_MAGIC) else "jpeg", None
    try:
        header = _png_header(data, name) if fmt == "png" else _jpeg_header(data, name)
    except ImageReadError:
        if fmt == "png":
            raise
        logger.debug("%s: JPEG header not parsed; decoding with Pillow", name)  # Pillow, with its guard, judges
    limit_px = Image.MAX_IMAGE_PIXELS
    if header is not None and (fmt == "png" or (limit_px is not None and header.width * header.height > limit_px)):
        pixels = _decode_whole(data, name, fmt, header, allow_large, limit)
        orientation = _orientation(header.exif, name, header.xmp)
        mode = f"{fmt}:{pixels.dtype}x{pixels.shape[2] if pixels.ndim == 3 else 1}"
        metadata = header.metadata
    else:
        pixels, fmt, mode, orientation, metadata = _decode_pillow(data, name, fmt, allow_large, limit)
        if header is not None:  # the density and every ICC part, as the file's markers hold them
            metadata = header.metadata
    return _decoded(pixels, path, fmt, mode, orientation, metadata)


def _decoded(pixels: np.ndarray, path: pathlib.Path | str, fmt: str, mode: str,
             orientation: int, metadata: ImageMetadata) -> DecodedImage:
    """A decoded PNG, JPEG or Pillow image, turned as displayed."""
    name = str(path)
    if orientation != 1:
        logger.debug("%s: EXIF orientation %d applied", name, orientation)
        pixels = oriented(pixels, orientation)
        if orientation in TRANSPOSED_ORIENTATIONS:
            metadata = metadata.transposed()
    if pixels.dtype.byteorder not in "=|":
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    photometric = "rgb" if pixels.ndim == 3 and pixels.shape[2] in (3, 4) else "minisblack"
    alpha = pixels.ndim == 3 and pixels.shape[2] in (2, 4)  # LA, RGBA: alpha is the mask
    return DecodedImage(pixels=pixels, path=path, format=fmt, photometric=photometric, alpha=alpha,
                        metadata=metadata, extra={"mode": mode, "orientation": orientation})


def read_image(
    src: Any,
    *,
    chunks: ChunksLike = None,
    level: int = 0,
    series: int | None = None,
    allow_large: bool = False,
    max_task_bytes: int | None = None,
) -> ImageSource:
    """Open an image lazily as a dask array, reading its metadata once.

    Parameters
    ----------
    src : str, os.PathLike, ImageSource, numpy.ndarray, dask.array.Array or zarr.Array
        A TIFF file (tiled or striped, BigTIFF, OME, pyramidal, multi-series;
        uncompressed or compressed with any codec tifffile decodes through
        imagecodecs: JPEG, JPEG 2000 -- Aperio 33003/33005 too --, LZW,
        deflate, zstd, WebP, PackBits...), a slide (Aperio SVS, Hamamatsu NDPI
        as far as tifffile reads it, OME-TIFF), a zarr array or group (path or
        object), a Pillow-readable file (PNG, JPEG, ...), an fsspec URL of any
        of these (``http(s)://``, ``s3://``, ``gs://``, ``az://``, ``abfs://``,
        ``memory://``: every task opens it itself, with range requests; a
        ``file://`` URL is a local path; other schemes are refused), or an
        array of shape (H, W) or (H, W, C).  PNG keeps 16-bit samples; the
        EXIF orientation of a PNG or JPEG and the Orientation tag of a TIFF
        (not of a GeoTIFF) are applied, so the image comes out as displayed.
    chunks : int, tuple of int (cy, cx) or None, default=None
        Spatial chunk shape of the dask array; rounded up to a multiple of the
        file's tiles.  None picks about 4096 x 4096 pixels (full-width bands
        of the same area for striped files).
    level : int, default=0
        Pyramid level to read (0 is full resolution).
    series : int or None, default=None
        TIFF image series to read (multi-image files).  None: the image of a
        slide, not its thumbnail, label, macro or mask (see ``bigquant info``).
    allow_large : bool, default=False
        Decode PNG and JPEG files above Pillow's decompression-bomb limit
        (``PIL.Image.MAX_IMAGE_PIXELS``, only read).  Such files are decoded
        whole in memory; prefer a tiled TIFF.
    max_task_bytes : int or None, default=None
        The most bytes one task may decode: one tile or strip of a TIFF (not
        of memory-mapped data, chunked freely), one chunk of a zarr array, a
        whole PNG or JPEG.  None
        reads the environment variable ``BIGQUANT_MAX_TASK_BYTES`` (``"4G"``),
        else 1 GiB (:data:`bigquant.io.chunks.MAX_TASK_BYTES`).

    Returns
    -------
    source : ImageSource
        ``source.data`` is a lazy dask array of shape (H, W, C) or (H, W);
        its tasks open the file themselves (names start with
        ``bq-read``), so it runs on worker processes too.
        ``source.mask`` says which pixels are image (alpha 0, GDAL_NODATA in
        every band, a TIFF mask IFD and NaN are not); the alpha channel is
        not part of ``source.data``.

    Raises
    ------
    ImageReadError
        The file is missing, unreadable, truncated, corrupt or not an image,
        or it holds no single 2-D image; a URL of a scheme not allowed, or one
        that does not answer; one tile, strip or image would decode to more
        than ``max_task_bytes``.
    InvalidParameterError
        ``level``, ``series``, ``chunks`` or ``max_task_bytes`` is out of range.
    InputTypeError, InvalidInputError
        An array of unsupported dtype or shape.

    Examples
    --------
    >>> import numpy as np
    >>> from bigquant import read_image
    >>> src = read_image(np.zeros((100, 120, 3), dtype=np.uint8), chunks=64)
    >>> src.shape, src.data.chunksize
    ((100, 120, 3), (64, 64, 3))
    """
    limit = task_bytes_limit(max_task_bytes)  # validated before anything else
    check_location(src)  # a scheme not allowed: refused before a byte is read
    src = local_path(src)
    if isinstance(src, ImageSource):
        if chunks is None:
            return src
        rechunked = _from_array(src.data, chunks, fmt=src.format, path=src.path, photometric=src.photometric)
        mask = None if src.mask is None else src.mask.rechunk(rechunked.data.chunks[:2])
        alpha = None if src.alpha is None else src.alpha.rechunk(rechunked.data.chunks[:2])
        return dataclasses.replace(src, data=rechunked.data, mask=mask, alpha=alpha)
    if isinstance(src, np.ndarray) or _is_dask_array(src):
        return _from_array(src, chunks, fmt="array", path=None)
    if _is_zarr(src):
        return _read_zarr(src, chunks, level, limit)
    if not isinstance(src, (str, os.PathLike)):
        if hasattr(src, "__array__") and hasattr(src, "shape"):
            return _from_array(np.asarray(src), chunks, fmt="array", path=None)
        raise InputTypeError(
            f"src of type {type(src).__name__} is not a path, array or ImageSource"
        )
    if is_url(src):
        file_stamp(src)  # fails first, naming the URL, if it does not answer
        if is_tiff(src):
            return read_tiff(src, chunks=chunks, level=level, series=series, max_task_bytes=limit)
        return _read_pillow(src, chunks, allow_large, limit)
    path = _checked_file(src)
    if is_tiff(path):
        return read_tiff(path, chunks=chunks, level=level, series=series, max_task_bytes=limit)
    if level or series:
        logger.info("%s: not a TIFF; level=%s and series=%s ignored", path, level, series)
    return _read_pillow(path, chunks, allow_large, limit)


def _checked_file(src: str | os.PathLike) -> pathlib.Path:
    """A local file to read: missing, a directory, unreadable or empty raise ImageReadError."""
    path = pathlib.Path(src).expanduser()
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image file or zarr array")
    if not os.access(path, os.R_OK):
        raise ImageReadError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty")
    return path


def decode_image(src: Any, *, allow_large: bool = False, max_task_bytes: int | None = None) -> DecodedImage | None:
    """Decode a PNG, JPEG or other Pillow-format file into memory, without dask.

    The pixels :func:`read_image` would give (its ``data``, plus the alpha
    channel), read the same way with the same checks and errors.  Returns None
    for what :func:`read_image` reads lazily instead: TIFF files, zarr
    arrays, arrays and ImageSources.
    """
    limit = task_bytes_limit(max_task_bytes)
    check_location(src)
    src = local_path(src)
    if not isinstance(src, (str, os.PathLike)) or _is_zarr(src):
        return None
    if is_url(src):
        file_stamp(src)
        return None if is_tiff(src) else _decode_file(src, allow_large, limit)
    path = _checked_file(src)
    return None if is_tiff(path) else _decode_file(path, allow_large, limit)


def as_source(src: Any, **kwargs: Any) -> ImageSource:
    """Return ``src`` as an :class:`ImageSource` (reading it when needed)."""
    return src if isinstance(src, ImageSource) and not kwargs else read_image(src, **kwargs)
