"""Lazy TIFF reading: metadata once, pixels per chunk in tasks that open the file.

tifffile's zarr store is not picklable, so the dask array built here holds only
a small picklable :class:`TiffBlockReader` (path, series, level, layout).  Each
task opens the file itself, so the same array runs on the threaded scheduler
and on a distributed cluster with worker processes:

- uncompressed tiles or strips (the common layout of very large files) are
  read straight into the block: the tile offsets are parsed once per process
  (:func:`_segment_table`), then each tile is one ``readinto`` of a reused
  buffer -- no per-block IFD parsing, no per-tile allocation (which costs page
  faults on dask workers, whose glibc returns every large free to the OS);
- uncompressed contiguous data are memory-mapped;
- everything else (compressed, planar, multi-file...) goes through
  ``tifffile.imread(path, series=, level=, selection=...)``, which decodes
  only the tiles (or strips) under the block.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from bigquant.errors import ImageReadError, InvalidParameterError
from bigquant.io.chunks import ChunksLike, aligned_chunks
from bigquant.io.source import ImageSource

__all__ = ["TiffBlockReader", "direct_reader", "read_tiff", "is_tiff"]

logger = logging.getLogger(__name__)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Axes a 2-D image series may have once size-1 axes are dropped.
_CHANNEL_LAST = ("YX", "YXS")
_CHANNEL_FIRST = ("SYX", "CYX")


def is_tiff(path: pathlib.Path) -> bool:
    """Return True when ``path`` starts with a TIFF or BigTIFF signature."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in _TIFF_MAGIC
    except OSError:
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
        Stored sample type, in the file's byte order (direct reads only).
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
                block = tifffile.imread(
                    self.path,
                    series=self.series,
                    level=self.level,
                    selection=native,
                    maxworkers=1,
                )
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

        Only for direct reads (``segment`` set).  Each item is the part, of
        shape (rows, cols, samples) in the file's dtype and byte order, and the
        image position of its top-left pixel.  The part is a view of one
        buffer reused for the next tile: use it before asking for the next.
        Missing segments of sparse files read as zeros.  ``buffer`` (from
        :meth:`segment_buffer`) saves allocating one for each call.
        """
        assert self.segment is not None and self.file_dtype is not None
        y0, y1, x0, x1 = window
        height, width = self.shape[:2]
        sh, sw = self.segment
        spp = self.shape[2] if self.ndim == 3 else 1
        item = self.file_dtype.itemsize
        seg = self.segment_buffer() if buffer is None else buffer
        view = memoryview(seg).cast("B")
        try:
            with open(self.path, "rb", buffering=0) as fh:
                stat = os.fstat(fh.fileno())
                offsets, counts = _segment_table(
                    self.path, (stat.st_size, stat.st_mtime_ns), self.series, self.level,
                    (height, width), self.segment,
                )
                nx = -(-width // sw)
                for ty in range(y0 // sh, (y1 - 1) // sh + 1):
                    top = ty * sh
                    rows = sh if self.tiled else min(sh, height - top)
                    ya, yb = max(y0, top), min(y1, top + sh)
                    nbytes = rows * sw * spp * item
                    tile = seg[: nbytes // item].reshape(rows, sw, spp)
                    for tx in range(x0 // sw, (x1 - 1) // sw + 1):
                        left = tx * sw
                        xa, xb = max(x0, left), min(x1, left + sw)
                        i = ty * nx + tx
                        if counts[i] == 0:  # a sparse file's missing segment
                            tile[...] = 0
                        else:
                            fh.seek(int(offsets[i]))
                            got = 0
                            while got < nbytes:
                                n = fh.readinto(view[got:nbytes])
                                if not n:
                                    raise ImageReadError(
                                        f"{self.path}: file is truncated (segment {i} at "
                                        f"{int(offsets[i])} ends after {got} of {nbytes} bytes)"
                                    )
                                got += n
                        yield tile[ya - top : yb - top, xa - left : xb - left], (ya, xa)
        except ImageReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any OS or layout error means a bad file
            raise ImageReadError(
                f"{self.path}: cannot read pixels [{y0}:{y1}, {x0}:{x1}]: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


#: Arrays made by :func:`read_tiff` whose blocks can be read tile by tile
#: (name -> reader), for passes that consume tiles as they are read (colour
#: counting) instead of whole blocks.  Names are tokens of path, file stamp,
#: level and chunks, so an entry never goes stale.
_DIRECT_ARRAYS: collections.OrderedDict[str, TiffBlockReader] = collections.OrderedDict()


def direct_reader(arr: da.Array) -> TiffBlockReader | None:
    """The reader of ``arr`` if it is a TIFF level read directly, unchanged, else None."""
    reader = _DIRECT_ARRAYS.get(arr.name)
    if reader is None or tuple(arr.shape) != reader.shape:
        return None
    return reader


def _register_direct(arr: da.Array, reader: TiffBlockReader) -> None:
    _DIRECT_ARRAYS[arr.name] = reader
    _DIRECT_ARRAYS.move_to_end(arr.name)
    while len(_DIRECT_ARRAYS) > 64:
        _DIRECT_ARRAYS.popitem(last=False)


@functools.lru_cache(maxsize=8)
def _segment_table(
    path: str,
    stamp: tuple[int, int],
    series: int,
    level: int,
    shape: tuple[int, int],
    segment: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and byte counts of the segments of one image level, parsed once a process.

    ``stamp`` (size, modification time) is part of the cache key, so a
    rewritten file is parsed again; it must keep the layout the reader was
    built for.
    """
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.series[series].levels[level].keyframe
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        found = _segment_shape(page) if int(page.compression) == 1 else None
        size = (int(page.imagelength), int(page.imagewidth))
    if found != segment or size != shape:
        raise ImageReadError(
            f"{path}: the file changed since it was opened (layout {size} {found}, "
            f"expected {shape} {segment}); read it again"
        )
    offsets.setflags(write=False)
    counts.setflags(write=False)
    return offsets, counts


def _segment_shape(page: Any) -> tuple[int, int] | None:
    """(rows, cols) of one tile or strip of ``page``, or None when not 2-D."""
    if page.is_tiled:
        if int(page.tiledepth) != 1 or int(page.imagedepth) != 1:
            return None
        return int(page.tilelength), int(page.tilewidth)
    height = int(page.imagelength)
    return int(min(page.rowsperstrip or height, height)), int(page.imagewidth)


def _direct_layout(
    tf: Any, lev: Any, axes: str, shape: tuple[int, ...], dtype: np.dtype
) -> tuple[tuple[int, int], np.dtype] | None:
    """Segment shape and stored dtype if ``lev`` can be read without tifffile, else None.

    That is one page of this file, uncompressed, unpredicted, whole bytes per
    sample, samples interleaved, and every segment complete (or absent).
    """
    pages = list(lev.pages)
    if len(pages) != 1 or axes not in _CHANNEL_LAST:
        return None
    page = lev.keyframe
    spp = shape[2] if len(shape) == 3 else 1
    try:
        if (
            pages[0] is not page
            or page.parent is not tf
            or int(page.compression) != 1
            or int(page.predictor or 1) != 1
            or int(page.fillorder or 1) != 1
            or int(page.samplesperpixel) != spp
            or (spp > 1 and int(page.planarconfig) != 1)
            or page.subsampling not in (None, (1, 1))
            or int(page.bitspersample) != dtype.itemsize * 8
            or (int(page.imagelength), int(page.imagewidth)) != tuple(shape[:2])
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
        row_bytes = sw * spp * dtype.itemsize
        need = np.full((ny, nx), sh * row_bytes, dtype=np.int64)
        if not page.is_tiled:
            need[-1] = (height - (ny - 1) * sh) * row_bytes
        if np.any((counts < need.ravel()) & (counts != 0)):
            return None
    except Exception:  # noqa: BLE001 - unusual tags: leave the file to tifffile
        logger.debug("%s: direct segment reads not possible", tf.filehandle.path, exc_info=True)
        return None
    return segment, dtype.newbyteorder(tf.byteorder)


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


def _check_extent(tf: Any, pages: list[Any], path: pathlib.Path) -> None:
    """Raise ImageReadError when the file is shorter than its tiles say."""
    size = os.path.getsize(path)
    for page in pages:
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        if offsets.size and int((offsets + counts).max()) > size:
            raise ImageReadError(
                f"{path}: file is truncated ({size} bytes, image data end at "
                f"{int((offsets + counts).max())})"
            )


def read_tiff(
    path: pathlib.Path,
    *,
    chunks: ChunksLike = None,
    level: int = 0,
    series: int = 0,
) -> ImageSource:
    """Open one level of one series of a TIFF file as a lazy ImageSource.

    See :func:`bigquant.read_image` for the parameters.
    """
    import tifffile

    try:
        tf = tifffile.TiffFile(path)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds
        raise ImageReadError(f"{path}: not a readable TIFF file: {exc}") from exc
    with tf:
        nseries = len(tf.series)
        if nseries == 0:
            raise ImageReadError(f"{path}: TIFF file has no image")
        if not 0 <= series < nseries:
            raise InvalidParameterError(
                f"series={series} out of range: {path} has {nseries} series"
            )
        ser = tf.series[series]
        nlevels = len(ser.levels)
        if not 0 <= level < nlevels:
            raise InvalidParameterError(
                f"level={level} out of range: {path} series {series} has {nlevels} level(s)"
            )
        lev = ser.levels[level]
        page = lev.keyframe
        native_shape = tuple(int(s) for s in lev.shape)
        axes_full = lev.axes
        keep = [i for i, s in enumerate(native_shape) if s != 1 or axes_full[i] in "YX"]
        axes = "".join(axes_full[i] for i in keep)
        lead = min(keep) if keep else 0
        if keep != list(range(lead, len(native_shape))) or axes not in (
            _CHANNEL_LAST + _CHANNEL_FIRST
        ):
            raise ImageReadError(
                f"{path}: series {series} has axes {axes_full!r} and shape {native_shape}; "
                "only single 2-D images (Y, X with optional samples/channels) are "
                "supported - choose another series="
            )
        dims = [native_shape[i] for i in keep]
        if axes in _CHANNEL_FIRST:
            shape = (dims[1], dims[2], dims[0])
        else:
            shape = tuple(dims)
        dtype = np.dtype(lev.dtype).newbyteorder("=")
        if dtype.kind not in "uif" or dtype.itemsize > 8:
            raise ImageReadError(f"{path}: unsupported sample type {dtype}")
        try:
            _check_extent(tf, list(lev.pages), path)
        except ImageReadError:
            raise
        except Exception:  # noqa: BLE001 - metadata without offsets: checked per block
            logger.debug("%s: could not check the extent of the image data", path)
        memmap = lev.dataoffset is not None and int(page.compression) == 1
        page_tiled = page.is_tiled
        if page.is_tiled:
            tile: tuple[int, int] | None = (int(page.tilelength), int(page.tilewidth))
            grid = tile
        elif memmap:
            tile = None
            grid = (1, 1)
        else:
            rps = int(min(page.rowsperstrip or shape[0], shape[0]))
            tile = (rps, shape[1])
            grid = tile
        photometric = page.photometric.name.lower() if page.photometric is not None else None
        colormap = page.colormap if photometric == "palette" else None
        is_ome = bool(tf.is_ome)
        direct = None if memmap else _direct_layout(tf, lev, axes, shape, dtype)
    stat = os.stat(path)
    cy, cx = aligned_chunks(shape[:2], grid, chunks, name=str(path))
    reader = TiffBlockReader(
        path=str(path),
        series=series,
        level=level,
        shape=shape,
        dtype=dtype,
        axes=axes,
        lead=lead,
        native_ndim=len(native_shape),
        memmap=memmap,
        segment=direct[0] if direct else None,
        tiled=bool(page_tiled),
        file_dtype=direct[1] if direct else None,
    )
    token = tokenize(str(path), stat.st_size, stat.st_mtime_ns, series, level, cy, cx)
    full_chunks = (cy, cx) + tuple(shape[2:])
    data = da.from_array(
        reader,
        chunks=full_chunks,
        name=f"bigquant-read-{token}",
        asarray=False,
        fancy=False,
        inline_array=True,
        meta=np.empty((0,) * len(shape), dtype=dtype),
    )
    if reader.segment is not None:
        _register_direct(data, reader)
    if colormap is not None and data.ndim == 2 and dtype.kind == "u":
        lut = _palette_lut(colormap)
        data = data.map_blocks(
            _expand_palette,
            lut,
            dtype=lut.dtype,
            new_axis=2,
            chunks=(data.chunks[0], data.chunks[1], (3,)),
            name=f"bigquant-read-palette-{token}",
            meta=np.empty((0, 0, 0), dtype=lut.dtype),
        )
    logger.debug(
        "%s: %s %s, tile %s, %s, chunks %s", path, data.shape, data.dtype, tile,
        photometric, data.chunksize,
    )
    return ImageSource(
        data=data,
        path=path,
        tile=tile,
        photometric=photometric,
        format="ome-tiff" if is_ome else "tiff",
        levels=nlevels,
        level=level,
        series=series,
    )
