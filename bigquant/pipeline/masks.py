"""The pixels a job fits and labels: the file's own mask, a user's mask, a slide's tissue.

Masked pixels take no part in the fit and are written with a reserved palette
index (see :func:`bigquant.quantize`).

``mask="auto"`` (:func:`background_mask`) separates tissue from the bright
background of a slide as histolab and tiatoolbox do: Otsu's threshold on the
grey levels of a low-resolution view (the smallest pyramid level at least
:data:`AUTO_MIN_EDGE` pixels a side, or a strided subsample of the image when
it has no pyramid), pixels darker than the threshold being tissue; the small
mask is then upsampled on the fly, by nearest neighbour, chunk by chunk.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import dask.array as da
import numpy as np

from bigquant import tasks
from bigquant.errors import InvalidInputError
from bigquant.io.mask import combine_masks
from bigquant.io.read import read_image

__all__ = ["AUTO_MIN_EDGE", "background_mask", "otsu_threshold", "resolve_mask", "user_mask"]

logger = logging.getLogger(__name__)

#: smallest edge of the low-resolution view ``mask="auto"`` thresholds
AUTO_MIN_EDGE = 1024


def resolve_mask(source: Any, mask: Any) -> da.Array | None:
    """The pixels a job fits and labels: the file's own mask combined with ``mask``.

    Parameters
    ----------
    source : ImageSource
        The image, with its own mask (alpha, nodata, mask IFD, NaN) if any.
    mask : None, "auto", False, array-like, zarr array, str or os.PathLike
        None: the file's own mask only; "auto": and the tissue of a slide
        (:func:`background_mask`); False: no mask at all; an array or file:
        and its non-zero pixels (:func:`user_mask`).
    """
    if mask is False:
        return None
    if mask is None:
        return source.mask
    if isinstance(mask, str) and mask == "auto":
        return combine_masks(source.mask, background_mask(source))
    return combine_masks(source.mask, user_mask(mask, source.shape[:2], source.data.chunks[:2]))


def user_mask(mask: Any, shape: tuple[int, int], chunks: tuple[tuple[int, ...], ...]) -> da.Array:
    """A mask given by the user: an array, a zarr array or an image file, non-zero = image.

    Parameters
    ----------
    mask : array-like, zarr array, str or os.PathLike
        (H, W) or (H, W, 1); a file is read with :func:`bigquant.read_image`
        (TIFF, PNG, zarr...).
    shape : (H, W)
        The image's spatial shape, which the mask must have.
    chunks : the image's spatial chunks.

    Raises
    ------
    InvalidInputError
        The mask's shape is not the image's.
    """
    if isinstance(mask, (str, os.PathLike)):
        name, arr = str(mask), read_image(mask).data
    else:  # an array of any type, bool included
        name = f"mask array of shape {np.shape(mask)}"
        arr = mask if isinstance(mask, da.Array) else da.asarray(mask if hasattr(mask, "chunks") else np.asarray(mask))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or tuple(arr.shape) != tuple(shape):
        raise InvalidInputError(
            f"{name}: a mask must have the image's shape {tuple(shape)} (H, W), got {tuple(arr.shape)}"
        )
    return (arr != 0).rechunk(chunks)


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of 8-bit grey levels: the split of greatest between-class variance.

    Values below the threshold form one class, values above the other.
    """
    counts = np.bincount(np.asarray(values, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight0 = np.cumsum(counts)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * levels)
    mean0 = np.divide(sum0, weight0, out=np.zeros(256), where=weight0 > 0)
    mean1 = np.divide(sum0[-1] - sum0, weight1, out=np.zeros(256), where=weight1 > 0)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    # empty grey levels between the classes make a plateau: take its middle
    best = np.flatnonzero(between >= between.max() * (1.0 - 1e-12))
    return float(best[0] + best[-1]) / 2.0 + 0.5


def _grey8(pixels: np.ndarray) -> np.ndarray:
    """8-bit luminance of a small image of any type and band count."""
    x = pixels.astype(np.float64)
    if x.ndim == 3:
        x = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114 if x.shape[2] >= 3 else x.mean(axis=-1)
    finite = np.isfinite(x)
    lo, hi = (float(x[finite].min()), float(x[finite].max())) if finite.any() else (0.0, 1.0)
    if pixels.dtype != np.uint8:
        x = (x - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(np.nan_to_num(x, nan=255.0), 0, 255).astype(np.uint8)


def _upsample_block(_: np.ndarray, low: np.ndarray, shape: tuple[int, int], block_info: Any = None) -> np.ndarray:
    (y0, y1), (x0, x1) = block_info[0]["array-location"][:2]
    rows = (np.arange(y0, y1) * low.shape[0]) // shape[0]
    cols = (np.arange(x0, x1) * low.shape[1]) // shape[1]
    return low[rows[:, None], cols[None, :]]


def background_mask(source: Any) -> da.Array:
    """Tissue of a slide (``mask="auto"``): Otsu on a low-resolution view, upsampled.

    Parameters
    ----------
    source : ImageSource
        The image; for a TIFF pyramid the smallest level with an edge of at
        least :data:`AUTO_MIN_EDGE` pixels is read, else a strided subsample.

    Returns
    -------
    mask : dask array of shape (H, W), bool
        True on tissue (darker than the threshold), chunked as the image.
    """
    height, width = source.shape[:2]
    low = None
    if source.levels > 1 and source.path is not None:
        for level in range(source.levels - 1, source.level, -1):
            candidate = read_image(source.path, level=level, series=source.series)
            if min(candidate.shape[:2]) >= AUTO_MIN_EDGE or level == source.level + 1:
                low, low_mask = candidate.data, candidate.mask
                break
    if low is None:
        step = max(1, math.ceil(max(height, width) / (4 * AUTO_MIN_EDGE)))
        low, low_mask = source.data[::step, ::step], (None if source.mask is None else source.mask[::step, ::step])
    pixels, valid = da.compute(low, low_mask)
    grey = _grey8(np.asarray(pixels))
    counted = grey if valid is None else grey[np.asarray(valid)]
    threshold = otsu_threshold(counted) if counted.size else 255.0
    small = grey < threshold
    if valid is not None:
        small &= np.asarray(valid)
    logger.info("auto mask: Otsu threshold %.1f on a %s view, %.1f%% tissue", threshold, small.shape,
                100.0 * small.mean())
    import dask

    token = dask.base.tokenize(small, height, width, source.data.chunks[:2])
    # only its chunks are used: named as the mask's own tasks (Dask would call them empty_like)
    grid = da.empty((height, width), chunks=source.data.chunks[:2], dtype=bool, name=f"{tasks.MASK}-{token}")
    # one key for every chunk, not a copy in each task
    low_key = dask.delayed(small, name=f"{tasks.MASK}-{dask.base.tokenize(small)}")
    return grid.map_blocks(_upsample_block, low_key, (height, width), dtype=bool,
                           meta=np.empty((0, 0), dtype=bool), token=tasks.MASK)
