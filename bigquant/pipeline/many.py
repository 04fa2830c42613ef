"""One palette for a set of images: one joint histogram, one fit, every file written with it.

A pathology cohort, the sheets of a map series or the tiles of a mosaic share
one palette, so that index 3 means the same colour in every file.
:func:`quantize_many` opens every input first (an unreadable file stops the
job before anything is fitted, or is skipped with ``keep_going``), counts the
colours of every file on the workers in one compute, merges the histograms
(exact: the joint histogram is the histogram of all the pixels), fits once
(or applies a given palette), and writes each file with the palette.

Weighting: ``weight="pixels"`` (default) counts every pixel once, so a large
image weighs more; ``weight="image"`` gives each image the same total weight:
its counts are multiplied by the integer nearest to ``L / n_i`` (``n_i`` its
pixel count, ``L`` 256 times the largest ``n_i``), which equalises the
totals to within 0.2% and keeps the sums exact integers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np

from bigquant import kernels
from bigquant import tasks
from bigquant.cluster.histogram import ColourHistogram, histogram_bits, histogram_graph
from bigquant.cluster.palette import palette_error
from bigquant.cluster.scheduler import phase
from bigquant.errors import BigquantError, ImageReadError, ImageWriteError, InvalidInputError, InvalidParameterError
from bigquant.io.chunks import ChunksLike
from bigquant.io.objects import URLPath, output_location
from bigquant.io.read import read_image
from bigquant.io.source import ImageSource
from bigquant.io.write import FORMATS
from bigquant.pipeline.dither import label_spool
from bigquant.pipeline.masks import resolve_mask
from bigquant.pipeline.quantize import (
    PaletteChoice,
    choose_palette,
    histogram_choice,
    load_request_palette,
    palette_document,
    psnr,
    shown_colours,
    write_palette_out,
    write_quantized,
    _dither_data,
    _recorded_seed,
    _scheduler,
)
from bigquant.pipeline.request import (
    ReadOptions,
    WriteOptions,
    apply_signature,
    build_request,
    check_request,
    check_sources,
    seed_of,
    warn_lossy_output,
)

__all__ = ["quantize_many", "ManyResult", "FileResult", "open_sources", "joint_histogram"]

logger = logging.getLogger(__name__)

#: weight="image": each image's total weight is this many times the largest pixel count
_IMAGE_WEIGHT_SCALE = 256


@dataclasses.dataclass
class Opened:
    """One input, opened: its source, pixels (H, W, C) and mask."""

    index: int
    name: str
    source: ImageSource
    data: Any
    valid: Any


@dataclasses.dataclass
class FileResult:
    """One file of a set, written.

    Attributes
    ----------
    src, dst : str
        Input and output.
    n_pixels : int or None
        Pixels counted (not masked), when a histogram was made.
    error : float or None
        Squared error of this image written with the shared palette.
    psnr : float or None
        Its PSNR in dB (integer data).
    """

    src: str
    dst: str
    n_pixels: int | None
    error: float | None
    psnr: float | None


@dataclasses.dataclass
class ManyResult:
    """What :func:`quantize_many` did.

    Attributes
    ----------
    palette : ndarray of shape (k, n_channels)
        The shared palette, every band.
    model : KMeans or None
        The fit on the joint histogram (None for a given palette).
    files : list of FileResult
        The files written, in input order.
    skipped : list of (str, str)
        Inputs left out with ``keep_going``, and why.
    error : float or None
        Squared error of the whole set (the joint histogram's; with
        ``weight="pixels"`` the sum of the files' errors).  Dithered: the
        sum of the files' errors with ``weight="pixels"`` when every one is
        known, else None.
    """

    palette: np.ndarray
    model: Any
    files: list[FileResult]
    skipped: list[tuple[str, str]]
    error: float | None = None


def output_path(src: Any, out_dir: pathlib.PurePath, suffix: str) -> pathlib.PurePath:
    """The output of ``src`` in ``out_dir``: the same name with ``suffix``."""
    name = str(src).rstrip("/").split("?")[0].rsplit("/", 1)[-1]
    stem = pathlib.PurePath(name).stem if pathlib.PurePath(name).suffix else name
    return out_dir / f"{stem}{suffix}"


def open_images(
    srcs: Sequence[Any], *, keep_going: bool = False, series: int | None = None, level: int = 0,
    chunks: ChunksLike = None,
) -> tuple[list[tuple[int, str, ImageSource]], list[tuple[str, str]]]:
    """Open every input (metadata only); fail on the first unreadable one, or skip it.

    Returns the opened inputs as (index, name, source) and the skipped ones as
    (name, reason).

    Raises
    ------
    ImageReadError, InvalidInputError
        Naming the file (without ``keep_going``); also when the inputs differ
        in bands or data type, which one palette cannot serve.
    """
    opened: list[tuple[int, str, ImageSource]] = []
    skipped: list[tuple[str, str]] = []
    for index, src in enumerate(srcs):
        name = f"array {index}" if isinstance(src, (np.ndarray, da.Array)) else str(getattr(src, "path", None) or src)
        try:
            source = src if isinstance(src, ImageSource) and chunks is None else read_image(
                src, series=series, level=level, chunks=chunks)
        except BigquantError as exc:
            if not keep_going:
                raise
            logger.info("skipping %s: %s", name, exc)  # reported in the result's ``skipped``
            skipped.append((name, str(exc)))
            continue
        opened.append((index, name, source))
    if not opened:
        raise ImageReadError("no input could be read" + (f": {skipped[0][1]}" if skipped else ""))
    _, first_name, first = opened[0]
    for _, name, other in opened[1:]:
        if other.channels != first.channels or other.dtype != first.dtype:
            raise InvalidInputError(
                f"{name} is {other.dtype} with {other.channels} band(s) but {first_name} is "
                f"{first.dtype} with {first.channels}: one palette needs the same bands and type"
            )
    return opened, skipped


def with_masks(images: Sequence[tuple[int, str, ImageSource]], mask: Any,
               threshold: float | None = None) -> list[Opened]:
    """The opened inputs' pixels (H, W, C) and masks (``mask`` as in :func:`bigquant.quantize`)."""
    opened = []
    for index, name, source in images:
        data = source.data if source.data.ndim == 3 else source.data[:, :, None]
        valid = resolve_mask(source, mask, threshold=threshold)
        if valid is not None and data.dtype.kind == "f":
            data = da.where(valid[:, :, None], data, 0)
        opened.append(Opened(index, name, source, data, valid))
    return opened


def open_sources(
    srcs: Sequence[Any], *, mask: Any = None, keep_going: bool = False, series: int | None = None, level: int = 0,
    mask_threshold: float | None = None,
) -> tuple[list[Opened], list[tuple[str, str]]]:
    """Open every input and its mask (:func:`open_images`, then :func:`with_masks`)."""
    images, skipped = open_images(srcs, keep_going=keep_going, series=series, level=level)
    return with_masks(images, mask, mask_threshold), skipped


def joint_histogram(
    opened: Sequence[Opened], weight: Literal["pixels", "image"] = "pixels"
) -> tuple[ColourHistogram, list[ColourHistogram]]:
    """The histogram of every file (counted in one compute) and their merge.

    Returns
    -------
    joint : ColourHistogram
        Counts summed over the files (scaled per image with ``weight="image"``).
    per_file : list of ColourHistogram
        Each file's own histogram.
    """
    n_channels = int(opened[0].data.shape[-1])
    dtype = opened[0].data.dtype
    bits = histogram_bits(dtype, n_channels)
    if bits is None:
        raise InvalidParameterError(f"a joint colour histogram needs 8-bit data; these are {dtype} x {n_channels}")
    # per-block histograms merged: lanes' tables of every file at once would hold 64 MB a lane
    graphs = [histogram_graph(da.asarray(item.data), bits, valid=item.valid, lanes=False) for item in opened]
    with phase(tasks.HISTOGRAM):
        parts = dask.compute(*graphs)
    per_file = []
    for item, (codes, counts) in zip(opened, parts):
        colours = kernels.decode_colours(codes, n_channels, bits, dtype)
        per_file.append(ColourHistogram(colours, counts.astype(np.int64), codes, bits))
        logger.info("%s: %d distinct colours in %d pixels", item.name, len(codes), int(counts.sum()))
    scaled = [(h.codes, h.counts) for h in per_file]
    if weight == "image":
        largest = max(h.n_pixels for h in per_file)
        scaled = [(h.codes, h.counts * max(1, round(_IMAGE_WEIGHT_SCALE * largest / max(1, h.n_pixels))))
                  for h in per_file]
    codes, counts = _merge(scaled)
    joint = ColourHistogram(kernels.decode_colours(codes, n_channels, bits, dtype), counts, codes, bits)
    return joint, per_file


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum sparse histograms (sorted codes, counts) exactly, as int64 counts."""
    codes, counts = kernels.merge_sparse_counts([(c, n.astype(np.int64)) for c, n in parts])
    return codes.astype(np.uint32), counts.astype(np.int64)


def quantize_many(
    srcs: Sequence[Any],
    out_dir: str | os.PathLike[str],
    n_clusters: int | None = None,
    *,
    client: Any = None,
    **options: Any,
) -> ManyResult:
    """Quantize a set of images with one shared palette.

    Parameters
    ----------
    srcs : sequence of str, os.PathLike, ImageSource or array
        The images (anything :func:`bigquant.read_image` opens), all with the
        same bands and data type.
    out_dir : str or os.PathLike
        Folder of the outputs (created if missing): each input's name with
        ``suffix``; or a URL prefix (``s3://bucket/run``), where each output
        is written as :func:`bigquant.write_image` writes a URL.
    n_clusters : int or None, default=None
        Colours of the shared palette (the most allowed with ``quality``).
    suffix : str, default=".tif"
        Output format, one of :func:`bigquant.write_image`'s suffixes, or a
        name ending that ends with one (pngquant's ``"-fs8.png"``).
    weight : {"pixels", "image"}, default="pixels"
        Count every pixel once, or give every image the same weight.
    palette : array-like, str, os.PathLike or None, default=None
        Apply this palette to every file instead of fitting one (see
        :func:`bigquant.quantize`).
    quality : float, (float, float), str or None, default=None
        Choose k as the fewest colours whose set reaches this PSNR (see
        :func:`bigquant.quantize`).
    keep_going : bool, default=False
        Skip unreadable inputs (reported in ``skipped``) instead of failing
        before anything is fitted.
    mask : None, "auto" or False, default=None
        Each file's own masks (None), and slides' tissue ("auto"), or none
        (False); see :func:`bigquant.quantize`.
    mode, tile, compression, pyramid, overviews, nodata_index, rgb_bands, rat, overwrite, client, random_state, strategy
        As :func:`bigquant.quantize`, for every file (``random_state=None``:
        the seed 0, recorded in a JSON ``palette_out``; ``rat``: each palette
        TIFF's attribute table counts that file's own pixels).
    nbits
        As :func:`bigquant.quantize`: bits a palette TIFF's index takes (None:
        the fewest that hold the shared palette and the no-data index).
    display_range, display_palette
        As :func:`bigquant.quantize`: one display for the set, so that an
        index shows the same colour in every file (its percentiles from the
        joint histogram, or the fit's counts).
    chunks, level, series, measure, init, n_init, max_iter, tol
        As :func:`bigquant.quantize` (one request model,
        :mod:`bigquant.pipeline.request`); ``preview``, ``compare`` and
        ``cog`` take one image, and a set is fitted in RGB (``space="rgb"``):
        other values are refused.
    dither, dither_strength
        Dither every file's mapping to the shared palette (see
        :func:`bigquant.quantize`); each file's error and PSNR are then those
        of its dithered pixels.
    palette_out : str, os.PathLike or None, default=None
        Also write the shared palette (``.json`` with every file's error and
        PSNR, or ``.gpl``/``.act``/``.png``).

    Returns
    -------
    ManyResult

    Raises
    ------
    ImageReadError, InvalidInputError, InvalidParameterError, ImageWriteError
        Before any pixel is read: an unreadable input (unless ``keep_going``),
        inputs of different bands or types, outputs that exist (unless
        ``overwrite``), an output that is an input, two inputs of the same
        name, or anything :func:`bigquant.quantize` refuses for one file.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> rng = np.random.default_rng(0)
    >>> a, b = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     result = quantize_many({"a": a, "b": b}.values(), d, 4, random_state=0, suffix=".png")
    ...     sorted(p.name for p in pathlib.Path(d).iterdir())
    ['image0.png', 'image1.png']
    """
    srcs = list(srcs)
    if not srcs:
        raise InvalidParameterError("srcs is empty: give at least one image")
    suffix = str(options.get("suffix", ".tif"))
    options["suffix"] = suffix = suffix if suffix.startswith((".", "-", "_")) else f".{suffix}"
    if pathlib.PurePath(f"x{suffix}").suffix.lower() not in FORMATS:
        raise InvalidParameterError(f"suffix={suffix!r}: use one of {sorted(FORMATS)}")
    out = output_location(out_dir)
    remote = isinstance(out, URLPath)  # a prefix in object storage: no folder to make or check
    if not remote and out.exists() and not out.is_dir():
        raise ImageWriteError(f"{out}: the output folder is a file")
    names = [f"image{i}" if isinstance(s, (np.ndarray, da.Array)) else s for i, s in enumerate(srcs)]
    dsts = [output_path(n, out, suffix) for n in names]
    seen: dict[Any, Any] = {}
    for name, dst in zip(names, dsts):
        if dst in seen:
            raise InvalidParameterError(f"{seen[dst]} and {name} would both be written to {dst}")
        seen[dst] = name
    if options.get("preview") is not None or options.get("compare") is not None or options.get("cog"):
        raise InvalidParameterError("preview, compare and cog take one image: quantize each file, not a set")
    if str(options.get("space", "rgb")).lower() != "rgb":
        raise InvalidParameterError(f"space={options['space']!r}: a set is fitted in RGB; quantize each file")
    request = build_request("quantize_many", srcs, dsts, dict(options, n_clusters=n_clusters))
    # the folder is made only once the request is checked (outputs in a folder to be made cannot exist)
    request = check_request(request, image_targets=remote or out.is_dir())
    fit, write = request.fit, request.write
    images, skipped = open_images(srcs, keep_going=request.set.keep_going, series=request.read.series,
                                  level=request.read.level, chunks=request.read.chunks)
    readable = dataclasses.replace(request, inputs=tuple(srcs[i] for i, _, _ in images),
                                   outputs=tuple(dsts[i] for i, _, _ in images))
    check_sources(readable, [source for _, _, source in images])
    given = load_request_palette(request, images[0][2])
    warn_lossy_output(readable)
    if given is None and fit.random_state is None:
        logger.info("random_state=None: the default seed %d (the same command writes the same bytes)",
                    seed_of(None))
    created = not remote and not out.exists()
    try:
        if not remote:
            out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from exc
    try:
        opened = with_masks(images, request.read.mask, request.read.mask_threshold)
        kept = [dsts[o.index] for o in opened]
        n_channels = int(opened[0].data.shape[-1])
        dtype = opened[0].data.dtype
        params = fit.kmeans_params()
        weight, strategy = request.set.weight, fit.strategy
        dither, dither_strength = request.map.dither, request.map.dither_strength

        with _scheduler(client):
            joint = per_file = None
            if histogram_bits(dtype, n_channels) is not None and strategy in ("auto", "histogram"):
                joint, per_file = joint_histogram(opened, weight)
                if joint.n_pixels == 0:
                    raise InvalidInputError("every pixel of every input is masked: nothing to fit")
            if given is not None:
                shared = given
                if joint is not None:
                    shared.error = palette_error(joint.colours, joint.counts, given.palette)[0]
            elif joint is not None:
                shared = _fit_joint(joint, fit.n_clusters, request.target, request.limit, params)
            else:
                shared = _fit_pixels(opened, fit.n_clusters, weight, params)
            # one display for the set: index i shows the same colour in every file
            shared.display = shown_colours(shared, dtype, write)
            files = []
            for i, (item, dst) in enumerate(zip(opened, kept)):
                hist = per_file[i] if per_file is not None else None
                choice = PaletteChoice(shared.palette, shared.model, hist, None, shared.source, display=shared.display)
                if dither is None:
                    mapper, _ = write_quantized(item.data, item.valid, choice, item.source, dst, write)
                    # the mapper's inertia on this file's histogram: its exact squared error
                    error = None if hist is None else float(mapper.inertia_)
                    n = None if hist is None else hist.n_pixels
                else:
                    error, n = _write_dithered(srcs[item.index], item, choice, dst, write, request.read,
                                               dither, dither_strength, request.map.scratch)
                quality_db = None if n is None else psnr(error, n * n_channels, dtype)
                files.append(FileResult(item.name, str(dst), n, error, quality_db))
                logger.info("wrote %s (%s)", dst, "" if quality_db is None else f"{quality_db:.2f} dB")
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # nothing half-written: not even the folder
        raise
    if dither is not None:  # the joint fit's error is of undithered pixels: the set's is its files'
        known = weight == "pixels" and bool(files) and all(f.error is not None for f in files)
        shared.error = float(sum(f.error for f in files)) if known else None
    result = ManyResult(shared.palette, shared.model, files, skipped, shared.error)
    palette_out = request.report.palette_out
    if palette_out is not None:
        extra = {
            "inputs": [dataclasses.asdict(f) for f in files],
            "skipped": [{"src": s, "reason": r} for s, r in skipped],
            "weight": weight,
            "random_state": None if given is not None else _recorded_seed(fit.random_state),
        }
        for entry in extra["inputs"]:
            if entry["psnr"] is not None and not math.isfinite(entry["psnr"]):
                entry["psnr"] = "inf"
        n_pixels = joint.n_pixels if joint is not None and weight == "pixels" else None
        doc = palette_document(shared, opened[0].source, out, None, write.rgb_bands, n_pixels, extra)
        doc["source"], doc["shape"] = [f.src for f in files], None
        write_palette_out(output_location(palette_out), shared, doc, write.overwrite, dtype,
                          write.rgb_bands)
    return result


def _write_dithered(src: Any, item: Opened, choice: PaletteChoice, dst: pathlib.Path, options: WriteOptions,
                    read: ReadOptions, dither: str, strength: float,
                    scratch: Any = None) -> tuple[float | None, int | None]:
    """Write one file of a set dithered to the shared palette; its squared error and pixel count.

    Floyd--Steinberg gives the error of the pixels written on its way; blue
    noise does not (None, None).
    """
    report: dict[str, Any] = {}
    dither_data = _dither_data(src, item.source, read.chunks, read.level, read.series, read.mask, item.valid,
                               read.mask_threshold)
    with label_spool(dst, dither, scratch=scratch) as spool:
        write_quantized(item.data, item.valid, choice, item.source, dst, options, dither=dither,
                        dither_strength=strength, dither_data=dither_data, report=report, spool=spool)
    sums = report.get("sums")
    if sums is None:
        return None, None
    return float(sums[0]), int(sums[2])


def _fit_joint(joint: ColourHistogram, n_clusters: int | None, target: Any, limit: int,
               params: dict[str, Any]) -> PaletteChoice:
    """One fit on the joint histogram: k colours, or the fewest reaching the quality target."""
    if target is not None:
        return choose_palette(joint, target, n_clusters, limit, params)
    return histogram_choice(joint, n_clusters, params)


def _fit_pixels(opened: Sequence[Opened], n_clusters: int | None, weight: str, params: dict[str, Any]) -> PaletteChoice:
    """One fit on the pixels of every file (data without an exact histogram)."""
    from bigquant.cluster.kmeans import KMeans

    if n_clusters is None:
        raise InvalidParameterError("quality= needs 8-bit data (an exact colour histogram): give n_clusters")
    n_channels = int(opened[0].data.shape[-1])
    samples, weights = [], []
    for item in opened:
        flat = da.asarray(item.data).reshape(-1, n_channels)
        samples.append(flat)
        n = math.prod(item.data.shape[:2])
        w = da.ones(n, chunks=flat.chunks[0], dtype=np.float64)
        if item.valid is not None:
            w = da.asarray(item.valid).reshape(-1).rechunk(flat.chunks[0]).astype(np.float64)
        if weight == "image":
            w = w / n
        weights.append(w)
    X = da.concatenate(samples)
    sample_weight = da.concatenate(weights) if weight == "image" or any(o.valid is not None for o in opened) else None
    model = KMeans(n_clusters, **params).fit(X, sample_weight=sample_weight)
    pal, _ = model.palette()
    return PaletteChoice(pal, model, None, None)


apply_signature("quantize_many", quantize_many)
