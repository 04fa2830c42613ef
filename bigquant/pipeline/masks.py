"""The pixels a job fits and labels: the file's own mask, a user's mask, a slide's tissue.

Masked pixels take no part in the fit and are written with a reserved palette
index (see :func:`bigquant.quantize`).

``mask="auto"`` (:func:`background_mask`) finds the tissue of a slide on a
low-resolution view (the smallest pyramid level at least
:data:`AUTO_MIN_EDGE` pixels a side, or a strided subsample of the image when
it has no pyramid) with :func:`bigquant.pipeline.tissue.detect_tissue`:
colour density in optical density, Otsu's threshold of its logarithm (or
``mask_threshold``), pen ink left out by hue, small holes filled and small
objects dropped.  The small mask is then upsampled on the fly, by nearest
neighbour, chunk by chunk: the full-resolution image is never read for it.
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
from bigquant.pipeline.tissue import detect_tissue, otsu_threshold

__all__ = ["AUTO_MIN_EDGE", "background_mask", "mask_method", "otsu_threshold", "resolve_mask", "upsampled_fraction",
           "user_mask"]

logger = logging.getLogger(__name__)

#: smallest edge of the low-resolution view ``mask="auto"`` thresholds
AUTO_MIN_EDGE = 1024


def resolve_mask(source: Any, mask: Any, *, threshold: float | None = None,
                 report: dict[str, Any] | None = None) -> da.Array | None:
    """The pixels a job fits and labels: the file's own mask combined with ``mask``.

    Parameters
    ----------
    source : ImageSource
        The image, with its own mask (alpha, nodata, mask IFD, NaN) if any.
    mask : None, "auto", False, array-like, zarr array, str or os.PathLike
        None: the file's own mask only; "auto": and the tissue of a slide
        (:func:`background_mask`); False: no mask at all; an array or file:
        and its non-zero pixels (:func:`user_mask`).
    threshold : float or None, default=None
        ``mask="auto"``'s tissue threshold (see
        :func:`bigquant.pipeline.tissue.detect_tissue`); None: Otsu's.
    report : dict or None, default=None
        Filled with ``method`` (:func:`mask_method`) and ``kept``, the
        fraction of the image's pixels kept when known without a pass over
        them (1.0 with no mask; the tissue's with "auto"; else None), and for
        "auto" the ``threshold`` used and whether it was ``otsu``'s.
    """
    method = mask_method(source, mask)
    if report is not None:
        report.update(method=method, kept=1.0 if method == "none" else None)
    if mask is False:
        return None
    if mask is None:
        return source.mask
    if isinstance(mask, str) and mask == "auto":
        return combine_masks(source.mask, background_mask(source, threshold=threshold, report=report))
    return combine_masks(source.mask, user_mask(mask, source.shape[:2], source.data.chunks[:2]))


def mask_method(source: Any, mask: Any) -> str:
    """How the pixels a job keeps are chosen: "none", "file" (the file's own mask), "user" or "auto"."""
    if isinstance(mask, str) and mask == "auto":
        return "auto"
    if mask is False or (mask is None and source.mask is None):
        return "none"
    return "file" if mask is None else "user"


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


def _upsample_block(_: np.ndarray, packed: np.ndarray, low_shape: tuple[int, int], shape: tuple[int, int],
                    block_info: Any = None) -> np.ndarray:
    """One chunk of the low-resolution mask upsampled by nearest neighbour.

    The mask travels as bits (``np.packbits`` along its rows: an eighth of
    the bytes in the graph); only the rows this chunk needs are unpacked.
    """
    (y0, y1), (x0, x1) = block_info[0]["array-location"][:2]
    rows = (np.arange(y0, y1) * low_shape[0]) // shape[0]
    cols = (np.arange(x0, x1) * low_shape[1]) // shape[1]
    needed, where = np.unique(rows, return_inverse=True)
    low_rows = np.unpackbits(packed[needed], axis=1, count=low_shape[1]).astype(bool)
    return low_rows[where[:, None], cols[None, :]]


def upsampled_fraction(small: np.ndarray, shape: tuple[int, int]) -> float:
    """Fraction of ``shape``'s pixels True in ``small`` upsampled to it by nearest neighbour (exact, no pass).

    Each pixel of ``small`` stands for as many rows and columns as
    :func:`background_mask`'s upsampling gives it.
    """
    height, width = shape
    if height * width == 0:
        return 0.0
    rows = np.bincount((np.arange(height) * small.shape[0]) // height, minlength=small.shape[0])
    cols = np.bincount((np.arange(width) * small.shape[1]) // width, minlength=small.shape[1])
    return float(rows @ small.astype(np.float64) @ cols) / (height * width)


def background_mask(source: Any, *, threshold: float | None = None, report: dict[str, Any] | None = None
                    ) -> da.Array:
    """Tissue of a slide (``mask="auto"``): found on a low-resolution view, upsampled.

    Parameters
    ----------
    source : ImageSource
        The image; for a TIFF pyramid the smallest level with an edge of at
        least :data:`AUTO_MIN_EDGE` pixels is read, else a strided subsample.
    threshold : float or None, default=None
        Colour density above which a pixel is tissue, in OD units (see
        :func:`bigquant.pipeline.tissue.detect_tissue`); None: Otsu's.
    report : dict or None, default=None
        Filled with ``kept`` (the fraction of the image's pixels the mask
        keeps), ``threshold`` and ``otsu``.

    Returns
    -------
    mask : dask array of shape (H, W), bool
        True on tissue, chunked as the image.
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
    found = detect_tissue(np.asarray(pixels), None if valid is None else np.asarray(valid, dtype=bool),
                          threshold=threshold)
    small = found.mask
    kept = upsampled_fraction(small, (height, width))
    logger.info("auto mask: colour density threshold %.4f OD (%s) on a %s view, %.1f%% tissue, %.1f%% pen ink",
                found.threshold, "Otsu" if found.otsu else "given", small.shape, 100.0 * kept, 100.0 * found.pen)
    if report is not None:
        report.update(kept=kept, threshold=found.threshold, otsu=found.otsu)
    import dask

    token = dask.base.tokenize(small, height, width, source.data.chunks[:2])
    # only its chunks are used: named as the mask's own tasks (Dask would call them empty_like)
    grid = da.empty((height, width), chunks=source.data.chunks[:2], dtype=bool, name=f"{tasks.MASK}-{token}")
    # one key for every chunk, not a copy in each task; as bits, so that a 4096^2 view is a 2 MiB
    # graph, not 16 MiB (distributed warns of graphs over 10 MB)
    packed = np.packbits(small, axis=1)
    low_key = dask.delayed(packed, name=f"{tasks.MASK}-{dask.base.tokenize(packed)}")
    return grid.map_blocks(_upsample_block, low_key, tuple(small.shape), (height, width), dtype=bool,
                           meta=np.empty((0, 0), dtype=bool), token=tasks.MASK)
