"""Tests of quantize/sweep(space=...): k-means in OKLab or CIELAB with an sRGB palette."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from bigquant import KMeans, quantize, sweep
from bigquant.cli import main
from bigquant.errors import InvalidParameterError
from bigquant.kernels.spaces import from_space, to_space
from bigquant.pipeline.space import fit_in_space


def _mean_delta_e(a: np.ndarray, b: np.ndarray) -> float:
    d = to_space(a.reshape(-1, 3), "oklab") - to_space(b.reshape(-1, 3), "oklab")
    return float(np.sqrt((d * d).sum(axis=1)).mean())


def test_histogram_fit_in_oklab_equals_the_fit_on_every_pixel(rgb_image):
    import dask.array as da

    data = da.from_array(rgb_image, chunks=(100, 128, 3))
    coords = to_space(rgb_image.reshape(-1, 3), "oklab")
    init = coords[:: len(coords) // 6][:6]
    model = fit_in_space(data, 6, "oklab", init=init, tol=0.0, max_iter=500)
    assert model.strategy_ == "histogram"
    # the same Lloyd on every pixel's OKLab coordinates, from the same start, to convergence
    ref = KMeans(6, strategy="pixels", init=init, tol=0.0, max_iter=500).fit(coords)
    np.testing.assert_allclose(ref.cluster_centers_, model.centers_space_, atol=1e-6)
    labels = model.labels_.compute()
    np.testing.assert_array_equal(labels.reshape(-1), np.asarray(ref.labels_).reshape(-1))
    np.testing.assert_allclose(model.cluster_centers_, np.clip(from_space(model.centers_space_, "oklab"), 0, 255))


@pytest.mark.parametrize("space", ["oklab", "lab"])
def test_quantize_in_a_space_writes_srgb_and_its_nearest_labels(tmp_path, rgb_image, space):
    out = tmp_path / "q.tif"
    model = quantize(rgb_image, out, 8, random_state=0, tile=64, space=space, palette_out=tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["space"] == space
    colours = np.array(doc["colours"], dtype=np.uint8)
    labels = tifffile.imread(out)
    # every pixel's label is its nearest centre in the space (not in sRGB)
    d = ((to_space(rgb_image.reshape(-1, 3), space)[:, None, :] - model.centers_space_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels.reshape(-1), d.argmin(axis=1))
    with tifffile.TiffFile(out) as tf:
        cmap = tf.pages[0].colormap
    np.testing.assert_array_equal(cmap[:, :8].T // 257, colours)


def test_oklab_lowers_the_perceptual_error_and_rgb_keeps_the_psnr(tmp_path, rgb_image):
    results = {}
    for space in ("rgb", "oklab"):
        out = tmp_path / f"{space}.tif"
        quantize(rgb_image, out, 8, random_state=0, tile=64, space=space, mode="rgb")
        got = tifffile.imread(out)
        mse = ((got.astype(float) - rgb_image) ** 2).mean()
        results[space] = (mse, _mean_delta_e(got, rgb_image))
    assert results["oklab"][1] < results["rgb"][1]
    assert results["rgb"][0] < results["oklab"][0]


def test_space_refusals(tmp_path, rgb_image):
    with pytest.raises(InvalidParameterError, match="space='hsv'"):
        quantize(rgb_image, tmp_path / "q.tif", 4, space="hsv")
    with pytest.raises(InvalidParameterError, match="3 bands"):
        quantize(rgb_image[:, :, 0], tmp_path / "q.tif", 4, space="oklab")
    assert not list(tmp_path.iterdir())


def test_sweep_and_cli_in_oklab(tmp_path, rgb_image):
    result = sweep(rgb_image, "4,8", random_state=0, space="oklab")
    assert result.ks == [4, 8] and result.rows[1].cost < result.rows[0].cost
    src = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(rgb_image).save(src)
    assert main(["quantize", str(src), str(tmp_path / "o.tif"), "-k", "4", "--no-cluster", "--space", "oklab",
                 "--palette-out", str(tmp_path / "p.json")]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["space"] == "oklab"
