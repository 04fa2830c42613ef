"""Colour spaces: sRGB <-> OKLab and sRGB <-> CIELAB (D65), in float64.

sRGB values are given on a scale (255 for uint8, 65535 for uint16, 1 for
floats in [0, 1]); both directions use the exact sRGB transfer function
(IEC 61966-2-1: linear below 0.04045).  OKLab follows Björn Ottosson's
definition (linear sRGB -> LMS, cube root, -> Lab; the inverse cubes).
CIELAB uses the D65 white of sRGB and CIE's piecewise cube root.  Both spaces
scale L to [0, 100] here (OKLab's a and b likewise times 100), so that
distances in every space are of comparable size for k-means tolerances.

The quality sums (:func:`error_sums`, :func:`colour_error_sums`) take every
pixel's OKLab in float32 (twice the vector lanes of float64; a mean Delta E
within about 1e-6, relative, of the float64 one) and add in float64; their
squared errors are float64, exact for integer colours.
"""

from __future__ import annotations


import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from bigquant.kernels._jit import JIT as _JIT

__all__ = ["SPACES", "colour_error_sums", "error_sums", "from_space", "sum_tables", "to_space"]

#: the colour spaces the fit and the mapping can work in
SPACES = ("rgb", "oklab", "lab")

_M1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                [0.2119034982, 0.6806995451, 0.1073969566],
                [0.0883024619, 0.2817188376, 0.6299787005]])
_M2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                [1.9779984951, -2.4285922050, 0.4505937099],
                [0.0259040371, 0.7827717662, -0.8086757660]])
_M1_INV = np.linalg.inv(_M1)
_M2_INV = np.linalg.inv(_M2)
_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                 [0.2126729, 0.7151522, 0.0721750],
                 [0.0193339, 0.1191920, 0.9503041]])
_XYZ_INV = np.linalg.inv(_XYZ)
_WHITE = _XYZ.sum(axis=1)  # D65 white of sRGB (Y = 1)
_EPS = 216.0 / 24389.0
_KAPPA = 24389.0 / 27.0


@numba.njit(inline="always", **_JIT)
def _to_linear(v):  # pragma: no cover - jitted
    if v <= 0.04045:
        return v / 12.92
    return ((v + 0.055) / 1.055) ** 2.4


@numba.njit(inline="always", **_JIT)
def _from_linear(v):  # pragma: no cover - jitted
    if v <= 0.0031308:
        return 12.92 * v
    return 1.055 * np.sign(v) * np.abs(v) ** (1.0 / 2.4) - 0.055


@numba.njit(**_JIT)
def _srgb_to(X, scale, space, m1, m2, out):  # pragma: no cover - jitted
    lin = np.empty(3)
    mid = np.empty(3)
    for i in range(X.shape[0]):
        for c in range(3):
            lin[c] = _to_linear(np.float64(X[i, c]) / scale)
        for r in range(3):
            mid[r] = m1[r, 0] * lin[0] + m1[r, 1] * lin[1] + m1[r, 2] * lin[2]
        if space == 1:  # OKLab
            for r in range(3):
                mid[r] = np.cbrt(mid[r])
            for r in range(3):
                out[i, r] = 100.0 * (m2[r, 0] * mid[0] + m2[r, 1] * mid[1] + m2[r, 2] * mid[2])
        else:  # CIELAB: mid is XYZ; m2[0] holds the white
            for r in range(3):
                t = mid[r] / m2[0, r]
                mid[r] = np.cbrt(t) if t > _EPS else (_KAPPA * t + 16.0) / 116.0
            out[i, 0] = 116.0 * mid[1] - 16.0
            out[i, 1] = 500.0 * (mid[0] - mid[1])
            out[i, 2] = 200.0 * (mid[1] - mid[2])


@numba.njit(**_JIT)
def _to_srgb(X, scale, space, m1_inv, m2_inv, out):  # pragma: no cover - jitted
    mid = np.empty(3)
    lin = np.empty(3)
    for i in range(X.shape[0]):
        if space == 1:
            for r in range(3):
                v = (m2_inv[r, 0] * X[i, 0] + m2_inv[r, 1] * X[i, 1] + m2_inv[r, 2] * X[i, 2]) / 100.0
                mid[r] = v * v * v
        else:
            fy = (X[i, 0] + 16.0) / 116.0
            f = np.array([fy + X[i, 1] / 500.0, fy, fy - X[i, 2] / 200.0])
            for r in range(3):
                t = f[r] ** 3 if f[r] ** 3 > _EPS else (116.0 * f[r] - 16.0) / _KAPPA
                mid[r] = t * m2_inv[0, r]
        for r in range(3):
            lin[r] = m1_inv[r, 0] * mid[0] + m1_inv[r, 1] * mid[1] + m1_inv[r, 2] * mid[2]
        for c in range(3):
            out[i, c] = _from_linear(lin[c]) * scale


def _check(space: str) -> int:
    if space not in SPACES[1:]:
        raise ValueError(f"space={space!r} must be one of {SPACES[1:]}")
    return 1 if space == "oklab" else 2


def to_space(X: np.ndarray, space: str, scale: float = 255.0) -> np.ndarray:
    """sRGB colours (n, 3) on ``scale`` -> float64 coordinates (n, 3) in ``space`` ("oklab" or "lab").

    Examples
    --------
    >>> to_space(np.array([[255, 255, 255]], dtype=np.uint8), "oklab").round(3).tolist()
    [[100.0, 0.0, 0.0]]
    """
    kind = _check(space)
    X = np.ascontiguousarray(X, dtype=np.float64)  # one compiled kernel for every dtype: exact for integers
    out = np.empty((X.shape[0], 3), dtype=np.float64)
    if kind == 1:
        _srgb_to(X, float(scale), 1, _M1, _M2, out)
    else:
        _srgb_to(X, float(scale), 2, _XYZ, np.stack([_WHITE, _WHITE, _WHITE]), out)
    return out


def from_space(X: np.ndarray, space: str, scale: float = 255.0) -> np.ndarray:
    """Coordinates (n, 3) in ``space`` -> sRGB (n, 3) float64 on ``scale`` (not clipped: out-of-gamut may exceed it)."""
    kind = _check(space)
    X = np.ascontiguousarray(X, dtype=np.float64)
    out = np.empty((X.shape[0], 3), dtype=np.float64)
    if kind == 1:
        _to_srgb(X, float(scale), 1, _M1_INV, _M2_INV, out)
    else:
        _to_srgb(X, float(scale), 2, _XYZ_INV, np.stack([_WHITE, _WHITE, _WHITE]), out)
    return out


#: columns the quality sums take at a time (:func:`_error_row`: its scratch stays in the first-level cache)
_BLOCK = 256

#: the block sums of :func:`_error_row` run in this many interleaved partial sums (a vector of float64s)
_LANES = 8

#: OKLab's two matrices in float32, the precision of the sums' OKLab
_M1_32 = _M1.astype(np.float32)
_M2_32 = _M2.astype(np.float32)


def sum_tables(colours: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """What the quality sums of pixels of ``dtype`` against ``colours`` (k, C) need.

    Returns
    -------
    colours : ndarray of shape (k, C), float64
    ok_colours : ndarray of shape (k, 3), float32
        The palette in OKLab (natural units, L in [0, 1]; computed in float64,
        then rounded); zeros unless C == 3.
    lin_lut : ndarray, float32
        Linear sRGB of every value of ``dtype`` (one zero unless C == 3).
    with_de : bool
        Whether the sums hold an OKLab Delta E (C == 3).
    """
    colours = np.ascontiguousarray(colours, dtype=np.float64)
    with_de = colours.shape[1] == 3
    if with_de:
        ok_colours = (to_space(colours, "oklab", float(np.iinfo(dtype).max)) / 100.0).astype(np.float32)
        lin_lut = _linear_table(dtype)
    else:
        lin_lut = np.zeros(1, dtype=np.float32)
        ok_colours = np.zeros((len(colours), 3), dtype=np.float32)
    return colours, ok_colours, lin_lut, with_de


def _linear_table(dtype: np.dtype) -> np.ndarray:
    """Linear sRGB of every value of an integer ``dtype`` on its full scale (float64 arithmetic, float32 values)."""
    scale = float(np.iinfo(dtype).max)
    levels = np.arange(int(scale) + 1, dtype=np.float64) / scale
    return np.where(levels <= 0.04045, levels / 12.92, ((levels + 0.055) / 1.055) ** 2.4).astype(np.float32)


@intrinsic
def _f32_bits(typingctx, x):  # pragma: no cover - compiled
    """The bits of a float32 as an int32 (a bit cast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return types.int32(types.float32), codegen


@intrinsic
def _f32_from_bits(typingctx, i):  # pragma: no cover - compiled
    """The float32 of the given bits (a bit cast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


_THIRD = np.float32(1.0 / 3.0)
_FOUR = np.float32(4.0)
_ZERO = np.float32(0.0)


@numba.njit(inline="always", **_JIT)
def _cbrt(x):  # pragma: no cover - jitted
    """Cube root of a float32 ``x >= 0``, within 5e-7 of ``np.cbrt`` (relative): branch-free, so loops of it vectorise.

    ``x^(-1/3)`` from the bits (a third of the exponent, about 3% off) and
    three Newton steps that need no division (to float32's precision), then
    ``x x^(-2/3)``.  At x = 0 the steps overflow; the last line returns 0.
    """
    y = _f32_from_bits(np.int32(0x54A2FA8C) - np.int32(np.float32(_f32_bits(x)) * _THIRD))
    y = y * (_FOUR - x * y * y * y) * _THIRD
    y = y * (_FOUR - x * y * y * y) * _THIRD
    y = y * (_FOUR - x * y * y * y) * _THIRD
    r = x * y * y
    return r if x > _ZERO else _ZERO


@numba.njit(inline="always", **_JIT)
def _lms(r, g, b, m1):  # pragma: no cover - jitted
    """LMS of linear sRGB (float32): the one order of operations of the pixel and the colour paths."""
    return (m1[0, 0] * r + m1[0, 1] * g + m1[0, 2] * b,
            m1[1, 0] * r + m1[1, 1] * g + m1[1, 2] * b,
            m1[2, 0] * r + m1[2, 1] * g + m1[2, 2] * b)


@numba.njit(inline="always", **_JIT)
def _oklab(s0, s1, s2, m2):  # pragma: no cover - jitted
    """OKLab (float32) of cube-rooted LMS ``s``."""
    return (m2[0, 0] * s0 + m2[0, 1] * s1 + m2[0, 2] * s2,
            m2[1, 0] * s0 + m2[1, 1] * s1 + m2[1, 2] * s2,
            m2[2, 0] * s0 + m2[2, 1] * s1 + m2[2, 2] * s2)


@numba.njit(inline="always", **_JIT)
def _ok_distance2(o0, o1, o2, ok_colours, lab):  # pragma: no cover - jitted
    """Squared OKLab distance (float32) from ``o`` to palette colour ``lab`` (its root: ``np.sqrt``, float32)."""
    d0 = o0 - ok_colours[lab, 0]
    d1 = o1 - ok_colours[lab, 1]
    d2 = o2 - ok_colours[lab, 2]
    return d0 * d0 + d1 * d1 + d2 * d2


@numba.njit(inline="always", **_JIT)
def _sums_scratch():  # pragma: no cover - jitted
    """The scratch :func:`_error_row` takes: OKLab (3, block), squared distances, squared errors, partial sums."""
    return (np.empty((3, _BLOCK), dtype=np.float32), np.empty(_BLOCK, dtype=np.float32), np.empty(_BLOCK),
            np.empty(2 * _LANES), np.empty((3, _BLOCK), dtype=np.float32))


@numba.njit(inline="always", **_JIT)
def _error_row(P, py, dx_p, V, vy, dx_v, has_mask, L, ly, dx_l, xa, xb, colours, ok_colours, lin_lut,
               with_de, m1, m2, scratch, sse, de, n):  # pragma: no cover - jitted
    """The sums of one row, columns ``[xa, xb)``, carried on from (sse, de, n); returns them.

    ``dx_*`` turn a column into a column of each array; ``scratch`` is
    :func:`_sums_scratch`.  The one definition of the sums' arithmetic:
    :func:`_error_rows` and :func:`bigquant.kernels.dither.fs_rows` both run
    it.  A block of columns at a time: one loop looks up what depends on a
    lookup (the pixel's linear sRGB, its colour's OKLab, and its squared
    error over the channels, float64: exact for integer colours), then
    loops that only compute, and so vectorise: the pixels' OKLab in float32
    (``lin_lut``, ``m1``, ``m2`` and ``ok_colours`` are float32: the
    matrices, the cube roots), the squared distances to the colours, their
    roots; all added in :data:`_LANES` interleaved float64 partial sums,
    and those to the row's, in a fixed order (so that the result is the
    same for every caller).  Masked pixels add zeros (whatever their label).
    """
    ok, dist, sq, lanes, pal = scratch
    n_ch = P.shape[2]
    last = colours.shape[0] - 1  # a masked pixel's label may be past the palette: read within it, add zero
    for c0 in range(xa, xb, _BLOCK):
        c1 = min(c0 + _BLOCK, xb)
        m = c1 - c0
        if with_de:
            # the lookups, one loop (not vectorised): linear sRGB, the colour's OKLab; rows as
            # one-dimensional views and unsigned indices (no negative-index test on any access)
            prow, lrow = P[py], L[ly]
            sp, sl = np.uint64(c0 - dx_p), np.uint64(c0 - dx_l)
            for i in range(np.uint64(m)):
                v0 = prow[sp + i, 0]
                v1 = prow[sp + i, 1]
                v2 = prow[sp + i, 2]
                lab = np.uint64(min(max(np.int64(lrow[sl + i]), 0), last))
                ok[0, i] = lin_lut[np.uint64(v0)]
                ok[1, i] = lin_lut[np.uint64(v1)]
                ok[2, i] = lin_lut[np.uint64(v2)]
                pal[0, i] = ok_colours[lab, 0]
                pal[1, i] = ok_colours[lab, 1]
                pal[2, i] = ok_colours[lab, 2]
                d0 = np.float64(v0) - colours[lab, 0]  # exact: integers in float64
                d1 = np.float64(v1) - colours[lab, 1]
                d2 = np.float64(v2) - colours[lab, 2]
                sq[i] = d0 * d0 + d1 * d1 + d2 * d2
            for i in range(m):  # -> LMS (vectorised)
                l0, l1, l2 = _lms(ok[0, i], ok[1, i], ok[2, i], m1)
                ok[0, i] = l0
                ok[1, i] = l1
                ok[2, i] = l2
            for c in range(3):  # the cube roots: a loop of their own, over contiguous values (vectorised)
                for i in range(m):
                    ok[c, i] = _cbrt(ok[c, i])
            for i in range(m):  # -> OKLab, and the squared distance to the colour (vectorised: no lookup)
                o0, o1, o2 = _oklab(ok[0, i], ok[1, i], ok[2, i], m2)
                e0 = o0 - pal[0, i]
                e1 = o1 - pal[1, i]
                e2 = o2 - pal[2, i]
                dist[i] = e0 * e0 + e1 * e1 + e2 * e2
        else:
            for x in range(c0, c1):
                lab = min(np.int64(L[ly, x - dx_l]), last)
                s = 0.0
                for c in range(n_ch):
                    d = np.float64(P[py, x - dx_p, c]) - colours[lab, c]
                    s += d * d
                sq[x - c0] = s
                dist[x - c0] = _ZERO
        if has_mask:
            for x in range(c0, c1):
                if not V[vy, x - dx_v]:
                    sq[x - c0] = 0.0
                    dist[x - c0] = _ZERO
                else:
                    n += 1
        else:
            n += m
        for i in range(m):  # the roots, a loop of their own (vectorised)
            dist[i] = np.sqrt(dist[i])
        lanes[:] = 0.0
        i = 0
        while i + _LANES <= m:
            for j in range(_LANES):
                lanes[j] += sq[i + j]
                lanes[_LANES + j] += np.float64(dist[i + j])
            i += _LANES
        for j in range(m - i):
            lanes[j] += sq[i + j]
            lanes[_LANES + j] += np.float64(dist[i + j])
        for j in range(_LANES):
            sse += lanes[j]
            de += lanes[_LANES + j]
    return sse, de, n


@numba.njit(error_model="numpy", **_JIT)
def _error_rows(P, py0, px0, V, has_mask, L, oy0, ox0, y0, xa, xb, colours, ok_colours, lin_lut,
                with_de, m1, m2, out):  # pragma: no cover - jitted
    sse = 0.0
    de = 0.0
    n = 0
    scratch = _sums_scratch()
    for r in range(xa.shape[0]):
        y = y0 + r
        sse, de, n = _error_row(P, y - py0, px0, V, y - py0, px0, has_mask, L, y - oy0, ox0, xa[r], xb[r],
                                colours, ok_colours, lin_lut, with_de, m1, m2, scratch, sse, de, n)
    out[0] += sse
    out[1] += de
    out[2] += n


def error_sums(
    pixels: np.ndarray,
    origin: tuple[int, int],
    valid: np.ndarray | None,
    labels: np.ndarray,
    label_origin: tuple[int, int],
    colours: np.ndarray,
    rows: tuple[int, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Sums for the quality of a quantized window: squared error, OKLab Delta E, pixels.

    Parameters
    ----------
    pixels : ndarray of shape (h, w, C), uint8 or uint16
        Source pixels; element [0, 0] is the global pixel ``origin``.
    valid : ndarray of shape (h, w) of bool or None
        Pixels counted (None: all).
    labels : ndarray of shape (hl, wl), integers
        Palette indices; element [0, 0] is the global pixel ``label_origin``.
    colours : ndarray of shape (k, C)
        The palette as written (source scale).
    rows : (y0, xa, xb) or None, default=None
        Rows ``y0 + r`` and their column ranges (global) to count; None: the whole window.

    Returns
    -------
    sums : ndarray of shape (3,), float64
        Sum of squared differences over every channel, sum of the OKLab
        distances (natural OKLab units, L in [0, 1]; 0 unless C == 3), count
        of pixels.
    """
    pixels = np.ascontiguousarray(pixels)
    if rows is None:
        h, w = pixels.shape[:2]
        rows = (origin[0], np.full(h, origin[1], dtype=np.int64), np.full(h, origin[1] + w, dtype=np.int64))
    y0, xa, xb = rows
    colours, ok_colours, lin_lut, with_de = sum_tables(colours, pixels.dtype)
    has_mask = valid is not None
    V = np.ascontiguousarray(valid, dtype=np.bool_) if has_mask else np.ones((1, 1), dtype=np.bool_)
    out = np.zeros(3)
    _error_rows(pixels, origin[0], origin[1], V, has_mask, np.ascontiguousarray(labels), label_origin[0],
                label_origin[1], int(y0), np.ascontiguousarray(xa, dtype=np.int64),
                np.ascontiguousarray(xb, dtype=np.int64), colours, ok_colours, lin_lut, with_de, _M1_32, _M2_32,
                out)
    return out


@numba.njit(error_model="numpy", **_JIT)
def _colour_error_rows(colours, counts, labels, palette, ok_palette, lin_lut, with_de, m1, m2, out):  # pragma: no cover
    n_ch = colours.shape[1]
    sse = 0.0
    de = 0.0
    n = 0.0
    for i in range(colours.shape[0]):
        w = np.float64(counts[i])
        lab = labels[i]
        s = 0.0
        for c in range(n_ch):
            d = np.float64(colours[i, c]) - palette[lab, c]
            s += d * d
        sse += w * s
        n += w
        if with_de:  # the very float32 steps of _error_row, on one colour
            l0, l1, l2 = _lms(lin_lut[np.int64(colours[i, 0])], lin_lut[np.int64(colours[i, 1])],
                              lin_lut[np.int64(colours[i, 2])], m1)
            o0, o1, o2 = _oklab(_cbrt(l0), _cbrt(l1), _cbrt(l2), m2)
            de += w * np.float64(np.sqrt(_ok_distance2(o0, o1, o2, ok_palette, lab)))
    out[0] += sse
    out[1] += de
    out[2] += n


def colour_error_sums(colours: np.ndarray, counts: np.ndarray, labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """:func:`error_sums` of an image given as distinct colours, their pixel counts and labels.

    Parameters
    ----------
    colours : ndarray of shape (n, C), uint8 or uint16
        Distinct source colours (three channels read as sRGB for Delta E).
    counts : ndarray of shape (n,)
        Pixels of each colour.
    labels : ndarray of shape (n,), integers
        Palette index of each colour.
    palette : ndarray of shape (k, C)
        The palette as written (source scale).

    Returns
    -------
    sums : ndarray of shape (3,), float64
        Count-weighted squared error over every channel, count-weighted OKLab
        distance (natural units; 0 unless C == 3), pixels -- as :func:`error_sums`
        of the pixels gives them (the same sRGB linearisation table).
    """
    colours = np.ascontiguousarray(colours)
    palette, ok_palette, lin_lut, with_de = sum_tables(palette, colours.dtype)
    out = np.zeros(3)
    _colour_error_rows(colours, np.ascontiguousarray(counts), np.ascontiguousarray(labels), palette, ok_palette,
                       lin_lut, with_de, _M1_32, _M2_32, out)
    return out
