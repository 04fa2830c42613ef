"""Chunk shapes aligned to a file's tile (or strip) grid, and the bound on what one task decodes.

The default chunk is about 4096 x 4096 pixels up to :data:`ADAPT_ABOVE_PIXELS`
(2**30, 1.07 GP).  Above it the chunks grow taller with the image (still whole
tiles) so that a pass has at most :data:`MAX_CHUNKS_PER_PASS` chunks: one
scheduler hands out every task, at a millisecond or more each.  They keep their
width, so a band of chunks -- what the TIFF writer computes at once -- keeps as
many chunks for the workers to share (docs/scale.md has the model and numbers).

A task decodes at least one whole tile (or strip) of a file, and a PNG or JPEG
is decoded whole.  A file declares its sizes: a legal 1.2 KB TIFF can declare
one strip of 2^20 x 2^20 pixels.  :func:`check_task_bytes` refuses such a unit
before any graph is built when it would decode to more than
:func:`max_task_bytes` bytes -- :data:`MAX_TASK_BYTES` (1 GiB) unless the
``max_task_bytes`` parameter of :func:`bigquant.read_image` or the environment
variable ``BIGQUANT_MAX_TASK_BYTES`` (bytes, or a number with a K, M, G or T
suffix: powers of 1024) says otherwise.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence

from bigquant.errors import ImageReadError, InvalidParameterError

__all__ = [
    "ChunksLike",
    "DEFAULT_CHUNK_EDGE",
    "ADAPT_ABOVE_PIXELS",
    "MAX_CHUNKS_PER_PASS",
    "MAX_CHUNK_PIXELS",
    "MAX_TASK_BYTES",
    "MAX_TASK_BYTES_ENV",
    "aligned_chunks",
    "max_task_bytes",
    "check_task_bytes",
    "format_bytes",
]

logger = logging.getLogger(__name__)

ChunksLike = int | Sequence[int] | None

#: Default chunk edge in pixels: 4096 x 4096 RGB uint8 is 48 MiB per task.
DEFAULT_CHUNK_EDGE = 4096
_ALIGN = 1024  # also align to this when cheap, so write tiles up to 1024 line up
#: Images of more pixels than this (2**30) get a default chunk edge that grows with them.
ADAPT_ABOVE_PIXELS = 1 << 30
#: Most chunks a pass over a larger image has by default (see docs/scale.md).
MAX_CHUNKS_PER_PASS = 4096
#: Most pixels a default chunk grows to (64 MP: 192 MiB of RGB uint8); past about
#: 275 GP this, not :data:`MAX_CHUNKS_PER_PASS`, sets the chunks.
MAX_CHUNK_PIXELS = 1 << 26

#: Default bound on the bytes one task decodes (one tile or strip, or a whole PNG/JPEG): 1 GiB.
MAX_TASK_BYTES = 1 << 30
#: Environment variable overriding :data:`MAX_TASK_BYTES` (``"4G"``, ``"512M"``, ``"1073741824"``).
MAX_TASK_BYTES_ENV = "BIGQUANT_MAX_TASK_BYTES"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def format_bytes(nbytes: float) -> str:
    """``nbytes`` for people: ``"1.0 GiB"``, ``"4.0 TiB"``, ``"512 bytes"``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} bytes"


def max_task_bytes(value: int | None = None) -> int:
    """The most bytes one task may decode.

    Parameters
    ----------
    value : int or None, default=None
        The bound asked for; None reads ``BIGQUANT_MAX_TASK_BYTES`` and falls
        back to :data:`MAX_TASK_BYTES` (1 GiB).

    Returns
    -------
    int

    Raises
    ------
    InvalidParameterError
        ``value`` or the environment variable is not a positive size.
    """
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameterError(f"max_task_bytes={value!r} must be a positive number of bytes")
        return int(value)
    raw = os.environ.get(MAX_TASK_BYTES_ENV)
    if raw is None or not raw.strip():
        return MAX_TASK_BYTES
    match = _SIZE.match(raw)
    number = float(match[1]) * 1024 ** " kmgt".index((match[2] or " ").lower()) if match else 0
    if number < 1:
        raise InvalidParameterError(
            f"{MAX_TASK_BYTES_ENV}={raw!r} must be a positive number of bytes (suffixes K, M, G, T: powers of 1024)"
        )
    return int(number)


def check_task_bytes(
    name: str,
    unit: str,
    shape: tuple[int, ...],
    itemsize: int,
    limit: int,
    *,
    advice: str,
) -> None:
    """Raise ImageReadError when one ``unit`` of ``shape`` decodes to more than ``limit`` bytes.

    Parameters
    ----------
    name : str
        The file (for the message).
    unit : str
        What one task decodes: ``"strip"``, ``"tile"``, ``"image"``.
    shape : tuple of int (rows, cols[, samples])
        Its shape once decoded.
    itemsize : int
        Bytes per sample.
    limit : int
        The bound, from :func:`max_task_bytes`.
    advice : str
        The way out that fits this file besides raising the bound.

    Raises
    ------
    ImageReadError
        The unit decodes to more than ``limit`` bytes.
    """
    nbytes = math.prod(int(s) for s in shape) * int(itemsize)
    if nbytes <= limit:
        return
    samples = f" x {shape[2]} samples" if len(shape) > 2 else ""
    raise ImageReadError(
        f"{name}: one {unit} of {shape[1]} x {shape[0]} px{samples} decodes to {format_bytes(nbytes)} "
        f"in one task, above the limit of {format_bytes(limit)} per task; {advice}, or raise the "
        f"limit (read_image(..., max_task_bytes=N) or {MAX_TASK_BYTES_ENV}={nbytes}) if every worker "
        "has that much memory"
    )


def _round_to(value: float, step: int, limit: int) -> int:
    """``value`` rounded to a positive multiple of ``step``, capped at ``limit``."""
    return min(limit, max(step, int(round(value / step)) * step))


def _step(grid: int, limit: int) -> int:
    lcm = math.lcm(grid, _ALIGN)
    return lcm if lcm <= 8 * _ALIGN and lcm <= limit else grid


def _n_chunks(shape: tuple[int, int], chunks: tuple[int, int]) -> int:
    return math.ceil(shape[0] / chunks[0]) * math.ceil(shape[1] / chunks[1])


def aligned_chunks(
    shape: tuple[int, int],
    grid: tuple[int, int],
    chunks: ChunksLike = None,
    *,
    name: str = "image",
) -> tuple[int, int]:
    """Return a spatial chunk shape (cy, cx) that is a multiple of ``grid``.

    Parameters
    ----------
    shape : tuple of int (H, W)
        Image height and width.
    grid : tuple of int (gy, gx)
        Tile height and width of the file (``(rows_per_strip, W)`` for strips,
        ``(1, 1)`` when any chunking is free).
    chunks : int, tuple of int (cy, cx) or None, default=None
        Requested chunk shape; None picks about 4096 x 4096 pixels (full-width
        bands of the same area for strips), taller above 1.07 GP so that a pass
        has at most :data:`MAX_CHUNKS_PER_PASS` chunks.  Requests are rounded
        to the grid.
    name : str
        Name of the image for log messages.

    Returns
    -------
    chunks : tuple of int (cy, cx)
    """
    height, width = shape
    gy, gx = max(1, min(grid[0], height)), max(1, min(grid[1], width))
    if chunks is None:
        target = DEFAULT_CHUNK_EDGE
        cx = width if gx >= width else _round_to(target, _step(gx, width), width)
        cy_target = target * target / cx if cx >= width and width > target else target
        sy = _step(gy, height)
        cy = _round_to(cy_target, sy, height)
        if height * width > ADAPT_ABOVE_PIXELS and _n_chunks(shape, (cy, cx)) > MAX_CHUNKS_PER_PASS:
            # taller chunks, as many to a band: the rows of chunks a pass may have
            rows = max(1, MAX_CHUNKS_PER_PASS // math.ceil(width / cx))
            tallest = max(cy, sy * (MAX_CHUNK_PIXELS // cx // sy))
            cy = min(height, tallest, sy * math.ceil(math.ceil(height / rows) / sy))
            if cy >= height and _n_chunks(shape, (cy, cx)) > MAX_CHUNKS_PER_PASS:  # a very wide strip
                sx = _step(gx, width)
                widest = max(cx, sx * (MAX_CHUNK_PIXELS // cy // sx))
                cx = min(width, widest, sx * math.ceil(math.ceil(width / MAX_CHUNKS_PER_PASS) / sx))
            logger.debug("%s: %d x %d px, default chunks grown to %s (%d chunks a pass)",
                         name, height, width, (cy, cx), _n_chunks(shape, (cy, cx)))
        return cy, cx
    if isinstance(chunks, int):
        req = (chunks, chunks)
    else:
        try:
            req = tuple(int(c) for c in chunks)[:2]
        except (TypeError, ValueError):
            raise InvalidParameterError(
                f"chunks={chunks!r} must be an int, a pair (cy, cx) or None"
            ) from None
        if len(req) != 2:
            raise InvalidParameterError(f"chunks={chunks!r} must be an int, a pair (cy, cx) or None")
    if min(req) < 1:
        raise InvalidParameterError(f"chunks={chunks!r} must be positive")
    cy = min(height, gy * math.ceil(req[0] / gy))
    cx = min(width, gx * math.ceil(req[1] / gx))
    if (cy, cx) != (min(req[0], height), min(req[1], width)):
        logger.info(
            "%s: chunks %s rounded to %s, a multiple of the file's tiles %s",
            name, req, (cy, cx), (gy, gx),
        )
    return cy, cx
