"""The Dask scheduler the estimators run on: the active client, and phases as spans.

- :func:`active_client` is the running distributed client ``dask.compute`` would
  use, or ``None`` (never starts one).
- :func:`on_client` makes a client the scheduler of the computes in a block
  with :meth:`distributed.Client.as_current` (context-local: no global
  ``dask.config.set(scheduler=client)``, which a nanny would try to pickle and
  which concurrent jobs would leave set).
- :func:`shares_memory` tells whether the tasks of a compute run in this
  process (threads, or one after the other), so that they can hand big
  objects to one another for nothing.
- :func:`phase` opens a :func:`distributed.span` around a phase of the work
  (``histogram``, ``lloyd``, ``labels``, ``write``...) when a distributed client
  is active, so the dashboard groups its tasks; without a client it does
  nothing and costs next to nothing.

Starting and connecting clusters is :mod:`bigquant.pipeline.runtime`'s job.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

__all__ = ["active_client", "on_client", "phase", "shares_memory"]

logger = logging.getLogger(__name__)


def active_client() -> Client | None:
    """The current default distributed client, or ``None`` (cheap; never starts one).

    Returns
    -------
    distributed.Client or None
        The client that ``dask.compute`` would use, if it is a running
        distributed client.
    """
    import sys

    if "distributed" not in sys.modules:  # never imported: no client can exist
        return None
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:  # no client has started
        return None
    if client is None or getattr(client, "status", "closed") not in ("running", "connecting"):
        return None
    return client


def shares_memory() -> bool:
    """Whether ``dask.compute`` would run its tasks in this process: threads or synchronously, no client.

    False for a distributed client, a process pool, or a scheduler setting
    it does not know (where a task's result may be pickled to another process).
    """
    if active_client() is not None:
        return False
    import dask

    scheduler = dask.config.get("scheduler", None)
    if scheduler is None:
        return True  # dask's default for arrays and delayed: its thread pool
    if isinstance(scheduler, str):
        return scheduler.lower() in ("threads", "threading", "sync", "synchronous", "single-threaded")
    import dask.local
    import dask.threaded

    return scheduler in (dask.threaded.get, dask.local.get_sync)


#: jobs inside :func:`on_client` in this process, and the dask "scheduler" setting before the first
_jobs_lock = threading.Lock()
_jobs = 0
_before: tuple[bool, object] = (False, None)


@contextlib.contextmanager
def on_client(client: Client | None) -> Iterator[None]:
    """Make ``client`` the scheduler of every compute in the block (nothing for ``None``).

    Uses :meth:`distributed.Client.as_current`: the client is current in this
    thread (and asyncio task) only, so concurrent jobs on other clients keep
    theirs. ``as_current`` also sets dask's global ``scheduler`` option to
    ``"dask.distributed"`` and restores it on exit, which jobs in several
    threads would interleave and leave set; the option is therefore put back
    as it was before the first job when the last one ends. (No client object
    ever goes in the global config: a nanny pickles it.)

    Parameters
    ----------
    client : distributed.Client or None

    Examples
    --------
    >>> from bigquant.cluster.scheduler import on_client
    >>> with on_client(None):
    ...     pass
    """
    global _jobs, _before
    if client is None:
        yield
        return
    import dask

    with _jobs_lock:
        if _jobs == 0:
            _before = ("scheduler" in dask.config.config, dask.config.config.get("scheduler"))
        _jobs += 1
    try:
        with client.as_current():
            yield
    finally:
        with _jobs_lock:
            _jobs -= 1
            if _jobs == 0:
                present, value = _before
                if present:
                    dask.config.set(scheduler=value)
                else:
                    dask.config.config.pop("scheduler", None)


@contextlib.contextmanager
def phase(name: str) -> Iterator[str | None]:
    """Run a phase of the work inside a :func:`distributed.span` of that name.

    With an active distributed client, every task submitted inside the block
    is annotated with the span, which the dashboard (and
    ``scheduler.extensions["spans"]``) groups by name. Without a client the
    block runs as is.

    Parameters
    ----------
    name : str
        The phase, e.g. ``"histogram"``, ``"lloyd"``, ``"labels"``, ``"write"``.

    Yields
    ------
    span_id : str or None
        The span's id, or ``None`` without a client.

    Examples
    --------
    >>> from bigquant.cluster.scheduler import phase
    >>> with phase("histogram") as span_id:
    ...     pass
    >>> span_id is None
    True
    """
    if active_client() is None:
        yield None
        return
    from distributed import span

    logger.debug("phase %s", name)
    with span(name) as span_id:
        yield span_id
