"""Tests of bigquant.pipeline.masks: Otsu, user masks, the tissue of a slide."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from bigquant import read_image
from bigquant.errors import InvalidInputError
from bigquant.pipeline.masks import background_mask, otsu_threshold, user_mask


def test_otsu_splits_two_modes_between_them():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(60, 8, 5000), rng.normal(200, 8, 8000)]).clip(0, 255)
    threshold = otsu_threshold(values.astype(np.uint8))
    assert 100 < threshold < 160


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
