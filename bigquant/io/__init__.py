"""Image input and output: lazy readers and streaming, atomic writers.

- :func:`read_image` opens TIFF (tiled, striped, BigTIFF, OME, pyramids),
  zarr, Pillow formats and arrays as a lazy :class:`ImageSource`.
- :func:`write_image` writes label images with a palette (indexed or RGB) or
  plain images as tiled BigTIFF, zarr, PNG or JPEG, atomically.
- :class:`ImageMetadata` is what a source says besides its pixels (pixel
  size, Aperio fields, ICC profile), carried to the outputs.
"""

from bigquant.io.metadata import ImageMetadata
from bigquant.io.read import read_image
from bigquant.io.source import ImageSource
from bigquant.io.write import write_image

__all__ = ["ImageMetadata", "ImageSource", "read_image", "write_image"]
