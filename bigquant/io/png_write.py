"""Streaming PNG writer: any size, one band of tile rows in memory at a time.

A PNG is a signature and a list of chunks: IHDR (size, bit depth, colour
type), optional ancillary chunks (iCCP, pHYs...), PLTE and tRNS for a
palette, then the image as one zlib stream cut into IDAT chunks, and IEND.
Nothing in the format asks for the whole image at once: each row is a filter
byte and the row's packed samples, and the zlib stream can be fed row after
row.  So the array (aligned to the tile grid) is computed one chunk row -- a
band of whole tile rows -- at a time, as the TIFF writer does
(:func:`bigquant.io.tiff_write.compute_bands`, a few bands ahead on the
workers); each chunk is mapped to stored pixels and packed into PNG row bytes
on the worker that computed it (:class:`PngRowEncoder`); this process joins
the chunks of a band, filters its rows, feeds them to one
:func:`zlib.compressobj` and writes full IDAT chunks as the stream grows.

Palette images take the smallest bit depth that holds their entries (1, 2,
4 or 8 bits for up to 2, 4, 16 or 256 entries), unfiltered (filter 0, as the
PNG specification recommends for palettes).  A palette of 4 channels is RGBA:
its alpha goes to tRNS, one value per entry; a no-data label is a fully
transparent entry.  Colour images are 8-bit grey, grey + alpha, RGB or RGBA,
or 16-bit grey (+ alpha).  The colours of a palette ("rgb" mode) are not
filtered either; images written as they are (continuous tone) are filtered
with "Up" (see :data:`IMAGE_FILTER`).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import numpy as np

from bigquant.errors import InputTypeError, InvalidParameterError
from bigquant.io.encode import BlockEncoder, TileRegion

__all__ = [
    "metadata_chunks",
    "DEFAULT_LEVEL", "IMAGE_FILTER", "IDAT_BYTES", "PNG_SIGNATURE", "PngFilter", "PngLayout", "PngRowEncoder",
    "check_level", "filter_rows", "pack_rows", "png_chunk", "png_layout", "write_png",
]

logger = logging.getLogger(__name__)

#: The eight bytes every PNG file starts with.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Compressed bytes in one IDAT chunk (all but the last are this size; libpng
#: writes 8 KiB chunks, any size up to 2**31 - 1 is valid).
IDAT_BYTES = 1 << 18
#: Most pixels a side of a PNG (IHDR holds 31-bit sizes).
PNG_MAX_SIDE = 2**31 - 1

#: Row filters: PNG filter types 0-4, or "adaptive" (per row, the filter whose
#: bytes have the least sum of absolute values as signed bytes: libpng's heuristic).
PngFilter = Literal["none", "sub", "up", "average", "paeth", "adaptive"]
_FILTER_TYPES = {"none": 0, "sub": 1, "up": 2, "average": 3, "paeth": 4}
#: Filter of images written as they are (continuous tone).  Measured on the
#: three photographs the dependencies ship and a 2048 x 3072 photo mosaic
#: (``bench/bench_png.py --filters``): "up" is 6-30% smaller than "none" at
#: zlib level 1 (7-34% at level 6) and within 6% of the best filter (adaptive,
#: average or paeth take 3-60x its filtering time for at most 6% less).  On
#: the same images reduced to 16 colours "none" is the smallest (the filters
#: add 4-95% at level 1, 10-130% at 6): palette indices and palette colours
#: ("rgb" mode) are never filtered.
IMAGE_FILTER: PngFilter = "up"
#: Default zlib level: fast, as bigquant's TIFF default.  One zlib stream is
#: compressed by one thread, the writer's bottleneck: a 16384² palette PNG at
#: k = 16 (``bench/bench_png.py``, 2 cores) takes 2.3 s and 29 MB at level 1,
#: 6.0 s and 25 MB at level 6 (zlib's, libpng's and libvips' default).
DEFAULT_LEVEL = 1

#: Colour type -> samples per pixel.
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data.

    Examples
    --------
    >>> png_chunk(b"IEND", b"").hex()
    '0000000049454e44ae426082'
    """
    if len(kind) != 4 or not kind.isalpha():
        raise InvalidParameterError(f"PNG chunk type {kind!r} must be 4 ASCII letters")
    if len(data) > 2**31 - 1:
        raise InvalidParameterError(f"PNG chunk {kind!r} of {len(data)} bytes exceeds 2**31 - 1")
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@dataclass(frozen=True)
class PngLayout:
    """How the stored pixels of an image are laid out in PNG rows.

    Parameters
    ----------
    colour_type : int
        PNG colour type: 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA.
    bit_depth : int
        Bits per sample: 1, 2, 4 or 8 for a palette, 8 or 16 otherwise.
    plte : bytes, default=b""
        PLTE data (3 bytes an entry) of a palette image.
    trns : bytes, default=b""
        tRNS data (one alpha an entry, trailing opaque entries left out);
        empty when every entry is opaque.
    filter : PngFilter, default="none"
        Row filter.
    """

    colour_type: int
    bit_depth: int
    plte: bytes = b""
    trns: bytes = b""
    filter: PngFilter = "none"

    @property
    def channels(self) -> int:
        """Samples per pixel."""
        return _CHANNELS[self.colour_type]

    @property
    def pixel_bytes(self) -> int:
        """Bytes per pixel for the filters (at least 1)."""
        return max(1, self.channels * self.bit_depth // 8)

    def row_bytes(self, width: int) -> int:
        """Bytes of one packed row of ``width`` pixels (without its filter byte)."""
        return -(-width * self.channels * self.bit_depth // 8)

    def ihdr(self, height: int, width: int) -> bytes:
        """IHDR data: no interlace, deflate, adaptive filtering method 0."""
        return struct.pack(">IIBBBBB", width, height, self.bit_depth, self.colour_type, 0, 0, 0)


def metadata_chunks(icc_profile: bytes | None, pixels_per_metre: tuple[int, int] | None) -> list[tuple[bytes, bytes]]:
    """The iCCP and pHYs chunks of an ICC profile and a pixel size (each left out when None).

    iCCP: a profile name, a NUL, compression method 0 and the zlib-compressed
    profile; pHYs: pixels per unit along X and Y, unit 1 (the metre).
    """
    chunks: list[tuple[bytes, bytes]] = []
    if icc_profile is not None:
        chunks.append((b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile, 9)))
    if pixels_per_metre is not None:
        chunks.append((b"pHYs", struct.pack(">IIB", int(pixels_per_metre[0]), int(pixels_per_metre[1]), 1)))
    return chunks


def check_level(compression_level: Any) -> int:
    """The zlib level of a PNG: 0-9, or None for :data:`DEFAULT_LEVEL`.

    Raises
    ------
    InvalidParameterError
        Anything else.
    """
    if compression_level is None:
        return DEFAULT_LEVEL
    if (not isinstance(compression_level, (int, np.integer)) or isinstance(compression_level, bool)
            or not 0 <= compression_level <= 9):
        raise InvalidParameterError(f"compression_level={compression_level!r} must be 0-9 for PNG output")
    return int(compression_level)


def _palette_bits(n_entries: int) -> int:
    for bits in (1, 2, 4):
        if n_entries <= 1 << bits:
            return bits
    return 8


def png_layout(
    kind: str,
    out_dtype: np.dtype,
    colours: np.ndarray | None,
    *,
    sample_shape: tuple[int, ...] = (),
    nodata: int | None = None,
    filter: PngFilter | None = None,
    shown: np.ndarray | None = None,
) -> PngLayout:
    """The PNG layout of stored pixels, or an error naming what PNG cannot hold.

    Parameters
    ----------
    kind : {"palette", "rgb", "image"}
        As :class:`bigquant.io.encode.BlockEncoder`'s.
    out_dtype : numpy.dtype
        Stored sample type.
    colours : ndarray of shape (k, C) or None
        "palette": the palette (C = 4 is RGBA); "rgb": the stored colours
        (with a no-data alpha sample last when ``nodata`` is set).
    sample_shape : tuple of int, default=()
        "image": samples per pixel, () or (C,).
    nodata : int or None, default=None
        No-data label: a transparent palette entry ("palette"), or the alpha
        sample of the stored colours ("rgb").
    filter : PngFilter or None, default=None
        Row filter; None: "none" for a palette and its colours ("palette",
        "rgb"), :data:`IMAGE_FILTER` for an image written as it is.
    shown : ndarray of shape (k, 1) or (k, 3), dtype uint8, or None, default=None
        "palette": the 8-bit colours PLTE holds when they are not the
        palette's own (a display stretch of 16-bit or float colours); the
        entries' alpha still comes from ``colours``.

    Raises
    ------
    InvalidParameterError
        A palette of more than 256 entries.
    InputTypeError
        Samples PNG (as written here) does not hold: neither uint8 with 1 to
        4 samples nor uint16 grey (+ alpha).
    """
    if kind == "palette":
        assert colours is not None
        k = len(colours)
        n_entries = k if nodata is None else max(k, nodata + 1)
        if n_entries > 256:
            raise InvalidParameterError(
                f"PNG palettes hold at most 256 colours, got {n_entries}; use mode='rgb' or a .tif output"
            )
        eight = colours if colours.dtype == np.uint8 else (colours >> 8).astype(np.uint8)
        seen = eight if shown is None else np.asarray(shown, dtype=np.uint8)
        rgb = seen[:, :3] if seen.shape[1] >= 3 else np.repeat(seen[:, :1], 3, axis=1)
        plte = np.zeros((n_entries, 3), np.uint8)
        plte[:k] = rgb
        alpha = np.full(n_entries, 255, np.uint8)
        if eight.shape[1] == 4:
            alpha[:k] = eight[:, 3]
        if nodata is not None:
            alpha[nodata] = 0
        see_through = np.flatnonzero(alpha != 255)
        trns = alpha[: see_through[-1] + 1].tobytes() if see_through.size else b""
        return PngLayout(3, _palette_bits(n_entries), plte.tobytes(), trns,
                         filter="none" if filter is None else filter)
    if kind == "rgb":
        assert colours is not None
        n = colours.shape[1]
        dtype = colours.dtype
        # a no-data alpha after 4 colour samples: the colours' own alpha is already
        # 0 on no-data (with_nodata zeroes the row), so RGBA are the first four
        n_samples = 4 if nodata is not None and n == 5 else n
    else:
        dtype = np.dtype(out_dtype)
        n_samples = sample_shape[0] if sample_shape else 1
    types = {1: 0, 2: 4, 3: 2, 4: 6}
    if dtype not in (np.uint8, np.uint16) or n_samples not in types or (
        dtype == np.uint16 and n_samples > 2
    ):
        raise InputTypeError(
            f"PNG output needs uint8 samples (1 to 4 of them) or uint16 grey, got {dtype} with "
            f"{n_samples} sample(s) a pixel; write a .tif instead"
        )
    if filter is None:
        filter = IMAGE_FILTER if kind == "image" else "none"
    return PngLayout(types[n_samples], 8 * dtype.itemsize, filter=filter)


def pack_rows(pix: np.ndarray, layout: PngLayout) -> np.ndarray:
    """Pack stored pixels into PNG row bytes (no filter byte).

    Parameters
    ----------
    pix : ndarray of shape (h, w) or (h, w, C)
        Palette indices (below ``2**bit_depth``) or samples; extra samples
        past the layout's channels are dropped.

    Returns
    -------
    rows : ndarray of shape (h, layout.row_bytes(w)), dtype uint8
        Samples most significant bit first (1, 2, 4 bits), big-endian (16 bits).

    Examples
    --------
    >>> lay = PngLayout(3, 2)
    >>> pack_rows(np.array([[0, 1, 2, 3, 3]]), lay).tolist()
    [[27, 192]]
    """
    h, w = pix.shape[:2]
    if pix.ndim == 3 and pix.shape[2] != layout.channels:
        pix = pix[..., : layout.channels]
    bits = layout.bit_depth
    if bits == 16:
        return np.ascontiguousarray(pix, dtype=">u2").reshape(h, -1).view(np.uint8)
    if bits == 8:
        return np.ascontiguousarray(pix, dtype=np.uint8).reshape(h, -1)
    if bits == 1:
        return np.packbits(pix.astype(np.uint8, copy=False).reshape(h, w), axis=1)
    per = 8 // bits
    packed = np.zeros((h, -(-w // per)), np.uint8)
    flat = pix.reshape(h, w)
    for i in range(per):
        part = flat[:, i::per].astype(np.uint8, copy=False)
        packed[:, : part.shape[1]] |= part << (8 - bits * (i + 1))
    return packed


def filter_rows(rows: np.ndarray, previous: np.ndarray | None, layout: PngLayout) -> np.ndarray:
    """Filter packed rows: each gets its filter type byte in front.

    Parameters
    ----------
    rows : ndarray of shape (h, n), dtype uint8
        Packed rows.
    previous : ndarray of shape (n,) or None
        The row above the first (None: the first row of the image).
    layout : PngLayout
        Its ``filter`` and ``pixel_bytes``.

    Returns
    -------
    filtered : ndarray of shape (h, n + 1), dtype uint8
    """
    h, n = rows.shape
    out = np.empty((h, n + 1), np.uint8)
    if layout.filter == "none":
        out[:, 0] = 0
        out[:, 1:] = rows
        return out
    bpp = layout.pixel_bytes
    up = np.empty_like(rows)
    up[0] = 0 if previous is None else previous
    up[1:] = rows[:-1]
    candidates: dict[str, Any] = {
        "sub": lambda: rows - _left(rows, bpp),
        "up": lambda: rows - up,
        "average": lambda: rows - ((_left(rows, bpp).astype(np.uint16) + up) >> 1).astype(np.uint8),
        "paeth": lambda: rows - _paeth(_left(rows, bpp), up, _left(up, bpp)),
    }
    if layout.filter != "adaptive":
        out[:, 0] = _FILTER_TYPES[layout.filter]
        out[:, 1:] = candidates[layout.filter]()
        return out
    options = [rows] + [make() for make in candidates.values()]
    cost = np.stack([np.abs(o.view(np.int8).astype(np.int32)).sum(axis=1) for o in options])
    best = np.argmin(cost, axis=0)
    out[:, 0] = best
    for t, o in enumerate(options):
        chosen = best == t
        out[chosen, 1:] = o[chosen]
    return out


def _left(rows: np.ndarray, bpp: int) -> np.ndarray:
    left = np.zeros_like(rows)
    left[:, bpp:] = rows[:, :-bpp]
    return left


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Paeth predictor of left ``a``, above ``b``, upper left ``c``."""
    a16, b16, c16 = (x.astype(np.int16) for x in (a, b, c))
    pa = np.abs(b16 - c16)
    pb = np.abs(a16 - c16)
    pc = np.abs(a16 + b16 - 2 * c16)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


@dataclass(frozen=True)
class PngRowEncoder(BlockEncoder):
    """A :class:`BlockEncoder` whose output is packed PNG rows, not tiles.

    Parameters
    ----------
    png : PngLayout
        How stored pixels become row bytes (after :class:`BlockEncoder`'s
        parameters, whose ``codec`` is unused).

    Called on a chunk (or, with a label lookup, a :class:`TileRegion`), it
    returns ``(rows, subsamples)``: the chunk's stored pixels packed by
    :func:`pack_rows` (shape (h, bytes)), and the subsamples of ``steps``.
    Chunk widths are multiples of the tile (16 pixels at least), so the
    packed chunks of a band join side by side into whole rows.
    """

    png: PngLayout | None = None

    def encode(self, tile: np.ndarray) -> bytes:
        """Nothing: a label lookup asks for tiles, which PNG does not store."""
        return b""

    def __call__(  # type: ignore[override]
        self, block: np.ndarray | TileRegion, lut: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        assert self.png is not None
        if self.lookup is not None:
            # labels looked up tile by tile; the full-resolution "subsample" is the chunk
            full = dataclasses.replace(self, steps=tuple(sorted(set(self.steps) | {1})))
            _, subs = BlockEncoder.__call__(full, block, lut)
            pix = subs[1] if 1 in self.steps else subs.pop(1)
        else:
            pix = self.pixels(np.asarray(block))
            subs = {s: np.ascontiguousarray(pix[::s, ::s]) for s in self.steps}
        return pack_rows(pix, self.png), subs


def _idat(out: Any, data: bytearray, *, final: bool) -> int:
    """Write full IDAT chunks from the front of ``data`` (all of it when
    ``final``) and drop them from it; return how many chunks were written."""
    n = 0
    start = 0
    with memoryview(data) as view:
        while len(data) - start >= IDAT_BYTES or (final and start < len(data)):
            with view[start : start + IDAT_BYTES] as piece:
                out.write(struct.pack(">I", len(piece)) + b"IDAT")
                out.write(piece)
                out.write(struct.pack(">I", zlib.crc32(piece, zlib.crc32(b"IDAT"))))
                start += len(piece)
            n += 1
    del data[:start]
    return n


def write_png(
    arr: da.Array,
    tmp: pathlib.Path,
    encoder: PngRowEncoder,
    *,
    preview_step: int | None = None,
    compression_level: int | None = None,
    extra_chunks: Sequence[tuple[bytes, bytes]] = (),
    extra: tuple[Any, ...] = (),
) -> np.ndarray | None:
    """Stream ``arr`` to a PNG file at ``tmp``; return the preview pixels.

    Parameters
    ----------
    arr : dask.array.Array
        Labels (H, W) or an image, chunks aligned to the tile grid.
    tmp : pathlib.Path
        File to write (the temporary name of the output).
    encoder : PngRowEncoder
        Per-chunk mapping and packing (its ``png`` layout); its ``steps``
        include ``preview_step``.
    preview_step : int or None, default=None
        Step of the subsample of stored pixels to return for a preview.
    compression_level : int or None, default=None
        zlib level 0-9; None: :data:`DEFAULT_LEVEL` (1, fast).
    extra_chunks : sequence of (bytes, bytes), default=()
        Ancillary chunks (type, data) written after IHDR, before PLTE: e.g.
        ``(b"pHYs", ...)`` or ``(b"iCCP", ...)``.
    extra : tuple
        Further arguments of the encoder (the lookup table of a lookup encoder).

    Returns
    -------
    preview : ndarray or None
        Stored pixels subsampled by ``preview_step``.

    Memory: the rows of one band (and their filtered copy) in this process,
    plus the bands :func:`compute_bands` computes ahead (at most three, and
    at most 384 MB of them).
    """
    from bigquant.io.tiff_write import compute_bands

    layout = encoder.png
    assert layout is not None
    height, width = (int(n) for n in arr.shape[:2])
    if max(height, width) > PNG_MAX_SIDE:
        raise InvalidParameterError(f"an image of {height} x {width} exceeds PNG's {PNG_MAX_SIDE} pixels a side")
    level = check_level(compression_level)
    row_bytes = layout.row_bytes(width)
    preview_parts: list[np.ndarray] = []
    compressor = zlib.compressobj(level, zlib.DEFLATED, 15, 8)
    pending = bytearray()
    raw = 0
    n_idat = 0
    previous: np.ndarray | None = None
    with open(tmp, "wb") as out:
        out.write(PNG_SIGNATURE)
        out.write(png_chunk(b"IHDR", layout.ihdr(height, width)))
        for kind, data in extra_chunks:
            out.write(png_chunk(kind, data))
        if layout.plte:
            out.write(png_chunk(b"PLTE", layout.plte))
        if layout.trns:
            out.write(png_chunk(b"tRNS", layout.trns))
        for band in compute_bands(arr, encoder, extra=extra):
            rows = band[0][0] if len(band) == 1 else np.concatenate([r for r, _ in band], axis=1)
            if preview_step is not None:
                preview_parts.append(np.concatenate([subs[preview_step] for _, subs in band], axis=1))
            del band
            assert rows.shape[1] == row_bytes, (rows.shape, row_bytes)
            filtered = filter_rows(rows, previous, layout)
            previous = rows[-1].copy()
            del rows
            raw += filtered.nbytes
            pending += compressor.compress(filtered)
            del filtered
            n_idat += _idat(out, pending, final=False)
        pending += compressor.flush()
        n_idat += _idat(out, pending, final=True)
        out.write(png_chunk(b"IEND", b""))
        size = out.tell()
    logger.debug("PNG %d x %d, bit depth %d, colour type %d, filter %s: %d raw bytes -> %d IDAT chunk(s), "
                 "%d bytes", height, width, layout.bit_depth, layout.colour_type, layout.filter, raw, n_idat, size)
    if preview_step is None:
        return None
    return np.concatenate(preview_parts, axis=0)
