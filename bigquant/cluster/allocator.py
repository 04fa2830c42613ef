"""glibc allocator tuning for the fits' many short-lived, megabyte-sized arrays — opt-in only.

By default glibc serves every allocation above 128 KiB with a fresh ``mmap``
and hands it back on ``free``, raising that threshold only as big blocks come
and go (up to 32 MiB on 64-bit). A fit on an in-memory image allocates and
frees such arrays by the dozen (sorting buffers, bounds, labels), so every
one of them page-faults in anew: on this project's machines that was a fifth
of a seed-scale fit. :func:`tune_allocator` starts the process where glibc's
own dynamic thresholds end up (``mmap`` above 32 MiB, trim above 64 MiB), so
freed arrays are reused; at most 64 MiB of free heap stays with the process.
:func:`release_freed_memory` hands the heap freed by a fit back to the OS
(``malloc_trim``) before a long write pass.

The allocator belongs to the program, not to a library: nothing here runs as
a side effect of :class:`bigquant.KMeans` ``.fit`` or :func:`bigquant.quantize`
in someone else's process. The ``bigquant`` command tunes its own process
(:func:`tune_allocator`; ``BIGQUANT_TUNE_MALLOC=0`` turns it off); a Python
program opts in by calling :func:`tune_allocator` itself or by setting
``BIGQUANT_TUNE_MALLOC=1`` (then the first fit tunes, see :func:`tune_if_asked`).
Never inside a Dask worker (its nanny sets its own ``MALLOC_TRIM_THRESHOLD_``),
and only with glibc: another C library (musl has no ``mallopt``), macOS and
Windows are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
from typing import Any

__all__ = ["tune_allocator", "tune_if_asked", "release_freed_memory", "is_glibc", "ENV"]

logger = logging.getLogger(__name__)

#: the environment variable: "0" never tunes (not even the CLI), "1" lets a library process tune
ENV = "BIGQUANT_TUNE_MALLOC"
#: glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's dynamic mmap threshold maximum on 64-bit, and its matching trim threshold
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_tuned: bool | None = None


def is_glibc() -> bool:
    """Whether this process runs on GNU libc (Linux with glibc, not musl, macOS or Windows)."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _libc() -> Any:
    """The process's C library, or ``None`` where it cannot be loaded."""
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):  # pragma: no cover - Windows: CDLL(None) is not the C library
        return None


def _in_dask_worker() -> bool:
    if "distributed" not in sys.modules:  # never imported: this is no worker (and importing it costs ~1 s)
        return False
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def tune_allocator() -> bool:
    """Set the allocator thresholds once per process (see the module docstring).

    Call it at the start of a program that fits in memory; the ``bigquant``
    command does. Does nothing inside a Dask worker, without glibc, where the
    C library has no ``mallopt``, or with ``BIGQUANT_TUNE_MALLOC=0``.

    Returns
    -------
    bool
        Whether the thresholds are set.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    if _in_dask_worker():
        return False  # decided per call: a worker thread must not settle it for the process
    _tuned = False
    if not is_glibc() or os.environ.get(ENV) == "0":
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:  # a libc without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    logger.debug("allocator thresholds %s", "set" if _tuned else "left as they are")
    return _tuned


def tune_if_asked() -> bool:
    """:func:`tune_allocator` when the process opted in with ``BIGQUANT_TUNE_MALLOC=1``.

    What the estimators call: without the opt-in (or a previous
    :func:`tune_allocator`) the allocator of the caller's process is left
    as it is.

    Returns
    -------
    bool
        Whether the thresholds are set.
    """
    if _tuned is not None:
        return _tuned
    if os.environ.get(ENV) != "1":
        return False
    return tune_allocator()


def release_freed_memory() -> bool:
    """Return the heap memory freed so far to the OS (``malloc_trim``), in a tuned process only.

    A fit allocates and frees hundreds of MB of temporaries in this process;
    glibc keeps much of it mapped, which would count in the peak memory of a
    write pass that follows. Only where :func:`tune_allocator` set the
    thresholds (the command line, or a program that opted in); elsewhere a
    no-op.

    Returns
    -------
    bool
        Whether memory was trimmed.
    """
    if not _tuned:
        return False
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:  # pragma: no cover - glibc always has it
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
