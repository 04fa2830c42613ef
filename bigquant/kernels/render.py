"""The sample image's pixels: a window of the enlarged photo with its colour drift and noise, in one pass.

:func:`render_window` is what :mod:`bigquant.io.sample` used to compute as
whole-window float32 numpy expressions (about ten temporaries a window),
pixel by pixel in the same float32 operations and order, so the bytes are
the same.
"""

from __future__ import annotations

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT

__all__ = ["render_window"]


@numba.njit(**_JIT)
def _render(photo, iy, wy, dy, ix, wx, dx, noise, out):  # pragma: no cover - jitted
    one = np.float32(1.0)
    gain_scale = np.float32(0.18)
    offset_scale = np.float32(10.0)
    low = np.float32(0.0)
    high = np.float32(255.0)
    for a in range(iy.shape[0]):
        r0 = iy[a]
        wya = wy[a]
        owy = one - wya
        for b in range(ix.shape[0]):
            c0 = ix[b]
            wxb = wx[b]
            owx = one - wxb
            for c in range(3):
                top = photo[r0, c0, c] * owx + photo[r0, c0 + 1, c] * wxb
                bottom = photo[r0 + 1, c0, c] * owx + photo[r0 + 1, c0 + 1, c] * wxb
                v = top * owy + bottom * wya
                v = v * (one + gain_scale * dy[a, c] * dx[b, c])
                v = v + offset_scale * dy[a, c]
                v = v + np.float32(noise[a, b, c])
                v = min(max(v, low), high)
                out[a, b, c] = np.uint8(np.rint(v))


def render_window(photo: np.ndarray, rows: tuple[np.ndarray, np.ndarray, np.ndarray],
                  cols: tuple[np.ndarray, np.ndarray, np.ndarray], noise: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``photo`` (float32 (h, w, 3)) with drift and noise, as uint8 RGB.

    ``rows`` and ``cols`` are each (first index, float32 weight of the next
    index, float32 drift (n, 3)) along their axis; ``noise`` (n_rows,
    n_cols, 3) int8 is added before the clip to [0, 255] and the rounding.
    Per pixel and channel, in float32: ``v = (top (1 - wy) + bottom wy)
    (1 + 0.18 dy dx) + 10 dy + noise``, with ``top``, ``bottom`` the
    interpolations along the row.
    """
    iy, wy, dy = rows
    ix, wx, dx = cols
    out = np.empty((len(iy), len(ix), 3), dtype=np.uint8)
    _render(photo, np.ascontiguousarray(iy, dtype=np.int64), np.ascontiguousarray(wy, dtype=np.float32),
            np.ascontiguousarray(dy, dtype=np.float32), np.ascontiguousarray(ix, dtype=np.int64),
            np.ascontiguousarray(wx, dtype=np.float32), np.ascontiguousarray(dx, dtype=np.float32),
            np.ascontiguousarray(noise), out)
    return out
