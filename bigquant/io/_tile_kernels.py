"""Numba kernels of the writers: colour -> label lookup of one tile window.

The lookup uses the same colour code (:func:`bigquant._kernels._code`) and
nearest-centre routine (:func:`bigquant._kernels._nearest`) as
:func:`bigquant._kernels.lookup_labels`, so the labels are bit-identical to
``KMeans.labels_``; it only reads a window of a block in place and writes a
tile-sized buffer, so a tile is looked up and compressed while it is in cache.
"""

from __future__ import annotations

import numba
import numpy as np

from bigquant._kernels import _code, _nearest

__all__ = ["lookup_window"]

_JIT = dict(nogil=True, cache=True)


@numba.njit(**_JIT)
def _lookup_window(X, width, y0, y1, x0, x1, bits, lut, sentinel, centers_t, out):  # pragma: no cover
    dist = np.empty(centers_t.shape[1], dtype=np.float64)
    for y in range(y0, y1):
        base = y * width
        for x in range(x0, x1):
            i = base + x
            lab = lut[_code(X, i, bits)]
            if lab == sentinel:
                best, _ = _nearest(X, i, centers_t, dist)
                out[y - y0, x - x0] = best
            else:
                out[y - y0, x - x0] = lab


def lookup_window(
    block: np.ndarray,
    window: tuple[int, int, int, int],
    bits: int,
    lut: np.ndarray,
    sentinel: int,
    centers_t: np.ndarray,
    out: np.ndarray,
) -> None:
    """Labels of ``block[y0:y1, x0:x1]`` (H, W, C) into ``out[:y1-y0, :x1-x0]``.

    Colours absent from ``lut`` (it holds ``sentinel``) get their nearest
    centre; ``centers_t`` is the (C, k) float64 transpose of the centres.
    """
    y0, y1, x0, x1 = window
    X = np.ascontiguousarray(block).reshape(-1, block.shape[-1])
    _lookup_window(X, block.shape[1], y0, y1, x0, x1, bits, lut, lut.dtype.type(sentinel), centers_t, out)
