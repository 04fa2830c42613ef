"""bigquant: exact, fast, memory-bounded k-means colour quantization on Dask.

- estimators: :class:`KMeans`, :class:`MiniBatchKMeans` (numpy or dask arrays, images)
- images: :func:`read_image`, :func:`write_image`, :func:`quantize` (the whole job),
  :func:`quantize_many` (one palette for a set); palettes: :class:`FixedPalette`,
  :func:`read_palette`, :func:`write_palette`
- where it runs: :func:`connect`; choosing k: :func:`sweep`
- the blog walkthrough's API: ``from bigquant import image, model``
"""

from __future__ import annotations

from bigquant import errors
from bigquant.cluster import ColourHistogram, KMeans, MiniBatchKMeans, colour_histogram
from bigquant.cluster.fixed import FixedPalette
from bigquant.io import ImageSource, read_image, write_image
from bigquant.io.palette_file import read_palette, write_palette
from bigquant.pipeline.many import quantize_many
from bigquant.pipeline.quantize import quantize
from bigquant.pipeline.runtime import Runtime, connect
from bigquant.pipeline.sweep import SweepResult, sweep

# the walkthrough's modules (after the engine: they build on it)
from bigquant import image, model, plotting  # noqa: E402  isort: skip

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "errors",
    "KMeans",
    "MiniBatchKMeans",
    "FixedPalette",
    "ColourHistogram",
    "colour_histogram",
    "ImageSource",
    "read_image",
    "write_image",
    "quantize",
    "quantize_many",
    "read_palette",
    "write_palette",
    "Runtime",
    "connect",
    "SweepResult",
    "sweep",
    "image",
    "model",
    "plotting",
]
