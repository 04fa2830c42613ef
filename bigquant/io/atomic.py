"""Atomic output: write beside the target under a hidden name, then rename.

Temporary names are ``.<stem>.<random>-<host><pid>.<tag><suffix>`` beside the
target (``tag``: ``tmp``, ``old``, ``tiles``, ``spool``, ``level<n>``; spools of a
temporary file are named after it). A run killed outright (SIGKILL, power
loss) cannot remove them, so the next run writing the same target does
(:func:`remove_stale_temporaries`): those of a process of this machine that is
no longer running, and those of any other writer untouched for a day.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator

from bigquant.errors import BigquantError, ImageWriteError
from bigquant.io.objects import URLPath, check_url_target, url_output

__all__ = ["atomic_output", "check_target", "is_own_store", "remove_path", "remove_stale_temporaries", "temp_sibling", "STALE_AFTER"]

logger = logging.getLogger(__name__)

#: seconds after which a temporary of another machine's writer (or of an older name) counts as stale
STALE_AFTER = 24 * 3600.0
#: this machine, in temporary names (a process id is only meaningful on its own host)
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_TOKEN = re.compile(r"\.(?P<rand>[0-9a-f]{10})(?:-(?P<host>[0-9a-f]{6})(?P<pid>\d+))?\.(?:tmp|old|tiles|spool|level\d+)")


def remove_path(path: pathlib.Path) -> None:
    """Remove a file or a directory tree, ignoring a missing one."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:  # pragma: no cover - best effort cleanup
        logger.warning("could not remove temporary output %s", path)


def is_own_store(path: pathlib.Path) -> bool:
    """Whether ``path`` is a zarr store bigquant wrote (its attributes carry a ``bigquant`` entry).

    Only such a directory may be replaced by an output (with ``overwrite``):
    any other directory at an output path is never removed.
    """
    if path.is_symlink() or not path.is_dir() or path.suffix.lower() != ".zarr":
        return False
    for meta, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            with open(path / meta, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError):
            continue
        attrs = doc.get(key, {}) if key is not None and isinstance(doc, dict) else doc
        if isinstance(attrs, dict) and isinstance(attrs.get("bigquant"), dict):
            return True
    return False


def check_target(path: pathlib.Path, *, overwrite: bool) -> None:
    """Raise ImageWriteError when ``path`` cannot be (re)written.

    An existing output is replaced only with ``overwrite``; a directory at the
    output path never is, unless it is a zarr store bigquant wrote
    (:func:`is_own_store`): a folder of the user's is not an output.  A URL
    (:class:`bigquant.io.objects.URLPath`) is checked where it is
    (:func:`bigquant.io.objects.check_url_target`).
    """
    if isinstance(path, URLPath):
        check_url_target(path, overwrite=overwrite)
        return
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # checked below
        pass
    except OSError as exc:  # e.g. a file name too long: Path.exists() raises it
        raise ImageWriteError(f"{path}: {exc.strerror or exc}") from exc
    if path.is_dir() and not is_own_store(path):
        raise ImageWriteError(
            f"{path}: is a directory that bigquant did not write; it is never replaced, even with overwrite "
            "(choose another output path)"
        )
    if path.exists() and not overwrite:
        raise ImageWriteError(f"{path}: output exists (pass overwrite=True to replace it)")
    if path.parent.exists() and not path.parent.is_dir():
        raise ImageWriteError(f"{path}: {path.parent} is not a directory")
    if not path.parent.is_dir():
        raise ImageWriteError(f"{path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ImageWriteError(f"{path}: directory {path.parent} is not writable")


def _token() -> str:
    return f"{uuid.uuid4().hex[:10]}-{_HOST}{os.getpid()}"


def _short_stem(path: pathlib.Path, tag: str) -> str:
    # the stem is shortened so a legal target name gives a legal (<= 255 bytes) temp name
    room = 255 - len(os.fsencode(f"..{_token()}.{tag}{path.suffix}"))
    return os.fsencode(path.stem)[: max(room, 1)].decode("utf-8", "ignore") or "x"


def temp_sibling(path: pathlib.Path, tag: str = "tmp") -> pathlib.Path:
    """A hidden, unique name beside ``path`` keeping its suffix (see the module docstring)."""
    return path.with_name(f".{_short_stem(path, tag)}.{_token()}.{tag}{path.suffix}")


def _running(pid: int) -> bool:
    """Whether process ``pid`` of this machine is running (psutil: the same on every platform)."""
    import psutil

    return bool(psutil.pid_exists(pid))


def remove_stale_temporaries(path: pathlib.Path, *, older_than: float = STALE_AFTER) -> list[pathlib.Path]:
    """Remove the temporaries an interrupted run left beside ``path`` (see the module docstring).

    Only names of bigquant's own making for this target are considered; one is
    stale when the process that made it (on this machine) is gone, or, for a
    name without a process of this machine, when it is untouched for
    ``older_than`` seconds. Files of a run still writing are kept.

    Parameters
    ----------
    path : pathlib.Path
        The target output.
    older_than : float, default=86400
        Age in seconds after which a temporary of another machine counts as stale.

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    stem = _short_stem(path, "level99")  # the shortest a tag leaves: a prefix of every temp's stem
    removed: list[pathlib.Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:  # no directory (yet): nothing to clean
        return removed
    now = time.time()
    for entry in entries:
        rest = entry.name.lstrip(".")
        if not (entry.name.startswith(".") and entry.name.endswith(path.suffix) and rest.startswith(stem)):
            continue
        if _TOKEN.match(rest, len(stem)) is None:  # not a temporary of this target
            continue
        tokens = list(_TOKEN.finditer(rest, len(stem)))
        here = [t for t in tokens if t.group("host") == _HOST and t.group("pid")]
        stale = False
        if here:
            stale = not any(_running(int(t.group("pid"))) for t in here)
        else:
            with contextlib.suppress(OSError):
                stale = now - entry.stat(follow_symlinks=False).st_mtime > older_than
        if stale:
            remove_path(pathlib.Path(entry.path))
            removed.append(pathlib.Path(entry.path))
            logger.warning("removed %s, left by an interrupted run", entry.path)
    return removed


@contextlib.contextmanager
def atomic_output(path: pathlib.Path, *, overwrite: bool) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On any exception (including KeyboardInterrupt) the temporary file or
    directory is removed and the target is left untouched; temporaries that
    an earlier, killed run left beside ``path`` are removed first
    (:func:`remove_stale_temporaries`).  OS errors that are
    not already bigquant errors are re-raised as ImageWriteError naming the
    target.  A URL (:class:`bigquant.io.objects.URLPath`) is written as
    :func:`bigquant.io.objects.url_output` says: the same promise, in object
    storage.
    """
    if isinstance(path, URLPath):
        with url_output(path, overwrite=overwrite) as where:
            yield where  # type: ignore[misc]
        return
    check_target(path, overwrite=overwrite)
    remove_stale_temporaries(path)
    tmp = temp_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise ImageWriteError(f"{path}: nothing was written")
        if path.exists() and (path.is_dir() or tmp.is_dir()):
            old = temp_sibling(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            remove_path(old)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        remove_path(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, BigquantError):
            raise ImageWriteError(f"{path}: {exc}") from exc
        raise
