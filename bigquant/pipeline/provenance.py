"""What a result is of: the inputs (and how they were read and fitted), recorded to be compared.

A sweep's CSV carries this record in its ``provenance`` column, so that
``resume`` continues a sweep only of the same image(s) with the same seed,
colour space, strategy, mask and bands (:func:`check_same`).  Files are known
by path, size and modification time (no pixel is read to compare them);
arrays and histograms by a digest of their bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bigquant.errors import InvalidInputError
from bigquant.io.files import is_url

__all__ = ["identity", "record", "check_same", "RECORD_KEYS"]

#: what a record holds, in the order a difference is named
RECORD_KEYS = ("inputs", "bands", "series", "level", "mask", "mask_threshold", "space", "strategy", "seed")


def _digest(*arrays: Any) -> str:
    h = hashlib.sha1()
    for arr in arrays:
        a = np.ascontiguousarray(np.asarray(arr))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def identity(item: Any) -> dict[str, Any] | str | None:
    """A comparable description of an input, mask or histogram (no pixel of a file is read).

    Local files: absolute path, size and modification time (ns); URLs: the
    URL; numpy arrays and histograms: a digest of their bytes; dask arrays:
    their name (a token of their graph); ``None``, ``False`` and strings such
    as ``"auto"`` as they are.
    """
    if item is None or item is False or isinstance(item, bool):
        return None if item is None else str(item)
    path = getattr(item, "path", None)
    if path is not None and not isinstance(item, (str, os.PathLike)):  # an ImageSource of a file
        return identity(path)
    if isinstance(item, (str, os.PathLike)):
        text = os.fspath(item)
        if text == "auto":
            return "auto"
        if text.startswith("file://"):
            text = text[len("file://"):]
        elif is_url(text):
            return {"url": text}
        p = pathlib.Path(text).expanduser().resolve()
        try:
            st = p.stat()
        except OSError:
            return {"path": str(p)}
        return {"path": str(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    codes = getattr(item, "codes", None)
    if codes is not None and hasattr(item, "counts"):  # a ColourHistogram
        return {"histogram": _digest(item.colours, item.counts)}
    data = item if isinstance(item, np.ndarray) else getattr(item, "data", item)
    name = getattr(data, "name", None)
    if hasattr(data, "dask") and isinstance(name, str):
        return {"dask": name}
    if isinstance(data, np.ndarray):
        return {"array": _digest(data)}
    return {"object": type(item).__name__}


def record(inputs: Sequence[Any], *, bands: int | None, series: int | None, level: int, mask: Any, space: str,
           strategy: str, seed: int, mask_threshold: float | None = None) -> dict[str, Any]:
    """The provenance record of a result (see the module docstring)."""
    return {
        "inputs": [identity(i) for i in inputs],
        "bands": bands,
        "series": series,
        "level": level,
        "mask": identity(mask),
        "mask_threshold": mask_threshold,
        "space": space,
        "strategy": strategy,
        "seed": seed,
    }


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_describe(v) for v in value)
    if isinstance(value, dict):
        if "path" in value:
            extra = f" ({value['size']} bytes)" if "size" in value else ""
            return f"{value['path']}{extra}"
        return json.dumps(value, sort_keys=True)
    return repr(value)


def check_same(where: str, recorded: Mapping[str, Any] | None, current: Mapping[str, Any],
               ignore: Sequence[str] = ()) -> None:
    """Raise unless ``recorded`` is a record of the same thing as ``current``.

    Raises
    ------
    InvalidInputError
        No record (written by an older version), or a record of something
        else: the message names every difference.
    """
    if not recorded:
        raise InvalidInputError(
            f"{where} does not record what it is of (written by an older bigquant?): it cannot be resumed; "
            "start again with overwrite"
        )
    different = [key for key in RECORD_KEYS if key not in ignore and recorded.get(key) != current.get(key)]
    if different:
        details = "; ".join(f"{key}: {_describe(recorded.get(key))} there, {_describe(current.get(key))} now"
                            for key in different)
        raise InvalidInputError(f"{where} is a result of another job ({details}): it cannot be resumed")
