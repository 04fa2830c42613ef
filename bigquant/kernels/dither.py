"""Dithering kernels: exact Floyd--Steinberg error diffusion and ordered (threshold) dithering.

Everything here is integer arithmetic, so a pixel's result depends only on the
values it reads, never on the order floating-point sums happen to run in; the
tiled, parallel dithering of :mod:`bigquant.pipeline.dither` runs the very same
per-pixel step (:func:`_fs_pixel`) over other regions and is byte-identical to
the serial reference :func:`floyd_steinberg`.

The reference, stated once (every implementation follows it):

- colours are the integer palette colours ``P`` (k, C), pixels integers ``v``
  (H, W, C); values are handled in sixteenths of a level ("units");
- pixels are visited in raster order (row by row, left to right, no serpentine);
- pixel (y, x) pulls the error ``e`` of its four earlier neighbours, channel by
  channel: ``S = 7 e(y, x-1) + 1 e(y-1, x-1) + 5 e(y-1, x) + 3 e(y-1, x+1)``,
  added in that order (integers: any order gives the same sum); neighbours
  outside the image or masked have ``e = 0``;
- with the strength ``s`` as ``q = round(256 s)`` (0..256), the target is
  ``t = 16 v + floor(S q / 4096)``, clamped to ``[0, 16 max_value]`` (the
  clamp is a function of the pixel's own values only);
- the label is the palette colour nearest ``t`` (squared Euclidean distance to
  ``16 P``, exact in int64), the lowest index on ties;
- the pixel's error is ``e = t - 16 P[label]``; a masked pixel gets label 0
  and ``e = 0`` (it neither receives nor passes error).

Three-channel images (most of them) run the step written out channel by channel
with the pulled errors carried in registers (:func:`_rgb_step_rows`), two rows
side by side, the lower two columns behind the upper: a pixel's step is a
chain of dependent operations (pull, target, nearest colour, error, next
pixel), and two independent chains keep the processor busy.  The step reads
one-dimensional row views at unsigned columns: numba tests every signed index
for a negative value, and those tests were a sixth of the step's operations.  The others run a
loop over the channels, a pixel after the other.  The tests hold every path to
the rule above (``tests/kernels/test_dither.py``).

The nearest colour among up to 256 colours (three channels) is the smallest of
one exact integer key per colour, all computed at once with no
data-dependent branch (:func:`_colour_keys`); otherwise it is found through a
:func:`candidate_grid`: the clamped colour cube is cut into cells, and each
cell lists, in index order, every palette colour that can be the nearest of
some point of the cell -- an exact shortcut, not an approximation.
"""

from __future__ import annotations

import numba
import numpy as np

from bigquant.kernels._jit import JIT as _JIT
from bigquant.kernels.spaces import _M1_32, _M2_32, _error_row, _sums_scratch, sum_tables

__all__ = [
    "UNITS",
    "candidate_grid",
    "error_dtype",
    "floyd_steinberg",
    "fs_rows",
    "nearest_in_grid",
    "ordered_dither",
    "strength_q",
    "unskew_labels",
]

#: one level of a pixel value is this many error units (errors are 1/16 levels)
UNITS = 16

#: about this many cells in a candidate grid, whatever the number of channels
_GRID_CELLS = 1 << 15

#: three-channel palettes of up to this many colours find the nearest colour by comparing them all
#: (:func:`_colour_keys`; faster than the grid's branches at every k measured, 16 to 256)
_KEYS_MAX_K = 256

#: :func:`_nearest_keys` compares the colours this many at a time (a vector's worth of float64s)
_KEYS_BLOCK = 8


def error_dtype(dtype: np.dtype) -> np.dtype:
    """The narrowest integer type that holds every error of pixels of ``dtype`` (int16 for uint8, else int32).

    An error is ``t - 16 P[label]`` with both terms in ``[0, 16 max_value]``,
    so its magnitude is at most ``16 max_value`` (4080 for uint8): the error
    buffers of :func:`fs_rows` may be this type, half the memory of int32.
    """
    span = UNITS * int(np.iinfo(dtype).max)
    return np.dtype(np.int16) if span <= np.iinfo(np.int16).max else np.dtype(np.int32)


def strength_q(strength: float) -> int:
    """The dither strength in [0, 1] as the integer ``round(256 * strength)`` the kernels use."""
    return int(round(float(strength) * 256))


@numba.njit(**_JIT)
def _axis_tables(col16, g, shift):  # pragma: no cover - jitted
    """Per channel, per cell of that axis, per colour: squared nearest and farthest distance."""
    k, n_ch = col16.shape
    near = np.empty((n_ch, g, k), dtype=np.int64)
    far = np.empty((n_ch, g, k), dtype=np.int64)
    for ci in range(g):
        lo = ci << shift  # the unit values t with t >> shift == ci (the last cell may reach past span)
        hi = ((ci + 1) << shift) - 1
        for c in range(n_ch):
            for j in range(k):
                p = col16[j, c]
                d = lo - p if p < lo else (p - hi if p > hi else 0)
                near[c, ci, j] = d * d
                f = max(p - lo, hi - p)
                far[c, ci, j] = f * f
    return near, far


@numba.njit(**_JIT)
def _grid_pass(near, far, g, offsets, cand, fill):  # pragma: no cover - jitted
    n_ch, _, k = near.shape
    n_cells = offsets.shape[0] - 1
    mind = np.empty(k, dtype=np.int64)
    maxd = np.empty(k, dtype=np.int64)
    for cell in range(n_cells):
        mind[:] = 0
        maxd[:] = 0
        rest = cell
        for c in range(n_ch):
            ci = rest % g
            rest //= g
            for j in range(k):
                mind[j] += near[c, ci, j]
                maxd[j] += far[c, ci, j]
        best_max = maxd.min()
        pos = offsets[cell]
        count = 0
        for j in range(k):
            if mind[j] <= best_max:
                if fill:
                    cand[pos + count] = j
                count += 1
        if not fill:
            offsets[cell + 1] = offsets[cell] + count


def candidate_grid(colours: np.ndarray, max_value: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Exact nearest-colour shortcut: the palette colours each cell of the colour cube may need.

    Parameters
    ----------
    colours : ndarray of shape (k, C)
        Integer palette colours, in [0, ``max_value``].
    max_value : int
        The largest pixel value (255 for uint8, 65535 for uint16).

    Returns
    -------
    offsets : ndarray of shape (n_cells + 1,), int64
        Cell ``i`` lists ``cand[offsets[i]:offsets[i + 1]]``.
    cand : ndarray of int32
        Palette indices, increasing within each cell.
    shift : int
        Cell of unit value ``t`` along a channel: ``t >> shift``.
    span : int
        ``UNITS * max_value``, the largest target in units.
    """
    col16 = np.ascontiguousarray(np.asarray(colours, dtype=np.int64) * UNITS)
    n_ch = col16.shape[1]
    span = UNITS * int(max_value)
    target = max(1, int(round(_GRID_CELLS ** (1.0 / n_ch))))
    shift = 0
    while (span >> shift) + 1 > target:
        shift += 1
    g = (span >> shift) + 1
    n_cells = g**n_ch
    near, far = _axis_tables(col16, np.int64(g), np.int64(shift))
    offsets = np.zeros(n_cells + 1, dtype=np.int64)
    _grid_pass(near, far, g, offsets, np.empty(0, dtype=np.int32), False)
    cand = np.empty(int(offsets[-1]), dtype=np.int32)
    _grid_pass(near, far, g, offsets, cand, True)
    return offsets, cand, shift, span


@numba.njit(inline="always", **_JIT)
def _nearest_grid(t, col16, offsets, cand, shift, g):  # pragma: no cover - jitted
    """Index of the colour nearest the unit target ``t`` (C,), lowest index on ties."""
    n_ch = t.shape[0]
    cell = 0
    mult = 1
    for c in range(n_ch):
        cell += (t[c] >> shift) * mult
        mult *= g
    best = -1
    best_d = np.int64(0)
    for p in range(offsets[cell], offsets[cell + 1]):
        j = cand[p]
        d = np.int64(0)
        for c in range(n_ch):
            diff = t[c] - col16[j, c]
            d += diff * diff
        if best < 0 or d < best_d:
            best = j
            best_d = d
    return best


@numba.njit(inline="always", **_JIT)
def _fs_pixel(P, py, px, valid, E, ey, ex, q, col16, offsets, cand, shift, span, t):  # pragma: no cover
    """The reference step of one pixel: pull, clamp, pick, store the error; returns the label."""
    n_ch = t.shape[0]
    if not valid:
        for c in range(n_ch):
            E[ey, ex, c] = 0
        return 0
    for c in range(n_ch):
        s = (np.int64(7) * E[ey, ex - 1, c] + np.int64(1) * E[ey - 1, ex - 1, c]
             + np.int64(5) * E[ey - 1, ex, c] + np.int64(3) * E[ey - 1, ex + 1, c])
        v = np.int64(UNITS) * np.int64(P[py, px, c]) + ((s * q) >> 12)  # floor(s q / 4096)
        if v < 0:
            v = 0
        elif v > span:
            v = span
        t[c] = v
    best = _nearest_grid(t, col16, offsets, cand, shift, (span >> shift) + 1)
    for c in range(n_ch):
        E[ey, ex, c] = t[c] - col16[best, c]
    return best


@numba.njit(inline="always", **_JIT)
def _nearest_keys(t0, t1, t2, keys, index_mask):  # pragma: no cover - jitted
    """:func:`_nearest_grid` of a three-channel target by comparing every colour at once (see :func:`_colour_keys`)."""
    f0 = np.float64(t0)
    f1 = np.float64(t1)
    f2 = np.float64(t2)
    best = np.int64(1) << 62
    for j in range(keys.shape[1]):  # branch-free: vectorised, no data-dependent jumps
            best = min(best, np.int64(keys[0, j] + (keys[1, j] * f0 + keys[2, j] * f1) + keys[3, j] * f2))
    return best & index_mask


def _colour_keys(col16: np.ndarray, span: int) -> tuple[np.ndarray, int] | None:
    """Coefficients that rank the colours by distance to a target in one number each, or None if inexact.

    ``key_j(t) = 2^b (|P_j|^2 - 2 t.P_j) + j`` with ``2^b > k`` orders the
    colours as the squared distance ``|t - P_j|^2`` does (it differs by
    ``2^b |t|^2``, the same for every j), the lowest index first on ties, and
    its low ``b`` bits are the index: the nearest colour is ``min_j key_j & (2^b - 1)``.
    Every term is an integer, so float64 computes it exactly while
    ``2^b (3 span^2 + 6 span^2) + k < 2^53``; None otherwise (then the grid
    serves).  Returns (keys (4, k): constant then one row per channel, the index mask).
    """
    k, n_ch = col16.shape
    bits = max(1, (k - 1).bit_length())
    if n_ch != 3 or k > _KEYS_MAX_K or (9 * span * span + 1) << bits >= 1 << 53:
        return None
    keys = np.empty((4, k))
    keys[0] = ((col16 * col16).sum(axis=1) << bits) + np.arange(k)
    keys[1:] = (-2 * col16.T) << bits
    # whole blocks: the extra columns repeat colour 0's key, which changes no minimum
    pad = -k % _KEYS_BLOCK
    return np.ascontiguousarray(np.concatenate([keys, np.repeat(keys[:, :1], pad, axis=1)], axis=1)), (1 << bits) - 1


@numba.njit(inline="always", **_JIT)
def _rgb_enter(E, ey, ex):  # pragma: no cover - jitted
    """The errors a row's step carries as it enters column ``ex`` of the error buffer: left, up-left, up."""
    return (np.int64(E[ey, ex - 1, 0]), np.int64(E[ey, ex - 1, 1]), np.int64(E[ey, ex - 1, 2]),
            np.int64(E[ey - 1, ex - 1, 0]), np.int64(E[ey - 1, ex - 1, 1]), np.int64(E[ey - 1, ex - 1, 2]),
            np.int64(E[ey - 1, ex, 0]), np.int64(E[ey - 1, ex, 1]), np.int64(E[ey - 1, ex, 2]))


@numba.njit(inline="always", **_JIT)
def _rgb_step_rows(Prow, xp, masked, Eup, Ecur, ex, state, q, span, col16, keys, index_mask,
                   masked_label):  # pragma: no cover - jitted
    """:func:`_fs_pixel` written out for three channels, the nearest colour by :func:`_nearest_keys`.

    ``Prow`` is the pixel's row of pixels, ``Eup`` and ``Ecur`` the rows of
    errors above it and its own, ``xp`` and ``ex`` its columns in them
    (unsigned: no test for a negative index).  ``state`` holds the errors of
    the pixel's left, up-left and up neighbours (read as the row advances:
    the row above once per pixel, the left neighbour not at all); returns the
    state for the next column and the label.
    """
    l0, l1, l2, ul0, ul1, ul2, u0, u1, u2 = state
    xr = ex + np.uint64(1)
    ur0 = np.int64(Eup[xr, 0])
    ur1 = np.int64(Eup[xr, 1])
    ur2 = np.int64(Eup[xr, 2])
    t0 = np.int64(UNITS) * np.int64(Prow[xp, 0]) + (((7 * l0 + ul0 + 5 * u0 + 3 * ur0) * q) >> 12)
    t1 = np.int64(UNITS) * np.int64(Prow[xp, 1]) + (((7 * l1 + ul1 + 5 * u1 + 3 * ur1) * q) >> 12)
    t2 = np.int64(UNITS) * np.int64(Prow[xp, 2]) + (((7 * l2 + ul2 + 5 * u2 + 3 * ur2) * q) >> 12)
    t0 = min(max(t0, np.int64(0)), span)
    t1 = min(max(t1, np.int64(0)), span)
    t2 = min(max(t2, np.int64(0)), span)
    best = np.uint64(_nearest_keys(t0, t1, t2, keys, index_mask))
    if masked:
        l0 = np.int64(0)
        l1 = np.int64(0)
        l2 = np.int64(0)
    else:
        l0 = t0 - col16[best, 0]
        l1 = t1 - col16[best, 1]
        l2 = t2 - col16[best, 2]
    Ecur[ex, 0] = l0
    Ecur[ex, 1] = l1
    Ecur[ex, 2] = l2
    return (l0, l1, l2, u0, u1, u2, ur0, ur1, ur2), (masked_label if masked else np.int64(best))


@numba.njit(**_JIT)
def _rgb_row_grid(P, py, dx_p, V, vy, dx_v, has_mask, E, ey, dx_e, L, li, dx_l, masked_label, xa, xb, q, col16,
                  offsets, cand, shift, span):  # pragma: no cover - jitted
    """:func:`_fs_pixel` over columns ``[xa, xb)`` of one row, three channels, through the candidate grid.

    For palettes :func:`_colour_keys` does not serve; the pulled errors
    carried in registers.  ``dx_*`` turn a column into a column of each
    array; labels go to ``L[li, x - dx_l]``.
    """
    g = (span >> shift) + 1
    # errors of (y, x - 1), (y - 1, x - 1), (y - 1, x), as the loop enters column xa
    l0 = np.int64(E[ey, xa - 1 - dx_e, 0])
    l1 = np.int64(E[ey, xa - 1 - dx_e, 1])
    l2 = np.int64(E[ey, xa - 1 - dx_e, 2])
    ul0 = np.int64(E[ey - 1, xa - 1 - dx_e, 0])
    ul1 = np.int64(E[ey - 1, xa - 1 - dx_e, 1])
    ul2 = np.int64(E[ey - 1, xa - 1 - dx_e, 2])
    u0 = np.int64(E[ey - 1, xa - dx_e, 0])
    u1 = np.int64(E[ey - 1, xa - dx_e, 1])
    u2 = np.int64(E[ey - 1, xa - dx_e, 2])
    for x in range(xa, xb):
        ex = x - dx_e
        ur0 = np.int64(E[ey - 1, ex + 1, 0])
        ur1 = np.int64(E[ey - 1, ex + 1, 1])
        ur2 = np.int64(E[ey - 1, ex + 1, 2])
        if has_mask and not V[vy, x - dx_v]:
            l0 = np.int64(0)
            l1 = np.int64(0)
            l2 = np.int64(0)
            lab = masked_label
        else:
            t0 = np.int64(UNITS) * np.int64(P[py, x - dx_p, 0]) + (((7 * l0 + ul0 + 5 * u0 + 3 * ur0) * q) >> 12)
            t1 = np.int64(UNITS) * np.int64(P[py, x - dx_p, 1]) + (((7 * l1 + ul1 + 5 * u1 + 3 * ur1) * q) >> 12)
            t2 = np.int64(UNITS) * np.int64(P[py, x - dx_p, 2]) + (((7 * l2 + ul2 + 5 * u2 + 3 * ur2) * q) >> 12)
            t0 = min(max(t0, np.int64(0)), span)
            t1 = min(max(t1, np.int64(0)), span)
            t2 = min(max(t2, np.int64(0)), span)
            cell = (t0 >> shift) + g * ((t1 >> shift) + g * (t2 >> shift))
            best = -1
            best_d = np.int64(0)
            for p in range(offsets[cell], offsets[cell + 1]):
                j = cand[p]
                d0 = t0 - col16[j, 0]
                d1 = t1 - col16[j, 1]
                d2 = t2 - col16[j, 2]
                d = d0 * d0 + d1 * d1 + d2 * d2
                if best < 0 or d < best_d:
                    best = j
                    best_d = d
            l0 = t0 - col16[best, 0]
            l1 = t1 - col16[best, 1]
            l2 = t2 - col16[best, 2]
            lab = best
        E[ey, ex, 0] = l0
        E[ey, ex, 1] = l1
        E[ey, ex, 2] = l2
        L[li, x - dx_l] = lab
        ul0, ul1, ul2 = u0, u1, u2
        u0, u1, u2 = ur0, ur1, ur2


@numba.njit(inline="always", **_JIT)
def _masked_at(V, has_mask, vy, vx):  # pragma: no cover - jitted
    return has_mask and not V[vy, vx]


@numba.njit(inline="always", **_JIT)
def _never_masked(V, has_mask, vy, vx):  # pragma: no cover - jitted
    return False


@numba.njit(**_JIT)
def _rgb_run(P, py, dx_p, V, vy, dx_v, has_mask, E, ey, dx_e, L, li, dx_l, xa, xb, state, q, span, col16, keys,
             index_mask, masked_label):  # pragma: no cover - jitted
    """Columns ``[xa, xb)`` of one row, from ``state``; returns the state after them.

    ``dx_*`` turn a column into a column of each array; labels go to
    ``L[li, x - dx_l]``.  The stretches a row runs alone (the start of the
    upper row of a pair, the ends, a row without a partner).
    """
    Prow, Eup, Ecur, Lrow = P[py], E[ey - 1], E[ey], L[li]
    for x in range(xa, xb):
        masked = has_mask and not V[vy, x - dx_v]
        state, lab = _rgb_step_rows(Prow, np.uint64(x - dx_p), masked, Eup, Ecur, np.uint64(x - dx_e), state, q,
                                    span, col16, keys, index_mask, masked_label)
        Lrow[np.uint64(x - dx_l)] = lab
    return state


@numba.njit(inline="always", **_JIT)
def _rgb_pair(P, py, dx_p, V, has_mask, E, ey, dx_e, L, dx_l, x, x1, steps, sa, sb, q, span, col16, keys,
              index_mask, masked_label, is_masked):  # pragma: no cover - jitted
    """``steps`` pixels of rows ``py`` (from column ``x``) and ``py + 1`` (from ``x1``) side by side.

    ``is_masked`` is a function, inlined: one loop for each way of reading
    the mask (a test per pixel of a flag, even a constant one, keeps the
    two chains from overlapping: 41 against 12 ns a pixel).  Returns the
    two rows' states.
    """
    # rows as one-dimensional views and columns as unsigned indices: no negative-index test on any access
    Pa, Pb = P[py], P[py + 1]
    E0, E1, E2 = E[ey - 1], E[ey], E[ey + 1]
    La, Lb = L[0], L[1]
    pa, pb = np.uint64(x - dx_p), np.uint64(x1 - dx_p)
    ea, eb = np.uint64(x - dx_e), np.uint64(x1 - dx_e)
    la, lb = np.uint64(x - dx_l), np.uint64(x1 - dx_l)
    for i in range(np.uint64(steps)):
        masked = is_masked(V, has_mask, py, x + np.int64(i) - dx_p)
        sa, lab = _rgb_step_rows(Pa, pa + i, masked, E0, E1, ea + i, sa, q, span, col16, keys, index_mask,
                                 masked_label)
        La[la + i] = lab
        masked = is_masked(V, has_mask, py + 1, x1 + np.int64(i) - dx_p)
        sb, lab = _rgb_step_rows(Pb, pb + i, masked, E1, E2, eb + i, sb, q, span, col16, keys, index_mask,
                                 masked_label)
        Lb[lb + i] = lab
    return sa, sb


@numba.njit(error_model="numpy", **_JIT)  # no zero test on the divisions of the sums' cube roots
def _fs_rows(P, py0, px0, V, has_mask, E, ey0, ex0, out, oy0, ox0, out_skew, write_out, masked_label,
             y0, xa, xb, q, col16, offsets, cand, shift, span, keys, index_mask, with_sums, tables,
             sums):  # pragma: no cover - jitted
    n_ch = col16.shape[1]
    colf, okc, lin_lut, m1, m2 = tables
    t = np.empty(n_ch, dtype=np.int64)
    sse = 0.0
    de = 0.0
    n = 0
    n_rows = xa.shape[0]
    if n_ch == 3 and n_rows > 0:
        lx0 = xa.min()
        width = max(np.int64(1), xb.max() - lx0)
        L = np.empty((2, width), dtype=np.int32)
        scratch = _sums_scratch()
        r = 0
        while r < n_rows:
            # rows two by two (the key search; the grid's branches gain nothing), an empty row alone
            pair = keys.shape[1] > 0 and r + 1 < n_rows and xa[r] < xb[r] and xa[r + 1] < xb[r + 1]
            y = y0 + r
            a0, b0 = xa[r], xb[r]
            if keys.shape[1] == 0:
                if a0 < b0:
                    _rgb_row_grid(P, y - py0, px0, V, y - py0, px0, has_mask, E, y - ey0, ex0, L, 0, lx0,
                                  masked_label, a0, b0, q, col16, offsets, cand, shift, span)
            elif not pair and a0 < b0:
                sa = _rgb_enter(E, y - ey0, a0 - ex0)
                _rgb_run(P, y - py0, px0, V, y - py0, px0, has_mask, E, y - ey0, ex0, L, 0, lx0, a0, b0, sa, q,
                         span, col16, keys, index_mask, masked_label)
            elif pair:
                # Each pixel's step is a chain of dependent operations: two rows go side by side, the lower
                # row two columns behind the upper (its pixel (y + 1, x) pulls the error of (y, x + 1),
                # which the upper row's step has stored by then), and the processor runs the two chains
                # at once.  The upper row runs alone until the lower may start; columns outside the
                # upper row's range are not written here at all (their errors are final already).
                a1, b1 = xa[r + 1], xb[r + 1]
                x = max(a0, min(a1 + 2, b0))
                sa = _rgb_enter(E, y - ey0, a0 - ex0)
                sa = _rgb_run(P, y - py0, px0, V, y - py0, px0, has_mask, E, y - ey0, ex0, L, 0, lx0, a0, x, sa,
                              q, span, col16, keys, index_mask, masked_label)
                sb = _rgb_enter(E, y + 1 - ey0, a1 - ex0)
                steps = min(b0 - x, b1 - a1)
                if has_mask:
                    sa, sb = _rgb_pair(P, y - py0, px0, V, has_mask, E, y - ey0, ex0, L, lx0, x, a1, steps, sa,
                                       sb, q, span, col16, keys, index_mask, masked_label, _masked_at)
                else:
                    sa, sb = _rgb_pair(P, y - py0, px0, V, has_mask, E, y - ey0, ex0, L, lx0, x, a1, steps, sa,
                                       sb, q, span, col16, keys, index_mask, masked_label, _never_masked)
                # the upper row's rest, then the lower row's
                _rgb_run(P, y - py0, px0, V, y - py0, px0, has_mask, E, y - ey0, ex0, L, 0, lx0, x + steps, b0,
                         sa, q, span, col16, keys, index_mask, masked_label)
                _rgb_run(P, y + 1 - py0, px0, V, y + 1 - py0, px0, has_mask, E, y + 1 - ey0, ex0, L, 1, lx0,
                         a1 + steps, b1, sb, q, span, col16, keys, index_mask, masked_label)
            for i in range(2 if pair else 1):
                y = y0 + r + i
                a, b = xa[r + i], xb[r + i]
                if write_out and a < b:  # row y of out starts out_skew columns further left than the row above
                    # one-dimensional rows, unsigned indices (no negative-index test): the copy vectorises
                    orow, lrow = out[y - oy0], L[i]
                    so = np.uint64(a - ox0 + out_skew * (y - oy0))
                    sl = np.uint64(a - lx0)
                    for c in range(np.uint64(b - a)):
                        orow[so + c] = lrow[sl + c]
                if with_sums:  # in raster order, as error_sums adds them
                    sse, de, n = _error_row(P, y - py0, px0, V, y - py0, px0, has_mask, L, i, lx0, xa[r + i],
                                            xb[r + i], colf, okc, lin_lut, True, m1, m2, scratch, sse, de, n)
            r += 2 if pair else 1
    elif n_rows > 0:
        lx0 = xa.min()
        L = np.empty((1, max(np.int64(1), xb.max() - lx0)), dtype=np.int32)
        scratch = _sums_scratch()
        for r in range(n_rows):
            y = y0 + r
            for x in range(xa[r], xb[r]):
                valid = True
                if has_mask:
                    valid = V[y - py0, x - px0]
                lab = _fs_pixel(P, y - py0, x - px0, valid, E, y - ey0, x - ex0,
                                q, col16, offsets, cand, shift, span, t)
                L[0, x - lx0] = lab if valid else masked_label
                if write_out:
                    out[y - oy0, x - ox0 + out_skew * (y - oy0)] = L[0, x - lx0]
            if with_sums:  # as error_sums adds them (no Delta E but of three channels)
                sse, de, n = _error_row(P, y - py0, px0, V, y - py0, px0, has_mask, L, 0, lx0, xa[r], xb[r], colf,
                                        okc, lin_lut, False, m1, m2, scratch, sse, de, n)
    sums[0] += sse
    sums[1] += de
    sums[2] += n


#: the quality tables :func:`fs_rows` passes when it keeps no sums (unused, of the types it compiles for)
_NO_TABLES = (np.zeros((1, 1)), np.zeros((1, 3), dtype=np.float32), np.zeros(1, dtype=np.float32), _M1_32,
              _M2_32)


def fs_rows(
    pixels: np.ndarray,
    origin: tuple[int, int],
    valid: np.ndarray | None,
    errors: np.ndarray,
    error_origin: tuple[int, int],
    out: np.ndarray | None,
    out_origin: tuple[int, int],
    y0: int,
    xa: np.ndarray,
    xb: np.ndarray,
    q: int,
    colours: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray, int, int],
    masked_label: int = 0,
    sums: np.ndarray | None = None,
    out_skew: int = 0,
) -> None:
    """Diffuse error over rows ``y0 + r``, columns ``[xa[r], xb[r])`` (global coordinates), in raster order.

    Parameters
    ----------
    pixels : ndarray of shape (h, w, C), integers
        The pixels of a window of the image whose top-left pixel is ``origin``.
    valid : ndarray of shape (h, w), bool, or None
        Which pixels of the window are image (None: all).
    errors : ndarray of shape (he, we, C), int32 (or :func:`error_dtype`)
        Error buffer whose element [0, 0] is the global pixel ``error_origin``;
        it must hold every neighbour the rows pull from (already final) and
        receives the errors of the rows.
    out : ndarray of shape (ho, wo) or None
        Labels, element [0, 0] at ``out_origin``; None: labels not kept.
        With ``out_skew`` s, row ``r`` of ``out`` starts ``s r`` columns
        further left: the label of pixel (y, x) is ``out[y - oy, x - ox + s (y - oy)]``
        (a slanted tile's labels packed into (h, W), ``s = 1``).
    y0, xa, xb
        The rows and their column ranges (global), visited in this order.
    q : int
        The strength as :func:`strength_q`.
    colours : ndarray of shape (k, C)
        Integer palette colours.
    grid
        :func:`candidate_grid` of ``colours``.
    masked_label : int, default=0
        The label written in ``out`` for the pixels ``valid`` masks out.
    sums : ndarray of shape (3,), float64, or None, default=None
        When given, receives (adds) the quality sums of the rows' pixels and
        their labels -- the very numbers
        :func:`bigquant.kernels.spaces.error_sums` gives for them (with
        ``rows=(y0, xa, xb)``), computed from each pair of rows as soon as
        it is dithered, by the same row function (uint8 or uint16 pixels).
    """
    offsets, cand, shift, span = grid
    col16 = np.ascontiguousarray(np.asarray(colours, dtype=np.int64) * UNITS)
    has_mask = valid is not None
    V = valid if has_mask else np.ones((1, 1), dtype=np.bool_)
    keep = out is not None
    O = out if keep else np.zeros((1, 1), dtype=np.uint8)
    pixels = np.ascontiguousarray(pixels)  # one compiled layout: a strided edge block is copied
    with_sums = sums is not None
    if with_sums:
        colf, okc, lin_lut, _ = sum_tables(colours, pixels.dtype)
        tables = (colf, okc, lin_lut, _M1_32, _M2_32)
    else:
        tables = _NO_TABLES
        sums = np.zeros(3)
    fast = _colour_keys(col16, span)
    keys, index_mask = fast if fast is not None else (np.empty((4, 0)), 0)
    _fs_rows(pixels, origin[0], origin[1], V, has_mask, errors, error_origin[0], error_origin[1],
             O, out_origin[0], out_origin[1], np.int64(out_skew), keep, np.int64(masked_label), int(y0),
             np.ascontiguousarray(xa, dtype=np.int64), np.ascontiguousarray(xb, dtype=np.int64),
             np.int64(q), col16, offsets, cand, np.int64(shift), np.int64(span), keys, np.int64(index_mask),
             with_sums, tables, sums)


@numba.njit(**_JIT)
def _unskew(a, b, first, out):  # pragma: no cover - jitted
    h, w = out.shape
    width_t = a.shape[1]
    for r in range(h):
        c0 = first + r  # the column of tile a that out[r, 0] is
        n_a = min(w, max(0, width_t - c0))
        # rows as one-dimensional views, unsigned indices (no test for negative ones): the copies
        # vectorise (0.04 ns a pixel; 0.28 with slice assignments, which take 1.5 s to compile)
        row, ra, rb = out[r], a[r], b[r]
        start = np.uint64(c0)
        for c in range(np.uint64(n_a)):
            row[c] = ra[start + c]
        start = np.uint64(c0 + n_a - width_t)
        for c in range(np.uint64(w - n_a)):
            row[np.uint64(n_a) + c] = rb[start + c]


def unskew_labels(left: np.ndarray, right: np.ndarray | None, first: int, width: int) -> np.ndarray:
    """A rectangular chunk of labels put together from two slanted tiles' packed labels.

    Parameters
    ----------
    left, right : ndarray of shape (h, W)
        The labels of slanted tiles ``J`` and ``J + 1`` of a band as
        :func:`fs_rows` packs them with ``out_skew=1``: row ``r`` holds
        the columns ``J W - r + c``.  ``right`` may be None when no column
        of the chunk reaches it (the image's last tile).
    first : int
        The chunk's first column less ``J W``.
    width : int
        The chunk's width.

    Returns
    -------
    labels : ndarray of shape (h, width), the tiles' type
        Row ``r``, column ``c``: column ``first + r + c`` of the two tiles side by side.
    """
    a = np.ascontiguousarray(left)
    b = a if right is None else np.ascontiguousarray(right, dtype=a.dtype)
    out = np.empty((a.shape[0], width), dtype=a.dtype)
    _unskew(a, b, np.int64(first), out)
    return out


def floyd_steinberg(
    pixels: np.ndarray,
    colours: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    strength: float = 1.0,
    max_value: int | None = None,
) -> np.ndarray:
    """The serial reference Floyd--Steinberg dither (see the module docstring for its exact rule).

    Parameters
    ----------
    pixels : ndarray of shape (H, W, C), uint8 or uint16
        The image, in memory.
    colours : ndarray of shape (k, C)
        Integer palette colours.
    valid : ndarray of shape (H, W) of bool or None, default=None
        Pixels that are image; the others get label 0 and pass no error.
    strength : float, default=1.0
        Fraction of the error diffused, in [0, 1] (as ``round(256 * strength) / 256``).
    max_value : int or None, default=None
        Largest pixel value (clamp); None: the largest of ``pixels``' dtype.

    Returns
    -------
    labels : ndarray of shape (H, W), int32
        Palette index of every pixel.

    Examples
    --------
    >>> import numpy as np
    >>> ramp = np.repeat(np.arange(0, 256, 16, dtype=np.uint8), 3).reshape(1, 16, 3)
    >>> floyd_steinberg(ramp, np.array([[0, 0, 0], [255, 255, 255]])).tolist()
    [[0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1]]
    """
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, _ = pixels.shape
    if max_value is None:
        max_value = int(np.iinfo(pixels.dtype).max)
    grid = candidate_grid(colours, max_value)
    errors = np.zeros((height + 1, width + 2, pixels.shape[2]), dtype=np.int32)
    labels = np.zeros((height, width), dtype=np.int32)
    xa = np.zeros(height, dtype=np.int64)
    xb = np.full(height, width, dtype=np.int64)
    fs_rows(pixels, (0, 0), None if valid is None else np.ascontiguousarray(valid, dtype=bool),
            errors, (-1, -1), labels, (0, 0), 0, xa, xb, strength_q(strength), colours, grid)
    return labels


@numba.njit(**_JIT)
def _ordered(P, T, ty0, tx0, amp, col16, offsets, cand, shift, span, out):  # pragma: no cover - jitted
    h, w, n_ch = P.shape
    n = T.shape[0]
    t = np.empty(n_ch, dtype=np.int64)
    for y in range(h):
        row = (ty0 + y) % n
        for x in range(w):
            th = T[row, (tx0 + x) % n]
            for c in range(n_ch):
                v = np.int64(UNITS) * np.int64(P[y, x, c]) + ((amp[c] * th) >> 16)  # floor(amp m / 65536)
                if v < 0:
                    v = 0
                elif v > span:
                    v = span
                t[c] = v
            out[y, x] = _nearest_grid(t, col16, offsets, cand, shift, (span >> shift) + 1)


def nearest_in_grid(
    pixels: np.ndarray, colours: np.ndarray, grid: tuple[np.ndarray, np.ndarray, int, int]
) -> np.ndarray:
    """Nearest palette colour of every pixel (H, W, C), exact, lowest index on ties (no dither)."""
    return ordered_dither(pixels, (0, 0), np.zeros((1, 1), dtype=np.int64), np.zeros(pixels.shape[-1], np.int64),
                          colours, grid)


def ordered_dither(
    pixels: np.ndarray,
    origin: tuple[int, int],
    thresholds: np.ndarray,
    amplitude: np.ndarray,
    colours: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray, int, int],
) -> np.ndarray:
    """Ordered dithering of a window of pixels with a tiled threshold mask.

    The target of pixel (y, x) (global, ``origin`` + position in the window)
    is ``16 v + floor(amplitude * m / 65536)`` units, clamped, where
    ``m = thresholds[y % n, x % n]`` is a signed threshold in (-32768, 32768);
    the label is the nearest palette colour (lowest index on ties).  Each pixel
    depends on itself only, so any tiling gives the same labels.

    Parameters
    ----------
    pixels : ndarray of shape (h, w, C), integers
    origin : (int, int)
        Global row and column of ``pixels[0, 0]``.
    thresholds : ndarray of shape (n, n), int64
        The tiled mask.
    amplitude : ndarray of shape (C,), int64
        Peak-to-peak noise per channel, in units.
    colours : ndarray of shape (k, C)
    grid
        :func:`candidate_grid` of ``colours``.

    Returns
    -------
    labels : ndarray of shape (h, w), int32
    """
    offsets, cand, shift, span = grid
    col16 = np.ascontiguousarray(np.asarray(colours, dtype=np.int64) * UNITS)
    pixels = np.ascontiguousarray(pixels)
    out = np.empty(pixels.shape[:2], dtype=np.int32)
    _ordered(pixels, np.ascontiguousarray(thresholds, dtype=np.int64), int(origin[0]), int(origin[1]),
             np.ascontiguousarray(amplitude, dtype=np.int64), col16, offsets, cand, np.int64(shift),
             np.int64(span), out)
    return out
