"""Palettes: validation, output bit depth, TIFF colormaps and index types."""

from __future__ import annotations

from typing import Any

import numpy as np

from bigquant.errors import InvalidParameterError

__all__ = [
    "as_colours", "check_nodata", "index_bits", "index_dtype", "tiff_colormap", "with_nodata", "MAX_PALETTE",
    "NBITS",
]

#: Largest palette a TIFF (uint16 indices) can hold.
MAX_PALETTE = 65536


def as_colours(palette: Any, *, dtype: Any = None) -> np.ndarray:
    """Return the palette as rounded, clipped integer colours of shape (k, C).

    Parameters
    ----------
    palette : array-like of shape (k, C)
        Colours, C in {1, 3, 4}; e.g. ``KMeans.cluster_centers_``.
    dtype : numpy dtype or None, default=None
        Output type (uint8 or uint16).  None keeps an unsigned integer palette's
        type; float palettes become uint8 when every value is <= 255 after
        rounding, else uint16.

    Returns
    -------
    colours : ndarray of shape (k, C), dtype uint8 or uint16
    """
    arr = np.asarray(palette)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] not in (1, 3, 4):
        raise InvalidParameterError(
            f"palette of shape {np.shape(palette)} must be (k, C) with k >= 1 and C in (1, 3, 4)"
        )
    if arr.dtype.kind not in "uif":
        raise InvalidParameterError(f"palette of dtype {arr.dtype} must be numeric")
    if arr.shape[0] > MAX_PALETTE:
        raise InvalidParameterError(
            f"palette has {arr.shape[0]} colours; at most {MAX_PALETTE} fit an indexed image"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidParameterError("palette holds NaN or infinite values")
    if dtype is None:
        if arr.dtype in (np.uint8, np.uint16):
            return arr.copy()
        dtype = np.uint8 if np.rint(arr).max(initial=0) <= 255 else np.uint16
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise InvalidParameterError(f"palette dtype {dtype} must be uint8 or uint16")
    info = np.iinfo(dtype)
    return np.clip(np.rint(arr.astype(np.float64)), info.min, info.max).astype(dtype)


def index_dtype(n_colours: int) -> np.dtype:
    """uint8 for up to 256 colours, uint16 up to 65536."""
    if n_colours <= 256:
        return np.dtype(np.uint8)
    if n_colours <= MAX_PALETTE:
        return np.dtype(np.uint16)
    raise InvalidParameterError(
        f"palette has {n_colours} colours; at most {MAX_PALETTE} fit an indexed image"
    )


#: bits a palette index can be stored in (TIFF BitsPerSample; GDAL's NBITS): 1, 2 and 4 are packed
NBITS = (1, 2, 4, 8, 16)


def index_bits(n_values: int, nbits: Any = None) -> int:
    """Bits a palette index is stored in: the fewest of :data:`NBITS` that hold ``n_values`` indices.

    Parameters
    ----------
    n_values : int
        Indices to hold: the palette's entries, a no-data index included
        (``nodata + 1`` when it lies past them).
    nbits : int or None, default=None
        None: the fewest bits (1 for up to 2 values, 2 up to 4, 4 up to 16,
        8 up to 256, else 16).  1, 2, 4: pack that many (refused when the
        values do not fit); 8: one byte an index, unpacked, up to 256
        values; 16: more than 256 values.

    Raises
    ------
    InvalidParameterError
        ``nbits`` is not one of :data:`NBITS`, or does not hold the values.

    Examples
    --------
    >>> index_bits(2), index_bits(3), index_bits(16), index_bits(17), index_bits(16, 8)
    (1, 2, 4, 8, 8)
    """
    native = index_dtype(n_values).itemsize * 8
    if nbits is None:
        return next(b for b in NBITS if n_values <= 2**b)
    if isinstance(nbits, (bool, np.bool_)) or not isinstance(nbits, (int, np.integer)) or int(nbits) not in NBITS:
        raise InvalidParameterError(f"nbits={nbits!r} must be one of {', '.join(map(str, NBITS))} or None")
    nbits = int(nbits)
    if n_values > 2**nbits:
        raise InvalidParameterError(
            f"nbits={nbits} holds {2**nbits} palette indices, but {n_values} are written (the palette's "
            "entries and a no-data index past them); give more bits, or leave nbits out for the fewest that fit")
    if nbits > native:
        raise InvalidParameterError(
            f"nbits={nbits}: {n_values} palette indices are stored in {native} bits at most; give {native} or fewer")
    return nbits


def tiff_colormap(colours: np.ndarray) -> np.ndarray:
    """Return the TIFF colormap (3, 2**bits) uint16 of 8- or 16-bit colours.

    Gray palettes are replicated to RGB; alpha is dropped.  8-bit values are
    scaled by 257 so 255 maps to 65535 (GDAL divides by 257 again and reads
    the palette's own 8-bit colours).  Entries past the palette -- a no-data
    label's among them -- are black.
    """
    bits = 8 if len(colours) <= 256 else 16
    rgb = colours[:, :3] if colours.shape[1] >= 3 else np.repeat(colours[:, :1], 3, axis=1)
    scale = 257 if colours.dtype == np.uint8 else 1
    cmap = np.zeros((3, 2**bits), dtype=np.uint16)
    cmap[:, : len(colours)] = (rgb.astype(np.uint32) * scale).T
    return cmap


def check_nodata(nodata: Any, n_colours: int) -> int:
    """Validate a no-data label for a palette of ``n_colours`` colours.

    It must be an integer outside the palette (``>= n_colours``) that the
    palette's index type (:func:`index_dtype`) holds.

    Raises
    ------
    InvalidParameterError
        ``nodata`` is not an int, lies inside the palette, or is too large.
    """
    if not isinstance(nodata, (int, np.integer)) or isinstance(nodata, (bool, np.bool_)):
        raise InvalidParameterError(f"nodata={nodata!r} must be an integer label")
    nodata = int(nodata)
    if nodata < n_colours:
        raise InvalidParameterError(
            f"nodata={nodata} lies inside the palette of {n_colours} colours; "
            f"use a label >= {n_colours}"
        )
    dtype = index_dtype(n_colours)
    if nodata > np.iinfo(dtype).max:
        raise InvalidParameterError(
            f"nodata={nodata} does not fit the {dtype} indices of a {n_colours}-colour "
            f"palette (at most {np.iinfo(dtype).max}); use fewer colours"
        )
    return nodata


def with_nodata(colours: np.ndarray, nodata: int) -> np.ndarray:
    """The palette with an alpha sample and a transparent ``nodata`` entry.

    Parameters
    ----------
    colours : ndarray of shape (k, C)
        Palette (uint8 or uint16).
    nodata : int
        No-data label, ``>= k``.

    Returns
    -------
    table : ndarray of shape (nodata + 1, C + 1)
        Row ``i < k``: colour ``i`` and an opaque alpha (the dtype's maximum);
        every other row, ``nodata``'s included, is 0 (transparent black).

    Examples
    --------
    >>> with_nodata(np.array([[10, 20, 30]], np.uint8), 2).tolist()
    [[10, 20, 30, 255], [0, 0, 0, 0], [0, 0, 0, 0]]
    """
    k, c = colours.shape
    table = np.zeros((nodata + 1, c + 1), dtype=colours.dtype)
    table[:k, :c] = colours
    table[:k, c] = np.iinfo(colours.dtype).max
    return table
