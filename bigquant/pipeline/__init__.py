"""The whole jobs: quantize an image, sweep k, and where they run.

- :mod:`~bigquant.pipeline.quantize` -- read, fit, write (palette JSON too)
- :mod:`~bigquant.pipeline.sweep` -- fit a range of k, to choose one
- :mod:`~bigquant.pipeline.runtime` -- a LocalCluster or a remote scheduler
- :mod:`~bigquant.pipeline.progress` -- terminal progress for the command line

The functions are re-exported by :mod:`bigquant` (``bigquant.quantize``,
``bigquant.sweep``, ``bigquant.connect``); this package does not re-export them,
so that ``bigquant.pipeline.quantize`` stays the module.
"""
