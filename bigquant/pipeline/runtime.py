"""Where the work runs: connect to (or start) a Dask cluster, and name its phases.

- :func:`connect` gives a :class:`Runtime` owning what it started: a
  :class:`~distributed.LocalCluster` with worker processes sized to the machine
  (no address; ``processes=False``: a scheduler and one worker of threads in
  this process, for the dashboard without worker processes), a client of an
  existing cluster (``tcp://host:8786``, or
  ``tls://host:8786`` with certificates: :func:`tls_security`), or an
  existing :class:`~distributed.Client` passed through untouched.
- :func:`phase` and :func:`active_client` (from :mod:`bigquant.cluster.scheduler`,
  re-exported here) name the phases of the work as :func:`distributed.span` s and
  find the running client.

The library only logs; terminal progress belongs to the command line (see
:mod:`bigquant.pipeline.progress`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bigquant.cluster.resources import cpu_count
from bigquant.cluster.scheduler import active_client, phase
from bigquant.errors import ClusterConnectionError, InvalidParameterError

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client, LocalCluster
    from distributed.security import Security

__all__ = [
    "Runtime",
    "connect",
    "tls_security",
    "phase",
    "active_client",
    "machine_layout",
    "DEFAULT_TIMEOUT",
    "CLOSE_TIMEOUT",
    "TLS_HINT",
]

logger = logging.getLogger(__name__)

#: seconds to wait for a scheduler (or for a local cluster to start)
DEFAULT_TIMEOUT = 30.0
#: seconds a close of the client or of the local cluster may wait
CLOSE_TIMEOUT = 10.0

_ADDRESS = re.compile(r"^(?:(?P<proto>[a-z][a-z0-9+]*)://)?(?P<host>\[[^\]]+\]|[^:/\s]+)(?::(?P<port>\d+))?$")


def machine_layout(n_workers: int | None = None, threads_per_worker: int | None = None) -> tuple[int, int]:
    """Workers and threads per worker for a local cluster on this machine.

    Missing values follow distributed's own split of the usable cores (one
    single-threaded process per core up to 4 cores, then a few processes of a
    few threads). Usable means what this process may use
    (:func:`bigquant.cluster.resources.cpu_count`: CPU affinity and a
    container's cgroup quota), not the host's core count.

    Parameters
    ----------
    n_workers : int or None, default=None
    threads_per_worker : int or None, default=None

    Returns
    -------
    (n_workers, threads_per_worker) : tuple of int
    """
    from distributed.deploy.utils import nprocesses_nthreads

    cores = cpu_count()  # what this process may use: affinity and cgroup CPU quota, on every platform
    if n_workers is None and threads_per_worker is None:
        return nprocesses_nthreads(cores)
    if n_workers is None:
        assert threads_per_worker is not None
        return max(1, cores // threads_per_worker), threads_per_worker
    if threads_per_worker is None:
        return n_workers, max(1, cores // n_workers)
    return n_workers, threads_per_worker


def _check_count(value: int | None, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidParameterError(f"{name}={value!r} must be a positive integer or None")


#: How certificates are given, named in the errors about them (the CLI's flags, as
#: ``dask worker`` spells them, and the keywords of :func:`connect`).
TLS_HINT = (
    "--tls-ca-file, --tls-cert and --tls-key (connect(..., tls_ca_file=, tls_cert=, tls_key=) or "
    "security=distributed.Security(...), or Dask's config distributed.comm.tls.*)"
)


def _normalise_address(address: str, default_protocol: str = "tcp") -> str:
    address = address.strip()
    if address.startswith(("inproc://", "ucx://", "ws://", "wss://", "tls://")):
        return address
    match = _ADDRESS.match(address)
    if match is None:
        raise InvalidParameterError(
            f"scheduler={address!r} is not a scheduler address; expected e.g. 'tcp://host:8786'"
        )
    proto = match.group("proto") or default_protocol
    port = match.group("port") or "8786"
    return f"{proto}://{match.group('host')}:{port}"


class Runtime:
    """A distributed client and whatever :func:`connect` started for it.

    Use it as a context manager, or call :meth:`close`: only what
    :func:`connect` started (the client it opened, the local cluster it
    created) is shut down; a client that was passed in is left running.

    Attributes
    ----------
    client : distributed.Client
        The client; it is the default client while the runtime is open.
    cluster : distributed.LocalCluster or None
        The local cluster started by :func:`connect`, if any.
    dashboard_link : str or None
        URL of the Dask dashboard, when the scheduler serves one (None for a
        local cluster started with ``dashboard_address=None``: its scheduler
        still answers HTTP, for health and metrics, but serves no dashboard).
    owns_client : bool
        Whether :meth:`close` closes the client.
    """

    def __init__(self, client: Client, cluster: LocalCluster | None = None, *, owns_client: bool,
                 dashboard: bool = True, dashboard_host: str | None = None) -> None:
        self.client = client
        self.dashboard = dashboard
        #: host of the dashboard's link when it is not the scheduler's (an in-process
        #: scheduler's address is ``inproc://<this machine's IP>/...``)
        self.dashboard_host = dashboard_host
        self.cluster = cluster
        self.owns_client = owns_client
        self._closed = False

    @property
    def dashboard_link(self) -> str | None:
        """URL of the Dask dashboard, or ``None`` when there is none."""
        if not self.dashboard:
            return None
        try:
            info = self.client.scheduler_info(n_workers=0)
        except Exception:  # pragma: no cover - closed or lost client
            return None
        port = info.get("services", {}).get("dashboard")
        if not port:
            return None
        try:
            link = str(self.client.dashboard_link)
        except Exception:  # pragma: no cover
            return None
        if self.dashboard_host:
            link = re.sub(r"^(\w+://)[^/]+?(:\d+)?/", lambda m: f"{m.group(1)}{self.dashboard_host}:{port}/", link)
        return link

    @property
    def scheduler_address(self) -> str:
        """Address of the scheduler, e.g. ``tcp://127.0.0.1:8786``."""
        return str(self.client.scheduler.address)

    @property
    def workers(self) -> dict[str, dict[str, Any]]:
        """The scheduler's view of its workers (address -> info)."""
        return dict(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    @property
    def nthreads(self) -> int:
        """Total worker threads of the cluster."""
        return int(sum(self.client.nthreads().values()))

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the client and the cluster if this runtime started them (idempotent).

        Each close waits at most ``timeout`` seconds: after a Ctrl-C that also
        reached the worker processes (a terminal signals the whole process
        group), a close waiting for workers that are already gone would
        otherwise never return.
        """
        if self._closed:
            return
        self._closed = True
        if self.owns_client:
            with contextlib.suppress(Exception):
                self.client.close(timeout=timeout)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=timeout)
            logger.info("local Dask cluster stopped")

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "local" if self.cluster is not None else ("remote" if self.owns_client else "given")
        state = "closed" if self._closed else "open"
        return f"Runtime({kind}, scheduler={self.client.scheduler.address!r}, {state})"


def tls_security(
    security: Security | None = None,
    *,
    tls_ca_file: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
) -> Security:
    """The :class:`distributed.security.Security` a client of a TLS scheduler uses.

    Parameters
    ----------
    security : distributed.security.Security or None, default=None
        Used as it is; exclusive with the ``tls_*`` files.
    tls_ca_file : path or None, default=None
        The CA certificate the scheduler's certificate is checked against
        (``dask worker --tls-ca-file``).
    tls_cert : path or None, default=None
        This client's certificate (PEM; it may hold the key too).
    tls_key : path or None, default=None
        This client's private key, when it is not in ``tls_cert``.

    Returns
    -------
    distributed.security.Security
        With no argument, Dask's own: its config ``distributed.comm.tls.ca-file``,
        ``distributed.comm.tls.client.cert`` and ``distributed.comm.tls.client.key``
        (empty when none is set).  With files, encryption is required.

    Raises
    ------
    InvalidParameterError
        ``security`` and files together, a key without a certificate, or a
        file that does not exist.
    """
    from distributed.security import Security

    files = {"tls_ca_file": tls_ca_file, "tls_cert": tls_cert, "tls_key": tls_key}
    given = {name: value for name, value in files.items() if value is not None}
    if security is not None:
        if given:
            raise InvalidParameterError(
                f"security= and {', '.join(f'{n}=' for n in given)} exclude each other: "
                "put the files in the Security object"
            )
        if not isinstance(security, Security):
            raise InvalidParameterError(
                f"security={security!r} must be a distributed.security.Security or None"
            )
        return security
    if not given:
        return Security()  # Dask's config (distributed.comm.tls.*), if any
    for name, value in given.items():
        if not os.path.isfile(value):
            raise InvalidParameterError(f"{name}={os.fspath(value)!r}: no such file")
    if tls_key is not None and tls_cert is None:
        raise InvalidParameterError("tls_key= needs tls_cert=, the certificate of that key")
    return Security(
        tls_ca_file=None if tls_ca_file is None else os.fspath(tls_ca_file),
        tls_client_cert=None if tls_cert is None else os.fspath(tls_cert),
        tls_client_key=None if tls_key is None else os.fspath(tls_key),
        require_encryption=True,
    )


def _has_tls(security: Security) -> bool:
    """Whether ``security`` can open a TLS connection (Dask needs a CA file and a certificate)."""
    return bool(security.tls_ca_file and security.tls_client_cert)


def connect(
    scheduler: str | Client | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | float | None = None,
    dashboard_address: str | None = ":8787",
    processes: bool = True,
    warm: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    security: Security | None = None,
    tls_ca_file: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
) -> Runtime:
    """Start a local Dask cluster, or connect to an existing one.

    Parameters
    ----------
    scheduler : str, distributed.Client or None, default=None
        ``None`` starts a :class:`~distributed.LocalCluster` with worker
        processes sized to this machine; an address (``"tcp://host:8786"``,
        ``"tls://host:8786"``, or ``"host:port"``: TLS when certificates are
        given, else TCP) connects to that scheduler; a ``Client`` passes
        through (and is never closed by the returned runtime).
    n_workers : int or None, default=None
        Local cluster: number of worker processes (default: machine-sized).
    threads_per_worker : int or None, default=None
        Local cluster: threads per worker (default: machine-sized).
    memory_limit : str, int, float or None, default=None
        Local cluster: memory limit per worker (``"4GiB"``, bytes, or a
        fraction of the memory); ``None`` splits the memory this process may
        use (:func:`bigquant.cluster.resources.memory_limit`: a container's
        cgroup limit, not the host's size) evenly between the workers.
    dashboard_address : str or None, default=":8787"
        Local cluster: where the dashboard listens (a free port is chosen if
        this one is taken); ``None`` for no dashboard.
    processes : bool, default=True
        Local cluster: worker processes (``True``), or one worker whose
        threads run in this process (``False``: a scheduler and the dashboard,
        with no process to start and no data sent between processes;
        ``n_workers`` must then be 1 or None, ``threads_per_worker`` defaults
        to the usable cores).
    warm : bool, default=True
        Local cluster with processes: compile the numba kernels of the common
        paths here first, unless they are cached already
        (:func:`bigquant.pipeline.warm.warm_kernels`), so that the workers
        load them from the cache instead of each compiling the same ones.
    timeout : float, default=30.0
        Seconds to wait for the scheduler (or for the local cluster to start)
        before raising :class:`~bigquant.errors.ClusterConnectionError`.
    security : distributed.security.Security or None, default=None
        Remote scheduler: the TLS certificates of this client, as Dask takes
        them (``Security(tls_ca_file=..., tls_client_cert=...,
        tls_client_key=..., require_encryption=True)``).
    tls_ca_file, tls_cert, tls_key : path or None, default=None
        Remote scheduler: the same as files, named as ``dask worker`` names
        them (see :func:`tls_security`).  With neither these nor
        ``security``, Dask's config ``distributed.comm.tls.*`` applies.

    Returns
    -------
    Runtime
        Holds ``client`` (the default client from now on) and closes only what
        it started.

    Raises
    ------
    ClusterConnectionError
        The scheduler cannot be reached, or the local cluster does not start,
        within ``timeout`` seconds; or a ``tls://`` scheduler and no
        certificates (the message names the options that give them).
    InvalidParameterError
        A parameter has an invalid value (e.g. a malformed address, a missing
        certificate file, certificates for a ``tcp://`` address or for a local
        cluster).

    Examples
    --------
    >>> import bigquant
    >>> with bigquant.connect(n_workers=1, dashboard_address=None) as rt:  # doctest: +SKIP
    ...     print(rt.client)
    """
    from distributed import Client

    _check_count(n_workers, "n_workers")
    _check_count(threads_per_worker, "threads_per_worker")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise InvalidParameterError(f"timeout={timeout!r} must be a positive number of seconds")

    explicit = security is not None or any(f is not None for f in (tls_ca_file, tls_cert, tls_key))
    secure = tls_security(security, tls_ca_file=tls_ca_file, tls_cert=tls_cert, tls_key=tls_key)

    if isinstance(scheduler, Client):
        if explicit:
            raise InvalidParameterError("security and tls_* options are for an address; a Client has its own")
        logger.info("using the given Dask client of %s", scheduler.scheduler.address)
        return Runtime(scheduler, owns_client=False)

    if scheduler is not None:
        if not isinstance(scheduler, str):
            raise InvalidParameterError(
                f"scheduler={scheduler!r} must be an address string, a distributed.Client or None"
            )
        if explicit and not _has_tls(secure):
            raise InvalidParameterError(
                f"a TLS connection needs a CA file and a certificate (a key too unless the "
                f"certificate holds it): {TLS_HINT}"
            )
        address = _normalise_address(scheduler, "tls" if explicit else "tcp")
        if address.startswith("tls://") and not _has_tls(secure):
            raise ClusterConnectionError(
                f"the Dask scheduler {address} speaks TLS: give this client a CA file and a "
                f"certificate with {TLS_HINT}"
            )
        if explicit and not address.startswith("tls://"):
            raise InvalidParameterError(
                f"scheduler={scheduler!r} is not encrypted but TLS certificates were given; "
                f"use its tls:// address"
            )
        start = time.monotonic()
        try:
            # distributed bounds the TCP connect but not the handshake: a silent
            # or non-Dask peer would hang Client() forever (or fail oddly)
            _probe_scheduler(address, float(timeout), secure)
            client = Client(address, timeout=f"{float(timeout)}s", set_as_default=True, security=secure)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            waited = time.monotonic() - start
            raise ClusterConnectionError(
                f"could not reach the Dask scheduler at {address} within {waited:.0f} s "
                f"(timeout={timeout:g}): {type(exc).__name__}: {exc}"
            ) from exc
        runtime = Runtime(client, owns_client=True)
        logger.info(
            "connected to Dask scheduler %s: %d workers, %d threads",
            address,
            len(client.nthreads()),
            runtime.nthreads,
        )
        _log_dashboard(runtime)
        return runtime

    if explicit:
        raise InvalidParameterError(
            "security and tls_* options are for a remote scheduler (scheduler='tls://host:port'); "
            "the local cluster bigquant starts needs none"
        )
    from distributed import LocalCluster

    if processes:
        workers, threads = machine_layout(n_workers, threads_per_worker)
        if warm:
            from bigquant.pipeline.warm import kernels_warm, warm_kernels

            if not kernels_warm():
                logger.info("compiling the numba kernels once, before the workers start")
                warm_kernels()
    elif n_workers not in (None, 1):
        raise InvalidParameterError(f"n_workers={n_workers!r}: a local cluster without processes has one worker")
    else:
        workers, threads = 1, threads_per_worker or cpu_count()
    kwargs: dict[str, Any] = {
        "n_workers": workers,
        "threads_per_worker": threads,
        "processes": bool(processes),
        "dashboard_address": dashboard_address,
        "timeout": float(timeout),
    }
    if memory_limit is not None:
        kwargs["memory_limit"] = memory_limit
    start = time.monotonic()
    try:
        cluster = LocalCluster(**kwargs)
    except (OSError, TimeoutError) as exc:
        raise ClusterConnectionError(
            f"the local Dask cluster ({workers} workers x {threads} threads) did not start "
            f"within {timeout:g} s: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        client = Client(cluster, timeout=f"{float(timeout)}s", set_as_default=True)
    except BaseException:
        cluster.close()
        raise
    host = None
    if not processes and dashboard_address:  # the link names the host the dashboard listens on
        host = dashboard_address.rpartition(":")[0].strip("[]") or None
    runtime = Runtime(client, cluster, owns_client=True, dashboard=dashboard_address is not None, dashboard_host=host)
    logger.info(
        "started a local Dask cluster in %.1f s: %d %s x %d threads, scheduler %s",
        time.monotonic() - start,
        workers,
        "worker processes" if processes else "worker in this process",
        threads,
        cluster.scheduler_address,
    )
    _log_dashboard(runtime)
    return runtime


def _probe_scheduler(address: str, timeout: float, security: Security | None = None) -> None:
    """Open one comm to ``address``, handshake included, within ``timeout`` seconds.

    ``security`` gives the TLS context of a ``tls://`` address.  Raises
    ``TimeoutError`` or ``OSError`` (also for a peer that is not a Dask
    scheduler, or a TLS handshake that fails), never hangs.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect as comm_connect

    async def probe() -> None:
        args = security.get_connection_args("client") if security is not None else {}
        comm = await asyncio.wait_for(comm_connect(address, timeout=timeout, **args), timeout)
        await comm.close()

    with ThreadPoolExecutor(1, thread_name_prefix="bigquant-probe") as pool:  # works in Jupyter too
        try:
            pool.submit(asyncio.run, probe()).result()
        except (OSError, TimeoutError):
            raise
        except Exception as exc:  # e.g. MemoryError decoding an HTTP reply as a Dask frame
            raise OSError(f"the peer does not speak the Dask protocol ({type(exc).__name__}: {exc})") from exc


def _log_dashboard(runtime: Runtime) -> None:
    link = runtime.dashboard_link
    if link:
        logger.info("Dask dashboard: %s", link)
    else:
        logger.info("the Dask scheduler serves no dashboard")
