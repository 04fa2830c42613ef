"""A static-file HTTP server that honours single byte ranges, for tests of remote reads.

``python -m http.server`` ignores ``Range`` (it answers ``bytes=0-99`` with 200
and the whole file), and fsspec's HTTP filesystem then refuses the file.  This
handler answers one range ``a-b``, ``a-`` or ``-n`` with 206, Content-Range and
Content-Length, and 416 when the range starts past the end; it advertises
``Accept-Ranges: bytes`` on every answer.  Each request is appended to a log
file (``GET /file.tif Range=bytes=0-65535``) so tests can count what a reader
fetched.

Run as a script, it binds 127.0.0.1 and prints its base URL on the first line
of stdout, then serves until terminated::

    python range_server.py DIRECTORY [PORT] [LOGFILE]      # PORT 0 (default): any free port
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import sys
import threading
from typing import Any, BinaryIO

__all__ = ["RangeRequestHandler", "make_server", "main"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus single-range requests (206 Partial Content)."""

    #: file every request is logged to (None: no log)
    log_path: str | None = None
    _log_lock = threading.Lock()

    def send_head(self) -> Any:
        self._remaining: int | None = None
        rng = self.headers.get("Range")
        if self.log_path:
            with self._log_lock, open(self.log_path, "a") as log:
                log.write(f"{self.command} {self.path} Range={rng}\n")
        path = self.translate_path(self.path)
        if not rng or os.path.isdir(path):
            return super().send_head()
        match = _RANGE.fullmatch(rng.strip())
        if not match or (match[1] == "" and match[2] == ""):
            self.send_error(400, "only one byte range per request is supported")
            return None
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the base class after copyfile
        except OSError:
            self.send_error(404, "File not found")
            return None
        size = os.fstat(f.fileno()).st_size
        if match[1] == "":  # suffix range: the last n bytes
            start, end = max(0, size - int(match[2])), size - 1
        else:
            start = int(match[1])
            end = min(int(match[2]), size - 1) if match[2] else size - 1
        if start >= size or start > end:
            f.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        f.seek(start)
        self._remaining = end - start + 1
        return f

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:  # type: ignore[override]
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            super().copyfile(source, outputfile)
            return
        while remaining > 0:
            chunk = source.read(min(remaining, 1 << 16))
            if not chunk:
                break
            outputfile.write(chunk)
            remaining -= len(chunk)
        self._remaining = None

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class signature
        pass


def make_server(directory: str, port: int = 0, log_path: str | None = None) -> http.server.ThreadingHTTPServer:
    """A threading server of ``directory`` on 127.0.0.1 (port 0: any free port)."""
    handler = type("Handler", (RangeRequestHandler,), {"log_path": log_path})
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(handler, directory=directory))


def main(argv: list[str] | None = None) -> int:
    """Serve ``DIRECTORY`` until terminated; print the base URL first."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 3:
        print(__doc__, file=sys.stderr)
        return 2
    directory = args[0]
    port = int(args[1]) if len(args) > 1 else 0
    log_path = args[2] if len(args) > 2 else None
    with make_server(directory, port, log_path) as server:
        print(f"http://127.0.0.1:{server.server_address[1]}/", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
