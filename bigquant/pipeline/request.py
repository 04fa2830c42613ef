"""One request: what the user asked, built once, checked in full before a pixel is read.

:func:`bigquant.quantize`, :func:`bigquant.quantize_many`, :func:`bigquant.sweep`
and the ``bigquant`` command take the same options under the same names.  Each
option belongs to one group, a frozen dataclass that keeps the options with
what they configure (as rasterio's profiles and pyvips' per-saver options do):

=========  ==============================================================
group      options
=========  ==============================================================
read       ``chunks``, ``level``, ``series``, ``mask``, ``mask_threshold``,
           ``alpha``
fit        ``n_clusters``, ``palette``, ``quality``, ``strategy``, ``space``,
           ``random_state``, ``init``, ``n_init``, ``max_iter``, ``tol`` and
           the other :class:`bigquant.KMeans` parameters
map        ``dither``, ``dither_strength``, ``scratch``
write      ``mode``, ``tile``, ``compression``, ``compression_level``,
           ``pyramid``, ``overviews``, ``cog``, ``nodata_index``,
           ``rgb_bands``, ``display_range``, ``display_palette``, ``rat``,
           ``metadata``, ``overwrite``
report     ``palette_out``, ``preview``, ``compare``, ``measure``
set        ``suffix``, ``weight``, ``keep_going`` (:func:`bigquant.quantize_many`)
sweep      ``out``, ``resume_from``, ``callback`` (:func:`bigquant.sweep`; of the
           write group it takes ``overwrite``, of the fit group what fits each k,
           of the read group all but ``alpha``: a sweep reads alpha as a mask)
=========  ==============================================================

:func:`build_request` turns an entry point's options into a :class:`Request`
(unknown names are one error naming the closest option);
:func:`check_request` checks everything that needs no input opened (values,
output formats and their capacity, output paths); :func:`check_sources` checks
the rest against the opened inputs' metadata (same file in and out, bands,
types, sizes, palette files, masks).  The pipeline then runs the request and
re-checks nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bigquant._typing import STRATEGIES
from bigquant.errors import ImageWriteError, InvalidParameterError
from bigquant.io.atomic import check_target
from bigquant.io.encode import resolve_codec
from bigquant.io import files
from bigquant.io.files import is_url
from bigquant.io.metadata import check_ome_layout
from bigquant.io.objects import URLPath, output_location, same_location
from bigquant.io.palette import MAX_PALETTE, NBITS, index_bits
from bigquant.io.palette_file import palette_format
from bigquant.io.rat import rat_fits, rat_path
from bigquant.io.write import FORMATS, check_tile
from bigquant.pipeline.alpha import alpha_blocker, check_alpha
from bigquant.pipeline.display import DisplayPalette, load_display_palette, parse_display_range
from bigquant.pipeline.dither import check_dither
from bigquant.pipeline.quality import QualityTarget, parse_quality
from bigquant.pipeline.options import (
    DEFAULT_SEED,
    ENTRY_GROUPS,
    GROUPS,
    PYTHON_ONLY,
    FitOptions,
    MapOptions,
    ReadOptions,
    ReportOptions,
    SetOptions,
    SweepOptions,
    WriteOptions,
    option_names,
    seed_of,
    signature_of,
)
from bigquant.pipeline.space import check_space

__all__ = [
    "ReadOptions", "FitOptions", "MapOptions", "WriteOptions", "ReportOptions", "SetOptions", "SweepOptions",
    "Request", "GROUPS", "ENTRY_GROUPS", "PYTHON_ONLY", "option_names", "build_request", "check_request",
    "check_sources", "signature_of", "display_bands", "apply_signature", "check_not_inputs", "local_path", "PNG_PALETTE_MAX", "pillow_pixel_limit",
    "DEFAULT_SEED", "seed_of", "warn_lossy_output",
]

logger = logging.getLogger(__name__)

#: colours a palette PNG holds
PNG_PALETTE_MAX = 256
#: colours each palette file format holds (None: any number)
_PALETTE_FILE_MAX = {"json": None, "gpl": None, "act": 256, "swatch": None}


@dataclasses.dataclass(frozen=True)
class Request:
    """One job, as asked: inputs, outputs and every option, grouped.

    Attributes
    ----------
    entry : {"quantize", "quantize_many", "sweep"}
        The entry point that built it.
    inputs : tuple
        The images (paths, URLs, arrays, sources).
    outputs : tuple of pathlib.Path or URLPath
        The image written for each input (empty for a sweep); a URL is a
        :class:`bigquant.io.objects.URLPath`.
    read, fit, map, write, report, set, sweep : option groups
        See the module docstring.
    target : QualityTarget or None
        ``fit.quality``, parsed.
    """

    entry: str
    inputs: tuple[Any, ...]
    outputs: tuple[pathlib.Path | URLPath, ...]
    read: ReadOptions
    fit: FitOptions
    map: MapOptions = MapOptions()
    write: WriteOptions = WriteOptions()
    report: ReportOptions = ReportOptions()
    set: SetOptions = SetOptions()
    sweep: SweepOptions = SweepOptions()
    target: QualityTarget | None = None

    @property
    def extra_outputs(self) -> list[pathlib.Path | URLPath]:
        """Files written besides the images: palette, preview, comparison, sweep CSV."""
        paths = [self.report.palette_out, self.report.preview, self.report.compare, self.sweep.out]
        return [output_location(p) for p in paths if p is not None]

    @property
    def sidecars(self) -> list[pathlib.Path]:
        """The raster attribute tables written beside palette TIFF outputs (``rat``; ``<image>.aux.xml``).

        Each is checked with the image it belongs to (a set's folder may not
        exist yet); see :mod:`bigquant.io.rat`.
        """
        if not self.write.rat or self.write.mode != "palette" or self.entry == "sweep":
            return []
        return [rat_path(p) for p in self.outputs if FORMATS.get(p.suffix.lower()) == "tiff" and rat_fits(p)]

    @property
    def limit(self) -> int:
        """The most colours every image output holds."""
        png = any(FORMATS.get(p.suffix.lower()) == "png" for p in self.outputs)
        return PNG_PALETTE_MAX if png and self.write.mode == "palette" else MAX_PALETTE


def build_request(entry: str, inputs: Sequence[Any], outputs: Sequence[Any], options: Mapping[str, Any]) -> Request:
    """Group ``options`` into a :class:`Request` of ``entry`` (no check of the values yet).

    Raises
    ------
    InvalidParameterError
        An option ``entry`` does not take (the message names the closest one,
        or the entry point that takes it).
    """
    known = option_names(entry)
    grouped: dict[str, dict[str, Any]] = {group: {} for group in ENTRY_GROUPS[entry]}
    for name, value in options.items():
        group = known.get(name)
        if group is None:
            raise InvalidParameterError(_unknown_option(entry, name, known))
        grouped[group][name] = value
    made = {group: GROUPS[group](**values) for group, values in grouped.items()}
    fit = made["fit"]
    return Request(
        entry=entry,
        inputs=tuple(inputs),
        outputs=tuple(output_location(p) for p in outputs),
        target=parse_quality(fit.quality),
        **made,
    )


def _unknown_option(entry: str, name: str, known: Mapping[str, str]) -> str:
    """The message for an option ``entry`` does not take."""
    others = [e for e in ENTRY_GROUPS if e != entry and name in option_names(e)]
    if others:
        return f"{name} is not an option of {entry} (it is one of {', '.join(others)})"
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown option {name}{hint} ({entry} takes {', '.join(sorted(known))})"


# --------------------------------------------------------------------------- checks without inputs


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_request(request: Request, *, image_targets: bool = True) -> Request:
    """Check every option and output that needs no input opened; return the request normalised.

    ``image_targets=False`` leaves out whether the image outputs can be
    written where they go (a set's output folder that does not exist yet);
    their formats are checked all the same.

    Raises
    ------
    InvalidParameterError
        A value out of range, options that exclude each other, a k the
        output (or the palette file) cannot hold, a lossy format for labels.
    ImageWriteError
        An output that exists (without ``overwrite``), a directory that
        bigquant did not write at an output path, a missing or read-only
        folder, an unsupported suffix, two outputs at one path.
    """
    fit, write, report = request.fit, request.write, request.report
    k = fit.n_clusters
    _check_mask_threshold(request.read)
    for name in ("n_clusters", "n_init", "max_iter"):
        value = getattr(fit, name)
        if value is None and name == "n_clusters":
            continue
        if not _is_int(value):
            raise InvalidParameterError(f"{name}={value!r} must be an integer")
        if value < 1:
            raise InvalidParameterError(f"{name}={value!r} must be >= 1")
    if fit.strategy not in STRATEGIES:
        raise InvalidParameterError(f"strategy={fit.strategy!r} is not one of {', '.join(map(repr, STRATEGIES))}")
    space = check_space(fit.space)
    if isinstance(fit.tol, bool) or not isinstance(fit.tol, (int, float, np.floating)) or not fit.tol >= 0:
        raise InvalidParameterError(f"tol={fit.tol!r} must be a number >= 0")
    if request.entry != "sweep":
        if fit.palette is not None and request.target is not None:
            raise InvalidParameterError("palette and quality exclude each other: a given palette has its own k")
        if fit.palette is None and request.target is None and k is None:
            raise InvalidParameterError("n_clusters is needed (or a palette to apply, or a quality target)")
        if space != "rgb" and (write.rgb_bands is not None or fit.palette is not None or request.target is not None):
            raise InvalidParameterError(
                f"space={space!r} fits k colours of the 3 colour bands: it takes no rgb_bands, palette or quality"
            )
        if isinstance(fit.palette, (str, os.PathLike)):
            palette_format(fit.palette)
    dither, strength = check_dither(request.map.dither, request.map.dither_strength)
    _check_scratch(request.map.scratch)
    if request.entry != "sweep" and check_alpha(request.read.alpha) == "fit" and request.entry == "quantize_many":
        raise InvalidParameterError(
            "alpha='fit' fits one image's alpha (quantize); a set's shared palette reads alpha as a mask")
    if write.mode not in ("palette", "rgb"):
        raise InvalidParameterError(f"mode={write.mode!r} must be 'palette' or 'rgb'")
    if request.entry != "sweep":
        check_tile(write.tile)
    nodata = write.nodata_index
    if nodata is not None and (not _is_int(nodata) or nodata < 0 or k is not None and nodata < k):
        raise InvalidParameterError(
            f"nodata_index={nodata!r} must be an int outside the palette (>= n_clusters={k})"
        )
    _check_nbits(write, k)
    if request.set.weight not in ("pixels", "image"):
        raise InvalidParameterError(f"weight={request.set.weight!r} must be 'pixels' or 'image'")
    display_range = parse_display_range(write.display_range)
    display_palette = load_display_palette(write.display_palette)
    if display_palette is not None:
        shown = len(display_palette.colours)
        if request.target is not None:
            raise InvalidParameterError(
                f"display_palette={display_palette.source or 'array'} shows {shown} colours, one per class, "
                "but quality= chooses k during the fit: give n_clusters (or a palette) with display_palette")
        if k is not None and fit.palette is None and shown != k:
            raise InvalidParameterError(
                f"display_palette={display_palette.source or 'array'} has {shown} colours but n_clusters={k}: "
                "one colour shown per class")
    for dst in request.outputs:
        _check_image_output(dst, request)
    limit = request.limit
    if k is not None and k > limit and request.entry != "sweep":
        where = ", ".join(sorted({p.suffix or "output" for p in request.outputs}))
        raise InvalidParameterError(
            f"n_clusters={k} is above the {limit} colours a {write.mode} {where} file can hold"
        )
    if report.palette_out is not None:
        fmt = palette_format(report.palette_out)
        most = _PALETTE_FILE_MAX[fmt]
        if most is not None and k is not None and k > most:
            raise InvalidParameterError(
                f"palette_out={report.palette_out}: an .{fmt} palette holds at most {most} colours, not "
                f"n_clusters={k}; use .json"
            )
    if report.preview is not None and pathlib.Path(report.preview).suffix.lower() != ".png":
        raise InvalidParameterError(f"preview={report.preview}: a preview is a .png")
    if report.compare is not None and pathlib.Path(report.compare).suffix.lower() != ".png":
        raise InvalidParameterError(f"compare={report.compare}: the comparison is a .png")
    outputs = list(request.outputs) + request.sidecars + request.extra_outputs
    seen: dict[str, pathlib.Path] = {}
    for out in outputs:
        key = str(out) if isinstance(out, URLPath) else os.path.normcase(os.path.abspath(out))
        if key in seen:
            raise InvalidParameterError(f"two outputs would be written to {out}: every output needs its own path")
        seen[key] = out
    resume = request.sweep.resume_from
    for out in outputs if image_targets else request.extra_outputs:
        same_as_resume = resume is not None and same_location(out, resume)
        check_target(out, overwrite=write.overwrite or same_as_resume)
    return dataclasses.replace(
        request, fit=dataclasses.replace(fit, space=space),
        map=dataclasses.replace(request.map, dither=dither, dither_strength=strength),
        write=dataclasses.replace(write, display_range=display_range, display_palette=display_palette),
    )


def _check_scratch(scratch: Any) -> None:
    """``scratch`` is None, an existing local directory, or a URL bigquant writes."""
    if scratch is None:
        return
    if not isinstance(scratch, (str, os.PathLike)):
        raise InvalidParameterError(f"scratch={scratch!r} must be a directory or a URL prefix")
    where = output_location(scratch)
    if not isinstance(where, URLPath) and not where.is_dir():
        raise InvalidParameterError(f"scratch={scratch}: no such directory")


def warn_lossy_output(request: Request) -> None:
    """Log a warning for each output that will hold more colours than the palette (RGB JPEG).

    Labels and palettes to JPEG are refused (:func:`check_request`); the
    palette's colours per pixel (``mode="rgb"``) are written, but JPEG's lossy
    compression blends them into many more.
    """
    if request.write.mode != "rgb":
        return
    for dst in request.outputs:
        if FORMATS.get(dst.suffix.lower()) == "jpeg":
            logger.warning(
                "%s: JPEG is lossy: the image will hold more colours than the palette's %s (write .png or .tif "
                "for exactly the palette's colours)", dst,
                request.fit.n_clusters if request.fit.palette is None and request.target is None else "k")


def _check_mask_threshold(read: ReadOptions) -> None:
    """``mask_threshold``: None, or a finite number >= 0 with ``mask="auto"``."""
    value = read.mask_threshold
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            0 <= value < float("inf")):
        raise InvalidParameterError(
            f"mask_threshold={value!r} must be a number >= 0 (colour density in OD units, e.g. 0.02) or None")
    if not (isinstance(read.mask, str) and read.mask == "auto"):
        raise InvalidParameterError(
            f"mask_threshold={value!r} is the tissue threshold of mask='auto'; mask is {read.mask!r}")


def _check_nbits(write: Any, k: int | None) -> None:
    """``nbits``: None or one of :data:`bigquant.io.palette.NBITS`, for palette output, holding k (and nodata_index)."""
    nbits = write.nbits
    if nbits is None:
        return
    if isinstance(nbits, (bool, np.bool_)) or not isinstance(nbits, (int, np.integer)) or int(nbits) not in NBITS:
        raise InvalidParameterError(f"nbits={nbits!r} must be one of {', '.join(map(str, NBITS))} or None")
    if write.mode != "palette":
        raise InvalidParameterError(f"nbits={nbits!r} packs palette indices; mode={write.mode!r} stores colours")
    if k is not None:
        index_bits(max(k, 0 if write.nodata_index is None else int(write.nodata_index) + 1), nbits)


def _check_image_output(dst: pathlib.Path, request: Request) -> None:
    """An image output's format: known suffix, a codec that keeps labels, labels in a format that holds them."""
    fmt = FORMATS.get(dst.suffix.lower())
    write = request.write
    if fmt is None:
        raise ImageWriteError(f"{dst}: unsupported output suffix {dst.suffix!r}; use one of {sorted(FORMATS)}")
    if fmt in ("tiff", "zarr"):
        codec = resolve_codec(write.compression, write.compression_level)
        if write.mode == "palette" and codec.lossy_image:
            raise InvalidParameterError(
                f"compression={write.compression!r} is lossy and would corrupt palette indices; use 'zlib' or "
                "mode='rgb'"
            )
    if fmt == "jpeg" and write.mode == "palette":
        raise InvalidParameterError(
            f"{dst}: JPEG holds no palette, and its lossy compression would add colours the palette does not "
            "have; write .png or .tif, or mode='rgb' for a JPEG of the palette's colours"
        )
    if fmt != "tiff" and (write.cog or write.pyramid or write.overviews):
        raise InvalidParameterError(f"{dst}: cog, pyramid and overviews are TIFF options, not {dst.suffix}")
    if fmt == "tiff":
        check_ome_layout(dst, overviews=write.overviews, cog=write.cog)


# --------------------------------------------------------------------------- checks against the inputs


def display_bands(n_bands: int, rgb_bands: Sequence[int] | None) -> list[int]:
    """The bands shown as the palette's colours: ``rgb_bands``, else the first three (or one).

    Raises
    ------
    InvalidParameterError
        ``rgb_bands`` is not three distinct band indices of the image.
    """
    if rgb_bands is None:
        return list(range(3)) if n_bands >= 3 else [0]
    bands = [int(b) for b in rgb_bands]
    if len(bands) != 3 or len(set(bands)) != 3 or not all(0 <= b < n_bands for b in bands):
        raise InvalidParameterError(
            f"rgb_bands={tuple(rgb_bands)!r} must be three distinct band indices in [0, {n_bands})"
        )
    return bands




def local_path(location: Any) -> pathlib.Path | None:
    """The local file behind ``location`` (a path or a ``file://`` URL), else None."""
    if isinstance(location, os.PathLike) or isinstance(location, str):
        text = files.local_path(os.fspath(location))  # a file:// URL as the readers take it
        return None if is_url(text) else pathlib.Path(text).expanduser()
    path = getattr(location, "path", None)  # an ImageSource opened from a file
    if isinstance(path, (str, os.PathLike)):
        return local_path(path)
    return None


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_not_inputs(request: Request, extra_inputs: Sequence[Any] = ()) -> None:
    """No output is an input: the same file, a hard link or a symbolic link to it.

    Raises
    ------
    InvalidParameterError
        An output is the same file as an input (image, mask or palette file).
    """
    given = list(request.inputs) + list(extra_inputs)
    inputs = [local_path(s) for s in given]
    inputs = [p for p in inputs if p is not None]
    urls = [str(s) for s in given if isinstance(s, str) and is_url(s)]
    urls += [str(s.path) for s in given if isinstance(getattr(s, "path", None), str) and is_url(s.path)]
    outputs = list(request.outputs) + request.sidecars + request.extra_outputs
    resume = request.sweep.resume_from
    for out in outputs:
        if isinstance(out, URLPath):
            for src in urls:
                if same_location(out, src) and not (resume is not None and same_location(src, resume)):
                    raise InvalidParameterError(
                        f"{out} is the input {src}: writing it would destroy the input; choose another output URL")
            continue
        for src in inputs:
            if (_same_file(out, src) or os.path.abspath(out) == os.path.abspath(src)) and not (
                    resume is not None and _same_file(src, pathlib.Path(resume))):
                raise InvalidParameterError(
                    f"{out} is the input {src}: writing it would destroy the input; choose another output path"
                )


def pillow_pixel_limit() -> int | None:
    """The most pixels a JPEG output holds: Pillow's decompression-bomb limit (Pillow writes it and reads it back).

    PNG output has no such limit: it is streamed (:mod:`bigquant.io.png_write`).
    """
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


def check_sources(request: Request, sources: Sequence[Any]) -> None:
    """Check the request against the opened inputs' metadata (no pixel is read).

    ``sources`` are :class:`bigquant.io.ImageSource` s, one per input kept.

    Raises
    ------
    InvalidParameterError
        Bands, types or sizes an output, a palette file, the dither or the
        colour space cannot take; an output that is an input.
    """
    write, report, fit = request.write, request.report, request.fit
    extra_inputs = [fit.palette] if isinstance(fit.palette, (str, os.PathLike)) else []
    if isinstance(request.read.mask, (str, os.PathLike)) and request.read.mask != "auto":
        extra_inputs.append(request.read.mask)
    shown_palette = write.display_palette
    if isinstance(shown_palette, DisplayPalette) and shown_palette.source is not None:
        extra_inputs.append(shown_palette.source)
    elif isinstance(shown_palette, (str, os.PathLike)):
        extra_inputs.append(shown_palette)
    check_not_inputs(request, extra_inputs)
    for source in sources:
        name = source.path or "the array"
        dtype = np.dtype(source.dtype)
        if request.entry == "quantize" and request.read.alpha == "fit":
            blocker = alpha_blocker(request, source)
            if blocker is not None:
                raise InvalidParameterError(f"alpha='fit' cannot fit the alpha of {name}: {blocker}")
        shown_bands = display_bands(source.channels, write.rgb_bands)
        display_range = parse_display_range(write.display_range)
        if display_range is not None:
            display_range.for_bands(len(shown_bands))
        if request.map.dither is not None:
            if dtype not in (np.uint8, np.uint16):
                raise InvalidParameterError(
                    f"dither={request.map.dither!r} needs uint8 or uint16 pixels; {name} is {dtype}")
            if source.channels not in (1, 3) or write.rgb_bands is not None:
                shown = f" shown as rgb_bands={tuple(write.rgb_bands)}" if write.rgb_bands else ""
                raise InvalidParameterError(
                    f"dither={request.map.dither!r} needs an image of 1 or 3 bands shown as they are (the "
                    f"palette's); this one has {source.channels}{shown}")
        if fit.space != "rgb" and source.channels != 3:
            raise InvalidParameterError(
                f"space={fit.space!r} needs an RGB image of 3 bands; {name} has {source.channels}")
        if request.target is not None and request.entry != "sweep":
            _check_quality_data(request, source)
        for dst in request.outputs:
            _check_capacity(dst, request, source)
        if report.palette_out is not None:
            fmt = palette_format(report.palette_out)
            if fmt != "json" and dtype != np.uint8:
                raise InvalidParameterError(
                    f"palette_out={report.palette_out}: a {fmt} palette holds 8-bit colours but {name} is "
                    f"{dtype}; use .json (every band at full depth)")


def _check_quality_data(request: Request, source: Any) -> None:
    from bigquant.cluster.histogram import histogram_bits

    if histogram_bits(source.dtype, source.channels) is None or request.fit.strategy not in ("auto", "histogram"):
        raise InvalidParameterError(
            f"quality= needs the exact colour histogram: 8-bit data (uint8, at most 3 bands) and strategy 'auto' "
            f"or 'histogram'; {source.path or 'the array'} is {source.dtype} with {source.channels} band(s): "
            "give n_clusters")


def _check_capacity(dst: pathlib.Path, request: Request, source: Any) -> None:
    """Whether ``dst``'s format holds this image: JPEG size, PNG/JPEG depth and bands."""
    fmt = FORMATS.get(dst.suffix.lower())
    if fmt not in ("png", "jpeg"):
        return
    name = source.path or "the array"
    limit = pillow_pixel_limit()
    n_pixels = int(source.height) * int(source.width)
    if fmt == "jpeg" and limit is not None and n_pixels > limit:
        raise InvalidParameterError(
            f"{dst}: {n_pixels / 1e6:.0f} MP is too large for JPEG output (Pillow, which writes and "
            f"reads it, stops at {limit / 1e6:.0f} MP); write a .png, .tif or .zarr instead")
    if request.write.mode == "rgb":
        dtype = np.dtype(source.dtype)
        bands = source.channels if request.write.rgb_bands is None else 3
        if fmt == "jpeg" and dtype != np.uint8:
            raise InvalidParameterError(f"{dst}: JPEG output needs 8-bit samples, {name} is {dtype}; write .tif")
        if dtype != np.uint8 and not (dtype == np.uint16 and bands == 1):
            raise InvalidParameterError(
                f"{dst}: an RGB-mode PNG holds uint8 colours (or uint16 grey); {name} is {dtype} with {bands} "
                "band(s): write .tif, or mode='palette'")


def apply_signature(entry: str, function: Callable[..., Any]) -> None:
    """Give ``function`` (an entry point taking ``**options``) the signature :func:`signature_of` builds."""
    sig = inspect.signature(function)
    leading = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    function.__signature__ = signature_of(entry, leading)  # type: ignore[attr-defined]
