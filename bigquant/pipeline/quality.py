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

__all__ = ["QualityTarget", "parse_quality", "search_k", "KSearch"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityTarget:
    """A PSNR target in dB and an optional floor (``minimum <= target``)."""

    target: float
    minimum: float | None = None


def parse_quality(quality: Any) -> QualityTarget | None:
    """Read ``quality``: a PSNR target (number), ``(minimum, target)``, or ``"MIN:TARGET"`` / ``"TARGET"``.

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
    """
    if quality is None:
        return None
    minimum: Any = None
    target: Any = quality
    if isinstance(quality, str):
        parts = quality.split(":")
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
