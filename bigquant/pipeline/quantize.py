"""The end-to-end pipeline: source image -> fitted palette -> written image.

``quantize`` reads lazily (:func:`bigquant.read_image`), fits
:class:`bigquant.KMeans` on the pixels, and streams the labels to the output
(:func:`bigquant.write_image`).  With the histogram strategy (8-bit data) the
source pixels are read exactly twice: once to count colours, once to map and
write -- and a compressed tiled TIFF is decoded once: the first read keeps the
decoded tiles in a pixel spool that the second reads back
(:func:`bigquant.io.spool.pixel_spool`).  The palette (JSON) and a small
preview PNG come from the same passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pathlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import dask
import dask.array as da
import dask.local
import numpy as np

from bigquant import kernels, tasks
from bigquant.cluster.allocator import release_freed_memory
from bigquant.cluster.scheduler import active_client, on_client, phase
from bigquant.cluster.validation import label_dtype
from bigquant.errors import InvalidInputError, InvalidParameterError
from bigquant.io.atomic import temp_sibling
from bigquant.io.chunks import ChunksLike
from bigquant.io.encode import DITHERED_DEFLATE_LEVEL, LabelLookup, resolve_codec
from bigquant.io.objects import URLPath, output_location
from bigquant.io.palette import as_colours, index_dtype
from bigquant.io.palette_file import palette_format, read_palette, write_palette
from bigquant.io.rat import class_table, rat_fits, rat_path, write_rat
from bigquant.io.read import read_image
from bigquant.io.source import ImageSource
from bigquant.io.spool import pixel_spool
from bigquant.io.write import FORMATS, write_image
from bigquant.pipeline.alpha import alpha_blocker, fit_alpha, has_partial_alpha, premultiply, transparent_entry
from bigquant.pipeline.display import Display, display_colours
from bigquant.pipeline.dither import DITHER_CHUNK, dither_labels, label_spool
from bigquant.pipeline.masks import resolve_mask
from bigquant.pipeline.quality import QualityTarget, peak_value, search_k
from bigquant.pipeline.report import (
    MeasuredLabels,
    measured_sums,
    psnr_peak,
    quality_from_histogram,
    quality_from_sums,
    quality_pass,
    step_parts,
    write_compare,
)
from bigquant.pipeline.request import (
    Request,
    WriteOptions,
    apply_signature,
    build_request,
    check_request,
    check_sources,
    display_bands,
    seed_of,
    warn_lossy_output,
)
from bigquant.pipeline.space import fit_in_space

__all__ = ["quantize", "palette_colours", "shown_colours", "IN_MEMORY_MAX_PIXELS"]

logger = logging.getLogger(__name__)

#: 8-bit images of at most this many pixels (2048 x 2048) are fitted and mapped as
#: numpy arrays when no cluster is used: the colour histogram then also maps every
#: pixel to its colour, so no lookup table of 2**24 entries is built, and no dask
#: graph is run for an image that is already in memory
IN_MEMORY_MAX_PIXELS = 1 << 22

#: 16-bit and multi-band images of at least this many pixels make the grid fit's first exact
#: pass in the write's read (see ``_pass_with_write``); smaller ones more often need a second
PASS_WITH_WRITE_MIN_PIXELS = 1 << 24


@contextlib.contextmanager
def _scheduler(client: Any) -> Iterator[None]:
    """Make ``client`` the scheduler of every compute in the block."""
    # Client.as_current (context-local), no global dask.config.set(scheduler=client):
    # a nanny restarting a killed worker pickles the global config (a Client in it
    # cannot be pickled), and concurrent jobs entering and leaving a global setting
    # in threads leave it set for good.
    with on_client(client):
        yield


def _release_freed_memory() -> None:
    """Return the heap memory freed by the fit to the OS: only in a process that tuned its allocator.

    See :func:`bigquant.cluster.allocator.release_freed_memory` (the command
    line; a program that opted in); in anybody else's process a no-op.
    """
    release_freed_memory()


def palette_colours(centers: np.ndarray, dtype: np.dtype, rgb_bands: Sequence[int] | None = None) -> np.ndarray:
    """Round cluster centres to displayed colours of a source of type ``dtype``.

    The colours are the centres' display bands (:func:`display_bands`: the
    first three of a multi-band image unless ``rgb_bands`` says otherwise);
    uint8 and uint16 sources keep their type and values; float sources in
    [0, 1] are scaled to uint8; other types follow
    :func:`bigquant.io.palette.as_colours`.
    """
    dtype = np.dtype(dtype)
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim == 2 and (centers.shape[1] > 3 or rgb_bands is not None):
        centers = centers[:, display_bands(centers.shape[1], rgb_bands)]
    elif centers.ndim == 2 and centers.shape[1] == 2:
        centers = centers[:, :1]
    if dtype in (np.uint8, np.uint16):
        return as_colours(centers, dtype=dtype)
    if dtype.kind == "f" and centers.size and centers.min() >= 0 and centers.max() <= 1:
        return as_colours(centers * 255.0, dtype=np.uint8)
    return as_colours(centers)


def shown_colours(choice: PaletteChoice, dtype: np.dtype, options: WriteOptions) -> Display:
    """The 8-bit colours shown for ``choice``: colour table, PNG palette, preview (:mod:`bigquant.pipeline.display`).

    uint8 data as they are; other data through ``options.display_range``
    (default QGIS's 2--98 % cut), its percentiles from the fit's colour
    histogram, else the grid strategy's counts, else the palette's colours;
    or ``options.display_palette``.
    """
    model = choice.model
    band_counts = getattr(model, "band_counts_", None) if getattr(model, "strategy_", None) == "grid" else None
    n_channels = int(np.shape(choice.palette)[1])
    return display_colours(
        choice.palette, dtype, display_bands(n_channels, options.rgb_bands),
        display_range=options.display_range, display_palette=options.display_palette,
        histogram=choice.histogram, band_counts=band_counts,
    )


def _label_lookup(mapper: Any, data: Any, dst: pathlib.Path) -> tuple[LabelLookup, Any] | None:
    """The colour -> label table for the TIFF or PNG writer to look labels up itself.

    The writer then maps (and, for TIFF, encodes) each tile while it is in
    cache; the labels are those of ``mapper.labels_`` (same table, same
    nearest-colour fallback).  None when the mapper has no table (data of more
    than 24 bits per pixel) or the output is neither a TIFF nor a PNG.
    """
    if FORMATS.get(dst.suffix.lower()) not in ("tiff", "png") or not isinstance(data, da.Array):
        return None
    if not isinstance(getattr(mapper, "labels_", None), da.Array):
        return None
    table = mapper.lookup_table()
    if table is None:
        return None
    _, bits, sentinel = table
    centers = np.asarray(mapper.cluster_centers_, dtype=np.float64)
    return LabelLookup(int(bits), int(sentinel), centers), mapper.lookup_table_key()


def _nothing_masked(histogram: Any, valid: Any) -> bool:
    """True when the mask keeps every pixel (known from the histogram, else one pass over it)."""
    if histogram is not None:
        return histogram.n_pixels == int(np.prod(valid.shape))
    with phase(tasks.LABELS):
        return bool(valid.all().compute())


def _write_labels(*args: Any, **kwargs: Any) -> None:
    """:func:`bigquant.write_image` inside the spans of the label and write passes.

    Labels are computed (or looked up by the TIFF writer) tile by tile as the
    output is written: one pass over the pixels, shown in the dashboard as the
    ``bq-write`` span inside the ``bq-labels`` one.
    """
    with phase(tasks.LABELS), phase(tasks.WRITE):
        write_image(*args, **kwargs)


def psnr(error: float | None, n_values: int, dtype: np.dtype) -> float | None:
    """PSNR in dB of a summed squared error over ``n_values`` values of integer type ``dtype``.

    None when the error is unknown or the data are not integers (no peak value).
    """
    if error is None or np.dtype(dtype).kind not in "ui":
        return None
    if error <= 0:
        return float("inf")
    peak = float(np.iinfo(dtype).max)
    return 10.0 * math.log10(peak * peak * n_values / error)


@dataclasses.dataclass
class PaletteChoice:
    """The palette an image is written with and where it came from.

    Attributes
    ----------
    palette : ndarray of shape (k, n_channels)
        Every band, in the data's units (integers for integer data).
    model : estimator or None
        The fitted :class:`bigquant.KMeans`; None for a given palette.
    histogram : ColourHistogram or None
        The exact colour histogram the palette was fitted on, whose colours
        include every colour of the image written (8-bit data).
    error : float or None
        Squared error of the written pixels, when known (from the histogram).
    source : str or None
        The palette file applied, if any.
    alpha : bool
        The palette is straight RGBA fitted with the image's alpha
        (:mod:`bigquant.pipeline.alpha`): written as it is, alpha included.
    display : Display or None
        The 8-bit colours shown (:func:`shown_colours`), once known.
    """

    palette: np.ndarray
    model: Any = None
    histogram: Any = None
    error: float | None = None
    source: str | None = None
    alpha: bool = False
    display: Display | None = None


def write_quantized(
    data: Any,
    valid: Any,
    choice: PaletteChoice,
    source: ImageSource,
    dst: pathlib.Path,
    options: WriteOptions,
    *,
    preview: str | os.PathLike[str] | None = None,
    dither: str | None = None,
    dither_strength: float = 0.9,
    dither_data: tuple[Any, Any] | None = None,
    report: dict[str, Any] | None = None,
    spool: pathlib.Path | None = None,
    measure: bool = False,
    last_pass: Any = None,
) -> tuple[Any, int | None]:
    """Map ``data`` to the chosen palette and write it (one read pass for 8-bit data).

    Every pixel takes its nearest palette colour (lowest index on ties), by a
    lookup table over the histogram's colours, over every colour of an 8-bit
    image when no histogram is known, else colour by colour.  A palette fitted
    in a colour space (``choice.model.space_``) maps by the model's own table
    (nearest centre in that space).  With ``dither``, the labels are those of
    :func:`bigquant.pipeline.dither.dither_labels` over ``dither_data`` (the
    pixels and mask, maybe read in smaller chunks; default ``data``, ``valid``).
    ``report``, when given, receives ``"labels"`` (the labels written, lazy)
    and ``"sums"`` (quality sums the dither gave, or None).  A palette TIFF
    gets its classes' raster attribute table beside it with ``options.rat``
    (:func:`write_class_table`).  ``spool`` is the
    dither's label spool (:func:`bigquant.pipeline.dither.label_spool`); it must
    outlive every use of ``report["labels"]``.  With ``measure`` and
    ``report``, a palette TIFF labelled without a lookup table (16-bit data)
    is measured in the write pass itself: ``report["sums"]`` holds the
    quality sums (:class:`bigquant.pipeline.report.MeasuredLabels`).
    ``last_pass`` (:class:`bigquant.cluster.grid.LastPass`, 16-bit data): the
    fit's first exact pass is made in the write's read too, each chunk's
    sums recorded for :meth:`~bigquant.cluster.grid.LastPass.settle`.

    Returns
    -------
    mapper : FixedPalette
        The estimator that mapped the pixels (:class:`bigquant.cluster.fixed.FixedPalette`).
    nodata : int or None
        The nodata index written (None when nothing is masked).
    """
    from bigquant.cluster.fixed import FixedPalette

    histogram = choice.histogram
    if choice.alpha:  # RGBA entries, alpha kept
        colours = np.asarray(choice.palette)
    else:
        colours = palette_colours(choice.palette, source.dtype, options.rgb_bands)
    if choice.display is None:
        choice.display = shown_colours(choice, source.dtype, options)
    shown = None if choice.display.as_is else choice.display.colours
    if getattr(choice.model, "space_", None) is not None or choice.alpha:
        mapper = choice.model  # labels: nearest centre in the fit's colour space (or premultiplied RGBA)
    else:
        cells = choice.model.cell_grid() if hasattr(choice.model, "cell_grid") else None  # the grid strategy's
        mapper = FixedPalette(choice.palette).fit(data, histogram=histogram,
                                                  histogram_labels=_known_labels(choice), cells=cells)
    nodata = None
    if valid is not None and _nothing_masked(histogram, valid):
        valid = None  # e.g. float data without a NaN: no index reserved for nothing
    sums = None
    if dither is not None:
        ddata, dvalid = dither_data if dither_data is not None else (data, valid)
        dvalid = None if valid is None else dvalid
        if dvalid is not None:
            nodata = len(colours) if options.nodata_index is None else int(options.nodata_index)
        dtype = index_dtype(len(colours) if nodata is None else nodata + 1)
        # the first pass runs on while the labels are written, chunk by chunk as its tiles are done
        labels, pass1 = dither_labels(ddata, colours, method=dither, strength=dither_strength, valid=dvalid,
                                      dtype=dtype, with_sums=report is not None,
                                      masked_label=0 if nodata is None else nodata, spool=spool, wait=False)
        lookup = None
    elif valid is not None:
        nodata = len(colours) if options.nodata_index is None else int(options.nodata_index)
        labels = da.where(valid, mapper.labels_, nodata)
        labels = labels.astype(index_dtype(nodata + 1))
        lookup = None
    else:
        labels = mapper.labels_
        lookup = _label_lookup(mapper, data, dst)
    plain = dither is None and valid is None and lookup is None
    labeller = _measuring_labeller(mapper, choice, data, dst, options,
                                   quality=bool(measure and report is not None and plain),
                                   last_pass=last_pass if plain else None)
    measured: list[np.ndarray] = []
    written_nodata = nodata
    if choice.alpha and nodata is not None:
        # fully transparent pixels share one entry of alpha 0 at the nodata index: every
        # output that holds the palette's alpha (tRNS, RGBA samples) shows them transparent
        colours, written_nodata = transparent_entry(colours, nodata), None
    classes = options.mode == "palette" and FORMATS.get(dst.suffix.lower()) == "tiff"
    fits = classes and rat_fits(dst)
    table = options.rat and fits
    if options.rat and classes and not fits:
        logger.warning("%s: its name leaves no room for %s (the file system's limit): no attribute table "
                       "written", dst, rat_path(dst).name)
    n_pixels = int(np.prod(data.shape[:2]))
    known = class_counts(mapper, choice, len(colours)) if table and dither is None else None
    if known is not None and (known.sum() > n_pixels or nodata is None and known.sum() != n_pixels):
        known = None  # a histogram of other pixels (not expected): count the labels as written
    # without the histogram's counts, the labeller of a last pass counts the labels it gives, else the
    # workers count them as they encode the tiles
    stepped = labeller is not None and labeller.step is not None
    counted = (np.zeros(len(colours) if nodata is None else nodata + 1, np.int64)
               if table and known is None and not stepped else None)
    with _stopped_on_failure(pass1 if dither is not None else None):
        _write_labels(
            data if lookup is not None or labeller is not None else labels,
            dst,
            palette=colours,
            mode=options.mode,
            tile=options.tile,
            compression=options.compression,
            compression_level=_label_level(options, dither),
            nbits=options.nbits,
            pyramid=options.pyramid,
            overwrite=options.overwrite,
            preview=preview,
            nodata=written_nodata,
            geotiff=source.geotiff if options.metadata else None,
            metadata=source.metadata if options.metadata else None,
            overviews=options.overviews,
            cog=options.cog,
            display=shown,
            _lookup=lookup,
            _counts=counted,
            _labeller=labeller,
            _measured=measured,
        )
        sums = pass1.result() if dither is not None else None  # the quality sums came with the dither
    if labeller is not None and labeller.quality:
        sums = measured_sums(measured)
    if stepped:
        last_pass.record(step_parts(measured))
    if table:
        if known is not None:
            counts, nodata_count = known, n_pixels - int(known.sum())
        elif stepped:  # nothing masked
            counts, nodata_count = last_pass.label_counts(), None
        else:
            assert counted is not None
            counts, nodata_count = counted[:len(colours)], None if nodata is None else int(counted[nodata])
        # the colours GDAL shows: the colour table holds the display colours where there are some
        write_class_table(choice, source, dst, colours if shown is None else shown, nodata, counts, nodata_count,
                          options)
    elif fits:
        _warn_stale_table(dst)
    if report is not None:
        report["labels"] = labels
        report["sums"] = sums
    return mapper, nodata


def _label_level(options: WriteOptions, dither: str | None) -> int | None:
    """The compression level of the labels: the one asked for, else a fast deflate for dithered labels.

    Error-diffused labels are noise to deflate: its default level costs
    2.8x the time of level 1 on them for 6% fewer bytes
    (:data:`bigquant.io.encode.DITHERED_DEFLATE_LEVEL`); other codecs and
    undithered labels keep the writer's default (None).
    """
    if options.compression_level is not None or dither is None or options.compression is None:
        return options.compression_level
    return DITHERED_DEFLATE_LEVEL if resolve_codec(options.compression, None).tag == 8 else None


@contextlib.contextmanager
def _stopped_on_failure(pass1: Any) -> Iterator[None]:
    """Stop a dither's first pass still running (:func:`dither_labels` without ``wait``) when the block fails."""
    try:
        yield
    except BaseException:
        if pass1 is not None:
            pass1.cancel()
        raise


def _measuring_labeller(mapper: Any, choice: PaletteChoice, data: Any, dst: pathlib.Path,
                        options: WriteOptions, *, quality: bool = True,
                        last_pass: Any = None) -> MeasuredLabels | None:
    """The labeller that labels and measures each chunk as a palette TIFF is written, or None.

    For labels computed without a lookup table (16-bit and multi-band data:
    value cells or a full scan), so that the quality report needs no pass of
    its own: the pixels and their labels are at hand when the tile is encoded.
    With ``last_pass``, it also adds up the fit's first exact pass
    (:meth:`bigquant.cluster.grid.LastPass.block_step`); without it and
    ``quality``, there is nothing to do in the write's read (None).
    """
    if not quality and last_pass is None:
        return None
    if FORMATS.get(dst.suffix.lower()) != "tiff" or not isinstance(data, da.Array) or choice.alpha:
        return None
    if getattr(mapper, "space_", None) is not None:  # its labels_ are of its own colour space
        return None
    if np.shape(choice.palette)[1] != int(data.shape[-1]) or not hasattr(mapper, "block_labels"):
        return None
    label_block = mapper.block_labels()
    if label_block is None:
        return None
    step = None
    if last_pass is not None:  # the same labels (those of the same cells), and the pass's sums
        centers = np.asarray(mapper.cluster_centers_, dtype=np.float64)
        step = last_pass.block_step(centers, label_dtype(len(centers)))
    return MeasuredLabels(label_block, choice.palette, rgb_bands=options.rgb_bands, quality=quality, step=step)


def _pass_with_write(data: Any, valid: Any, target: Any, dither: str | None, dst: pathlib.Path, tile: int) -> bool:
    """Whether a grid fit may leave its first pass to the write (:func:`bigquant.cluster.grid.deferring_last_pass`).

    When the write labels the pixels in its own read (:func:`_measuring_labeller`),
    in the fit's blocks: dask pixels whose chunks lie on the output's ``tile``
    grid (the writer reads them as they are), nothing masked, no quality
    target, no dithering, a local TIFF out (the files it replaces kept
    aside until the fit settles: :func:`_provisional_outputs`); and where
    the first pass is likely the last (a pass that moves the centres costs a second write): at most three
    bands, whose grid (6 bits a band or more) leaves the search next to the
    pixels' fixed point, and at least :data:`PASS_WITH_WRITE_MIN_PIXELS`
    pixels (the fit of the 67 MP and 1 GP photos made one pass; crops of
    0.26 and 4 MP of the same photo took 3 and 2 at k = 16, and at 4 bands,
    5 bits a band, 67 MP took 5).
    """
    return (isinstance(data, da.Array) and valid is None and target is None and dither is None
            and not isinstance(dst, URLPath) and int(data.shape[-1]) <= 3
            and FORMATS.get(dst.suffix.lower()) == "tiff"
            and math.prod(data.shape[:2]) >= PASS_WITH_WRITE_MIN_PIXELS
            and all(np.all(np.cumsum(sizes)[:-1] % int(tile) == 0) for sizes in data.chunks[:2]))


@contextlib.contextmanager
def _provisional_outputs(paths: Sequence[Any]) -> Iterator[None]:
    """Files written with a fit not yet settled: the ones they replace are kept aside until the block ends.

    Each existing file ``paths`` names (None skipped; only with ``overwrite``
    can one exist here) is moved to a hidden name beside it first
    (:func:`bigquant.io.atomic.temp_sibling`, tag ``kept``: no cleanup of stale
    temporaries removes it, so a run killed outright leaves the user's file
    there).  Should the block fail -- the write, finishing the fit, writing
    again -- what it wrote (made with a palette the job never reported) is
    removed and the files kept aside are put back; once it succeeds they are
    removed.
    """
    targets = [pathlib.Path(path) for path in paths if path is not None]
    aside = []
    for path in targets:
        if path.is_file():
            kept = temp_sibling(path, "kept")
            os.replace(path, kept)
            aside.append((path, kept))
    try:
        yield
    except BaseException:
        for path in targets:
            path.unlink(missing_ok=True)
        for path, kept in aside:
            os.replace(kept, path)
        raise
    for _, kept in aside:
        kept.unlink(missing_ok=True)


def _settled(last_pass: Any, choice: PaletteChoice) -> bool:
    """Finish the fit from the pass made with the write; whether what was written is what it writes.

    The image written is a function of the palette (the labels are each
    pixel's nearest palette colour, the colours shown come from it and the
    grid's counts), so it stands when the finished fit's palette is the one
    written with.
    """
    last_pass.settle()
    return bool(np.array_equal(choice.model.palette()[0], choice.palette))


def write_class_table(choice: PaletteChoice, source: ImageSource, dst: pathlib.Path, colours: np.ndarray,
                      nodata: int | None, counts: np.ndarray | None, nodata_count: int | None,
                      options: WriteOptions) -> pathlib.Path:
    """Write the classes of the palette TIFF ``dst`` as a raster attribute table beside it (``rat``).

    Each class's centre in every band, its colour, and its pixel count
    (``counts``, with ``nodata_count`` for the nodata index) and area: see
    :mod:`bigquant.io.rat`.  :func:`write_quantized` counts without a pass
    of its own: by the colour histogram's counts (:func:`class_counts`), else
    by the labels the workers count as they encode the tiles.
    """
    document = class_table(choice.palette, colours, nodata=nodata, counts=counts, nodata_count=nodata_count,
                           band_names=source.extra.get("band_names"), geotiff=source.geotiff)
    return write_rat(rat_path(dst), document, overwrite=options.overwrite)


def _warn_stale_table(dst: pathlib.Path) -> None:
    """Warn of an attribute table left beside ``dst`` that ``rat=False`` did not rewrite."""
    sidecar = rat_path(dst)
    if sidecar.exists():
        logger.warning("%s: left as it was (rat=False); it describes the image it was written with, not "
                       "%s as written now", sidecar, dst)


def class_counts(mapper: Any, choice: PaletteChoice, n_colours: int) -> np.ndarray | None:
    """Pixels of each label written, from the colour histogram (None without one).

    Every distinct colour's count goes to its label (the mapper's, as the
    lookup table and the quality sums label it): exact for an undithered
    image, and no pass over the pixels.
    """
    labels = _colour_labels(mapper, choice)
    if labels is None:
        return None
    return np.bincount(labels, weights=choice.histogram.counts, minlength=n_colours).astype(np.int64)


def _colour_labels(mapper: Any, choice: PaletteChoice) -> np.ndarray | None:
    """The label ``mapper`` gives each distinct colour of ``choice.histogram`` (None without one).

    The labels the image was written with: a space fit's own, those the
    mapper found when fitted on the histogram, else predicted once.
    """
    hist = choice.histogram
    if hist is None or hist.colours.shape[1] != np.shape(choice.palette)[1]:
        return None
    estimator = getattr(mapper, "estimator_", None)
    known = getattr(mapper, "histogram_", None)
    if estimator is not None:  # a fit in a colour space: the labels of the distinct colours
        labels = estimator.labels_
    elif known is not None and known.colours is hist.colours:  # labelled when the mapper was fitted
        labels = mapper.histogram_labels()
    else:
        labels = mapper.predict(hist.colours)
    if labels is None or np.size(labels) != hist.n_colours:
        return None
    return np.asarray(labels).reshape(-1)


def _known_labels(choice: PaletteChoice) -> tuple[float, np.ndarray] | None:
    """The error and colour labels the fit's palette refinement computed on ``choice.histogram``, if any."""
    model = choice.model
    labels = model.palette_labels() if hasattr(model, "palette_labels") else None
    if (labels is None or choice.histogram is None or choice.error is None
            or getattr(getattr(model, "histogram_", None), "colours", None) is not choice.histogram.colours
            or not np.array_equal(model.palette()[0], choice.palette)):
        return None
    return float(choice.error), labels


def palette_document(
    choice: PaletteChoice,
    source: ImageSource,
    dst: pathlib.Path,
    nodata_index: int | None,
    rgb_bands: Sequence[int] | None,
    n_pixels: int | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The palette JSON: the colours shown, the palette in every band, the fit's summary."""
    model = choice.model
    colours = palette_colours(choice.palette, source.dtype, rgb_bands)
    n_values = None if n_pixels is None else n_pixels * int(np.shape(choice.palette)[1])
    quality = None if n_values is None else psnr(choice.error, n_values, source.dtype)
    doc: dict[str, Any] = {
        "n_colours": int(len(colours)),
        "dtype": str(colours.dtype),
        "colours": colours.tolist(),
        "palette": np.asarray(choice.palette).tolist(),
        "bands": int(np.shape(choice.palette)[1]),
        "nodata_index": nodata_index,
        "error": choice.error,
        "psnr": quality if quality is None or math.isfinite(quality) else "inf",
        "palette_file": choice.source,
        "display": None if choice.display is None else choice.display.document(),
    }
    if model is not None:
        doc.update({
            "centres": np.asarray(model.cluster_centers_, dtype=float).tolist(),
            "inertia": float(getattr(model, "inertia_", float("nan"))),
            "n_iter": int(getattr(model, "n_iter_", 0)),
            "strategy": getattr(model, "strategy_", getattr(model, "strategy", None)),
        })
    doc.update({
        "source": str(source.path) if source.path is not None else None,
        "series": source.series,
        "level": source.level,
        "shape": list(source.shape),
        "output": str(dst),
    })
    doc.update(extra or {})
    return doc


def write_palette_out(path: pathlib.Path, choice: PaletteChoice, doc: dict[str, Any], overwrite: bool,
                      dtype: np.dtype, rgb_bands: Sequence[int] | None) -> None:
    """Write ``palette_out`` in the format of its suffix (JSON: the whole document)."""
    if palette_format(path) == "json":
        write_palette(path, choice.palette, document=doc, overwrite=overwrite)
    else:
        write_palette(path, palette_colours(choice.palette, dtype, rgb_bands), overwrite=overwrite)


def load_palette(palette: Any, n_channels: int, dtype: np.dtype, limit: int) -> tuple[np.ndarray, str | None]:
    """A palette given to apply (array-like or file), checked against the image and the output.

    Returns the palette (in ``dtype`` for integer data) and the file it came from.

    Raises
    ------
    InvalidInputError
        A wrong number of channels, colours outside the data's range, or
        8-bit colours from a file for other data.
    InvalidParameterError
        More colours than the output can index.
    """
    where = None
    if isinstance(palette, (str, os.PathLike)):
        where = str(palette)
        fmt = palette_format(palette)
        pal = read_palette(palette)
        if fmt != "json" and np.dtype(dtype) != np.uint8:
            raise InvalidInputError(
                f"{where}: a {fmt} palette holds 8-bit colours but the image is {np.dtype(dtype)}; "
                "use a .json palette fitted on such data"
            )
    else:
        pal = np.asarray(palette)
    if pal.ndim == 1:
        pal = pal[:, None]
    name = where or "palette"
    if pal.ndim != 2 or pal.shape[0] == 0 or pal.dtype.kind not in "uif":
        raise InvalidParameterError(f"{name} of shape {pal.shape} must be numbers of shape (n_colours >= 1, n_channels)")
    if pal.shape[1] == 3 and n_channels == 1 and np.all(pal == pal[:, :1]):
        pal = pal[:, :1]  # grey colours written as R = G = B
    if pal.shape[1] != n_channels:
        raise InvalidInputError(f"{name} has {pal.shape[1]} channel(s) per colour but the image has {n_channels}")
    if pal.shape[0] > limit:
        raise InvalidParameterError(f"{name} has {pal.shape[0]} colours, more than the output can index ({limit})")
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        if np.any(pal != np.rint(pal)) or pal.min() < info.min or pal.max() > info.max:
            raise InvalidInputError(
                f"{name}: colours must be integers in [{info.min}, {info.max}] for {np.dtype(dtype)} data"
            )
        pal = pal.astype(dtype)
    return np.ascontiguousarray(pal), where


def quantize(
    src: Any,
    dst: str | os.PathLike[str],
    n_clusters: int | None = None,
    *,
    client: Any = None,
    **options: Any,
) -> Any:
    """Quantize an image of any size to ``n_clusters`` colours (or a given palette) and write it.

    Every option below is one of the request model's
    (:mod:`bigquant.pipeline.request`): :func:`bigquant.quantize_many`,
    :func:`bigquant.sweep` and the ``bigquant`` command take the same options
    under the same names.  The whole request is checked before a pixel is
    read or a byte written: the option values, every output's format and
    capacity (k, data type, size, bands), output paths (an existing one
    without ``overwrite``; the input itself, a link to it, or a directory
    bigquant did not write: never), the palette file and the mask.

    Parameters
    ----------
    src : str, os.PathLike, ImageSource or array
        The image: anything :func:`bigquant.read_image` opens (TIFF, zarr,
        PNG/JPEG, numpy or dask array of shape (H, W, C) or (H, W)).
    dst : str or os.PathLike
        Output file (``.tif``, ``.zarr``, ``.png``, ``.jpg``); see
        :func:`bigquant.write_image`.
    n_clusters : int or None, default=None
        Number of colours k (needed unless ``palette`` or ``quality`` is given).
    palette : array-like, str, os.PathLike or None, default=None
        Apply this palette instead of fitting one: colours of shape (k,
        n_channels) in the data's units, or a palette file (the JSON
        ``palette_out`` writes, GIMP ``.gpl``, Adobe ``.act``, a PNG/TIFF
        swatch: see :func:`bigquant.io.palette_file.read_palette`).  Every
        pixel takes its nearest colour (lowest index on ties), as in a fit;
        8-bit images are read once.
    quality : float, (float, float), str or None, default=None
        Choose k as the fewest colours whose image reaches this PSNR in dB
        (8-bit data; see :mod:`bigquant.pipeline.quality`): ``40``,
        ``(30, 40)`` or ``"30:40"`` (or ``"30:40dB"``) for a floor of 30 dB
        under which nothing is written (:class:`bigquant.errors.QualityError`);
        ``"65-80"`` is pngquant's ``MIN-MAX`` on its 0-100 scale, converted to
        dB with libimagequant's curve
        (:func:`bigquant.pipeline.quality.pngquant_quality_to_psnr`).  ``n_clusters``
        is then the most colours allowed (default: what the output holds).
    strategy : {"auto", "histogram", "grid", "pixels", "minibatch"}, default="auto"
        Fitting strategy of :class:`bigquant.KMeans` (auto: the exact histogram for
        8-bit data, the value grid for 16-bit, float and multi-band data).
    mode : {"palette", "rgb"}, default="palette"
        Indexed output with a colormap, or the palette colours per pixel.
    client : distributed.Client or None, default=None
        Cluster to run on; None uses the current default scheduler (a
        ``Client`` already created, else dask's threads).
    random_state : int, numpy Generator or None, default=None
        Seed of the initialisation.  None: the fixed default seed 0
        (:data:`bigquant.pipeline.request.DEFAULT_SEED`), so that the same
        call twice writes the same bytes; the seed is logged and recorded in a
        JSON ``palette_out`` (``random_state``).  (:class:`bigquant.KMeans`
        keeps scikit-learn's meaning of None: fresh randomness.)
    tile : int, default=512
        Output tile edge in pixels, a multiple of 16.
    compression : str or None, default="zlib"
        Output compression (see :func:`bigquant.write_image`).
    compression_level : int or None, default=None
        Its level (None: the writer's fast default, see :func:`bigquant.write_image`;
        deflated dithered labels: level 1, as fast as deflate goes, for noise
        that level 6 shrinks by 6% only).
    nbits : {None, 1, 2, 4, 8, 16}, default=None
        Bits a palette TIFF's index takes (GDAL's ``NBITS``): None the fewest
        that hold the palette and the no-data index (1, 2 or 4, packed; 8;
        16); 8 for one byte an index (see :func:`bigquant.write_image`).
    metadata : bool, default=True
        Copy the input's optional metadata (its GeoTIFF georeferencing) to a
        TIFF output; False writes none (pngquant's ``--strip``).
    pyramid : bool or int, default=False
        Add SubIFD pyramid levels to TIFF output.
    overwrite : bool, default=False
        Replace existing outputs.
    palette_out : str, os.PathLike or None, default=None
        Also write the palette: ``.json`` with the fit's summary (its
        ``palette`` entry is every band of the colours written, ``error`` and
        ``psnr`` their exact squared error and PSNR when known), or ``.gpl``,
        ``.act``, ``.png`` (8-bit RGB colours shown).
    preview : str, os.PathLike or None, default=None
        Also write a PNG preview (at most 1024 px a side) from the same pass.
    chunks : int, tuple of int or None, default=None
        Chunk shape used to read ``src`` (see :func:`bigquant.read_image`).
    level : int, default=0
        Pyramid level of a TIFF source.
    series : int or None, default=None
        Series of a TIFF source; None reads the image of a slide (not its
        thumbnail, label, macro or mask).
    mask : None, "auto", False, array-like, zarr array, str or os.PathLike, default=None
        Which pixels are image.  Pixels that are not take no part in the fit
        and are written as ``nodata_index``.  None: the file's own masks (alpha
        0, GDAL_NODATA in every band, a TIFF mask IFD, NaN; see
        :func:`bigquant.read_image`).  "auto": those and, for slides, the
        tissue found on a low-resolution level by its colour in optical
        density (:func:`bigquant.pipeline.tissue.detect_tissue`), pale stroma
        included, pen ink left out.  An array or a file (TIFF,
        PNG, zarr) of the image's (H, W) shape: those and its non-zero pixels.
        False: every pixel is image.  The fraction of the pixels kept is
        logged, is the ``mask_`` attribute's ``kept`` and the palette JSON's
        ``mask`` entry (``{"method": "none"|"file"|"user"|"auto", "kept": ...}``).
    alpha : {"auto", "mask", "fit"}, default="auto"
        The alpha channel of an RGBA image (:mod:`bigquant.pipeline.alpha`).
        "fit": alpha is a fourth channel of the fit, colours premultiplied by
        it (as libimagequant does), and the palette is RGBA: a palette PNG
        keeps each entry's alpha (tRNS), ``mode="rgb"`` writes RGBA (TIFF:
        ExtraSamples = unassociated alpha); fully transparent pixels share
        the entry ``nodata_index`` (alpha 0).  Needs an RGBA uint8/uint16
        image, a palette fitted in RGB without dither, ``rgb_bands``,
        ``quality`` or ``mask=False``, and an output that holds alpha (not a palette TIFF --
        its colormap has no alpha -- nor JPEG).  "mask": alpha 0 is masked,
        every other pixel opaque.  "auto": "fit" when the request allows it
        and some alpha lies strictly between 0 and full (one read of the
        alpha channel to know), else "mask".  The returned model is then an
        :class:`bigquant.pipeline.alpha.AlphaKMeans`; ``measure`` compares
        RGBA as seen -- R, G, B premultiplied by alpha (composited on black)
        and alpha, 4 bands on the type's scale -- over the pixels of alpha
        > 0, without Delta E.
    mask_threshold : float or None, default=None
        With ``mask="auto"``: the colour density (OD units: log10 of a
        pixel's brightest band over its darkest, against the glass's colour)
        above which a pixel is tissue; ~0.01 keeps the faintest tint, ~0.03
        pale stroma, ~0.2 only well-stained tissue.  Larger keeps less.
        None: Otsu's threshold (of the log colour density), logged.
    nodata_index : int or None, default=None
        Palette index of masked pixels, outside the palette; None: ``k`` (the
        index after the last colour).  TIFF output declares it as
        GDAL_NODATA, PNG output makes it transparent (tRNS), ``mode="rgb"``
        writes an alpha channel (0 there).  Unused when nothing is masked.
    overviews : bool or int, default=False
        TIFF output: reduced-resolution IFDs GDAL lists as overviews
        (nearest, never averaged); see :func:`bigquant.write_image`.
    cog : bool, default=False
        TIFF output in the Cloud-Optimized GeoTIFF layout (with overviews).
    rat : bool, default=True
        Palette TIFF output: also write its classes' raster attribute table,
        ``<dst>.aux.xml``, which GDAL and QGIS read with the image: each
        class's value, centre in every band, colour, pixel count and, for a
        georeferenced image, area in the CRS's unit (:mod:`bigquant.io.rat`).
        The counts cost no pass of their own: the colour histogram's (8-bit
        data), else the labels counted as the tiles are encoded.  Checked up
        front like every output.
    rgb_bands : sequence of 3 int or None, default=None
        Bands of a multi-band image shown as the palette's colours; None: the
        first three.  The fit uses every band, and ``palette_out`` keeps the
        full-band centres.
    display_range : str, (float, float), sequence of pairs or None, default=None
        The display stretch of the colours shown (the TIFF colour table, a
        PNG's palette, the preview; :mod:`bigquant.pipeline.display`):
        ``"min,max"`` for every band shown, ``"min,max;min,max;min,max"`` per
        band, or percentiles of the pixels such as ``"p2,p98"``.  None: uint8
        data as they are; other data ``"p2,p98"`` (QGIS's default cumulative
        count cut), the percentiles taken from what the fit counted (the
        colour histogram, the grid strategy's counts, else the palette's
        colours) -- no pass over the pixels.  The palette JSON keeps the
        data's values (``palette``) and records the stretch (``display``).
    display_palette : str, os.PathLike, array-like or None, default=None
        The 8-bit colours shown, one per class, instead of a stretch: any
        palette file bigquant reads (``.json``, ``.gpl``, ``.act``, ``.png``)
        or an array of shape (k, 3).  Its count must be k (checked before a
        pixel is read).
    dither : {None, "floyd-steinberg", "blue-noise"}, default=None
        Map pixels to the palette with dithering instead of to the nearest
        colour.  "floyd-steinberg": exact error diffusion, byte-identical to
        the serial reference :func:`bigquant.kernels.dither.floyd_steinberg`
        whatever the chunking, workers or scheduler (tile-parallel, see
        :mod:`bigquant.pipeline.dither`; it reads the pixels once more --
        from the fit's decoded tiles when they were spooled -- and the
        labels are written as its tiles are done).
        "blue-noise": ordered dithering with a tiled blue-noise mask, one
        pass, faster.  Masked pixels neither receive nor pass error.  Needs
        uint8 or uint16 pixels with 1 or 3 bands (the palette's).
    dither_strength : float, default=0.9
        In [0, 1]: the fraction of the error diffused (or of the palette's
        spacing used as noise amplitude).  0.9 rather than 1: undamped error
        piles up in smooth areas until a far colour is picked (stray dots);
        on the five photos of docs/benchmarks.md 0.9 gives more PSNR after a blur of
        sigma = 1 px than 1.0 at every k (its dither-strength table).
    scratch : str, os.PathLike or None, default=None
        Where the workers share temporaries (Floyd--Steinberg's label spool,
        and a compressed TIFF's tiles decoded by the fit, kept for the write:
        3 bytes a pixel for RGB, made only where there is room and every
        worker sees it, else the tiles are decoded again): a directory every
        worker sees, or a URL prefix (``s3://bucket/tmp``; no pixel spool there).
        None: beside a local output, or the client's temp dir for a URL
        output; workers that do not see it dither again from the edges.
    space : {"rgb", "oklab", "lab"}, default="rgb"
        Colour space of the fit, the lookup table and the pixel -> palette
        mapping (:mod:`bigquant.pipeline.space`); the palette is stored as
        sRGB colours either way.  8-bit input keeps the exact-histogram
        strategy (distinct colours transformed once, weighted by counts).
        "rgb" (the default) gives the highest PSNR; "oklab" the lowest
        perceptual error (mean Delta E in OKLab) -- see docs/benchmarks.md, quality
        tables.  Needs a 3-band image and a fitted palette (not ``palette``
        or ``quality``); the returned model is then a
        :class:`bigquant.pipeline.space.SpaceKMeans`.
    measure : bool or None, default=None
        Measure the result: PSNR and mean Delta E in OKLab of the written
        colours against the source (``model.quality_``; ``error``, ``psnr``
        and ``delta_e_ok`` in a JSON ``palette_out``;
        :mod:`bigquant.pipeline.report`), every band against every band of
        the palette.  The PSNR's peak is the integer type's largest value;
        float data have a PSNR (peak 1.0) and Delta E only when every value
        counted lies in [0, 1], else None.  None: only when it costs no pass
        over the pixels (a histogram fit, or Floyd--Steinberg); True: always
        (else one more pass); False: never.  A dithered image not measured
        has no ``error`` either (the fit's is the undithered image's).
    compare : str, os.PathLike or None, default=None
        Also write a PNG of the image's centre crop (512 x 512 at full
        resolution): source on the left, result on the right.
    **kmeans_kwargs
        Other :class:`bigquant.KMeans` parameters (``init``, ``max_iter``,
        ``tol``, ``n_init``...).

    Returns
    -------
    model : KMeans or FixedPalette
        The fitted estimator (``model.cluster_centers_`` are the centres
        before rounding, ``model.palette()`` the colours written, in every
        band), or the mapper of a given ``palette``; ``model.quality_`` is
        the quality measured (``{"psnr", "delta_e_ok", "pixels"}``) or None.  A GeoTIFF source's georeferencing (CRS,
        transform, GDAL metadata) is carried to TIFF output; its pixel size,
        Aperio fields and ICC profile (``read_image(src).metadata``) to TIFF,
        OME-TIFF (an output named ``*.ome.tif``) and PNG output, as
        :func:`bigquant.write_image` says.

    Raises
    ------
    ImageReadError, ImageWriteError, InvalidParameterError
        As :func:`bigquant.read_image`, :class:`bigquant.KMeans` and
        :func:`bigquant.write_image`; outputs are checked before any pixel is
        read, and nothing partial is left on failure.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from bigquant import quantize
    >>> img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     model = quantize(img, pathlib.Path(d) / "q.tif", 4, random_state=0, tile=32)
    >>> model.cluster_centers_.shape
    (4, 3)
    """
    request = check_request(build_request("quantize", [src], [dst], dict(options, n_clusters=n_clusters)))
    read = request.read
    source = src if isinstance(src, ImageSource) and read.chunks is None else read_image(
        src, chunks=read.chunks, level=read.level, series=read.series
    )
    check_sources(request, [source])
    pal_given = load_request_palette(request, source)
    return _run(request, src, source, pal_given, client)


def load_request_palette(request: Request, source: ImageSource) -> PaletteChoice | None:
    """The palette the request applies (``palette=``), read and checked against ``source``; None for a fit."""
    fit = request.fit
    if fit.palette is None:
        return None
    pal, where = load_palette(fit.palette, source.channels, source.dtype, request.limit)
    if fit.n_clusters is not None and int(fit.n_clusters) != len(pal):
        raise InvalidParameterError(f"n_clusters={fit.n_clusters} but the palette has {len(pal)} colours")
    shown = request.write.display_palette
    if shown is not None and len(shown.colours) != len(pal):
        raise InvalidParameterError(
            f"display_palette={shown.source or 'array'} has {len(shown.colours)} colours but the palette has "
            f"{len(pal)}: one colour shown per class")
    return PaletteChoice(pal, source=where)


def _run(request: Request, src: Any, source: ImageSource, given: PaletteChoice | None, client: Any) -> Any:
    """Run a checked quantize request: fit (or apply), map, write, report."""
    dst_path = request.outputs[0]
    read, fit, write, report = request.read, request.fit, request.write, request.report
    target, n_clusters, space, strategy = request.target, fit.n_clusters, fit.space, fit.strategy
    dither, dither_strength = request.map.dither, request.map.dither_strength
    rgb_bands, chunks, palette = write.rgb_bands, read.chunks, fit.palette
    limit = request.limit
    data = source.data
    if data.ndim == 2:
        data = data[:, :, None]  # KMeans reads 2-D arrays as (n_samples, n_channels)
    mask_report: dict[str, Any] = {}
    valid = resolve_mask(source, read.mask, threshold=read.mask_threshold, report=mask_report)
    if valid is not None and data.dtype.kind == "f":
        data = da.where(valid[:, :, None], data, 0)  # masked NaN would poison the sums, weight 0 or not
    fit_alpha_channel = given is None and _fits_alpha(request, source)
    if fit_alpha_channel:  # straight RGBA: the fit premultiplies, the output keeps the alpha
        data = da.concatenate([data, source.alpha[:, :, None].rechunk(data.chunks[:2] + ((1,),))], axis=2)
    warn_lossy_output(request)
    if palette is None and fit.random_state is None:
        logger.info("random_state=None: the default seed %d (the same command writes the same bytes)",
                    seed_of(None))
    logger.info(
        "quantize %s: %s %s to %s (%s), chunks %s, %s",
        source.path or "array", source.shape, source.dtype,
        f"palette {palette}" if isinstance(palette, (str, os.PathLike)) else
        "a given palette" if palette is not None else f"PSNR {target.target} dB" if target else f"k={n_clusters}",
        strategy, data.chunksize, "masked" if valid is not None else "no mask",
    )
    if chunks is None and _runs_in_memory(src, source, data, valid, client, palette, target, dither, space,
                                          strategy, report.compare):
        # small: one task, no threads; a callable, not "sync": dask imports distributed
        # (~1 s) to look for a client whenever the scheduler is named or left out
        data = np.asarray(data.compute(scheduler=dask.local.get_sync))
    spooling = (given is None and not fit_alpha_channel and space == "rgb"
                and _spool_worth_it(data, valid, strategy, dst_path))
    with _scheduler(client), (pixel_spool(data, dst_path, request.map.scratch) if spooling
                              else contextlib.nullcontext()) as kept:
        t0 = time.perf_counter()
        last_pass = None
        if given is not None:
            choice = given
        elif fit_alpha_channel:
            choice = _fit_alpha(data, valid, source, n_clusters, fit.kmeans_params())
        elif space != "rgb":
            choice = _fit_in_space(data, valid, source, n_clusters, space, fit.kmeans_params())
        else:
            from bigquant.cluster.grid import deferring_last_pass

            with (deferring_last_pass() if _pass_with_write(data, valid, target, dither, dst_path, write.tile)
                  else contextlib.nullcontext([])) as deferred:
                choice = _fit_palette(data if kept is None else kept.counting, valid, source, n_clusters, target,
                                      limit, fit.kmeans_params())
            last_pass = deferred[0] if deferred else None
        t1 = time.perf_counter()
        if given is None and last_pass is None:
            logger.info("fitted %d colours in %.1f s (%s iterations)", len(choice.palette), t1 - t0,
                        getattr(choice.model, "n_iter_", "?"))
        elif given is None:  # its count is known once the write's pass is settled
            logger.info("fitted %d colours in %.1f s (the next exact pass made with the write)",
                        len(choice.palette), t1 - t0)
        written_data = data
        dither_data = None
        if kept is not None:
            if kept.complete():  # the fit decoded every tile: the write (or the dither) reads them back raw
                written_data = kept.spooled
                if dither:
                    dither_data = (kept.spooled_in(_dither_chunks(kept.spooled, kept.spool.segment)), None)
            else:
                logger.info("the fit did not read every tile: they are decoded again for the write")
        if dither and dither_data is None:
            dither_data = _dither_data(src, source, chunks, read.level, read.series, read.mask, valid,
                                       read.mask_threshold)
        if mask_report["kept"] is None and choice.histogram is not None:  # counted by the fit
            mask_report["kept"] = choice.histogram.n_pixels / max(1, int(np.prod(source.shape[:2])))
        if mask_report["kept"] is not None:
            logger.info("mask %s: kept %.1f%% of the pixels", mask_report["method"], 100.0 * mask_report["kept"])
        _release_freed_memory()
        measure, compare, palette_out = report.measure, report.compare, report.palette_out
        written: dict[str, Any] = {}
        want = measure is not False and np.shape(choice.palette)[1] == int(data.shape[-1])
        # Floyd--Steinberg keeps its labels in a spool until the output and its report are done
        with label_spool(dst_path, dither, scratch=request.map.scratch) as spool:
            # written with a fit not yet settled: the files replaced are kept aside until it is
            provisional = [dst_path, rat_path(dst_path), report.preview] if last_pass is not None else []
            with _provisional_outputs(provisional):
                mapper, nodata = write_quantized(
                    written_data, valid, choice, source, dst_path, write, preview=report.preview, dither=dither,
                    dither_strength=dither_strength, dither_data=dither_data,
                    report=written if want else None, spool=spool,
                    measure=bool(measure) and not _measured_elsewhere(choice), last_pass=last_pass,
                )
                settled = last_pass is None or _settled(last_pass, choice)
                if last_pass is not None:
                    logger.info("fit settled with the write's pass: %s iterations%s", choice.model.n_iter_,
                                "" if settled else ", its palette moved: written again")
                if not settled:
                    # the pass made with the write moved the centres: the image as the finished fit writes it
                    pal, error = choice.model.palette()
                    choice = PaletteChoice(pal, choice.model, None, error)
                    written = {}
                    mapper, nodata = write_quantized(
                        written_data, valid, choice, source, dst_path, dataclasses.replace(write, overwrite=True),
                        preview=report.preview, report=written if want else None, spool=spool,
                        measure=bool(measure) and not _measured_elsewhere(choice),
                    )
            logger.info("wrote %s in %.1f s", dst_path, time.perf_counter() - t1)
            _release_freed_memory()
            sums = written.get("sums")
            if want and sums is None and dither is None:
                sums = _histogram_sums(mapper, choice, source, rgb_bands)
            if want and sums is None and dither is None and not choice.alpha:
                sums = _value_sums(choice, source, rgb_bands)  # few 16-bit values, counted by the grid pass
            if want and sums is None and measure:
                # one more pass over the pixels and their labels, against every band of the palette
                # (not the colours displayed: the first three bands of a multi-band image)
                measured, against = data, choice.palette
                if choice.alpha:  # RGBA as seen: colours premultiplied (composited on black), and alpha
                    measured, against = premultiply(data, weight=1.0), premultiply(choice.palette, weight=1.0)
                sums = quality_pass(measured, written["labels"], against, None if nodata is None else valid,
                                    rgb_bands=rgb_bands)
            quality_ = None
            if sums is not None:
                peak = psnr_peak(source.dtype, sums[3:5] if len(sums) == 5 else None)
                quality_ = quality_from_sums(sums, int(data.shape[-1]), peak)
                choice.error = float(sums[0])  # the squared error of the pixels written
                logger.info("quality: %s", quality_)
            elif dither is not None:
                choice.error = None  # the fit's error is that of the undithered image, not of the one written
            if compare is not None:
                labels = written.get("labels")
                if labels is None:
                    labels = mapper.labels_ if nodata is None else da.where(valid, mapper.labels_, nodata)
                write_compare(compare, data, labels, palette_colours(choice.palette, source.dtype, rgb_bands),
                              nodata=nodata, overwrite=write.overwrite)
    if palette_out is not None:
        n_pixels = choice.histogram.n_pixels if choice.histogram is not None else None
        if quality_ is not None:
            n_pixels = quality_["pixels"]
        extra: dict[str, Any] = {"seconds": {"fit": round(t1 - t0, 3)}, "space": space, "dither": dither,
                                 "delta_e_ok": None if quality_ is None else quality_["delta_e_ok"],
                                 "random_state": _recorded_seed(fit.random_state) if given is None else None,
                                 "mask": dict(mask_report)}
        if quality_ is not None:  # measured: its PSNR (with the peak of float data, see psnr_peak)
            extra["psnr"] = quality_["psnr"] if quality_["psnr"] is None or math.isfinite(quality_["psnr"]) else "inf"
        if dither is not None:
            extra["dither_strength"] = dither_strength
        doc = palette_document(choice, source, dst_path, nodata, rgb_bands, n_pixels, extra)
        write_palette_out(output_location(palette_out), choice, doc, write.overwrite, source.dtype,
                          rgb_bands)
    result = choice.model if choice.model is not None else mapper
    result.quality_ = quality_
    result.mask_ = dict(mask_report)
    return result


def _spool_worth_it(data: Any, valid: Any, strategy: str, dst: pathlib.Path) -> bool:
    """Whether the fit's read should keep the decoded tiles for the write (:func:`bigquant.io.spool.pixel_spool`).

    That is an image on dask, unmasked, fitted by its colour histogram (8-bit
    data, one read of every tile) or by the value grid (16-bit and multi-band
    data: its grid pass and Lloyd passes decode), and written as TIFF or PNG,
    which then reads the tiles back instead of decoding them again.
    """
    from bigquant.cluster.grid import grid_bits
    from bigquant.cluster.histogram import histogram_bits

    if not (isinstance(data, da.Array) and valid is None and FORMATS.get(dst.suffix.lower()) in ("tiff", "png")):
        return False
    n_channels = int(data.shape[-1])
    if histogram_bits(data.dtype, n_channels) is not None:
        return strategy in ("auto", "histogram")
    return strategy in ("auto", "grid") and data.dtype.kind in "ui" and grid_bits(data.dtype, n_channels) is not None


def _recorded_seed(random_state: Any) -> int | None:
    """The seed the fit used, as the palette JSON records it (None for a numpy Generator)."""
    seed = seed_of(random_state)
    return int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else None


def _runs_in_memory(src: Any, source: ImageSource, data: Any, valid: Any, client: Any, palette: Any, target: Any,
                    dither: Any, space: str, strategy: str, compare: Any) -> bool:
    """Whether a fit of k colours runs on the pixels as one numpy array (see ``IN_MEMORY_MAX_PIXELS``).

    Small 8-bit images already in memory (numpy arrays; PNG, JPEG and the
    other files Pillow decodes whole; not TIFF or zarr, which are read
    lazily, tile by tile, twice), read without ``chunks`` asked for, with nothing masked, fitted by the
    histogram strategy, written undithered in RGB space, without a
    distributed client.
    """
    from bigquant.cluster.histogram import histogram_bits

    decoded = isinstance(src, np.ndarray) or source.format not in ("tiff", "ome-tiff", "zarr", "array")
    return (
        decoded and isinstance(data, da.Array)
        and int(np.prod(data.shape[:-1])) <= IN_MEMORY_MAX_PIXELS
        and histogram_bits(data.dtype, int(data.shape[-1])) is not None
        and valid is None and palette is None and target is None and dither is None and space == "rgb"
        and compare is None and strategy in ("auto", "histogram")
        and client is None and active_client() is None
    )


def _fits_alpha(request: Request, source: ImageSource) -> bool:
    """Whether the alpha channel is fitted: ``alpha="fit"``, or ``"auto"`` and alpha strictly between 0 and full.

    ``"auto"`` reads the alpha channel once to know (:func:`bigquant.pipeline.alpha.has_partial_alpha`),
    only when the alpha could be fitted for this request.
    """
    mode = request.read.alpha
    if mode == "mask" or source.alpha is None:
        return False
    if mode == "fit":
        return True  # checked: check_sources refuses what cannot be fitted
    blocker = alpha_blocker(request, source)
    if blocker is not None:
        logger.info("alpha read as a mask (alpha 0 is nodata, the rest opaque): %s", blocker)
        return False
    partial = has_partial_alpha(source.alpha)
    logger.info("alpha %s", "has levels between 0 and full: fitted as a fourth channel, premultiplied"
                if partial else "is only 0 or full: read as a mask")
    return partial


@contextlib.contextmanager
def _naming_a_masked_image(source: ImageSource) -> Iterator[None]:
    """An estimator's "every sample is masked" as the image's own error (alpha, nodata or mask)."""
    try:
        yield
    except InvalidInputError as exc:
        if "every sample is masked" in str(exc):
            raise InvalidInputError(
                f"{source.path or 'array'}: every pixel is masked (alpha, nodata or mask): nothing to fit"
            ) from exc
        raise


def _fit_alpha(data: Any, valid: Any, source: ImageSource, n_clusters: int | None,
               params: dict[str, Any]) -> PaletteChoice:
    """Fit k RGBA entries with alpha premultiplied (:func:`bigquant.pipeline.alpha.fit_alpha`)."""
    with _naming_a_masked_image(source):
        model = fit_alpha(data, valid, int(n_clusters), **params)
    palette = model.cluster_centers_.astype(source.dtype)
    # the fit's inertia is in its weighted space: the error of the pixels written (RGBA as seen) is
    # known only when measured
    return PaletteChoice(palette, model, None, None, alpha=True)


def _fit_in_space(data: Any, valid: Any, source: ImageSource, n_clusters: int | None, space: str,
                  params: dict[str, Any]) -> PaletteChoice:
    """Fit k colours in ``space`` (:func:`bigquant.pipeline.space.fit_in_space`); the palette as sRGB integers."""
    with _naming_a_masked_image(source):
        model = fit_in_space(data, n_clusters, space, valid=valid, **params)
    pal = np.asarray(model.cluster_centers_, dtype=np.float64)
    if np.dtype(source.dtype).kind in "ui":
        info = np.iinfo(source.dtype)
        pal = np.clip(np.rint(pal), info.min, info.max).astype(source.dtype)
    return PaletteChoice(pal, model, model.histogram_, None)


def _histogram_sums(mapper: Any, choice: PaletteChoice, source: ImageSource,
                    rgb_bands: Sequence[int] | None) -> np.ndarray | None:
    """Quality sums of an undithered image from its colour histogram (no pass over the pixels)."""
    labels = _colour_labels(mapper, choice)
    if labels is None:
        return None
    hist = choice.histogram
    return quality_from_histogram(hist.colours, hist.counts, labels, choice.palette, rgb_bands)


def _measured_elsewhere(choice: PaletteChoice) -> bool:
    """Whether the quality of an undithered image comes from counted colours or values (no pixels needed)."""
    if choice.histogram is not None:
        return True
    counted = choice.model.value_counts() if hasattr(choice.model, "value_counts") else None
    return counted is not None


def _value_sums(choice: PaletteChoice, source: ImageSource, rgb_bands: Sequence[int] | None) -> np.ndarray | None:
    """Quality sums from the distinct values a grid fit counted exactly (no pass over the pixels), or None.

    Each value takes its nearest palette colour (lowest index on ties), as
    the pixels written did; only the pixels counted (the mask's) are measured.
    """
    counted = choice.model.value_counts() if hasattr(choice.model, "value_counts") else None
    if counted is None or np.dtype(source.dtype).kind not in "ui":
        return None
    values, counts = counted
    palette = np.asarray(choice.palette, dtype=np.float64)
    if palette.shape[1] != values.shape[1]:
        return None
    labels = kernels.assign_labels(values, palette, np.int32)[0]
    return quality_from_histogram(values.astype(source.dtype), counts, labels, choice.palette, rgb_bands)


def _dither_chunks(data: da.Array, segment: tuple[int, int]) -> tuple[Any, ...]:
    """Chunks the dither reads ``data`` in: as they are up to :data:`DITHER_CHUNK`, else whole tiles up to it."""
    if max(data.chunksize[:2]) <= DITHER_CHUNK:
        return data.chunks
    rows, cols = (max(s, DITHER_CHUNK // s * s) for s in segment)
    return (rows, cols) + data.chunks[2:]


def _dither_data(src: Any, source: ImageSource, chunks: ChunksLike, level: int, series: int | None,
                 mask: Any, valid: Any, mask_threshold: float | None = None) -> tuple[Any, Any]:
    """The pixels (and mask) to dither, read in chunks the dither works in.

    A file read in big chunks is opened again in :data:`DITHER_CHUNK` chunks,
    so that smaller ones are not split out of big ones once per band.
    """
    if chunks is None and max(source.data.chunksize[:2]) > DITHER_CHUNK and not isinstance(src, ImageSource):
        dsource = read_image(src, chunks=DITHER_CHUNK, level=level, series=series)
        data = dsource.data if dsource.data.ndim == 3 else dsource.data[:, :, None]
        return data, (resolve_mask(dsource, mask, threshold=mask_threshold) if valid is not None else None)
    data = source.data if source.data.ndim == 3 else source.data[:, :, None]
    return data, valid


def _fit_palette(
    data: Any,
    valid: Any,
    source: ImageSource,
    n_clusters: int | None,
    target: QualityTarget | None,
    limit: int,
    params: dict[str, Any],
) -> PaletteChoice:
    """Fit the palette: k colours, or the fewest that reach the quality target."""
    from bigquant.cluster.histogram import colour_histogram
    from bigquant.cluster.kmeans import KMeans

    where = source.path or "array"
    if target is None and isinstance(data, np.ndarray) and valid is None:
        # in memory (see _runs_in_memory): the histogram keeps each pixel's colour index,
        # which maps the pixels to the palette written (FixedPalette) without a table
        histogram = colour_histogram(data)
        fit_params = {name: value for name, value in params.items() if name != "strategy"}
        model = KMeans(n_clusters, **fit_params).fit_histogram(histogram)
        pal, error = model.palette()
        return PaletteChoice(pal, model, histogram, error)
    if target is None:
        with _naming_a_masked_image(source):
            model = KMeans(n_clusters, **params).fit(data, sample_weight=valid)
        pal, error = model.palette()
        return PaletteChoice(pal, model, getattr(model, "histogram_", None), error)
    with phase(tasks.HISTOGRAM):
        histogram = colour_histogram(data, valid=valid, octree=True)
    if histogram.n_colours == 0:
        raise InvalidInputError(f"{where}: every pixel is masked (alpha, nodata or mask): nothing to fit")
    choice = choose_palette(histogram, target, n_clusters, limit, params)
    return choice


def histogram_choice(histogram: Any, n_clusters: int, params: dict[str, Any]) -> PaletteChoice:
    """The palette of ``n_clusters`` colours fitted on ``histogram`` (:meth:`bigquant.KMeans.fit_histogram`).

    ``params`` are :class:`bigquant.KMeans` parameters (a ``strategy`` among
    them is dropped: a histogram fit is the histogram strategy).
    """
    import warnings

    from bigquant.cluster.kmeans import KMeans
    from bigquant.errors import FewColoursWarning

    params = {name: value for name, value in params.items() if name != "strategy"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewColoursWarning)
        model = KMeans(n_clusters, **params).fit_histogram(histogram)
    pal, error = model.palette()
    return PaletteChoice(pal, model, histogram, error)


def choose_palette(
    histogram: Any, target: QualityTarget, n_clusters: int | None, limit: int, params: dict[str, Any]
) -> PaletteChoice:
    """The palette of the fewest colours whose image reaches ``target`` (PSNR on ``histogram``)."""

    def fit_k(k: int) -> tuple[PaletteChoice, float]:
        choice = histogram_choice(histogram, k, params)
        return choice, float(choice.error)

    k_max = min(limit if n_clusters is None else int(n_clusters), histogram.n_colours)
    n_channels = int(histogram.colours.shape[1])
    found = search_k(fit_k, target, n_values=histogram.n_pixels * n_channels,
                     peak=peak_value(histogram.colours.dtype), k_max=k_max)
    logger.info("quality: k=%d reaches %.2f dB (tried %s)", found.k, found.psnr, found.tried)
    return found.fit


apply_signature("quantize", quantize)
