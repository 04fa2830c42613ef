"""The quality judge of ``bench/bench_peers.py``: PSNR, blurred PSNR by bands, palette expansion."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

import numpy as np
import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_peers.py"


@pytest.fixture(scope="module")
def peers():
    """The benchmark script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_peers", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_peers", module)
    spec.loader.exec_module(module)
    return module


def slicer(image: np.ndarray):
    return lambda y0, y1, x0, x1: image[y0:y1, x0:x1]


def test_psnr_of_a_constant_error_by_hand(peers):
    ref = np.full((6, 7, 3), 100, np.uint8)
    out = ref + np.uint8(5)  # every value off by 5: MSE 25
    expected = 20 * math.log10(255 / 5)  # 34.151 dB
    got, blurred = peers.band_psnrs(slicer(ref), slicer(out), (0, 6, 0, 7), band=2)
    assert got == pytest.approx(expected, abs=1e-9)
    assert blurred == pytest.approx(expected, abs=1e-9)  # a blur keeps a constant error
    assert peers.psnr(0.0, 10) == math.inf


def test_blurred_psnr_by_bands_is_the_whole_window_blur(peers):
    """Bands of 5 rows with their halo give scipy's blur of the whole window, to rounding."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (41, 23, 3), dtype=np.uint8)
    out = np.clip(ref.astype(int) + rng.integers(-40, 41, ref.shape), 0, 255).astype(np.uint8)
    window = (3, 38, 2, 21)
    y0, y1, x0, x1 = window
    a = ref[y0:y1, x0:x1].astype(np.float64)
    b = out[y0:y1, x0:x1].astype(np.float64)
    mse = np.mean((a - b) ** 2)
    bmse = np.mean((gaussian_filter(a, (1, 1, 0)) - gaussian_filter(b, (1, 1, 0))) ** 2)
    got = peers.band_psnrs(slicer(ref), slicer(out), window, band=5)
    assert got[0] == pytest.approx(10 * math.log10(255**2 / mse), rel=1e-12)
    assert got[1] == pytest.approx(10 * math.log10(255**2 / bmse), rel=1e-9)
    assert got[1] > got[0]  # the blur averages the noise away


def test_judged_window_is_the_whole_image_or_its_centre(peers):
    assert peers.judged_window(8192) == (0, 8192, 0, 8192)
    assert peers.judged_window(16384) == (4096, 12288, 4096, 12288)
    assert peers.judged_window(32768) == (12288, 20480, 12288, 20480)


def test_palette_output_is_expanded_through_its_colour_table(peers, tmp_path):
    import tifffile

    pytest.importorskip("rasterio")
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    labels = rng.integers(0, 16, (64, 48), dtype=np.uint8)
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, :16] = palette.T.astype(np.uint16) * 257
    path = tmp_path / "palette.tif"
    tifffile.imwrite(path, labels, photometric="palette", colormap=colormap, tile=(16, 16))
    read, close = peers.raster_reader(path)
    try:
        np.testing.assert_array_equal(read(10, 30, 5, 40), palette[labels[10:30, 5:40]])
    finally:
        close()
