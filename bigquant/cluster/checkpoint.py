"""Checkpoints of a long fit: centres and iteration, saved atomically, resumed exactly.

Lloyd's iteration is deterministic given the centres, so a fit resumed from
the centres of iteration *i* follows the same path as an uninterrupted one and
ends with the same result. A checkpoint also records the random generator's
state at the start of the run and the best run so far (``n_init > 1``), and a
fingerprint of the data and parameters: a checkpoint of another fit is
ignored, never resumed by mistake.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bigquant.errors import InvalidParameterError

__all__ = ["Checkpoint"]

logger = logging.getLogger(__name__)

_VERSION = 1


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class Checkpoint:
    """A JSON checkpoint file for one fit.

    Parameters
    ----------
    path : str or Path
        The checkpoint file. Its directory must exist.
    every : int
        Save after every ``every`` Lloyd iterations (and at the end of each run).
    fingerprint : dict
        What identifies the fit (data shape, dtype, parameters...).
    """

    def __init__(self, path: str | os.PathLike, every: int, fingerprint: dict[str, Any]):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise InvalidParameterError(
                f"checkpoint={str(path)!r}: directory {str(self.path.parent)!r} does not exist"
            )
        self.every = every
        self.fingerprint = json.loads(json.dumps(_encode(fingerprint)))

    def load(self) -> dict[str, Any] | None:
        """The saved state if the file exists and belongs to this fit, else ``None``."""
        try:
            with open(self.path, encoding="utf-8") as f:
                saved = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable checkpoint %s: %s", self.path, exc)
            return None
        if saved.get("version") != _VERSION or saved.get("fingerprint") != self.fingerprint:
            logger.warning("ignoring checkpoint %s: it belongs to another fit", self.path)
            return None
        logger.info("resuming from checkpoint %s", self.path)
        return _decode(saved["state"])

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically (temporary file + rename)."""
        payload = {"version": _VERSION, "fingerprint": self.fingerprint, "state": _encode(state)}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def clear(self) -> None:
        """Remove the checkpoint (after a completed fit)."""
        self.path.unlink(missing_ok=True)
