"""Lazy TIFF reading: metadata once, pixels per chunk in tasks that open the file.

tifffile's zarr store is not picklable, so the dask array built here holds only
a small picklable :class:`TiffBlockReader` (path, series, level, layout).  Each
task opens the file itself, so the same array runs on the threaded scheduler
and on a distributed cluster with worker processes:

- tiles or strips of one page (the common layout of very large files) are
  read segment by segment: the offsets (and, for compressed data, tifffile's
  decoder for the page) are set up once per process (:func:`_segment_index`);
  an uncompressed tile is one ``readinto`` of a reused buffer -- no per-block
  IFD parsing, no per-tile allocation (which costs page faults on dask
  workers, whose glibc returns every large free to the OS) -- and a compressed
  one is read and decoded with imagecodecs (JPEG with JPEGTables, JPEG 2000
  including Aperio's 33003/33005, LZW, deflate, zstd, WebP, PackBits...);
- uncompressed contiguous data are memory-mapped;
- everything else (planar, multi-file, NDPI...) goes through
  ``tifffile.imread(..., series=, level=, selection=...)``, which decodes
  only the tiles (or strips) under the block.

The location may be a URL (``http(s)://``, ``s3://``, ``memory://``...):
every task opens it itself through fsspec (:mod:`bigquant.io.files`).

Before the graph is built, one tile (or strip) must decode to at most
:func:`bigquant.io.chunks.max_task_bytes` bytes (memory-mapped data excepted:
they are chunked freely), and the Orientation tag (274) is applied lazily
(flips and transposes of the dask array and of the mask), as
:func:`oriented` does for EXIF orientation.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bigquant import tasks
from bigquant.errors import ImageReadError, InvalidParameterError
from bigquant.io.ahead import stop_decoding
from bigquant.io.chunks import ChunksLike, aligned_chunks, check_task_bytes
from bigquant.io.chunks import max_task_bytes as task_bytes_limit
from bigquant.io.files import file_stamp, is_url, open_binary
from bigquant.io.mask import alpha_mask, combine_masks, finite_mask, nodata_mask
from bigquant.io.source import ImageSource

if TYPE_CHECKING:  # imported where a dask array is built: `bigquant info` of a PNG needs none
    import dask.array as da

__all__ = [
    "TiffBlockReader",
    "level_reader",
    "segment_reader",
    "window_reader",
    "read_tiff",
    "is_tiff",
    "ycbcr_to_rgb",
    "oriented",
    "TRANSPOSED_ORIENTATIONS",
]

logger = logging.getLogger(__name__)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Axes a 2-D image series may have once size-1 axes are dropped.
_CHANNEL_LAST = ("YX", "YXS")
_CHANNEL_FIRST = ("SYX", "CYX")


#: Orientation values (TIFF tag 274, EXIF 0x0112) whose displayed image swaps height and width.
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)


def oriented(arr: Any, orientation: int) -> Any:
    """``arr`` as displayed for a TIFF / EXIF ``orientation``, as ``PIL.ImageOps.exif_transpose`` does.

    Parameters
    ----------
    arr : numpy.ndarray or dask.array.Array of shape (H, W) or (H, W, C)
        The pixels as stored (row 0 first).
    orientation : int
        The Orientation value, 1 to 8; any other value (absent, 0, 9...) is
        left alone, as Pillow does.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        Of shape (W, H[, C]) for :data:`TRANSPOSED_ORIENTATIONS`, else (H, W[, C]);
        dask arrays stay lazy (flips and transposes).

    Examples
    --------
    >>> import numpy as np
    >>> oriented(np.arange(6).reshape(2, 3), 6).tolist()   # stored rotated: turn clockwise
    [[3, 0], [4, 1], [5, 2]]
    """
    if orientation not in range(2, 9):
        return arr
    if orientation in TRANSPOSED_ORIENTATIONS:
        arr = arr.transpose((1, 0) + tuple(range(2, arr.ndim)))
    flip = _FLIPS[orientation]
    arr = arr[:: -1 if flip[0] else 1, :: -1 if flip[1] else 1]
    return np.ascontiguousarray(arr) if isinstance(arr, np.ndarray) else arr


#: orientation -> (flip rows, flip columns) of the displayed image, after transposing for 5..8
_FLIPS = {2: (False, True), 3: (True, True), 4: (True, False), 5: (False, False),
          6: (False, True), 7: (True, True), 8: (True, False)}


def _stored_chunks(chunks: Any, orientation: int) -> Any:
    """Chunks asked of the displayed image, as chunks of the stored one (inverse of :func:`oriented`).

    ``(cy, cx)`` swaps for :data:`TRANSPOSED_ORIENTATIONS`; explicit chunk
    sizes (a pair of tuples) also run backwards along flipped axes.
    """
    if orientation not in _FLIPS or chunks is None or isinstance(chunks, int):
        return chunks
    pair = tuple(chunks)
    if len(pair) >= 2 and all(isinstance(c, tuple) for c in pair[:2]):
        flip = _FLIPS[orientation]
        pair = tuple(c[::-1] if f else c for c, f in zip(pair[:2], flip))
    return pair[1::-1] if orientation in TRANSPOSED_ORIENTATIONS else pair


def is_tiff(path: pathlib.Path | str) -> bool:
    """Return True when ``path`` (a file or URL) starts with a TIFF or BigTIFF signature."""
    try:
        with open_binary(path) as fh:
            return fh.read(4) in _TIFF_MAGIC
    except (OSError, ImageReadError):
        return False


@dataclass(frozen=True)
class TiffBlockReader:
    """Picklable array-like reading blocks of one TIFF image level.

    Indexing it with a tuple of slices in (Y, X[, C]) order opens the file,
    reads the tiles under the selection and returns a numpy array.  It holds no
    open file, so it can be shipped to worker processes.

    Parameters
    ----------
    path : str
        TIFF file name.
    series, level : int
        Image series and pyramid level.
    shape : tuple of int
        Output shape (H, W) or (H, W, C).
    dtype : numpy.dtype
        Output data type.
    axes : str
        Native axes of the series after dropping size-1 axes ("YX", "YXS",
        "SYX" or "CYX").
    lead : int
        Number of size-1 leading axes of the series, indexed with 0.
    memmap : bool
        Read through ``tifffile.memmap`` (uncompressed contiguous data).
    segment : tuple of int (rows, cols) or None
        Tile (or strip: rows per strip and full width) of uncompressed
        segments read directly (see :meth:`_read_segments`); None reads
        through tifffile.
    tiled : bool
        The segments are tiles (stored padded to full size), not strips.
    file_dtype : numpy.dtype or None
        Type of the segments as read (raw: the stored type in the file's byte
        order; decoded: the decoder's output type).
    compressed : bool
        The segments are compressed and decoded one by one (see
        :func:`_segment_index`).
    """

    path: str
    series: int
    level: int
    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    lead: int = 0
    native_ndim: int = 2
    memmap: bool = False
    segment: tuple[int, int] | None = None
    tiled: bool = True
    file_dtype: np.dtype | None = None
    compressed: bool = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _native(self, key: tuple[slice, ...]) -> tuple[Any, ...]:
        """Translate an output selection to the series' native axes."""
        key = tuple(key) + (slice(None),) * (self.ndim - len(key))
        if self.axes in _CHANNEL_FIRST:
            native = (key[2], key[0], key[1])
        else:
            native = key
        # size-1 axes dropped from the output: index them with 0
        full = [0] * self.lead + list(native)
        return tuple(full) + (0,) * (self.native_ndim - len(full))

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        import tifffile

        key = tuple(key) + (slice(None),) * (self.ndim - len(key))
        if self.segment is not None and all(isinstance(k, slice) for k in key):
            return self._read_segments(key)
        native = self._native(key)
        try:
            if self.memmap:
                mm = tifffile.memmap(self.path, series=self.series, level=self.level, mode="r")
                block = np.array(mm[native])
                del mm
            else:
                with contextlib.ExitStack() as stack:
                    src = stack.enter_context(open_binary(self.path)) if is_url(self.path) else self.path
                    block = tifffile.imread(
                        src,
                        series=self.series,
                        level=self.level,
                        selection=native,
                        maxworkers=1,
                    )
        except ImageReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder error means a bad file
            raise ImageReadError(
                f"{self.path}: cannot read pixels {key!r}: {type(exc).__name__}: {exc}"
            ) from exc
        block = np.asarray(block)
        if self.axes in _CHANNEL_FIRST:
            block = np.moveaxis(block, 0, -1)
        if block.dtype != self.dtype:
            block = block.astype(self.dtype)
        return block

    def _read_segments(self, key: tuple[slice, ...]) -> np.ndarray:
        """Read the uncompressed tiles (or strips) under ``key`` into one array."""
        assert self.segment is not None and self.file_dtype is not None
        height, width = self.shape[:2]
        (y0, y1, ystep), (x0, x1, xstep) = key[0].indices(height), key[1].indices(width)
        if ystep < 0 or xstep < 0 or y1 <= y0 or x1 <= x0:  # unusual selections: read all, then index
            return self._read_segments((slice(None), slice(None)) + key[2:])[key]
        spp = self.shape[2] if self.ndim == 3 else 1
        out = np.empty((y1 - y0, x1 - x0, spp), dtype=self.file_dtype)
        for part, (ya, xa) in self.segment_windows((y0, y1, x0, x1)):
            out[ya - y0 : ya - y0 + part.shape[0], xa - x0 : xa - x0 + part.shape[1]] = part
        block = out[::ystep, ::xstep]
        block = block[..., key[2]] if self.ndim == 3 else block[..., 0]
        if block.dtype != self.dtype:
            block = block.astype(self.dtype)
        elif ystep != 1 or xstep != 1 or self.ndim == 3 and key[2] != slice(None):
            block = np.ascontiguousarray(block)
        return block

    def segment_buffer(self) -> np.ndarray:
        """A buffer for one stored segment, to pass to :meth:`segment_windows`."""
        assert self.segment is not None and self.file_dtype is not None
        spp = self.shape[2] if self.ndim == 3 else 1
        return np.empty(self.segment[0] * self.segment[1] * spp, dtype=self.file_dtype)

    def segment_windows(
        self, window: tuple[int, int, int, int], buffer: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, tuple[int, int]]]:
        """Yield the parts of ``[y0:y1, x0:x1]`` one stored tile (or strip) at a time.

        Only for segment reads (``segment`` set).  Each item is the part, of
        shape (rows, cols, samples) in ``file_dtype``, and the image position
        of its top-left pixel.  The part is a view of one buffer reused for the
        next tile: use it before asking for the next.  Missing segments of
        sparse files read as zeros.  ``buffer`` (from :meth:`segment_buffer`)
        saves allocating one for each call of a raw reader.
        """
        assert self.segment is not None and self.file_dtype is not None
        stop_decoding(self.path)  # a child decoding this file ahead stops: this process reads it now
        y0, y1, x0, x1 = window
        height, width = self.shape[:2]
        sh, sw = self.segment
        spp = self.shape[2] if self.ndim == 3 else 1
        raw = not self.compressed
        seg = (self.segment_buffer() if buffer is None else buffer) if raw else None
        try:
            with open_binary(self.path) as fh:
                index = _segment_index(self.path, file_stamp(self.path), self.series, self.level,
                                       (height, width), self.segment, self.compressed)
                offsets, counts = index.offsets, index.counts
                nx = -(-width // sw)
                for ty in range(y0 // sh, (y1 - 1) // sh + 1):
                    top = ty * sh
                    rows = sh if self.tiled else min(sh, height - top)
                    ya, yb = max(y0, top), min(y1, top + sh)
                    for tx in range(x0 // sw, (x1 - 1) // sw + 1):
                        left = tx * sw
                        xa, xb = max(x0, left), min(x1, left + sw)
                        i = ty * nx + tx
                        if raw:
                            tile = seg[: rows * sw * spp].reshape(rows, sw, spp)
                            _read_raw(fh, tile, int(offsets[i]), int(counts[i]), i, self.path)
                        else:
                            tile = index.decoded(fh, i, (rows, sw, spp), self.file_dtype, self.path, (ty, tx))
                        yield tile[ya - top : yb - top, xa - left : xb - left], (ya, xa)
        except ImageReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any OS or layout error means a bad file
            raise ImageReadError(
                f"{self.path}: cannot read pixels [{y0}:{y1}, {x0}:{x1}]: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def _read_raw(fh: Any, tile: np.ndarray, offset: int, count: int, i: int, path: str) -> None:
    """Read uncompressed segment ``i`` into ``tile`` (zeros for a missing segment)."""
    if count == 0:  # a sparse file's missing segment
        tile[...] = 0
        return
    view = memoryview(tile.reshape(-1)).cast("B")
    nbytes = view.nbytes
    fh.seek(offset)
    got = 0
    while got < nbytes:
        n = fh.readinto(view[got:nbytes])
        if not n:
            raise ImageReadError(
                f"{path}: file is truncated (segment {i} at {offset} ends after {got} of {nbytes} bytes)"
            )
        got += n


@dataclass(frozen=True)
class _SegmentIndex:
    """Where the segments of one image level are, and how to decode them."""

    offsets: np.ndarray
    counts: np.ndarray
    decode: Any = None
    decode_args: tuple[tuple[str, bytes], ...] = ()
    ycbcr: bool = False

    def decoded(self, fh: Any, i: int, shape: tuple[int, int, int], dtype: np.dtype, path: str,
                position: tuple[int, int]) -> np.ndarray:
        """Segment ``i`` read and decoded, of shape ``shape`` (rows, cols, samples)."""
        count = int(self.counts[i])
        if count == 0:
            return np.zeros(shape, dtype=dtype)
        fh.seek(int(self.offsets[i]))
        data = fh.read(count)
        if len(data) != count:
            raise ImageReadError(
                f"{path}: file is truncated (tile {i} at row {position[0]}, column {position[1]}: "
                f"{len(data)} of {count} bytes)"
            )
        try:
            arr = self.decode(data, i, **dict(self.decode_args))[0]
            arr = np.asarray(arr).reshape(-1, arr.shape[-2], arr.shape[-1])
            if self.ycbcr:
                arr = ycbcr_to_rgb(arr)
            if arr.shape != shape:
                out = np.zeros(shape, dtype=dtype)
                rows, cols = min(shape[0], arr.shape[0]), min(shape[1], arr.shape[1])
                out[:rows, :cols] = arr[:rows, :cols]
                arr = out
        except Exception as exc:  # noqa: BLE001 - every decoder error means a bad tile
            raise ImageReadError(
                f"{path}: cannot decode tile {i} (tile row {position[0]}, column {position[1]}, "
                f"{count} bytes at offset {int(self.offsets[i])}): {type(exc).__name__}: {exc}"
            ) from exc
        return arr if arr.dtype == dtype else arr.astype(dtype)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """JFIF (full-range BT.601) Y, Cb, Cr samples to 8-bit RGB, as JPEG decoders do."""
    y = ycc[..., 0].astype(np.float32)
    cb = ycc[..., 1].astype(np.float32) - 128.0
    cr = ycc[..., 2].astype(np.float32) - 128.0
    rgb = np.empty(ycc.shape[:-1] + (3,), dtype=np.float32)
    rgb[..., 0] = y + 1.402 * cr
    rgb[..., 1] = y - 0.344136 * cb - 0.714136 * cr
    rgb[..., 2] = y + 1.772 * cb
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _j2k_is_ycbcr(page: Any, fh: Any) -> bool:
    """True when an Aperio 33003 page holds Y, Cb, Cr codestreams (no colour transform).

    The COD marker's multiple-component-transform byte says whether the
    decoder gives RGB (1) or the raw components (0), as OpenSlide reads it.
    """
    counts = np.asarray(page.databytecounts)
    nonzero = np.flatnonzero(counts)
    if int(page.compression) != 33003 or nonzero.size == 0:
        return False
    i = int(nonzero[0])
    fh.seek(int(page.dataoffsets[i]))
    head = fh.read(min(int(counts[i]), 4096))
    cod = head.find(b"\xff\x52")
    return cod >= 0 and len(head) > cod + 8 and head[cod + 8] == 0


#: Arrays made by :func:`read_tiff` whose blocks can be read segment by segment
#: (name -> reader), for passes that consume tiles as they are read (colour
#: counting, the writer's label lookup) instead of whole blocks.  Names are
#: tokens of location, file stamp, level and chunks, so an entry never goes stale.
_SEGMENT_ARRAYS: collections.OrderedDict[str, TiffBlockReader] = collections.OrderedDict()


def segment_reader(arr: da.Array) -> TiffBlockReader | None:
    """The reader of ``arr`` if it is a TIFF level read segment by segment, unchanged, else None."""
    reader = _SEGMENT_ARRAYS.get(arr.name)
    if reader is None or tuple(arr.shape) != reader.shape:
        return None
    return reader


def window_reader(arr: da.Array, tile: int) -> TiffBlockReader | None:
    """:func:`segment_reader` of ``arr`` if ``tile`` x ``tile`` windows read each segment once.

    Uncompressed segments are read in place, so any window costs nothing
    extra; compressed tiles qualify when the windows' grid is a multiple of
    theirs (a 512 px output tile over 256 px input tiles), so that no tile is
    decoded twice.
    """
    reader = segment_reader(arr)
    if reader is None or not reader.compressed:
        return reader
    assert reader.segment is not None
    rows, cols = reader.segment
    return reader if reader.tiled and tile % rows == 0 and tile % cols == 0 else None


def _register_segments(arr: da.Array, reader: TiffBlockReader) -> None:
    _SEGMENT_ARRAYS[arr.name] = reader
    _SEGMENT_ARRAYS.move_to_end(arr.name)
    while len(_SEGMENT_ARRAYS) > 64:
        _SEGMENT_ARRAYS.popitem(last=False)


@functools.lru_cache(maxsize=8)
def _segment_index(
    path: str,
    stamp: tuple[Any, ...],
    series: int,
    level: int,
    shape: tuple[int, int],
    segment: tuple[int, int],
    compressed: bool,
) -> _SegmentIndex:
    """Offsets, byte counts and decoder of the segments of one image level, once a process.

    ``stamp`` (size, modification time or ETag) is part of the cache key, so a
    rewritten file is parsed again; it must keep the layout the reader was
    built for.
    """
    import tifffile

    with open_binary(path) as fh, tifffile.TiffFile(fh) as tf:
        page = tf.series[series].levels[level].keyframe
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        found = _segment_shape(page)
        size = (int(page.imagelength), int(page.imagewidth))
        if found != segment or size != shape or (int(page.compression) != 1) != compressed:
            raise ImageReadError(
                f"{path}: the file changed since it was opened (layout {size} {found}, "
                f"expected {shape} {segment}); read it again"
            )
        offsets.setflags(write=False)
        counts.setflags(write=False)
        if not compressed:
            return _SegmentIndex(offsets, counts)
        # tifffile's decoder for this page: a closure over its tags, no file handle
        args = tuple((name, value) for name, value in
                     (("jpegtables", page.jpegtables), ("jpegheader", page.jpegheader)) if value is not None)
        return _SegmentIndex(offsets, counts, page.decode, args, _j2k_is_ycbcr(page, fh))


def _segment_shape(page: Any) -> tuple[int, int] | None:
    """(rows, cols) of one tile or strip of ``page``, or None when not 2-D."""
    if page.is_tiled:
        if int(page.tiledepth) != 1 or int(page.imagedepth) != 1:
            return None
        return int(page.tilelength), int(page.tilewidth)
    height = int(page.imagelength)
    return int(min(page.rowsperstrip or height, height)), int(page.imagewidth)


def _segment_layout(
    tf: Any, lev: Any, axes: str, shape: tuple[int, ...], dtype: np.dtype
) -> tuple[tuple[int, int], np.dtype, bool] | None:
    """Segment shape, segment dtype and whether compressed, if ``lev`` reads by segments.

    That is one page of this file, samples interleaved, whole bytes per
    sample, and either uncompressed and unpredicted with every segment
    complete (or absent) -- read in place -- or compressed with a codec
    tifffile decodes (imagecodecs) -- decoded one segment at a time.  None
    leaves the level to ``tifffile.imread``.
    """
    import tifffile

    pages = list(lev.pages)
    if len(pages) != 1 or axes not in _CHANNEL_LAST:
        return None
    page = lev.keyframe
    spp = shape[2] if len(shape) == 3 else 1
    try:
        compression = int(page.compression)
        compressed = compression != 1
        if (
            pages[0] is not page
            or page.parent is not tf
            or page.is_ndpi  # McuStarts stand for tiles; tifffile reads them
            or int(page.fillorder or 1) != 1
            or int(page.samplesperpixel) != spp
            or (spp > 1 and int(page.planarconfig) != 1)
            or int(page.bitspersample) != dtype.itemsize * 8
            or (int(page.imagelength), int(page.imagewidth)) != tuple(shape[:2])
            or (compressed and compression not in tifffile.TIFF.DECOMPRESSORS)
            or (not compressed and (int(page.predictor or 1) != 1 or page.subsampling not in (None, (1, 1))))
        ):
            return None
        segment = _segment_shape(page)
        if segment is None:
            return None
        height = shape[0]
        sh, sw = segment
        ny, nx = -(-height // sh), -(-shape[1] // sw)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        if counts.shape != (ny * nx,):
            return None
        if compressed:
            return segment, dtype, True
        row_bytes = sw * spp * dtype.itemsize
        need = np.full((ny, nx), sh * row_bytes, dtype=np.int64)
        if not page.is_tiled:
            need[-1] = (height - (ny - 1) * sh) * row_bytes
        if np.any((counts < need.ravel()) & (counts != 0)):
            return None
    except Exception:  # noqa: BLE001 - unusual tags: leave the file to tifffile
        logger.debug("%s: segment reads not possible", tf.filehandle.path, exc_info=True)
        return None
    return segment, dtype.newbyteorder(tf.byteorder), False


def _palette_lut(colormap: np.ndarray) -> np.ndarray:
    """Return the (n, 3) colour table of a TIFF colormap, 8-bit when exact."""
    cmap = np.asarray(colormap, dtype=np.uint16).T
    if np.all(cmap % 257 == 0):
        return (cmap // 257).astype(np.uint8)
    if cmap.max() <= 255:
        return cmap.astype(np.uint8)
    return cmap


def _expand_palette(block: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return lut[np.minimum(block, len(lut) - 1)]


def _check_extent(pages: list[Any], size: int, path: pathlib.Path | str) -> None:
    """Raise ImageReadError when the file is shorter than its tiles say."""
    for page in pages:
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        if offsets.size and int((offsets + counts).max()) > size:
            raise ImageReadError(
                f"{path}: file is truncated ({size} bytes, image data end at "
                f"{int((offsets + counts).max())})"
            )


#: TIFF ExtraSamples values that mean alpha (associated, unassociated)
_ALPHA = (1, 2)


def _alpha_sample(page: Any, n_samples: int) -> bool:
    """True when the last sample of ``page`` is alpha (RGBA, grey + alpha)."""
    extra = tuple(int(e) for e in (page.extrasamples or ()))
    return n_samples in (2, 4) and bool(extra) and extra[-1] in _ALPHA


def _size(level: Any) -> tuple[int, int]:
    page = level.keyframe
    return int(page.imagelength), int(page.imagewidth)


def _mask_level(tf: Any, series: int, level: int) -> int | None:
    """The series of a TIFF mask (NewSubfileType 4) of ``series``, with this ``level``, or None."""
    from bigquant.io.inspect import mask_series

    levels = tf.series[series].levels
    found = mask_series(tf, _size(levels[0]))
    if found is None or found == series:
        return None
    mask_levels = tf.series[found].levels
    if level >= len(mask_levels) or _size(mask_levels[level]) != _size(levels[level]):
        return None
    return found


def read_tiff(
    path: pathlib.Path | str,
    *,
    chunks: ChunksLike = None,
    level: int = 0,
    series: int | None = None,
    max_task_bytes: int | None = None,
) -> ImageSource:
    """Open one level of one series of a TIFF file (or URL) as a lazy ImageSource.

    See :func:`bigquant.read_image` for the parameters; ``series=None`` picks
    the image series of a slide (not its thumbnail, label, macro or mask).
    The image (and its mask) come out as displayed: the Orientation tag is
    applied, unless the file is georeferenced (GeoTIFF), whose transform is
    for the stored rows.
    """
    import tifffile

    from bigquant.io.geotiff import GeoTiff, read_nodata
    from bigquant.io.inspect import image_series
    from bigquant.io.metadata import ImageMetadata, read_tiff_metadata
    from bigquant.io.rat import band_descriptions

    location = str(path)
    limit = task_bytes_limit(max_task_bytes)
    stamp = file_stamp(location)  # (size, version): one stat, or one request for a URL
    try:
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(open_binary(location)) if is_url(location) else location
            tf = stack.enter_context(tifffile.TiffFile(src))
            info = _level_info(tf, location, level, series, image_series)
            found = info.pop("mask_series")
            try:
                _check_extent(list(tf.series[info["series"]].levels[level].pages), stamp[0], location)
            except ImageReadError:
                raise
            except Exception:  # noqa: BLE001 - metadata without offsets: checked per block
                logger.debug("%s: could not check the extent of the image data", location)
            keyframe = tf.series[info["series"]].levels[level].keyframe
            nodata = read_nodata(keyframe)
            geotiff = GeoTiff.from_page(keyframe)
            band_names = band_descriptions(tf.series[info["series"]].levels[0].keyframe)  # levels carry none
            orientation = _orientation_tag(keyframe)
            try:
                metadata = read_tiff_metadata(tf, info["series"], level)
            except Exception:  # noqa: BLE001 - metadata a reader cannot parse are not a broken image
                logger.warning("%s: unreadable resolution, description or ICC profile; not carried", location)
                metadata = ImageMetadata()
            mask_info = (
                _level_info(tf, location, level, found, image_series)
                if found is not None else None
            )
    except (ImageReadError, InvalidParameterError):
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds
        raise ImageReadError(f"{location}: not a readable TIFF file: {exc}") from exc
    if orientation != 1 and geotiff is not None:
        logger.warning("%s: Orientation %d of a georeferenced TIFF not applied (the transform is for the "
                       "stored rows)", location, orientation)
        orientation = 1
    transposed = orientation in TRANSPOSED_ORIENTATIONS
    chunks = _stored_chunks(chunks, orientation)  # asked of the displayed image
    data, reader, tile = _level_array(location, info, chunks, stamp, limit)
    series = info["series"]
    token = data.name.rsplit("-", 1)[-1]
    photometric = info["photometric"]
    masks: list[da.Array | None] = []
    file_nodata = nodata
    if nodata is not None and info["colormap"] is not None:
        masks.append(nodata_mask(data, nodata))  # a palette image's nodata is an index
        nodata = None
    if info["colormap"] is not None and data.ndim == 2 and data.dtype.kind == "u":
        lut = _palette_lut(info["colormap"])
        data = data.map_blocks(
            _expand_palette,
            lut,
            dtype=lut.dtype,
            new_axis=2,
            chunks=(data.chunks[0], data.chunks[1], (3,)),
            name=f"{tasks.READ_PALETTE}-{token}",
            meta=np.empty((0, 0, 0), dtype=lut.dtype),
        )
    alpha = None
    if info["alpha"]:
        alpha = data[:, :, -1]
        masks.append(alpha_mask(alpha))
        data = data[:, :, :-1]
        if data.shape[2] == 1:
            data = data[:, :, 0]
    if nodata is not None:
        masks.append(nodata_mask(data, nodata))
    masks.append(finite_mask(data))
    if mask_info is not None:
        mask_data = _level_array(location, mask_info, data.chunks[:2], stamp, limit)[0]
        masks.append(mask_data.astype(bool) if mask_data.ndim == 2 else mask_data[:, :, 0].astype(bool))
    mask = combine_masks(*masks)
    if orientation != 1:
        logger.debug("%s: Orientation %d applied", location, orientation)
        data = oriented(data, orientation)
        mask = None if mask is None else oriented(mask, orientation)
        alpha = None if alpha is None else oriented(alpha, orientation)
        if transposed and tile is not None:
            tile = (tile[1], tile[0])
        if transposed:
            metadata = metadata.transposed()
    logger.debug(
        "%s: %s %s, tile %s, %s, chunks %s, mask %s", location, data.shape, data.dtype, tile,
        photometric, data.chunksize, mask is not None,
    )
    return ImageSource(
        data=data,
        path=location if is_url(location) else pathlib.Path(location),
        tile=tile,
        photometric=photometric,
        format="ome-tiff" if info["is_ome"] else "tiff",
        levels=info["levels"],
        level=level,
        series=series,
        mask=mask,
        nodata=file_nodata,
        geotiff=geotiff,
        metadata=metadata,
        extra={"orientation": orientation, "band_names": band_names},
        alpha=alpha,
    )


def _orientation_tag(page: Any) -> int:
    """The Orientation tag (274) of ``page``: 1 to 8, or 1 when absent or not one of those."""
    tag = page.tags.get(274)
    try:
        value = int(tag.value) if tag is not None else 1
    except (TypeError, ValueError):
        value = 1
    return value if value in range(1, 9) else 1


def _level_info(tf: Any, location: str, level: int, series: int | None, image_series: Any) -> dict[str, Any]:
    """What :func:`_level_array` needs to know of one level, read from the open file."""
    import tifffile

    nseries = len(tf.series)
    if nseries == 0:
        raise ImageReadError(f"{location}: TIFF file has no image")
    if series is None:
        series = image_series(tf)
    if not 0 <= series < nseries:
        raise InvalidParameterError(f"series={series} out of range: {location} has {nseries} series")
    ser = tf.series[series]
    nlevels = len(ser.levels)
    if not 0 <= level < nlevels:
        raise InvalidParameterError(
            f"level={level} out of range: {location} series {series} has {nlevels} level(s)"
        )
    lev = ser.levels[level]
    page = lev.keyframe
    native_shape = tuple(int(s) for s in lev.shape)
    axes_full = lev.axes
    keep = [i for i, s in enumerate(native_shape) if s != 1 or axes_full[i] in "YX"]
    axes = "".join(axes_full[i] for i in keep)
    lead = min(keep) if keep else 0
    if keep != list(range(lead, lead + len(keep))) or axes not in (_CHANNEL_LAST + _CHANNEL_FIRST):
        raise ImageReadError(
            f"{location}: series {series} has axes {axes_full!r} and shape {native_shape}; "
            "only single 2-D images (Y, X with optional samples/channels) are "
            "supported - choose another series="
        )
    dims = [native_shape[i] for i in keep]
    shape = (dims[1], dims[2], dims[0]) if axes in _CHANNEL_FIRST else tuple(dims)
    dtype = np.dtype(lev.dtype).newbyteorder("=")
    if dtype.kind not in "uifb" or dtype.itemsize > 8:
        raise ImageReadError(f"{location}: unsupported sample type {dtype}")
    compression = int(page.compression)
    if compression != 1 and compression not in tifffile.TIFF.DECOMPRESSORS:
        name = getattr(page.compression, "name", str(compression))
        raise ImageReadError(
            f"{location}: series {series} uses compression {name} ({compression}), which tifffile "
            "and imagecodecs cannot decode"
        )
    memmap = lev.dataoffset is not None and compression == 1 and not is_url(location)
    photometric = page.photometric.name.lower() if page.photometric is not None else None
    n_samples = shape[2] if len(shape) == 3 else 1
    return dict(
        series=series,
        levels=nlevels,
        level=level,
        shape=shape,
        dtype=dtype,
        axes=axes,
        lead=lead,
        native_ndim=len(native_shape),
        memmap=memmap,
        tiled=bool(page.is_tiled),
        tile=(int(page.tilelength), int(page.tilewidth)) if page.is_tiled else None,
        rows_per_strip=int(min(page.rowsperstrip or shape[0], shape[0])),
        photometric=photometric,
        colormap=page.colormap if photometric == "palette" else None,
        is_ome=bool(tf.is_ome),
        alpha=_alpha_sample(page, n_samples),
        layout=None if memmap else _segment_layout(tf, lev, axes, shape, dtype),
        mask_series=_mask_level(tf, series, level),
    )


def _level_reader(location: str, info: dict[str, Any]) -> TiffBlockReader:
    """The reader of one level described by :func:`_level_info`."""
    layout = info["layout"]
    return TiffBlockReader(
        path=location,
        series=info["series"],
        level=info["level"],
        shape=info["shape"],
        dtype=info["dtype"],
        axes=info["axes"],
        lead=info["lead"],
        native_ndim=info["native_ndim"],
        memmap=info["memmap"],
        segment=layout[0] if layout else None,
        tiled=info["tiled"],
        file_dtype=layout[1] if layout else None,
        compressed=layout[2] if layout else False,
    )


def level_reader(path: str, *, level: int = 0, series: int | None = None) -> TiffBlockReader:
    """The :class:`TiffBlockReader` :func:`read_tiff` builds for one level of a local TIFF, without dask.

    The same reader (equal, field by field) for the same file, level and
    series: what a process that only decodes tiles needs
    (:mod:`bigquant.io.ahead`).  Raises ImageReadError or
    InvalidParameterError as :func:`read_tiff` does.
    """
    import tifffile

    from bigquant.io.inspect import image_series

    try:
        with tifffile.TiffFile(path) as tf:
            info = _level_info(tf, path, level, series, image_series)
    except (ImageReadError, InvalidParameterError):
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds
        raise ImageReadError(f"{path}: not a readable TIFF file: {exc}") from exc
    return _level_reader(path, info)


def _level_array(
    location: str, info: dict[str, Any], chunks: ChunksLike, stamp: tuple[Any, ...], limit: int
) -> tuple[da.Array, TiffBlockReader, tuple[int, int] | None]:
    """The lazy dask array of one level described by :func:`_level_info`.

    Raises ImageReadError, before anything is built, when one tile (or strip)
    decodes to more than ``limit`` bytes -- unless the data are memory-mapped,
    which any chunk reads in place.
    """
    shape, dtype = info["shape"], info["dtype"]
    if info["tiled"]:
        tile: tuple[int, int] | None = info["tile"]
    elif info["memmap"]:
        tile = None
    else:
        tile = (info["rows_per_strip"], shape[1])
    grid = (1, 1) if info["memmap"] or tile is None else tile
    if not info["memmap"] and tile is not None:
        check_task_bytes(
            location, "tile" if info["tiled"] else "strip", tile + tuple(shape[2:]), dtype.itemsize, limit,
            advice="rewrite it as a tiled TIFF (e.g. `vips tiffsave in.tif out.tif --tile --bigtiff`)",
        )
    if isinstance(chunks, tuple) and chunks and isinstance(chunks[0], tuple):
        cy, cx = chunks  # explicit chunk sizes (another array's): followed as given
    else:
        cy, cx = aligned_chunks(shape[:2], grid, chunks, name=location)
    reader = _level_reader(location, info)
    import dask.array as da
    from dask.base import tokenize

    token = tokenize(location, stamp, info["series"], info["level"], cy, cx)
    data = da.from_array(
        reader,
        chunks=(cy, cx) + tuple(shape[2:]),
        name=f"{tasks.READ}-{token}",
        asarray=False,
        fancy=False,
        inline_array=True,
        meta=np.empty((0,) * len(shape), dtype=dtype),
    )
    if reader.segment is not None:
        _register_segments(data, reader)
    return data, reader, tile
