"""Tests of bigquant.kernels.spaces: OKLab and CIELAB conversions."""

from __future__ import annotations

import numpy as np
import pytest

from bigquant.kernels.spaces import from_space, to_space


@pytest.mark.parametrize("space", ["oklab", "lab"])
def test_every_8bit_colour_round_trips(space):
    codes = np.arange(1 << 24, dtype=np.uint32)[::7]  # 2.4 M colours spread over the whole cube
    rgb = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=1).astype(np.uint8)
    back = from_space(to_space(rgb, space), space)
    assert np.abs(back - rgb).max() < 1e-6
    np.testing.assert_array_equal(np.rint(back).astype(np.uint8), rgb)


def test_round_trip_on_other_scales():
    rng = np.random.default_rng(0)
    x16 = rng.integers(0, 65536, (1000, 3), dtype=np.uint16)
    assert np.abs(from_space(to_space(x16, "oklab", 65535), "oklab", 65535) - x16).max() < 1e-5
    xf = rng.random((1000, 3))
    assert np.abs(from_space(to_space(xf, "oklab", 1.0), "oklab", 1.0) - xf).max() < 1e-10


def test_known_values():
    # Ottosson's published OKLab of sRGB white and red; CIE L*a*b* (D65) of red
    ok = to_space(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 0]], dtype=np.uint8), "oklab") / 100
    np.testing.assert_allclose(ok[0], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(ok[1], [0.62796, 0.22486, 0.12585], atol=1e-4)
    np.testing.assert_allclose(ok[2], [0, 0, 0], atol=1e-12)
    lab = to_space(np.array([[255, 0, 0], [128, 128, 128]], dtype=np.uint8), "lab")
    np.testing.assert_allclose(lab[0], [53.24, 80.09, 67.20], atol=0.01)
    np.testing.assert_allclose(lab[1], [53.59, 0.0, 0.0], atol=0.01)


def test_unknown_space():
    with pytest.raises(ValueError, match="space='hsv'"):
        to_space(np.zeros((1, 3)), "hsv")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_error_sums_equal_the_direct_sums(dtype):
    from bigquant.kernels.spaces import error_sums

    rng = np.random.default_rng(5)
    top = np.iinfo(dtype).max
    # few distinct colours (the OKLab cache hits) mixed with many (it misses and evicts)
    few = rng.integers(0, top + 1, (6, 3))
    pixels = few[rng.integers(0, 6, (90, 70))].astype(dtype)
    pixels[::3] = rng.integers(0, top + 1, pixels[::3].shape)
    colours = rng.integers(0, top + 1, (9, 3))
    labels = rng.integers(0, 9, (90, 70))
    valid = rng.random((90, 70)) > 0.2
    got = error_sums(pixels, (0, 0), valid, labels, (0, 0), colours)
    x, p = pixels[valid].astype(np.float64), colours[labels[valid]].astype(np.float64)
    ok = np.linalg.norm(to_space(x, "oklab", top) - to_space(p, "oklab", top), axis=1) / 100
    assert got[0] == ((x - p) ** 2).sum()
    assert got[1] == pytest.approx(ok.sum(), rel=1e-6)  # the sums' OKLab is float32 (here 7e-8 off)
    assert got[2] == valid.sum()


@pytest.mark.parametrize("n_channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_colour_error_sums_equal_those_of_the_pixels(dtype, n_channels):
    """Distinct colours weighted by their counts give the sums of the pixels they stand for."""
    from bigquant.kernels.spaces import colour_error_sums, error_sums

    rng = np.random.default_rng(6)
    top = np.iinfo(dtype).max
    pixels = rng.integers(0, top + 1, (40, 50, n_channels)).astype(dtype)
    pixels[::2] = pixels[0, 0]  # one colour many times
    palette = rng.integers(0, top + 1, (7, n_channels))
    flat = pixels.reshape(-1, n_channels)
    colours, inverse, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    colour_labels = rng.integers(0, 7, len(colours))
    labels = colour_labels[inverse.reshape(-1)].reshape(40, 50)
    got = colour_error_sums(colours, counts, colour_labels, palette)
    want = error_sums(pixels, (0, 0), None, labels, (0, 0), palette)
    assert got[0] == want[0] and got[2] == want[2] == 40 * 50
    assert got[1] == pytest.approx(want[1], rel=1e-12)
    assert (got[1] > 0) == (n_channels == 3)
