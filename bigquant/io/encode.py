"""Per-block work of the writers, run on the workers.

A :class:`BlockEncoder` turns one chunk of labels (or of an image) into output
pixels (palette indices or colours), cuts them into padded tiles, compresses
the tiles and takes the strided subsamples used for pyramid levels and the
preview.  It is a small picklable object, so the whole tile encoding happens
where the chunk was computed and only compressed bytes travel to the writer.

With a :class:`LabelLookup` the encoder is given the *image* chunk and a
colour -> label table instead of labels: each tile is looked up into a
tile-sized buffer and compressed at once (no chunk of labels in memory).
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from bigquant.errors import ImageWriteError, InvalidInputError, InvalidParameterError
from bigquant.kernels.nbits import count_indices

__all__ = [
    "BlockEncoder", "Codec", "LABEL_COUNTS", "LABELLER_SUMS", "LabelLookup", "DITHERED_DEFLATE_LEVEL", "PALETTE_DEFLATE_LEVEL", "TileRegion",
    "align_to_tiles",
    "resolve_codec",
]

logger = logging.getLogger(__name__)

_ALIASES = {
    None: "none", "none": "none", "": "none", "raw": "none",
    "zlib": "adobe_deflate", "deflate": "adobe_deflate", "adobe_deflate": "adobe_deflate",
    "lzma": "lzma", "zstd": "zstd", "lzw": "lzw", "packbits": "packbits",
    "jpeg": "jpeg", "webp": "webp", "png": "png", "jpeg2000": "jpeg2000", "jpegxl": "jpegxl",
}

#: codecs without a compression level
_LEVELLESS = frozenset({"lzw", "packbits"})

#: deflate level of palette tiles when none is given (libdeflate's scale, 1-12)
PALETTE_DEFLATE_LEVEL = 6

#: deflate level of dithered palette tiles when none is given: error-diffused labels are noise to
#: deflate, which at level 6 spends 2.8x level 1's time for 6% fewer bytes (4-bit labels of the
#: 268 MP photo mosaic of bench/bench_peers.py: 11.0 against 4.0 ns a pixel, 0.337 against 0.358
#: of the packed size; smooth, undithered labels keep PALETTE_DEFLATE_LEVEL)
DITHERED_DEFLATE_LEVEL = 1

#: the key of the label counts among an encoder's subsamples (``count_labels``)
LABEL_COUNTS = "label_counts"
#: key of the sums a ``labeller`` returned for a chunk, in an encoder's subsamples
LABELLER_SUMS = "labeller_sums"


@dataclass(frozen=True)
class Codec:
    """A TIFF compression: its tag and how tiles are encoded.

    ``pre_encoded`` codecs are compressed by :class:`BlockEncoder` on the
    workers; image codecs (JPEG, WebP...) are left to tifffile.
    """

    name: str
    tag: int
    level: int | None = None
    pre_encoded: bool = True
    lossy_image: bool = False

    @property
    def tifffile_args(self) -> dict[str, Any]:
        """Keyword arguments naming this compression to ``tifffile``."""
        if self.tag == 1:
            return {"compression": None}
        args: dict[str, Any] = {"compression": self.tag}
        if self.level is not None:
            args["compressionargs"] = {"level": self.level}
        return args


def resolve_codec(compression: str | None, level: int | None) -> Codec:
    """Validate a compression name and check its codec is installed.

    Raises
    ------
    InvalidParameterError
        Unknown compression name or bad level.
    ImageWriteError
        The codec needs a package that is not installed (imagecodecs).
    """
    import tifffile

    key = compression.lower() if isinstance(compression, str) else compression
    if key not in _ALIASES:
        raise InvalidParameterError(
            f"compression={compression!r} is not one of "
            f"{sorted(k for k in _ALIASES if k)} or None"
        )
    name = _ALIASES[key]
    if level is not None and (not isinstance(level, int) or level < 0):
        raise InvalidParameterError(f"compression_level={level!r} must be a non-negative int")
    if name == "none":
        return Codec("none", 1)
    if name in _LEVELLESS:
        level = None  # these codecs have no levels: a level asks for nothing
    tag = int(tifffile.COMPRESSION[name.upper()])
    image_codec = tag in tifffile.TIFF.IMAGE_COMPRESSIONS
    if tag != 8:
        try:
            func = tifffile.TIFF.COMPRESSORS[tag]
            probe = np.zeros((16, 16, 3), np.uint8)
            func(probe if image_codec else probe.tobytes())
        except Exception as exc:  # noqa: BLE001 - missing module, stub codec...
            raise ImageWriteError(
                f"compression={compression!r} needs the 'imagecodecs' package, which is not "
                "installed (pip install imagecodecs); 'zlib', 'lzma' and None work without it"
            ) from exc
    return Codec(name, tag, level, pre_encoded=not image_codec, lossy_image=image_codec)


def align_to_tiles(arr: da.Array, tile: int) -> da.Array:
    """Rechunk so every chunk boundary lies on the ``tile`` grid (Y and X).

    Aligned chunks make each output tile come from exactly one chunk; the
    writer then computes every chunk once.
    """
    new: dict[int, Any] = {}
    for axis in (0, 1):
        sizes = arr.chunks[axis]
        bounds = np.cumsum(sizes)[:-1]
        if np.all(bounds % tile == 0):
            continue
        typical = int(np.median(sizes))
        new[axis] = max(tile, int(round(typical / tile)) * tile)
    if new:
        logger.info(
            "rechunking %s to %s to align chunks with the %d px tile grid; chunks "
            "straddling bands are computed twice (align the input chunks to avoid it)",
            arr.chunksize, new, tile,
        )
        arr = arr.rechunk(new)
    return arr


def max_step(tile: int) -> int:
    """Largest power of two dividing ``tile`` (deepest exact pyramid step)."""
    return tile & -tile


@dataclass(frozen=True, eq=False)
class LabelLookup:
    """Colour -> label mapping done by the encoder (see ``KMeans.lookup_table``).

    The table itself is not held here: it is a task argument, shipped once to
    each worker, while the encoder is part of every task.

    Parameters
    ----------
    bits : int
        Bits per channel of the colour codes.
    sentinel : int
        Table value of colours it does not hold (their nearest centre is used).
    centers : ndarray of shape (k, C)
        Cluster centres (float64).
    """

    bits: int
    sentinel: int
    centers: np.ndarray

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        return ("LabelLookup", self.bits, self.sentinel, tokenize(self.centers))


@dataclass(frozen=True)
class TileRegion:
    """A window ``(y0, y1, x0, x1)`` of a TIFF read directly (see
    :meth:`bigquant.io.tiff_read.TiffBlockReader.segment_windows`): an encoder
    given it reads the pixels itself, one output tile at a time."""

    reader: Any
    window: tuple[int, int, int, int]


@dataclass(frozen=True)
class BlockEncoder:
    """Turn a chunk of labels or pixels into encoded tiles and subsamples.

    Parameters
    ----------
    kind : {"palette", "rgb", "image"}
        Palette indices, colours of the palette, or the data as is.
    out_dtype : numpy.dtype
        Stored sample type.
    colours : ndarray of shape (k, C) or None
        Palette colours (needed for "rgb", used to validate labels).
    n_colours : int
        Labels must lie in ``[0, n_colours)``.
    tile : int
        Tile edge in pixels.
    codec : Codec
        Compression of the tiles.
    steps : tuple of int
        Subsampling steps (powers of two dividing ``tile``) to return.
    lookup : LabelLookup or None
        Chunks are images whose labels the encoder looks up (kinds "palette"
        and "rgb"); the table comes as the second argument of each call.
    nodata : int or None
        A label outside ``[0, n_colours)`` that is allowed too (masked
        pixels); in "rgb" kind ``colours`` then has a row for it (see
        :func:`bigquant.io.palette.with_nodata`).
    count_labels : bool, default=False
        Also count the pixels of each label of the chunk (kinds "palette"
        and "rgb"): the subsamples then hold them under :data:`LABEL_COUNTS`,
        int64 of length ``nodata + 1`` (``n_colours`` without a nodata).
    bits : int or None, default=None
        Kind "palette": 1, 2 or 4 packs each tile's indices that many to a
        byte, MSB first, rows padded to a byte
        (:func:`bigquant.io.nbits.pack_rows`), before compression; None
        stores one index a sample of ``out_dtype``.  Subsamples stay unpacked.
    labeller : callable or None, default=None
        Kinds "palette" and "rgb": chunks are images, and ``labeller(chunk)``
        returns ``(labels, sums)``: the chunk's labels (h, w) and a float64
        array of figures measured in the same read (e.g. the quality sums of
        :class:`bigquant.pipeline.report.MeasuredLabels`), kept in the
        subsamples under :data:`LABELLER_SUMS`.  Picklable (it runs on workers).
    """

    kind: str
    out_dtype: np.dtype
    colours: np.ndarray | None
    n_colours: int
    tile: int
    codec: Codec
    steps: tuple[int, ...] = ()
    lookup: LabelLookup | None = None
    nodata: int | None = None
    count_labels: bool = False
    bits: int | None = None
    labeller: Any = None

    @property
    def n_labels(self) -> int:
        """Length of the label counts: every colour's index and the nodata label's (past them)."""
        return self.n_colours if self.nodata is None else self.nodata + 1

    def check_labels(self, block: np.ndarray) -> None:
        """Raise InvalidInputError unless every label is a colour or ``nodata``."""
        if not block.size:
            return
        lo, hi = int(block.min()), int(block.max())
        if lo >= 0 and hi < self.n_colours:
            return
        if lo >= 0 and self.nodata is not None:
            stray = block[(block >= self.n_colours) & (block != self.nodata)]
            if not stray.size:
                return
            raise InvalidInputError(
                f"labels hold {int(stray[0])}, neither one of the palette's "
                f"{self.n_colours} colours nor nodata={self.nodata}"
            )
        raise InvalidInputError(
            f"labels range over [{lo}, {hi}] but the palette has {self.n_colours} colours"
        )

    def pixels(self, block: np.ndarray) -> np.ndarray:
        """Map one block of labels (or an image block) to stored pixels."""
        if self.kind == "image":
            return np.ascontiguousarray(block, dtype=self.out_dtype)
        if block.ndim == 3:
            block = block[..., 0]
        self.check_labels(block)
        if self.kind == "palette":
            return block.astype(self.out_dtype)
        assert self.colours is not None
        out = self.colours[block]
        return out[..., 0] if out.shape[-1] == 1 else out

    def encode(self, tile: np.ndarray) -> bytes | np.ndarray:
        """Compress one full (padded) tile (packed first with ``bits``); image codecs return the array."""
        codec = self.codec
        if self.bits is not None and self.kind == "palette":
            from bigquant.io.nbits import pack_rows

            tile = pack_rows(tile, self.bits)
        if codec.tag == 1:
            return tile.tobytes()
        if not codec.pre_encoded:
            return tile
        if codec.tag == 8:
            if self.kind == "palette":
                # libdeflate (imagecodecs), plain zlib streams: at its level 6 a third fewer bytes
                # than zlib's run-length deflate on smooth labels (a row repeats the one above,
                # which a run-length match cannot reach) and 10% fewer on photo-like ones, and
                # faster than zlib at the same level (bench/bench_output_bytes.py)
                import imagecodecs

                return imagecodecs.deflate_encode(tile, PALETTE_DEFLATE_LEVEL if codec.level is None
                                                  else codec.level)
            obj = zlib.compressobj(1 if codec.level is None else codec.level)
            return obj.compress(tile) + obj.flush()
        import tifffile

        func = tifffile.TIFF.COMPRESSORS[codec.tag]
        if codec.level is None:
            return func(tile.tobytes())
        return func(tile.tobytes(), codec.level)

    def tiles(self, pix: np.ndarray) -> list[list[bytes | np.ndarray]]:
        """Cut pixels into padded tiles, encode them; rows of tiles."""
        t = self.tile
        height, width = pix.shape[:2]
        # one reused tile buffer (encoders copy out of it; image codecs get their own)
        buf = np.empty((t, t) + pix.shape[2:], dtype=pix.dtype) if self.codec.pre_encoded else None
        rows = []
        for y in range(0, height, t):
            row = []
            for x in range(0, width, t):
                part = pix[y : y + t, x : x + t]
                if part.shape[:2] != (t, t):
                    full = np.zeros((t, t) + pix.shape[2:], dtype=pix.dtype)
                    full[: part.shape[0], : part.shape[1]] = part
                    part = full
                elif not part.flags.c_contiguous:
                    if buf is None:
                        part = np.ascontiguousarray(part)
                    else:
                        buf[...] = part
                        part = buf
                row.append(self.encode(part))
            rows.append(row)
        return rows

    def _stored(self, labels: np.ndarray) -> np.ndarray:
        """Stored pixels of labels that are known to be in range."""
        if self.kind == "palette":
            return labels
        assert self.colours is not None
        out = self.colours[labels]
        return out[..., 0] if out.shape[-1] == 1 else out

    def _lookup_tiles(
        self, source: np.ndarray | TileRegion, lut: np.ndarray
    ) -> tuple[list[list[Any]], dict[Any, np.ndarray]]:
        """Look up and encode the tiles of an image chunk, one tile at a time.

        ``source`` is the chunk, or a :class:`TileRegion` whose pixels are read
        here one output tile at a time (no chunk of pixels in memory).
        """
        from bigquant.io.palette import index_dtype
        from bigquant.kernels import lookup_window

        lk = self.lookup
        assert lk is not None and self.kind in ("palette", "rgb")
        t = self.tile
        if isinstance(source, TileRegion):
            reader = source.reader
            wy0, wy1, wx0, wx1 = source.window
            height, width = wy1 - wy0, wx1 - wx0
            pix = np.empty((t, t, reader.shape[2] if reader.ndim == 3 else 1), dtype=reader.dtype)
            # one segment buffer for the chunk: dask workers return every large free to
            # the OS, so a fresh buffer per tile would page-fault all over again
            seg = reader.segment_buffer()

            def window(y: int, h: int, x: int, w: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
                top, left = wy0 + y, wx0 + x
                for part, (ya, xa) in reader.segment_windows((top, top + h, left, left + w), seg):
                    pix[ya - top : ya - top + part.shape[0], xa - left : xa - left + part.shape[1]] = part
                return pix, (0, h, 0, w)
        else:
            block = np.ascontiguousarray(source if source.ndim == 3 else source[:, :, None])
            height, width = block.shape[:2]

            def window(y: int, h: int, x: int, w: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
                return block, (y, y + h, x, x + w)

        centers_t = np.ascontiguousarray(np.asarray(lk.centers, dtype=np.float64).T)
        labels_dtype = self.out_dtype if self.kind == "palette" else index_dtype(self.n_colours)
        labels = np.empty((t, t), dtype=labels_dtype)
        sub_labels = {
            s: np.empty((-(-height // s), -(-width // s)), dtype=labels_dtype) for s in self.steps
        }
        counts = np.zeros(self.n_labels, dtype=np.int64) if self.count_labels else None
        rows = []
        for y in range(0, height, t):
            row = []
            for x in range(0, width, t):
                h, w = min(t, height - y), min(t, width - x)
                if (h, w) != (t, t):
                    labels[...] = 0
                pixels, win = window(y, h, x, w)
                lookup_window(pixels, win, lk.bits, lut, lk.sentinel, centers_t, labels)
                if counts is not None:
                    counts += count_indices(labels[:h, :w], self.n_labels)
                for s, sub in sub_labels.items():  # steps divide the tile: y, x are multiples
                    part = labels[:h:s, :w:s]
                    sub[y // s : y // s + part.shape[0], x // s : x // s + part.shape[1]] = part
                if self.kind == "palette":
                    tile = labels if self.codec.pre_encoded else labels.copy()
                else:
                    stored = self._stored(labels[:h, :w])
                    tile = np.zeros((t, t) + stored.shape[2:], dtype=self.out_dtype)
                    tile[:h, :w] = stored
                row.append(self.encode(tile))
            rows.append(row)
        subs: dict[Any, np.ndarray] = {s: np.ascontiguousarray(self._stored(sub)) for s, sub in sub_labels.items()}
        if counts is not None:
            subs[LABEL_COUNTS] = counts
        return rows, subs

    def __call__(
        self, block: np.ndarray | TileRegion, lut: np.ndarray | None = None
    ) -> tuple[list[list[Any]], dict[Any, np.ndarray]]:
        if self.lookup is not None:
            assert lut is not None, "a lookup encoder needs the table"
            return self._lookup_tiles(block if isinstance(block, TileRegion) else np.asarray(block), lut)
        block = np.asarray(block)
        measured = None
        if self.labeller is not None:  # an image chunk: labelled (and measured) here, in this read
            block, measured = self.labeller(block if block.ndim == 3 else block[:, :, None])
        pix = self.pixels(block)
        subs: dict[Any, np.ndarray] = {s: np.ascontiguousarray(pix[::s, ::s]) for s in self.steps}
        if self.count_labels and self.kind != "image":  # labels checked by pixels(): within n_labels
            subs[LABEL_COUNTS] = count_indices(block, self.n_labels)
        if measured is not None:
            subs[LABELLER_SUMS] = np.asarray(measured, dtype=np.float64)
        return self.tiles(pix), subs


def pyramid_steps(
    shape: tuple[int, int], tile: int, pyramid: bool | int, *, name: str = "pyramid"
) -> tuple[int, ...]:
    """Subsampling steps of the pyramid levels below full resolution.

    ``pyramid``: True (halve down to one tile), False or a number of levels;
    ``name`` is the parameter named by errors.
    """
    if pyramid is False or pyramid is None or pyramid == 0:
        return ()
    deepest = max_step(tile)
    if pyramid is True:
        steps = []
        s = 2
        while s <= deepest and max(math.ceil(shape[0] / (s // 2)), math.ceil(shape[1] / (s // 2))) > tile:
            steps.append(s)
            s *= 2
        return tuple(steps)
    if not isinstance(pyramid, int) or pyramid < 0:
        raise InvalidParameterError(f"{name}={pyramid!r} must be a bool or a number of levels")
    if 2**pyramid > deepest:
        raise InvalidParameterError(
            f"{name}={pyramid} levels need steps up to {2**pyramid}, but tile={tile} is only "
            f"divisible by {deepest}; use a tile that is a multiple of {2**pyramid}"
        )
    return tuple(2**i for i in range(1, pyramid + 1))


def preview_step(shape: tuple[int, int], tile: int, size: int) -> int:
    """Power-of-two step dividing ``tile`` bringing the long side near ``size``."""
    step = 1
    while 2 * step <= max_step(tile) and max(shape[0], shape[1]) / (2 * step) >= size:
        step *= 2
    return step
