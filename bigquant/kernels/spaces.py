"""Colour spaces: sRGB <-> OKLab and sRGB <-> CIELAB (D65), in float64.

sRGB values are given on a scale (255 for uint8, 65535 for uint16, 1 for
floats in [0, 1]); both directions use the exact sRGB transfer function
(IEC 61966-2-1: linear below 0.04045).  OKLab follows Björn Ottosson's
definition (linear sRGB -> LMS, cube root, -> Lab; the inverse cubes).
CIELAB uses the D65 white of sRGB and CIE's piecewise cube root.  Both spaces
scale L to [0, 100] here (OKLab's a and b likewise times 100), so that
distances in every space are of comparable size for k-means tolerances.
"""

from __future__ import annotations


import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT

__all__ = ["SPACES", "colour_error_sums", "cube_roots", "error_sums", "from_space", "labelled_error_sums", "ok_cache",
           "sum_tables", "to_space"]

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


#: slots of the cache of source colours' OKLab in :func:`_error_rows` (a power of two)
_OK_CACHE = 1 << 14


def ok_cache(slots: int = _OK_CACHE) -> tuple[np.ndarray, np.ndarray]:
    """An empty cache of source colours' OKLab for :func:`_error_rows`: (codes, values).

    ``slots`` must be a power of two.  A cache holds exact values only (a
    colour's OKLab is the same number computed once or many times), so one
    cache may serve many calls of the same data type.
    """
    return np.full(slots, -1, dtype=np.int64), np.empty((slots, 3))


def sum_tables(colours: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """What the quality sums of pixels of ``dtype`` against ``colours`` (k, C) need.

    Returns
    -------
    colours : ndarray of shape (k, C), float64
    ok_colours : ndarray of shape (k, 3), float64
        The palette in OKLab (natural units, L in [0, 1]); zeros unless C == 3.
    lin_lut : ndarray, float64
        Linear sRGB of every value of ``dtype`` (one zero unless C == 3).
    with_de : bool
        Whether the sums hold an OKLab Delta E (C == 3).
    """
    colours = np.ascontiguousarray(colours, dtype=np.float64)
    with_de = colours.shape[1] == 3
    if with_de:
        scale = float(np.iinfo(dtype).max)
        levels = np.arange(int(scale) + 1, dtype=np.float64) / scale
        lin_lut = np.where(levels <= 0.04045, levels / 12.92, ((levels + 0.055) / 1.055) ** 2.4)
        ok_colours = to_space(colours, "oklab", scale) / 100.0
    else:
        lin_lut = np.zeros(1)
        ok_colours = np.zeros((len(colours), 3))
    return colours, ok_colours, lin_lut, with_de


@numba.njit(**_JIT)
def _error_rows(P, py0, px0, V, has_mask, L, oy0, ox0, y0, xa, xb, colours, ok_colours, lin_lut,
                with_de, m1, m2, cache_code, cache_ok, out):  # pragma: no cover - jitted
    n_ch = P.shape[2]
    sse = 0.0
    de = 0.0
    n = 0
    lin = np.empty(3)
    mid = np.empty(3)
    # OKLab of recently seen source colours (neighbouring pixels repeat colours): the cube
    # roots are most of the cost, and a cached value is the very same number
    for r in range(xa.shape[0]):
        y = y0 + r
        for x in range(xa[r], xb[r]):
            if has_mask and not V[y - py0, x - px0]:
                continue
            lab = L[y - oy0, x - ox0]
            for c in range(n_ch):
                d = np.float64(P[y - py0, x - px0, c]) - colours[lab, c]
                sse += d * d
            n += 1
            if with_de:
                code = ((np.int64(P[y - py0, x - px0, 0]) << 32) | (np.int64(P[y - py0, x - px0, 1]) << 16)
                        | np.int64(P[y - py0, x - px0, 2]))
                slot = (code * np.int64(0x9E3779B1)) >> 20 & (cache_code.shape[0] - 1)
                if cache_code[slot] != code:
                    for c in range(3):
                        lin[c] = lin_lut[np.int64(P[y - py0, x - px0, c])]
                    for q in range(3):
                        mid[q] = np.cbrt(m1[q, 0] * lin[0] + m1[q, 1] * lin[1] + m1[q, 2] * lin[2])
                    for q in range(3):
                        cache_ok[slot, q] = m2[q, 0] * mid[0] + m2[q, 1] * mid[1] + m2[q, 2] * mid[2]
                    cache_code[slot] = code
                s = 0.0
                for q in range(3):
                    v = cache_ok[slot, q] - ok_colours[lab, q]
                    s += v * v
                de += np.sqrt(s)
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
                np.ascontiguousarray(xb, dtype=np.int64), colours, ok_colours, lin_lut, with_de, _M1, _M2,
                *ok_cache(), out)
    return out


@numba.njit(**_JIT)
def _colour_error_rows(colours, counts, labels, palette, ok_palette, lin_lut, with_de, m1, m2, out):  # pragma: no cover
    n_ch = colours.shape[1]
    sse = 0.0
    de = 0.0
    n = 0.0
    lin = np.empty(3)
    mid = np.empty(3)
    for i in range(colours.shape[0]):
        w = np.float64(counts[i])
        lab = labels[i]
        s = 0.0
        for c in range(n_ch):
            d = np.float64(colours[i, c]) - palette[lab, c]
            s += d * d
        sse += w * s
        n += w
        if with_de:
            for c in range(3):
                lin[c] = lin_lut[np.int64(colours[i, c])]
            for q in range(3):
                mid[q] = np.cbrt(m1[q, 0] * lin[0] + m1[q, 1] * lin[1] + m1[q, 2] * lin[2])
            s = 0.0
            for q in range(3):
                v = m2[q, 0] * mid[0] + m2[q, 1] * mid[1] + m2[q, 2] * mid[2] - ok_palette[lab, q]
                s += v * v
            de += w * np.sqrt(s)
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
    scale = float(np.iinfo(colours.dtype).max)
    palette = np.ascontiguousarray(palette, dtype=np.float64)
    with_de = colours.shape[1] == 3
    if with_de:
        levels = np.arange(int(scale) + 1, dtype=np.float64) / scale
        lin_lut = np.where(levels <= 0.04045, levels / 12.92, ((levels + 0.055) / 1.055) ** 2.4)
        ok_palette = to_space(palette, "oklab", scale) / 100.0
    else:
        lin_lut = np.zeros(1)
        ok_palette = np.zeros((len(palette), 3))
    out = np.zeros(3)
    _colour_error_rows(colours, np.ascontiguousarray(counts), np.ascontiguousarray(labels), palette, ok_palette,
                       lin_lut, with_de, _M1, _M2, out)
    return out


#: first guess of a positive double's cube root from its bits: the exponent (and mantissa) over 3
_CBRT_MAGIC = 0x2A9F7893782DA1CE


@numba.njit(error_model="numpy", **_JIT)
def _cube_roots(x, out):  # pragma: no cover - jitted
    """Cube roots of ``x`` into ``out``: within 3 ulp of ``np.cbrt``, a third of its time in batches.

    A guess from the bits (the exponent over 3, ~3% off), two Halley steps
    (error cubed each: ~1e-13) and a Newton step to the last bits, in loops
    without a branch (they vectorise; numpy's error model: no check of the
    divisors).  Values outside [1e-150, 1e150] (zero, negative, non-finite:
    no underflow or overflow of y**3 on the way) then take ``np.cbrt``.
    """
    n = x.shape[0]
    xi = x.view(np.int64)
    oi = out.view(np.int64)
    for i in range(n):
        oi[i] = xi[i] // 3 + np.int64(_CBRT_MAGIC)
    for i in range(n):
        v = x[i]
        y = out[i]
        y3 = y * y * y
        y = y * (y3 + 2.0 * v) / (2.0 * y3 + v)
        y3 = y * y * y
        y = y * (y3 + 2.0 * v) / (2.0 * y3 + v)
        out[i] = y - (y * y * y - v) / (3.0 * y * y)
    for i in range(n):
        v = x[i]
        if not (v >= 1e-150 and v <= 1e150):
            out[i] = np.cbrt(v)


def cube_roots(x: np.ndarray) -> np.ndarray:
    """Cube roots of float64 values, within 3 ulp of ``np.cbrt`` (see :func:`_cube_roots`).

    Examples
    --------
    >>> cube_roots(np.array([27.0, 0.0, -8.0, 1e-3])).round(12).tolist()
    [3.0, 0.0, -2.0, 0.1]
    """
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(x)
    _cube_roots(x, out)
    return out


@numba.njit(**_JIT)
def _labelled_error_rows(P, V, has_mask, L, colours, ok_colours, lin_lut, with_de, m1, m2, cache_code, cache_ok,
                         out):  # pragma: no cover - jitted
    """:func:`_error_rows` over a whole window, row by row, the cube roots of a row's new colours in one batch.

    The sums are added in pixel order, as :func:`_error_rows` adds them; a
    colour's OKLab is the cache's when seen recently, else computed for the
    row's misses together (:func:`_cube_roots`, within 3 ulp of ``np.cbrt``).
    """
    h, w, n_ch = P.shape
    sse = 0.0
    de = 0.0
    n = 0
    ok_row = np.empty((w, 3))
    miss = np.empty(w, dtype=np.int64)
    lms = np.empty(3 * w)
    roots = np.empty(3 * w)
    lin = np.empty(3)
    mask = cache_code.shape[0] - 1
    for y in range(h):
        n_miss = 0
        for x in range(w):
            if has_mask and not V[y, x]:
                continue
            lab = L[y, x]
            for c in range(n_ch):
                d = np.float64(P[y, x, c]) - colours[lab, c]
                sse += d * d
            n += 1
            if with_de:
                code = (np.int64(P[y, x, 0]) << 32) | (np.int64(P[y, x, 1]) << 16) | np.int64(P[y, x, 2])
                slot = (code * np.int64(0x9E3779B1)) >> 20 & mask
                if cache_code[slot] == code:
                    for q in range(3):
                        ok_row[x, q] = cache_ok[slot, q]
                else:
                    for c in range(3):
                        lin[c] = lin_lut[np.int64(P[y, x, c])]
                    for q in range(3):
                        lms[3 * n_miss + q] = m1[q, 0] * lin[0] + m1[q, 1] * lin[1] + m1[q, 2] * lin[2]
                    miss[n_miss] = x
                    n_miss += 1
        if not with_de:
            continue
        _cube_roots(lms[:3 * n_miss], roots[:3 * n_miss])
        for i in range(n_miss):
            x = miss[i]
            code = (np.int64(P[y, x, 0]) << 32) | (np.int64(P[y, x, 1]) << 16) | np.int64(P[y, x, 2])
            slot = (code * np.int64(0x9E3779B1)) >> 20 & mask
            for q in range(3):
                v = m2[q, 0] * roots[3 * i] + m2[q, 1] * roots[3 * i + 1] + m2[q, 2] * roots[3 * i + 2]
                ok_row[x, q] = v
                cache_ok[slot, q] = v
            cache_code[slot] = code
        for x in range(w):
            if has_mask and not V[y, x]:
                continue
            lab = L[y, x]
            s = 0.0
            for q in range(3):
                v = ok_row[x, q] - ok_colours[lab, q]
                s += v * v
            de += np.sqrt(s)
    out[0] += sse
    out[1] += de
    out[2] += n


def labelled_error_sums(pixels: np.ndarray, labels: np.ndarray, colours: np.ndarray,
                        valid: np.ndarray | None = None,
                        cache: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """:func:`error_sums` of a whole window and its labels, the cube roots batched.

    The same sums as :func:`error_sums` (squared error, OKLab Delta E,
    pixels), the squared error and the count bit for bit; each OKLab
    coordinate within a few ulp (:func:`cube_roots`), at about half the cost
    for pixels of many distinct colours (16-bit photographs).

    Parameters
    ----------
    pixels : ndarray of shape (h, w, C), uint8 or uint16
    labels : ndarray of shape (h, w), integers
    colours : ndarray of shape (k, C)
        The palette as written (source scale).
    valid : ndarray of shape (h, w) of bool or None, default=None
    cache : (codes, values) or None, default=None
        A cache of :func:`ok_cache` to keep across calls of one thread (None: a fresh one).

    Returns
    -------
    sums : ndarray of shape (3,), float64
    """
    pixels = np.ascontiguousarray(pixels)
    colours, ok_colours, lin_lut, with_de = sum_tables(colours, pixels.dtype)
    has_mask = valid is not None
    V = np.ascontiguousarray(valid, dtype=np.bool_) if has_mask else np.ones((1, 1), dtype=np.bool_)
    out = np.zeros(3)
    _labelled_error_rows(pixels, V, has_mask, np.ascontiguousarray(labels), colours, ok_colours, lin_lut, with_de,
                         _M1, _M2, *(ok_cache() if cache is None else cache), out)
    return out
