"""The end-to-end pipeline: source image -> fitted palette -> written image.

``quantize`` reads lazily (:func:`bigquant.read_image`), fits
:class:`bigquant.KMeans` on the pixels, and streams the labels to the output
(:func:`bigquant.write_image`).  With the histogram strategy (8-bit data) the
source pixels are read exactly twice: once to count colours, once to map and
write.  The palette (JSON) and a small preview PNG come from the same passes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import dask.array as da
import numpy as np

from bigquant.errors import ImageWriteError, InvalidInputError, InvalidParameterError
from bigquant.io.atomic import atomic_output, check_target
from bigquant.io.chunks import ChunksLike
from bigquant.io.encode import LabelLookup, resolve_codec
from bigquant.pipeline.dither import DITHER_CHUNK, check_dither, dither_labels
from bigquant.pipeline.masks import resolve_mask
from bigquant.pipeline.report import quality_from_histogram, quality_from_sums, quality_pass, write_compare
from bigquant.pipeline.space import check_space, fit_in_space
from bigquant.io.palette import MAX_PALETTE, as_colours, index_dtype
from bigquant.io.read import read_image
from bigquant.io.source import ImageSource
from bigquant.io.write import FORMATS, check_tile, write_image

__all__ = ["quantize", "palette_colours"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _scheduler(client: Any) -> Iterator[None]:
    """Make ``client`` the scheduler of every compute in the block."""
    if client is None:
        yield
        return
    # Only the context-local current client (what Client.as_current sets), no
    # global dask.config.set: a nanny restarting a killed worker pickles the
    # global config (a Client in it cannot be pickled), and concurrent jobs
    # entering and leaving a global setting in threads leave it set for good.
    from distributed.client import _current_client

    token = _current_client.set(client)
    try:
        yield
    finally:
        _current_client.reset(token)


def _release_freed_memory() -> None:
    """Return the heap memory freed by the fit to the OS (glibc only; else a no-op).

    The fit allocates and frees hundreds of MB of temporaries in this process;
    glibc keeps much of it mapped, which would count in the peak memory of the
    write pass that follows.  Dask workers do the same (MALLOC_TRIM_THRESHOLD_).
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc without malloc_trim
        pass


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


def _label_lookup(model: Any, data: Any, dst: pathlib.Path) -> tuple[LabelLookup, Any] | None:
    """The fitted colour -> label table for the TIFF writer to look labels up itself.

    The writer then maps and encodes each tile while it is in cache, and no
    chunk of labels is ever held; the labels are those of ``model.labels_``
    (same table, same nearest-centre fallback).  None when the model has no
    table (pixel strategies) or the output is not a TIFF.
    """
    import dask.array as da

    if FORMATS.get(dst.suffix.lower()) != "tiff" or not isinstance(data, da.Array):
        return None
    if not isinstance(getattr(model, "labels_", None), da.Array):
        return None
    get_lut = getattr(model, "lookup_table", None)
    table = get_lut() if get_lut is not None else None
    if table is None:
        return None
    _, bits, sentinel = table
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    return LabelLookup(int(bits), int(sentinel), centers), model.lookup_table_key()


def _nothing_masked(model: Any, valid: Any) -> bool:
    """True when the mask keeps every pixel (known from the histogram, else one pass over it)."""
    histogram = getattr(model, "histogram_", None)
    if histogram is not None:
        return histogram.n_pixels == int(np.prod(valid.shape))
    return bool(valid.all().compute())


def _cheap_sums(model: Any, colours: np.ndarray, dither: str | None) -> np.ndarray | None:
    """Quality sums of an undithered histogram fit, from its distinct colours (no pass over pixels)."""
    hist = getattr(model, "histogram_", None)
    if dither is not None or hist is None or hist.colours.shape[1] != colours.shape[1]:
        return None
    estimator = getattr(model, "estimator_", None)
    if estimator is not None:  # a fit in a colour space: the labels of the distinct colours
        labels = np.asarray(estimator.labels_).reshape(-1)
    else:
        labels = np.asarray(model.predict(hist.colours)).reshape(-1)
    return quality_from_histogram(hist.colours, hist.counts, labels, colours)


def _check_ditherable(source: ImageSource, rgb_bands: Sequence[int] | None, dither: str) -> None:
    """Dithering needs integer pixels whose bands are the palette's colours."""
    if np.dtype(source.dtype) not in (np.uint8, np.uint16):
        raise InvalidParameterError(
            f"dither={dither!r} needs uint8 or uint16 pixels; {source.path or 'the array'} is {source.dtype}"
        )
    if source.channels not in (1, 3) or rgb_bands is not None:
        raise InvalidParameterError(
            f"dither={dither!r} needs an image of 1 or 3 bands shown as they are (the palette's); "
            f"this one has {source.channels}" + (f" shown as rgb_bands={tuple(rgb_bands)}" if rgb_bands else "")
        )


def _dithered(
    src: Any,
    source: ImageSource,
    chunks: ChunksLike,
    level: int,
    series: int | None,
    mask: Any,
    masked: bool,
    colours: np.ndarray,
    dither: str,
    strength: float,
    nodata_index: int | None,
    with_sums: bool,
) -> tuple[Any, np.ndarray | None]:
    """Dithered labels (no-data where masked) of the source, read in chunks the dither works in,
    and the quality sums when the dither gives them."""
    dsource = source
    if chunks is None and max(source.data.chunksize[:2]) > DITHER_CHUNK and not isinstance(src, ImageSource):
        # smaller chunks read as such (not split out of big ones once per band)
        dsource = read_image(src, chunks=DITHER_CHUNK, level=level, series=series)
    data = dsource.data if dsource.data.ndim == 3 else dsource.data[:, :, None]
    valid = resolve_mask(dsource, mask) if masked else None
    nodata = None
    if valid is not None:
        nodata = len(colours) if nodata_index is None else int(nodata_index)
    dtype = index_dtype(len(colours) if nodata is None else nodata + 1)
    result = dither_labels(data, colours, method=dither, strength=strength, valid=valid, dtype=dtype,
                           with_sums=with_sums)
    labels, sums = result if with_sums else (result, None)
    if valid is not None:
        labels = da.where(valid, labels, nodata).astype(dtype)
    return labels, sums


def _write_palette_json(
    path: pathlib.Path,
    colours: np.ndarray,
    model: Any,
    source: ImageSource,
    dst: pathlib.Path,
    overwrite: bool,
    nodata_index: int | None = None,
) -> None:
    doc = {
        "n_colours": int(len(colours)),
        "dtype": str(colours.dtype),
        "colours": colours.tolist(),
        "centres": np.asarray(model.cluster_centers_, dtype=float).tolist(),
        "bands": int(np.shape(model.cluster_centers_)[1]),
        "nodata_index": nodata_index,
        "inertia": float(getattr(model, "inertia_", float("nan"))),
        "n_iter": int(getattr(model, "n_iter_", 0)),
        "strategy": getattr(model, "strategy_", getattr(model, "strategy", None)),
        "space": getattr(model, "space_", "rgb"),
        "quality": getattr(model, "quality_", None),
        "source": str(source.path) if source.path is not None else None,
        "series": source.series,
        "level": source.level,
        "shape": list(source.shape),
        "output": str(dst),
    }
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")


def quantize(
    src: Any,
    dst: str | os.PathLike[str],
    n_clusters: int,
    *,
    strategy: Literal["auto", "histogram", "pixels", "minibatch"] = "auto",
    mode: Literal["palette", "rgb"] = "palette",
    client: Any = None,
    random_state: Any = None,
    tile: int = 512,
    compression: str | None = "zlib",
    pyramid: bool | int = False,
    overwrite: bool = False,
    palette_out: str | os.PathLike[str] | None = None,
    preview: str | os.PathLike[str] | None = None,
    chunks: ChunksLike = None,
    level: int = 0,
    series: int | None = None,
    mask: Any = None,
    nodata_index: int | None = None,
    overviews: bool | int = False,
    cog: bool = False,
    rgb_bands: Sequence[int] | None = None,
    dither: Literal["floyd-steinberg", "blue-noise"] | None = None,
    dither_strength: float = 0.9,
    space: Literal["rgb", "oklab", "lab"] = "rgb",
    quality: bool | None = None,
    compare: str | os.PathLike[str] | None = None,
    **kmeans_kwargs: Any,
) -> Any:
    """Quantize an image of any size to ``n_clusters`` colours and write it.

    Parameters
    ----------
    src : str, os.PathLike, ImageSource or array
        The image: anything :func:`bigquant.read_image` opens (TIFF, zarr,
        PNG/JPEG, numpy or dask array of shape (H, W, C) or (H, W)).
    dst : str or os.PathLike
        Output file (``.tif``, ``.zarr``, ``.png``, ``.jpg``); see
        :func:`bigquant.write_image`.
    n_clusters : int
        Number of colours k.
    strategy : {"auto", "histogram", "pixels", "minibatch"}, default="auto"
        Fitting strategy of :class:`bigquant.KMeans`.
    mode : {"palette", "rgb"}, default="palette"
        Indexed output with a colormap, or the palette colours per pixel.
    client : distributed.Client or None, default=None
        Cluster to run on; None uses the current default scheduler (a
        ``Client`` already created, else dask's threads).
    random_state : int, numpy Generator or None, default=None
        Seed of the initialisation.
    tile : int, default=512
        Output tile edge in pixels, a multiple of 16.
    compression : str or None, default="zlib"
        Output compression (see :func:`bigquant.write_image`).
    pyramid : bool or int, default=False
        Add SubIFD pyramid levels to TIFF output.
    overwrite : bool, default=False
        Replace existing outputs.
    palette_out : str, os.PathLike or None, default=None
        Also write the palette and fit summary as JSON.
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
        tissue found by Otsu's threshold on a low-resolution level
        (:func:`bigquant.io.mask.background_mask`).  An array or a file (TIFF,
        PNG, zarr) of the image's (H, W) shape: those and its non-zero pixels.
        False: every pixel is image.
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
    rgb_bands : sequence of 3 int or None, default=None
        Bands of a multi-band image shown as the palette's colours; None: the
        first three.  The fit uses every band, and ``palette_out`` keeps the
        full-band centres.
    dither : {None, "floyd-steinberg", "blue-noise"}, default=None
        Map pixels to the palette with dithering instead of to the nearest
        colour.  "floyd-steinberg": exact error diffusion, byte-identical to
        the serial reference :func:`bigquant.kernels.dither.floyd_steinberg`
        whatever the chunking, workers or scheduler (tile-parallel, see
        :mod:`bigquant.pipeline.dither`; it reads the pixels twice more).
        "blue-noise": ordered dithering with a tiled blue-noise mask, one
        pass, faster.  Masked pixels neither receive nor pass error.  Needs
        uint8 or uint16 pixels with 1 or 3 bands (the palette's).
    dither_strength : float, default=0.9
        In [0, 1]: the fraction of the error diffused (or of the palette's
        spacing used as noise amplitude).  0.9 rather than 1: undamped error
        piles up in smooth areas until a far colour is picked (stray dots);
        on astronaut and coffee 0.9 gives 1.4-1.8 dB more PSNR after a blur of
        sigma = 1 px than 1.0 at k = 16 and 64.
    space : {"rgb", "oklab", "lab"}, default="rgb"
        Colour space of the fit, the lookup table and the pixel -> palette
        mapping (:mod:`bigquant.pipeline.space`); the palette is stored as
        sRGB colours either way.  8-bit input keeps the exact-histogram
        strategy (distinct colours transformed once, weighted by counts).
        "rgb" (the default) gives the highest PSNR; "oklab" the lowest
        perceptual error (mean Delta E in OKLab) -- see the README's quality
        tables.  Needs a 3-band image; the returned model is then a
        :class:`bigquant.pipeline.space.SpaceKMeans`.
    quality : bool or None, default=None
        Measure the result: PSNR and mean Delta E in OKLab of the written
        colours against the source (``model.quality_``, and in
        ``palette_out``; :mod:`bigquant.pipeline.report`).  None: only when it
        costs no pass over the pixels (a histogram fit without dithering, or
        Floyd--Steinberg); True: always (else one more pass); False: never.
    compare : str, os.PathLike or None, default=None
        Also write a PNG of the image's centre crop (512 x 512 at full
        resolution): source on the left, result on the right.
    **kmeans_kwargs
        Other :class:`bigquant.KMeans` parameters (``init``, ``max_iter``,
        ``tol``, ``n_init``...).

    Returns
    -------
    model : KMeans
        The fitted estimator; ``model.cluster_centers_`` is the palette before
        rounding, in every band; ``model.quality_`` is the quality measured
        (``{"psnr", "delta_e_ok", "pixels"}``) or None.  A GeoTIFF source's georeferencing (CRS,
        transform, GDAL metadata) is carried to TIFF output.

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
    from bigquant.cluster.kmeans import KMeans

    dst_path = pathlib.Path(dst).expanduser()
    # fail fast, before reading a pixel: outputs, tile, compression, mode
    if mode not in ("palette", "rgb"):
        raise InvalidParameterError(f"mode={mode!r} must be 'palette' or 'rgb'")
    known = list(KMeans().get_params())
    unknown = sorted(set(kmeans_kwargs) - set(known))
    if unknown:
        raise InvalidParameterError(
            f"unknown parameter(s) {', '.join(unknown)}; quantize passes the others to KMeans, "
            f"which takes {', '.join(known)}"
        )
    check_tile(tile)
    # k above what the output holds would fail only after the (long) fit
    limit = 256 if mode == "palette" and dst_path.suffix.lower() == ".png" else MAX_PALETTE
    if isinstance(n_clusters, (int, np.integer)) and n_clusters > limit:
        raise InvalidParameterError(
            f"n_clusters={n_clusters} is above the {limit} colours a {mode} "
            f"{dst_path.suffix or 'output'} file can hold"
        )
    if dst_path.suffix.lower() in (".tif", ".tiff", ".btf", ".tf8", ".zarr"):
        codec = resolve_codec(compression, None)
        if mode == "palette" and codec.lossy_image:
            raise InvalidParameterError(
                f"compression={compression!r} is lossy and would corrupt palette indices; "
                "use 'zlib' or mode='rgb'"
            )
    elif dst_path.suffix.lower() not in FORMATS:
        raise ImageWriteError(
            f"{dst_path}: unsupported output suffix {dst_path.suffix!r}; use one of {sorted(FORMATS)}"
        )
    outputs = [dst_path] + [pathlib.Path(p).expanduser() for p in (palette_out, preview, compare) if p]
    if len(set(outputs)) != len(outputs):
        raise InvalidParameterError(f"dst, palette_out, preview and compare must differ: {outputs}")
    for out in outputs:
        check_target(out, overwrite=overwrite)

    dither, dither_strength = check_dither(dither, dither_strength)
    space = check_space(space)
    if space != "rgb" and rgb_bands is not None:
        raise InvalidParameterError(f"space={space!r} fits the 3 colour bands; it does not take rgb_bands")
    if nodata_index is not None and (isinstance(nodata_index, bool) or not isinstance(nodata_index, (int, np.integer))
                                     or isinstance(n_clusters, (int, np.integer)) and nodata_index < n_clusters):
        raise InvalidParameterError(
            f"nodata_index={nodata_index!r} must be an int outside the palette (>= n_clusters={n_clusters})"
        )

    source = src if isinstance(src, ImageSource) and chunks is None else read_image(
        src, chunks=chunks, level=level, series=series
    )
    if rgb_bands is not None:
        display_bands(source.channels, rgb_bands)  # checked before the fit
    if dither is not None:
        _check_ditherable(source, rgb_bands, dither)
    if space != "rgb" and source.channels != 3:
        raise InvalidParameterError(
            f"space={space!r} needs an RGB image of 3 bands; {source.path or 'the array'} has {source.channels}"
        )
    data = source.data
    if data.ndim == 2:
        data = data[:, :, None]  # KMeans reads 2-D arrays as (n_samples, n_channels)
    valid = resolve_mask(source, mask)
    if valid is not None and data.dtype.kind == "f":
        data = da.where(valid[:, :, None], data, 0)  # masked NaN would poison the sums, weight 0 or not
    logger.info(
        "quantize %s: %s %s to k=%d (%s), chunks %s, %s",
        source.path or "array", source.shape, source.dtype, n_clusters, strategy, data.chunksize,
        "masked" if valid is not None else "no mask",
    )
    with _scheduler(client):
        t0 = time.perf_counter()
        try:
            if space == "rgb":
                model = KMeans(
                    n_clusters, strategy=strategy, random_state=random_state, **kmeans_kwargs
                ).fit(data, sample_weight=valid)
            else:
                model = fit_in_space(data, n_clusters, space, valid=valid, strategy=strategy,
                                     random_state=random_state, **kmeans_kwargs)
        except InvalidInputError as exc:
            if "every sample is masked" in str(exc):
                raise InvalidInputError(
                    f"{source.path or 'array'}: every pixel is masked (alpha, nodata or mask): nothing to fit"
                ) from exc
            raise
        t1 = time.perf_counter()
        logger.info(
            "fitted %d colours in %.1f s (%s iterations)",
            len(model.cluster_centers_), t1 - t0, getattr(model, "n_iter_", "?"),
        )
        _release_freed_memory()
        colours = palette_colours(model.cluster_centers_, source.dtype, rgb_bands)
        nodata = None
        if valid is not None and _nothing_masked(model, valid):
            valid = None  # e.g. float data without a NaN: no index reserved for nothing
        want_quality = quality is not False and colours.shape[-1] == data.shape[2]
        sums = None
        if dither is not None:
            labels, sums = _dithered(src, source, chunks, level, series, mask, valid is not None, colours,
                                     dither, dither_strength, nodata_index, want_quality)
            nodata = None if valid is None else (len(colours) if nodata_index is None else int(nodata_index))
            lookup = None
        elif valid is not None:
            nodata = len(colours) if nodata_index is None else int(nodata_index)
            labels = da.where(valid, model.labels_, nodata)
            labels = labels.astype(index_dtype(nodata + 1))
            lookup = None
        else:
            labels = model.labels_
            lookup = _label_lookup(model, data, dst_path)
        write_image(
            data if lookup is not None else labels,
            dst_path,
            palette=colours,
            mode=mode,
            tile=tile,
            compression=compression,
            pyramid=pyramid,
            overwrite=overwrite,
            preview=preview,
            nodata=nodata,
            geotiff=source.geotiff,
            overviews=overviews,
            cog=cog,
            _lookup=lookup,
        )
        logger.info("wrote %s in %.1f s", dst_path, time.perf_counter() - t1)
        _release_freed_memory()
        if want_quality and sums is None:
            sums = _cheap_sums(model, colours, dither)
            if sums is None and quality:
                # one more pass over the pixels and their labels
                sums = quality_pass(data, model.labels_ if dither is None else labels, colours, valid)
        model.quality_ = None
        if sums is not None:
            peak = float(np.iinfo(source.dtype).max) if np.dtype(source.dtype).kind in "ui" else 1.0
            model.quality_ = quality_from_sums(sums, data.shape[2], peak)
            logger.info("quality: %s", model.quality_)
        if compare is not None:
            write_compare(compare, data, labels if lookup is None else model.labels_, colours,
                          nodata=nodata, overwrite=overwrite)
    if palette_out is not None:
        _write_palette_json(
            pathlib.Path(palette_out).expanduser(), colours, model, source, dst_path, overwrite, nodata
        )
    return model

