"""The sample image's renderer (kernels.render): the bytes of the float32 numpy expression it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from bigquant.io import sample
from bigquant.kernels.render import render_window


def _numpy_render(y0, y1, x0, x1, shape, seed):
    """The window as whole-array float32 numpy operations (the renderer before the kernel)."""
    photo = sample._photo()
    ph, pw = photo.shape[:2]
    height, width = shape
    scale = sample._scale_for(shape)
    phase = float(np.random.default_rng(seed).uniform(0.0, 2.0 * np.pi))
    iy, wy, dy = sample._axis(y0, y1, height, ph, scale, phase)
    ix, wx, dx = sample._axis(x0, x1, width, pw, scale, phase * 0.7 + 1.0)
    rows0, rows1 = photo[iy], photo[iy + 1]
    wy, wx = wy[:, None, None], wx[None, :, None]
    top = rows0[:, ix] * (1 - wx) + rows0[:, ix + 1] * wx
    bottom = rows1[:, ix] * (1 - wx) + rows1[:, ix + 1] * wx
    out = top * (1 - wy) + bottom * wy
    out *= 1.0 + 0.18 * dy[:, None, :] * dx[None, :, :]
    out += 10.0 * dy[:, None, :]
    rng = np.random.default_rng([seed, y0, x0])
    out += rng.integers(-sample._NOISE, sample._NOISE + 1, size=out.shape, dtype=np.int8)
    np.clip(out, 0, 255, out=out)
    return np.rint(out).astype(np.uint8)


@pytest.mark.parametrize("shape, seed, window", [
    ((8192, 8192), 0, (0, 512, 0, 512)),
    ((8192, 8192), 0, (4096, 4608, 3584, 4096)),
    ((32768, 32768), 3, (9000, 9300, 20000, 20700)),
    ((600, 700), 1, (0, 600, 0, 700)),
    ((1536, 1280), 5, (1280, 1536, 1024, 1280)),
])
def test_the_kernel_renders_the_bytes_of_the_numpy_expression(shape, seed, window):
    np.testing.assert_array_equal(sample._render(*window, shape, seed), _numpy_render(*window, shape, seed))


def test_render_window_clips_and_rounds_half_to_even():
    photo = np.full((2, 2, 3), 254.75, dtype=np.float32)
    zero = np.zeros((1, 3), dtype=np.float32)
    axis = (np.zeros(1, np.int64), np.zeros(1, np.float32), zero)
    noise = np.array([[[3, -3, 0]]], dtype=np.int8)
    # 254.75 + 3 clips to 255; 254.75 - 3 = 251.75 rounds to 252; 254.75 rounds to 255
    assert render_window(photo, axis, axis, noise).tolist() == [[[255, 252, 255]]]
    half = np.full((2, 2, 3), 2.5, dtype=np.float32)
    assert render_window(half, axis, axis, np.zeros((1, 1, 3), np.int8)).tolist() == [[[2, 2, 2]]]
