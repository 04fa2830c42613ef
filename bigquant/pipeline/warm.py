"""Compile the numba kernels of the common paths once, into numba's on-disk cache.

Every kernel is ``cache=True`` (:mod:`bigquant.kernels`): the first process that
calls it for a signature compiles it (a second or more each) and writes it to
the cache beside the package (``__pycache__``, or ``NUMBA_CACHE_DIR``); every
later process -- the command line, Python, the workers of a local cluster --
loads it in milliseconds.  :func:`warm_kernels` runs the common paths on tiny
images, so that compiling happens once, here, and never on a worker:

- 8-bit RGB in memory (a PNG or JPEG: fitted and mapped as one array, many
  colours: the coarse search) and as a tiled TIFF (the dask path every large
  input takes, windows of a megapixel: the Morton-order counts, of one window
  alone and of several in lanes), each plain and
  with Floyd--Steinberg dithering, with the quality report (a sweep of k fits
  with the same kernels);
- 16-bit RGB as a tiled TIFF: the value grid's fit, its last pass alone and
  in the write (:func:`_warm_16_bit`).

When it is done it writes a stamp into numba's cache folder (numba's version,
this CPU, the kernels' source files' sizes and times: what numba's own index
checks), so :func:`kernels_warm` answers in a millisecond whether it must run
again.  ``make install`` (and so ``make demo``) runs it as ``python -m
bigquant.pipeline.warm``; :func:`bigquant.pipeline.runtime.connect` runs it
before it starts a local cluster's worker processes.  Other paths (other
depths, multi-band data, OKLab fits, masks, blue-noise dithering) compile on their first
use, in whichever process meets them first.
"""

from __future__ import annotations

import logging
import os
import pathlib
import tempfile
import time
import warnings
from typing import Any

__all__ = ["kernels_warm", "warm_kernels"]

logger = logging.getLogger(__name__)

#: side of the in-memory image (pixels: over 16384 colours and 2 x 65536 pixels, as
#: a 512 x 512 photo) and of the TIFF's windows (at least 2**20 pixels: counted as read);
#: the TIFF is two windows wide, read as one chunk (counted alone) and as two (in lanes)
_ARRAY_SIDE = 384
_TIFF_SIDE = 1024
_STAMP = "bigquant-warm.stamp"


def _cache_folder() -> pathlib.Path | None:
    """Where numba caches the kernels (its own locator's answer), or None if it will not say."""
    try:
        from bigquant.kernels import lloyd

        return pathlib.Path(lloyd.lloyd_dense._cache._cache_path)  # numba's FunctionCache
    except Exception:  # noqa: BLE001 - a numba without that attribute: always warm
        return None


def _stamp() -> str:
    """What the cached kernels depend on: numba, this CPU, the kernels' sources."""
    import llvmlite.binding as llvm
    import numba

    from bigquant import kernels

    sources = sorted(pathlib.Path(kernels.__file__).parent.glob("*.py"))
    parts = [numba.__version__, llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()]
    for path in sources:
        st = path.stat()
        parts.append(f"{path.name} {st.st_size} {st.st_mtime_ns}")
    return "\n".join(parts) + "\n"


def kernels_warm() -> bool:
    """Whether :func:`warm_kernels` ran with these kernels, this numba and this CPU."""
    folder = _cache_folder()
    if folder is None:
        return False
    try:
        return (folder / _STAMP).read_text() == _stamp()
    except OSError:
        return False


def warm_kernels(force: bool = False) -> float:
    """Run the common paths on small images so that their kernels are compiled and cached.

    Parameters
    ----------
    force : bool, default=False
        Run even when :func:`kernels_warm` says it ran already.

    Returns
    -------
    float
        Seconds it took: 0 when the kernels were warm, about 1--2 s to load
        them all from the cache, about 20 s of CPU to compile them.
    """
    if not force and kernels_warm():
        return 0.0
    import dask
    import numpy as np

    from bigquant.cluster.octree import ColourOctree
    from bigquant.io.sample import make_sample_image, make_sample_tiff
    from bigquant.pipeline.quantize import quantize

    start = time.perf_counter()
    image = np.ascontiguousarray(make_sample_image((_ARRAY_SIDE, _ARRAY_SIDE), seed=1))
    with tempfile.TemporaryDirectory(prefix="bigquant-warm-") as folder, \
            dask.config.set(scheduler="threads"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = pathlib.Path(folder)
        tiff = make_sample_tiff(root / "in.tif", size=(_TIFF_SIDE, 2 * _TIFF_SIDE), tile=512, seed=1,
                                compression="zlib")
        for source in (image, tiff):
            for dither in (None, "floyd-steinberg"):
                # the plain TIFF in two chunks: the colour count's lanes (one chunk: a count of its own)
                chunks = _TIFF_SIDE if source is tiff and dither is None else None
                quantize(source, root / "out.tif", 16, random_state=0, overwrite=True, dither=dither,
                         chunks=chunks)
        _warm_16_bit(root, quantize)
        # the octree of an in-memory image of over 2**18 colours sorts them itself (a TIFF's
        # colours come in Morton order from the count)
        ColourOctree(image.reshape(-1, 3)[:1], np.ones(1, np.int64))
    seconds = time.perf_counter() - start
    cache = _cache_folder()
    if cache is not None:
        try:
            (cache / _STAMP).write_text(_stamp())
        except OSError:  # a read-only install: the kernels still load from where numba put them
            logger.debug("could not write %s", cache / _STAMP, exc_info=True)
    logger.info("numba kernels compiled or loaded in %.1f s", seconds)
    return seconds


def _warm_16_bit(root: pathlib.Path, quantize: Any) -> None:
    """16-bit RGB as a tiled TIFF (a GIS analyst's GeoTIFF): the value grid's fit and its write.

    With :data:`bigquant.pipeline.quantize.PASS_WITH_WRITE_MIN_PIXELS`
    lowered for this small image, the fit's last exact pass runs in the
    write's read (:func:`bigquant.cluster.grid.deferring_last_pass`), as it does
    for images of 16 MP and more; once more without, as smaller ones run.
    """
    import numpy as np
    import tifffile

    from bigquant.io.sample import make_sample_image
    from bigquant.pipeline import quantize as quantize_module

    pixels = make_sample_image((_TIFF_SIDE // 2, _TIFF_SIDE), seed=2).astype(np.uint16) * 257
    tiff = root / "in16.tif"
    tifffile.imwrite(tiff, pixels, tile=(256, 256), photometric="rgb", compression="zlib")
    floor = quantize_module.PASS_WITH_WRITE_MIN_PIXELS
    for lowered in (True, False):
        quantize_module.PASS_WITH_WRITE_MIN_PIXELS = 0 if lowered else floor
        try:
            quantize(tiff, root / "out16.tif", 16, random_state=0, overwrite=True, chunks=_TIFF_SIDE // 2,
                     measure=True)  # the quality report, as the command line makes it
        finally:
            quantize_module.PASS_WITH_WRITE_MIN_PIXELS = floor


def main() -> None:
    """``python -m bigquant.pipeline.warm``: compile and cache the kernels, say where and how long."""
    seconds = warm_kernels(force=True)
    import numba

    where = os.environ.get("NUMBA_CACHE_DIR") or "beside the package (__pycache__)"
    print(f"bigquant: numba kernels compiled and cached in {seconds:.1f} s ({where}; numba {numba.__version__})")


if __name__ == "__main__":
    main()
