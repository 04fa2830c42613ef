"""Whether the workers write where the client reads: one sentinel file per worker.

Some outputs are written by the Dask workers, not by the client: the chunks
of a zarr store (:func:`bigquant.write_image`) and the Floyd--Steinberg label
spool (:func:`bigquant.pipeline.dither.label_spool`).  A worker that does not
share the client's disk (another machine, a container, a private mount) writes
them into a directory of its own, and nothing fails: the client then renames a
store holding only its metadata, whose every chunk reads as the fill value.

:func:`unreachable_workers` proves, before the pixels are written, that every
worker's writes reach the client: each worker writes a file of a random name
(holding its address) into the directory, the client checks that it sees it
with that content, and the files are removed (the client removes those it
sees, each worker those it wrote).  With no distributed client (threads,
processes of this machine) there is nothing to prove and nothing is run.
The callers probe inside their temporaries (the zarr store being written,
the spool), so a run killed in the middle leaves no sentinel the next run's
cleanup of temporaries does not remove.  Workers that join after the probe
are not covered.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import sys
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bigquant.io.compute import current_scheduler

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

__all__ = ["scheduler_client", "unreachable_workers", "SENTINEL_PREFIX"]

logger = logging.getLogger(__name__)

#: start of the sentinel files' names (hidden; followed by a random token and the worker's hash)
SENTINEL_PREFIX = ".bq-reach-"


def scheduler_client(collections: Sequence[Any] = ()) -> Client | None:
    """The distributed client a compute of ``collections`` would run on, or None.

    Found as dask finds it (:func:`bigquant.io.compute.current_scheduler`),
    without importing ``distributed`` when no client can exist.
    """
    if "distributed" not in sys.modules:
        return None
    from distributed import Client

    scheduler = current_scheduler(collections)
    owner = scheduler if isinstance(scheduler, Client) else getattr(scheduler, "__self__", None)
    if isinstance(owner, Client) and owner.status in ("running", "connecting"):
        return owner
    return None


def _sentinel_name(token: str, address: str) -> str:
    return f"{SENTINEL_PREFIX}{token}-{hashlib.sha1(address.encode()).hexdigest()[:10]}"


def _is_url(directory: str) -> bool:
    return "://" in directory and not directory.startswith("file://")


def _put(path: str, text: str) -> None:
    """Write ``text`` at ``path`` (a local file, created, or an object at a URL)."""
    if _is_url(path):
        import fsspec

        with fsspec.open(path, "wb") as f:
            f.write(text.encode())
    else:
        with open(path, "x") as f:
            f.write(text)


def _get(path: str) -> str:
    if _is_url(path):
        import fsspec

        with fsspec.open(path, "rb") as f:
            return bytes(f.read()).decode()
    return pathlib.Path(path).read_text()


def _remove(path: str) -> None:
    if _is_url(path):
        import fsspec

        fs, key = fsspec.core.url_to_fs(path)
        fs.rm_file(key)
    else:
        os.remove(path)


def _write_sentinel(directory: str, token: str, dask_worker: Any = None) -> str | None:
    """On a worker: write its sentinel into ``directory``; None, or why it could not."""
    address = str(getattr(dask_worker, "address", os.getpid()))
    try:
        _put(os.path.join(directory, _sentinel_name(token, address)), address)
    except Exception as exc:  # noqa: BLE001 - OS errors, and an object store's of every kind
        return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
    return None


def _remove_sentinel(directory: str, token: str, dask_worker: Any = None) -> None:
    """On a worker: remove its sentinel (still there when the client could not see it)."""
    address = str(getattr(dask_worker, "address", os.getpid()))
    with contextlib.suppress(Exception):
        _remove(os.path.join(directory, _sentinel_name(token, address)))


def unreachable_workers(
    directory: str | os.PathLike[str],
    *,
    client: Client | None = None,
    collections: Sequence[Any] = (),
) -> dict[str, str]:
    """The workers whose files in ``directory`` the client does not see, and why.

    Every worker writes a sentinel file (random name, its address inside)
    into ``directory``; the client looks for each with that content; then
    every sentinel is removed.

    Parameters
    ----------
    directory : str or os.PathLike
        An existing directory of the client, where workers are about to write,
        or a URL prefix (``s3://bucket/prefix``; ``memory://`` is each
        process's own, so workers of other processes are unreachable there).
    client : distributed.Client or None, default=None
        The client whose workers are probed; None: the client a compute of
        ``collections`` would use (none: nothing to probe).
    collections : sequence of dask collections, default=()
        What is about to be computed (picks the scheduler as dask would).

    Returns
    -------
    dict of str to str
        Worker address -> reason (e.g. ``"its file is not in <dir>"`` or the
        worker's OS error); empty when every worker's file reached the
        client, or when there is no distributed client.

    Examples
    --------
    >>> import tempfile
    >>> unreachable_workers(tempfile.gettempdir())  # no distributed client: nothing to prove
    {}
    """
    if client is None:
        client = scheduler_client(collections)
    if client is None:
        return {}
    directory = os.fspath(directory)
    token = uuid.uuid4().hex
    results = client.run(_write_sentinel, directory, token, on_error="return")
    unreachable: dict[str, str] = {}
    try:
        for address, result in results.items():
            if isinstance(result, BaseException):
                unreachable[address] = f"the probe failed on the worker: {result!r}"
                continue
            if result is not None:
                unreachable[address] = f"it cannot write {directory} ({result})"
                continue
            try:
                seen = _get(os.path.join(directory, _sentinel_name(token, address))) == address
            except Exception:  # noqa: BLE001 - missing (OSError), or an object store's error
                seen = False
            if not seen:
                unreachable[address] = f"its file is not in {directory} as the client sees it"
    finally:
        for address in results:
            with contextlib.suppress(Exception):
                _remove(os.path.join(directory, _sentinel_name(token, address)))
        if unreachable:  # best effort: the sentinels the client could not see are the workers' to remove
            with contextlib.suppress(Exception):
                client.run(_remove_sentinel, directory, token, workers=list(unreachable), on_error="ignore")
    if not results:
        logger.debug("no worker to probe for %s", directory)
    for address, reason in unreachable.items():
        logger.info("worker %s does not write where the client reads: %s", address, reason)
    return unreachable
