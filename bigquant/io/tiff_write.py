"""Streaming tiled BigTIFF writer.

The array (aligned to the tile grid) is computed one chunk row -- a band of
whole tile rows -- at a time, a few bands ahead of the writer.  Each chunk is
encoded on the worker that computed it (:class:`BlockEncoder`), and the
compressed tiles are handed to ``tifffile`` in row-major order.  Pyramid levels
are strided subsamples taken from the same pass (nearest neighbour, never
averaged indices), spooled to hidden raw files beside the output and written
as SubIFDs afterwards, so the source is never read twice.
"""

from __future__ import annotations

import logging
import math
import pathlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from bigquant.io.atomic import remove_path, temp_sibling
from bigquant.io.encode import BlockEncoder, TileRegion
from bigquant.io.tiff_read import direct_reader

__all__ = ["write_tiff", "compute_bands"]

logger = logging.getLogger(__name__)

#: Bytes of raw band output the writer lets run ahead of the file.
_AHEAD_BYTES = 384 * 2**20


def compute_bands(
    arr: da.Array,
    encoder: BlockEncoder,
    *,
    name: str = "bigquant-encode",
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
    reader = direct_reader(arr) if encoder.lookup is not None and arr.ndim == 3 else None
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
    scheduler = dask.base.get_scheduler(collections=[arr])
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
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


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
        Subsampling steps of the SubIFD pyramid levels.
    preview_step : int or None
        Step of the subsample to return for a preview.
    extra : tuple
        Further arguments of the encoder (the lookup table of a lookup encoder).

    Returns
    -------
    preview : ndarray or None
        Stored pixels subsampled by ``preview_step``.
    """
    import tifffile

    height, width = arr.shape[:2]
    if encoder.kind == "palette":
        sample_shape: tuple[int, ...] = ()
    elif encoder.kind == "rgb":
        assert encoder.colours is not None
        n_samples = encoder.colours.shape[1]
        sample_shape = (n_samples,) if n_samples > 1 else ()
    else:
        sample_shape = tuple(arr.shape[2:])
    dtype = encoder.out_dtype
    t = encoder.tile
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
            for r in range(len(band[0][0])):
                for tiles, _ in band:
                    yield from tiles[r]

    common: dict[str, Any] = dict(
        dtype=dtype,
        tile=(t, t),
        photometric=photometric,
        colormap=colormap,
        extrasamples=extrasamples,
        planarconfig="contig" if sample_shape else None,
        metadata=None,
        **encoder.codec.tifffile_args,
    )
    if not encoder.codec.pre_encoded:
        common["maxworkers"] = 2
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
            tw.write(
                level0(),
                shape=(height, width) + sample_shape,
                subifds=len(levels) or None,
                description=description,
                **common,
            )
            if levels:
                with ThreadPoolExecutor(2, thread_name_prefix="bigquant-level") as pool:
                    for s in levels:
                        spool = spools[s]
                        tw.write(
                            spool.tiles(encoder, pool),
                            shape=spool.shape,
                            subfiletype=1,
                            **common,
                        )
    finally:
        for spool in spools.values():
            spool.close()
    if preview_step is None:
        return None
    return np.concatenate(preview_parts, axis=0)
