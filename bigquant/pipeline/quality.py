"""k from a quality target: the fewest colours whose image reaches a PSNR.

pngquant's ``--quality min-max`` picks the number of colours itself; here the
target is a PSNR in dB of the quantized image against the original, computed
exactly on the colour histogram (the error of the palette the image is
written with, :meth:`bigquant.KMeans.palette`).  The search brackets k by
doubling (2, 4, 8, ...) until the target is met, then bisects between the
last k that missed and the first that met it: about ``2 log2 k`` fits on the
shared histogram, not a sweep of every k.  A floor below which nothing is
worth writing makes the search fail with :class:`bigquant.errors.QualityError`
(the command line exits with code 99, as pngquant does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bigquant.errors import InvalidParameterError, QualityError

__all__ = [
    "QualityTarget", "parse_quality", "search_k", "KSearch", "pngquant_quality_to_mse", "pngquant_quality_to_psnr",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityTarget:
    """A PSNR target in dB and an optional floor (``minimum <= target``).

    ``pngquant`` is the ``(minimum, target)`` of pngquant's 0-100 scale the
    target was converted from (:func:`pngquant_quality_to_psnr`), else None.
    """

    target: float
    minimum: float | None = None
    pngquant: tuple[int, int] | None = field(default=None, repr=False)


#: libimagequant's ``LIQ_WEIGHT_MSE`` (src/pal.rs): its internal MSE is this times the "unit" MSE
_LIQ_WEIGHT_MSE = 0.45


def pngquant_quality_to_mse(quality: int) -> float:
    """The mean squared error (0-255 values) pngquant's quality ``quality`` (0-100) stands for.

    libimagequant (``src/quant.rs``, ``quality_to_mse``) turns a quality ``q`` into
    its internal error ``0.45 * u(q)`` with ``u(q) = max(0, 0.016 / (0.001 + q) - 0.001)
    + 2.5 / (210 + q) ** 1.2 * (100.1 - q) / 100`` (``q = 0``: 1e20, ``q >= 100``: 0), and
    reports that error on the 0-255 scale with ``internal_mse_to_standard_mse``
    (``src/pal.rs``): ``mse * 65536 / 6 / 0.45``.  This is that published
    conversion, ``u(q) * 65536 / 6``.

    libimagequant measures its error between premultiplied colours in its own
    gamma (0.57) with channel weights (R 0.5, G 1, B 0.45, alpha 0.625), not
    between sRGB values: the number is an approximation of the mean squared
    error per sRGB value that bigquant's PSNR measures, good to a few dB.

    Examples
    --------
    >>> round(pngquant_quality_to_mse(80), 3)
    6.09
    >>> pngquant_quality_to_mse(100)
    0.0
    """
    q = int(quality)
    if not 0 <= q <= 100:
        raise InvalidParameterError(f"quality={quality!r}: pngquant's quality is in 0..100")
    if q == 0:
        return 1e20 * 65536.0 / 6.0 / _LIQ_WEIGHT_MSE
    if q >= 100:
        return 0.0
    fudge = max(0.016 / (0.001 + q) - 0.001, 0.0)
    unit = fudge + 2.5 / (210.0 + q) ** 1.2 * (100.1 - q) / 100.0
    internal = _LIQ_WEIGHT_MSE * unit
    return internal * 65536.0 / 6.0 / _LIQ_WEIGHT_MSE


def pngquant_quality_to_psnr(quality: int, peak: float = 255.0) -> float:
    """pngquant's quality (0-100) as a PSNR in dB: ``10 log10(peak**2 / mse)`` of :func:`pngquant_quality_to_mse`.

    100 is infinite (an exact image); 0 is below any image (no floor).

    Examples
    --------
    >>> round(pngquant_quality_to_psnr(65), 2), round(pngquant_quality_to_psnr(80), 2)
    (37.59, 40.28)
    """
    mse = pngquant_quality_to_mse(quality)
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _parse_pngquant(quality: str) -> QualityTarget:
    """pngquant's ``MIN-MAX`` (or ``MIN-``, MAX 100) on its 0-100 scale, as PSNR in dB."""
    left, _, right = quality.partition("-")
    try:
        low, high = int(left), (100 if right == "" else int(right))
    except ValueError:
        raise InvalidParameterError(
            f"quality={quality!r} must look like 'MIN-MAX' (pngquant's 0-100 scale) or 'MIN:TARGETdB' (PSNR)"
        ) from None
    if not 0 <= low <= high <= 100:
        raise InvalidParameterError(f"quality={quality!r}: pngquant's MIN-MAX needs 0 <= MIN <= MAX <= 100")
    minimum = None if low == 0 else pngquant_quality_to_psnr(low)
    return QualityTarget(pngquant_quality_to_psnr(high), minimum, (low, high))


def parse_quality(quality: Any) -> QualityTarget | None:
    """Read ``quality``: a PSNR target (number), ``(minimum, target)``, ``"MIN:TARGET"`` / ``"TARGET"`` (dB,
    optionally with a ``dB`` suffix: ``"30:40dB"``), or pngquant's ``"MIN-MAX"`` / ``"MIN-"`` on its 0-100 scale
    (converted to dB by :func:`pngquant_quality_to_psnr`; MIN 0: no floor).

    Raises
    ------
    InvalidParameterError
        Not a positive number, or a minimum above the target.

    Examples
    --------
    >>> parse_quality("30:40")
    QualityTarget(target=40.0, minimum=30.0)
    >>> parse_quality(35)
    QualityTarget(target=35.0, minimum=None)
    >>> parse_quality("65-80").pngquant
    (65, 80)
    """
    if quality is None:
        return None
    minimum: Any = None
    target: Any = quality
    if isinstance(quality, str):
        text = quality.strip()
        if text.lower().endswith("db"):
            text = text[:-2].strip()
        elif "-" in text[1:] and ":" not in text:
            return _parse_pngquant(text)
        parts = text.split(":")
        if len(parts) > 2:
            raise InvalidParameterError(f"quality={quality!r} must look like 'TARGET' or 'MIN:TARGET' (PSNR in dB)")
        minimum, target = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    elif isinstance(quality, (tuple, list)):
        if len(quality) != 2:
            raise InvalidParameterError(f"quality={quality!r} must be a PSNR target or (minimum, target)")
        minimum, target = quality
    try:
        target_db = float(target)
        minimum_db = None if minimum in (None, "") else float(minimum)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"quality={quality!r} must be PSNR values in dB") from None
    if not (math.isfinite(target_db) and target_db > 0):
        raise InvalidParameterError(f"quality={quality!r}: the PSNR target must be a positive number of dB")
    if minimum_db is not None and not (math.isfinite(minimum_db) and 0 < minimum_db <= target_db):
        raise InvalidParameterError(f"quality={quality!r}: the minimum must be positive and at most the target")
    return QualityTarget(target_db, minimum_db)


@dataclass
class KSearch:
    """The outcome of :func:`search_k`.

    Attributes
    ----------
    k : int
        The chosen number of colours.
    psnr : float
        Its PSNR in dB.
    met : bool
        Whether it reaches the target (else it is the best k tried, at ``k_max``).
    tried : dict
        PSNR of every k fitted.
    fit : Any
        What ``fit_k`` returned for ``k``.
    """

    k: int
    psnr: float
    met: bool
    tried: dict[int, float] = field(default_factory=dict)
    fit: Any = None


def search_k(
    fit_k: Callable[[int], tuple[Any, float]],
    quality: QualityTarget,
    *,
    n_values: int,
    peak: float,
    k_max: int,
) -> KSearch:
    """The smallest k whose fit reaches the PSNR target.

    Parameters
    ----------
    fit_k : callable
        ``fit_k(k) -> (fit, squared_error)``: fits k colours and returns the
        summed squared error of the image written with them.
    quality : QualityTarget
    n_values : int
        Number of values compared (pixels times channels).
    peak : float
        Largest value of the data type (255 for uint8).
    k_max : int
        Most colours allowed (what the output can index, or the number of
        distinct colours).

    Returns
    -------
    KSearch
        With ``met=False`` when even ``k_max`` misses the target (and is above
        the floor): the best the output allows.

    Raises
    ------
    QualityError
        The best k allowed stays below the floor ``quality.minimum``.
    """
    fits: dict[int, tuple[Any, float]] = {}

    def psnr_of(k: int) -> float:
        if k not in fits:
            fit, error = fit_k(k)
            value = math.inf if error <= 0 else 10.0 * math.log10(peak * peak * n_values / error)
            fits[k] = (fit, value)
            logger.info("quality search: k=%d gives %.3f dB (target %.3f dB)", k, value, quality.target)
        return fits[k][1]

    k_max = max(1, int(k_max))
    lo, hi = 0, None  # psnr(lo) misses the target (0: no k tried), psnr(hi) meets it
    k = 1
    while True:  # 1, 2, 4, 8, ... k_max
        if psnr_of(k) >= quality.target:
            hi = k
            break
        lo = k
        if k >= k_max:
            break
        k = min(2 * k, k_max)
    tried = lambda: {kk: v for kk, (_, v) in sorted(fits.items())}  # noqa: E731
    if hi is None:
        best = fits[k_max][1]
        if quality.minimum is not None and best < quality.minimum:
            raise QualityError(
                f"quality: {k_max} colours reach {best:.2f} dB, below the minimum {quality.minimum:g} dB; "
                "nothing written"
            )
        logger.warning("quality: %d colours reach %.2f dB, short of the %.2f dB target", k_max, best, quality.target)
        return KSearch(k_max, best, False, tried(), fits[k_max][0])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if psnr_of(mid) >= quality.target:
            hi = mid
        else:
            lo = mid
    return KSearch(hi, fits[hi][1], True, tried(), fits[hi][0])


def peak_value(dtype: np.dtype) -> float:
    """The largest value of an integer dtype (the PSNR's peak)."""
    return float(np.iinfo(np.dtype(dtype)).max)
