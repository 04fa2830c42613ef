"""glibc allocator thresholds for the fits' many short-lived, megabyte-sized arrays.

By default glibc serves every allocation above 128 KiB with a fresh ``mmap``
and hands it back on ``free``, raising that threshold only as big blocks come
and go (up to 32 MiB on 64-bit). A fit on an in-memory image allocates and
frees such arrays by the dozen (sorting buffers, bounds, labels), so every
one of them page-faults in anew: on this project's machines that was a fifth
of a seed-scale fit. :func:`tune_allocator` starts the process where glibc's
own dynamic thresholds end up (``mmap`` above 32 MiB, trim above 64 MiB), so
freed arrays are reused; at most 64 MiB of free heap stays with the process.

It is applied once, in the client process only (never inside a Dask worker,
whose nanny sets its own ``MALLOC_TRIM_THRESHOLD_``), and not at all with
``BIGQUANT_TUNE_MALLOC=0`` or on a C library without ``mallopt``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["tune_allocator"]

logger = logging.getLogger(__name__)

#: glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's dynamic mmap threshold maximum on 64-bit, and its matching trim threshold
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_tuned: bool | None = None


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def tune_allocator() -> bool:
    """Set the allocator thresholds once per process (see the module docstring).

    Returns whether they are set (``False`` where it does not apply).
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    if _in_dask_worker():
        return False  # decided per call: a worker thread must not settle it for the process
    _tuned = False
    if not sys.platform.startswith("linux") or os.environ.get("BIGQUANT_TUNE_MALLOC", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    logger.debug("allocator thresholds %s", "set" if _tuned else "left as they are")
    return _tuned
