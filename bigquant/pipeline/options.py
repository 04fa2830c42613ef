"""The option model: every option of quantize, quantize_many, sweep and the command line, grouped.

Each option belongs to one group, a frozen dataclass that keeps the options
with what they configure (as rasterio's profiles and pyvips' per-saver
options do); :data:`ENTRY_GROUPS` says which groups each entry point takes.
The checks are :mod:`bigquant.pipeline.request`'s; this module imports
nothing heavy, so the command line can spell its options and its errors
without loading the pipeline.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ReadOptions", "FitOptions", "MapOptions", "WriteOptions", "ReportOptions", "SetOptions", "SweepOptions",
    "GROUPS", "ENTRY_GROUPS", "PYTHON_ONLY", "DEFAULT_SEED", "option_names", "signature_of", "seed_of",
]

#: the seed of ``random_state=None`` in quantize, quantize_many, sweep and the command line: the same
#: command twice writes the same bytes (the estimators keep scikit-learn's meaning: fresh randomness)
DEFAULT_SEED = 0
@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How the inputs are read (see :func:`bigquant.read_image` and :func:`bigquant.quantize`)."""

    chunks: Any = None
    level: int = 0
    series: int | None = None
    mask: Any = None
    #: ``mask="auto"``'s tissue threshold in OD units (:func:`bigquant.pipeline.tissue.detect_tissue`); None: Otsu's
    mask_threshold: float | None = None
    alpha: str = "auto"


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """How the palette is found: fitted (k, or a quality target) or given."""

    n_clusters: int | None = None
    palette: Any = None
    quality: Any = None
    strategy: str = "auto"
    space: str = "rgb"
    random_state: Any = None
    init: Any = "k-means++"
    n_init: int = 1
    max_iter: int = 300
    tol: float = 1e-4
    persist: Any = "auto"
    split_every: int = 8
    callback: Any = None
    checkpoint: Any = None
    checkpoint_every: int = 10

    def kmeans_params(self) -> dict[str, Any]:
        """The :class:`bigquant.KMeans` parameters besides ``n_clusters`` (random_state None: :data:`DEFAULT_SEED`)."""
        names = ("strategy", "random_state", "init", "n_init", "max_iter", "tol", "persist", "split_every",
                 "callback", "checkpoint", "checkpoint_every")
        params = {name: getattr(self, name) for name in names}
        params["random_state"] = seed_of(self.random_state)
        return params


def seed_of(random_state: Any) -> Any:
    """The seed an entry point fits with: ``random_state``, or :data:`DEFAULT_SEED` for None.

    Examples
    --------
    >>> seed_of(None), seed_of(7)
    (0, 7)
    """
    return DEFAULT_SEED if random_state is None else random_state


@dataclasses.dataclass(frozen=True)
class MapOptions:
    """How pixels are mapped to the palette: nearest colour, or dithered.

    ``scratch``: where temporaries the workers share go (the Floyd--Steinberg
    label spool, and the decoded tiles of a compressed TIFF kept from the fit
    for the write): a local directory or a URL prefix (``s3://bucket/tmp``; no
    pixel spool there); None: beside a local output, or the client's temp dir
    for a URL output (:func:`bigquant.pipeline.dither.label_spool`,
    :func:`bigquant.io.spool.pixel_spool`).
    """

    dither: str | None = None
    dither_strength: float = 0.9
    scratch: str | os.PathLike[str] | None = None


@dataclasses.dataclass(frozen=True)
class WriteOptions:
    """How the quantized image is written (see :func:`bigquant.write_image`)."""

    mode: str = "palette"
    tile: int = 512
    compression: str | None = "zlib"
    pyramid: bool | int = False
    overviews: bool | int = False
    cog: bool = False
    nodata_index: int | None = None
    rgb_bands: Sequence[int] | None = None
    display_range: Any = None
    display_palette: Any = None
    rat: bool = True
    overwrite: bool = False
    #: codec level (None: the writer's fast default); see :func:`bigquant.write_image`
    compression_level: int | None = None
    #: copy the input's metadata (georeferencing, pixel size, scan fields, ICC profile) to the output
    metadata: bool = True
    #: bits a palette TIFF's index takes (GDAL's NBITS): None the fewest that hold the palette (1, 2, 4 packed;
    #: 8; 16), 8 one byte an index for readers without packed samples; see :func:`bigquant.write_image`
    nbits: int | None = None


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """What is written besides the image: palette file, preview, comparison, quality measure."""

    palette_out: str | os.PathLike[str] | None = None
    preview: str | os.PathLike[str] | None = None
    compare: str | os.PathLike[str] | None = None
    measure: bool | None = None


@dataclasses.dataclass(frozen=True)
class SetOptions:
    """A set of images with one palette (:func:`bigquant.quantize_many`)."""

    suffix: str = ".tif"
    weight: str = "pixels"
    keep_going: bool = False


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """A sweep over k (:func:`bigquant.sweep`); ``ks`` is the sweep's own positional argument."""

    out: str | os.PathLike[str] | None = None
    resume_from: str | os.PathLike[str] | None = None
    callback: Any = None


#: every option group by name
GROUPS: dict[str, type] = {
    "read": ReadOptions, "fit": FitOptions, "map": MapOptions, "write": WriteOptions,
    "report": ReportOptions, "set": SetOptions, "sweep": SweepOptions,
}
#: the groups each entry point takes
ENTRY_GROUPS: dict[str, tuple[str, ...]] = {
    "quantize": ("read", "fit", "map", "write", "report"),
    "quantize_many": ("read", "fit", "map", "write", "report", "set"),
    "sweep": ("read", "fit", "write", "sweep"),
}
#: the options of a group an entry point does not take: a sweep fits every k of its own and writes
#: no image (of the write group it takes ``overwrite``, for its CSV)
_EXCLUDED: dict[str, dict[str, tuple[str, ...]]] = {
    "sweep": {
        "read": ("alpha",),
        "fit": ("n_clusters", "palette", "quality", "init", "persist", "split_every", "callback", "checkpoint",
                "checkpoint_every"),
        "write": tuple(f.name for f in dataclasses.fields(WriteOptions) if f.name != "overwrite"),
    },
}
#: options that are Python objects or tuning knobs: the command line does not spell them
PYTHON_ONLY = frozenset({"chunks", "init", "persist", "split_every", "callback", "checkpoint", "checkpoint_every"})


def option_names(entry: str) -> dict[str, str]:
    """The options ``entry`` takes, each with its group's name.

    Examples
    --------
    >>> option_names("sweep")["space"]
    'fit'
    """
    names: dict[str, str] = {}
    for group in ENTRY_GROUPS[entry]:
        for f in dataclasses.fields(GROUPS[group]):
            if f.name in _EXCLUDED.get(entry, {}).get(group, ()):
                continue
            names.setdefault(f.name, group)
    return names


def _defaults(entry: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, group in option_names(entry).items():
        field = {f.name: f for f in dataclasses.fields(GROUPS[group])}[name]
        out[name] = field.default
    return out


def signature_of(entry: str, leading: Sequence[inspect.Parameter]) -> inspect.Signature:
    """The signature an entry point shows: its positional arguments, then every option as keyword-only."""
    params = list(leading)
    taken = {p.name for p in params}
    for name, default in _defaults(entry).items():
        if name not in taken:
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature(params)
