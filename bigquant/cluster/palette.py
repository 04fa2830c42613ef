"""The palette a quantized image is written with: integer colours refined on the histogram.

k-means' centres are the means of their clusters, real numbers; an image of
integer type is written with integer colours.  Rounding each centre is not the
end: once rounded, some colours are nearer another palette entry, and the
means of the new clusters round to other colours.  :func:`refine_integer_palette`
rounds, re-assigns and repeats while the squared error drops, on the exact
colour histogram, so its ``cost`` is exactly the squared error of the written
image.  :func:`full_lookup_table` labels every possible colour of a small
code space, for mapping an image to a palette in one read pass.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bigquant import kernels
from bigquant.cluster.octree import ColourOctree
from bigquant.cluster.points import BoundedPoints, n_threads
from bigquant.cluster.validation import label_dtype

__all__ = ["refine_integer_palette", "palette_error", "full_lookup_table", "MAX_FULL_TABLE_BITS"]

#: largest colour code space labelled colour by colour (2**24 codes: 8-bit RGB)
MAX_FULL_TABLE_BITS = 24
#: palettes of at least this many colours are refined with bounded steps
_BOUNDED_MIN_COLOURS = 32
#: rows below which a scan of the colours is not split over threads
_PART_ROWS = 1 << 16
#: codes labelled per call when filling a full table
_TABLE_STEP = 1 << 20


def palette_error(colours: np.ndarray, counts: np.ndarray, palette: np.ndarray) -> tuple[float, np.ndarray]:
    """Squared error of distinct colours weighted by their counts against their nearest palette colour.

    Parameters
    ----------
    colours : ndarray of shape (n_colours, n_channels)
    counts : ndarray of shape (n_colours,)
    palette : ndarray of shape (k, n_channels)

    Returns
    -------
    error : float
        Sum over the colours of ``count * squared distance`` to the nearest
        palette colour (ties to the lowest index).
    labels : ndarray of shape (n_colours,) of int64
    """
    X = np.ascontiguousarray(colours)
    labels, d = kernels.assign_labels(X, palette, np.int64)
    # not counts @ d: a threaded BLAS call spins when the cores are busy
    return float(np.sum(np.asarray(counts, dtype=np.float64) * d)), labels


def refine_integer_palette(
    colours: np.ndarray,
    counts: np.ndarray,
    centers: np.ndarray,
    *,
    lo: float,
    hi: float,
    max_pass: int = 50,
    return_labels: bool = False,
    octree: ColourOctree | None = None,
) -> tuple[np.ndarray, float] | tuple[np.ndarray, float, np.ndarray]:
    """Round each centre to an integer colour, re-assign, repeat while the error drops.

    Parameters
    ----------
    colours : ndarray of shape (n_colours, n_channels)
        Distinct colours (of an integer type).
    counts : ndarray of shape (n_colours,)
        Their pixel counts.
    centers : ndarray of shape (k, n_channels)
        k-means centres (float).
    lo, hi : float
        Range of the integer type: rounded colours are clipped to it.
    max_pass : int, default=50
        Most re-assignment passes.
    return_labels : bool, default=False
        Also return each colour's nearest palette colour (as
        :func:`palette_error` gives them): the labels the image is written with.
    octree : ColourOctree, default=None
        The octree of these colours and counts (:meth:`ColourHistogram.octree`):
        each pass then looks at the colours near the palette's boundaries
        only; the same passes, sums and error.

    Returns
    -------
    palette : ndarray of shape (k, n_channels) of float64 holding integers
    error : float
        Weighted squared error of the colours to their nearest palette colour:
        the squared error of the image written with ``palette``.
    labels : ndarray of shape (n_colours,) of int64
        Only with ``return_labels``.

    Examples
    --------
    >>> import numpy as np
    >>> colours = np.array([[0], [1], [10]], dtype=np.uint8)
    >>> pal, err = refine_integer_palette(colours, np.array([1, 1, 2]), np.array([[0.5], [10.0]]), lo=0, hi=255)
    >>> pal.ravel().tolist(), err
    ([0.0, 10.0], 1.0)
    """
    k, n_channels = np.shape(centers)
    pal = np.clip(np.rint(np.asarray(centers, dtype=np.float64)), lo, hi)
    if octree is not None:
        return _refine_by_sums(None, None, pal, lo, hi, int(max_pass), return_labels, octree)
    if k < _BOUNDED_MIN_COLOURS:
        return _refine_by_sums(np.ascontiguousarray(colours), np.ascontiguousarray(counts), pal, lo, hi,
                               int(max_pass), return_labels)
    X = np.ascontiguousarray(colours, dtype=np.float64)
    w = np.asarray(counts, dtype=np.float64)
    # the successive palettes move little: after the first full scan, bounded steps
    # rescan only the colours whose nearest palette colour may have changed (with
    # few colours in the palette a full scan is cheaper than keeping the bounds)
    points = BoundedPoints(X, w, n_parts=1) if k >= _BOUNDED_MIN_COLOURS else None

    def error(palette: np.ndarray) -> tuple[float, np.ndarray]:
        """:func:`palette_error` of ``palette``: the same labels, distances and sum."""
        if points is None:
            return palette_error(X, w, palette)
        labels = points.step_labels(palette)
        diff = X - palette[labels]
        d = diff[:, 0] * diff[:, 0]
        for c in range(1, n_channels):  # channels added in order, as the scans do
            d += diff[:, c] * diff[:, c]
        return float(np.sum(w * d)), labels

    total, labels = error(pal)
    for _ in range(int(max_pass)):
        weight = np.bincount(labels, weights=w, minlength=k)
        sums = np.stack([np.bincount(labels, weights=w * X[:, c], minlength=k) for c in range(n_channels)], 1)
        new = pal.copy()
        filled = weight > 0
        new[filled] = np.clip(np.rint(sums[filled] / weight[filled, None]), lo, hi)
        new_total, new_labels = error(new)
        if new_total >= total:
            break
        pal, total, labels = new, new_total, new_labels
    return (pal, total, labels) if return_labels else (pal, total)


def _in_parts(f: Any, n: int) -> list[Any]:
    """``[f(part) for part in parts]`` of ``range(n)`` cut in one part per usable core, on threads."""
    parts = max(1, min(n_threads(), n // _PART_ROWS))
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    spans = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    if parts == 1:
        return [f(spans[0])]
    with ThreadPoolExecutor(parts, thread_name_prefix="bigquant-refine") as pool:
        return list(pool.map(f, spans))


def _refine_by_sums(
    colours: np.ndarray | None, counts: np.ndarray | None, pal: np.ndarray, lo: float, hi: float, max_pass: int,
    return_labels: bool, octree: ColourOctree | None = None,
) -> tuple[np.ndarray, float] | tuple[np.ndarray, float, np.ndarray]:
    """:func:`refine_integer_palette` by fused passes: a small palette on every core, or any through an octree.

    Each step labels every colour and sums the clusters in one scan
    (:func:`bigquant.kernels.partial_sums`, or the octree's sums, which skip
    the cubes of colours that are all nearest one palette colour) instead of
    a scan and a sum per channel.  The sums, weights and errors are of
    integers (integer colours, counts and palette colours): exact in any
    order, so the steps are those of the labels-then-sums loop, number for
    number.
    """
    def sums_of(palette: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        if octree is not None:
            sums, weight, sqnorm = octree.sums(palette)
            # integers: each cluster's error from its moments is exact, as the sum of its colours' errors
            error = sqnorm - 2 * (palette * sums).sum(axis=1) + weight * (palette**2).sum(axis=1)
            return sums, weight, float(np.sum(error))
        found = _in_parts(lambda s: kernels.partial_sums(colours[s], palette, counts[s]), len(colours))
        return (np.sum([f[0] for f in found], axis=0), np.sum([f[1] for f in found], axis=0),
                float(sum(f[2] for f in found)))

    sums, weight, total = sums_of(pal)
    for _ in range(max_pass):
        new = pal.copy()
        filled = weight > 0
        new[filled] = np.clip(np.rint(sums[filled] / weight[filled, None]), lo, hi)
        new_sums, new_weight, new_total = sums_of(new)
        if new_total >= total:
            break
        pal, total, sums, weight = new, new_total, new_sums, new_weight
    if not return_labels:
        return pal, total
    if octree is not None:
        return pal, total, octree.labels(pal)
    labels = np.concatenate(_in_parts(lambda s: kernels.assign_labels(colours[s], pal, np.int64)[0], len(colours)))
    return pal, total, labels


def full_lookup_table(palette: np.ndarray, bits: int, n_channels: int) -> np.ndarray:
    """The nearest palette colour of every colour code (see :func:`bigquant.kernels.encode_colours`).

    Parameters
    ----------
    palette : ndarray of shape (k, n_channels)
    bits : int
        Bits per channel of the codes.
    n_channels : int

    Returns
    -------
    lut : ndarray of shape (2 ** (bits * n_channels),)
        ``lut[code]`` is the index of the palette colour nearest to the colour
        with that code (ties to the lowest index): the same distance and
        tie-break as every other labelling path.

    Raises
    ------
    ValueError
        The code space has more than ``2 ** MAX_FULL_TABLE_BITS`` colours.
    """
    total_bits = int(bits) * int(n_channels)
    if total_bits > MAX_FULL_TABLE_BITS:
        raise ValueError(f"a full table of {total_bits}-bit codes is too large (at most {MAX_FULL_TABLE_BITS})")
    palette = np.asarray(palette, dtype=np.float64)
    dtype = label_dtype(palette.shape[0])
    size = 1 << total_bits
    lut = np.empty(size, dtype=dtype)
    colour_dtype = np.uint8 if bits <= 8 else np.uint16
    for start in range(0, size, _TABLE_STEP):
        codes = np.arange(start, min(size, start + _TABLE_STEP), dtype=np.uint32)
        colours = kernels.decode_colours(codes, n_channels, bits, colour_dtype)
        lut[start : start + codes.shape[0]] = kernels.assign_labels(colours, palette, dtype)[0]
    return lut
