"""bigquant: exact, fast, memory-bounded k-means colour quantization on Dask.

- estimators: :class:`KMeans`, :class:`MiniBatchKMeans` (numpy or dask arrays, images)
- images: :func:`read_image`, :func:`write_image`, :func:`quantize` (the whole job),
  :func:`quantize_many` (one palette for a set); palettes: :class:`FixedPalette`,
  :func:`read_palette`, :func:`write_palette`
- where it runs: :func:`connect`; choosing k: :func:`sweep`
- the blog walkthrough's API: ``from bigquant import image, model``
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bigquant import errors

if TYPE_CHECKING:  # imported on first use (see __getattr__): the command line loads only what it runs
    from bigquant import image, model, plotting
    from bigquant.cluster import ColourHistogram, KMeans, MiniBatchKMeans, colour_histogram
    from bigquant.cluster.fixed import FixedPalette
    from bigquant.io import ImageSource, read_image, write_image
    from bigquant.io.palette_file import read_palette, write_palette
    from bigquant.pipeline.many import quantize_many
    from bigquant.pipeline.quantize import quantize
    from bigquant.pipeline.runtime import Runtime, connect
    from bigquant.pipeline.sweep import SweepResult, sweep

#: where each public name lives; imported when first asked for (PEP 562)
_LAZY = {
    "KMeans": "bigquant.cluster.kmeans",
    "MiniBatchKMeans": "bigquant.cluster.minibatch",
    "ColourHistogram": "bigquant.cluster.histogram",
    "colour_histogram": "bigquant.cluster.histogram",
    "FixedPalette": "bigquant.cluster.fixed",
    "ImageSource": "bigquant.io.source",
    "read_image": "bigquant.io.read",
    "write_image": "bigquant.io.write",
    "read_palette": "bigquant.io.palette_file",
    "write_palette": "bigquant.io.palette_file",
    "quantize_many": "bigquant.pipeline.many",
    "quantize": "bigquant.pipeline.quantize",
    "Runtime": "bigquant.pipeline.runtime",
    "connect": "bigquant.pipeline.runtime",
    "SweepResult": "bigquant.pipeline.sweep",
    "sweep": "bigquant.pipeline.sweep",
}
#: the walkthrough's modules
_MODULES = ("image", "model", "plotting")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"bigquant.{name}")
    else:
        raise AttributeError(f"module 'bigquant' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
