"""Tests of bigquant.io.mask and of the masks read_image finds in files."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile

from bigquant import read_image
from bigquant.errors import InvalidInputError
from bigquant.io.mask import (
    background_mask,
    combine_masks,
    finite_mask,
    nodata_mask,
    otsu_threshold,
    user_mask,
)


def test_otsu_splits_two_modes_between_them():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(60, 8, 5000), rng.normal(200, 8, 8000)]).clip(0, 255)
    threshold = otsu_threshold(values.astype(np.uint8))
    assert 100 < threshold < 160


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


def test_user_mask_from_a_file_and_its_shape_checked(tmp_path):
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:50] = 255
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, mask, tile=(16, 16))
    got = user_mask(path, (40, 60), ((20, 20), (30, 30)))
    assert got.chunks == ((20, 20), (30, 30))
    np.testing.assert_array_equal(got.compute(), mask > 0)
    with pytest.raises(InvalidInputError, match=r"mask\.tif: a mask must have the image's shape \(41, 60\)"):
        user_mask(path, (41, 60), ((41,), (60,)))


def test_background_mask_finds_dark_tissue_on_a_bright_slide(tmp_path):
    """A 2-level slide, white background with a darker blob: Otsu on level 1, upsampled."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:1280]
    tissue = (yy - 500) ** 2 / 300**2 + (xx - 600) ** 2 / 400**2 < 1
    img = np.where(tissue[..., None], [170, 90, 160], [242, 240, 244]) + rng.normal(0, 6, (1024, 1280, 3))
    img = img.clip(0, 255).astype(np.uint8)
    path = tmp_path / "slide.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, tile=(256, 256), subifds=1, photometric="rgb")
        tw.write(img[::2, ::2], tile=(256, 256), subfiletype=1, photometric="rgb")
    source = read_image(path, chunks=512)
    mask = background_mask(source)
    assert mask.chunks == source.data.chunks[:2]
    got = mask.compute()
    assert (got == tissue).mean() > 0.99  # nearest upsampling only moves the edge by a pixel


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
