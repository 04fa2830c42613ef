"""The exception and warning family of bigquant.

Every error bigquant raises on purpose derives from :class:`BigquantError`
and from the matching built-in (``ValueError``, ``TypeError`` or ``OSError``),
so callers can catch either.
"""

from __future__ import annotations

import sys
from functools import lru_cache

__all__ = [
    "BigquantError",
    "InvalidParameterError",
    "InvalidInputError",
    "InputTypeError",
    "ComplexInputError",
    "ImageReadError",
    "ImageWriteError",
    "NotFittedError",
    "not_fitted",
    "ClusterConnectionError",
    "QualityError",
    "BigquantWarning",
    "ConvergenceWarning",
    "FewColoursWarning",
]


class BigquantError(Exception):
    """Base class of every error raised by bigquant."""


class InvalidParameterError(BigquantError, ValueError):
    """A parameter has a value outside its allowed range or set."""


class InvalidInputError(BigquantError, ValueError):
    """The data given (array, image) is unusable: wrong shape, empty, NaN..."""


class InputTypeError(BigquantError, TypeError):
    """The data or a parameter has an unsupported type or dtype."""


class ComplexInputError(InputTypeError, ValueError):
    """Complex data: an unsupported dtype (``TypeError``), and the ``ValueError`` scikit-learn raises for it."""


class ImageReadError(BigquantError, OSError):
    """An image file is missing, unreadable, corrupt or of an unsupported kind."""


class ImageWriteError(BigquantError, OSError):
    """An output image cannot be written (exists, bad directory, codec...)."""


class NotFittedError(BigquantError, ValueError, AttributeError):
    """An estimator method needing a fitted model was called before ``fit``."""


@lru_cache(maxsize=None)
def _with_sklearn_base(base: type) -> type:
    """bigquant's NotFittedError that is also scikit-learn's (one class per base)."""
    return type("NotFittedError", (NotFittedError, base), {"__module__": __name__, "__doc__": NotFittedError.__doc__})


def not_fitted(message: str) -> NotFittedError:
    """A :class:`NotFittedError` to raise; also scikit-learn's ``NotFittedError`` when scikit-learn is loaded.

    scikit-learn is never imported here: code that catches
    ``sklearn.exceptions.NotFittedError`` has imported it already, and then the
    error is an instance of both classes.
    """
    sk = sys.modules.get("sklearn.exceptions")
    base = getattr(sk, "NotFittedError", None)
    if isinstance(base, type) and issubclass(base, Exception) and not issubclass(NotFittedError, base):
        return _with_sklearn_base(base)(message)
    return NotFittedError(message)


class ClusterConnectionError(BigquantError, OSError):
    """A Dask scheduler could not be reached in time."""


class QualityError(BigquantError, ValueError):
    """The quality asked for (a minimum PSNR) cannot be reached; nothing is written."""


class BigquantWarning(UserWarning):
    """Base class of every warning emitted by bigquant."""


class ConvergenceWarning(BigquantWarning):
    """A fit did not converge (Lloyd's iteration stopped at ``max_iter``) or found fewer clusters than asked."""


class FewColoursWarning(ConvergenceWarning):
    """The data holds fewer distinct colours than the requested ``n_clusters``.

    A :class:`ConvergenceWarning`, as scikit-learn's warning for the same case
    ("Number of distinct clusters (n) found smaller than n_clusters (k)"): a
    filter on either class catches it.
    """
