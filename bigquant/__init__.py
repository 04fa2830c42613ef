"""bigquant: exact, fast, memory-bounded k-means colour quantization on Dask.

- estimators: :class:`KMeans`, :class:`MiniBatchKMeans` (numpy or dask arrays, images)
- images: :func:`read_image`, :func:`write_image`, :func:`quantize` (the whole job)
- where it runs: :func:`connect`; choosing k: :func:`sweep`
- the blog walkthrough's API: ``from bigquant import image, model``
"""

from __future__ import annotations

from bigquant import errors
from bigquant.cluster import ColourHistogram, KMeans, MiniBatchKMeans, colour_histogram
from bigquant.io import ImageSource, read_image, write_image
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
    "ColourHistogram",
    "colour_histogram",
    "ImageSource",
    "read_image",
    "write_image",
    "quantize",
    "Runtime",
    "connect",
    "SweepResult",
    "sweep",
    "image",
    "model",
    "plotting",
]
