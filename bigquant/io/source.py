"""The :class:`ImageSource` record: a lazy pixel array plus metadata read once."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bigquant.io.metadata import ImageMetadata

__all__ = ["ImageSource"]


@dataclass(frozen=True)
class ImageSource:
    """A lazily read image and its metadata.

    Built by :func:`bigquant.read_image`; the metadata are read once, up front,
    and no pixel is read until ``data`` is computed (one task per chunk, each
    opening the file itself, so the array works on any Dask scheduler).

    Attributes
    ----------
    data : dask.array.Array of shape (H, W, C) or (H, W)
        The pixels as displayed (the EXIF orientation of a PNG or JPEG, the
        Orientation tag of a TIFF applied), chunked along a multiple of the
        file's tile grid.
    path : pathlib.Path, str or None
        The file read (a string for a URL), or None for an in-memory array.
    shape : tuple of int
        Shape of ``data``.
    dtype : numpy.dtype
        Data type of ``data``.
    tile : tuple of int (tile_height, tile_width) or None
        Tile (or strip: rows per strip and full width) of the file; None when
        the file has no tiles (contiguous, Pillow formats, arrays).
    photometric : str or None
        Colour interpretation in lower case: "rgb", "minisblack", "palette"
        (expanded to its colours in ``data``), ...
    channels : int
        Number of channels C (1 for a 2-D gray image).
    format : str
        "tiff", "zarr", "png", "jpeg", ... or "array" for in-memory arrays.
    levels : int
        Number of pyramid levels in the file (1 without a pyramid).
    nbytes : int
        Size of ``data`` in bytes once computed.
    level : int
        Pyramid level read.
    series : int
        Image series read (TIFF).
    mask : dask.array.Array of shape (H, W), dtype bool, or None
        Which pixels are image (True): False where the file says a pixel is
        not image -- alpha 0, the GDAL_NODATA value in every band, a TIFF mask
        IFD (NewSubfileType 4), NaN in float data.  None when every pixel is
        image.  ``data`` never holds the alpha channel.
    alpha : dask.array.Array of shape (H, W) or None
        The file's alpha channel (an RGBA or grey + alpha image), chunked as
        ``data``; None when it has none.  ``mask`` already says where it is 0;
        :func:`bigquant.quantize` fits it when it has levels between 0 and full.
    nodata : float or None
        The file's GDAL_NODATA value, if any.
    geotiff : bigquant.io.geotiff.GeoTiff or None
        The file's georeferencing tags (GeoTIFF), carried to TIFF outputs.
    metadata : bigquant.io.metadata.ImageMetadata
        Pixel size (resolution, OME physical size), the fields of an Aperio
        description and the ICC profile, as ``data`` shows the image (scaled
        to the level read, X and Y swapped by a transposing orientation);
        carried to the outputs.  Empty for arrays.
    extra : dict
        Details of the format: ``"orientation"`` (the EXIF or TIFF
        Orientation applied to ``data`` and ``mask``, 1 when none) for files
        read by bigquant's TIFF, PNG and JPEG readers, ``"band_names"`` (the
        TIFF's band descriptions, GDAL's, or None), ``"mode"`` for Pillow
        formats, ``"attrs"`` for zarr arrays.
    """

    data: Any
    path: pathlib.Path | None
    tile: tuple[int, int] | None
    photometric: str | None
    format: str
    levels: int = 1
    level: int = 0
    series: int = 0
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    mask: Any = field(default=None, repr=False, compare=False)
    nodata: float | None = None
    geotiff: Any = field(default=None, repr=False, compare=False)
    alpha: Any = field(default=None, repr=False, compare=False)
    metadata: ImageMetadata = field(default_factory=ImageMetadata, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``data``."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Data type of ``data``."""
        return np.dtype(self.data.dtype)

    @property
    def channels(self) -> int:
        """Number of channels C (1 for a 2-D gray image)."""
        return int(self.shape[2]) if len(self.shape) == 3 else 1

    @property
    def nbytes(self) -> int:
        """Size of ``data`` in bytes once computed."""
        return int(self.data.nbytes)

    @property
    def height(self) -> int:
        """Image height H in pixels."""
        return int(self.shape[0])

    @property
    def width(self) -> int:
        """Image width W in pixels."""
        return int(self.shape[1])

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        """Chunk sizes of ``data`` along each axis."""
        return self.data.chunks
