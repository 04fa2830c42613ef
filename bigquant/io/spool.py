"""Decoded tiles kept on local disk by the first pass, read back by the second.

An 8-bit image is read twice by :func:`bigquant.quantize`: once to count its
colours (the histogram fit), once to label and write them.  For a JPEG (or
otherwise compressed) tiled TIFF the second read costs a second decode of every
tile, about 7 ns a pixel on one core, where reading the decoded tile back from
a raw file costs about 0.4 ns (and writing it there in the first pass 0.6 ns).

:func:`pixel_spool` gives two dask arrays over the same pixels:

- ``counting``: reads and decodes the TIFF as usual and, as a side effect,
  writes every whole tile it decodes into one raw spool file (tile ``i`` at
  ``i * tile_bytes``), marking it in a small file of one byte a tile;
  a window whose tiles are all marked already is read back raw (the grid
  fit of 16-bit data reads the pixels twice: the grid pass decodes, the
  Lloyd pass reads the spool);
- ``spooled``: reads the tiles back from that file, raw (no decode).

The pipeline fits on ``counting`` and writes from ``spooled`` only when every
tile was marked (:meth:`PixelSpool.complete`); otherwise (a fit that did not
read every tile whole, a full disk...) it writes from the source, decoding
again.  The pixels are the decoder's own, so the output is identical either way.

The command line may have started filling the spool before the pipeline
was even imported: a child process decodes a large input's tiles into a
spool of its own (:mod:`bigquant.io.ahead`, :func:`decode_ahead`, run as
``python -m bigquant.io.spool``), which :func:`pixel_spool` adopts when its
reader is the pass's; the tiles it marked are then read back, not decoded.

The spool is 3 bytes a pixel for RGB (1.07 GP: 3.2 GB): it is made only on a
local disk with room to spare (:data:`FREE_FACTOR`, :data:`FREE_MARGIN`):
beside the output, or under ``scratch``; only when every worker writes where
the client reads (:func:`bigquant.io.reach.unreachable_workers`); and it is
removed on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pathlib
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bigquant import tasks
from bigquant.errors import ImageReadError
from bigquant.io.ahead import adopt, spool_base, stop_decoding
from bigquant.io.atomic import remove_path, temp_sibling
from bigquant.io.files import is_url
from bigquant.io.tiff_read import TiffBlockReader, _register_segments, segment_reader

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["PixelSpool", "TileSpool", "pixel_spool", "spoolable", "room_for", "create_spool_files", "decode_ahead",
           "FREE_FACTOR", "FREE_MARGIN", "DATA_FILE", "MARKS_FILE"]

logger = logging.getLogger(__name__)

#: the spool is made only where at least this many times its size is free ...
FREE_FACTOR = 2
#: ... and this many bytes stay free after it
FREE_MARGIN = 2 * 2**30
#: the files of a spool directory: the tiles, and one mark a tile
DATA_FILE = "tiles.raw"
MARKS_FILE = "marks"


@dataclass(frozen=True)
class TileSpool:
    """The raw spool of one image level: where tile ``i`` is, and which tiles were written.

    Parameters
    ----------
    data : str
        Raw file; tile ``i`` (row-major over the tile grid) at byte
        ``i * tile_bytes``, as ``(rows, cols, samples)`` of the tile's extent
        within the image (edge tiles are cut, not padded).
    marks : str
        One byte a tile, non-zero once the tile is in ``data``.
    shape : tuple of int
        Image (H, W, C).
    segment : tuple of int
        Tile (rows, cols).
    dtype : numpy.dtype
        Sample type.
    """

    data: str
    marks: str
    shape: tuple[int, ...]
    segment: tuple[int, int]
    dtype: np.dtype

    @property
    def grid(self) -> tuple[int, int]:
        """Tiles down and across."""
        (h, w), (sh, sw) = self.shape[:2], self.segment
        return -(-h // sh), -(-w // sw)

    @property
    def tile_bytes(self) -> int:
        """Bytes of one whole tile."""
        sh, sw = self.segment
        return sh * sw * math.prod(self.shape[2:]) * self.dtype.itemsize  # math.prod: per tile, no numpy call

    @property
    def nbytes(self) -> int:
        """Bytes of the whole spool file."""
        ny, nx = self.grid
        return ny * nx * self.tile_bytes

    def extent(self, ty: int, tx: int) -> tuple[int, int]:
        """(rows, cols) of tile (ty, tx) within the image."""
        (h, w), (sh, sw) = self.shape[:2], self.segment
        return min(sh, h - ty * sh), min(sw, w - tx * sw)

    def complete(self) -> bool:
        """Whether every tile was written."""
        marks = np.fromfile(self.marks, dtype=np.uint8)
        ny, nx = self.grid
        return marks.shape == (ny * nx,) and bool(marks.all())


@dataclass(frozen=True)
class SpoolingReader(TiffBlockReader):
    """A :class:`TiffBlockReader` that also writes every whole tile it decodes into ``spool``.

    A tile already in the spool (marked) is read back from it instead of
    decoded: a fit that reads the pixels more than once decodes them once,
    and the tiles a child process decoded ahead (:mod:`bigquant.io.ahead`)
    are not decoded again.

    Writing is best effort: an OS error (a full disk) stops this call's
    writes and leaves its tiles unmarked, so the spool is not used.
    """

    spool: TileSpool | None = None

    def segment_windows(
        self, window: tuple[int, int, int, int], buffer: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, tuple[int, int]]]:
        spool = self.spool
        assert spool is not None
        stop_decoding(self.path)  # the marks are final once no child writes them
        marks = _marks(spool)
        if marks is None or not marks.any():
            yield from self._decoded(window, buffer)
            return
        for run, marked in _runs(spool, window, marks):
            if marked:  # whole tiles in the spool: read back raw, no decode
                yield from SpooledReader.segment_windows(self, run, buffer)  # type: ignore[arg-type]
            else:
                yield from self._decoded(run, buffer)

    def _decoded(
        self, window: tuple[int, int, int, int], buffer: np.ndarray | None
    ) -> Iterator[tuple[np.ndarray, tuple[int, int]]]:
        """The window's tiles decoded, each whole tile written into the spool and marked."""
        spool = self.spool
        assert spool is not None
        sh, sw = spool.segment
        nx, tile_bytes = spool.grid[1], spool.tile_bytes
        with contextlib.ExitStack() as stack:
            fds: tuple[int, int] | None = None
            try:
                fds = (os.open(spool.data, os.O_WRONLY), os.open(spool.marks, os.O_WRONLY))
                stack.callback(os.close, fds[0])
                stack.callback(os.close, fds[1])
            except OSError as exc:
                logger.debug("spool %s not written: %s", spool.data, exc)
            for part, (ya, xa) in super().segment_windows(window, buffer):
                if fds is not None and ya % sh == 0 and xa % sw == 0:
                    ty, tx = ya // sh, xa // sw
                    if part.shape[:2] == spool.extent(ty, tx):
                        i = ty * nx + tx
                        try:
                            os.pwrite(fds[0], np.ascontiguousarray(part, dtype=spool.dtype), i * tile_bytes)
                            os.pwrite(fds[1], b"\x01", i)
                        except OSError as exc:
                            logger.debug("spool %s: tile %d not written: %s", spool.data, i, exc)
                            fds = None
                yield part, (ya, xa)


def _marks(spool: TileSpool) -> np.ndarray | None:
    """The spool's marks, one a tile in row-major order (None when unreadable)."""
    try:
        marks = np.fromfile(spool.marks, dtype=np.uint8)
    except OSError:
        return None
    ny, nx = spool.grid
    return marks if marks.shape == (ny * nx,) else None


def _runs(
    spool: TileSpool, window: tuple[int, int, int, int], marks: np.ndarray
) -> Iterator[tuple[tuple[int, int, int, int], bool]]:
    """``window`` cut into runs of tiles along each row of tiles, all marked or all not, in row-major order.

    A marked tile is whole in the spool, so any part of it reads back raw.
    """
    y0, y1, x0, x1 = window
    sh, sw = spool.segment
    nx = spool.grid[1]
    first, last = x0 // sw, (x1 - 1) // sw
    for ty in range(y0 // sh, (y1 - 1) // sh + 1):
        ya, yb = max(y0, ty * sh), min(y1, (ty + 1) * sh)
        row = marks[ty * nx + first : ty * nx + last + 1] != 0
        start = first
        for tx in range(first + 1, last + 2):
            if tx == last + 1 or row[tx - first] != row[start - first]:
                yield (ya, yb, max(x0, start * sw), min(x1, tx * sw)), bool(row[start - first])
                start = tx


@dataclass(frozen=True)
class SpooledReader(TiffBlockReader):
    """A :class:`TiffBlockReader` whose tiles are read raw from ``spool`` (no file parsed, nothing decoded)."""

    spool: TileSpool | None = None

    def segment_windows(
        self, window: tuple[int, int, int, int], buffer: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, tuple[int, int]]]:
        spool = self.spool
        assert spool is not None
        y0, y1, x0, x1 = window
        sh, sw = spool.segment
        nx, tile_bytes = spool.grid[1], spool.tile_bytes
        spp = math.prod(spool.shape[2:])
        seg = self.segment_buffer() if buffer is None else buffer
        try:
            fh = open(spool.data, "rb", buffering=0)  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ImageReadError(f"{spool.data}: the pixel spool cannot be read: {exc}") from exc
        try:
            for ty in range(y0 // sh, (y1 - 1) // sh + 1):
                top = ty * sh
                ya, yb = max(y0, top), min(y1, top + sh)
                for tx in range(x0 // sw, (x1 - 1) // sw + 1):
                    left = tx * sw
                    xa, xb = max(x0, left), min(x1, left + sw)
                    rows, cols = spool.extent(ty, tx)
                    tile = seg[: rows * cols * spp].reshape(rows, cols, spp)
                    view = memoryview(tile.reshape(-1)).cast("B")
                    fh.seek((ty * nx + tx) * tile_bytes)
                    got = 0
                    while got < view.nbytes:
                        n = fh.readinto(view[got:])
                        if not n:
                            raise ImageReadError(f"{spool.data}: the pixel spool is truncated at tile "
                                                 f"{ty * nx + tx}")
                        got += n
                    yield tile[ya - top : yb - top, xa - left : xb - left], (ya, xa)
        finally:
            fh.close()

    def tiles_into(self, out: np.ndarray, origin: tuple[int, int],
                   windows: list[tuple[int, int, int, int]]) -> bool:
        """Copy every tile under ``windows`` (image rows and columns ``(y0, y1, x0, x1)``) into ``out``.

        ``out`` (rows, cols, samples), C-contiguous in the spool's type, holds
        the image from pixel ``origin``; each tile is copied once, whole,
        from a memory map of the spool (one copy: no read into a buffer
        first), and the rest of ``out`` is left as it is -- so a pass that
        needs an irregular region (a slanted tile's parallelogram) reads
        only the tiles under it.  Returns False, having copied nothing,
        when a tile is not inside ``out`` (the caller then reads another way).
        """
        spool = self.spool
        assert spool is not None
        sh, sw = spool.segment
        nx, tile_bytes = spool.grid[1], spool.tile_bytes
        spp = math.prod(spool.shape[2:])
        oy, ox = origin
        if (out.dtype != spool.dtype or not out.flags.c_contiguous or out.ndim != 3
                or out.shape[2] != spp):
            return False
        tiles: dict[tuple[int, int], None] = {}
        for y0, y1, x0, x1 in windows:
            if y1 > y0 and x1 > x0:
                for ty in range(y0 // sh, (y1 - 1) // sh + 1):
                    for tx in range(x0 // sw, (x1 - 1) // sw + 1):
                        rows, cols = spool.extent(ty, tx)
                        if (ty * sh < oy or tx * sw < ox or ty * sh + rows > oy + out.shape[0]
                                or tx * sw + cols > ox + out.shape[1]):
                            return False
                        tiles[ty, tx] = None
        if not tiles:
            return True
        try:
            flat = np.memmap(spool.data, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as exc:
            raise ImageReadError(f"{spool.data}: the pixel spool cannot be read: {exc}") from exc
        try:
            for ty, tx in tiles:
                rows, cols = spool.extent(ty, tx)
                start = (ty * nx + tx) * tile_bytes
                size = rows * cols * spp * spool.dtype.itemsize
                if start + size > flat.size:
                    raise ImageReadError(f"{spool.data}: the pixel spool is truncated at tile {ty * nx + tx}")
                tile = flat[start:start + size].view(spool.dtype).reshape(rows, cols, spp)
                top, left = ty * sh - oy, tx * sw - ox
                out[top:top + rows, left:left + cols] = tile
        finally:
            del flat
        return True


def spoolable(data: da.Array) -> TiffBlockReader | None:
    """The reader of ``data`` if a spool would save decoding it again, else None.

    That is a tiled TIFF level read tile by tile (:func:`bigquant.io.tiff_read.segment_reader`),
    compressed (uncompressed tiles are read in place, as cheaply as a spool),
    from a local file, with chunks on the tile grid (so that reading the
    chunks reads every tile whole).
    """
    reader = segment_reader(data)
    if reader is None or not reader.compressed or not reader.tiled or reader.segment is None:
        return None
    if type(reader) is not TiffBlockReader or is_url(reader.path) or reader.file_dtype != reader.dtype:
        return None
    sh, sw = reader.segment
    for sizes, step in ((data.chunks[0], sh), (data.chunks[1], sw)):
        if any(int(b) % step for b in np.cumsum(sizes)[:-1]):
            return None
    return reader


@dataclass(frozen=True)
class PixelSpool:
    """The two arrays of :func:`pixel_spool`: read (and spool) the source, and read the spool back."""

    counting: Any
    spooled: Any
    spool: TileSpool
    reader: TiffBlockReader | None = None  # the reader of ``spooled``

    def complete(self) -> bool:
        """Whether ``spooled`` holds every pixel (every tile was written by a read of ``counting``)."""
        try:
            return self.spool.complete()
        except OSError:
            return False

    def spooled_in(self, chunks: Any) -> da.Array:
        """``spooled`` in other ``chunks`` (any: a window cut across tiles reads them whole, raw).

        A pass that works in chunks of its own (the dither's) reads the spool
        in them directly, rather than rechunking ``spooled``.
        """
        import dask.array as da

        arr = self.spooled
        chunks = da.core.normalize_chunks(chunks, arr.shape, dtype=arr.dtype)
        if chunks == arr.chunks:
            return arr
        assert self.reader is not None
        return _array(self.reader, arr, "spooled", chunks=chunks)


def _array(reader: TiffBlockReader, like: da.Array, what: str, chunks: Any = None) -> da.Array:
    """A dask array of ``like``'s shape (and chunks, or ``chunks``) read by ``reader``, registered for tile reads."""
    import dask.array as da
    from dask.base import tokenize

    chunks = like.chunks if chunks is None else chunks
    token = tokenize(like.name, what, reader.spool, chunks)  # type: ignore[attr-defined]
    arr = da.from_array(reader, chunks=chunks, name=f"{tasks.READ}-{token}", asarray=False, fancy=False,
                        inline_array=True, meta=np.empty((0,) * like.ndim, dtype=like.dtype))
    _register_segments(arr, reader)
    return arr


@contextlib.contextmanager
def pixel_spool(data: da.Array, target: pathlib.PurePath,
                scratch: str | os.PathLike[str] | None = None) -> Iterator[PixelSpool | None]:
    """A spool of ``data``'s decoded tiles for the length of the block, removed on exit.

    Parameters
    ----------
    data : dask.array.Array
        An image read by :func:`bigquant.io.tiff_read.read_tiff`.
    target : pathlib.PurePath
        The output being written: the spool is a hidden directory beside it,
        named like the writers' temporaries (:func:`bigquant.io.atomic.temp_sibling`),
        so the next run writing ``target`` removes one a killed run left.
    scratch : str, os.PathLike or None, default=None
        A local directory for the spool instead (as for the Floyd--Steinberg
        label spool); a URL gets no spool (object storage is no cheaper than
        decoding); None: beside a local ``target``, else in the system's temp dir.

    Yields
    ------
    PixelSpool or None
        None when ``data`` is not worth spooling (:func:`spoolable`), the
        directory lacks the room (:data:`FREE_FACTOR`, :data:`FREE_MARGIN`)
        or is a URL, or a worker does not write where this process reads.
    """
    reader = spoolable(data)
    if reader is None or (scratch is not None and is_url(os.fspath(scratch))) or not hasattr(os, "pwrite"):
        yield None  # (os.pwrite: tasks write their tiles at their offsets, without a shared position)
        return
    base = spool_base(target, scratch)
    assert reader.segment is not None
    probe = TileSpool("", "", tuple(data.shape), reader.segment, np.dtype(reader.dtype))
    if not room_for(base.parent, probe.nbytes):
        yield None
        return
    # a child process may have decoded tiles ahead into a spool of its own for this output (the command line's)
    adopted = adopt(reader, base)
    directory = adopted if adopted is not None else temp_sibling(base, "spool")
    try:
        if adopted is None:
            directory.mkdir()
        from bigquant.io.reach import unreachable_workers

        unseen = unreachable_workers(directory, collections=[data])
        if unseen:
            logger.info("no pixel spool: the workers do not see %s (%s); the tiles are decoded again",
                        directory, "; ".join(sorted(set(unseen.values()))))
            yield None
            return
        if adopted is None:
            spool = create_spool_files(probe, directory)
        else:
            spool = dataclasses.replace(probe, data=str(directory / DATA_FILE), marks=str(directory / MARKS_FILE))
        fields = {f.name: getattr(reader, f.name) for f in dataclasses.fields(TiffBlockReader)}
        counting = _array(SpoolingReader(**fields, spool=spool), data, "spooling")
        raw = dict(fields, compressed=False, file_dtype=reader.dtype)
        raw_reader = SpooledReader(**raw, spool=spool)
        spooled = _array(raw_reader, data, "spooled")
        if adopted is None:
            logger.debug("pixel spool %s: %.2f GB at most", directory, spool.nbytes / 1e9)
        else:
            marks = _marks(spool)
            logger.debug("pixel spool %s: %.2f GB at most, with the tiles decoded ahead (%d of %d so far)",
                         directory, spool.nbytes / 1e9, 0 if marks is None else int(np.count_nonzero(marks)),
                         spool.grid[0] * spool.grid[1])
        yield PixelSpool(counting, spooled, spool, raw_reader)
    finally:
        if adopted is not None:
            stop_decoding(reader.path)  # nothing read the file yet: the child may still write here
        remove_path(directory)


def room_for(directory: pathlib.Path, nbytes: int) -> bool:
    """Whether ``directory`` has the room for a spool of ``nbytes`` (:data:`FREE_FACTOR`, :data:`FREE_MARGIN`)."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = 0
    if free < FREE_FACTOR * nbytes or free - nbytes < FREE_MARGIN:
        logger.info("no pixel spool: %s has %.1f GB free for %.1f GB of tiles; the tiles are decoded again",
                    directory, free / 1e9, nbytes / 1e9)
        return False
    return True


def create_spool_files(probe: TileSpool, directory: pathlib.Path) -> TileSpool:
    """``probe``'s spool in ``directory``: its files made (sparse, no tile marked)."""
    spool = dataclasses.replace(probe, data=str(directory / DATA_FILE), marks=str(directory / MARKS_FILE))
    with open(spool.data, "wb") as fh:
        fh.truncate(spool.nbytes)  # sparse: disk is taken as tiles are written
    with open(spool.marks, "wb") as fh:
        fh.truncate(spool.grid[0] * spool.grid[1])
    return spool


def decode_ahead(path: str, directory: pathlib.Path, *, level: int, series: int | None, parent: int | None) -> int:
    """Decode ``path``'s tiles into the spool files in ``directory``; returns the tiles written.

    The work of the child process of :func:`bigquant.io.ahead.decoding_ahead`:
    the tiles in row-major order, each written and then marked, until
    :data:`bigquant.io.ahead.MAX_BYTES` of them or until ``parent`` is gone
    (then the directory is removed: no process is left to adopt it).

    Nothing is written when the level is not read tile by tile from
    compressed tiles (what :func:`bigquant.io.spool.spoolable` asks), or the
    directory lacks the room a pixel spool needs.
    """
    import json

    from bigquant.io.ahead import LAYOUT_FILE, MAX_BYTES, _reader_to_json
    from bigquant.io.files import file_stamp
    from bigquant.io.tiff_read import level_reader

    stamp = file_stamp(path)
    reader = level_reader(path, level=level, series=series)
    if not (reader.compressed and reader.tiled and reader.segment is not None and reader.file_dtype == reader.dtype):
        return 0
    probe = TileSpool("", "", tuple(reader.shape), reader.segment, reader.dtype)
    if not room_for(directory, probe.nbytes):
        return 0
    spool = create_spool_files(probe, directory)
    written = directory / (LAYOUT_FILE + ".part")
    written.write_text(json.dumps({"reader": _reader_to_json(reader), "stamp": list(stamp)}))
    os.replace(written, directory / LAYOUT_FILE)
    fields = {f.name: getattr(reader, f.name) for f in dataclasses.fields(reader)}
    spooling = SpoolingReader(**fields, spool=spool)
    height, width = reader.shape[:2]
    done = n = 0
    for part, _ in spooling.segment_windows((0, height, 0, width)):
        n += 1
        done += part.nbytes
        if parent is not None and os.getppid() != parent:  # nobody will adopt the spool: no files left behind
            from bigquant.io.atomic import remove_path

            remove_path(directory)
            break
        if done >= MAX_BYTES:
            break
    return n


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bigquant.io.spool PATH DIRECTORY LEVEL SERIES PARENT``: :func:`decode_ahead`, in a child process."""
    path, directory, level, series, parent = list(sys.argv[1:] if argv is None else argv)
    with contextlib.suppress(OSError):
        os.nice(5)  # the parent's threads come first once the pass runs
    try:
        decode_ahead(path, pathlib.Path(directory), level=int(level), series=int(series) if series else None,
                     parent=int(parent) if parent else None)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover - the child process of bigquant.io.ahead
    sys.exit(main())
