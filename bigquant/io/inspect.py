"""What a TIFF file holds: its series (image, thumbnail, label, macro, mask), levels and codecs.

Whole-slide and GIS files keep more than one image in one TIFF: an Aperio SVS
has the slide (a pyramid), a thumbnail, a label and a macro photograph; a
GeoTIFF written by GDAL may carry an internal validity mask with its own
overviews.  tifffile exposes them as *series*; this module says which series
is which (:func:`classify_series`), which one to read by default
(:func:`image_series`), where a GDAL mask is (:func:`mask_series`), and
describes the whole file without reading a pixel (:func:`describe`).

Classification rules (the first that matches wins), checked against Aperio
SVS, NDPI, OME-TIFF and GDAL files:

1. ``mask``: NewSubfileType has bit 2 set (value 4) or Photometric is MASK
   (4) -- GDAL internal masks.
2. ``label`` / ``macro`` / ``thumbnail``: an Aperio ImageDescription whose last
   line starts with that word (``label 224x240``).
3. ``other``: an Aperio series tifffile calls Label or Macro although its
   description does not say so -- a pyramid level written with
   NewSubfileType 1 instead of 0, which tifffile's SVS parser takes for a
   label.
4. tifffile's series name: Baseline / Resolution -> ``image``, Thumbnail,
   Label, Macro / Overview -> ``macro``, Map -> ``other``, Mask.  tifffile
   names series for SVS, NDPI, OME (the Image Name), SCN, BIF and Philips.
5. Of the series still unnamed, the largest is the ``image`` and the others
   are ``thumbnail``.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bigquant.errors import ImageReadError
from bigquant.io.geotiff import read_nodata

__all__ = [
    "SeriesKind",
    "SERIES_KINDS",
    "LevelInfo",
    "SeriesInfo",
    "ImageInfo",
    "classify_series",
    "image_series",
    "mask_series",
    "describe",
]

logger = logging.getLogger(__name__)

SeriesKind = Literal["image", "thumbnail", "label", "macro", "mask", "other"]
SERIES_KINDS: tuple[str, ...] = ("image", "thumbnail", "label", "macro", "mask", "other")

#: tifffile series names (lower case) -> kind
_NAMES: dict[str, SeriesKind] = {
    "baseline": "image",
    "resolution": "image",
    "thumbnail": "thumbnail",
    "label": "label",
    "macro": "macro",
    "overview": "macro",
    "map": "other",
    "mask": "mask",
}
#: tifffile flags that name how tifffile laid the file out, not what it is
_LAYOUT_FLAGS = frozenset({"uniform", "shaped", "generic"})
_KEYWORD = re.compile(r"(label|macro|thumbnail)\b", re.IGNORECASE)

_MASK_BIT = 4  # NewSubfileType: transparency mask
_PHOTOMETRIC_MASK = 4

# GeoTIFF tags
_MODEL_PIXEL_SCALE = 33550
_MODEL_TIEPOINT = 33922
_MODEL_TRANSFORMATION = 34264
_GEO_KEY_DIRECTORY = 34735
_GEO_TAGS = (_MODEL_PIXEL_SCALE, _MODEL_TIEPOINT, _MODEL_TRANSFORMATION, _GEO_KEY_DIRECTORY)
_PROJECTED_CRS_KEY = 3072
_GEOGRAPHIC_CRS_KEY = 2048
_USER_DEFINED = 32767


def _is_mask_page(page: Any) -> bool:
    return bool(int(page.subfiletype or 0) & _MASK_BIT) or int(page.photometric or 0) == _PHOTOMETRIC_MASK


def _description_lines(page: Any) -> list[str]:
    return [line.strip() for line in (page.description or "").strip().splitlines() if line.strip()]


def classify_series(tf: Any) -> list[SeriesKind]:
    """Say what each series of a TIFF file is: the image, a thumbnail, a label...

    Parameters
    ----------
    tf : tifffile.TiffFile
        An open TIFF file.

    Returns
    -------
    kinds : list of str
        One of "image", "thumbnail", "label", "macro", "mask" or "other" for
        each series of ``tf.series``, in order.  The rules are in the module
        docstring; a file with at least one series that is not a mask has an
        "image".

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "two.tif")
    >>> with tifffile.TiffWriter(path) as tw:
    ...     tw.write(np.zeros((64, 96, 3), np.uint8), photometric="rgb")
    ...     tw.write(np.zeros((16, 24, 3), np.uint8), photometric="rgb")
    >>> with tifffile.TiffFile(path) as tf:
    ...     classify_series(tf)
    ['image', 'thumbnail']
    """
    kinds: list[SeriesKind | None] = []
    for series in tf.series:
        page = series.keyframe
        lines = _description_lines(page)
        aperio = bool(lines) and lines[0].startswith("Aperio")
        name = (series.name or "").strip().lower()
        kind: SeriesKind | None
        if _is_mask_page(page):
            kind = "mask"
        elif aperio and len(lines) > 1 and (match := _KEYWORD.match(lines[-1])):
            kind = _NAMES[match[1].lower()]
        elif aperio and series.kind == "svs" and name in ("label", "macro"):
            kind = "other"
        else:
            kind = _NAMES.get(name)
        kinds.append(kind)
    candidates = [i for i, k in enumerate(kinds) if k in (None, "image")]
    if candidates:
        largest = max(candidates, key=lambda i: int(tf.series[i].size))
        kinds = [("image" if i == largest else "thumbnail") if k is None else k for i, k in enumerate(kinds)]
    return [k if k is not None else "other" for k in kinds]


def image_series(tf: Any) -> int:
    """The series to read by default: the first "image" of :func:`classify_series`.

    Parameters
    ----------
    tf : tifffile.TiffFile
        An open TIFF file.

    Returns
    -------
    index : int
        Index in ``tf.series`` of the first series classified "image"; 0 when
        there is none (or no series at all).
    """
    kinds = classify_series(tf)
    return kinds.index("image") if "image" in kinds else 0


def mask_series(tf: Any, shape: tuple[int, ...]) -> int | None:
    """The series of a GDAL internal mask of a given size, if the file has one.

    GDAL writes the mask of an image (``GDAL_TIFF_INTERNAL_MASK=YES``) as its
    own IFD with NewSubfileType 4 and Photometric MASK, 1 bit per pixel, with
    overviews of NewSubfileType 5; tifffile reads it as a separate series of
    bool.

    Parameters
    ----------
    tf : tifffile.TiffFile
        An open TIFF file.
    shape : tuple of int
        Shape of the image the mask belongs to; only (H, W), its first two
        entries, are compared.

    Returns
    -------
    index : int or None
        Index in ``tf.series`` of the first mask series of height H and width
        W, or None.
    """
    want = tuple(int(s) for s in shape[:2])
    for i, series in enumerate(tf.series):
        if _is_mask_page(series.keyframe) and tuple(int(s) for s in series.shape[:2]) == want:
            return i
    return None


@dataclass(frozen=True)
class LevelInfo:
    """One pyramid level of a series, as stored.

    Attributes
    ----------
    shape : tuple of int
        Shape of the level in the series' axes.
    tile : tuple of int (tile_height, tile_width) or None
        Tile size; None for strips.  NDPI levels (one JPEG per level) report
        the MCU blocks between restart markers that tifffile reads as tiles.
    rows_per_strip : int or None
        Rows per strip of a striped level; None when tiled.
    compression : str
        tifffile's name of the codec: "NONE", "JPEG", "ADOBE_DEFLATE", "LZW",
        "ZSTD", "WEBP", "APERIO_JP2000_YCBC" (33003), ...
    predictor : str or None
        "HORIZONTAL", "FLOATINGPOINT", ...; None when there is none.
    photometric : str
        "RGB", "YCBCR", "MINISBLACK", "PALETTE", "MASK", ...
    subfiletype : int
        NewSubfileType: bit 0 reduced resolution, bit 2 mask.
    """

    shape: tuple[int, ...]
    tile: tuple[int, int] | None
    rows_per_strip: int | None
    compression: str
    predictor: str | None
    photometric: str
    subfiletype: int

    @property
    def layout(self) -> str:
        """The tile size ("256 x 256") or the strip height ("strips of 64 rows")."""
        if self.tile is not None:
            return f"{self.tile[0]} x {self.tile[1]}"
        return f"strips of {self.rows_per_strip} rows"


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a TIFF file (an image and its pyramid levels).

    Attributes
    ----------
    index : int
        Position in ``tifffile.TiffFile.series`` (the ``series=`` of
        :func:`bigquant.read_image`).
    name : str
        tifffile's name of the series ("Baseline", "Label", an OME Image Name)
        or "".
    kind : {"image", "thumbnail", "label", "macro", "mask", "other"}
        What the series is (:func:`classify_series`).
    axes : str
        tifffile's axes of the series, e.g. "YXS".
    dtype : numpy.dtype
        Sample type.
    levels : tuple of LevelInfo
        Full resolution first.
    nodata : int, float or None
        The GDAL_NODATA value (tag 42113) of the series, if any.
    georeferenced : bool
        The series has GeoTIFF georeferencing tags (ModelPixelScale,
        ModelTiepoint, ModelTransformation or GeoKeyDirectory).
    epsg : int or None
        EPSG code of the projected or geographic coordinate system named in
        the GeoKeyDirectory, if any.
    """

    index: int
    name: str
    kind: SeriesKind
    axes: str
    dtype: np.dtype
    levels: tuple[LevelInfo, ...]
    nodata: int | float | None = None
    georeferenced: bool = False
    epsg: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the full-resolution level."""
        return self.levels[0].shape

    @property
    def tile(self) -> tuple[int, int] | None:
        """Tile size of the full-resolution level (None for strips)."""
        return self.levels[0].tile

    @property
    def compression(self) -> str:
        """Codec of the full-resolution level."""
        return self.levels[0].compression

    @property
    def photometric(self) -> str:
        """Photometric interpretation of the full-resolution level."""
        return self.levels[0].photometric


@dataclass(frozen=True)
class ImageInfo:
    """A TIFF file's series, levels and codecs, read from its tags only.

    Built by :func:`describe`.

    Attributes
    ----------
    path : str
        The file (or URL) described.
    format : {"TIFF", "BigTIFF", "NDPI"}
        The container: classic TIFF, BigTIFF, or Hamamatsu's NDPI (classic
        TIFF with 64-bit offsets).
    size : int or None
        File size in bytes, when known.
    flags : tuple of str
        tifffile's flags of the file ("svs", "ome", "geotiff", ...).
    is_svs, is_ndpi, is_ome, is_geotiff : bool
        Aperio SVS, Hamamatsu NDPI, OME-TIFF, GeoTIFF.
    series : tuple of SeriesInfo
        Every series, in file order.
    """

    path: str
    format: str
    size: int | None
    flags: tuple[str, ...]
    is_svs: bool
    is_ndpi: bool
    is_ome: bool
    is_geotiff: bool
    series: tuple[SeriesInfo, ...]

    @property
    def kinds(self) -> list[str]:
        """The kind of each series (:func:`classify_series`)."""
        return [s.kind for s in self.series]

    @property
    def image_series(self) -> int:
        """Index of the series read by default (:func:`image_series`)."""
        return self.kinds.index("image") if "image" in self.kinds else 0

    def table(self) -> str:
        """A fixed-width table of the series and their levels, one row per level.

        Returns
        -------
        text : str
            A header line (format and flags), the table, and one line per
            series with nodata or georeferencing.
        """
        header = ["series", "kind", "name", "level", "shape", "dtype", "tiles", "compression", "photometric"]
        rows: list[list[str]] = []
        for s in self.series:
            for j, lev in enumerate(s.levels):
                first = j == 0
                compression = lev.compression + (f" + {lev.predictor.lower()} predictor" if lev.predictor else "")
                rows.append([
                    str(s.index) if first else "",
                    s.kind if first else "",
                    (s.name or "-") if first else "",
                    str(j),
                    " x ".join(str(n) for n in lev.shape),
                    str(s.dtype) if first else "",
                    lev.layout,
                    compression,
                    lev.photometric,
                ])
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
        shown = [f for f in self.flags if f not in _LAYOUT_FLAGS]
        lines = [self.format + (f" ({', '.join(shown)})" if shown else "")]
        for r in [header, *rows]:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        for s in self.series:
            notes = []
            if s.nodata is not None:
                notes.append(f"nodata {s.nodata}")
            if s.georeferenced:
                notes.append(f"georeferenced (EPSG:{s.epsg})" if s.epsg else "georeferenced")
            if notes:
                lines.append(f"series {s.index}: " + ", ".join(notes))
        return "\n".join(lines)


def _nodata(page: Any) -> int | float | None:
    """The GDAL_NODATA value of ``page``, an int for integer data (tifffile's ``page.nodata`` says 0 when absent)."""
    value = read_nodata(page)
    if value is not None and math.isfinite(value) and value == int(value) and np.dtype(page.dtype).kind in "iub":
        return int(value)
    return value


def _epsg(page: Any) -> int | None:
    """EPSG code from the GeoKeyDirectory of ``page`` (projected first, then geographic)."""
    tag = page.tags.get(_GEO_KEY_DIRECTORY)
    if tag is None:
        return None
    keys = [int(v) for v in np.ravel(tag.value)]
    found: dict[int, int] = {}
    for i in range(4, len(keys) - 3, 4):
        key, location, _count, value = keys[i : i + 4]
        if location == 0:
            found[key] = value
    for key in (_PROJECTED_CRS_KEY, _GEOGRAPHIC_CRS_KEY):
        code = found.get(key)
        if code and code != _USER_DEFINED:
            return code
    return None


def _level_info(level: Any) -> LevelInfo:
    page = level.keyframe
    tiled = bool(page.is_tiled)
    predictor = int(page.predictor or 1)
    return LevelInfo(
        shape=tuple(int(n) for n in level.shape),
        tile=(int(page.tilelength), int(page.tilewidth)) if tiled else None,
        rows_per_strip=None if tiled else int(min(page.rowsperstrip or page.imagelength, page.imagelength)),
        compression=_enum_name(page.compression),
        predictor=None if predictor == 1 else _enum_name(page.predictor),
        photometric=_enum_name(page.photometric),
        subfiletype=int(page.subfiletype or 0),
    )


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value))


def _describe(tf: Any, path: str, size: int | None) -> ImageInfo:
    _check_series(tf, path)
    kinds = classify_series(tf)
    series = []
    for i, (s, kind) in enumerate(zip(tf.series, kinds)):
        page = s.keyframe
        series.append(SeriesInfo(
            index=i,
            name=str(s.name or ""),
            kind=kind,
            axes=str(s.axes),
            dtype=np.dtype(s.dtype),
            levels=tuple(_level_info(lev) for lev in s.levels),
            nodata=_nodata(page),
            georeferenced=any(code in page.tags for code in _GEO_TAGS),
            epsg=_epsg(page),
        ))
    is_ndpi = bool(tf.is_ndpi)
    fmt = "NDPI" if is_ndpi else "BigTIFF" if tf.is_bigtiff else "TIFF"
    info = ImageInfo(
        path=path,
        format=fmt,
        size=size,
        flags=tuple(sorted(str(f) for f in tf.flags)),
        is_svs=bool(tf.is_svs),
        is_ndpi=is_ndpi,
        is_ome=bool(tf.is_ome),
        is_geotiff=bool(tf.is_geotiff),
        series=tuple(series),
    )
    logger.debug("%s: %s, series %s", path, fmt, [(s.name, s.kind, s.shape) for s in info.series])
    return info


def describe(path: str | os.PathLike[str]) -> ImageInfo:
    """Describe a TIFF file: its series, what each is, their levels and codecs.

    Only tags are read, never pixels.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF, BigTIFF, NDPI, SVS, OME-TIFF or GeoTIFF file, or the URL of
        one (``http://...``, any fsspec protocol; read in 64 KiB blocks).

    Returns
    -------
    info : ImageInfo
        ``info.series[i]`` describes ``tifffile.TiffFile(path).series[i]``;
        ``info.table()`` is a readable summary.

    Raises
    ------
    ImageReadError
        The file is missing, unreadable or not a TIFF file.

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tiled.tif")
    >>> tifffile.imwrite(path, np.zeros((300, 400, 3), np.uint8), tile=(256, 256),
    ...                  compression="zlib", photometric="rgb")
    >>> info = describe(path)
    >>> info.format, info.series[0].kind, info.series[0].shape, info.series[0].tile
    ('TIFF', 'image', (300, 400, 3), (256, 256))
    """
    import tifffile

    text = os.fspath(path)
    if "://" in text:
        import fsspec

        try:
            with fsspec.open(text, "rb", cache_type="blockcache", block_size=1 << 16) as fh:
                size = getattr(fh, "size", None)
                with tifffile.TiffFile(fh) as tf:
                    return _describe(tf, text, int(size) if size is not None else None)
        except ImageReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - fsspec and tifffile raise many kinds
            raise ImageReadError(f"{text}: not a readable TIFF file: {type(exc).__name__}: {exc}") from exc
    p = pathlib.Path(text).expanduser()
    if not p.is_file():
        raise ImageReadError(f"{p}: no such file")
    try:
        tf = tifffile.TiffFile(p)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds
        raise ImageReadError(f"{p}: not a readable TIFF file: {exc}") from exc
    with tf:
        return _describe(tf, str(p), p.stat().st_size)


def _check_series(tf: Any, path: str) -> None:
    if not len(tf.series):
        raise ImageReadError(f"{path}: not a readable TIFF file: no image in it")
