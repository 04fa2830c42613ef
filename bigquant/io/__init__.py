"""Image input and output: lazy readers and streaming, atomic writers.

- :func:`read_image` opens TIFF (tiled, striped, BigTIFF, OME, pyramids),
  zarr, Pillow formats and arrays as a lazy :class:`ImageSource`.
- :func:`write_image` writes label images with a palette (indexed or RGB) or
  plain images as tiled BigTIFF, zarr, PNG or JPEG, atomically.
- :class:`ImageMetadata` is what a source says besides its pixels (pixel
  size, Aperio fields, ICC profile), carried to the outputs.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported on first use: importing one module of the folder (paths, URLs) loads no dask.array
    from bigquant.io.metadata import ImageMetadata
    from bigquant.io.read import read_image
    from bigquant.io.source import ImageSource
    from bigquant.io.write import write_image

__all__ = ["ImageMetadata", "ImageSource", "read_image", "write_image"]

_LAZY = {
    "ImageMetadata": "bigquant.io.metadata",
    "ImageSource": "bigquant.io.source",
    "read_image": "bigquant.io.read",
    "write_image": "bigquant.io.write",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bigquant.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
