"""Tests of bigquant.image: the walkthrough's Image, load_image and rgb_vector_to_image."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import dask.array as da
import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image as PILImage

from bigquant import image, plotting
from bigquant.errors import (
    ImageReadError,
    InputTypeError,
    InvalidInputError,
    InvalidParameterError,
)


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def test_image_matrix_vector_shape_title(rgb):
    img = image.Image(rgb, title="noise")
    assert img.shape == (5, 7, 3)
    assert img.title == "noise"
    assert img.rgb_matrix is rgb
    assert img.rgb_vector.shape == (35, 3)
    assert np.shares_memory(img.rgb_vector, rgb)
    # row-major: pixel (i, j) is vector row i * W + j
    np.testing.assert_array_equal(img.rgb_vector[2 * 7 + 3], rgb[2, 3])
    assert not img.is_lazy
    assert img.compute() is img
    assert repr(img) == "Image(shape=(5, 7, 3), dtype=uint8, lazy=False, title='noise')"


def test_image_title_defaults_to_none(rgb):
    assert image.Image(rgb).title is None


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 4), (35,), (2, 5, 7, 3)])
def test_image_rejects_non_rgb_shapes(shape):
    with pytest.raises(InvalidInputError, match=r"rgb_matrix of shape .* must have shape \(H, W, 3\)"):
        image.Image(np.zeros(shape, dtype=np.uint8))


def test_image_rejects_non_numeric():
    with pytest.raises(InputTypeError, match="must be numeric"):
        image.Image(np.full((2, 2, 3), "a"))


def test_lazy_image_stays_lazy(rgb):
    lazy = da.from_array(rgb, chunks=(2, 3, 3))
    img = image.Image(lazy, title="lazy")
    assert img.is_lazy
    assert img.rgb_matrix is lazy
    assert img.shape == (5, 7, 3)
    assert isinstance(img.rgb_vector, da.Array)
    np.testing.assert_array_equal(img.rgb_vector.compute(), rgb.reshape(-1, 3))
    eager = img.compute()
    assert not eager.is_lazy and eager.title == "lazy"
    np.testing.assert_array_equal(eager.rgb_matrix, rgb)
    np.testing.assert_array_equal(np.asarray(img), rgb)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK"])
def test_load_image_converts_to_rgb(tmp_path, rgb, mode):
    path = tmp_path / f"small_{mode}.png"
    pil = PILImage.fromarray(rgb).convert(mode)
    if mode == "CMYK":
        path = path.with_suffix(".tiff")
    pil.save(path)
    img = image.load_image(path)
    assert img.shape == (5, 7, 3)
    assert img.dtype == np.uint8
    assert img.title == path.stem
    np.testing.assert_array_equal(img.rgb_matrix, np.asarray(pil.convert("RGB")))
    if mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(img.rgb_matrix, rgb)


def test_load_image_title_and_str_path(tmp_path, rgb):
    path = tmp_path / "x.png"
    PILImage.fromarray(rgb).save(path)
    assert image.load_image(str(path), title="mine").title == "mine"


def test_load_image_grace_hopper():
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = image.load_image(path)
    assert img.shape == (600, 512, 3)
    assert img.title == "grace_hopper"


def test_load_image_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        image.load_image(tmp_path / "nope.png")


def test_load_image_not_an_image(tmp_path):
    path = tmp_path / "text.png"
    path.write_text("not an image")
    with pytest.raises(ImageReadError, match="cannot be read as an image"):
        image.load_image(path)


def test_rgb_vector_to_image_round_trip(rgb):
    img = image.Image(rgb)
    back = image.rgb_vector_to_image(img.rgb_vector, img.shape, title="back")
    assert back.title == "back"
    assert back.rgb_matrix.dtype == np.uint8
    np.testing.assert_array_equal(back.rgb_matrix, rgb)
    np.testing.assert_array_equal(image.rgb_vector_to_image(img.rgb_vector, (5, 7)).rgb_matrix, rgb)


def test_rgb_vector_to_image_casts_centroids_like_the_walkthrough():
    centroids = np.array([[0.4, 127.9, 254.99], [-3.0, 255.5, 1000.0]])
    labels = np.array([0, 1, 1, 0])
    img = image.rgb_vector_to_image(centroids[labels], (2, 2, 3))
    expected = centroids.clip(0, 255).astype(np.uint8)[labels].reshape(2, 2, 3)
    np.testing.assert_array_equal(img.rgb_matrix, expected)
    np.testing.assert_array_equal(img.rgb_matrix[0, 0], [0, 127, 254])
    np.testing.assert_array_equal(img.rgb_matrix[0, 1], [0, 255, 255])


def test_rgb_vector_to_image_lazy(rgb):
    vector = da.from_array(rgb.reshape(-1, 3).astype(np.float64), chunks=(10, 3))
    img = image.rgb_vector_to_image(vector, (5, 7, 3))
    assert img.is_lazy
    np.testing.assert_array_equal(img.rgb_matrix.compute(), rgb)


@pytest.mark.parametrize(
    ("vector_shape", "image_shape", "match"),
    [
        ((35, 3), (5, 8, 3), "holds 40 pixels but rgb_vector has 35"),
        ((35, 4), (5, 7, 3), r"must have shape \(n_pixels, 3\)"),
        ((35, 3), (5, 7, 4), r"must be \(H, W, 3\) or \(H, W\)"),
        ((35, 3), (35,), r"must be \(H, W, 3\) or \(H, W\)"),
    ],
)
def test_rgb_vector_to_image_errors(vector_shape, image_shape, match):
    with pytest.raises(InvalidInputError, match=match):
        image.rgb_vector_to_image(np.zeros(vector_shape), image_shape)


def test_plotting_functions_are_re_exported():
    assert image.display_images is plotting.display_images
    assert image.plot_rgb_vector is plotting.plot_rgb_vector


# lazy loading -------------------------------------------------------------


def test_load_image_lazy_tiled_tiff(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, pixels, tile=(16, 16), photometric="rgb")
    img = image.load_image(path, lazy=True, chunks=16)
    assert img.is_lazy
    assert img.title == "tiled"
    assert img.shape == (40, 48, 3)
    assert img.rgb_matrix.chunks[0][0] == 16
    np.testing.assert_array_equal(img.compute().rgb_matrix, pixels)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA"])
def test_load_image_lazy_makes_rgb(tmp_path, rgb, mode):
    path = tmp_path / f"small_{mode}.png"
    pil = PILImage.fromarray(rgb).convert(mode)
    pil.save(path)
    img = image.load_image(path, lazy=True)
    assert img.is_lazy and img.shape == (5, 7, 3)
    np.testing.assert_array_equal(img.compute().rgb_matrix, np.asarray(pil.convert("RGB")))


def test_load_image_lazy_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        image.load_image(tmp_path / "nope.tif", lazy=True)


def test_load_image_chunks_need_lazy(tmp_path, rgb):
    path = tmp_path / "x.png"
    PILImage.fromarray(rgb).save(path)
    with pytest.raises(InvalidParameterError, match="chunks=16 is only used with lazy=True"):
        image.load_image(path, chunks=16)


def test_docstring_examples_run():
    import doctest

    from bigquant import image as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
