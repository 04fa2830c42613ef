"""Colour -> label lookup tables: building them, and labels of rows or tile windows.

The lookup uses the same colour code as :mod:`bigquant.kernels.colours` and the
same nearest-centre routine as :mod:`bigquant.kernels.scans`, so the labels are
bit-identical to a full scan; :func:`lookup_window` reads a window of a block in
place and writes a tile-sized buffer, so a tile is looked up and compressed while
it is in cache.
"""

from __future__ import annotations

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT
from bigquant.kernels.colours import _code
from bigquant.kernels.scans import _nearest

__all__ = [
    "build_lut",
    "lookup_labels",
    "lookup_window",
]


@numba.njit(**_JIT)
def _fill_lut(codes, labels, lut):  # pragma: no cover
    for i in range(codes.shape[0]):
        lut[codes[i]] = labels[i]


def build_lut(codes: np.ndarray, labels: np.ndarray, total_bits: int, sentinel: int) -> np.ndarray:
    """Dense colour-code -> label table; codes not in ``codes`` hold ``sentinel``."""
    dtype = np.uint8 if sentinel <= np.iinfo(np.uint8).max else np.uint16
    if sentinel > np.iinfo(np.uint16).max:
        dtype = np.int32
    lut = np.full(1 << total_bits, sentinel, dtype=dtype)
    _fill_lut(codes, labels.astype(dtype), lut)
    return lut


@numba.njit(**_JIT)
def _lookup(X, bits, lut, sentinel, centers_t, labels):  # pragma: no cover
    n = X.shape[0]
    k = centers_t.shape[1]
    dist = np.empty(k, dtype=np.float64)
    for i in range(n):
        lab = lut[_code(X, i, bits)]
        if lab == sentinel:
            best, _ = _nearest(X, i, centers_t, dist)
            labels[i] = best
        else:
            labels[i] = lab


def lookup_labels(
    X: np.ndarray,
    bits: int,
    lut: np.ndarray,
    sentinel: int,
    centers: np.ndarray,
    label_dtype: np.dtype | type,
) -> np.ndarray:
    """Labels of the rows of ``X`` through a lookup table (nearest centre as fallback)."""
    centers_t = np.ascontiguousarray(np.asarray(centers, dtype=np.float64).T)
    labels = np.empty(X.shape[0], dtype=label_dtype)
    if X.shape[0]:
        _lookup(X, bits, lut, lut.dtype.type(sentinel), centers_t, labels)
    return labels


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


@numba.njit(**_JIT)
def _lookup_window_rgb8(P, X, y0, y1, x0, x1, lut, sentinel, centers_t, out):  # pragma: no cover
    """:func:`_lookup_window` for (H, W, 3) uint8 pixels: the code ``_code`` gives, unrolled.

    ``P`` is the pixels as (H, 3 W) rows; rows are read as one-dimensional
    views at unsigned columns (numba tests every signed index for a negative
    value: a fifth of the loop's work).
    """
    dist = np.empty(centers_t.shape[1], dtype=np.float64)
    width = P.shape[1] // 3
    n = np.uint64(x1 - x0)
    for y in range(y0, y1):
        prow = P[y]
        orow = out[y - y0]
        first = np.uint64(3 * x0)
        for i in range(n):
            j = first + np.uint64(3) * i
            code = (np.uint32(prow[j]) << np.uint32(16)) | (np.uint32(prow[j + np.uint64(1)]) << np.uint32(8)) \
                | np.uint32(prow[j + np.uint64(2)])
            lab = lut[code]
            if lab == sentinel:
                best, _ = _nearest(X, y * width + x0 + np.int64(i), centers_t, dist)
                orow[i] = best
            else:
                orow[i] = lab


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
    block = np.ascontiguousarray(block)
    X = block.reshape(-1, block.shape[-1])
    if bits == 8 and block.dtype == np.uint8 and block.shape[-1] == 3:
        _lookup_window_rgb8(block.reshape(block.shape[0], -1), X, y0, y1, x0, x1, lut, lut.dtype.type(sentinel),
                            centers_t, out)
    else:
        _lookup_window(X, block.shape[1], y0, y1, x0, x1, bits, lut, lut.dtype.type(sentinel), centers_t, out)
