"""Dithering of images of any size on Dask: exact tile-parallel Floyd--Steinberg, blue-noise ordered.

Floyd--Steinberg (the rule: :mod:`bigquant.kernels.dither`) runs in two passes.

1. **Errors, over slanted tiles.**  Band ``I`` is the chunk row of the pixels
   (rows ``[I H, I H + h)``); in it, slanted tile ``J`` holds, at row ``r`` of
   the band, the columns ``[J W - r, (J + 1) W - r)`` -- each tile edge one
   pixel further left per row (band height ``H <= W``, the chunk width).
   Every pixel's four pulled neighbours then lie in the same tile, in tile
   ``(I, J - 1)`` (its last two pixels of each row), or in the last row of band
   ``I - 1`` (tiles ``J - 1 .. J + 1``): the tiles form a DAG with wavefront
   ``2 I + J`` (Metaxas 2003), and only those edge errors cross tasks.  Each
   tile keeps (for pass 2) just its last row and the errors of the columns on
   either side of every chunk boundary -- about ``W + 2 H`` error vectors per
   tile; its labels are dropped.
2. **Labels, per rectangular chunk.**  With a *spool* (a directory every
   worker can write and read, :func:`label_spool`; :func:`bigquant.quantize`
   makes one beside its output), each slanted tile of pass 1 also saves its
   labels there, and a rectangular chunk is put together from the two tiles
   it overlaps: no pixel is read or diffused twice.  Pass 1 is then not
   waited for: on this process's threads it runs in a background thread
   that posts each tile on a board (:class:`_Board`) the chunks wait on; on
   a distributed client its futures run on while the chunks wait for theirs.
   So a chunk is put together (and encoded, written) as soon as its two
   tiles are done, while later bands still diffuse.  A tile the spool
   cannot take (a full disk) hands its labels on in memory.  Without one (or when a
   worker cannot write it, e.g. on another machine), a chunk whose left
   column, right neighbour column and top row of errors are known is dithered
   again on its own in raster order, with the same per-pixel step, so it
   reproduces the serial result exactly.  Either way pass 2 is a lazy dask
   array of labels chunked like the pixels, which the writers stream band by
   band as any other labels.

Chunks are at most :data:`DITHER_CHUNK` (1024) a side, with ``H <= W``.
Memory: pass 1 holds the edges kept for pass 2 (errors are int16 for 8-bit
pixels, int32 for 16-bit: :func:`bigquant.kernels.dither.error_dtype`; about
``(W + 2 H) C`` values per tile: ~20 MB for a 1 GP 8-bit RGB image --
proportional to the pixels over the chunk edge, not to the width alone) plus
the tiles in flight (an error buffer of about ``2 H W C`` values each, 12.5 MB
for 8-bit RGB); pass 2 is an ordinary
blockwise computation.  Without a spool the cost is one extra read of the
pixels and one extra diffusion per pixel; with one, a write and a read of
the labels (one byte a pixel for up to 256 colours) on local disk.

Blue-noise ordered dithering adds a tiled void-and-cluster threshold mask
(:func:`blue_noise_mask`) to every pixel before the nearest colour: one
``map_blocks``, no dependency between chunks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, Literal

import dask
import dask.array as da
import dask.local
import dask.threaded
import numpy as np
from dask.callbacks import Callback
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.system import CPU_COUNT

from bigquant import tasks
from bigquant.errors import InputTypeError, InvalidParameterError
from bigquant.io.atomic import remove_path, temp_sibling
from bigquant.io.compute import current_scheduler
from bigquant.io.files import is_url
from bigquant.io.objects import URLPath, output_location, remove_url
from bigquant.io.reach import unreachable_workers
from bigquant.io.tiff_read import TiffBlockReader, segment_reader
from bigquant.kernels.dither import (
    UNITS,
    candidate_grid,
    error_dtype,
    fs_rows,
    ordered_dither,
    strength_q,
    unskew_labels,
)

__all__ = ["DITHER_CHUNK", "DITHERS", "blue_noise_mask", "check_dither", "dither_labels", "label_spool"]

logger = logging.getLogger(__name__)

#: the ``dither`` values :func:`dither_labels` (and :func:`bigquant.quantize`) take
DITHERS = (None, "floyd-steinberg", "blue-noise")

Segment = tuple[int, int, int, int, np.ndarray]  # (y, x, dy, dx, errors (n, C)): points y + i dy, x + i dx


def check_dither(dither: Any, strength: Any) -> tuple[str | None, float]:
    """Validate ``dither`` and ``dither_strength``; return them normalised.

    Raises
    ------
    InvalidParameterError
        ``dither`` is not one of :data:`DITHERS`, or the strength is not a
        number in [0, 1].
    """
    if isinstance(dither, str):
        dither = dither.lower().replace("_", "-")
        dither = {"fs": "floyd-steinberg", "none": None}.get(dither, dither)
    if dither is False:
        dither = None
    if dither not in DITHERS:
        raise InvalidParameterError(
            f"dither={dither!r} must be one of None, 'floyd-steinberg', 'blue-noise'"
        )
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.integer, np.floating)) or not (
        0.0 <= float(strength) <= 1.0
    ):
        raise InvalidParameterError(f"dither_strength={strength!r} must be a number in [0, 1]")
    return dither, float(strength)


def _max_value(dtype: np.dtype) -> int:
    if dtype not in (np.uint8, np.uint16):
        raise InputTypeError(f"dithering needs uint8 or uint16 pixels, not {dtype}")
    return int(np.iinfo(dtype).max)


# --------------------------------------------------------------------------- segments


def _line(errors: np.ndarray, origin: tuple[int, int], y: int, x: int, dy: int, dx: int,
          n: int) -> tuple[int, np.ndarray | None]:
    """The points ``i`` of a segment inside ``errors`` ([0, 0] at ``origin``): (first i, a view of them) or (0, None).

    Segments are rows, columns and anti-diagonals (``dy`` 0 or 1, ``dx`` -1,
    0 or 1, not both 0): their points inside the buffer are consecutive,
    and a strided view of the flattened buffer, so no index arrays are made.
    """
    he, we = errors.shape[:2]
    lo, hi = 0, n
    for p, d, size in ((y - origin[0], dy, he), (x - origin[1], dx, we)):
        if d == 0:
            if not 0 <= p < size:
                return 0, None
        elif d == 1:  # p + i in [0, size)
            lo, hi = max(lo, -p), min(hi, size - p)
        else:  # p - i in [0, size)
            lo, hi = max(lo, p - size + 1), min(hi, p + 1)
    if lo >= hi:
        return 0, None
    flat = errors.reshape(he * we, *errors.shape[2:])
    step = dy * we + dx
    start = (y - origin[0] + dy * lo) * we + (x - origin[1] + dx * lo)
    return lo, flat[start: start + step * (hi - lo - 1) + 1: step]


def _paste(errors: np.ndarray, origin: tuple[int, int], segments: list[Segment]) -> None:
    """Copy the points of ``segments`` that fall inside ``errors`` (element [0, 0] at ``origin``)."""
    for y, x, dy, dx, vals in segments:
        lo, view = _line(errors, origin, y, x, dy, dx, len(vals))
        if view is not None:
            view[...] = vals[lo:lo + len(view)]


def _take(errors: np.ndarray, origin: tuple[int, int], y: int, x: int, dy: int, dx: int, n: int) -> Segment:
    """The segment of ``n`` points from (y, x) in steps (dy, dx), every point inside ``errors``."""
    lo, view = _line(errors, origin, y, x, dy, dx, n)
    assert view is not None and lo == 0 and len(view) == n
    return (y, x, dy, dx, view.copy())


# --------------------------------------------------------------------------- pass 1


def _error_buffer(shape: tuple[int, int, int], dtype: np.dtype, first: np.ndarray, past: int) -> np.ndarray:
    """A slanted tile's error buffer, zero wherever it is read before it is written -- and only there.

    Zeroing the whole buffer (about 12 MB for a 1024-px 8-bit RGB tile)
    cost more than any other step around the kernel.  Row ``r + 1`` holds
    tile row ``r``, whose pixels are buffer columns ``first[r]`` on; the
    kernel and the edges taken afterwards read, besides what the tile
    writes, row 0 (the band above's last row), the two columns left of
    each row (the left tile's last two, or outside the image) and the
    column ``past`` the image's last one.  Those are zeroed here (before the
    neighbours' edges are pasted); the rest is written before it is read.
    """
    errors = np.empty(shape, dtype=dtype)
    errors[0] = 0
    rows = np.arange(1, shape[0])
    errors[rows, first - 1] = 0
    errors[rows, first - 2] = 0
    if past < shape[1]:
        errors[:, past] = 0
    return errors



def _slanted_tile(
    left_block: np.ndarray | None,
    block: np.ndarray | None,
    left_valid: np.ndarray | None,
    valid: np.ndarray | None,
    left: tuple[list[Segment], list[Segment]] | None,
    above: list[tuple[list[Segment], list[Segment]] | None],
    geometry: tuple[int, int, int, int, int, int],
    boundaries: tuple[int, ...],
    q: int,
    colours: np.ndarray,
    grid: Any,
    with_sums: bool = False,
    spool: tuple[str, int, Any] | None = None,
) -> tuple[list[Segment], tuple[list[Segment], np.ndarray | None, bool | np.ndarray]]:
    """Errors of slanted tile (I, J); returns (segments for the next tiles, (segments for pass 2, sums, spooled)).

    ``sums`` (with ``with_sums``) are the tile's :func:`bigquant.kernels.spaces.error_sums`.
    With ``spool`` = (directory, label for masked pixels, label dtype) the
    tile's labels are saved there (:func:`_spool_tile`) and ``spooled`` is
    True -- or, when that failed (a full disk), the packed labels
    themselves, which pass 2 then takes from memory; pass 2 needs no edge
    segments then (an empty list).  Without a spool, ``spooled`` is False.

    ``geometry`` is (y0, h, J, W, image height, image width); the pixels are
    chunks ``J - 1`` and ``J`` of the band (either may be None at the image's
    edges), whose columns start at ``(J - 1) W`` -- or one window over both,
    passed as ``left_block`` (``block`` for J = 0).
    """
    y0, h, j, width_t, _, width = geometry
    parts = [b for b in (left_block, block) if b is not None]
    pixels = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    px0 = (j - 1) * width_t if left_block is not None else j * width_t
    vparts = [v for v, b in ((left_valid, left_block), (valid, block)) if b is not None and v is not None]
    mask = None
    if vparts:
        mask = vparts[0] if len(vparts) == 1 else np.concatenate(vparts, axis=1)
    n_ch = pixels.shape[2]
    ex0 = j * width_t - h - 1
    origin = (y0 - 1, ex0)
    r = np.arange(h)
    xa = np.clip(j * width_t - r, 0, width)
    xb = np.clip((j + 1) * width_t - r, 0, width)
    xb = np.maximum(xa, xb)
    errors = _error_buffer((h + 1, (j + 1) * width_t + 2 - ex0, n_ch), error_dtype(pixels.dtype), xa - ex0,
                           width - ex0)
    for link in above:
        if link is not None:
            _paste(errors, origin, link[0])
    if left is not None:
        _paste(errors, origin, left[0])
    # the labels packed as (h, W), row r from column J W - r on (out_skew): as the spool keeps them
    out = np.zeros((h, width_t), dtype=spool[2]) if spool is not None else None
    masked_label = 0 if spool is None else spool[1]
    # the quality sums come with the dither (the pixel and its label at hand), not from a pass of their own
    sums = np.zeros(3) if with_sums else None
    fs_rows(pixels, (y0, px0), mask, errors, origin, out, (y0, j * width_t), y0, xa, xb, q, colours, grid,
            masked_label, sums=sums, out_skew=1)
    spooled: bool | np.ndarray = False
    if spool is not None:
        assert out is not None
        spooled = _spool_tile(spool, out, geometry)
    bottom_x = j * width_t - (h - 1)
    bottom = _take(errors, origin, y0 + h - 1, bottom_x, 0, 1, width_t)
    links = [
        bottom,
        _take(errors, origin, y0, (j + 1) * width_t - 2, 1, -1, h),
        _take(errors, origin, y0, (j + 1) * width_t - 1, 1, -1, h),
    ]
    kept = [bottom] if spool is None else []
    for p in boundaries if spool is None else ():
        r_lo, r_hi = max(0, j * width_t - p), min(h, (j + 1) * width_t - p)
        if r_lo < r_hi:
            kept.append(_take(errors, origin, y0 + r_lo, p, 1, 0, r_hi - r_lo))
    return links, (kept, sums, spooled)


# --------------------------------------------------------------------------- the label spool


def _spool_file(directory: str, y0: int, j: int) -> str:
    """The file of slanted tile ``j`` of the band starting at row ``y0`` (an object under a URL prefix)."""
    return os.path.join(directory, f"{y0}-{j}.npy")


def _save_labels(path: str, labels: np.ndarray) -> None:
    """``np.save`` to a local file, or to an object at a URL (one request)."""
    if not is_url(path):
        np.save(path, labels)
        return
    import io

    import fsspec

    buffer = io.BytesIO()
    np.save(buffer, labels)
    fs, key = fsspec.core.url_to_fs(path)
    fs.pipe_file(key, buffer.getvalue())


def _load_labels(path: str) -> np.ndarray:
    """What :func:`_save_labels` saved (a local file mapped, an object read whole)."""
    if not is_url(path):
        return np.load(path, mmap_mode="r")
    import io

    import fsspec

    fs, key = fsspec.core.url_to_fs(path)
    return np.load(io.BytesIO(fs.cat_file(key)))


def _spool_tile(spool: tuple[str, int, Any], labels: np.ndarray,
                geometry: tuple[int, int, int, int, int, int]) -> bool | np.ndarray:
    """Save the labels of slanted tile (I, J), packed as (h, W): row r holds columns ``J W - r + c``.

    Masked pixels already carry the spool's masked label.  Returns True, or
    the labels when the directory cannot be written (a full disk): pass 2
    then takes them from memory.
    """
    directory = spool[0]
    y0, _, j = geometry[:3]
    try:
        _save_labels(_spool_file(directory, y0, j), labels)
    except Exception as exc:  # noqa: BLE001 - OS errors, and an object store's of every kind
        logger.warning("dither: tile %d of band %d not spooled (%s): its labels wait in memory", j, y0, exc)
        return labels
    return True


# --------------------------------------------------------------------------- pass 2


def _rect_chunk(
    block: np.ndarray,
    valid: np.ndarray | None,
    edges: list[tuple[list[Segment], list[Segment]] | list[Segment] | None],
    window: tuple[int, int, int, int],
    q: int,
    colours: np.ndarray,
    grid: Any,
    dtype: np.dtype,
    masked_label: int = 0,
) -> np.ndarray:
    """Labels of one rectangular chunk, given the edge errors kept by pass 1 around it."""
    y0, y1, x0, x1 = window
    errors = np.zeros((y1 - y0 + 1, x1 - x0 + 2, block.shape[2]), dtype=error_dtype(block.dtype))
    origin = (y0 - 1, x0 - 1)
    for kept in edges:
        if kept is not None:
            _paste(errors, origin, kept[0])
    out = np.empty((y1 - y0, x1 - x0), dtype=dtype)
    h = y1 - y0
    fs_rows(np.ascontiguousarray(block), (y0, x0), None if valid is None else np.ascontiguousarray(valid),
            errors, origin, out, (y0, x0), y0, np.full(h, x0), np.full(h, x1), q, colours, grid, masked_label)
    return out


def _spooled_chunk(directory: str, y0: int, j: int, n_tiles: int, window: tuple[int, int, int, int],
                   width_t: int, dtype: np.dtype, *tiles: Any) -> np.ndarray:
    """Labels of one rectangular chunk, put together from the spooled slanted tiles ``j`` and ``j + 1``.

    ``tiles`` are what pass 1 returned for those tiles (its ``kept`` of
    :func:`_slanted_tile`; None past the image): a tile whose labels could
    not be spooled carries them.

    Row ``r`` of the chunk, column ``x``, is column ``x + r - J' W`` of row
    ``r`` of tile ``J' = (x + r) // W`` (see :func:`_spool_tile`): with the two
    tiles side by side, column ``x - J W + r`` of their row
    (:func:`bigquant.kernels.dither.unskew_labels`, one pass).
    """
    x0, x1 = window[2:]
    parts: list[np.ndarray | None] = []
    for side, jj in enumerate((j, j + 1)):
        held = tiles[side][2] if side < len(tiles) and tiles[side] is not None else True
        parts.append(None if jj >= n_tiles else
                     np.asarray(_load_labels(_spool_file(directory, y0, jj))) if held is True else held)
    assert parts[0] is not None
    return unskew_labels(parts[0], parts[1], x0 - j * width_t, x1 - x0).astype(dtype, copy=False)


#: largest chunk edge the dither works in (its error buffers grow as the square of it)
DITHER_CHUNK = 1024


def _candidate_grid(colours: np.ndarray, max_value: int) -> Delayed:
    """The palette's candidate grid (:func:`bigquant.kernels.dither.candidate_grid`) as one named task."""
    key = f"{tasks.DITHER_GRID}-{dask.base.tokenize(colours, max_value)}"
    return dask.delayed(candidate_grid, pure=True)(colours, max_value, dask_key_name=key)


def _regular(data: da.Array, valid: da.Array | None) -> tuple[da.Array, da.Array | None]:
    """Pixels (and mask) in regular chunks of H rows and W >= H columns, one chunk of channels."""
    # bands no higher than the image is wide: a chunk narrower than its band would leave slanted tiles past the image
    rows = min(data.chunks[0][0], DITHER_CHUNK, data.shape[1])
    cols = max(min(data.chunks[1][0], DITHER_CHUNK), rows)
    data = data.rechunk((rows, cols, -1))
    if valid is not None:
        valid = valid.rechunk(data.chunks[:2])
    return data, valid


class _Pass1:
    """Pass 1 as it runs: its quality sums once done (:meth:`result`); :meth:`cancel` stops it."""

    def result(self) -> np.ndarray | None:
        """The quality sums over every tile (None without them), once every tile is done."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop what is left of the pass (after a failed write)."""


class _Done(_Pass1):
    """A pass already waited for."""

    def __init__(self, sums: np.ndarray | None):
        self._sums = sums

    def result(self) -> np.ndarray | None:
        return self._sums


class _Persisted(_Pass1):
    """A pass persisted on the scheduler (futures on a distributed client: it runs meanwhile)."""

    def __init__(self, persisted: list[Any], token: str, scheduler: Any = None):
        self._persisted, self._token, self._scheduler = persisted, token, scheduler

    def result(self) -> np.ndarray | None:
        (outcome,) = dask.compute(dask.delayed(_outcome, pure=True)(
            list(self._persisted), dask_key_name=f"{tasks.FS_OUTCOME}-{self._token}"), scheduler=self._scheduler)
        return outcome[0]


class _Cancelled(Exception):
    """Pass 1 was stopped (:meth:`_Board.cancel`)."""


class _Board(_Pass1):
    """Pass 1 run on this process's threads in the background, each tile's result posted as it is done.

    The chunks of pass 2 wait here for their two slanted tiles (:meth:`wait`),
    so the labels are assembled and written while the later bands still
    diffuse.  No deadlock: the pass runs in its own thread and pool, and
    waits for nobody.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._kept: dict[tuple[int, int], Any] = {}
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread: threading.Thread | None = None

    def start(self, scheduler: Any, graph: Any, keys: list[Any]) -> None:
        # as many threads as cores (a pool made for another thread would get the executor's default, more)
        kwargs: dict[str, Any] = {"num_workers": dask.config.get("num_workers", None) or CPU_COUNT} \
            if scheduler is dask.threaded.get else {}
        # dask's global callbacks (progress bars...), passed explicitly: a scheduler otherwise takes them
        # for itself while it runs, and the computes of the labels meanwhile would not see them
        kwargs["callbacks"] = list(Callback.active)

        def run() -> None:
            try:
                scheduler(graph, keys, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()

        self._thread = threading.Thread(target=run, name="bigquant-dither", daemon=True)
        self._thread.start()

    def post(self, tile: tuple[int, int], pair: tuple[Any, Any]) -> None:
        """Keep what pass 2 needs of ``tile`` (its ``kept``) and wake its waiters."""
        with self._cond:
            if self._cancelled:
                raise _Cancelled
            self._kept[tile] = pair[1]
            self._cond.notify_all()

    def wait(self, tile: tuple[int, int]) -> Any:
        """The ``kept`` of ``tile``, once done."""
        with self._cond:
            while tile not in self._kept:
                if self._error is not None:
                    raise self._error
                self._cond.wait()
            return self._kept[tile]

    def result(self) -> np.ndarray | None:
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
        return _outcome([self._kept[tile] for tile in sorted(self._kept)])[0]  # in the graph's order, as persisted

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
        if self._thread is not None:
            self._thread.join()


def _posted_tile(board: _Board, tile: tuple[int, int], *args: Any) -> tuple[Any, Any]:
    """:func:`_slanted_tile`, its result posted on ``board`` as soon as it is done.

    In the tile's own task: a task of its own would run when the scheduler
    gets to it -- a cheap leaf of the graph, often only at the end of the
    pass, which then kept every chunk waiting and put the whole write after
    the diffusion.
    """
    pair = _slanted_tile(*args)
    board.post(tile, pair)
    return pair


def _posted_chunk(board: _Board, i: int, j: int, n_tiles: int, *args: Any) -> np.ndarray:
    """:func:`_spooled_chunk` of chunk (i, j), once its slanted tiles ``j``, ``j + 1`` are posted on ``board``."""
    tiles = [board.wait((i, jj)) if jj < n_tiles else None for jj in (j, j + 1)]
    return _spooled_chunk(*args, *tiles)


def _window_reader(data: da.Array) -> TiffBlockReader | None:
    """The reader of ``data`` if any window of it is read in place, cheaply (raw, local), else None."""
    reader = segment_reader(data)
    if reader is None or reader.compressed or is_url(reader.path) or reader.ndim != 3 or data.ndim != 3:
        return None
    return reader


def _window(reader: TiffBlockReader, y0: int, y1: int, x0: int, x1: int, j: int, width_t: int) -> np.ndarray:
    """The pixels of slanted tile ``j`` of the band of rows ``[y0, y1)``, in a window of columns ``[x0, x1)``.

    From a pixel spool only the tiles under the parallelogram (row ``r``:
    columns ``[j W - r, (j + 1) W - r)``) are read, each tile band of rows
    for the columns of its own rows (about 3/4 of the window); the window's
    other pixels are left unset, as the tile reads none of them.  From any
    other reader, the whole window.
    """
    tiles_into = getattr(reader, "tiles_into", None)
    if tiles_into is not None and reader.segment is not None:
        width = reader.shape[1]
        sh = reader.segment[0]
        out = np.empty((y1 - y0, x1 - x0) + tuple(reader.shape[2:]), dtype=reader.dtype)
        spans = []
        for lo, hi in _row_bands(y0, y1, sh):
            # rows lo .. hi - 1: the columns of row hi - 1's start to row lo's end
            spans.append((lo, hi, max(0, j * width_t - (hi - 1 - y0)), min(width, (j + 1) * width_t - (lo - y0))))
        if tiles_into(out, (y0, x0), spans):
            return out
    return reader[y0:y1, x0:x1]


def _row_bands(y0: int, y1: int, step: int) -> list[tuple[int, int]]:
    """Rows ``[y0, y1)`` cut at the multiples of ``step``."""
    cuts = [y0, *range((y0 // step + 1) * step, y1, step), y1]
    return list(zip(cuts[:-1], cuts[1:]))


def _in_this_process(collections: list[Any]) -> Any:
    """The scheduler of ``collections`` if it runs tasks on this process's threads, else None."""
    scheduler = current_scheduler(collections)
    return scheduler if scheduler in (dask.threaded.get, dask.local.get_sync) else None


def _floyd_steinberg(
    data: da.Array, colours: np.ndarray, valid: da.Array | None, q: int, dtype: np.dtype, with_sums: bool,
    masked_label: int, spool: pathlib.PurePath | None,
) -> tuple[da.Array, _Pass1]:
    data, valid = _regular(data, valid)
    height, width = data.shape[:2]
    band_h, tile_w = data.chunks[0][0], data.chunks[1][0]
    n_bands, n_cols = data.numblocks[:2]
    if spool is not None and not is_url(str(spool)) and not os.path.isdir(spool):
        logger.info("dither pass 2: the spool %s is not shared by every worker; dithering again", spool)
        spool = None
    # the scheduler named: dask would otherwise import distributed (0.2 s) to look for a client
    scheduler = current_scheduler([data])
    (grid,) = dask.persist(_candidate_grid(colours, _max_value(data.dtype)), scheduler=scheduler)
    grid_key = grid.key
    boundaries = tuple(p for c in range(1, n_cols) for p in (c * tile_w - 1, c * tile_w))
    token = dask.base.tokenize(data.name, None if valid is None else valid.name, colours, q, masked_label,
                               None if spool is None else str(spool))
    spool_args = None if spool is None else (str(spool), int(masked_label), dtype)
    # pixels read in place (raw: uncompressed, or the fit's pixel spool): each tile reads its own window, so
    # no chunk of pixels travels between workers (nor is concatenated) for the two tiles over it
    windows = _window_reader(data) if valid is None else None
    here = _in_this_process([data]) if spool is not None else None
    board = _Board() if here is not None else None
    tile_name = f"{tasks.FS_SLANT}-{token}"
    kept_name = f"{tasks.FS_EDGES}-{token}"
    dsk: dict[Any, Any] = {}
    n_tiles = []
    for i in range(n_bands):
        y0 = i * band_h
        h = data.chunks[0][i]
        n_j = (width - 1 + h - 1) // tile_w + 1
        n_tiles.append(n_j)
        for j in range(n_j):
            def block(name: str | None, col: int, *, extra: tuple[int, ...] = ()) -> Any:
                if name is None or not 0 <= col < n_cols:
                    return None
                return (name, i, col) + extra
            left = (tile_name, i, j - 1) if j > 0 else None
            above = [
                (tile_name, i - 1, jj) if i > 0 and 0 <= jj < n_tiles[i - 1] else None
                for jj in (j - 1, j, j + 1)
            ]
            vname = None if valid is None else valid.name
            if windows is not None:  # one window over both chunks, as the left one (px0 (J - 1) W) or chunk 0
                window = (_window, windows, y0, y0 + h, max(0, (j - 1) * tile_w), min(width, (j + 1) * tile_w), j,
                          tile_w)
                pixels = (window, None) if j > 0 else (None, window)
            else:
                pixels = (block(data.name, j - 1, extra=(0,)), block(data.name, j, extra=(0,)))
            dsk[(tile_name, i, j)] = (
                *((_slanted_tile,) if board is None else (_posted_tile, board, (i, j))),
                *pixels,
                block(vname, j - 1), block(vname, j),
                left, above,
                (y0, h, j, tile_w, height, width), boundaries, q, colours, grid_key, with_sums, spool_args,
            )
            # only the part pass 2 needs outlives the pass (and is posted on the board by the tile, if any)
            dsk[(kept_name, i, j)] = (_second, (tile_name, i, j))
    # (not the pixels' graph when the tiles read their windows: an unculled graph would read them too)
    deps: list[Any] = ([data] if windows is None else []) + [grid] + ([valid] if valid is not None else [])
    graph = HighLevelGraph.from_collections(tile_name, dsk, dependencies=deps)
    kept_keys = [(kept_name, i, j) for i in range(n_bands) for j in range(n_tiles[i])]
    logger.info("dither pass 1: %d slanted tiles of %dx%d over %d bands", len(kept_keys), band_h, tile_w, n_bands)

    label_name = f"{tasks.FS_LABELS}-{token}"
    ldsk: dict[Any, Any] = {}
    ys = np.cumsum((0,) + data.chunks[0])
    xs = np.cumsum((0,) + data.chunks[1])
    if spool is not None:
        # every tile saves its labels (in the spool, or in memory when that fails): no second diffusion,
        # and each chunk is put together as soon as its two tiles are done, while later bands diffuse
        logger.info("dither pass 2: labels from the spool %s", spool)

        def spooled_args(i: int, j: int) -> tuple[Any, ...]:
            return (str(spool), int(ys[i]), j, n_tiles[i], (int(ys[i]), int(ys[i + 1]), int(xs[j]), int(xs[j + 1])),
                    tile_w, dtype)

        if board is not None:
            board.start(here, graph, kept_keys)
            for i in range(n_bands):
                for j in range(n_cols):
                    ldsk[(label_name, i, j)] = (_posted_chunk, board, i, j, n_tiles[i], *spooled_args(i, j))
            spool_graph = HighLevelGraph.from_collections(label_name, ldsk, dependencies=[])
            return da.Array(spool_graph, label_name, chunks=data.chunks[:2], dtype=dtype), board
        # on a distributed client the pass runs on as futures, and the chunks wait for theirs
        persisted = dask.persist(*[Delayed(k, graph, layer=tile_name) for k in kept_keys], optimize_graph=False,
                                 scheduler=scheduler)
        kept_of = dict(zip(kept_keys, persisted))
        for i in range(n_bands):
            for j in range(n_cols):
                tiles = [kept_of[(kept_name, i, jj)].key if jj < n_tiles[i] else None for jj in (j, j + 1)]
                ldsk[(label_name, i, j)] = (_spooled_chunk, *spooled_args(i, j), *tiles)
        spool_graph = HighLevelGraph.from_collections(label_name, ldsk, dependencies=list(persisted))
        return (da.Array(spool_graph, label_name, chunks=data.chunks[:2], dtype=dtype),
                _Persisted(list(persisted), token, scheduler))
    persisted = dask.persist(*[Delayed(k, graph, layer=tile_name) for k in kept_keys], optimize_graph=False,
                             scheduler=scheduler)
    kept_of = dict(zip(kept_keys, persisted))
    sums = _Persisted(list(persisted), token, scheduler).result() if with_sums else None
    for i in range(n_bands):
        for j in range(n_cols):
            edges = []
            for ii in (i - 1, i):
                if ii < 0:
                    continue
                for jj in (j - 1, j, j + 1):
                    if 0 <= jj < n_tiles[ii]:
                        edges.append(kept_of[(kept_name, ii, jj)].key)
            ldsk[(label_name, i, j)] = (
                _rect_chunk,
                (data.name, i, j, 0),
                None if valid is None else (valid.name, i, j),
                edges,
                (int(ys[i]), int(ys[i + 1]), int(xs[j]), int(xs[j + 1])),
                q, colours, grid_key, dtype, masked_label,
            )
    ldeps: list[Any] = [data, grid, *persisted] + ([valid] if valid is not None else [])
    lgraph = HighLevelGraph.from_collections(label_name, ldsk, dependencies=ldeps)
    return da.Array(lgraph, label_name, chunks=data.chunks[:2], dtype=dtype), _Done(sums)


def _outcome(kept: list[tuple[Any, np.ndarray | None, Any]]) -> tuple[np.ndarray | None, bool]:
    """The quality sums over every tile (None without them) and whether every tile was spooled."""
    sums = [k[1] for k in kept if k[1] is not None]
    return (np.sum(sums, axis=0) if sums else None), all(k[2] is True for k in kept)


def _second(pair: tuple[Any, Any]) -> Any:
    return pair[1]


# --------------------------------------------------------------------------- blue noise

_MASKS: dict[tuple[int, int], np.ndarray] = {}


def blue_noise_mask(size: int = 64, seed: int = 0) -> np.ndarray:
    """A tileable blue-noise threshold mask (void-and-cluster, Ulichney 1993).

    Parameters
    ----------
    size : int, default=64
        Edge of the square mask; it tiles the plane seamlessly (the filter
        wraps around).
    seed : int, default=0
        Seed of the initial random pattern; the same arguments give the same mask.

    Returns
    -------
    ranks : ndarray of shape (size, size), int64
        Every rank ``0 .. size**2 - 1`` once; thresholds are ``(rank + 0.5) / size**2``.

    Examples
    --------
    >>> m = blue_noise_mask(16)
    >>> sorted(m.ravel().tolist()) == list(range(256))
    True
    """
    key = (int(size), int(seed))
    if key in _MASKS:
        return _MASKS[key].copy()
    n = int(size)
    total = n * n
    sigma = 1.5
    d = np.minimum(np.arange(n), n - np.arange(n)).astype(np.float64)
    kernel = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma * sigma))
    kf = np.fft.rfft2(kernel)

    def energy(pattern: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(np.fft.rfft2(pattern) * kf, s=(n, n))

    def roll(y: int, x: int) -> np.ndarray:
        return np.roll(np.roll(kernel, y, axis=0), x, axis=1)

    rng = np.random.default_rng(seed)
    pattern = np.zeros((n, n))
    pattern.ravel()[rng.choice(total, max(1, total // 10), replace=False)] = 1.0
    # phase 0: spread the initial points (swap the tightest cluster with the largest void)
    e = energy(pattern)
    for _ in range(total):
        cluster = int(np.argmax(np.where(pattern > 0, e, -np.inf)))
        pattern.ravel()[cluster] = 0.0
        e -= roll(*divmod(cluster, n))
        void = int(np.argmin(np.where(pattern > 0, np.inf, e)))
        if void == cluster:
            pattern.ravel()[cluster] = 1.0
            e += roll(*divmod(cluster, n))
            break
        pattern.ravel()[void] = 1.0
        e += roll(*divmod(void, n))
    ranks = np.zeros(total, dtype=np.int64)
    ones = int(pattern.sum())
    # phase 1: remove the tightest clusters, ranks ones-1 .. 0
    work, ew = pattern.copy(), e.copy()
    for rank in range(ones - 1, -1, -1):
        cluster = int(np.argmax(np.where(work > 0, ew, -np.inf)))
        work.ravel()[cluster] = 0.0
        ew -= roll(*divmod(cluster, n))
        ranks[cluster] = rank
    # phase 2: fill the largest voids, ranks ones .. total-1
    for rank in range(ones, total):
        void = int(np.argmin(np.where(pattern > 0, np.inf, e)))
        pattern.ravel()[void] = 1.0
        e += roll(*divmod(void, n))
        ranks[void] = rank
    out = ranks.reshape(n, n)
    _MASKS[key] = out
    return out.copy()


def _palette_spacing(colours: np.ndarray) -> np.ndarray:
    """Per-channel noise amplitude (units): the median distance from a colour to its nearest other colour."""
    c = np.asarray(colours, dtype=np.float64)
    if len(c) < 2:
        return np.zeros(c.shape[1], dtype=np.int64)
    d = np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    spacing = float(np.median(d.min(axis=1)))
    return np.full(c.shape[1], int(round(spacing * UNITS)), dtype=np.int64)


def _blue_noise_block(
    block: np.ndarray,
    thresholds: np.ndarray,
    amplitude: np.ndarray,
    colours: np.ndarray,
    grid: Any,
    dtype: np.dtype,
    block_info: dict | None = None,
) -> np.ndarray:
    loc = block_info[0]["array-location"] if block_info else [(0, 0), (0, 0)]
    labels = ordered_dither(block, (loc[0][0], loc[1][0]), thresholds, amplitude, colours, grid)
    return labels.astype(dtype)


def _blue_noise(data: da.Array, colours: np.ndarray, strength: float, dtype: np.dtype) -> da.Array:
    ranks = blue_noise_mask()
    total = ranks.size
    # signed thresholds in (-32768, 32768): (rank + 0.5) / total - 0.5, scaled by 65536
    thresholds = ((2 * ranks + 1) * 32768) // total - 32768
    amplitude = (_palette_spacing(colours) * strength_q(strength)) // 256
    grid = _candidate_grid(colours, _max_value(data.dtype))
    if data.numblocks[2] != 1:
        data = data.rechunk({2: -1})
    return data.map_blocks(
        _blue_noise_block, thresholds, amplitude, colours, grid, dtype,
        drop_axis=2, dtype=dtype, token=tasks.BLUE_NOISE,
    )


# --------------------------------------------------------------------------- public


def dither_labels(
    data: da.Array,
    colours: np.ndarray,
    *,
    method: Literal["floyd-steinberg", "blue-noise"] = "floyd-steinberg",
    strength: float = 1.0,
    valid: da.Array | None = None,
    dtype: Any = np.uint8,
    with_sums: bool = False,
    masked_label: int = 0,
    spool: pathlib.PurePath | None = None,
    wait: bool = True,
) -> Any:
    """Palette labels of a dithered image, as a lazy dask array chunked like ``data``.

    Parameters
    ----------
    data : dask array of shape (H, W, C), uint8 or uint16
        The pixels; C must equal the palette's channels.
    colours : array-like of shape (k, C)
        Integer palette colours (as written to the output).
    method : {"floyd-steinberg", "blue-noise"}, default="floyd-steinberg"
        Exact error diffusion (byte-identical to
        :func:`bigquant.kernels.dither.floyd_steinberg` for any chunking and
        scheduler; its first pass runs here, eagerly, on the current
        scheduler), or ordered dithering with a blue-noise mask (lazy).
    strength : float, default=1.0
        Fraction of the error diffused (Floyd--Steinberg) or of the palette
        spacing used as noise amplitude (blue noise), in [0, 1].
    valid : dask array of shape (H, W), bool, or None, default=None
        Pixels that are image: the others (label 0 here) neither receive nor
        pass error.
    dtype : dtype, default=np.uint8
        Label type.
    with_sums : bool, default=False
        Also return the quality sums of the result
        (:func:`bigquant.kernels.spaces.error_sums` over the image), which
        Floyd--Steinberg's first pass gives for little extra (None for blue
        noise: they need a pass of their own).
    masked_label : int, default=0
        The label of the pixels ``valid`` masks out.
    spool : pathlib.Path or None, default=None
        An existing directory every worker can write and read (see
        :func:`label_spool`): Floyd--Steinberg's first pass saves its labels
        there and the result reads them back, instead of dithering every
        chunk a second time (the labels are the same).  The directory must
        outlive every computation of the result.  When a worker cannot write
        it, the second diffusion runs as without it.
    wait : bool, default=True
        Return once Floyd--Steinberg's first pass is done.  False: return at
        once, as ``(labels, pass1)``, while the first pass runs on (on this
        process's threads, or as a distributed client's futures), so that the
        chunks of ``labels`` are computed (and written) as soon as the tiles
        over them are done; ``pass1.result()`` gives the sums (None without
        ``with_sums``) once it is over, ``pass1.cancel()`` stops it (after a
        failed write).  Only with a ``spool``; without one the first pass is
        waited for.

    Returns
    -------
    labels : dask array of shape (H, W)
        (labels, sums) with ``with_sums``; (labels, pass1) without ``wait``.

    Raises
    ------
    InvalidParameterError
        Bad ``method`` or ``strength``, or channels that do not match the palette.
    InputTypeError
        Pixels that are not uint8 or uint16.
    """
    method, strength = check_dither(method, strength)
    colours = np.ascontiguousarray(np.asarray(colours, dtype=np.int64))
    if data.ndim == 2:
        data = data[:, :, None]
    if colours.ndim != 2 or colours.shape[1] != data.shape[2]:
        raise InvalidParameterError(
            f"dither={method!r} needs the palette in the image's bands: the image has {data.shape[2]} "
            f"band(s), the palette colours {colours.shape[-1]}"
        )
    max_value = _max_value(data.dtype)
    if colours.min() < 0 or colours.max() > max_value:
        raise InvalidParameterError(f"palette colours must lie in [0, {max_value}] to dither {data.dtype} pixels")
    dtype = np.dtype(dtype)
    if method == "blue-noise":
        labels = _blue_noise(data, colours, strength, dtype)
        labels = labels if valid is None else da.where(valid, labels, masked_label).astype(dtype)
        if not wait:
            return labels, _Done(None)
        return (labels, None) if with_sums else labels
    labels, pass1 = _floyd_steinberg(data, colours, valid, strength_q(strength), dtype, with_sums,
                                     int(masked_label), spool)
    if not wait:
        return labels, pass1
    sums = pass1.result()
    return (labels, sums) if with_sums else labels


@contextlib.contextmanager
def label_spool(target: pathlib.PurePath, dither: str | None = "floyd-steinberg", *,
                scratch: str | os.PathLike[str] | None = None) -> Iterator[pathlib.PurePath | None]:
    """A temporary directory for :func:`dither_labels`' ``spool``, removed on exit.

    Where: under ``scratch`` when given (a local directory, or a URL prefix
    such as ``s3://bucket/tmp`` that every worker writes and reads through
    fsspec); else beside a local ``target``; else (a URL ``target``, whose
    folder is no local directory) in the client's system temp dir.  It is
    named like the writers' temporaries (:func:`bigquant.io.atomic.temp_sibling`,
    tag ``spool``), so a run killed before its cleanup leaves nothing the next
    run writing ``target`` beside it does not remove.  Only Floyd--Steinberg
    spools: for any other ``dither`` (None included) nothing is made and None
    is yielded.

    With a distributed client, every worker first proves that its files
    reach this directory as the client sees it
    (:func:`bigquant.io.reach.unreachable_workers`); when one does not (a
    worker of another machine, a private mount, ``memory://`` of another
    process), nothing is spooled (None) and the second pass dithers again
    from the edges.  (Without the probe, the first pass could spool every
    tile on workers that see the directory, and the second pass then fail
    to read them on a worker that does not.)
    """
    if dither != "floyd-steinberg":
        yield None
        return
    where = None if scratch is None else output_location(scratch)
    if isinstance(where, URLPath):  # a prefix in object storage: nothing to make, every object removed after
        url = temp_sibling(where / target.name, "spool")
        try:
            unseen = unreachable_workers(url)
            if unseen:
                logger.info("dither: the workers do not see the spool %s (%s); no spool, dithering again",
                            url, "; ".join(sorted(set(unseen.values()))))
                yield None
            else:
                yield url
        finally:
            remove_url(url)
        return
    if where is not None:
        base = pathlib.Path(where) / target.name
    elif isinstance(target, URLPath):  # never a local sibling of a URL: the client's temp dir, probed as any
        base = pathlib.Path(tempfile.gettempdir()) / target.name
    else:
        base = pathlib.Path(target)
    path = temp_sibling(base, "spool")
    path.mkdir()
    try:
        unseen = unreachable_workers(path)
        if unseen:
            logger.info("dither: the workers do not see the spool %s (%s); no spool, dithering again",
                        path, "; ".join(sorted(set(unseen.values()))))
            remove_path(path)
            yield None
        else:
            yield path
    finally:
        remove_path(path)
