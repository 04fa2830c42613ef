"""bigquant: exact, fast, memory-bounded k-means colour quantization on Dask."""

from __future__ import annotations

from bigquant import errors
from bigquant.histogram import ColourHistogram, colour_histogram
from bigquant.kmeans import KMeans

__version__ = "0.1.0"

__all__: list[str] = [
    "__version__",
    "errors",
    "KMeans",
    "ColourHistogram",
    "colour_histogram",
]

# The walkthrough's API: ``from bigquant import image, model`` (and their plots).
from bigquant import image, model, plotting  # noqa: E402

__all__ += ["image", "model", "plotting"]

# Out-of-core image IO and the end-to-end pipeline.
from bigquant.io import ImageSource, read_image, write_image  # noqa: E402
from bigquant.quantize import quantize  # noqa: E402

__all__ += ["ImageSource", "read_image", "write_image", "quantize"]

# Mini-batch k-means for data too big to iterate over.
from bigquant.minibatch import MiniBatchKMeans  # noqa: E402

__all__ += ["MiniBatchKMeans"]

# Where it runs (local or remote Dask cluster) and the k-sweep runner.
from bigquant.runtime import Runtime, connect  # noqa: E402
from bigquant.sweep import SweepResult, sweep  # noqa: E402

__all__ += ["Runtime", "connect", "SweepResult", "sweep"]
