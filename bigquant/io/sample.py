"""Photo-like sample images of any size, generated in bounded memory.

The generator mirrors-and-repeats a real photograph shipped with matplotlib
(``grace_hopper.jpg``), enlarges it with bilinear interpolation, lets the colour
balance drift slowly across the canvas and adds light noise.  The result looks
like a photograph, has smooth gradients and millions of distinct colours at
gigapixel sizes -- not flat blocks that would flatter a quantizer.

Every tile is a pure function of ``(seed, tile position)``, so tiles are built
independently, in parallel threads, one tile row at a time: memory stays at a
few tile rows whatever the image size.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
from dask.system import CPU_COUNT

from bigquant.errors import ImageWriteError, InvalidParameterError
from bigquant.kernels.render import render_window

__all__ = ["make_sample_image", "make_sample_tiff"]

logger = logging.getLogger(__name__)

_NOISE = 3  # noise amplitude in 8-bit levels: uniform integers in [-3, 3]


@lru_cache(maxsize=1)
def _photo() -> np.ndarray:
    """Return matplotlib's Grace Hopper sample photo as float32 (600, 512, 3)."""
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        img = Image.open(fh).convert("RGB")
        photo = np.asarray(img, dtype=np.float32)
    photo.setflags(write=False)
    return photo


def _mirror(coord: np.ndarray, n: int) -> np.ndarray:
    """Fold coordinates into ``[0, n - 1]`` by mirror repetition."""
    period = 2 * (n - 1)
    t = np.mod(coord, period)
    return np.where(t > n - 1, period - t, t)


def _axis(start: int, stop: int, size: int, n: int, scale: float, phase: float):
    """Interpolation indices, weights and colour drift along one axis."""
    pos = np.arange(start, stop, dtype=np.float64)
    u = _mirror(pos / scale, n)
    i0 = np.minimum(np.floor(u).astype(np.intp), n - 2)
    w = (u - i0).astype(np.float32)
    # slow colour drift: one period spans the whole canvas, phase per channel
    angle = 2.0 * np.pi * pos / max(size, 1)
    drift = np.stack(
        [np.sin(angle + phase + c * 2.1) for c in range(3)], axis=-1
    ).astype(np.float32)
    return i0, w, drift


def _scale_for(shape: tuple[int, int]) -> float:
    """Enlargement factor of the photo: about four repeats across the short side."""
    return max(1.0, min(shape) / 2400.0)


def _render(
    y0: int, y1: int, x0: int, x1: int, shape: tuple[int, int], seed: int
) -> np.ndarray:
    """Render the window ``[y0:y1, x0:x1]`` of the sample image as uint8 RGB."""
    photo = _photo()
    ph, pw = photo.shape[:2]
    height, width = shape
    scale = _scale_for(shape)
    phase = float(np.random.default_rng(seed).uniform(0.0, 2.0 * np.pi))
    rows = _axis(y0, y1, height, ph, scale, phase)
    cols = _axis(x0, x1, width, pw, scale, phase * 0.7 + 1.0)
    # light noise, seeded by the window position so tiles are reproducible
    rng = np.random.default_rng([seed, y0, x0])
    noise = rng.integers(-_NOISE, _NOISE + 1, size=(y1 - y0, x1 - x0, 3), dtype=np.int8)
    # bilinear samples, gain and offset drift, noise, clip and rounding: one float32 pass (kernels.render)
    return render_window(photo, rows, cols, noise)


def make_sample_image(size: tuple[int, int] = (512, 512), *, seed: int = 0) -> np.ndarray:
    """Return a photo-like RGB image in memory.

    Parameters
    ----------
    size : tuple of int (H, W), default=(512, 512)
        Height and width of the image in pixels.
    seed : int, default=0
        Seed of the colour drift and the noise.

    Returns
    -------
    image : ndarray of shape (H, W, 3), dtype uint8

    Examples
    --------
    >>> from bigquant.io.sample import make_sample_image
    >>> make_sample_image((64, 80)).shape
    (64, 80, 3)
    """
    height, width = _check_size(size)
    return _render(0, height, 0, width, (height, width), int(seed))


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"size={size!r} must be a pair (H, W) of integers") from None
    if height < 2 or width < 2:
        raise InvalidParameterError(f"size={size!r} must be at least (2, 2)")
    return height, width


def _tiles(
    shape: tuple[int, int], tile: int, seed: int, pool: ThreadPoolExecutor
) -> Iterator[np.ndarray]:
    """Yield the tiles of the sample image in row-major order, a tile row at a time."""
    height, width = shape
    for y0 in range(0, height, tile):
        y1 = min(y0 + tile, height)
        windows = [(y0, y1, x0, min(x0 + tile, width)) for x0 in range(0, width, tile)]
        yield from pool.map(lambda w: _render(*w, shape, seed), windows)


def make_sample_tiff(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (4096, 4096),
    *,
    tile: int = 512,
    seed: int = 0,
    compression: str | None = None,
    overwrite: bool = True,
    threads: int | None = None,
) -> pathlib.Path:
    """Write a photo-like RGB tiled BigTIFF of any size in bounded memory.

    Parameters
    ----------
    path : str or os.PathLike
        Output file name.
    size : tuple of int (H, W), default=(4096, 4096)
        Height and width of the image in pixels; (32768, 32768) is 1 gigapixel.
    tile : int, default=512
        Tile edge in pixels, a multiple of 16.
    seed : int, default=0
        Seed of the colour drift and the noise.
    compression : str or None, default=None
        TIFF compression of the tiles (None: uncompressed, "zlib", ...).
    overwrite : bool, default=True
        Replace an existing file.
    threads : int or None, default=None
        Threads rendering tiles (default: the number of CPUs).

    Returns
    -------
    path : pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile, pathlib, tifffile
    >>> from bigquant.io.sample import make_sample_tiff
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = make_sample_tiff(pathlib.Path(d) / "s.tif", (300, 200), tile=128)
    ...     tifffile.imread(p).shape
    (300, 200, 3)
    """
    import tifffile

    height, width = _check_size(size)
    if tile < 16 or tile % 16:
        raise InvalidParameterError(f"tile={tile} must be a positive multiple of 16")
    out = pathlib.Path(path)
    if out.exists() and not overwrite:
        raise ImageWriteError(f"{out}: output exists (pass overwrite=True)")
    if not out.parent.is_dir():
        raise ImageWriteError(f"{out}: directory {out.parent} does not exist")
    logger.info("writing sample image %s of %d x %d px", out, height, width)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with ThreadPoolExecutor(threads or CPU_COUNT) as pool:  # usable cores (cgroup quota, affinity)
            tifffile.imwrite(
                tmp,
                _tiles((height, width), tile, int(seed), pool),
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                bigtiff=True,
                metadata=None,
                buffersize=64 * 2**20,
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
