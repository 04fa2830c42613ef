"""The Dask scheduler the estimators run on: the active client, and phases as spans.

- :func:`active_client` is the running distributed client ``dask.compute`` would
  use, or ``None`` (never starts one).
- :func:`on_client` makes a client the scheduler of the computes in a block
  with :meth:`distributed.Client.as_current` (context-local: no global
  ``dask.config.set(scheduler=client)``, which a nanny would try to pickle and
  which concurrent jobs would leave set).
- :func:`phase` opens a :func:`distributed.span` around a phase of the work
  (``histogram``, ``lloyd``, ``labels``, ``write``...) when a distributed client
  is active, so the dashboard groups its tasks; without a client it does
  nothing and costs next to nothing.

Starting and connecting clusters is :mod:`bigquant.pipeline.runtime`'s job.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

__all__ = ["active_client", "on_client", "phase"]

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


@contextlib.contextmanager
def on_client(client: Client | None) -> Iterator[None]:
    """Make ``client`` the scheduler of every compute in the block (nothing for ``None``).

    Uses :meth:`distributed.Client.as_current`, which is local to the thread
    (and asyncio task): other threads and jobs keep their own scheduler.

    Parameters
    ----------
    client : distributed.Client or None

    Examples
    --------
    >>> from bigquant.cluster.scheduler import on_client
    >>> with on_client(None):
    ...     pass
    """
    if client is None:
        yield
        return
    with client.as_current():
        yield


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
