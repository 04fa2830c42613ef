"""The walkthrough's image API: an RGB image as a matrix and as a vector of colours.

This module keeps the names of the blog walkthrough "K-Means Clustering for
Image Quantization" so that its code runs with ``from bigquant import image``.
An :class:`Image` holds its pixels either in memory (numpy) or lazily (a dask
array, for images bigger than memory: ``load_image(path, lazy=True)``); the plotting functions re-exported here
subsample lazy images instead of computing them whole.

Examples
--------
>>> import numpy as np
>>> from bigquant import image
>>> img = image.Image(np.zeros((2, 3, 3), dtype=np.uint8), title="black")
>>> img.shape, img.rgb_vector.shape
((2, 3, 3), (6, 3))
>>> image.rgb_vector_to_image(img.rgb_vector, img.shape).shape
(2, 3, 3)
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from bigquant.errors import (
    ImageReadError,
    InputTypeError,
    InvalidInputError,
    InvalidParameterError,
)
from bigquant.plotting import _is_dask, display_images, plot_rgb_vector

__all__ = [
    "Image",
    "load_image",
    "rgb_vector_to_image",
    "display_images",
    "plot_rgb_vector",
]

logger = logging.getLogger(__name__)


def to_uint8(x: Any) -> Any:
    """Return colours as ``uint8``, the way the walkthrough casts centroids.

    Integer data is clipped to 0..255; floating data is clipped to 0..255 and
    then truncated toward zero (``astype(np.uint8)``), so a centre of 127.9
    becomes 127. Works on numpy and dask arrays alike.

    Parameters
    ----------
    x : ndarray or dask array
        Colours on the 0..255 scale.

    Returns
    -------
    ndarray or dask array of dtype uint8
    """
    if x.dtype == np.uint8:
        return x
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InputTypeError(f"colours of dtype {x.dtype} must be integer or floating")
    return x.clip(0, 255).astype(np.uint8)


class Image:
    """An RGB image, as a (H, W, 3) matrix and as a (H·W, 3) vector of colours.

    Parameters
    ----------
    rgb_matrix : ndarray or dask array of shape (H, W, 3)
        The pixels. Kept as given: a dask array stays lazy.
    title : str or None, default=None
        A name shown above the image by :func:`display_images`.

    Attributes
    ----------
    rgb_matrix : ndarray or dask array of shape (H, W, 3)
        The pixels.
    title : str or None
        The image's title.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.full((4, 5, 3), 200, dtype=np.uint8), title="grey")
    >>> img
    Image(shape=(4, 5, 3), dtype=uint8, lazy=False, title='grey')
    """

    def __init__(self, rgb_matrix: Any, title: str | None = None) -> None:
        if not _is_dask(rgb_matrix):
            rgb_matrix = np.asarray(rgb_matrix)
        if rgb_matrix.ndim != 3 or rgb_matrix.shape[2] != 3:
            raise InvalidInputError(
                f"rgb_matrix of shape {tuple(rgb_matrix.shape)} must have shape (H, W, 3)"
            )
        if not (
            np.issubdtype(rgb_matrix.dtype, np.integer)
            or np.issubdtype(rgb_matrix.dtype, np.floating)
        ):
            raise InputTypeError(f"rgb_matrix of dtype {rgb_matrix.dtype} must be numeric")
        self.rgb_matrix = rgb_matrix
        self.title = title

    @property
    def shape(self) -> tuple[int, int, int]:
        """tuple of int: ``(H, W, 3)``."""
        h, w, c = self.rgb_matrix.shape
        return (int(h), int(w), int(c))

    @property
    def rgb_vector(self) -> Any:
        """ndarray or dask array of shape (H·W, 3): the pixels in row-major order.

        A view for numpy images; for dask images a lazy reshape (which merges
        chunks across each row — prefer ``rgb_matrix`` for big lazy images).
        """
        return self.rgb_matrix.reshape(-1, 3)

    @property
    def is_lazy(self) -> bool:
        """bool: whether the pixels are a dask array."""
        return _is_dask(self.rgb_matrix)

    @property
    def dtype(self) -> np.dtype:
        """numpy.dtype: the pixels' dtype."""
        return np.dtype(self.rgb_matrix.dtype)

    def compute(self) -> Image:
        """Return an in-memory copy of a lazy image (``self`` if already in memory)."""
        if not self.is_lazy:
            return self
        return Image(np.asarray(self.rgb_matrix.compute()), title=self.title)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        pixels = self.rgb_matrix.compute() if self.is_lazy else self.rgb_matrix
        return np.asarray(pixels, dtype=dtype)

    def __repr__(self) -> str:
        return (
            f"Image(shape={self.shape}, dtype={self.dtype}, lazy={self.is_lazy}, "
            f"title={self.title!r})"
        )


def load_image(
    path: str | os.PathLike[str],
    title: str | None = None,
    *,
    lazy: bool = False,
    chunks: int | tuple[int, int] | None = None,
) -> Image:
    """Read an image file as RGB.

    Any format Pillow reads, in memory; or, with ``lazy=True``, any file
    :func:`bigquant.io.read_image` opens (tiled BigTIFF, zarr, ...), as a dask
    array read chunk by chunk. Grey images are repeated to three channels and
    alpha is dropped; palette and CMYK images are converted to RGB.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    title : str or None, default=None
        The image's title; defaults to the file name without its extension.
    lazy : bool, default=False
        Read lazily through :func:`bigquant.io.read_image` (for images bigger
        than memory) instead of decoding the whole file with Pillow.
    chunks : int, tuple of int (cy, cx) or None, default=None
        Chunk shape of the lazy array (see :func:`bigquant.io.read_image`);
        only with ``lazy=True``.

    Returns
    -------
    Image
        The pixels as a (H, W, 3) array: ``uint8`` numpy, or with ``lazy=True``
        a dask array of the file's dtype.

    Raises
    ------
    bigquant.errors.ImageReadError
        If the file is missing or not an image that can be read.

    Examples
    --------
    >>> import matplotlib.cbook
    >>> img = load_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    >>> img.shape, img.title
    ((600, 512, 3), 'grace_hopper')
    """
    path = os.fspath(path)
    if title is None:
        title = os.path.splitext(os.path.basename(path))[0]
    if lazy:
        return Image(_lazy_rgb(path, chunks), title=title)
    if chunks is not None:
        raise InvalidParameterError(f"chunks={chunks!r} is only used with lazy=True")

    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if not os.path.exists(path):
        raise ImageReadError(f"path={path!r}: no such file")
    try:
        with PILImage.open(path) as pil:
            mode = pil.mode
            rgb = np.asarray(pil.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageReadError(f"path={path!r} cannot be read as an image: {exc}") from exc
    if mode != "RGB":
        logger.info("converted %s from mode %s to RGB", path, mode)
    return Image(rgb, title=title)


def _lazy_rgb(path: str, chunks: int | tuple[int, int] | None) -> Any:
    """Open ``path`` lazily and return its pixels as a dask array of shape (H, W, 3)."""
    import dask.array as da

    from bigquant.io import read_image

    if not os.path.exists(path):
        raise ImageReadError(f"path={path!r}: no such file")
    pixels = read_image(path, chunks=chunks).data
    if pixels.ndim == 2:
        pixels = da.stack([pixels] * 3, axis=-1)
    elif pixels.shape[2] in (1, 2):  # grey, grey + alpha
        pixels = da.concatenate([pixels[..., :1]] * 3, axis=-1)
    elif pixels.shape[2] == 4:  # RGBA
        pixels = pixels[..., :3]
    elif pixels.shape[2] != 3:
        raise InvalidInputError(
            f"path={path!r} has {pixels.shape[2]} channels; an RGB image needs 1, 2, 3 or 4"
        )
    return pixels


def rgb_vector_to_image(
    rgb_vector: Any, image_shape: tuple[int, ...], title: str | None = None
) -> Image:
    """Fold a vector of colours back into an image.

    Parameters
    ----------
    rgb_vector : array-like or dask array of shape (H·W, 3)
        Colours in row-major pixel order, such as ``centroids[labels]``.
        Floating colours (fitted centres) are clipped to 0..255 and cast to
        ``uint8`` by truncation, as in the walkthrough.
    image_shape : tuple of int
        ``(H, W, 3)`` or ``(H, W)``, e.g. the original ``Image.shape``.
    title : str or None, default=None
        The new image's title.

    Returns
    -------
    Image
        A ``uint8`` image, lazy if ``rgb_vector`` is a dask array.

    Examples
    --------
    >>> import numpy as np
    >>> rgb_vector_to_image(np.array([[0.5, 10.9, 300.0]] * 6), (2, 3)).rgb_matrix[0, 0]
    array([  0,  10, 255], dtype=uint8)
    """
    if not _is_dask(rgb_vector):
        rgb_vector = np.asarray(rgb_vector)
    if rgb_vector.ndim != 2 or rgb_vector.shape[1] != 3:
        raise InvalidInputError(
            f"rgb_vector of shape {tuple(rgb_vector.shape)} must have shape (n_pixels, 3)"
        )
    if len(image_shape) not in (2, 3) or (len(image_shape) == 3 and image_shape[2] != 3):
        raise InvalidInputError(f"image_shape={tuple(image_shape)} must be (H, W, 3) or (H, W)")
    h, w = int(image_shape[0]), int(image_shape[1])
    if h * w != rgb_vector.shape[0]:
        raise InvalidInputError(
            f"image_shape={tuple(image_shape)} holds {h * w} pixels but rgb_vector has "
            f"{rgb_vector.shape[0]}"
        )
    return Image(to_uint8(rgb_vector).reshape(h, w, 3), title=title)
