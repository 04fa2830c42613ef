"""The k-means estimators and what only they use.

- :class:`KMeans` (:mod:`~bigquant.cluster.kmeans`) and :class:`MiniBatchKMeans`
  (:mod:`~bigquant.cluster.minibatch`), sharing :mod:`~bigquant.cluster.base`
- exact colour histograms (:mod:`~bigquant.cluster.histogram`,
  :mod:`~bigquant.cluster.counting`)
- point sets Lloyd runs over (:mod:`~bigquant.cluster.points`), the Lloyd loop
  (:mod:`~bigquant.cluster.lloyd`), seeding (:mod:`~bigquant.cluster.init`), the
  search over starts (:mod:`~bigquant.cluster.search`)
- resumable fits (:mod:`~bigquant.cluster.checkpoint`), parameter checks
  (:mod:`~bigquant.cluster.validation`), the client's allocator
  (:mod:`~bigquant.cluster.allocator`), the Dask scheduler in use
  (:mod:`~bigquant.cluster.scheduler`)
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported on first use: importing one module of the folder loads no estimator
    from bigquant.cluster.histogram import ColourHistogram, colour_histogram
    from bigquant.cluster.kmeans import KMeans
    from bigquant.cluster.minibatch import MiniBatchKMeans

__all__ = ["ColourHistogram", "KMeans", "MiniBatchKMeans", "colour_histogram"]

_LAZY = {
    "ColourHistogram": "bigquant.cluster.histogram",
    "colour_histogram": "bigquant.cluster.histogram",
    "KMeans": "bigquant.cluster.kmeans",
    "MiniBatchKMeans": "bigquant.cluster.minibatch",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bigquant.cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
