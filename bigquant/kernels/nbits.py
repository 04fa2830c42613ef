"""Palette indices packed 1, 2 or 4 to a byte, most significant bits first, each row padded to a byte."""

from __future__ import annotations

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT

__all__ = ["pack_indices"]


@numba.njit(**_JIT)
def _pack(a, bits, out):  # pragma: no cover - jitted
    height, width = a.shape
    per = 8 // bits
    full = width // per
    for y in range(height):
        row = a[y]
        dst = out[y]
        if bits == 4:  # the loops the common depths take, unrolled: they vectorise
            for b in range(full):
                dst[b] = (row[2 * b] << np.uint8(4)) | row[2 * b + 1]
        else:
            for b in range(full):
                dst[b] = ((row[4 * b] << np.uint8(6)) | (row[4 * b + 1] << np.uint8(4))
                          | (row[4 * b + 2] << np.uint8(2)) | row[4 * b + 3])
        if full * per < width:  # the last byte, zero bits after the row's end
            v = np.uint8(0)
            for i in range(per):
                x = full * per + i
                v = (v << np.uint8(bits)) | (row[x] if x < width else np.uint8(0))
            dst[full] = v


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """``indices`` (H, W) of uint8 values below ``2**bits`` packed ``bits`` (2 or 4) to a byte: (H, ceil(W * bits / 8)) uint8.

    One pass; values are not masked (callers check them first).
    """
    if bits not in (2, 4):
        raise ValueError(f"bits={bits} must be 2 or 4")
    a = np.ascontiguousarray(indices, dtype=np.uint8)
    out = np.empty((a.shape[0], -(-a.shape[1] * bits // 8)), dtype=np.uint8)
    _pack(a, np.int64(bits), out)
    return out
