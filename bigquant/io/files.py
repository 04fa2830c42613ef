"""Where image bytes come from: local paths and fsspec URLs, opened by whoever reads.

Readers keep a *location* (a local path or a URL such as ``http://host/a.tif``,
``s3://bucket/a.tif``, ``memory://a.tif``) and open it themselves in every task,
so a lazy array runs on worker processes that never saw the client's files or
connections. URLs are read with small range requests (64 KiB blocks): a tile
costs about one request, never the whole file.
"""

from __future__ import annotations

import os
import re
from typing import IO, Any

from bigquant.errors import ImageReadError

__all__ = ["is_url", "open_binary", "file_stamp"]

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")
#: fsspec block size: a 256 x 256 JPEG tile is typically 20-100 KB
_BLOCK = 1 << 16


def is_url(location: Any) -> bool:
    """True for a string naming an fsspec URL (``scheme://...``), except ``file://``."""
    return isinstance(location, str) and bool(_URL.match(location)) and not location.startswith("file://")


def _fs(location: str) -> tuple[Any, str]:
    import fsspec

    try:
        return fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as exc:
        raise ImageReadError(f"{location}: cannot open this URL: {exc}") from exc


def open_binary(location: str | os.PathLike[str]) -> IO[bytes]:
    """Open a local file or URL for reading bytes (seekable); the caller closes it.

    Raises
    ------
    ImageReadError
        The file or URL cannot be opened (missing, refused, no answer).
    """
    if not is_url(location):
        return open(location, "rb", buffering=0)  # noqa: SIM115 - returned to the caller
    fs, path = _fs(str(location))
    try:
        return fs.open(path, "rb", block_size=_BLOCK, cache_type="blockcache")
    except Exception as exc:  # noqa: BLE001 - network and protocol errors of every kind
        raise ImageReadError(f"{location}: cannot open: {type(exc).__name__}: {exc}") from exc


def _info(location: str) -> dict[str, Any]:
    fs, path = _fs(location)
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise ImageReadError(f"{location}: no such file") from exc
    except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, HTTP errors
        raise ImageReadError(f"{location}: does not answer: {type(exc).__name__}: {exc}") from exc
    if info.get("type") == "directory":
        raise ImageReadError(f"{location}: is a directory, not an image file")
    return info


def file_stamp(location: str | os.PathLike[str]) -> tuple[Any, ...]:
    """What identifies this version of the file: (size, modification time or ETag)."""
    if not is_url(location):
        stat = os.stat(location)
        return (stat.st_size, stat.st_mtime_ns)
    info = _info(str(location))
    version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") \
        or info.get("created")
    return (int(info.get("size") or 0), str(version))
