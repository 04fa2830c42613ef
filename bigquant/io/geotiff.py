"""GeoTIFF georeferencing carried from an input TIFF to an output TIFF.

A :class:`GeoTiff` holds the GeoTIFF tags of a page (model pixel scale, tie
points or transformation, GeoKeys and their parameters, and GDAL's dataset
metadata) as plain tuples, ready for ``tifffile``'s ``extratags``; the writer
puts them on the full-resolution IFD of its output, so GDAL reads the same CRS
and geotransform from the labels as from the image they came from.  The
no-data value is GDAL's own ASCII tag (42113), read by :func:`read_nodata`
and written by :meth:`GeoTiff.extratags` or :func:`nodata_tag`.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any

import numpy as np

from bigquant.errors import InvalidParameterError

__all__ = ["GDAL_NODATA", "GEOTIFF_TAGS", "GeoTiff", "nodata_tag", "read_nodata"]

logger = logging.getLogger(__name__)

#: GeoTIFF (and GDAL metadata) tag codes -> (name, TIFF data type).
GEOTIFF_TAGS: dict[int, tuple[str, int]] = {
    33550: ("ModelPixelScale", 12),
    33922: ("ModelTiepoint", 12),
    34264: ("ModelTransformation", 12),
    34735: ("GeoKeyDirectory", 3),
    34736: ("GeoDoubleParams", 12),
    34737: ("GeoAsciiParams", 2),
    42112: ("GDAL_METADATA", 2),
}

#: GDAL's no-data tag (ASCII).
GDAL_NODATA = 42113

_ASCII = 2
_MODEL_PIXEL_SCALE, _MODEL_TIEPOINT, _MODEL_TRANSFORMATION = 33550, 33922, 34264
_GDAL_METADATA = 42112

#: A tag as ``tifffile`` writes it: (code, data type, count, value).
Tag = tuple[int, int, int, Any]


def nodata_tag(nodata: float | int) -> tuple[int, int, int, str, bool]:
    """The GDAL_NODATA ``extratags`` entry of ``nodata`` (ASCII, on the first IFD)."""
    text = str(nodata)
    return (GDAL_NODATA, _ASCII, len(text) + 1, text, True)


def read_nodata(page: Any) -> float | None:
    """GDAL's no-data value of a ``tifffile.TiffPage``.

    Returns
    -------
    nodata : float or None
        The GDAL_NODATA tag parsed as a float; None when the page has no such
        tag or its text is not a number.
    """
    tag = page.tags.get(GDAL_NODATA)
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return float(str(value).strip().rstrip("\x00"))
    except ValueError:
        logger.debug("GDAL_NODATA %r is not a number: ignored", value)
        return None


def _dataset_metadata(xml: str) -> str | None:
    """GDAL_METADATA without its per-band items (statistics, scale, offset...).

    Those describe the input's samples, not the labels written in their place;
    dataset-level items (``sample`` attribute absent) are kept.
    """
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        logger.debug("GDAL_METADATA is not XML: dropped")
        return None
    for item in [i for i in root if i.get("sample") is not None]:
        root.remove(item)
    if len(root) == 0:
        return None
    return ElementTree.tostring(root, encoding="unicode")


def _tag_value(code: int, value: Any) -> Any:
    """The value of a GeoTIFF tag as a str or a tuple of Python numbers."""
    if GEOTIFF_TAGS[code][1] == _ASCII:
        text = value.decode("ascii") if isinstance(value, bytes) else str(value)
        text.encode("ascii")  # UnicodeEncodeError: not writable as a TIFF string
        return text
    items = np.atleast_1d(np.asarray(value)).ravel().tolist()
    cast = float if GEOTIFF_TAGS[code][1] == 12 else int
    return tuple(cast(v) for v in items)


@dataclass(frozen=True)
class GeoTiff:
    """The georeferencing tags of a TIFF page.

    Parameters
    ----------
    tags : tuple of (code, datatype, count, value)
        GeoTIFF tags (codes of :data:`GEOTIFF_TAGS`) in code order; values are
        str (ASCII tags) or tuples of numbers.

    Examples
    --------
    >>> geo = GeoTiff(((33550, 12, 3, (10.0, 10.0, 0.0)),))
    >>> geo.scaled(4).tags[0][3]
    (40.0, 40.0, 0.0)
    >>> geo.extratags(255)[-1]
    (42113, 2, 4, '255', True)
    """

    tags: tuple[Tag, ...]

    @classmethod
    def from_page(cls, page: Any) -> GeoTiff | None:
        """Read the GeoTIFF tags of a ``tifffile.TiffPage``; None when it has none.

        GDAL_METADATA keeps its dataset-level items only, and tags whose
        value cannot be written back (non-ASCII text) are dropped.
        """
        tags: list[Tag] = []
        for code in sorted(GEOTIFF_TAGS):
            tag = page.tags.get(code)
            if tag is None:
                continue
            try:
                value = _tag_value(code, tag.value)
            except (UnicodeError, TypeError, ValueError):
                logger.debug("GeoTIFF tag %d of %r cannot be copied: dropped", code, tag.value)
                continue
            if code == _GDAL_METADATA:
                value = _dataset_metadata(value)
                if value is None:
                    continue
            count = len(value) + 1 if isinstance(value, str) else len(value)
            tags.append((code, GEOTIFF_TAGS[code][1], count, value))
        if not any(code != _GDAL_METADATA for code, *_ in tags):
            return None
        return cls(tuple(tags))

    def extratags(self, nodata: float | int | None = None) -> list[tuple[int, int, int, Any, bool]]:
        """``tifffile`` ``extratags`` of these tags, plus GDAL_NODATA when given."""
        out = [(code, dtype, count, value, True) for code, dtype, count, value in self.tags]
        if nodata is not None:
            out.append(nodata_tag(nodata))
        return out

    def scaled(self, factor: int) -> GeoTiff:
        """The tags of a level subsampled by ``factor`` (each pixel ``factor``
        times as large, the same corner on the ground)."""
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            raise InvalidParameterError(f"factor={factor!r} must be a positive int")
        tags = []
        for code, dtype, count, value in self.tags:
            if code == _MODEL_PIXEL_SCALE:
                value = (value[0] * factor, value[1] * factor) + tuple(value[2:])
            elif code == _MODEL_TIEPOINT:
                # (I, J, K, X, Y, Z) per tie point: raster coordinates shrink
                value = tuple(
                    v / factor if i % 6 in (0, 1) else v for i, v in enumerate(value)
                )
            elif code == _MODEL_TRANSFORMATION:
                # row-major 4x4: the raster I and J columns grow
                value = tuple(v * factor if i % 4 in (0, 1) else v for i, v in enumerate(value))
            tags.append((code, dtype, count, value))
        return GeoTiff(tuple(tags))

    def __post_init__(self) -> None:
        for tag in self.tags:
            if len(tag) != 4 or tag[0] not in GEOTIFF_TAGS:
                raise InvalidParameterError(
                    f"geotiff tag {tag!r} must be (code, datatype, count, value) with a code "
                    f"in {sorted(GEOTIFF_TAGS)}"
                )
