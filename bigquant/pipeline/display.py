"""What the palette shows: the 8-bit colours of the colour table, the PNG palette and the preview.

The palette itself keeps the data's values (``palette`` in the palette JSON,
the colours of ``mode="rgb"`` output).  What a viewer shows of a palette
image is its colour table, 8 bits a channel (GDAL reads a TIFF colormap as
16-bit, 8-bit x 257).  Raw 16-bit or float colours cut to 8 bits are near
black for most data (reflectances of 200..4000 are 0..15 out of 255).  So:

* **uint8 data** are shown as they are (the colour table is the palette's own
  colours), unless ``display_range`` or ``display_palette`` is given.
* **Other data** (uint16, int16, float, ...) are shown through a display
  stretch: per displayed band, ``low`` -> 0 and ``high`` -> 255, linearly,
  clipped.  The default ``"p2,p98"`` is QGIS's default rendering of
  multi-band rasters (cumulative count cut at 2 and 98 % per band).  The
  percentiles come from what the fit already counted -- no extra pass over
  the pixels:

  - the exact colour histogram (data of at most 24 bits a pixel, e.g. uint16
    grey): exact percentiles of the pixels;
  - the grid strategy's per-cell counts (uint16 or float RGB, 4 or more
    bands): each band's counts in bins of the value grid (32 to 4096 bins a
    band), interpolated within a bin;
  - otherwise (the pixel and mini-batch strategies, a palette given to
    apply): the palette's colours themselves, each weighted equally (no
    cluster sizes are known without a pass).

* ``display_palette``: the 8-bit colours shown, one per class, from a palette
  file (``.json``, ``.gpl``, ``.act``, ``.png``) or an array; its count must
  be k.

The palette JSON records what was shown (``display``: bands, ``min``/``max``
per band, the ``range`` asked, what the percentiles were ``counted`` from, the
8-bit ``colours``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bigquant.errors import InvalidParameterError
from bigquant.io.palette import as_colours
from bigquant.io.palette_file import palette_format, read_palette

__all__ = [
    "DEFAULT_DISPLAY_RANGE", "DisplayRange", "DisplayPalette", "Display", "parse_display_range",
    "load_display_palette", "weighted_percentile", "band_percentile", "stretch", "display_colours",
]

logger = logging.getLogger(__name__)

#: the display stretch of data that are not uint8: QGIS's default (cumulative count cut, 2--98 %)
DEFAULT_DISPLAY_RANGE = "p2,p98"


@dataclasses.dataclass(frozen=True)
class DisplayRange:
    """A display stretch as asked: for every displayed band (one pair) or for each.

    Attributes
    ----------
    bands : tuple of ((bool, float), (bool, float))
        Per band (or one for all), the low and the high end: ``(True, q)`` a
        percentile q in [0, 100] of the band's pixels, ``(False, v)`` a value.
    text : str
        The range as written (``"p2,p98"``, ``"0,4000;0,3500;0,3000"``).
    """

    bands: tuple[tuple[tuple[bool, float], tuple[bool, float]], ...]
    text: str

    @property
    def needs_counts(self) -> bool:
        """Whether an end is a percentile (needs what the fit counted)."""
        return any(end[0] for pair in self.bands for end in pair)

    def for_bands(self, n_bands: int) -> tuple[tuple[tuple[bool, float], tuple[bool, float]], ...]:
        """One pair per displayed band (a single pair serves every band).

        Raises
        ------
        InvalidParameterError
            Neither one pair nor one per displayed band.
        """
        if len(self.bands) == 1:
            return self.bands * n_bands
        if len(self.bands) != n_bands:
            raise InvalidParameterError(
                f"display_range={self.text!r} gives {len(self.bands)} ranges but {n_bands} band(s) are displayed: "
                "give one min,max for every band or one per displayed band"
            )
        return self.bands


def _end(text: Any, whole: Any) -> tuple[bool, float]:
    """One end of a range: ``p2`` (a percentile) or a number."""
    item = str(text).strip().lower() if isinstance(text, str) else text
    percentile = isinstance(item, str) and item.startswith("p")
    try:
        value = float(item[1:] if percentile else item)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"display_range={whole!r}: {text!r} is neither a number nor a percentile like p2"
        ) from None
    if not np.isfinite(value) or percentile and not 0.0 <= value <= 100.0:
        raise InvalidParameterError(f"display_range={whole!r}: {text!r} must be a finite number, or p0..p100")
    return percentile, value


def parse_display_range(value: Any) -> DisplayRange | None:
    """Read ``display_range``: ``"min,max"``, ``"min,max;min,max;min,max"``, percentiles ``"p2,p98"``.

    Also a pair ``(min, max)`` or a sequence of pairs; the ends of a pair may
    mix values and percentiles (``"p2,4000"``).  None stays None (the default
    stretch of the data type).

    Raises
    ------
    InvalidParameterError
        A pair that is not two ends, an end that is neither a number nor
        ``p0``..``p100``, or a low end not below the high one.

    Examples
    --------
    >>> parse_display_range("p2,p98").bands
    (((True, 2.0), (True, 98.0)),)
    >>> parse_display_range([(0, 4000), (0, 3000), (100, 2000)]).text
    '0,4000;0,3000;100,2000'
    """
    if value is None or isinstance(value, DisplayRange):
        return value
    if isinstance(value, str):
        pairs: list[Any] = [part.split(",") for part in value.replace(" ", "").split(";")]
    elif isinstance(value, Sequence) and len(value) == 2 and not any(
            isinstance(v, Sequence) and not isinstance(v, str) for v in value):
        pairs = [list(value)]
    elif isinstance(value, Sequence) or isinstance(value, np.ndarray):
        pairs = [list(p) if isinstance(p, (Sequence, np.ndarray)) and not isinstance(p, str) else [p]
                 for p in value]
    else:
        raise InvalidParameterError(f"display_range={value!r} must be 'min,max', 'p2,p98' or one pair per band")
    bands = []
    for pair in pairs:
        if len(pair) != 2:
            raise InvalidParameterError(
                f"display_range={value!r}: every range is two ends, min,max (or percentiles p2,p98)")
        low, high = _end(pair[0], value), _end(pair[1], value)
        if low[0] == high[0] and not low[1] < high[1]:
            raise InvalidParameterError(f"display_range={value!r}: the low end must be below the high end")
        bands.append((low, high))
    if not bands:
        raise InvalidParameterError(f"display_range={value!r} holds no range")

    def word(end: tuple[bool, float]) -> str:
        return f"{'p' if end[0] else ''}{end[1]:g}"

    text = ";".join(f"{word(lo)},{word(hi)}" for lo, hi in bands)
    return DisplayRange(tuple(bands), text)


@dataclasses.dataclass(frozen=True, eq=False)
class DisplayPalette:
    """8-bit colours to show, one per class, and the file they came from.

    Attributes
    ----------
    colours : ndarray of shape (k, 1) or (k, 3), uint8
    source : str or None
        The palette file, if any.
    """

    colours: np.ndarray
    source: str | None = None


def load_display_palette(value: Any) -> DisplayPalette | None:
    """Read ``display_palette``: a palette file bigquant reads, or an array of 8-bit colours.

    Grey colours (one channel) are kept as grey; a fourth (alpha) channel is
    dropped.  Nothing is checked against k here (see
    :func:`bigquant.pipeline.request.check_request`).

    Raises
    ------
    InvalidParameterError
        Not a palette format, or colours that are not integers in [0, 255]
        of 1, 3 or 4 channels.
    ImageReadError
        An unreadable palette file.
    """
    if value is None or isinstance(value, DisplayPalette):
        return value
    source = None
    if isinstance(value, (str, os.PathLike)):
        source = os.fspath(value)
        palette_format(value)  # an unknown suffix: InvalidParameterError
        colours = read_palette(value)
    else:
        colours = np.asarray(value)
    name = f"display_palette={source or 'array'}"
    if colours.ndim == 1:
        colours = colours[:, None]
    if (colours.ndim != 2 or colours.shape[0] == 0 or colours.shape[1] not in (1, 3, 4)
            or colours.dtype.kind not in "uif"):
        raise InvalidParameterError(f"{name}: colours of shape {colours.shape} must be (k, 1 or 3) numbers")
    if not (np.all(np.isfinite(colours)) and np.all(colours == np.rint(colours))
            and colours.min() >= 0 and colours.max() <= 255):
        raise InvalidParameterError(
            f"{name}: the colours shown are 8-bit, integers in [0, 255] (a palette JSON of 16-bit or float "
            "data holds the data's values: write its colours shown as .gpl, .act or .png)"
        )
    colours = colours[:, :3] if colours.shape[1] == 4 else colours
    return DisplayPalette(np.ascontiguousarray(colours.astype(np.uint8)), source)


def weighted_percentile(values: np.ndarray, weights: np.ndarray | None, q: float) -> float:
    """The lowest value whose cumulative weight reaches ``q`` % of the total (q in [0, 100]).

    Integer values of a small range are counted with ``np.bincount``,
    others sorted.

    Examples
    --------
    >>> weighted_percentile(np.array([3, 1, 2]), np.array([1.0, 1.0, 8.0]), 50)
    2.0
    """
    values = np.asarray(values).reshape(-1)
    w = np.ones(values.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    keep = w > 0
    values, w = values[keep], w[keep]
    if values.size == 0:
        raise InvalidParameterError("no pixel counted: no percentile to take")
    target = q / 100.0 * float(w.sum())
    if target <= 0:
        return float(values.min())
    if values.dtype.kind in "ui" and int(values.min()) >= 0 and int(values.max()) < 1 << 20:
        counts = np.bincount(values.astype(np.int64), weights=w)
        cum = np.cumsum(counts)
        return float(min(int(np.searchsorted(cum, target, side="left")), counts.shape[0] - 1))
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(w[order])
    i = min(int(np.searchsorted(cum, target, side="left")), values.shape[0] - 1)
    return float(values[order][i])


def band_percentile(edges: np.ndarray, counts: np.ndarray, q: float, minimum: float, maximum: float) -> float:
    """The ``q`` % point of a band from its counts in bins (interpolated within the bin), in [minimum, maximum].

    Examples
    --------
    >>> band_percentile(np.array([0.0, 10.0, 20.0]), np.array([1.0, 3.0]), 50, 0.0, 20.0)
    13.333333333333334
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = float(counts.sum())
    if total <= 0:
        raise InvalidParameterError("no pixel counted: no percentile to take")
    target = q / 100.0 * total
    cum = np.cumsum(counts)
    if target <= 0:
        i = int(np.flatnonzero(counts)[0])
    else:
        i = min(int(np.searchsorted(cum, target, side="left")), counts.shape[0] - 1)
    before = float(cum[i - 1]) if i > 0 else 0.0
    frac = min(max((target - before) / counts[i], 0.0), 1.0) if counts[i] > 0 else 0.0
    value = float(edges[i] + frac * (edges[i + 1] - edges[i]))
    return min(max(value, float(minimum)), float(maximum))


def stretch(values: np.ndarray, low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """Values of the displayed bands to 8 bits: ``low`` -> 0, ``high`` -> 255, linear, clipped, rounded.

    A band whose low and high ends meet (one value) shows that value mid-grey
    (128), lower values black and higher ones white.

    Examples
    --------
    >>> stretch(np.array([[200.0], [2100.0], [4000.0], [5000.0]]), [200.0], [4000.0]).ravel().tolist()
    [0, 128, 255, 255]
    """
    v = np.asarray(values, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    hi = np.asarray(high, dtype=np.float64)
    span = hi - lo
    flat = span <= 0
    scaled = (v - lo) * (255.0 / np.where(flat, 1.0, span))
    scaled = np.where(flat, np.where(v < lo, 0.0, np.where(v > lo, 255.0, 128.0)), scaled)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@dataclasses.dataclass
class Display:
    """The 8-bit colours shown for a palette, and how they were found.

    Attributes
    ----------
    colours : ndarray of shape (k, 1) or (k, 3), uint8
        The colours shown: the colour table, the PNG palette, the preview.
    bands : list of int
        The palette's bands shown (as ``rgb_bands``; one for grey).
    low, high : list of float or None
        The display stretch per band shown (None with ``display_palette``).
    range : str or None
        The stretch asked (``"p2,p98"`` by default for data that are not
        uint8); None: none (uint8 data as they are, or ``display_palette``).
    counted : str or None
        What the percentiles were taken of: ``"histogram"`` (the exact colour
        histogram), ``"grid"`` (the grid strategy's counts), ``"palette"``
        (the palette's colours, each weighted equally); None without
        percentiles.
    palette_file : str or None
        The ``display_palette`` file.
    """

    colours: np.ndarray
    bands: list[int]
    low: list[float] | None
    high: list[float] | None
    range: str | None
    counted: str | None
    palette_file: str | None = None

    @property
    def as_is(self) -> bool:
        """Whether the colours are the palette's own 8-bit ones (a writer then needs no display table)."""
        return self.range is None and self.palette_file is None and self.low is not None

    def document(self) -> dict[str, Any]:
        """The palette JSON's ``display`` entry."""
        return {
            "bands": list(self.bands),
            "min": self.low,
            "max": self.high,
            "range": self.range,
            "counted": self.counted,
            "palette_file": self.palette_file,
            "colours": self.colours.tolist(),
        }


def _percentiles(band: int, position: int, ends: list[tuple[bool, float]], palette: np.ndarray,
                 histogram: Any, band_counts: Any) -> tuple[list[float], str]:
    """The ends of one band's stretch; percentiles from the histogram, the grid counts or the palette."""
    out: list[float] = []
    counted = "palette"
    for is_percentile, value in ends:
        if not is_percentile:
            out.append(float(value))
            continue
        if histogram is not None:
            out.append(weighted_percentile(histogram.colours[:, band], histogram.counts, value))
            counted = "histogram"
        elif band_counts is not None:
            out.append(band_percentile(band_counts.edges[band], band_counts.counts[band], value,
                                       band_counts.minimum[band], band_counts.maximum[band]))
            counted = "grid"
        else:
            out.append(weighted_percentile(palette[:, position], None, value))
    return out, counted


def display_colours(
    palette: np.ndarray,
    dtype: Any,
    bands: Sequence[int],
    *,
    display_range: DisplayRange | None = None,
    display_palette: DisplayPalette | None = None,
    histogram: Any = None,
    band_counts: Any = None,
) -> Display:
    """The 8-bit colours shown for ``palette`` (see the module docstring).

    Parameters
    ----------
    palette : ndarray of shape (k, n_channels)
        The palette in the data's units, every band.
    dtype : numpy dtype
        The data's type: uint8 data without ``display_range`` are shown as they are.
    bands : sequence of int
        The bands shown (three, or one for grey).
    display_range : DisplayRange or None, default=None
        The stretch; None: :data:`DEFAULT_DISPLAY_RANGE` for data that are not uint8.
    display_palette : DisplayPalette or None, default=None
        Colours to show instead (its count must be k).
    histogram : ColourHistogram or None, default=None
        The exact colour histogram of the pixels fitted (every band).
    band_counts : BandCounts or None, default=None
        The grid strategy's per-band counts (every band).

    Returns
    -------
    Display

    Raises
    ------
    InvalidParameterError
        A ``display_palette`` of another count than k; a ``display_range``
        of neither one range nor one per band shown.
    """
    pal = np.asarray(palette, dtype=np.float64)
    if pal.ndim == 1:
        pal = pal[:, None]
    bands = [int(b) for b in bands]
    shown = pal[:, bands]
    if display_palette is not None:
        colours = display_palette.colours
        if len(colours) != len(pal):
            raise InvalidParameterError(
                f"display_palette={display_palette.source or 'array'} has {len(colours)} colours but the palette "
                f"has {len(pal)}: one colour shown per class")
        return Display(colours, bands, None, None, None, None, display_palette.source or "array")
    if np.dtype(dtype) == np.uint8 and display_range is None:
        n = len(bands)
        return Display(as_colours(shown, dtype=np.uint8), bands, [0.0] * n, [255.0] * n, None, None)
    asked = display_range if display_range is not None else parse_display_range(DEFAULT_DISPLAY_RANGE)
    assert asked is not None
    hist = histogram if histogram is not None and histogram.colours.shape[1] == pal.shape[1] else None
    grid = band_counts if band_counts is not None and len(band_counts.counts) == pal.shape[1] else None
    low, high, counted = [], [], None
    for position, (band, pair) in enumerate(zip(bands, asked.for_bands(len(bands)))):
        (lo, hi), source = _percentiles(band, position, list(pair), shown, hist, grid)
        low.append(lo)
        high.append(hi)
        if any(end[0] for end in pair):
            counted = source
    colours = stretch(shown, low, high)
    logger.info("display stretch %s of bands %s: %s..%s%s", asked.text, bands,
                [round(v, 6) for v in low], [round(v, 6) for v in high],
                f" (percentiles of the {counted}'s counts)" if counted in ("histogram", "grid") else
                " (percentiles of the palette's colours)" if counted else "")
    return Display(colours, bands, low, high, asked.text, counted)
