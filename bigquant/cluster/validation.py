"""Checks of user input shared by the estimators: data, weights, parameters."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from bigquant.errors import ComplexInputError, InputTypeError, InvalidInputError, InvalidParameterError

__all__ = [
    "Data",
    "check_data",
    "check_sample_weight",
    "check_int",
    "check_float",
    "check_choice",
    "check_random_state",
    "label_dtype",
    "check_init",
]


@dataclass
class Data:
    """Validated input: the array and how its axes are laid out.

    ``array`` is (n_samples, C) for ``layout == "samples"`` and (H, W, C) for
    ``layout == "image"``; ``spatial_shape`` is ``array.shape[:-1]``.
    """

    array: np.ndarray | da.Array
    layout: str

    @property
    def is_dask(self) -> bool:
        """Whether the array is lazy."""
        return isinstance(self.array, da.Array)

    @property
    def n_channels(self) -> int:
        """Number of channels (features)."""
        return int(self.array.shape[-1])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the labels: (n_samples,) or (H, W)."""
        return tuple(int(s) for s in self.array.shape[:-1])

    @property
    def n_samples(self) -> int:
        """Number of points (pixels)."""
        return int(np.prod(self.spatial_shape))

    def flat(self) -> np.ndarray:
        """The numpy data as (n_samples, C) (numpy input only)."""
        return np.ascontiguousarray(self.array).reshape(-1, self.n_channels)


def check_data(X: Any, *, name: str = "X") -> Data:
    """Validate ``X``: a 2-D (n_samples, n_channels) or 3-D image (H, W, C) array.

    Raises
    ------
    InputTypeError
        For unsupported types (sparse matrices) or dtypes (bool, complex, object, strings);
        complex data raise :class:`~bigquant.errors.ComplexInputError`, also a ``ValueError``.
    InvalidInputError
        For a wrong number of dimensions or an empty array.
    """
    if type(X).__module__.startswith("scipy.sparse"):
        raise InputTypeError(
            f"{name} is a scipy sparse {type(X).__name__}: sparse input is not supported; pass a dense array"
        )
    if isinstance(X, da.Array):
        arr = X
    elif isinstance(X, np.ndarray):
        arr = X
    elif hasattr(X, "__array__") or isinstance(X, (list, tuple)):
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as exc:
            raise InputTypeError(f"{name} could not be converted to an array: {exc}") from None
    else:
        raise InputTypeError(
            f"{name} must be a numpy or dask array, got {type(X).__name__}"
        )
    if arr.dtype.kind == "c":
        raise ComplexInputError(
            f"Complex data not supported: {name} has dtype={arr.dtype}; expected an integer or floating point dtype"
        )
    if arr.dtype.kind not in "uif":
        raise InputTypeError(
            f"{name} has dtype={arr.dtype}; expected an integer or floating point dtype"
        )
    if arr.ndim not in (2, 3):
        raise InvalidInputError(
            f"{name} must be 2-D (n_samples, n_channels) or 3-D (height, width, channels), "
            f"got {arr.ndim}-D with shape {arr.shape}. Reshape your data: X.reshape(-1, 1) for one "
            "channel, X.reshape(1, -1) for one sample"
        )
    if int(arr.shape[-1]) == 0:
        raise InvalidInputError(
            f"{name} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if any(int(s) == 0 for s in arr.shape):
        raise InvalidInputError(f"{name} is empty: shape {arr.shape}")
    if isinstance(arr, np.ndarray) and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidInputError(f"{name} contains NaN or infinity")
    if isinstance(arr, da.Array) and arr.numblocks[-1] != 1:
        arr = arr.rechunk({arr.ndim - 1: -1})
    return Data(arr, "samples" if arr.ndim == 2 else "image")


def check_sample_weight(sample_weight: Any, data: Data) -> np.ndarray | da.Array | None:
    """Validate weights: one non-negative finite number per sample, or ``None``.

    Weights may be given flat (n_samples,) or in the image's spatial shape
    (H, W). Dask weights are checked for negative values during the first pass.
    """
    if sample_weight is None:
        return None
    shape = data.spatial_shape
    if isinstance(sample_weight, da.Array):
        w = sample_weight
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(shape, float(w))
    if w.shape != shape:
        if int(np.prod(w.shape)) == data.n_samples and w.ndim == 1:
            w = w.reshape(shape)
        else:
            raise InvalidInputError(
                f"sample_weight has shape {w.shape}; expected {shape} "
                f"(one weight per sample of X)"
            )
    if isinstance(w, np.ndarray):
        if not np.isfinite(w).all():
            raise InvalidInputError("sample_weight contains NaN or infinity")
        if (w < 0).any():
            raise InvalidInputError("sample_weight must be non-negative; found negative values")
        if w.sum() <= 0:
            raise InvalidInputError("sample_weight sums to zero")
    if data.is_dask:
        w = da.asarray(w, chunks=data.array.chunks[:-1]) if not isinstance(w, da.Array) else w
        w = w.astype(np.float64).rechunk(data.array.chunks[:-1])
    return w


def check_mask(sample_weight: Any, data: Data) -> np.ndarray | da.Array | None:
    """A boolean ``sample_weight`` as a mask in the spatial shape, else ``None``.

    A boolean weight is a weight of 0 or 1 that also keeps the exact colour
    histogram usable: pixels where it is False are simply not counted.
    """
    if sample_weight is None or np.dtype(getattr(sample_weight, "dtype", object)) != np.bool_:
        return None
    shape = data.spatial_shape
    mask = sample_weight if isinstance(sample_weight, da.Array) else np.asarray(sample_weight)
    if mask.shape != shape:
        if mask.ndim == 1 and mask.shape[0] == data.n_samples:
            mask = mask.reshape(shape)
        else:
            raise InvalidInputError(
                f"sample_weight (a mask) has shape {mask.shape}; expected {shape} (one value per sample of X)"
            )
    if isinstance(mask, np.ndarray) and not mask.any():
        raise InvalidInputError("every sample is masked: sample_weight is False everywhere")
    if data.is_dask:
        mask = (mask if isinstance(mask, da.Array) else da.asarray(mask)).rechunk(data.array.chunks[:-1])
    return mask


def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """An integer parameter (not bool), optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidParameterError(f"{name}={value!r} must be an integer")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InvalidParameterError(f"{name}={value} must be >= {minimum}")
    return value


def check_float(value: Any, name: str, *, minimum: float | None = None) -> float:
    """A real-number parameter, optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise InvalidParameterError(f"{name}={value!r} must be a finite number")
    value = float(value)
    if minimum is not None and value < minimum:
        raise InvalidParameterError(f"{name}={value} must be >= {minimum}")
    return value


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """A string parameter among ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise InvalidParameterError(f"{name}={value!r} is not one of {options}")
    return value


def check_random_state(seed: Any) -> np.random.Generator:
    """A numpy Generator from None, an int, a Generator or a RandomState."""
    if seed is None or isinstance(seed, (numbers.Integral, np.integer)) and not isinstance(seed, bool):
        if seed is not None and int(seed) < 0:
            raise InvalidParameterError(f"random_state={seed} must be >= 0")
        return np.random.default_rng(None if seed is None else int(seed))
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.RandomState):
        return np.random.default_rng(seed.randint(0, 2**31 - 1))
    raise InvalidParameterError(
        f"random_state={seed!r} must be None, an int, or a numpy Generator/RandomState"
    )


def check_init(init: Any, n_clusters: int, n_channels: int, methods: tuple[str, ...]) -> np.ndarray | None:
    """Validate ``init``: a method name (returns ``None``) or an array of centres."""
    if isinstance(init, str):
        check_choice(init, "init", methods)
        return None
    if hasattr(init, "__array__"):
        centres = np.asarray(init, dtype=np.float64)
        expected = (n_clusters, n_channels)
        if centres.shape != expected:
            raise InvalidParameterError(
                f"init array has shape {centres.shape}; expected (n_clusters, n_channels) = {expected}"
            )
        if not np.isfinite(centres).all():
            raise InvalidParameterError("init array contains NaN or infinity")
        return centres
    raise InvalidParameterError(
        f"init={init!r} must be one of {', '.join(map(repr, methods))} or an array"
    )


def label_dtype(n_clusters: int) -> np.dtype:
    """Smallest unsigned dtype that holds labels 0..n_clusters-1."""
    if n_clusters <= 256:
        return np.dtype(np.uint8)
    if n_clusters <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)
