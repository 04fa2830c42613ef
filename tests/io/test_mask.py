"""Tests of bigquant.io.mask and of the masks read_image finds in files (alpha, nodata, NaN)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import tifffile

from bigquant import read_image
from bigquant.io.mask import combine_masks, finite_mask, nodata_mask


def test_nodata_is_no_image_only_in_every_band():
    data = np.array([[[0, 0], [0, 5]], [[7, 0], [3, 3]]], dtype=np.uint16)
    valid = nodata_mask(da.from_array(data, chunks=1), 0).compute()
    np.testing.assert_array_equal(valid, [[False, True], [True, True]])


def test_nan_nodata_and_nan_samples():
    data = np.array([[[np.nan, np.nan], [np.nan, 1.0]]], dtype=np.float32)
    arr = da.from_array(data)
    np.testing.assert_array_equal(nodata_mask(arr, float("nan")).compute(), [[False, True]])
    np.testing.assert_array_equal(finite_mask(arr).compute(), [[False, False]])
    assert finite_mask(da.zeros((2, 2, 3), dtype=np.uint8)) is None


def test_combine_masks_is_logical_and():
    a = da.from_array(np.array([[True, False], [True, True]]), chunks=1)
    b = da.from_array(np.array([[True, True], [False, True]]), chunks=2)
    np.testing.assert_array_equal(combine_masks(a, None, b).compute(), [[True, False], [False, True]])
    assert combine_masks(None, None) is None


def test_alpha_becomes_the_mask_and_leaves_the_data(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (32, 48, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:10, :, 3] = 0
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"], tile=(16, 16))
    src = read_image(path)
    assert src.shape == (32, 48, 3)
    np.testing.assert_array_equal(src.data.compute(), rgba[..., :3])
    np.testing.assert_array_equal(src.mask.compute(), rgba[..., 3] > 0)


def test_gdal_nodata_tag_masks_pixels_nodata_in_every_band(tmp_path):
    data = np.full((32, 32, 2), 9, np.uint16)
    data[:8] = 0
    data[8:10, :, 0] = 0  # one band only: still image
    path = tmp_path / "nodata.tif"
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig", tile=(16, 16),
                     extratags=[(42113, 2, 0, "0", True)])
    src = read_image(path)
    assert src.nodata == 0
    expected = np.ones((32, 32), bool)
    expected[:8] = False
    np.testing.assert_array_equal(src.mask.compute(), expected)


def test_float_nan_is_masked():
    img = np.ones((8, 8, 3), np.float32)
    img[2, 3, 1] = np.nan
    src = read_image(img)
    assert not src.mask.compute()[2, 3] and src.mask.compute().sum() == 63


def test_no_mask_when_every_pixel_is_image(tiled_tiff):
    assert read_image(tiled_tiff).mask is None
