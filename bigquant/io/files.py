"""Where image bytes come from: local paths and fsspec URLs, opened by whoever reads.

Readers keep a *location* (a local path or a URL such as ``http://host/a.tif``,
``s3://bucket/a.tif``, ``memory://a.tif``) and open it themselves in every task,
so a lazy array runs on worker processes that never saw the client's files or
connections. URLs are read with small range requests (64 KiB blocks): a tile
costs about one request, never the whole file.

Only the schemes in :data:`ALLOWED_SCHEMES` are read: ``file://`` URLs are local
paths (:func:`local_path`), and any other scheme -- ``ftp://``, fsspec's chained
``zip://...::``, ``tar://``, ``simplecache::`` -- is refused by
:func:`check_location` before a byte is read.  HTTP(S) requests time out after
:data:`URL_TIMEOUT` seconds without an answer (environment variable
``BIGQUANT_URL_TIMEOUT``); every network failure is one :class:`ImageReadError`
naming the URL.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import IO, Any

from bigquant.errors import ImageReadError, InvalidParameterError

__all__ = [
    "ALLOWED_SCHEMES",
    "URL_TIMEOUT",
    "is_url",
    "url_scheme",
    "check_location",
    "local_path",
    "open_binary",
    "read_bytes",
    "file_stamp",
    "network_error",
    "url_timeout",
]

#: URL schemes read (``file`` is a local path; ``az``/``abfs`` need adlfs, ``s3`` s3fs, ``gs`` gcsfs)
ALLOWED_SCHEMES = ("file", "http", "https", "s3", "gs", "az", "abfs", "memory")
#: seconds an HTTP(S) server may take to accept a connection or to send the next bytes
URL_TIMEOUT = 30.0
#: environment variable overriding :data:`URL_TIMEOUT`
URL_TIMEOUT_ENV = "BIGQUANT_URL_TIMEOUT"

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://")
#: fsspec's chained URLs (``zip://member::file://archive.zip``, ``simplecache::http://...``)
_CHAIN = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)::")
_CHAINED = re.compile(r"::[a-zA-Z][a-zA-Z0-9+.-]+(://|::)")
#: fsspec block size: a 256 x 256 JPEG tile is typically 20-100 KB
_BLOCK = 1 << 16


def url_scheme(location: Any) -> str | None:
    """The scheme of a URL string in lower case (``"http"``, ``"zip"``...), or None for a path."""
    if not isinstance(location, str):
        return None
    match = _URL.match(location)
    if match is None and "://" in location:  # ``simplecache::http://...``; a path ``a::b.tif`` is a path
        match = _CHAIN.match(location)
    return match[1].lower() if match else None


def is_url(location: Any) -> bool:
    """True for a string naming an fsspec URL (``scheme://...``), except ``file://``."""
    scheme = url_scheme(location)
    return scheme is not None and scheme != "file"


def check_location(location: Any) -> None:
    """Refuse a URL whose scheme is not in :data:`ALLOWED_SCHEMES`, before anything is read.

    Raises
    ------
    ImageReadError
        ``location`` is a URL of another scheme, or a chained fsspec URL
        (``zip://a.tif::file://b.zip``).
    """
    scheme = url_scheme(location)
    if scheme is None:
        return
    if scheme not in ALLOWED_SCHEMES or _CHAINED.search(location):
        what = "chained URLs (::) are" if scheme in ALLOWED_SCHEMES else f"scheme {scheme!r} is"
        raise ImageReadError(
            f"{location}: {what} not read by bigquant; use a local path or a URL with one of the "
            f"schemes {', '.join(ALLOWED_SCHEMES)}"
        )


def local_path(location: Any) -> Any:
    """``location`` with a ``file://`` URL turned into its local path; anything else unchanged.

    Raises
    ------
    ImageReadError
        A ``file://`` URL naming another host.
    """
    if url_scheme(location) != "file" or _CHAINED.search(location):
        return location
    parts = urllib.parse.urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise ImageReadError(f"{location}: a file:// URL names a file on this machine, not on {parts.netloc!r}")
    from urllib.request import url2pathname  # http.client and ssl (~15 ms) only for a file:// URL

    return url2pathname(parts.path)


def url_timeout() -> float:
    """Seconds an HTTP(S) request may wait: ``BIGQUANT_URL_TIMEOUT`` or :data:`URL_TIMEOUT`."""
    raw = os.environ.get(URL_TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return URL_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InvalidParameterError(f"{URL_TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return value


def _fs(location: str) -> tuple[Any, str]:
    import fsspec

    check_location(location)
    scheme = url_scheme(location)
    if scheme is not None:  # fsspec knows schemes in lower case only (``HTTP://`` is legal)
        location = scheme + location[len(scheme):]
    options: dict[str, Any] = {}
    if scheme in ("http", "https"):
        import aiohttp

        seconds = url_timeout()
        options["client_kwargs"] = {
            "timeout": aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
        }
    try:
        return fsspec.core.url_to_fs(location, **options)
    except (ImportError, ValueError) as exc:
        raise ImageReadError(f"{location}: cannot open this URL: {exc}") from exc


def network_error(location: str, exc: BaseException, doing: str = "does not answer") -> ImageReadError:
    """One ImageReadError line naming ``location`` and the cause of ``exc``.

    fsspec wraps a refused connection, a timeout or an HTTP error in
    ``FileNotFoundError``; the cause found along the exception chain is named
    instead: ``no such file`` (404 or a missing object), ``connection refused``,
    ``timed out after 30 s``, ``HTTP 403 ...``, or the last error's type and text.
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain and len(chain) < 16:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for err in chain:
        status = getattr(err, "status", None)
        if isinstance(status, int) and status >= 400:
            if status in (404, 410):
                return ImageReadError(f"{location}: no such file (HTTP {status})")
            return ImageReadError(f"{location}: {doing}: HTTP {status} {getattr(err, 'message', '')}".rstrip())
        if isinstance(err, ConnectionRefusedError) or isinstance(getattr(err, "os_error", None), ConnectionRefusedError):
            return ImageReadError(f"{location}: {doing}: connection refused")
        if isinstance(err, TimeoutError) or "timeout" in type(err).__name__.lower():
            return ImageReadError(f"{location}: {doing}: timed out after {url_timeout():g} s ({URL_TIMEOUT_ENV})")
    if isinstance(exc, FileNotFoundError) and exc.__cause__ is None:
        return ImageReadError(f"{location}: no such file")
    root = chain[-1]
    text = " ".join(str(root).split())  # one line
    return ImageReadError(f"{location}: {doing}: {type(root).__name__}" + (f": {text}" if text else ""))


def open_binary(location: str | os.PathLike[str]) -> IO[bytes]:
    """Open a local file or URL for reading bytes (seekable); the caller closes it.

    Raises
    ------
    ImageReadError
        The file or URL cannot be opened (missing, refused, no answer), or the
        URL's scheme is not allowed.
    """
    location = local_path(location)
    if not is_url(location):
        check_location(location)
        return open(location, "rb", buffering=0)  # noqa: SIM115 - returned to the caller
    fs, path = _fs(str(location))
    try:
        return fs.open(path, "rb", block_size=_BLOCK, cache_type="blockcache")
    except Exception as exc:  # noqa: BLE001 - network and protocol errors of every kind
        raise network_error(str(location), exc, "cannot open") from exc


def read_bytes(location: str | os.PathLike[str]) -> bytes:
    """The whole content of a local file or URL.

    Raises
    ------
    ImageReadError
        The file or URL cannot be read (missing, refused, no answer).
    """
    location = local_path(location)
    if not is_url(location):
        check_location(location)
        with open(location, "rb") as fh:
            return fh.read()
    fs, path = _fs(str(location))
    try:
        return fs.cat_file(path)
    except Exception as exc:  # noqa: BLE001 - network and protocol errors of every kind
        raise network_error(str(location), exc, "cannot read") from exc


def _info(location: str) -> dict[str, Any]:
    fs, path = _fs(location)
    try:
        info = fs.info(path)
    except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, HTTP errors
        raise network_error(location, exc) from exc
    if info.get("type") == "directory":
        raise ImageReadError(f"{location}: is a directory, not an image file")
    return info


def file_stamp(location: str | os.PathLike[str]) -> tuple[Any, ...]:
    """What identifies this version of the file: (size, modification time or ETag)."""
    location = local_path(location)
    if not is_url(location):
        check_location(location)
        stat = os.stat(location)
        return (stat.st_size, stat.st_mtime_ns)
    info = _info(str(location))
    version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") \
        or info.get("created")
    return (int(info.get("size") or 0), str(version))
