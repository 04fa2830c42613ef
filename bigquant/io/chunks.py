"""Chunk shapes aligned to a file's tile (or strip) grid."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from bigquant.errors import InvalidParameterError

__all__ = ["ChunksLike", "DEFAULT_CHUNK_EDGE", "aligned_chunks"]

logger = logging.getLogger(__name__)

ChunksLike = int | Sequence[int] | None

#: Default chunk edge in pixels: 4096 x 4096 RGB uint8 is 48 MiB per task.
DEFAULT_CHUNK_EDGE = 4096
_ALIGN = 1024  # also align to this when cheap, so write tiles up to 1024 line up


def _round_to(value: float, step: int, limit: int) -> int:
    """``value`` rounded to a positive multiple of ``step``, capped at ``limit``."""
    return min(limit, max(step, int(round(value / step)) * step))


def _step(grid: int, limit: int) -> int:
    lcm = math.lcm(grid, _ALIGN)
    return lcm if lcm <= 8 * _ALIGN and lcm <= limit else grid


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
        bands of the same area for strips).  Requests are rounded to the grid.
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
        cy = _round_to(cy_target, _step(gy, height), height)
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
