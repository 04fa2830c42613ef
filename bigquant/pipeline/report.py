"""How good the quantized image is: PSNR and mean Delta E (OKLab), and a side-by-side crop.

The figures compare the source pixels, in every band, with the palette they
are written with (its every band, rounded as written: the palette JSON's
``palette`` entry), over the pixels that are image (the mask's).  They come
from the cheapest place that has them:

- a histogram fit without dithering: exactly, from the distinct colours and
  their counts (no pass over the pixels);
- Floyd--Steinberg: from its first pass, which labels every pixel anyway;
- a palette TIFF labelled without a lookup table (16-bit data): in the write
  pass itself, each chunk labelled and measured in the read that writes it
  (:class:`MeasuredLabels`, :func:`measured_sums`);
- otherwise (pixel strategies, blue noise): one more blockwise pass over the
  pixels and their labels (:func:`quality_pass`).

Delta E needs each source pixel's OKLab, three cube roots a pixel, computed a
block of a row at a time in vectorised loops
(:func:`bigquant.kernels.spaces.error_sums`, the one definition of the sums).

PSNR is ``10 log10(peak**2 / MSE)``, the MSE over every band of every counted
pixel.  The peak (:func:`psnr_peak`) is the largest value of an integer type
(255 for uint8, 65535 for uint16); float data have one only when every counted
value lies in [0, 1] (the peak is then 1.0); otherwise there is no PSNR
(None), rather than one of an arbitrary scale.  Mean Delta E in OKLab needs
three bands read as sRGB, in the order shown (``rgb_bands``): uint8 and
uint16 on their full scale, float data in [0, 1]; otherwise it is None.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
from collections.abc import Callable, Sequence

import dask.array as da
import numpy as np
from dask.base import tokenize

from bigquant import tasks
from bigquant.io.atomic import atomic_output
from bigquant.io.objects import output_location
from bigquant.kernels.spaces import error_sums, to_space

__all__ = ["MeasuredLabels", "measured_sums", "step_parts", "quality_from_histogram", "quality_from_sums",
           "quality_pass", "psnr_peak", "write_compare"]

logger = logging.getLogger(__name__)

#: data types :func:`bigquant.kernels.spaces.error_sums` measures (its sRGB table spans the type)
_KERNEL_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def psnr_peak(dtype: np.dtype, value_range: tuple[float, float] | np.ndarray | None = None) -> float | None:
    """The peak value of a PSNR of data of ``dtype``, or None when it has none.

    Parameters
    ----------
    dtype : numpy dtype
        Type of the source pixels.
    value_range : (low, high) or None, default=None
        Smallest and largest value counted (every band), for float data.

    Returns
    -------
    float or None
        The largest value of an integer type; 1.0 for float data whose
        values all lie in [0, 1]; None for float data outside that range or
        of unknown range.

    Examples
    --------
    >>> psnr_peak(np.uint8), psnr_peak(np.float32, (0.0, 0.5)), psnr_peak(np.float32, (0.0, 7.0))
    (255.0, 1.0, None)
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        return float(np.iinfo(dtype).max)
    if dtype.kind == "f" and value_range is not None:
        low, high = (float(v) for v in value_range)
        if 0.0 <= low and high <= 1.0:
            return 1.0
    return None


def quality_from_sums(sums: np.ndarray, n_channels: int, peak: float | None) -> dict[str, float | None]:
    """``{"psnr": dB, "delta_e_ok": mean OKLab distance or None, "pixels": n}`` from quality sums.

    Parameters
    ----------
    sums : ndarray of shape (3,) or (5,)
        Squared error, summed OKLab distance (NaN: not measured) and pixels
        counted (:func:`bigquant.kernels.spaces.error_sums`,
        :func:`quality_from_histogram`, :func:`quality_pass`); the value range
        :func:`quality_pass` adds is not used here (see :func:`psnr_peak`).
    n_channels : int
        Bands compared per pixel.
    peak : float or None
        The PSNR's peak (:func:`psnr_peak`); None: no PSNR and no Delta E
        (the data are not on a known scale).

    Returns
    -------
    dict
        PSNR over every channel of every counted pixel (infinite when the
        image is reproduced exactly); Delta E in natural OKLab units (L from 0
        to 1), only for 3-band images on a known scale.
    """
    sse, de, n = (float(v) for v in np.asarray(sums)[:3])
    if n == 0:
        return {"psnr": None, "delta_e_ok": None, "pixels": 0}
    if peak is None:
        return {"psnr": None, "delta_e_ok": None, "pixels": int(n)}
    mse = sse / (n * n_channels)
    psnr = math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)
    delta_e = de / n if n_channels == 3 and not math.isnan(de) else None
    return {"psnr": psnr, "delta_e_ok": delta_e, "pixels": int(n)}


def _shown_order(values: np.ndarray, rgb_bands: Sequence[int] | None) -> np.ndarray:
    """The bands of ``values`` (last axis) in the order shown as R, G, B, when three are reordered.

    The squared error over every band is the same in any order; Delta E reads
    the three bands as sRGB, in the order they are shown.
    """
    if rgb_bands is None or values.shape[-1] != 3 or list(rgb_bands) == [0, 1, 2]:
        return values
    return values[..., [int(b) for b in rgb_bands]]


def quality_from_histogram(colours: np.ndarray, counts: np.ndarray, labels: np.ndarray,
                           palette: np.ndarray, rgb_bands: Sequence[int] | None = None) -> np.ndarray:
    """:func:`error_sums` of an image from its distinct ``colours`` (n, C), ``counts`` and their ``labels``.

    ``palette`` is every band of the colours written, of shape (k, C);
    ``rgb_bands`` the bands shown as R, G, B (Delta E reads them in that order).
    """
    palette = np.asarray(palette, dtype=np.float64)
    n_ch = palette.shape[1]
    if n_ch != colours.shape[1]:
        raise ValueError(f"a palette of {n_ch} band(s) does not measure colours of {colours.shape[1]}")
    colours, palette = _shown_order(colours, rgb_bands), _shown_order(palette, rgb_bands)
    if colours.dtype in _KERNEL_TYPES:
        return _colour_sums(colours, counts, labels, palette)
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


def _colour_sums(colours: np.ndarray, counts: np.ndarray, labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """:func:`bigquant.kernels.colour_error_sums` over parts of the colours, on a thread each."""
    from concurrent.futures import ThreadPoolExecutor

    from bigquant.cluster.points import n_threads
    from bigquant.kernels import colour_error_sums

    labels = np.asarray(labels).reshape(-1).astype(np.int64, copy=False)
    counts = np.asarray(counts).reshape(-1)
    n = len(colours)
    parts = max(1, min(n_threads(), n // (1 << 18)))
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    spans = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def part(s: slice) -> np.ndarray:
        return colour_error_sums(colours[s], counts[s], labels[s], palette)

    if parts == 1:
        return part(spans[0])
    with ThreadPoolExecutor(parts, thread_name_prefix="bigquant-quality") as pool:
        return np.sum(list(pool.map(part, spans)), axis=0)


def _block_sums(block: np.ndarray, labels: np.ndarray, palette: np.ndarray, delta_e: bool,
                valid: np.ndarray | None) -> np.ndarray:
    """Squared error, OKLab distance sum (NaN: none), pixels, lowest and highest value of one block."""
    n_ch = block.shape[2]
    out = np.array([0.0, 0.0, 0.0, math.inf, -math.inf])
    if block.dtype in _KERNEL_TYPES and (n_ch != 3 or delta_e):
        out[:3] = error_sums(block, (0, 0), valid, labels, (0, 0), palette)
        if n_ch != 3:
            out[1] = math.nan
        return out
    keep = np.ones(block.shape[:2], dtype=bool) if valid is None else valid
    x = block[keep].astype(np.float64)
    colour = palette[labels[keep].astype(np.int64)]
    diff = x - colour
    out[0] = float(np.sum(diff * diff))
    out[2] = float(x.shape[0])
    floats = block.dtype.kind == "f"
    if floats and x.shape[0]:
        out[3], out[4] = x.min(), x.max()
    if delta_e and n_ch == 3 and floats:
        # sRGB on the scale 1: meaningful for values in [0, 1] only (see psnr_peak)
        d = to_space(x, "oklab", 1.0) / 100.0 - to_space(colour, "oklab", 1.0) / 100.0
        out[1] = float(np.sum(np.sqrt((d * d).sum(axis=1))))
    else:
        out[1] = math.nan
    return out


class MeasuredLabels:
    """Label a chunk of pixels and measure it in the same read: a writer's labeller.

    ``MeasuredLabels(label_block, palette)(chunk)`` gives the chunk's labels
    (``label_block(chunk)``, e.g. :meth:`bigquant.KMeans.block_labels`) and its
    quality sums against ``palette`` as :func:`quality_pass` gives them for
    that block (see :func:`measured_sums` for the whole image).  Given to
    :func:`bigquant.write_image` as its internal ``_labeller``.

    Parameters
    ----------
    label_block : callable
        Chunk (h, w, C) -> labels (h, w).
    palette : ndarray of shape (k, C)
        Every band of the colours written.
    delta_e : bool, default=True
    rgb_bands : sequence of 3 int or None, default=None
        As :func:`quality_pass`.
    quality : bool, default=True
        Measure the chunk (else its five quality sums are NaN).
    step : callable or None, default=None
        Chunk -> (labels, sums), the labels ``label_block`` gives and more
        sums made in the same look at each pixel (a fit's last pass:
        :meth:`bigquant.cluster.grid.LastPass.block_step`); used instead of
        ``label_block``, its sums follow the quality sums (:func:`step_parts`).
    """

    def __init__(self, label_block: Callable[[np.ndarray], np.ndarray], palette: np.ndarray, *,
                 delta_e: bool = True, rgb_bands: Sequence[int] | None = None, quality: bool = True,
                 step: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None):
        self.label_block = label_block
        self.palette = np.ascontiguousarray(palette, dtype=np.float64)
        self.delta_e = bool(delta_e)
        self.rgb_bands = None if rgb_bands is None else [int(b) for b in rgb_bands]
        self.quality = bool(quality)
        self.step = step

    def __dask_tokenize__(self) -> str:
        return tokenize("measured-labels", self.label_block, self.palette, self.delta_e, self.rgb_bands,
                        self.quality, self.step)

    def __call__(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.step is not None:
            labels, more = self.step(block)
        else:
            labels, more = self.label_block(block), None
        if self.quality:
            shown = np.ascontiguousarray(_shown_order(block, self.rgb_bands))
            sums = _block_sums(shown, labels, _shown_order(self.palette, self.rgb_bands), self.delta_e, None)
        else:
            sums = np.full(_QUALITY_SUMS, math.nan)
        return labels, sums if more is None else np.concatenate([sums, np.asarray(more, dtype=np.float64)])


#: quality sums of a chunk :class:`MeasuredLabels` gives first (squared error, Delta E, pixels, min, max)
_QUALITY_SUMS = 5


def measured_sums(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The image's quality sums from the sums :class:`MeasuredLabels` gave its chunks (row-major order).

    Added as :func:`quality_pass` adds its blocks' sums: the same figures.
    """
    blocks = np.asarray([np.asarray(p, dtype=np.float64)[:_QUALITY_SUMS] for p in parts]).reshape(-1, _QUALITY_SUMS)
    sums = blocks[:, :3].sum(axis=0)
    return np.concatenate([sums, [blocks[:, 3].min(), blocks[:, 4].max()]])


def step_parts(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The sums a :class:`MeasuredLabels` ``step`` gave each chunk, after its quality sums (row-major order)."""
    return [np.asarray(p, dtype=np.float64)[_QUALITY_SUMS:] for p in parts]


def _block_sums3(block: np.ndarray, labels: np.ndarray, palette: np.ndarray, delta_e: bool,
                 *valid: np.ndarray) -> np.ndarray:
    sums = _block_sums(block, labels[:, :, 0], palette, delta_e, valid[0][:, :, 0] if valid else None)
    return sums.reshape(1, 1, 5)


def quality_pass(data: da.Array, labels: da.Array, palette: np.ndarray, valid: da.Array | None = None, *,
                 delta_e: bool = True, rgb_bands: Sequence[int] | None = None) -> np.ndarray:
    """Quality sums of the whole image in one blockwise pass (pixels and labels computed again).

    Parameters
    ----------
    data : dask array of shape (H, W, C)
        The source pixels, every band.
    labels : dask array of shape (H, W)
        The palette index written for each pixel.
    palette : ndarray of shape (k, C)
        Every band of the colours written (not only the bands displayed).
    valid : dask array of shape (H, W) of bool or None, default=None
        The pixels counted (None: all).
    delta_e : bool, default=True
        Also sum the OKLab distances (3-band data on a known scale).
    rgb_bands : sequence of 3 int or None, default=None
        The bands shown as R, G, B: Delta E reads a 3-band image in that
        order (None: as stored).

    Returns
    -------
    sums : ndarray of shape (5,)
        Squared error summed over every band of every counted pixel, summed
        OKLab distance (NaN when not measured), pixels counted, and, for
        float data, the lowest and highest value counted (for
        :func:`psnr_peak`; infinite for other data).

    Raises
    ------
    ValueError
        The palette's bands are not the data's.
    """
    palette = np.ascontiguousarray(palette, dtype=np.float64)
    if palette.ndim != 2 or palette.shape[1] != data.shape[2]:
        # the error kernel reads palette[label, c] for every band of the pixels
        raise ValueError(f"a palette of shape {palette.shape} does not measure pixels of {data.shape[2]} band(s)")
    data, palette = _shown_order(data, rgb_bands), np.ascontiguousarray(_shown_order(palette, rgb_bands))
    if data.numblocks[2] != 1:
        data = data.rechunk({2: -1})
    labels = labels.rechunk(data.chunks[:2])
    args = [data, labels[:, :, None], palette, bool(delta_e)]
    if valid is not None:
        args.append(valid.rechunk(data.chunks[:2])[:, :, None])
    per_block = da.map_blocks(
        _block_sums3, *args, dtype=np.float64,
        chunks=(tuple(1 for _ in data.chunks[0]), tuple(1 for _ in data.chunks[1]), (5,)),
        name=f"{tasks.QUALITY}-{tokenize(data, labels, palette, valid, delta_e)}",
    )
    blocks = np.asarray(per_block.compute()).reshape(-1, 5)
    sums = blocks[:, :3].sum(axis=0)
    return np.concatenate([sums, [blocks[:, 3].min(), blocks[:, 4].max()]])


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

    path = output_location(path)
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
