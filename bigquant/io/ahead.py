"""Decoding ahead: a child process decodes a compressed tiled TIFF into the pixel spool while the command starts.

The ``bigquant`` command spends its first 0.3-0.4 s on one core: Python
imports dask, numba and the pipeline, then opens the input.  The other core
idles, while the first pass will spend about 6.5 ns a pixel decoding the
tiles (a 67 MP deflate GeoTIFF: 0.43 s of CPU).  :func:`decoding_ahead`
starts a child process (forked on Linux: it has numpy already and decodes its
first tile some 0.06 s later; elsewhere a new interpreter, 0.2 s) that decodes
the tiles in row-major order into the raw files of a pixel spool (:mod:`bigquant.io.spool`: a tile's
pixels, then its mark) while the command starts.  The first pass adopts that
spool (:func:`adopt`, called by :func:`bigquant.io.spool.pixel_spool`) and
reads the tiles it finds marked back raw instead of decoding them
(:class:`bigquant.io.spool.SpoolingReader`).

The child is killed (and waited for) as soon as anything in this process
reads a tile of the same file (:func:`stop_decoding`, called by
:meth:`bigquant.io.tiff_read.TiffBlockReader.segment_windows`): from then on
the pass's threads have the cores, and a tile killed half-written has no
mark, so it is decoded again.  The child also stops by itself after
:data:`MAX_BYTES` of pixels, or when its parent is gone.  Its pixels are the
ones the pass would decode (the same reader, built by
:func:`bigquant.io.tiff_read.level_reader`, and decoder), and the spool is
adopted only when the reader of the pass equals the child's, field by field,
for the same version of the file; a spool nothing adopts is removed by
:meth:`DecodeAhead.close`.

This module is the parent's side; the child's work is
:func:`bigquant.io.spool.decode_ahead` (``python -m bigquant.io.spool`` when
spawned).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DecodeAhead", "adopt", "decoding_ahead", "spool_base", "stop_decoding", "MIN_FILE_BYTES", "MAX_BYTES",
           "LAYOUT_FILE"]

logger = logging.getLogger(__name__)

#: files smaller than this get no child: decoding them costs less than starting one
MIN_FILE_BYTES = 32 * 2**20
#: the child stops after decoding this many bytes of pixels (a bound on work nobody may use)
MAX_BYTES = 512 * 2**20
#: what the child writes, once its spool files exist: its reader and the file's version (JSON)
LAYOUT_FILE = "layout.json"

_lock = threading.Lock()
#: the children running for this process, by the real path of the file they decode
_running: dict[str, DecodeAhead] = {}


@dataclass(eq=False)
class DecodeAhead:
    """A child process decoding ``path``'s tiles into the spool ``directory`` for the output ``base``."""

    path: str
    base: pathlib.Path
    directory: pathlib.Path
    process: Any  # a subprocess.Popen, or the forked child's _Forked
    #: a pixel spool took the directory over (it removes it)
    adopted: bool = False
    _stop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stop(self) -> None:
        """Kill the child, if it still runs, and wait for it: its marks are final then."""
        if self.process.returncode is not None:
            return
        with self._stop_lock:
            if self.process.poll() is None:
                self.process.kill()
            code = self.process.wait()
        if code not in (0, -9):
            logger.debug("decoding %s ahead: the child ended with code %s", self.path, code)

    def close(self) -> None:
        """Stop the child, forget it and remove its spool unless one was adopted."""
        from bigquant.io.atomic import remove_path

        self.stop()
        with _lock:
            if _running.get(_key(self.path)) is self:
                del _running[_key(self.path)]
        if not self.adopted:
            remove_path(self.directory)


def _key(path: str) -> str:
    return os.path.realpath(path)


def _worth_it(path: str) -> bool:
    """A local TIFF file of at least :data:`MIN_FILE_BYTES`, and a second core to decode it on."""
    if "://" in path or not hasattr(os, "pwrite"):
        return False
    try:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if cores < 2 or os.path.getsize(path) < MIN_FILE_BYTES:
            return False
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        return False
    return magic in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


#: the child's work: (path, directory, level=, series=, parent=) -> tiles written
Work = Callable[..., int]
#: children are forked where fork is safe for a process that imported numpy and no GUI toolkit (and runs one
#: thread: see :func:`decoding_ahead`)
_FORK = sys.platform.startswith("linux") and hasattr(os, "fork")


class _Forked:
    """The few calls of :class:`subprocess.Popen` :class:`DecodeAhead` makes, for a forked child."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None:  # as Popen.wait: TimeoutExpired when the child runs on
            import time

            deadline = time.monotonic() + timeout
            while self.poll() is None:
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
                time.sleep(0.005)
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _forked(work: Work, path: str, directory: pathlib.Path, level: int, series: int | None) -> _Forked:
    """``work`` in a child forked from this (single-threaded) process; it never returns into the caller."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return _Forked(pid)
    code = 1
    try:  # the child: no log lines of its own, no exit handlers or buffers of the parent
        logging.disable(logging.CRITICAL)
        with contextlib.suppress(OSError):
            os.nice(5)  # the parent's threads come first once the pass runs
        work(path, directory, level=level, series=series, parent=parent)
        code = 0
    except BaseException:  # noqa: BLE001 - whatever happens, the child ends here
        pass
    finally:
        os._exit(code)


def _spawned(
    path: str, directory: pathlib.Path, level: int, series: int | None
) -> subprocess.Popen:  # type: ignore[type-arg]
    """``python -m bigquant.io.spool ...``: a new interpreter for the child."""
    import bigquant

    root = str(pathlib.Path(bigquant.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    argv = [sys.executable, "-m", "bigquant.io.spool", path, str(directory), str(level),
            "" if series is None else str(series), str(os.getpid())]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, close_fds=True)


@contextlib.contextmanager
def decoding_ahead(
    path: str, base: pathlib.Path, *, level: int = 0, series: int | None = None, work: Work | None = None
) -> Iterator[DecodeAhead | None]:
    """Decode ``path``'s tiles ahead in a child process for the length of the block (see the module docstring).

    Parameters
    ----------
    path : str
        The input, a local TIFF file (anything else: nothing is started).
    base : pathlib.Path
        Where :func:`bigquant.io.spool.pixel_spool` will put the spool of
        that input's first pass (beside the output, or in the scratch
        directory); the child's spool is a hidden directory beside it, named
        as the pass would name it.
    level, series : int
        The image level and series the job reads (``series=None``: the one
        :func:`bigquant.io.tiff_read.read_tiff` picks).
    work : callable, default=None
        :func:`bigquant.io.spool.decode_ahead`, when the caller imported it:
        on Linux the child is then forked from this process, with what it
        imported already (numpy...), and decodes 0.1 s sooner; otherwise it
        is a new interpreter running ``python -m bigquant.io.spool``.

    Yields
    ------
    DecodeAhead or None
        None when no child was started: a small or remote file, one core.
    """
    if not _worth_it(path):
        yield None
        return
    from bigquant.io.atomic import temp_sibling

    directory = temp_sibling(base, "spool")
    try:
        directory.mkdir()
    except OSError as exc:
        logger.debug("not decoding %s ahead: %s", path, exc)
        yield None
        return
    try:
        # forked only from a process with no other thread (that might hold a lock the child needs)
        forking = work is not None and _FORK and threading.active_count() == 1
        process = _forked(work, path, directory, level, series) if forking else _spawned(path, directory, level, series)
    except OSError as exc:
        from bigquant.io.atomic import remove_path

        remove_path(directory)
        logger.debug("not decoding %s ahead: %s", path, exc)
        yield None
        return
    ahead = DecodeAhead(path, base, directory, process)
    with _lock:
        _running[_key(path)] = ahead
    logger.debug("decoding %s ahead into %s (process %d)", path, directory, process.pid)
    try:
        yield ahead
    finally:
        ahead.close()


def spool_base(target: pathlib.PurePath, scratch: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The path the pixel spool of the output ``target`` is named after, to lie beside it (or in ``scratch``).

    What :func:`bigquant.io.spool.pixel_spool` and :func:`decoding_ahead` name their directories after.
    """
    from bigquant.io.files import is_url

    if scratch is not None:
        return pathlib.Path(os.fspath(scratch)) / target.name
    if is_url(str(target)) or not isinstance(target, pathlib.Path):
        return pathlib.Path(tempfile.gettempdir()) / target.name
    return target


def stop_decoding(path: str) -> None:
    """Stop the child decoding ``path`` ahead, if there is one: this process reads the file now."""
    if not _running:
        return
    with _lock:
        ahead = _running.get(_key(path))
    if ahead is not None:
        ahead.stop()


def adopt(reader: Any, base: pathlib.Path) -> pathlib.Path | None:
    """The spool directory a child decoded ``reader``'s tiles into for the output ``base``, or None.

    ``reader`` is the :class:`~bigquant.io.tiff_read.TiffBlockReader` of the
    pass.  The child's reader must equal it (but for how the path is
    spelled) and the file must be the version the child read; then the
    directory is the caller's (it removes it) and holds the spool files of
    :mod:`bigquant.io.spool`, with the tiles decoded so far marked.  The
    child may still be running: the first read of the file stops it.
    """
    if not _running:
        return None
    with _lock:
        ahead = _running.get(_key(reader.path))
    if ahead is None or ahead.adopted or os.path.abspath(ahead.base) != os.path.abspath(base):
        return None
    try:
        layout = json.loads((ahead.directory / LAYOUT_FILE).read_text())
        theirs = _reader_from_json(layout["reader"], type(reader))
        from bigquant.io.files import file_stamp

        same = (dataclasses.replace(theirs, path=reader.path) == reader
                and os.path.samefile(theirs.path, reader.path)
                and tuple(layout["stamp"]) == tuple(file_stamp(reader.path)))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # not written yet (or not at all): not adopted
        logger.debug("decoding %s ahead: no spool to adopt (%s)", reader.path, exc)
        return None
    if not same:
        logger.debug("decoding %s ahead: the child read another level or version of it", reader.path)
        return None
    ahead.adopted = True
    return ahead.directory


def _reader_to_json(reader: Any) -> dict[str, Any]:
    import numpy as np

    return {f.name: (np.dtype(v).str if f.name in ("dtype", "file_dtype") and v is not None else v)
            for f in dataclasses.fields(reader) for v in (getattr(reader, f.name),)}


def _reader_from_json(fields: dict[str, Any], kind: type) -> Any:
    import numpy as np

    values = dict(fields)
    for name in ("dtype", "file_dtype"):
        if values.get(name) is not None:
            values[name] = np.dtype(values[name])
    for name in ("shape", "segment"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return kind(**values)
