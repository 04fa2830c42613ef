"""The CPU and memory this process may use: cgroup quotas and affinity, not the host's size.

A container (Docker, Kubernetes, a batch job's cgroup) sees the host's cores
and memory in ``os.cpu_count()`` and ``/proc/meminfo``; sizing thread pools and
persisted data by those gets a job throttled or OOM-killed. Dask already
works out the usable amounts, the same way on Linux, macOS and Windows:

- :func:`cpu_count` is :data:`dask.system.CPU_COUNT` (CPU affinity and the
  cgroup v1/v2 CPU quota, rounded up), what ``LocalCluster`` sizes itself by;
- :func:`memory_limit` is :data:`distributed.system.MEMORY_LIMIT` (the host's
  memory, lowered by the cgroup v1/v2 memory limit and ``RLIMIT_RSS``).

``os.sysconf`` (POSIX only) is a last resort, never the only way.
"""

from __future__ import annotations

import logging
import os

__all__ = ["cpu_count", "memory_limit"]

logger = logging.getLogger(__name__)


def cpu_count() -> int:
    """Cores this process may use (affinity and cgroup CPU quota included).

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> from bigquant.cluster.resources import cpu_count
    >>> cpu_count() >= 1
    True
    """
    try:
        from dask.system import CPU_COUNT

        return max(1, int(CPU_COUNT))
    except ImportError:  # pragma: no cover - dask is a dependency
        return max(1, os.cpu_count() or 1)


def memory_limit() -> int | None:
    """Bytes of memory this process may use (cgroup memory limit and ``RLIMIT_RSS`` included).

    Returns
    -------
    int or None
        ``None`` when no source says (then callers do not size by memory).

    Examples
    --------
    >>> from bigquant.cluster.resources import memory_limit
    >>> (memory_limit() or 1) > 0
    True
    """
    try:
        from distributed.system import MEMORY_LIMIT

        return int(MEMORY_LIMIT)
    except ImportError:  # pragma: no cover - distributed (and psutil) are dependencies
        pass
    try:  # pragma: no cover - POSIX without distributed
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - Windows, or not known
        logger.debug("memory size unknown")
        return None
