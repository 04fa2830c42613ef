"""Atomic output: write beside the target under a hidden name, then rename."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import uuid
from collections.abc import Iterator

from bigquant.errors import BigquantError, ImageWriteError

__all__ = ["atomic_output", "check_target", "remove_path"]

logger = logging.getLogger(__name__)


def remove_path(path: pathlib.Path) -> None:
    """Remove a file or a directory tree, ignoring a missing one."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:  # pragma: no cover - best effort cleanup
        logger.warning("could not remove temporary output %s", path)


def check_target(path: pathlib.Path, *, overwrite: bool) -> None:
    """Raise ImageWriteError when ``path`` cannot be (re)written."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # checked below
        pass
    except OSError as exc:  # e.g. a file name too long: Path.exists() raises it
        raise ImageWriteError(f"{path}: {exc.strerror or exc}") from exc
    if path.exists() and not overwrite:
        raise ImageWriteError(f"{path}: output exists (pass overwrite=True to replace it)")
    if path.parent.exists() and not path.parent.is_dir():
        raise ImageWriteError(f"{path}: {path.parent} is not a directory")
    if not path.parent.is_dir():
        raise ImageWriteError(f"{path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ImageWriteError(f"{path}: directory {path.parent} is not writable")


def temp_sibling(path: pathlib.Path, tag: str = "tmp") -> pathlib.Path:
    """A hidden, unique name beside ``path`` keeping its suffix."""
    # the stem is shortened so a legal target name gives a legal (<= 255 bytes) temp name
    room = 255 - len(os.fsencode(f"..{uuid.uuid4().hex[:10]}.{tag}{path.suffix}"))
    stem = os.fsencode(path.stem)[: max(room, 1)].decode("utf-8", "ignore") or "x"
    return path.with_name(f".{stem}.{uuid.uuid4().hex[:10]}.{tag}{path.suffix}")


@contextlib.contextmanager
def atomic_output(path: pathlib.Path, *, overwrite: bool) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On any exception (including KeyboardInterrupt) the temporary file or
    directory is removed and the target is left untouched.  OS errors that are
    not already bigquant errors are re-raised as ImageWriteError naming the
    target.
    """
    check_target(path, overwrite=overwrite)
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
