"""``write_image``: labels + palette (or a plain image) -> TIFF, zarr, PNG, JPEG."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numpy as np

from bigquant import tasks
from bigquant.errors import (
    ImageWriteError,
    InputTypeError,
    InvalidInputError,
    InvalidParameterError,
)
from bigquant.io.atomic import atomic_output, check_target
from bigquant.io.chunks import DEFAULT_CHUNK_EDGE
from bigquant.io.compute import current_scheduler
from bigquant.io.encode import (
    BlockEncoder,
    Codec,
    LabelLookup,
    align_to_tiles,
    preview_step,
    pyramid_steps,
    resolve_codec,
)
from bigquant.io.geotiff import GeoTiff, nodata_tag
from bigquant.io.metadata import ImageMetadata, check_ome_layout, is_ome_name
from bigquant.io.objects import output_location
from bigquant.io.palette import as_colours, check_nodata, index_bits, index_dtype, tiff_colormap, with_nodata
from bigquant.io.png_write import PngLayout, PngRowEncoder, check_level, metadata_chunks, png_layout, write_png
from bigquant.io.reach import scheduler_client, unreachable_workers
from bigquant.io.source import ImageSource

if TYPE_CHECKING:
    from bigquant.io.tiff_write import Layout

__all__ = ["FORMATS", "check_tile", "save_preview", "write_image"]

logger = logging.getLogger(__name__)

FORMATS = {
    ".tif": "tiff", ".tiff": "tiff", ".btf": "tiff", ".tf8": "tiff",
    ".zarr": "zarr", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg",
}


def _as_dask(data: Any, tile: int) -> da.Array:
    if isinstance(data, ImageSource):
        data = data.data
    if isinstance(data, da.Array):
        return data
    if isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        arr = np.asarray(data)
        if arr.ndim < 2:
            raise InvalidInputError(f"data of shape {arr.shape} is not an image")
        edge = max(tile, DEFAULT_CHUNK_EDGE // tile * tile)
        return da.from_array(arr, chunks=(edge, edge) + arr.shape[2:])
    raise InputTypeError(f"data of type {type(data).__name__} is not an array or ImageSource")


def check_tile(tile: Any) -> int:
    if isinstance(tile, (tuple, list)) and len(tile) == 2 and tile[0] == tile[1]:
        tile = tile[0]
    if not isinstance(tile, (int, np.integer)) or isinstance(tile, bool) or tile < 16 or tile % 16:
        raise InvalidParameterError(f"tile={tile!r} must be a positive multiple of 16")
    return int(tile)


def _photometric(
    kind: str, n_samples: int, *, alpha: bool = False
) -> tuple[str, tuple[str, ...] | None]:
    """TIFF Photometric and ExtraSamples of stored pixels (``alpha``: the last
    sample is a no-data alpha added to the colours)."""
    if kind == "palette":
        return "palette", None
    if alpha:
        n_colour = n_samples - 1
        base = 3 if n_colour >= 3 else 1
        extra = ("unspecified",) * (n_colour - base) + ("unassalpha",)
        return ("rgb" if base == 3 else "minisblack"), extra
    if n_samples in (3, 4):
        return "rgb", ("unassalpha",) * (n_samples - 3) or None
    if n_samples == 2:
        return "minisblack", ("unassalpha",)
    return "minisblack", None


def _rgba(pix: np.ndarray) -> np.ndarray:
    """RGBA of pixels whose last sample is alpha (grey replicated, a fourth
    colour sample dropped)."""
    colour, alpha = pix[..., :-1], pix[..., -1:]
    colour = colour[..., :3] if colour.shape[2] >= 3 else np.repeat(colour[..., :1], 3, axis=2)
    return np.concatenate([colour, alpha], axis=2)


def _entries_of(pixels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The palette entry of each pixel of stored colours (``table``'s rows; the first of equal rows)."""
    samples = table.shape[1]
    flat = np.asarray(pixels).reshape(-1, samples).astype(np.uint64)
    shifts = (np.arange(samples, dtype=np.uint64) * np.uint64(16))
    keys = (table.astype(np.uint64) << shifts).sum(axis=1, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    found = np.searchsorted(keys[order], (flat << shifts).sum(axis=1, dtype=np.uint64))
    entries = order[np.minimum(found, len(order) - 1)]
    return entries.reshape(np.shape(pixels)[:2]).astype(index_dtype(len(table)))


def save_preview(
    pixels: np.ndarray,
    path: pathlib.Path,
    *,
    colours: np.ndarray | None = None,
    size: int = 1024,
    overwrite: bool = False,
    alpha: bool = False,
) -> pathlib.Path:
    """Save a small PNG of ``pixels`` (palette indices when ``colours`` given).

    ``alpha``: the last sample (of the pixels, or of the colours) is alpha,
    e.g. transparent no-data (:func:`bigquant.io.palette.with_nodata`); the
    preview is then RGBA.
    """
    from PIL import Image

    img = colours[pixels] if colours is not None else np.asarray(pixels)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        lo, hi = float(np.min(img)), float(np.max(img))
        img = ((img - lo) * (255.0 / max(hi - lo, 1e-12))).astype(np.uint8)
    if alpha:
        img = _rgba(img)
    elif img.ndim == 3 and img.shape[2] not in (3, 4):
        img = img[..., :3] if img.shape[2] > 4 else img[..., 0]
    pil = Image.fromarray(np.ascontiguousarray(img))
    pil.thumbnail((size, size), Image.Resampling.LANCZOS)
    with atomic_output(path, overwrite=overwrite) as tmp:
        pil.save(tmp, format="PNG")
    return path


def _write_zarr(
    arr: da.Array,
    tmp: pathlib.Path,
    encoder: BlockEncoder,
    sample_shape: tuple[int, ...],
    attrs: dict[str, Any],
) -> None:
    """Write the zarr store ``tmp``: its metadata here, its chunks by the workers.

    Before any chunk, every worker proves that what it writes into ``tmp``
    reaches this process (:func:`bigquant.io.reach.unreachable_workers`; the
    sentinels live inside the temporary store, so nothing outlives it).
    Where one does not (another machine, a private mount), the workers only
    compute the chunks and this process stores them, a band of chunk rows
    at a time (:func:`_store_through_client`) -- never a store whose chunks
    went elsewhere and read as zeros.
    """
    import zarr
    from zarr.codecs import ZstdCodec

    codec = encoder.codec
    if codec.tag == 1:
        compressors: Any = None
    elif codec.name == "adobe_deflate":
        # numcodecs' Zlib, not zarr's GzipCodec: gzip headers carry the write
        # time, so two writes of the same data would differ byte for byte
        import warnings

        from numcodecs.zarr3 import Zlib

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
            compressors = Zlib(level=1 if codec.level is None else codec.level)
    elif codec.name == "zstd":
        compressors = ZstdCodec(level=3 if codec.level is None else codec.level)
    else:
        logger.info("zarr output: compression %r not available, using zarr's default", codec.name)
        compressors = "auto"
    t = encoder.tile
    shape = tuple(arr.shape[:2]) + sample_shape
    if encoder.kind == "palette" or (encoder.kind == "rgb" and not sample_shape):
        mapped = arr.map_blocks(encoder.pixels, dtype=encoder.out_dtype, token=tasks.WRITE,
                                drop_axis=2 if arr.ndim == 3 else None)
    elif encoder.kind == "rgb":
        mapped = arr.map_blocks(encoder.pixels, dtype=encoder.out_dtype, token=tasks.WRITE, new_axis=2,
                                chunks=arr.chunks[:2] + (sample_shape,))
    else:
        mapped = arr.map_blocks(encoder.pixels, dtype=encoder.out_dtype, token=tasks.WRITE)
    z = zarr.create_array(
        store=str(tmp),
        shape=shape,
        chunks=(t, t) + sample_shape,
        dtype=encoder.out_dtype,
        compressors=compressors,
        attributes=attrs,
        fill_value=0,
    )
    unseen = unreachable_workers(tmp, collections=[mapped])
    if unseen:
        # a worker writing its chunks here would write them where the client never looks
        logger.warning(
            "zarr output: the workers do not see %s (%d of them: %s); their chunks are stored by the client, "
            "a band of chunks at a time", tmp.parent, len(unseen), "; ".join(sorted(set(unseen.values()))),
        )
        _store_through_client(mapped, z)
    else:
        da.store(mapped, z, lock=False, compute=True)


def _store_through_client(mapped: da.Array, z: Any) -> None:
    """Compute ``mapped`` one band of chunk rows at a time and store it into ``z`` here.

    The workers compute; the client writes.  At most two bands are in memory:
    the one being stored and the next one, computed meanwhile.  Bands hold
    whole zarr chunks (the chunks of ``mapped`` are multiples of them).
    """
    client = scheduler_client([mapped])
    rows = np.cumsum((0,) + tuple(mapped.chunks[0])).tolist()
    bands = list(zip(rows[:-1], rows[1:]))

    def start(i: int) -> Any:
        y0, y1 = bands[i]
        band = mapped[y0:y1]
        return client.compute(band) if client is not None else band

    def result(pending: Any) -> np.ndarray:
        return np.asarray(pending.result() if client is not None else
                          pending.compute(scheduler=current_scheduler([pending])))

    pending = start(0) if bands else None
    following = None
    try:
        for i, (y0, y1) in enumerate(bands):
            following = start(i + 1) if i + 1 < len(bands) else None
            z[y0:y1] = result(pending)
            pending, following = following, None
    finally:  # interrupted or failed: nothing keeps computing for a store that is gone
        for left in (pending, following):
            if client is not None and left is not None:
                left.cancel()


def _write_jpeg(
    arr: da.Array, tmp: pathlib.Path, encoder: BlockEncoder, colours: np.ndarray | None,
    metadata: ImageMetadata | None = None,
) -> np.ndarray:
    """Write a JPEG with Pillow (the whole image in memory); return what was
    computed (labels or pixels).

    JPEG has no palette and no transparency: palette images are written as
    their colours, no-data pixels black.  ``metadata`` gives the ICC profile
    (APP2) when it fits the pixels written.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    npx = int(arr.shape[0]) * int(arr.shape[1])
    if limit is not None and npx > limit:
        raise ImageWriteError(
            f"{tmp.name}: {npx / 1e6:.0f} MP is too large for JPEG output "
            f"(Pillow's limit is {limit / 1e6:.0f} MP); write a .png, .tif or .zarr instead"
        )
    labels_or_pixels = np.asarray(arr.compute(scheduler=current_scheduler([arr])))
    if encoder.kind == "image":
        pix = labels_or_pixels
    else:
        if encoder.kind == "palette":
            logger.info("JPEG has no palette: writing the palette colours")
        assert colours is not None
        table = colours if encoder.nodata is None else with_nodata(colours, encoder.nodata)
        enc = dataclasses.replace(encoder, kind="rgb", out_dtype=table.dtype, colours=table,
                                  steps=(), lookup=None)
        pix = enc.pixels(labels_or_pixels)
        if encoder.nodata is not None:
            pix = _rgba(pix)[..., :3]
            logger.info("JPEG has no transparency: no-data pixels are black")
    if pix.dtype != np.uint8:
        raise InputTypeError(f"JPEG output needs 8-bit samples, got {pix.dtype}")
    if pix.ndim == 3 and pix.shape[2] == 1:
        pix = pix[..., 0]
    if pix.ndim == 3 and pix.shape[2] not in (3, 4):
        raise InputTypeError(
            f"JPEG output needs grey or RGB samples, got {pix.shape[2]} a pixel; write a .tif instead"
        )
    save_args: dict[str, Any] = {}
    icc = None if metadata is None else metadata.icc_for("gray" if pix.ndim == 2 else "rgb")
    if icc is not None:
        save_args["icc_profile"] = icc
    Image.fromarray(np.ascontiguousarray(pix if pix.ndim == 2 else pix[..., :3])).save(tmp, format="JPEG",
                                                                                        **save_args)
    return labels_or_pixels


def _png_metadata(metadata: ImageMetadata | None, png: PngLayout | None) -> list[tuple[bytes, bytes]]:
    """A PNG output's iCCP (a profile of the pixels' colour space) and pHYs chunks."""
    if metadata is None or png is None:
        return []
    grey = png.colour_type in (0, 4)
    return metadata_chunks(metadata.icc_for("gray" if grey else "rgb"), metadata.pixels_per_metre())


def _reduced_levels(
    fmt: str, pyramid: bool | int, overviews: bool | int, cog: bool, codec: Codec
) -> tuple[Layout, bool | int, str]:
    """Check the reduced-level parameters: (layout, how many levels, its parameter name)."""
    if not isinstance(cog, (bool, np.bool_)):
        raise InvalidParameterError(f"cog={cog!r} must be a bool")
    for name, value in (("pyramid", pyramid), ("overviews", overviews), ("cog", cog)):
        if value and fmt != "tiff":
            raise InvalidParameterError(f"{name}={value!r} is only supported for TIFF output")
    if pyramid and (overviews or cog):
        raise InvalidParameterError(
            f"pyramid={pyramid!r} (SubIFDs) cannot be combined with overviews={overviews!r} "
            f"or cog={cog!r} (overview IFDs); choose one"
        )
    if cog:
        if not codec.pre_encoded:
            raise InvalidParameterError(
                f"cog=True cannot use compression={codec.name!r}: a COG needs tiles bigquant "
                "encodes itself ('zlib', 'zstd', 'lzma', 'lzw', 'packbits' or None)"
            )
        return "cog", overviews if overviews else True, "overviews"
    if overviews:
        return "overviews", overviews, "overviews"
    return "subifds", pyramid, "pyramid"


def _tiff_tags(
    geotiff: GeoTiff | None, nodata: int | None
) -> list[tuple[Any, ...]]:
    """Extratags of the full-resolution IFD: GeoTIFF and GDAL_NODATA."""
    if geotiff is not None:
        return geotiff.extratags(nodata)
    return [nodata_tag(nodata)] if nodata is not None else []


def write_image(
    data: Any,
    path: str | os.PathLike[str],
    *,
    palette: Any = None,
    mode: Literal["palette", "rgb"] = "palette",
    tile: int = 512,
    compression: str | None = "zlib",
    compression_level: int | None = None,
    pyramid: bool | int = False,
    overwrite: bool = False,
    preview: str | os.PathLike[str] | None = None,
    preview_size: int = 1024,
    nodata: int | None = None,
    geotiff: GeoTiff | None = None,
    overviews: bool | int = False,
    cog: bool = False,
    display: Any = None,
    metadata: ImageMetadata | None = None,
    nbits: int | None = None,
    _lookup: tuple[LabelLookup, Any] | None = None,
    _counts: np.ndarray | None = None,
    _labeller: Any = None,
    _measured: list[np.ndarray] | None = None,
) -> pathlib.Path:
    """Write labels with a palette, or an image as is, in one streaming pass.

    Parameters
    ----------
    data : dask.array.Array, numpy.ndarray or ImageSource
        Integer labels of shape (H, W) when ``palette`` is given (e.g.
        ``KMeans.labels_``), otherwise an image (H, W) or (H, W, C) written as
        is.  Dask arrays are computed one band of tile rows at a time.
    path : str or os.PathLike
        Output file; the suffix picks the format: ``.tif``/``.tiff`` (tiled
        BigTIFF; an OME-TIFF when named ``*.ome.tif``/``*.ome.tiff``),
        ``.zarr`` (zarr v3 array, tile-sized chunks), ``.png`` (any size,
        streamed: :mod:`bigquant.io.png_write`) or ``.jpg`` (small images
        only, written by Pillow).  A URL (``s3://``, ``gs://``, ``az://``,
        ``abfs://``, ``memory://``) is written there as atomically as a file
        (:mod:`bigquant.io.objects`): zarr chunks by the workers, other
        formats written locally on the client and uploaded in parts.
    palette : array-like of shape (k, C) or None, default=None
        Colours of the labels (C in 1, 3, 4), e.g. ``KMeans.cluster_centers_``;
        rounded and clipped to uint8 (or uint16 when a value exceeds 255, or
        kept when given as uint8/uint16).  A palette PNG reads 4 samples as
        RGBA: each entry's alpha goes to its tRNS chunk (a palette TIFF's
        colormap holds no alpha: the fourth sample is dropped there);
        ``mode="rgb"`` writes 4 samples as RGBA (TIFF: ExtraSamples =
        unassociated alpha).
    mode : {"palette", "rgb"}, default="palette"
        "palette": an indexed image (TIFF colormap, indices packed 1, 2 or 4
        bits to a byte up to 16 entries (see ``nbits``), uint8 up to 256,
        uint16 up to 65536; zarr stores indices and the palette
        in its attributes; PNG: up to 256 colours at 1, 2, 4 or 8 bits per
        index, the alpha of a 4-channel palette in tRNS).  "rgb": the palette
        colours of every pixel.
    tile : int, default=512
        Tile edge in pixels (TIFF tiles, zarr chunks); a multiple of 16.
    compression : str or None, default="zlib"
        TIFF and zarr: "zlib" (deflate), "lzma", None, or a codec of the
        optional ``imagecodecs`` package ("zstd", "webp", "jpeg"...).  PNG is
        always deflate, JPEG always JPEG.
    compression_level : int or None, default=None
        Codec level.  None: deflate level 6 of libdeflate for palette indices
        (smaller and faster than zlib's), zlib level 1 otherwise -- both fast;
        higher levels trade speed for size (palette deflate: libdeflate's
        1-12).  PNG:
        the zlib level 0-9, None for 1 (6: ~2.5x the time for ~14% less).
    pyramid : bool or int, default=False
        TIFF only: add half-size levels as SubIFDs (True: down to one tile; an
        int: that many levels), subsampled by nearest neighbour.
    overwrite : bool, default=False
        Replace an existing output (and preview).
    preview : str, os.PathLike or None, default=None
        Also write a PNG of at most ``preview_size`` pixels a side, from the
        same pass.
    nodata : int or None, default=None
        With a palette: the label of masked pixels ("not image"), outside the
        palette (``>= k``) and within its index type (255 for up to 256
        colours).  Palette TIFF: written as is, black in the colormap, and
        named by the GDAL_NODATA tag; ``mode="rgb"``: an alpha sample is added
        (RGBA, or grey + alpha), 0 on no-data pixels (whose colour is 0) and
        opaque elsewhere (GDAL masks with it; after a 4-colour-sample palette
        it is a fifth sample, marked alpha, which GDAL's mask ignores);
        palette PNG: a transparent palette entry (tRNS);
        zarr: recorded in ``attrs["bigquant"]["nodata"]``.  Reduced levels
        keep it (nearest subsampling) and the preview shows it transparent.
    geotiff : GeoTiff or None, default=None
        Georeferencing (e.g. ``GeoTiff.from_page`` of the input) written on
        the full-resolution IFD of TIFF output; ignored for other formats.
    overviews : bool or int, default=False
        TIFF only: reduced levels as IFDs chained after the image with
        NewSubfileType 1 -- the overviews GDAL lists -- instead of
        ``pyramid``'s SubIFDs (True: down to one tile; an int: that many
        levels), subsampled by nearest neighbour, never averaged.
    cog : bool, default=False
        TIFF only: a Cloud-Optimized GeoTIFF (every IFD first, then the tile
        data, smallest overview first and full resolution last); implies
        ``overviews=True`` unless a number is given.  Memory stays bounded:
        the encoded full-resolution tiles are spooled to a hidden file beside
        the output and copied after the overviews (one more write and read of
        the compressed image).  Not for an OME-TIFF (SubIFDs only).
    display : array-like of shape (k, 1) or (k, 3) or None, default=None
        With a palette: the 8-bit colours shown for its entries (e.g. 16-bit
        colours through a display stretch, :mod:`bigquant.pipeline.display`).
        The TIFF colour table, a PNG's palette and the preview hold them;
        ``mode="rgb"`` still stores ``palette``'s colours.  None: the
        palette's own colours (16-bit ones cut to their high 8 bits).
    metadata : ImageMetadata or None, default=None
        Pixel size, scan description and ICC profile (e.g. ``source.metadata``
        of the input).  TIFF: XResolution/YResolution (each reduced level's
        divided by its step), the Aperio fields in the ImageDescription, the
        ICC profile (tag 34675); an ``*.ome.tif`` output: PhysicalSizeX/Y and
        the Aperio fields (a MapAnnotation) in its OME-XML; PNG: pHYs and
        iCCP; JPEG: the ICC profile.  The profile is written only where its
        colour space is that of the pixels (RGB for palette and colour
        pixels, grey for grey).
    nbits : {None, 1, 2, 4, 8, 16}, default=None
        Palette TIFF: bits a stored index takes (TIFF BitsPerSample, GDAL's
        ``NBITS``).  None: the fewest that hold the palette's entries and
        ``nodata`` -- 1 for 2 entries, 2 for up to 4, 4 for up to 16, packed
        MSB first with each tile row padded to a byte; 8 up to 256; 16
        beyond.  8: one byte an index for readers that take no packed
        samples.  Refused when the entries do not fit, or with
        ``mode="rgb"``; other formats ignore it (a palette PNG always packs
        to the fewest bits).  GDAL, tifffile, libtiff (OpenSlide), Pillow and
        libvips read packed palette TIFFs.
    _lookup : (LabelLookup, lookup table) or None
        Internal (:func:`bigquant.quantize`, TIFF or PNG output): ``data`` is
        the image and its labels are looked up tile by tile while encoding;
        the table may be a dask Delayed.
    _counts : ndarray of int64 or None
        Internal (:func:`bigquant.quantize`, TIFF output with a palette):
        filled with the pixels of each label written (length ``nodata + 1``,
        else the number of colours), counted by the workers as they encode
        the tiles -- no other pass.
    _labeller : callable or None
        Internal (:func:`bigquant.quantize`, TIFF output with a palette):
        ``data`` is the image, each chunk labelled by ``_labeller(chunk) ->
        (labels, sums)`` as it is encoded (see :class:`bigquant.io.encode.BlockEncoder`).
    _measured : list or None
        With ``_labeller``: receives each chunk's sums, in row-major chunk order.

    Returns
    -------
    path : pathlib.Path
        The file written.  It appears only once complete: data go to a hidden
        temporary file beside it, renamed at the end, and removed on failure.

    Raises
    ------
    ImageWriteError
        The output exists (without ``overwrite``), its directory is missing,
        the codec needs a missing package, or the write fails.
    InvalidParameterError
        Bad ``mode``, ``tile``, ``compression``, ``pyramid``, ``overviews``,
        ``cog``, ``nodata`` or palette.
    InvalidInputError, InputTypeError
        Labels out of the palette's range, or data of unusable shape/type.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib, tifffile
    >>> from bigquant import write_image
    >>> labels = np.array([[0, 1], [1, 2]], dtype=np.uint8).repeat(40, 0).repeat(40, 1)
    >>> palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = write_image(labels, pathlib.Path(d) / "q.tif", palette=palette, tile=32)
    ...     tifffile.imread(out).max()
    np.uint8(2)

    A label image whose label 255 marks pixels outside the scene, as a COG:

    >>> labels[:10] = 255
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = write_image(labels, pathlib.Path(d) / "q.tif", palette=palette, tile=32,
    ...                       nodata=255, cog=True)
    ...     with tifffile.TiffFile(out) as tf:
    ...         [page.shape for page in tf.pages], tf.pages[0].nodata
    ([(80, 80), (40, 40), (20, 20)], 255)
    """
    path = output_location(path)
    if mode not in ("palette", "rgb"):
        raise InvalidParameterError(f"mode={mode!r} must be 'palette' or 'rgb'")
    t = check_tile(tile)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageWriteError(
            f"{path}: unsupported output suffix {path.suffix!r}; use one of {sorted(FORMATS)}"
        )
    codec = resolve_codec(compression, compression_level) if fmt in ("tiff", "zarr") else Codec("none", 1)
    layout, n_levels, levels_name = _reduced_levels(fmt, pyramid, overviews, cog, codec)
    ome = fmt == "tiff" and is_ome_name(path)
    if ome:
        check_ome_layout(path, overviews=overviews, cog=cog)
    if metadata is not None and not isinstance(metadata, ImageMetadata):
        raise InputTypeError(f"metadata of type {type(metadata).__name__} must be an ImageMetadata or None")
    if geotiff is not None and not isinstance(geotiff, GeoTiff):
        raise InputTypeError(f"geotiff of type {type(geotiff).__name__} must be a GeoTiff or None")
    if geotiff is not None and fmt != "tiff":
        logger.debug("%s output: geotiff tags ignored (TIFF only)", fmt)
    arr = _as_dask(data, t)
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise InvalidInputError(f"data of shape {arr.shape} is not an image (H, W) or (H, W, C)")
    colours: np.ndarray | None = None
    stored_colours: np.ndarray | None = None
    shown: np.ndarray | None = None  # the 8-bit colours shown, when they are not the palette's own
    if _lookup is not None and (palette is None or fmt not in ("tiff", "png")):
        raise InvalidParameterError("a label lookup needs a palette and TIFF or PNG output")
    if _counts is not None and (palette is None or fmt != "tiff"):
        raise InvalidParameterError("label counts need a palette and TIFF output")
    if _labeller is not None and (palette is None or fmt != "tiff" or _lookup is not None):
        raise InvalidParameterError("a labeller needs a palette and TIFF output, and no lookup")
    if palette is not None:
        # with a lookup or a labeller, data is the image: its labels come from them
        image_in = _lookup is not None or _labeller is not None
        if not image_in and arr.ndim == 3 and arr.shape[2] != 1:
            raise InvalidInputError(
                f"labels of shape {arr.shape} must be 2-D (H, W) when a palette is given"
            )
        if not image_in and arr.dtype.kind not in "ui":
            raise InputTypeError(f"labels of dtype {arr.dtype} must be integers")
        colours = as_colours(palette)
        if display is not None:
            shown = as_colours(display, dtype=np.uint8)
            if len(shown) != len(colours):
                raise InvalidParameterError(
                    f"display has {len(shown)} colours but the palette has {len(colours)}: one shown per entry")
        if nodata is not None:
            nodata = check_nodata(nodata, len(colours))
        kind = mode
        # the colours of the stored pixels in "rgb" mode: alpha added with a nodata
        stored_colours = colours if nodata is None else with_nodata(colours, nodata)
        out_dtype = index_dtype(len(colours)) if kind == "palette" else colours.dtype
        sample_shape: tuple[int, ...] = (
            () if kind == "palette" or stored_colours.shape[1] == 1 else (stored_colours.shape[1],)
        )
        if nbits is not None and kind != "palette":
            raise InvalidParameterError(f"nbits={nbits!r} packs palette indices; mode={mode!r} stores colours")
        bits = index_bits(max(len(colours), 0 if nodata is None else nodata + 1), nbits)
        if kind == "palette" and codec.lossy_image:
            raise InvalidParameterError(
                f"compression={compression!r} is lossy and would corrupt palette indices; "
                "use 'zlib' or mode='rgb'"
            )
    else:
        if nodata is not None:
            raise InvalidParameterError(
                f"nodata={nodata!r} is a label value: it needs a palette"
            )
        if nbits is not None:
            raise InvalidParameterError(f"nbits={nbits!r} packs palette indices: it needs a palette")
        bits = 8
        if arr.dtype.kind not in "uif":
            raise InputTypeError(f"data of dtype {arr.dtype} is not an image type")
        kind = "image"
        out_dtype = arr.dtype
        sample_shape = tuple(arr.shape[2:])
        if arr.ndim == 3 and arr.numblocks[2] != 1:
            arr = arr.rechunk({2: -1})
    png: PngLayout | None = None
    if fmt == "png":
        png = png_layout(kind, np.dtype(out_dtype), stored_colours if kind == "rgb" else colours,
                         sample_shape=sample_shape, nodata=nodata, shown=shown)
        check_level(compression_level)
    if preview is not None:
        preview = output_location(preview)
        check_target(preview, overwrite=overwrite)
    arr = align_to_tiles(arr, t)
    n_colours = len(colours) if colours is not None else 0
    pstep = preview_step(arr.shape[:2], t, preview_size) if preview is not None else None
    levels = pyramid_steps(arr.shape[:2], t, n_levels, name=levels_name) if fmt == "tiff" else ()
    steps = tuple(sorted(set(levels) | ({pstep} if pstep else set())))
    if (_lookup is not None or _labeller is not None) and arr.ndim == 3 and arr.numblocks[2] != 1:
        arr = arr.rechunk({2: -1})
    encoder_args = (kind, np.dtype(out_dtype), stored_colours if kind == "rgb" else colours,
                    n_colours, t, codec, steps)
    lookup = _lookup[0] if _lookup is not None else None
    packed = bits if fmt == "tiff" and kind == "palette" and bits < 8 else None
    encoder = (BlockEncoder(*encoder_args, lookup=lookup, nodata=nodata, count_labels=_counts is not None,
                            bits=packed, labeller=_labeller)
               if png is None else PngRowEncoder(*encoder_args, lookup=lookup, nodata=nodata, png=png))
    if _counts is not None:
        if _counts.shape != (encoder.n_labels,) or _counts.dtype != np.int64:
            raise InvalidParameterError(f"_counts of shape {_counts.shape} must be int64 of ({encoder.n_labels},)")
        _counts[...] = 0
    compressed = (f"deflate (zlib level {check_level(compression_level)})" if fmt == "png"
                  else "jpeg" if fmt == "jpeg" else codec.name)
    logger.info("writing %s: %s %s as %s %s, tile %d, compression %s, %d reduced level(s) as %s",
                path, arr.shape, kind, fmt, f"{packed}-bit" if packed else np.dtype(out_dtype), t, compressed,
                len(levels), layout)
    preview_pixels: np.ndarray | None = None
    with atomic_output(path, overwrite=overwrite) as tmp:
        if fmt == "tiff":
            from bigquant.io.tiff_write import write_tiff

            n_samples = sample_shape[0] if sample_shape else 1
            photometric, extrasamples = _photometric(kind, n_samples, alpha=nodata is not None)
            meta = metadata or ImageMetadata()
            icc = meta.icc_tag("gray" if photometric == "minisblack" else "rgb")
            preview_pixels = write_tiff(
                arr,
                tmp,
                encoder,
                photometric=photometric,
                colormap=tiff_colormap(shown if shown is not None else colours) if kind == "palette" else None,
                extrasamples=extrasamples,
                levels=levels,
                preview_step=pstep,
                extra=(_lookup[1],) if _lookup is not None else (),
                layout=layout,
                extratags=_tiff_tags(geotiff, nodata if kind == "palette" else None) + icc,
                description=None if ome else meta.description(),
                metadata=meta,
                ome=meta.ome() if ome else None,
                label_counts=_counts,
                measured=_measured if _labeller is not None else None,
            )
        elif fmt == "zarr":
            attrs: dict[str, Any] = {"bigquant": {"mode": kind}}
            if colours is not None:
                attrs["palette"] = colours.tolist()
                attrs["bigquant"]["palette_dtype"] = str(colours.dtype)
            if nodata is not None:
                attrs["bigquant"]["nodata"] = nodata
            _write_zarr(arr, tmp, encoder, sample_shape, attrs)
            if pstep is not None:
                import zarr

                stored = zarr.open_array(str(tmp), mode="r")
                preview_pixels = np.asarray(stored[::pstep, ::pstep])
        elif fmt == "png":
            assert isinstance(encoder, PngRowEncoder)
            preview_pixels = write_png(
                arr,
                tmp,
                encoder,
                preview_step=pstep,
                compression_level=compression_level,
                extra=(_lookup[1],) if _lookup is not None else (),
                extra_chunks=_png_metadata(metadata, png),
            )
        else:
            full = _write_jpeg(arr, tmp, encoder, colours, metadata)
            if pstep is not None:
                preview_pixels = (encoder.pixels(full) if kind != "image" else full)[::pstep, ::pstep]
    if preview is not None and preview_pixels is not None:
        preview_colours = (stored_colours if nodata is not None else colours) if kind == "palette" else None
        if shown is not None and stored_colours is not None:
            if kind == "rgb":  # the stored colours back to their entries, shown as the display says
                preview_pixels = _entries_of(preview_pixels, stored_colours)
            preview_colours = shown if nodata is None else with_nodata(shown, nodata)
        save_preview(
            preview_pixels,
            preview,
            colours=preview_colours,
            size=preview_size,
            overwrite=overwrite,
            alpha=nodata is not None,
        )
    return path
