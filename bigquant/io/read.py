"""``read_image``: any supported source -> :class:`ImageSource` (lazy dask array)."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import threading
import warnings
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from bigquant import tasks
from bigquant.errors import ImageReadError, InputTypeError, InvalidInputError
from bigquant.io.chunks import ChunksLike, aligned_chunks
from bigquant.io.files import file_stamp, is_url, open_binary
from bigquant.io.mask import alpha_mask, combine_masks, finite_mask
from bigquant.io.source import ImageSource
from bigquant.io.tiff_read import is_tiff, read_tiff

__all__ = ["read_image", "as_source"]

logger = logging.getLogger(__name__)

_PIL_LOCK = threading.Lock()


def _is_zarr(src: Any) -> bool:
    if is_url(src):
        return str(src).rstrip("/").lower().endswith(".zarr")
    if isinstance(src, (str, os.PathLike)):
        p = pathlib.Path(src)
        return p.suffix.lower() == ".zarr" or (
            p.is_dir() and ((p / "zarr.json").exists() or (p / ".zarray").exists())
        )
    mod = type(src).__module__
    return mod.startswith("zarr")


def _check_array(data: Any, name: str) -> None:
    if data.ndim not in (2, 3):
        raise InvalidInputError(
            f"{name}: image must be 2-D (H, W) or 3-D (H, W, C), got shape {data.shape}"
        )
    if data.dtype.kind not in "uif" or data.dtype.itemsize > 8:
        raise InputTypeError(f"{name}: unsupported dtype {data.dtype}; use an integer or float type")
    if 0 in data.shape:
        raise InvalidInputError(f"{name}: image is empty, shape {data.shape}")


def _from_array(data: Any, chunks: ChunksLike, *, fmt: str, path: pathlib.Path | str | None,
                photometric: str | None = None, extra: dict[str, Any] | None = None,
                alpha: bool = False) -> ImageSource:
    """An in-memory (or dask) image as an ImageSource; ``alpha``: its last channel is alpha."""
    name = str(path) if path is not None else "array"
    _check_array(data, name)
    if isinstance(data, da.Array):
        arr = data
        if chunks is not None:
            cy, cx = aligned_chunks(data.shape[:2], (1, 1), chunks, name=name)
            arr = arr.rechunk((cy, cx) + tuple(data.shape[2:]))
        elif arr.ndim == 3 and arr.numblocks[2] != 1:
            arr = arr.rechunk({2: -1})
    else:
        grid = (1, 1)
        cy, cx = aligned_chunks(data.shape[:2], grid, chunks, name=name)
        arr = da.from_array(
            data,
            chunks=(cy, cx) + tuple(data.shape[2:]),
            name=f"{tasks.READ}-{tokenize(data)}" if isinstance(data, np.ndarray) else None,
        )
    channels = int(arr.shape[2]) if arr.ndim == 3 else 1
    if photometric is None:
        photometric = "rgb" if channels in (3, 4) else "minisblack"
    mask = None
    if alpha:
        mask = alpha_mask(arr[:, :, -1])
        arr = arr[:, :, :-1] if channels > 2 else arr[:, :, 0]
    mask = combine_masks(mask, finite_mask(arr))
    return ImageSource(
        data=arr,
        path=path,
        tile=None,
        photometric=photometric,
        format=fmt,
        levels=1,
        extra=extra or {},
        mask=mask,
    )


def _read_zarr(src: Any, chunks: ChunksLike, level: int) -> ImageSource:
    import zarr

    path = pathlib.Path(src) if isinstance(src, (str, os.PathLike)) else None
    name = str(path) if path is not None else repr(src)
    if path is not None and not path.exists():
        raise ImageReadError(f"{path}: no such file or directory")
    try:
        node = src if isinstance(src, zarr.Array) else zarr.open(src, mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises many kinds
        raise ImageReadError(f"{name}: not a readable zarr array: {exc}") from exc
    levels = 1
    if isinstance(node, zarr.Group):
        arrays = sorted(k for k, _ in node.arrays())
        # OME-Zarr / multiscale groups keep levels as "0", "1", ...
        numbered = sorted((k for k in arrays if k.isdigit()), key=int)
        if numbered:
            levels = len(numbered)
            if not 0 <= level < levels:
                raise ImageReadError(f"{name}: level={level} out of range ({levels} levels)")
            node = node[numbered[level]]
        elif len(arrays) == 1:
            node = node[arrays[0]]
        else:
            raise ImageReadError(f"{name}: zarr group holds arrays {arrays}; open one of them")
    arr = node
    _check_array(arr, name)
    zchunks = tuple(int(c) for c in arr.chunks)
    cy, cx = aligned_chunks(arr.shape[:2], zchunks[:2], chunks, name=name)
    data = da.from_zarr(arr, chunks=(cy, cx) + tuple(arr.shape[2:]),
                        name=f"{tasks.READ}-{tokenize(name, arr.shape, str(arr.dtype), cy, cx)}")
    attrs = dict(arr.attrs)
    photometric = attrs.get("photometric")
    channels = int(arr.shape[2]) if arr.ndim == 3 else 1
    return ImageSource(
        data=data,
        path=path,
        tile=zchunks[:2],
        photometric=photometric or ("rgb" if channels in (3, 4) else "minisblack"),
        format="zarr",
        levels=levels,
        level=level,
        extra={"attrs": attrs},
    )


_PIL_MODES = {"1": "L", "P": None, "PA": "RGBA", "LA": "LA", "CMYK": "RGB", "YCbCr": "RGB",
              "HSV": "RGB", "LAB": "RGB", "F": "F", "I": "I", "I;16": "I;16", "L": "L",
              "RGB": "RGB", "RGBA": "RGBA", "RGBX": "RGB", "La": "LA", "RGBa": "RGBA"}


def _read_pillow(path: pathlib.Path | str, chunks: ChunksLike, allow_large: bool) -> ImageSource:
    from PIL import Image

    with _PIL_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                try:
                    img = Image.open(open_binary(path) if is_url(path) else path)
                except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds
                    raise ImageReadError(f"{path}: not a recognised image file: {exc}") from exc
                with img:
                    width, height = img.size
                    if limit is not None and width * height > limit and not allow_large:
                        raise ImageReadError(
                            f"{path}: {width}x{height} pixels ({width * height / 1e6:.0f} MP) is "
                            f"above Pillow's decompression-bomb limit ({limit / 1e6:.0f} MP); "
                            f"{img.format} images are decoded whole in memory - convert it to a "
                            "tiled TIFF (e.g. `vips tiffsave in out.tif --tile --bigtiff`) or "
                            "pass allow_large=True"
                        )
                    fmt = (img.format or pathlib.PurePosixPath(str(path)).suffix.lstrip(".")).lower()
                    mode = img.mode
                    target = _PIL_MODES.get(mode, "RGB")
                    if mode == "P":
                        target = "RGBA" if "transparency" in img.info else "RGB"
                    try:
                        img.load()
                        if target is not None and target != mode:
                            img = img.convert(target)
                        pixels = np.asarray(img)
                    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
                        raise ImageReadError(f"{path}: cannot decode image: {exc}") from exc
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    if pixels.dtype.byteorder not in "=|":
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    photometric = "rgb" if pixels.ndim == 3 and pixels.shape[2] in (3, 4) else "minisblack"
    alpha = pixels.ndim == 3 and pixels.shape[2] in (2, 4)  # LA, RGBA: alpha is the mask
    return _from_array(pixels, chunks, fmt=fmt, path=path, photometric=photometric,
                       extra={"mode": mode}, alpha=alpha)


def read_image(
    src: Any,
    *,
    chunks: ChunksLike = None,
    level: int = 0,
    series: int | None = None,
    allow_large: bool = False,
) -> ImageSource:
    """Open an image lazily as a dask array, reading its metadata once.

    Parameters
    ----------
    src : str, os.PathLike, ImageSource, numpy.ndarray, dask.array.Array or zarr.Array
        A TIFF file (tiled or striped, BigTIFF, OME, pyramidal, multi-series;
        uncompressed or compressed with any codec tifffile decodes through
        imagecodecs: JPEG, JPEG 2000 -- Aperio 33003/33005 too --, LZW,
        deflate, zstd, WebP, PackBits...), a slide (Aperio SVS, Hamamatsu NDPI
        as far as tifffile reads it, OME-TIFF), a zarr array or group (path or
        object), a Pillow-readable file (PNG, JPEG, ...), an fsspec URL of any
        of these (``http(s)://``, ``s3://``, ``gs://``, ``memory://``: every
        task opens it itself, with range requests), or an array of shape
        (H, W) or (H, W, C).
    chunks : int, tuple of int (cy, cx) or None, default=None
        Spatial chunk shape of the dask array; rounded up to a multiple of the
        file's tiles.  None picks about 4096 x 4096 pixels (full-width bands
        of the same area for striped files).
    level : int, default=0
        Pyramid level to read (0 is full resolution).
    series : int or None, default=None
        TIFF image series to read (multi-image files).  None: the image of a
        slide, not its thumbnail, label, macro or mask (see ``bigquant info``).
    allow_large : bool, default=False
        Decode Pillow formats (PNG, JPEG...) above Pillow's decompression-bomb
        limit.  Such files are decoded whole in memory; prefer a tiled TIFF.

    Returns
    -------
    source : ImageSource
        ``source.data`` is a lazy dask array of shape (H, W, C) or (H, W);
        its tasks open the file themselves (names start with
        ``bq-read``), so it runs on worker processes too.
        ``source.mask`` says which pixels are image (alpha 0, GDAL_NODATA in
        every band, a TIFF mask IFD and NaN are not); the alpha channel is
        not part of ``source.data``.

    Raises
    ------
    ImageReadError
        The file is missing, unreadable, truncated, corrupt or not an image,
        or it holds no single 2-D image.
    InvalidParameterError
        ``level``, ``series`` or ``chunks`` is out of range.
    InputTypeError, InvalidInputError
        An array of unsupported dtype or shape.

    Examples
    --------
    >>> import numpy as np
    >>> from bigquant import read_image
    >>> src = read_image(np.zeros((100, 120, 3), dtype=np.uint8), chunks=64)
    >>> src.shape, src.data.chunksize
    ((100, 120, 3), (64, 64, 3))
    """
    if isinstance(src, ImageSource):
        if chunks is None:
            return src
        rechunked = _from_array(src.data, chunks, fmt=src.format, path=src.path, photometric=src.photometric)
        mask = None if src.mask is None else src.mask.rechunk(rechunked.data.chunks[:2])
        return dataclasses.replace(src, data=rechunked.data, mask=mask)
    if isinstance(src, (np.ndarray, da.Array)):
        return _from_array(src, chunks, fmt="array", path=None)
    if _is_zarr(src):
        return _read_zarr(src, chunks, level)
    if not isinstance(src, (str, os.PathLike)):
        if hasattr(src, "__array__") and hasattr(src, "shape"):
            return _from_array(np.asarray(src), chunks, fmt="array", path=None)
        raise InputTypeError(
            f"src of type {type(src).__name__} is not a path, array or ImageSource"
        )
    if is_url(src):
        file_stamp(src)  # fails first, naming the URL, if it does not answer
        if is_tiff(src):
            return read_tiff(src, chunks=chunks, level=level, series=series)
        return _read_pillow(src, chunks, allow_large)
    path = pathlib.Path(src).expanduser()
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image file or zarr array")
    if not os.access(path, os.R_OK):
        raise ImageReadError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty")
    if is_tiff(path):
        return read_tiff(path, chunks=chunks, level=level, series=series)
    if level or series:
        logger.info("%s: not a TIFF; level=%s and series=%s ignored", path, level, series)
    return _read_pillow(path, chunks, allow_large)


def as_source(src: Any, **kwargs: Any) -> ImageSource:
    """Return ``src`` as an :class:`ImageSource` (reading it when needed)."""
    return src if isinstance(src, ImageSource) and not kwargs else read_image(src, **kwargs)
