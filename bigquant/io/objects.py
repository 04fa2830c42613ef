"""Outputs at URLs (``s3://``, ``gs://``, ``az://``, ``abfs://``, ``memory://``), written as on disk.

An output at a URL is a :class:`URLPath`: a pure path whose ``name``,
``suffix``, ``parent`` and ``/`` work as a local path's do, and whose
``str()`` is the URL again, so the writers and the request model use it
where they use a :class:`pathlib.Path`.  What changes is where the bytes go:

* **Files** (TIFF, COG, PNG, JPEG, palette files, previews, comparisons) are
  written by the local writer into a hidden temporary directory of the
  client's system temp dir (tifffile seeks back to patch tile offsets, and
  the COG writer spools its full-resolution tiles beside its file: neither
  can write to a stream).  The finished file is then uploaded in parts of
  :data:`PART_SIZE` bytes.  On S3 it is one multipart upload onto the
  target, completed only once every part is in and aborted otherwise; on
  stores where an object appears as it is written (``memory://``, and the
  others until their commit semantics are tested here) it goes under a
  hidden temporary key beside the target and is then moved onto it.
  Memory stays that of a local write plus one part; a run that fails
  leaves no object, neither at the target nor beside it.
* **zarr stores** are written chunk by chunk by the workers under a hidden
  temporary prefix beside the target (each worker opens the store itself,
  through fsspec); on success every object is copied onto the target's
  prefix, the metadata last, and the temporary prefix removed; on failure
  it is removed.  A temporary prefix rather than writing in place, so a
  failed or killed run never leaves a store at the target that reads as
  fill values where chunks are missing, and an existing store is replaced
  only once the new one is complete.

Credentials and endpoints come from each library's usual configuration
(for S3: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``
for an S3-compatible server, or fsspec's configuration); bigquant never logs
them.  The worker processes of a cluster read the same environment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

from bigquant.errors import BigquantError, ImageWriteError
from bigquant.io.files import ALLOWED_SCHEMES, is_url, local_path, url_scheme

__all__ = [
    "PART_SIZE", "URLPath", "output_location", "same_location", "url_fs", "url_exists", "check_url_target",
    "url_output", "temp_key", "remove_url", "remove_stale_url_temporaries", "STALE_AFTER", "read_url_bytes", "write_url_bytes", "is_own_url_store",
]

logger = logging.getLogger(__name__)

#: bytes of each part of an upload (S3 multipart parts are at least 5 MiB, the last excepted)
PART_SIZE = 16 * 2**20
#: zarr metadata objects: copied last, so a store at the target is whole once it has them
_ZARR_META = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")


class URLPath(pathlib.PurePosixPath):
    """An output URL as a pure path: ``URLPath("s3://bucket/a.tif").suffix == ".tif"``.

    The URL is kept as the path ``s3:/bucket/a.tif`` (so every pure-path
    operation applies to its key); ``str()`` and ``os.fspath()`` give the URL
    back.

    Examples
    --------
    >>> p = URLPath("s3://bucket/out/a.tif")
    >>> str(p.with_name("b.zarr")), p.suffix, str(p.parent)
    ('s3://bucket/out/b.zarr', '.tif', 's3://bucket/out')
    """

    def __str__(self) -> str:
        text = super().__str__()
        scheme, _, rest = text.partition(":/")
        return f"{scheme}://{rest}"

    def __fspath__(self) -> str:
        return str(self)

    def as_posix(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"URLPath({str(self)!r})"

    @property
    def scheme(self) -> str:
        """The URL's scheme (``"s3"``)."""
        return self.parts[0].rstrip(":")


def output_location(location: Any) -> pathlib.Path | URLPath:
    """Where an output goes: a :class:`URLPath` for a URL, else a local path (``~`` expanded).

    Raises
    ------
    ImageWriteError
        A URL whose scheme bigquant does not write (see
        :data:`bigquant.io.files.ALLOWED_SCHEMES`), or a chained URL.
    """
    if isinstance(location, URLPath):
        return location
    location = local_path(location) if isinstance(location, str) else location
    if isinstance(location, str) and is_url(location):
        scheme = url_scheme(location)
        if scheme not in ALLOWED_SCHEMES or scheme in ("http", "https") or "::" in location:
            raise ImageWriteError(
                f"{location}: bigquant does not write this URL; outputs go to a local path or a URL with one of "
                f"the schemes {', '.join(s for s in ALLOWED_SCHEMES if s not in ('file', 'http', 'https'))}")
        assert scheme is not None
        return URLPath(scheme + location[len(scheme):])
    return pathlib.Path(location).expanduser()


def same_location(a: Any, b: Any) -> bool:
    """Whether two outputs (paths or URLs) name the same place (URLs compared as written, paths absolute)."""
    def where(x: Any) -> pathlib.Path | URLPath:
        x = local_path(x) if isinstance(x, str) else x
        if isinstance(x, str) and is_url(x):
            scheme = str(url_scheme(x))
            return URLPath(scheme + x[len(scheme):])
        return x if isinstance(x, URLPath) else pathlib.Path(x).expanduser()

    a, b = where(a), where(b)
    if isinstance(a, URLPath) or isinstance(b, URLPath):
        return isinstance(a, URLPath) and isinstance(b, URLPath) and str(a) == str(b)
    return os.path.abspath(a) == os.path.abspath(b)


def url_fs(url: URLPath | str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path in it.

    Raises
    ------
    ImageWriteError
        The scheme's package is missing (``s3fs``, ``gcsfs``, ``adlfs``).
    """
    import fsspec

    try:
        return fsspec.core.url_to_fs(str(url))
    except (ImportError, ValueError) as exc:
        raise ImageWriteError(f"{url}: cannot write this URL: {exc}") from exc


def _error(url: Any, exc: BaseException, doing: str) -> ImageWriteError:
    """One ImageWriteError line naming ``url`` and the cause (never a credential: only the error's type and text)."""
    if isinstance(exc, BigquantError):
        return exc  # type: ignore[return-value]
    text = " ".join(str(exc).split())
    return ImageWriteError(f"{url}: {doing}: {type(exc).__name__}" + (f": {text}" if text else ""))


def url_exists(url: URLPath | str) -> bool:
    """Whether an object (or a prefix holding objects) is at ``url``."""
    fs, path = url_fs(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:  # noqa: BLE001 - network and permission errors of every kind
        raise _error(url, exc, "cannot reach it") from exc


def is_own_url_store(url: URLPath) -> bool:
    """Whether ``url`` is a zarr store bigquant wrote (its attributes carry a ``bigquant`` entry)."""
    if url.suffix.lower() != ".zarr":
        return False
    fs, path = url_fs(url)
    for meta, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            doc = json.loads(fs.cat_file(f"{path.rstrip('/')}/{meta}"))
        except Exception:  # noqa: BLE001 - missing or not JSON: not this kind of store
            continue
        attrs = doc.get(key, {}) if key is not None and isinstance(doc, dict) else doc
        if isinstance(attrs, dict) and isinstance(attrs.get("bigquant"), dict):
            return True
    return False


def check_url_target(url: URLPath, *, overwrite: bool) -> None:
    """Raise ImageWriteError when ``url`` cannot be (re)written; nothing is read but the target's listing.

    An existing object is replaced only with ``overwrite``; a prefix holding
    objects (a "folder") only when it is a zarr store bigquant wrote.  The
    bucket (or container) must exist and take a write: a small hidden object
    is written beside the target and removed.
    """
    fs, path = url_fs(url)
    fs.invalidate_cache(path)  # another process (a worker, another run) may have written since
    try:
        exists = fs.exists(path)
        is_dir = exists and fs.isdir(path)
    except Exception as exc:  # noqa: BLE001
        raise _error(url, exc, "cannot reach it") from exc
    if is_dir and not is_own_url_store(url):
        raise ImageWriteError(
            f"{url}: holds objects bigquant did not write; it is never replaced, even with overwrite "
            "(choose another output URL)")
    if exists and not overwrite:
        raise ImageWriteError(f"{url}: output exists (pass overwrite=True to replace it)")
    if url.scheme != "memory":
        bucket = path.split("/", 1)[0]
        try:
            found = fs.exists(bucket)
        except Exception as exc:  # noqa: BLE001
            raise _error(url, exc, f"cannot reach the bucket {bucket!r}") from exc
        if not found:
            raise ImageWriteError(f"{url}: the bucket {bucket!r} does not exist (or is not visible)")
    probe = f"{path.rsplit('/', 1)[0]}/.bq-probe-{uuid.uuid4().hex[:12]}"
    try:
        fs.pipe_file(probe, b"")
    except Exception as exc:  # noqa: BLE001
        raise _error(url, exc, "cannot write beside it") from exc
    with contextlib.suppress(Exception):
        fs.rm_file(probe)


def remove_url(url: URLPath | str) -> None:
    """Remove an object or every object under a prefix, ignoring a missing one (best effort)."""
    fs, path = url_fs(url)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception:  # noqa: BLE001 - best effort cleanup
        logger.warning("could not remove the temporary output %s", url)
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)


def read_url_bytes(url: URLPath | str) -> bytes:
    """The whole object at ``url``."""
    fs, path = url_fs(url)
    try:
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _error(url, exc, "cannot read it") from exc


def write_url_bytes(url: URLPath | str, data: bytes) -> None:
    """Put ``data`` at ``url`` in one request (the object appears whole or not at all)."""
    fs, path = url_fs(url)
    try:
        fs.pipe_file(path, data)
    except Exception as exc:  # noqa: BLE001
        raise _error(url, exc, "cannot write it") from exc


def temp_key(url: URLPath, tag: str = "tmp") -> URLPath:
    """A hidden, unique name beside ``url`` keeping its suffix (``.<stem>.<random>.<tag><suffix>``)."""
    return url.with_name(f".{url.stem[:120]}.{uuid.uuid4().hex[:10]}.{tag}{url.suffix}")


#: seconds after which a temporary key or prefix beside a URL output counts as left by a killed run
STALE_AFTER = 24 * 3600.0


def _modified(entry: dict[str, Any]) -> float | None:
    """An object's modification time in seconds since the epoch (None when the store gives none)."""
    import datetime

    value = entry.get("LastModified") or entry.get("mtime") or entry.get("created") or entry.get("last_modified")
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return None


def remove_stale_url_temporaries(url: URLPath, *, older_than: float = STALE_AFTER) -> list[str]:
    """Remove the temporary keys and prefixes a killed run left beside ``url``; return what went.

    Only names of bigquant's making for this target (``.<stem>.<random>.<tag><suffix>``,
    :func:`temp_key`) whose newest object is untouched for ``older_than``
    seconds: a run still writing keeps its own.  (A multipart upload a killed
    run left pending holds no object; S3's lifecycle rule
    ``AbortIncompleteMultipartUpload`` removes its parts.)
    """
    import re
    import time

    fs, path = url_fs(url)
    parent, _, _ = path.rstrip("/").rpartition("/")
    pattern = re.compile(re.escape(f".{url.stem[:120]}.") + r"[0-9a-f]{10}\.tmp" + re.escape(url.suffix) + "$")
    removed: list[str] = []
    try:
        entries = fs.ls(parent, detail=True, refresh=True) if parent else []
    except Exception:  # noqa: BLE001 - no such prefix yet, or nothing listable: nothing to clean
        return removed
    now = time.time()
    for entry in entries:
        name = str(entry.get("name", "")).rstrip("/")
        if not pattern.match(name.rpartition("/")[2]):
            continue
        try:
            objects = fs.find(name, detail=True) if entry.get("type") == "directory" else {name: entry}
        except Exception:  # noqa: BLE001
            continue
        times = [t for t in (_modified(o) for o in objects.values()) if t is not None]
        if times and now - max(times) > older_than:
            with contextlib.suppress(Exception):
                fs.rm(name, recursive=True)
                removed.append(name)
                logger.warning("removed %s beside %s, left by an interrupted run", name.rpartition("/")[2], url)
    return removed


def _commits_on_request(fs: Any) -> bool:
    """Whether files of ``fs`` opened with ``autocommit=False`` appear only on ``commit()``
    (S3: a multipart upload completed then, aborted by ``discard()``)."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in ("s3", "s3a") for p in protocols)


def _upload(local: pathlib.Path, fs: Any, path: str, *, deferred: bool = False) -> None:
    """Copy ``local`` to ``path`` in parts of :data:`PART_SIZE`; on failure abort and leave nothing.

    ``deferred``: the object appears only when the upload is committed, after
    the last part (:func:`_commits_on_request`); otherwise at close.
    """
    out = fs.open(path, "wb", block_size=PART_SIZE, **({"autocommit": False} if deferred else {}))
    try:
        with open(local, "rb") as fh:
            shutil.copyfileobj(fh, out, PART_SIZE)
        out.close()  # the last part (deferred), or the whole upload
        if deferred:
            out.commit()  # S3: CompleteMultipartUpload -- the object appears now, whole
    except BaseException:
        with contextlib.suppress(Exception):
            out.discard()  # s3fs: abort the multipart upload
        with contextlib.suppress(Exception):
            out.closed = True  # nothing left to flush on garbage collection
        if not deferred:
            with contextlib.suppress(Exception):
                if fs.exists(path):
                    fs.rm_file(path)
        raise


def _move_store(fs: Any, tmp: str, target: str, replace: bool) -> None:
    """Copy every object under ``tmp`` onto ``target`` (metadata last), then remove ``tmp``."""
    keys = sorted(fs.find(tmp))
    meta = [k for k in keys if k.rsplit("/", 1)[-1] in _ZARR_META]
    data = [k for k in keys if k not in set(meta)]
    if replace and fs.exists(target):
        fs.rm(target, recursive=True)
    for group in (data, meta):  # server-side copies, many at once (s3fs batches them); the metadata last
        if group:
            fs.copy(group, [target + key[len(tmp):] for key in group])
    fs.rm(tmp, recursive=True)
    fs.invalidate_cache()


@contextlib.contextmanager
def url_output(url: URLPath, *, overwrite: bool) -> Iterator[pathlib.Path | URLPath]:
    """Yield where to write the output ``url``; put it there on success, leave nothing on failure.

    A zarr store (``.zarr``) is written under a hidden temporary prefix beside
    ``url`` (a :class:`URLPath` the workers write through); any other output
    into a local temporary file of the system temp dir, uploaded on success.
    See the module docstring.
    """
    check_url_target(url, overwrite=overwrite)
    remove_stale_url_temporaries(url)
    fs, target = url_fs(url)
    if url.suffix.lower() == ".zarr":
        tmp_url = temp_key(url)
        assert isinstance(tmp_url, URLPath)
        _, tmp_key = url_fs(tmp_url)
        try:
            yield tmp_url
            if not fs.exists(f"{tmp_key}/zarr.json"):
                raise ImageWriteError(f"{url}: nothing was written")
            try:
                _move_store(fs, tmp_key, target, replace=overwrite)
            except Exception as exc:  # noqa: BLE001 - the store's errors of every kind
                raise _error(url, exc, "cannot move the finished store there") from exc
            logger.info("moved %s onto %s", tmp_url, url)
        except BaseException as exc:
            remove_url(tmp_url)
            if isinstance(exc, OSError) and not isinstance(exc, BigquantError):
                raise _error(url, exc, "cannot write it") from exc
            raise
        return
    folder = pathlib.Path(tempfile.mkdtemp(prefix="bigquant-upload-"))
    local = folder / url.name
    tmp_url = temp_key(url)
    _, tmp_key = url_fs(tmp_url)
    try:
        yield local
        if not local.exists():
            raise ImageWriteError(f"{url}: nothing was written")
        logger.info("uploading %s (%d bytes) to %s", local.name, local.stat().st_size, url)
        try:
            if _commits_on_request(fs):  # one multipart upload onto the target, completed only now
                _upload(local, fs, target, deferred=True)
            else:  # an object appears as it is written: under a temporary key, then moved
                _upload(local, fs, tmp_key)
                fs.mv(tmp_key, target)
        except Exception as exc:  # noqa: BLE001 - the store's errors of every kind
            raise _error(url, exc, "cannot upload it") from exc
        fs.invalidate_cache()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            if fs.exists(tmp_key):
                fs.rm_file(tmp_key)
        if isinstance(exc, OSError) and not isinstance(exc, BigquantError):
            raise _error(url, exc, "cannot write it") from exc
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
