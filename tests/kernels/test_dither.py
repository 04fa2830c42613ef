"""Tests of bigquant.kernels.dither: the serial Floyd-Steinberg reference and the nearest-colour grid."""

from __future__ import annotations

import numpy as np
import pytest

from bigquant.kernels.dither import (
    candidate_grid,
    floyd_steinberg,
    fs_rows,
    nearest_in_grid,
    ordered_dither,
    strength_q,
)
from bigquant.kernels.spaces import error_sums


def _brute_nearest(pixels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    d = ((pixels.reshape(-1, 1, pixels.shape[-1]).astype(np.int64) - colours[None].astype(np.int64)) ** 2).sum(-1)
    return d.argmin(axis=1).reshape(pixels.shape[:2])  # argmin: the lowest index on ties


@pytest.mark.parametrize("k", [1, 2, 16, 200])
@pytest.mark.parametrize("channels", [1, 3])
def test_candidate_grid_gives_the_exact_nearest_colour_lowest_index_on_ties(k, channels):
    rng = np.random.default_rng(k)
    colours = rng.integers(0, 256, (k, channels))
    colours[-1] = colours[0]  # a duplicate: a tie the lower index must win
    pixels = rng.integers(0, 256, (64, 80, channels), dtype=np.uint8)
    pixels[0, : min(k, 80)] = colours[:80]  # exactly on the colours too
    grid = candidate_grid(colours, 255)
    np.testing.assert_array_equal(nearest_in_grid(pixels, colours, grid), _brute_nearest(pixels, colours))


def test_candidate_grid_for_uint16():
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 65536, (40, 3))
    pixels = rng.integers(0, 65536, (30, 30, 3), dtype=np.uint16)
    got = nearest_in_grid(pixels, colours, candidate_grid(colours, 65535))
    np.testing.assert_array_equal(got, _brute_nearest(pixels, colours))


def _textbook(pixels: np.ndarray, colours: np.ndarray, q: int = 256) -> np.ndarray:
    """The documented rule written out in plain Python, pixel by pixel (tiny images only)."""
    h, w, c = pixels.shape
    err = np.zeros((h + 1, w + 2, c), dtype=np.int64)
    labels = np.zeros((h, w), dtype=np.int64)
    col16 = colours.astype(np.int64) * 16
    for y in range(h):
        for x in range(w):
            ey, ex = y + 1, x + 1
            s = 7 * err[ey, ex - 1] + err[ey - 1, ex - 1] + 5 * err[ey - 1, ex] + 3 * err[ey - 1, ex + 1]
            t = np.clip(16 * pixels[y, x].astype(np.int64) + (s * q) // 4096, 0, 16 * 255)
            d = ((t[None] - col16) ** 2).sum(-1)
            labels[y, x] = int(np.argmin(d))
            err[ey, ex] = t - col16[labels[y, x]]
    return labels


@pytest.mark.parametrize("channels", [1, 3, 4])  # 3: the kernel's written-out path; others: the loop
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_reference_follows_the_documented_rule(strength, channels):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (12, 17, channels), dtype=np.uint8)
    colours = rng.integers(0, 256, (5, channels))
    got = floyd_steinberg(pixels, colours, strength=strength)
    np.testing.assert_array_equal(got, _textbook(pixels, colours, strength_q(strength)))


def test_grey_half_level_dithers_to_a_half_on_half_off_pattern():
    grey = np.full((40, 40, 1), 128, dtype=np.uint8)
    labels = floyd_steinberg(grey, np.array([[0], [255]]))
    assert abs(labels.mean() - 128 / 255) < 0.01  # the average colour is kept
    assert 0 < labels[20].sum() < 40  # a pattern, not a flat fill


def test_strength_zero_is_the_nearest_colour():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    colours = rng.integers(0, 256, (8, 3))
    np.testing.assert_array_equal(floyd_steinberg(pixels, colours, strength=0.0), _brute_nearest(pixels, colours))


def test_masked_pixels_neither_receive_nor_pass_error():
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    colours = rng.integers(0, 256, (4, 3))
    valid = np.ones((10, 10), dtype=bool)
    valid[:, 5] = False  # a masked column cuts the rows in two
    full = floyd_steinberg(pixels, colours, valid=valid)
    # the left half never sees the right: dithering it alone gives the same labels
    left = floyd_steinberg(pixels[:, :5], colours)
    np.testing.assert_array_equal(full[:, :5], left)
    assert (full[:, 5] == 0).all()


def test_ordered_dither_does_not_depend_on_the_window():
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    colours = rng.integers(0, 256, (6, 3))
    grid = candidate_grid(colours, 255)
    mask = rng.integers(-32767, 32768, (8, 8))
    amp = np.full(3, 16 * 40)
    whole = ordered_dither(pixels, (0, 0), mask, amp, colours, grid)
    part = ordered_dither(pixels[13:40, 21:66], (13, 21), mask, amp, colours, grid)
    np.testing.assert_array_equal(whole[13:40, 21:66], part)
    assert (whole != nearest_in_grid(pixels, colours, grid)).any()  # the noise changes something


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("masked", [False, True])
def test_sums_kept_while_dithering_are_error_sums_to_the_bit(dtype, channels, masked):
    # fs_rows(sums=...) must give the very numbers error_sums gives for the same rows and labels:
    # a slanted band of rows (as the tiled dither runs), many colours (the OKLab cache misses)
    rng = np.random.default_rng(channels)
    top = int(np.iinfo(dtype).max)
    height, width = 70, 90
    pixels = rng.integers(0, top + 1, (height, width, channels)).astype(dtype)
    pixels[:, :30] = pixels[0, 0]  # and repeats (the cache hits)
    colours = rng.integers(0, top + 1, (12, channels))
    valid = rng.random((height, width)) > 0.2 if masked else None
    xa = np.clip(np.arange(height) % 7, 0, width)
    xb = np.clip(width - np.arange(height) % 5, 0, width)
    errors = np.zeros((height + 1, width + 2, channels), dtype=np.int32)
    labels = np.zeros((height, width), dtype=np.int32)
    sums = np.zeros(3)
    fs_rows(pixels, (0, 0), valid, errors, (-1, -1), labels, (0, 0), 0, xa, xb, 230, colours,
            candidate_grid(colours, top), sums=sums)
    expected = error_sums(pixels, (0, 0), valid, labels, (0, 0), colours, (0, xa, xb))
    assert sums.tolist() == expected.tolist()
    assert sums[2] == sum(int((valid if masked else np.ones_like(labels, bool))[r, xa[r]:xb[r]].sum())
                          for r in range(height))
    assert (sums[1] > 0) == (channels == 3)


def test_the_sums_tell_uint8_from_uint16_across_calls():
    # the same numbers as uint8 and as uint16 are different colours (255 is white, or nearly black):
    # the OKLab of one must never be taken for the other, whatever the calls before
    rng = np.random.default_rng(9)
    values = rng.integers(0, 256, (20, 30, 3))
    for dtype in (np.uint8, np.uint16, np.uint8):
        pixels = values.astype(dtype)
        top = int(np.iinfo(dtype).max)
        colours = np.array([[0, 0, 0], [top, top, top], [top, 0, 0]])
        xa, xb = np.zeros(20, dtype=np.int64), np.full(20, 30, dtype=np.int64)
        labels = np.zeros((20, 30), dtype=np.int32)
        sums = np.zeros(3)
        fs_rows(pixels, (0, 0), None, np.zeros((21, 32, 3), dtype=np.int32), (-1, -1), labels, (0, 0), 0, xa, xb,
                256, colours, candidate_grid(colours, top), sums=sums)
        assert sums.tolist() == error_sums(pixels, (0, 0), None, labels, (0, 0), colours).tolist()


def _textbook_rows(pixels, valid, errors, colours, q, y0, xa, xb):
    """The documented rule over rows ``y0 + r``, columns ``[xa[r], xb[r])``, one pixel after the other (plain Python).

    ``errors`` (H + 1, W + 2, C), element [0, 0] the pixel (-1, -1), holds the
    neighbours' errors already final; it receives the rows' errors.  Returns the labels (-1 elsewhere).
    """
    span = 16 * int(np.iinfo(pixels.dtype).max)
    col16 = colours.astype(np.int64) * 16
    labels = np.full(pixels.shape[:2], -1, dtype=np.int64)
    for r in range(len(xa)):
        y = y0 + r
        for x in range(xa[r], xb[r]):
            ey, ex = y + 1, x + 1
            if valid is not None and not valid[y, x]:
                errors[ey, ex] = 0
                labels[y, x] = 0
                continue
            e = errors.astype(np.int64)
            s = 7 * e[ey, ex - 1] + e[ey - 1, ex - 1] + 5 * e[ey - 1, ex] + 3 * e[ey - 1, ex + 1]
            t = np.clip(16 * pixels[y, x].astype(np.int64) + (s * q) // 4096, 0, span)
            labels[y, x] = int(np.argmin(((t[None] - col16) ** 2).sum(-1)))
            errors[ey, ex] = t - col16[labels[y, x]]
    return labels


def _row_ranges(layout, height, width, rng):
    r = np.arange(height)
    if layout == "rectangle":
        return np.full(height, 3), np.full(height, width - 2)
    if layout == "slanted":  # the tiled pipeline's tiles: one column further left each row
        return np.clip(width - 12 - r, 0, width), np.clip(width - r, 0, width)
    if layout == "slanted-right":
        return np.clip(r, 0, width), np.clip(r + 9, 0, width)
    # ragged: ranges of any length, some empty, some one pixel, starting left or right of the row above
    xa = rng.integers(0, width, height)
    xb = np.minimum(width, xa + rng.choice([0, 1, 2, 3, 5, width], height))
    return xa, xb


@pytest.mark.parametrize("layout", ["rectangle", "slanted", "slanted-right", "ragged"])
@pytest.mark.parametrize("k", [16, 300])  # up to 256 colours: all compared at once; more: the grid
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("height", [9, 10])  # rows go two by two: an odd count leaves one alone
def test_rows_side_by_side_give_the_serial_labels_and_errors(layout, k, masked, height):
    # fs_rows runs rows two by two, the lower one behind: every label and every error must be those of
    # the documented rule applied pixel after pixel, with the errors around the rows taken as they are
    rng = np.random.default_rng(k + height)
    width = 23
    pixels = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    colours = rng.integers(0, 256, (k, 3))
    colours[5] = colours[2]  # a tie: the lower index wins
    pixels[1, 4] = colours[2]
    valid = rng.random((height, width)) > 0.25 if masked else None
    xa, xb = _row_ranges(layout, height, width, rng)
    start = rng.integers(-200, 200, (height + 1, width + 2, 3)).astype(np.int32)  # the errors already final
    want_errors = start.copy()
    want = _textbook_rows(pixels, valid, want_errors, colours, 200, 0, xa, xb)
    errors = start.copy()
    labels = np.full((height, width), -1, dtype=np.int32)
    fs_rows(pixels, (0, 0), valid, errors, (-1, -1), labels, (0, 0), 0, xa, xb, 200, colours,
            candidate_grid(colours, 255))
    np.testing.assert_array_equal(labels, want)
    np.testing.assert_array_equal(errors, want_errors)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_rows_of_any_type_and_channels_give_the_serial_labels(dtype, channels):
    rng = np.random.default_rng(channels)
    top = int(np.iinfo(dtype).max)
    height, width = 11, 19
    pixels = rng.integers(0, top + 1, (height, width, channels)).astype(dtype)
    colours = rng.integers(0, top + 1, (7, channels))
    valid = rng.random((height, width)) > 0.2
    xa, xb = _row_ranges("slanted", height, width, rng)
    start = rng.integers(-3000, 3000, (height + 1, width + 2, channels)).astype(np.int32)
    want_errors = start.copy()
    want = _textbook_rows(pixels, valid, want_errors, colours, 256, 0, xa, xb)
    labels = np.full((height, width), -1, dtype=np.int32)
    fs_rows(pixels, (0, 0), valid, start, (-1, -1), labels, (0, 0), 0, xa, xb, 256, colours,
            candidate_grid(colours, top))
    np.testing.assert_array_equal(labels, want)
    np.testing.assert_array_equal(start, want_errors)


def test_the_quality_sums_cube_root_is_that_of_numpy_within_5e_7():
    # the OKLab of the sums takes a branch-free float32 cube root of its own (it vectorises): it must stay
    # within 5e-7 (relative, about 4 float32 steps) of np.cbrt over the values linear sRGB gives (0 and [1e-8, 1])
    import numba

    from bigquant.kernels.spaces import _cbrt

    @numba.njit(error_model="numpy")
    def roots(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = _cbrt(x[i])
        return out

    rng = np.random.default_rng(0)
    x = np.concatenate([[0.0, 1.0, 0.125, 1e-8, 1.0 + 1e-6], rng.random(100_000),
                        10 ** rng.uniform(-8, 0, 100_000)]).astype(np.float32)
    got, want = roots(x).astype(np.float64), np.cbrt(x.astype(np.float64))
    assert got[0] == 0.0
    assert np.max(np.abs(got[1:] - want[1:]) / want[1:]) < 5e-7
