"""Which pixels are image, from the pixels themselves: alpha, nodata, NaN.

A mask is a lazy boolean dask array of the image's (H, W) shape and chunks,
True where the pixel is image.  :func:`bigquant.read_image` builds one from
what the file says (see :class:`bigquant.ImageSource`); masks a user gives, and
the tissue of a slide, are :mod:`bigquant.pipeline.masks`'.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # dask.array is imported by the functions that build masks (~0.4 s)
    import dask.array as da

__all__ = ["alpha_mask", "combine_masks", "finite_mask", "nodata_mask"]


def combine_masks(*masks: da.Array | None) -> da.Array | None:
    """The pixels every given mask calls image (logical AND); None when none is given."""
    found = [m for m in masks if m is not None]
    if not found:
        return None
    out = found[0]
    for m in found[1:]:
        out = out & m.rechunk(out.chunks)
    return out


def alpha_mask(alpha: da.Array) -> da.Array:
    """Pixels whose alpha is not 0."""
    return alpha != 0


def nodata_mask(data: da.Array, nodata: float) -> da.Array:
    """Pixels where some band differs from ``nodata`` (GDAL: nodata in every band is no image)."""
    if data.ndim == 2:
        data = data[:, :, None]
    if isinstance(nodata, float) and math.isnan(nodata):
        import dask.array as da

        return ~da.isnan(data).all(axis=-1)
    return (data != np.asarray(nodata).astype(data.dtype)).any(axis=-1)


def finite_mask(data: da.Array) -> da.Array | None:
    """For float data, pixels with no NaN band; None for integer data."""
    if np.dtype(data.dtype).kind != "f":
        return None
    if data.ndim == 2:
        data = data[:, :, None]
    import dask.array as da

    return ~da.isnan(data).any(axis=-1)
