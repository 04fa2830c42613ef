"""Streaming tiled BigTIFF writer.

The array (aligned to the tile grid) is computed one chunk row -- a band of
whole tile rows -- at a time, a few bands ahead of the writer.  Each chunk is
encoded on the worker that computed it (:class:`BlockEncoder`), and the
compressed tiles are handed to ``tifffile`` in row-major order.  Reduced
levels are strided subsamples taken from the same pass (nearest neighbour,
never averaged indices), spooled to hidden raw files beside the output and
written afterwards, so the source is never read twice: as SubIFDs of the image
(``layout="subifds"``) or as IFDs chained after it with NewSubfileType 1, the
overviews GDAL lists (``layout="overviews"``).

Every level gets the XResolution, YResolution and ResolutionUnit of the
image's :class:`~bigquant.io.metadata.ImageMetadata`, divided by its
subsampling step.  With ``ome`` metadata the file is an OME-TIFF (tifffile
writes the OME-XML into the first ImageDescription; the levels are SubIFDs).

An encoder with ``bits`` (1, 2 or 4) packs palette indices: ``tifffile`` is
told 8-bit indices and given the packed tiles, and every IFD is patched
afterwards (:func:`bigquant.io.nbits.patch_packed`) to say BitsPerSample
``bits`` with a ColorMap of ``2**bits`` entries.

``layout="cog"`` writes a Cloud-Optimized GeoTIFF: every IFD first, then the
tile data of the smallest overview, ..., of the full resolution last.  The
overviews are complete only after the full-resolution pass, so its encoded
tiles are spooled (in order, with their sizes) to a hidden file beside the
output during the pass; then the IFDs are written with empty tiles, the
overview tiles appended smallest first, the spooled tiles copied after them,
and the tile offsets and byte counts patched in place.  Memory stays that of a
plain write; the cost is one more write and read of the compressed image.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import shutil
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from bigquant import tasks
from bigquant.errors import InvalidParameterError
from bigquant.io.atomic import remove_path, temp_sibling
from bigquant.io.compute import current_scheduler
from bigquant.io.encode import LABEL_COUNTS, LABELLER_SUMS, BlockEncoder, TileRegion
from bigquant.io.metadata import ImageMetadata
from bigquant.io.nbits import packed_row_bytes, patch_packed
from bigquant.io.tiff_read import window_reader

__all__ = ["Layout", "write_tiff", "compute_bands"]

#: Where reduced levels go: SubIFDs, chained overview IFDs, or a COG.
Layout = Literal["subifds", "overviews", "cog"]

logger = logging.getLogger(__name__)

#: Bytes of raw band output the writer lets run ahead of the file.
_AHEAD_BYTES = 384 * 2**20


def compute_bands(
    arr: da.Array,
    encoder: BlockEncoder,
    *,
    name: str = tasks.WRITE,
    extra: tuple[Any, ...] = (),
) -> Iterator[list[tuple[list[list[Any]], dict[int, np.ndarray]]]]:
    """Yield, in order, the encoded chunks of each chunk row of ``arr``.

    Up to a few bands are computed concurrently (bounded by their raw size) on
    the current dask scheduler, so workers stay busy while the caller writes.
    ``extra`` are further arguments of every encoder call (e.g. the lookup
    table as a Delayed: computed once, fetched once by each worker).  A lookup
    encoder over a TIFF read directly is given :class:`TileRegion` windows
    instead of chunks, and reads the tiles itself.
    """
    reader = window_reader(arr, encoder.tile) if encoder.lookup is not None and arr.ndim == 3 else None
    if reader is not None:
        # the encoder reads its tiles itself: no chunk of pixels is ever held
        ys, xs = np.cumsum((0,) + arr.chunks[0]), np.cumsum((0,) + arr.chunks[1])
        blocks = np.empty((len(ys) - 1, len(xs) - 1), dtype=object)
        for i in range(blocks.shape[0]):
            for j in range(blocks.shape[1]):
                blocks[i, j] = TileRegion(reader, (int(ys[i]), int(ys[i + 1]), int(xs[j]), int(xs[j + 1])))
    else:
        blocks = arr.to_delayed(optimize_graph=True)
        if blocks.ndim == 3:
            blocks = blocks[:, :, 0]
    nby, nbx = blocks.shape
    token = tokenize(arr.name, encoder, *[getattr(e, "key", e) for e in extra])
    # resolved here: the pool's threads do not see the caller's current client
    scheduler = current_scheduler([arr])
    if extra:
        # computed once for all bands (each band is its own compute, which would
        # otherwise rebuild a shared argument and send it to the workers again)
        extra = dask.persist(*extra, scheduler=scheduler)
    encode = dask.delayed(encoder, pure=True)
    tasks = [
        [encode(blocks[i, j], *extra, dask_key_name=f"{name}-{token}-{i}-{j}") for j in range(nbx)]
        for i in range(nby)
    ]
    band_pixels = max(arr.chunks[0]) * arr.shape[1]
    if reader is not None:
        # only encoded tiles are held (read and labelled tile by tile): bound by the
        # stored pixels, which their compressed size never exceeds by much
        band_bytes = band_pixels * encoder.out_dtype.itemsize * (
            encoder.colours.shape[1] if encoder.kind == "rgb" and encoder.colours is not None else 1
        )
    else:
        band_bytes = band_pixels * math.prod(arr.shape[2:]) * max(
            encoder.out_dtype.itemsize, arr.dtype.itemsize
        )
    depth = int(min(nby, 3, max(1, _AHEAD_BYTES // max(band_bytes, 1))))
    logger.debug("computing %d bands of %d chunks, %d ahead", nby, nbx, depth)
    pool = ThreadPoolExecutor(depth, thread_name_prefix="bigquant-band")
    pending: deque[Any] = deque()
    completed = False
    try:
        nxt = 0
        while nxt < min(depth, nby):
            pending.append(pool.submit(dask.compute, *tasks[nxt], scheduler=scheduler))
            nxt += 1
        while pending:
            result = pending.popleft().result()
            if nxt < nby:
                pending.append(pool.submit(dask.compute, *tasks[nxt], scheduler=scheduler))
                nxt += 1
            yield list(result)
        completed = True
    finally:
        for fut in pending:
            fut.cancel()
        # an interrupted or failed write does not wait for the bands still computing: a Ctrl-C
        # reaches the worker processes too, and a compute waiting for a worker that is gone
        # never returns (it ends when the client closes)
        pool.shutdown(wait=completed, cancel_futures=True)


class _LevelSpool:
    """Raw row-major spool file of one subsampled level, appended band by band."""

    def __init__(self, target: pathlib.Path, step: int, shape: tuple[int, ...], dtype: np.dtype):
        self.step = step
        self.shape = shape
        self.dtype = dtype
        self.path = temp_sibling(target, f"level{step}")
        self.fh = open(self.path, "w+b")  # noqa: SIM115 - closed in close()
        self.rows = 0

    def append(self, rows: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.rows += rows.shape[0]

    def tiles(self, encoder: BlockEncoder, pool: ThreadPoolExecutor) -> Iterator[Any]:
        """Yield the level's encoded tiles in row-major order."""
        self.fh.flush()
        self.fh.seek(0)
        height, width = self.shape[:2]
        row_items = width * math.prod(self.shape[2:])
        t = encoder.tile
        for y in range(0, height, t):
            n = min(t, height - y)
            band = np.fromfile(self.fh, dtype=self.dtype, count=n * row_items)
            band = band.reshape((n,) + tuple(self.shape[1:]))
            parts = [band[:, x : x + t] for x in range(0, width, t)]
            yield from pool.map(lambda p: encoder.tiles(p)[0][0], parts)

    def close(self) -> None:
        self.fh.close()
        remove_path(self.path)


class _TileSpool:
    """Encoded tiles spooled in order to a hidden file beside the output."""

    def __init__(self, target: pathlib.Path):
        self.path = temp_sibling(target, "tiles")
        self.fh = open(self.path, "w+b")  # noqa: SIM115 - closed in close()
        self.sizes: list[int] = []

    def append(self, data: bytes) -> None:
        self.fh.write(data)
        self.sizes.append(len(data))

    def copy_to(self, out: Any) -> tuple[list[int], list[int]]:
        """Append the tiles to ``out`` at its position; (offsets, byte counts)."""
        self.fh.flush()
        self.fh.seek(0)
        start = out.tell()
        shutil.copyfileobj(self.fh, out, 16 * 2**20)
        ends = np.cumsum(self.sizes, dtype=np.int64)
        offsets = (start + ends - np.asarray(self.sizes, dtype=np.int64)).tolist()
        return offsets, list(self.sizes)

    def close(self) -> None:
        self.fh.close()
        remove_path(self.path)


def _append_tiles(out: Any, tiles: Iterable[bytes]) -> tuple[list[int], list[int]]:
    """Write encoded tiles at the end of ``out``; (offsets, byte counts)."""
    offsets, counts = [], []
    for data in tiles:
        offsets.append(out.tell())
        counts.append(len(data))
        out.write(data)
    return offsets, counts


def _placeholders(shape: tuple[int, ...], encoder: BlockEncoder) -> Iterator[bytes]:
    """Empty tiles of a level, whose offsets are patched once the data are placed.

    An uncompressed image of exactly one tile is written contiguously by
    tifffile, which then wants the tile's bytes: it gets zeros, never referenced.
    """
    t = encoder.tile
    n = math.ceil(shape[0] / t) * math.ceil(shape[1] / t)
    if encoder.codec.tag == 1 and tuple(shape[:2]) == (t, t):
        return iter([bytes(t * t * math.prod(shape[2:]) * encoder.out_dtype.itemsize)])
    return iter([b""] * n)


def _resolution(metadata: ImageMetadata | None, step: int) -> dict[str, Any]:
    """``tifffile`` resolution arguments of a level subsampled by ``step`` (none when unknown)."""
    found = None if metadata is None else metadata.scaled(step).tiff_resolution()
    if found is None:
        return {}
    x, y, unit = found
    return {"resolution": (x, y), "resolutionunit": unit}


def _write_cog(
    tmp: pathlib.Path,
    level0: Iterator[Any],
    shape: tuple[int, ...],
    spools: Sequence[_LevelSpool],
    encoder: BlockEncoder,
    common: dict[str, Any],
    first: dict[str, Any],
    metadata: ImageMetadata | None = None,
) -> None:
    """Write the COG layout (see the module docstring); ``spools`` largest first."""
    import tifffile

    main = _TileSpool(tmp)
    try:
        for data in level0:
            main.append(data)
        shapes = [shape] + [spool.shape for spool in spools]
        steps = [1] + [spool.step for spool in spools]
        with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
            for i, level_shape in enumerate(shapes):
                tw.write(_placeholders(level_shape, encoder), shape=level_shape,
                         subfiletype=1 if i else 0, **common, **(first if i == 0 else {"metadata": None}),
                         **_resolution(metadata, steps[i]))
        placed = []
        pool = ThreadPoolExecutor(2, thread_name_prefix="bigquant-level")
        with open(tmp, "r+b") as out, pool:
            out.seek(0, os.SEEK_END)
            for spool in reversed(spools):
                placed.append(_append_tiles(out, spool.tiles(encoder, pool)))
            placed.append(main.copy_to(out))
        logger.debug("COG: %d IFDs, full resolution copied from a %d byte spool",
                     len(shapes), sum(main.sizes))
    finally:
        main.close()
    _patch_tiles(tmp, placed[::-1])


def _patch_tiles(path: pathlib.Path, placed: Sequence[tuple[list[int], list[int]]]) -> None:
    """Rewrite TileOffsets and TileByteCounts of each IFD in place.

    The arrays keep their count and type, so they are rewritten where they
    are: offsets are LONG8, and tifffile makes byte counts SHORT only for
    tiles under 6.5 kB uncompressed, whose encoded size no codec takes past
    65535 bytes.
    """
    import tifffile

    with tifffile.TiffFile(path, mode="r+") as tf:
        pages = list(tf.pages)
        assert len(pages) == len(placed), (len(pages), len(placed))
        for page, (offsets, counts) in zip(pages, placed):
            page.tags["TileOffsets"].overwrite(offsets)
            page.tags["TileByteCounts"].overwrite(counts)


def write_tiff(
    arr: da.Array,
    tmp: pathlib.Path,
    encoder: BlockEncoder,
    *,
    photometric: str,
    colormap: np.ndarray | None,
    extrasamples: tuple[str, ...] | None,
    levels: tuple[int, ...],
    preview_step: int | None,
    description: str | None = None,
    extra: tuple[Any, ...] = (),
    layout: Layout = "subifds",
    extratags: Sequence[tuple[Any, ...]] = (),
    metadata: ImageMetadata | None = None,
    ome: dict[str, Any] | None = None,
    label_counts: np.ndarray | None = None,
    measured: list[np.ndarray] | None = None,
) -> np.ndarray | None:
    """Stream ``arr`` to a tiled BigTIFF at ``tmp``; return the preview pixels.

    Parameters
    ----------
    arr : dask.array.Array
        Labels (H, W) or an image, chunks aligned to the tile grid.
    tmp : pathlib.Path
        File to write (the temporary name of the output).
    encoder : BlockEncoder
        Per-chunk mapping and encoding; its ``steps`` include ``levels`` and
        ``preview_step``.
    photometric, colormap, extrasamples : TIFF tags of the stored image.
    levels : tuple of int
        Subsampling steps of the reduced levels, increasing.
    preview_step : int or None
        Step of the subsample to return for a preview.
    description : str or None, default=None
        ImageDescription of the full-resolution IFD.
    extra : tuple
        Further arguments of the encoder (the lookup table of a lookup encoder).
    layout : {"subifds", "overviews", "cog"}, default="subifds"
        Where the reduced levels go (see the module docstring).  "cog" needs
        an encoder whose codec is ``pre_encoded``.
    extratags : sequence of tuple
        ``tifffile`` extratags of the full-resolution IFD (GeoTIFF, no-data,
        ICC profile).
    metadata : ImageMetadata or None, default=None
        The image's metadata: every level gets its resolution, divided by the
        level's subsampling step (``tifffile``'s unitless 1:1 when unknown).
    ome : dict or None, default=None
        ``tifffile`` OME metadata of the image (PhysicalSizeX, ...): write an
        OME-TIFF, its reduced levels as SubIFDs (``layout="subifds"`` only).
    label_counts : ndarray of int64 or None, default=None
        Where to add up the label counts of an encoder that counts them
        (``encoder.count_labels``; length ``encoder.n_labels``), chunk by
        chunk as the bands arrive: no other pass.
    measured : list or None, default=None
        Where to append, chunk by chunk in row-major order, the sums an
        encoder's ``labeller`` measured (:data:`bigquant.io.encode.LABELLER_SUMS`).

    Returns
    -------
    preview : ndarray or None
        Stored pixels subsampled by ``preview_step``.
    """
    if layout == "cog" and not encoder.codec.pre_encoded:
        raise InvalidParameterError(
            f"a COG needs tiles encoded by bigquant, not by tifffile ({encoder.codec.name!r})"
        )
    if ome is not None and layout != "subifds":
        raise InvalidParameterError(f"an OME-TIFF keeps its reduced levels as SubIFDs, not layout={layout!r}")
    height, width = arr.shape[:2]
    sample_shape = _sample_shape(arr, encoder)
    dtype = encoder.out_dtype
    spools = {
        s: _LevelSpool(tmp, s, (math.ceil(height / s), math.ceil(width / s)) + sample_shape, dtype)
        for s in levels
    }
    preview_parts: list[np.ndarray] = []

    def level0() -> Iterator[Any]:
        for band in compute_bands(arr, encoder, extra=extra):
            # keep the subsamples first: tifffile stops pulling after the last tile
            for s, spool in spools.items():
                spool.append(np.concatenate([subs[s] for _, subs in band], axis=1))
            if preview_step is not None:
                preview_parts.append(np.concatenate([subs[preview_step] for _, subs in band], axis=1))
            if label_counts is not None:
                for _, subs in band:
                    np.add(label_counts, subs[LABEL_COUNTS], out=label_counts)
            if measured is not None:  # what the encoder's labeller measured, chunk by chunk in row-major order
                measured.extend(subs[LABELLER_SUMS] for _, subs in band)
            for r in range(len(band[0][0])):
                for tiles, _ in band:
                    yield from tiles[r]

    t = encoder.tile
    common: dict[str, Any] = dict(
        dtype=dtype,
        tile=(t, t),
        photometric=photometric,
        colormap=colormap,
        extrasamples=extrasamples,
        planarconfig="contig" if sample_shape else None,
        **encoder.codec.tifffile_args,
    )
    if not encoder.codec.pre_encoded:
        common["maxworkers"] = 2
    first = {"description": description, "extratags": tuple(extratags),
             "metadata": None if ome is None else dict(ome, axes="YXS" if sample_shape else "YX")}
    shape = (height, width) + sample_shape
    packed = encoder.bits if encoder.kind == "palette" and encoder.bits is not None else None
    try:
        if layout == "cog":
            _write_cog(tmp, level0(), shape, [spools[s] for s in levels], encoder, common, first, metadata)
        else:
            _write_chained(tmp, level0(), shape, [spools[s] for s in levels], encoder, common,
                           first, subifds=layout == "subifds", metadata=metadata, ome=ome is not None)
    finally:
        for spool in spools.values():
            spool.close()
    if packed is not None:
        raw = encoder.codec.tag == 1
        patch_packed(tmp, packed, tile_bytes=t * packed_row_bytes(t, packed) if raw else None)
    if preview_step is None:
        return None
    return np.concatenate(preview_parts, axis=0)


def _sample_shape(arr: da.Array, encoder: BlockEncoder) -> tuple[int, ...]:
    """Samples per stored pixel: () for one, else (C,)."""
    if encoder.kind == "palette":
        return ()
    if encoder.kind == "rgb":
        assert encoder.colours is not None
        n_samples = encoder.colours.shape[1]
        return (n_samples,) if n_samples > 1 else ()
    return tuple(arr.shape[2:])


def _write_chained(
    tmp: pathlib.Path,
    level0: Iterator[Any],
    shape: tuple[int, ...],
    spools: Sequence[_LevelSpool],
    encoder: BlockEncoder,
    common: dict[str, Any],
    first: dict[str, Any],
    *,
    subifds: bool,
    metadata: ImageMetadata | None = None,
    ome: bool = False,
) -> None:
    """Write the image, then its reduced levels as SubIFDs or chained IFDs (an OME-TIFF with ``ome``)."""
    import tifffile

    with tifffile.TiffWriter(tmp, bigtiff=True, ome=ome) as tw:
        tw.write(_contiguous_size(level0, shape, encoder), shape=shape,
                 subifds=(len(spools) or None) if subifds else None, **common, **first, **_resolution(metadata, 1))
        if spools:
            with ThreadPoolExecutor(2, thread_name_prefix="bigquant-level") as pool:
                for spool in spools:
                    tw.write(_contiguous_size(spool.tiles(encoder, pool), spool.shape, encoder), shape=spool.shape,
                             subfiletype=1, metadata=None, **common, **_resolution(metadata, spool.step))


def _contiguous_size(tiles: Iterator[Any], shape: tuple[int, ...], encoder: BlockEncoder) -> Iterator[Any]:
    """The tiles of one IFD as ``tifffile`` takes them.

    An uncompressed image of exactly one tile is written contiguously, and
    ``tifffile`` checks it got the tile's full size: a packed tile is padded
    to it (its byte count is then patched, :func:`bigquant.io.nbits.patch_packed`).
    """
    t = encoder.tile
    if encoder.codec.tag != 1 or encoder.bits is None or tuple(shape[:2]) != (t, t):
        return tiles
    full = t * t * encoder.out_dtype.itemsize
    return (data + bytes(full - len(data)) for data in tiles)
