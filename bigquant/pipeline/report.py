"""How good the quantized image is: PSNR and mean Delta E (OKLab), and a side-by-side crop.

The figures compare the source pixels with the palette colours *as written*
(rounded), over the pixels that are image (the mask's).  They come from the
cheapest place that has them:

- a histogram fit without dithering: exactly, from the distinct colours and
  their counts (no pass over the pixels);
- Floyd--Steinberg: from its first pass, which labels every pixel anyway;
- otherwise (pixel strategies, blue noise): one more blockwise pass over the
  pixels and their labels.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib

import dask.array as da
import numpy as np
from dask.base import tokenize

from bigquant import tasks
from bigquant.io.atomic import atomic_output
from bigquant.kernels.spaces import error_sums, to_space

__all__ = ["quality_from_histogram", "quality_from_sums", "quality_pass", "write_compare"]

logger = logging.getLogger(__name__)


def quality_from_sums(sums: np.ndarray, n_channels: int, peak: float) -> dict[str, float | None]:
    """``{"psnr": dB, "delta_e_ok": mean OKLab distance or None, "pixels": n}`` from :func:`error_sums`.

    PSNR is ``10 log10(peak**2 / MSE)`` with the MSE over every channel of
    every counted pixel (infinite when the image is reproduced exactly); Delta
    E is in natural OKLab units (L from 0 to 1), only for 3-band images.
    """
    sse, de, n = (float(v) for v in sums)
    if n == 0:
        return {"psnr": None, "delta_e_ok": None, "pixels": 0}
    mse = sse / (n * n_channels)
    psnr = math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)
    return {"psnr": psnr, "delta_e_ok": de / n if n_channels == 3 else None, "pixels": int(n)}


def quality_from_histogram(colours: np.ndarray, counts: np.ndarray, labels: np.ndarray,
                           palette: np.ndarray) -> np.ndarray:
    """:func:`error_sums` of an image from its distinct ``colours`` (n, C), ``counts`` and their ``labels``."""
    palette = np.asarray(palette, dtype=np.float64)
    n_ch = palette.shape[1]
    scale = float(np.iinfo(colours.dtype).max) if colours.dtype.kind == "u" else 1.0
    ok_palette = to_space(palette, "oklab", scale) / 100.0 if n_ch == 3 else None
    sums = np.zeros(3)
    step = 1 << 20
    for i in range(0, len(colours), step):
        part = colours[i:i + step]
        lab = np.asarray(labels[i:i + step]).reshape(-1).astype(np.int64)
        w = np.asarray(counts[i:i + step], dtype=np.float64)
        diff = part.astype(np.float64) - palette[lab]
        sums[0] += float(np.einsum("i,ij,ij->", w, diff, diff))
        if ok_palette is not None:
            d = to_space(part, "oklab", scale) / 100.0 - ok_palette[lab]
            sums[1] += float(w @ np.sqrt((d * d).sum(axis=1)))
        sums[2] += float(w.sum())
    return sums


def _block_sums(block: np.ndarray, labels: np.ndarray, palette: np.ndarray, *valid: np.ndarray) -> np.ndarray:
    out = error_sums(block, (0, 0), valid[0] if valid else None, labels, (0, 0), palette)
    return out.reshape(1, 1, 3)


def _block_sums3(block: np.ndarray, labels: np.ndarray, palette: np.ndarray, *valid: np.ndarray) -> np.ndarray:
    return _block_sums(block, labels[:, :, 0], palette, *(v[:, :, 0] for v in valid))


def quality_pass(data: da.Array, labels: da.Array, palette: np.ndarray, valid: da.Array | None = None) -> np.ndarray:
    """:func:`error_sums` of the whole image in one blockwise pass (pixels and labels computed again)."""
    if data.numblocks[2] != 1:
        data = data.rechunk({2: -1})
    labels = labels.rechunk(data.chunks[:2])
    args = [data, labels[:, :, None], np.asarray(palette)]
    if valid is not None:
        args.append(valid.rechunk(data.chunks[:2])[:, :, None])
    per_block = da.map_blocks(
        _block_sums3, *args, dtype=np.float64,
        chunks=(tuple(1 for _ in data.chunks[0]), tuple(1 for _ in data.chunks[1]), (3,)),
        name=f"{tasks.QUALITY}-{tokenize(data, labels, palette, valid)}",
    )
    return np.asarray(per_block.sum(axis=(0, 1)).compute())


def _as_rgb8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = (np.clip(pixels.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def write_compare(
    path: str | os.PathLike[str],
    data: da.Array,
    labels: da.Array,
    palette: np.ndarray,
    *,
    size: int = 512,
    nodata: int | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write a PNG of the centre ``size`` x ``size`` crop: source on the left, quantized on the right.

    Full resolution (no resampling), so dithering patterns and banding show
    as they are; no-data pixels of the result are black.
    """
    from PIL import Image

    path = pathlib.Path(path).expanduser()
    height, width = data.shape[:2]
    h, w = min(size, height), min(size, width)
    y0, x0 = (height - h) // 2, (width - w) // 2
    source = _as_rgb8(np.asarray(data[y0:y0 + h, x0:x0 + w].compute()))
    lab = np.asarray(labels[y0:y0 + h, x0:x0 + w].compute()).astype(np.int64)
    shown = np.zeros((len(palette) if nodata is None else max(len(palette), nodata + 1),) + palette.shape[1:],
                     dtype=palette.dtype)
    shown[: len(palette)] = palette
    result = _as_rgb8(shown[lab].reshape(h, w, -1))
    gap = np.full((h, 8, 3), 255, dtype=np.uint8)
    with atomic_output(path, overwrite=overwrite) as tmp:
        Image.fromarray(np.concatenate([source, gap, result], axis=1)).save(tmp, format="PNG")
    logger.info("wrote %s: %dx%d crop at (%d, %d), source | result", path, w, h, x0, y0)
    return path
