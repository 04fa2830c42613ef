"""Tissue of a slide, found on a small (low-resolution) view: the detector behind ``mask="auto"``.

histolab (``TissueMask``) and tiatoolbox (``OtsuTissueMasker``,
``MorphologicalMasker``) threshold the *grey level* with Otsu's method, then
clean the mask with morphology.  Grey level fails on pale stroma: lightly
stained pink or bluish tissue is nearly as bright as the glass, and Otsu's
split between the glass and the dark, cellular tissue puts the stroma on the
glass's side: it becomes holes.  What separates pale tissue from glass is *colour*:
stains absorb some wavelengths more than others, glass (and its vignetting,
and grey dust) absorbs all alike.  :func:`detect_tissue` therefore works in
optical density, OD = -log10(I / I0), I0 being the glass's own colour:

1. the view is median-filtered (3 x 3, each band), which removes the pixel
   noise without blurring the tissue's edge (a mean would smear the tissue's
   colour one pixel into the glass all around it);
2. I0 is the median colour of the brightest tenth of the view (the glass),
   which also white-balances a tinted background;
3. each pixel's *colour density* is the spread of its OD over the bands,
   ``max(OD) - min(OD)`` = log10(brightest band / darkest band): 0 for glass
   however dark the vignetting makes it, ~0.03 for pale stroma, ~0.3 for
   eosin, ~0.5 for nuclei (a saturation, in OD units);
4. tissue is colour density above a threshold, by default Otsu's threshold
   of the *logarithm* of the colour density (the glass is a narrow mode near
   0; the tissue spans a decade and more, from pale stroma to nuclei: on a
   log scale both are compact, as Otsu's method assumes);
5. pen ink is left out by its hue in OD: hematoxylin and eosin absorb green
   at least as much as red, the green and blue inks of markers absorb red far
   more than green; ink pixels (and a margin of :data:`PEN_MARGIN` pixels
   for their soft edges) are not tissue;
6. holes up to :data:`MAX_HOLE` of the view (fat vacuoles, lumens, dust on
   the tissue) are filled and objects below :data:`MIN_OBJECT` (dust, noise)
   dropped, as histolab's ``RemoveSmallHoles`` and ``RemoveSmallObjects`` do.

Images of one or two bands have no colour: their density is the OD of the
grey level (vignetting then counts).

Limits: tissue without colour (black pigment, unstained sections) is found
only where it is a small hole in coloured tissue; on a view that is nearly
all tissue the brightest tenth is tissue, not glass, and the palest tissue
counts as white.  The morphology uses :mod:`scipy.ndimage` (imported when a
mask is detected, not with bigquant).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = [
    "DENSITY_FLOOR", "MAX_HOLE", "MIN_OBJECT", "PEN_MARGIN", "PEN_MIN_DENSITY", "PEN_RED_GREEN", "TissueDetection",
    "colour_density", "detect_tissue", "otsu_threshold",
]

#: holes in the tissue up to this fraction of the view are filled (fat, lumens, dust on tissue)
MAX_HOLE = 2e-3
#: objects below this fraction of the view are dropped (dust, specks of noise)
MIN_OBJECT = 1e-4
#: ink: red OD at least this many times the green OD ...
PEN_RED_GREEN = 1.2
#: ... and a red OD of at least this (a dark mark, not a tint)
PEN_MIN_DENSITY = 0.15
#: pixels of the view around ink left out too (the strokes' soft edges)
PEN_MARGIN = 2
#: colour densities below this are counted as this in Otsu's log scale (1 grey level in 8 bits at I0 ~ 230 is 0.002)
DENSITY_FLOOR = 1e-3


@dataclasses.dataclass(frozen=True)
class TissueDetection:
    """The tissue found on a low-resolution view.

    Attributes
    ----------
    mask : ndarray of shape (h, w), bool
        True on tissue.
    threshold : float
        Colour density (OD units) above which a pixel was tissue.
    otsu : bool
        Whether ``threshold`` is Otsu's (else it was given).
    white : ndarray of shape (bands,)
        The glass's colour I0, on an 8-bit scale.
    pen : float
        Fraction of the view left out as pen ink.
    """

    mask: np.ndarray
    threshold: float
    otsu: bool
    white: np.ndarray
    pen: float


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the split of greatest between-class variance.

    Parameters
    ----------
    values : array-like
        8-bit values (uint8: the 256 grey levels are the bins) or any real
        values (``bins`` equal bins between their least and greatest).
    bins : int, default=256
        Bins of a histogram of real values.

    Returns
    -------
    threshold : float
        Values below it form one class, values above the other.

    Examples
    --------
    >>> otsu_threshold(np.array([10, 12, 11, 200, 210], dtype=np.uint8))
    106.0
    """
    values = np.asarray(values)
    if values.dtype == np.uint8:
        counts = np.bincount(values.ravel(), minlength=256).astype(np.float64)
        levels, width, start = np.arange(256, dtype=np.float64), 1.0, -0.5
    else:
        flat = values.astype(np.float64).ravel()
        lo, hi = float(flat.min()), float(flat.max())
        if hi <= lo:
            return hi
        counts = np.histogram(flat, bins=bins, range=(lo, hi))[0].astype(np.float64)
        width = (hi - lo) / bins
        levels, start = lo + width * (np.arange(bins) + 0.5), lo
    n = len(counts)
    weight0 = np.cumsum(counts)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * levels)
    mean0 = np.divide(sum0, weight0, out=np.zeros(n), where=weight0 > 0)
    mean1 = np.divide(sum0[-1] - sum0, weight1, out=np.zeros(n), where=weight1 > 0)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    # empty bins between the classes make a plateau: take its middle
    best = np.flatnonzero(between >= between.max() * (1.0 - 1e-12))
    return float(start + width * ((best[0] + best[-1]) / 2.0 + 1.0))


#: Devillard's 19-exchange sorting network: the median of 9 values ends in position 4
_MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
            (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median3x3(band: np.ndarray) -> np.ndarray:
    """3 x 3 median of a 2-D array, edges repeated (``scipy.ndimage.median_filter(size=3, mode="nearest")``).

    A sorting network on nine shifted views: exact, and ten times faster than
    SciPy's rank filter on a view of a million pixels.
    """
    h, w = band.shape
    padded = np.pad(band, 1, mode="edge")
    p = [padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]
    for a, b in _MEDIAN9:
        p[a], p[b] = np.minimum(p[a], p[b]), np.maximum(p[a], p[b])
    return p[4]


def _eight_bit_scale(pixels: np.ndarray) -> np.ndarray:
    """The pixels as float64 on a 0..255 scale (integers by their type's range, floats by their maximum)."""
    if pixels.dtype.kind in "ui":
        return pixels.astype(np.float64) * (255.0 / float(np.iinfo(pixels.dtype).max))
    x = pixels.astype(np.float64)
    finite = x[np.isfinite(x)]
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return np.nan_to_num(x, nan=top, posinf=top, neginf=0.0) * (255.0 / top)


def colour_density(pixels: np.ndarray, valid: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optical density against the glass, and each pixel's colour density.

    Parameters
    ----------
    pixels : ndarray of shape (h, w) or (h, w, bands)
        A low-resolution view, of any type.
    valid : ndarray of shape (h, w), bool, or None
        Pixels that are image (the glass's colour is taken among them).

    Returns
    -------
    od : ndarray of shape (h, w, bands), float64
        -log10(I / I0) per band after a 3 x 3 median, I0 being the glass's
        colour (the median colour of the brightest tenth); three bands (the
        first three) or one (the mean of one or two).
    density : ndarray of shape (h, w), float64
        ``od.max(-1) - od.min(-1)`` with three bands, else the OD itself.
    white : ndarray of shape (bands,)
        I0 on an 8-bit scale.
    """
    x = pixels if pixels.ndim == 3 else pixels[:, :, None]
    if x.shape[2] < 3:
        x = _eight_bit_scale(x).mean(axis=-1, keepdims=True)
    elif x.dtype.kind not in "ui":
        x = _eight_bit_scale(x[:, :, :3])
    else:
        x = x[:, :, :3]
    # integers: the median in their own type (far faster than in float), then to the 0..255 scale
    x = np.stack([_median3x3(x[:, :, band]) for band in range(x.shape[2])], axis=-1)
    if x.dtype.kind in "ui":
        x = _eight_bit_scale(x)
    grey = x.mean(axis=-1)
    among = grey if valid is None else grey[valid]
    if among.size == 0:
        among = grey.ravel()
    bright = grey >= np.quantile(among, 0.9)
    if valid is not None and (bright & valid).any():
        bright &= valid
    white = np.median(x[bright], axis=0)
    od = -np.log10((x + 1.0) / (white + 1.0))
    density = od.max(axis=-1) - od.min(axis=-1) if x.shape[2] >= 3 else od[..., 0]
    return od, density, white


def _fill_small_holes(mask: np.ndarray, largest: float) -> np.ndarray:
    """``mask`` with its holes (background enclosed by it) of at most ``largest`` pixels filled."""
    from scipy import ndimage as ndi

    holes, n = ndi.label(ndi.binary_fill_holes(mask) & ~mask)
    if n == 0:
        return mask
    small = np.bincount(holes.ravel()) <= largest
    small[0] = False
    return mask | small[holes]


def _drop_small_objects(mask: np.ndarray, smallest: float) -> np.ndarray:
    """``mask`` without its 8-connected objects of fewer than ``smallest`` pixels."""
    from scipy import ndimage as ndi

    objects, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    keep = np.bincount(objects.ravel()) >= smallest
    keep[0] = False
    return keep[objects]


def detect_tissue(pixels: np.ndarray, valid: np.ndarray | None = None, threshold: float | None = None
                  ) -> TissueDetection:
    """Tissue on a low-resolution view of a slide (see the module's notes for the method).

    Parameters
    ----------
    pixels : ndarray of shape (h, w) or (h, w, bands)
        The view, any type; three bands or more are read as R, G, B (the
        first three).
    valid : ndarray of shape (h, w), bool, or None
        Pixels that are image (alpha, nodata...): the others are never tissue
        and take no part in the threshold.
    threshold : float or None, default=None
        Colour density (OD units, log10 of brightest band / darkest band
        against the glass) above which a pixel is tissue: ~0.01 keeps the
        faintest tint, ~0.03 pale stroma, ~0.2 only well-stained tissue.
        None: Otsu's threshold of the log colour density.

    Returns
    -------
    TissueDetection

    Examples
    --------
    >>> glass = np.full((64, 64, 3), 230, np.uint8)
    >>> glass[16:48, 16:48] = (215, 190, 215)   # pale pink stroma
    >>> found = detect_tissue(glass)
    >>> bool(found.mask[18:46, 18:46].all()), bool(found.mask[:12].any()), found.otsu
    (True, False, True)
    """
    from scipy import ndimage as ndi

    pixels = np.asarray(pixels)
    od, density, white = colour_density(pixels, valid)
    counted = density if valid is None else density[valid]
    otsu = threshold is None
    if otsu:
        if counted.size:
            logs = np.log10(np.maximum(counted, DENSITY_FLOOR))
            threshold = float(10.0 ** otsu_threshold(logs))
        else:
            threshold = math.inf
    tissue = density > threshold
    pen = np.zeros(tissue.shape, bool)
    if od.shape[2] >= 3:
        pen = (od[..., 0] > PEN_RED_GREEN * od[..., 1]) & (od[..., 0] > PEN_MIN_DENSITY)
        if pen.any():
            pen = ndi.binary_dilation(pen, iterations=PEN_MARGIN)
        tissue &= ~pen
    if valid is not None:
        tissue &= valid
    n = tissue.size
    tissue = _fill_small_holes(tissue, MAX_HOLE * n)
    if valid is not None:
        tissue &= valid
    tissue = _drop_small_objects(tissue, MIN_OBJECT * n)
    return TissueDetection(mask=tissue, threshold=float(threshold), otsu=otsu, white=white,
                           pen=float(pen.mean()) if pen.size else 0.0)
