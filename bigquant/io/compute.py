"""The scheduler a compute runs on, found without importing ``distributed`` when no client can exist."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import dask
import dask.threaded

__all__ = ["current_scheduler"]


def current_scheduler(collections: Sequence[Any] = ()) -> Any:
    """What ``dask.base.get_scheduler(collections=collections)`` returns, more cheaply.

    dask looks for a distributed client whenever a compute names no scheduler,
    and imports ``distributed`` to do so (about a second of a small image's
    run).  A client exists only once ``distributed`` was imported, so before
    that, with no scheduler configured, the answer is the collections' own
    default scheduler (dask's threads for arrays), without the import.
    """
    if "distributed" in sys.modules or dask.config.get("scheduler", None) is not None:
        return dask.base.get_scheduler(collections=list(collections))
    for collection in collections:
        scheduler = getattr(collection, "__dask_scheduler__", None)
        if scheduler is not None:
            return scheduler
    return dask.threaded.get
