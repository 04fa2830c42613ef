"""Raster attribute tables: each class of a palette TIFF described where GIS users look.

A k-means palette image is a classification: pixel value ``i`` is class ``i``,
whose spectral centre is the palette's row ``i``.  GDAL (and QGIS, which reads
through it) shows such classes as a *raster attribute table* (RAT) of the band,
which it reads from the image's PAM sidecar ``<image>.aux.xml``
(``<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable>``; the XML
of GDAL's ``GDALRasterAttributeTable::Serialize``/``XMLInit`` in
``gcore/gdal_rat.cpp``).  GTiff keeps no RAT inside the TIFF, so the sidecar
is the place; GDAL reads it beside plain, tiled and COG TIFFs alike.

The table (:func:`class_table`) is thematic, one row per class and one for the
no-data index when there is one:

==============  =======  ==========  ==============================================
column          type     usage       value
==============  =======  ==========  ==============================================
``Value``       Integer  MinMax      the pixel value (palette index)
``Class_Name``  String   Name        ``class <i>``, or ``nodata``
band names      Real     Generic     the class's centre in that band (the palette
                                     written, in the data's units); 0 for nodata
``Count``       Real     PixelCount  pixels of the class (when given)
``Area_<u>2``   Real     Generic     ``Count`` x the pixel's area in the CRS's unit
                                     ``<u>`` (georeferenced images only; ``units``
                                     when the GeoKeys do not name it)
``Red`` ...     Integer  Red, Green, the colour GDAL shows (the colormap's 16-bit
``Alpha``                Blue,       entries / 257); alpha 0 for nodata
                         Alpha
==============  =======  ==========  ==============================================

The no-data row has no centre: GDAL's tables hold no missing value, and a
NaN would make ``gdalinfo -json`` print a bare ``nan`` (not JSON), so its band
columns hold 0; its name, count, area and alpha 0 are what it says.
Band names are the source's band descriptions (GDAL's ``DESCRIPTION`` items
of the GDAL_METADATA tag, :func:`band_descriptions`) when it has them, else
``Band_1`` ... ``Band_C``.  ``Count`` is a Real column: GDAL's Integer columns
hold 32 bits, fewer than a gigapixel class may need.  :func:`bigquant.quantize`
counts without a pass of its own: by the colour histogram (8-bit data), else
as the workers encode the tiles (:class:`bigquant.io.encode.BlockEncoder`'s
``count_labels``).
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from typing import Any

import numpy as np

from bigquant.errors import InvalidParameterError
from bigquant.io.atomic import atomic_output
from bigquant.io.geotiff import GeoTiff
from bigquant.io.objects import URLPath, output_location
from bigquant.io.palette import tiff_colormap

__all__ = [
    "RAT_SUFFIX", "area_unit", "band_descriptions", "class_table", "pixel_area", "rat_path", "write_rat",
]

logger = logging.getLogger(__name__)

#: the PAM sidecar GDAL reads beside an image (``<image name>.aux.xml``)
RAT_SUFFIX = ".aux.xml"

# GDALRATFieldType and GDALRATFieldUsage (gdal.h)
_INTEGER, _REAL, _STRING = 0, 1, 2
_GENERIC, _PIXEL_COUNT, _NAME, _MIN_MAX, _RED, _GREEN, _BLUE, _ALPHA = 0, 1, 2, 5, 6, 7, 8, 9
_TYPE_NAMES = {_INTEGER: "Integer", _REAL: "Real", _STRING: "String"}
_USAGE_NAMES = {_GENERIC: "Generic", _PIXEL_COUNT: "PixelCount", _NAME: "Name", _MIN_MAX: "MinMax",
                _RED: "Red", _GREEN: "Green", _BLUE: "Blue", _ALPHA: "Alpha"}

# GeoKeys (GeoTIFF 1.1) and the EPSG units they name
_GEO_KEY_DIRECTORY, _MODEL_PIXEL_SCALE, _MODEL_TIEPOINT, _MODEL_TRANSFORMATION = 34735, 33550, 33922, 34264
_GT_MODEL_TYPE, _GEOG_ANGULAR_UNITS, _PROJ_LINEAR_UNITS = 1024, 2054, 3076
_MODEL_PROJECTED, _MODEL_GEOGRAPHIC = 1, 2
#: EPSG unit code -> the abbreviation in the area column's name
_UNITS = {9001: "m", 9002: "ft", 9003: "ftUS", 9036: "km", 9101: "rad", 9102: "deg", 9105: "grad", 9122: "deg"}
#: GDAL's GDAL_METADATA tag
_GDAL_METADATA = 42112


def rat_path(image: str | os.PathLike[str]) -> pathlib.Path:
    """The PAM sidecar GDAL reads beside ``image`` (``q.tif`` -> ``q.tif.aux.xml``).

    Examples
    --------
    >>> rat_path("out/q.tif").name
    'q.tif.aux.xml'
    """
    path = output_location(image)  # a URL output's table goes beside it, at a URL
    return path.with_name(path.name + RAT_SUFFIX)


def rat_fits(image: str | os.PathLike[str]) -> bool:
    """Whether the sidecar's name is one the file system holds (the image's name plus 8 bytes).

    An image named as long as a name may be leaves no room for ``.aux.xml``:
    its table is then left out, with a warning, rather than the image refused.
    """
    path = rat_path(image)
    if isinstance(path, URLPath):
        return True
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    return len(os.fsencode(path.name)) <= limit


def band_descriptions(page: Any) -> tuple[str | None, ...] | None:
    """The band descriptions GDAL wrote in a ``tifffile.TiffPage``'s GDAL_METADATA tag.

    Returns
    -------
    names : tuple of str or None, or None
        One entry per sample up to the last one described (None for a sample
        without a description); None when the page describes no band.  Items
        of samples the page does not have, and metadata that are not XML, are
        ignored: a description never fails a read.
    """
    from xml.sax.saxutils import unescape  # it imports urllib.request (http.client, ssl): only here

    tag = page.tags.get(_GDAL_METADATA)
    if tag is None:
        return None
    text = tag.value.decode("utf-8", "replace") if isinstance(tag.value, bytes) else str(tag.value)
    try:
        root = ElementTree.fromstring(text.strip().rstrip("\x00"))
    except ElementTree.ParseError:
        return None
    n_samples = int(getattr(page, "samplesperpixel", 0) or 0) or 1
    found: dict[int, str] = {}
    for item in root.iter("Item"):
        sample = item.get("sample") or ""
        if (item.get("name") != "DESCRIPTION" or not (sample.isascii() and sample.isdigit())
                or int(sample) >= n_samples or not item.text):
            continue
        # GDAL escapes the value before the XML writer escapes it again: unescape once more
        found[int(sample)] = unescape(item.text)
    if not found:
        return None
    return tuple(found.get(i) for i in range(max(found) + 1))


def _geo_keys(geotiff: GeoTiff) -> dict[int, int]:
    """The GeoKeys of ``geotiff`` whose value is one short held in the directory."""
    tags = {code: value for code, _, _, value in geotiff.tags}
    directory = tags.get(_GEO_KEY_DIRECTORY)
    if directory is None or len(directory) < 4:
        return {}
    keys: dict[int, int] = {}
    for i in range(4, min(len(directory), 4 + 4 * int(directory[3])) - 3, 4):
        key, location, count, value = (int(v) for v in directory[i:i + 4])
        if location == 0 and count == 1:
            keys[key] = value
    return keys


def pixel_area(geotiff: GeoTiff | None) -> float | None:
    """The area of one pixel in the CRS's units squared; None without a geotransform.

    From ModelPixelScale (x scale times y scale) or ModelTransformation (the
    determinant of its raster-to-model 2 x 2 part).  Tie points alone (ground
    control points) give no transform.

    Examples
    --------
    >>> pixel_area(GeoTiff(((33550, 12, 3, (10.0, 20.0, 0.0)),)))
    200.0
    """
    if geotiff is None:
        return None
    tags = {code: value for code, _, _, value in geotiff.tags}
    if _MODEL_TRANSFORMATION in tags and len(tags[_MODEL_TRANSFORMATION]) >= 6:
        m = tags[_MODEL_TRANSFORMATION]
        area = abs(float(m[0]) * float(m[5]) - float(m[1]) * float(m[4]))
    elif _MODEL_PIXEL_SCALE in tags and len(tags[_MODEL_PIXEL_SCALE]) >= 2:
        scale = tags[_MODEL_PIXEL_SCALE]
        area = abs(float(scale[0]) * float(scale[1]))
    else:
        return None
    return area if math.isfinite(area) and area > 0 else None


def area_unit(geotiff: GeoTiff | None) -> str | None:
    """The abbreviation of the CRS's unit of length (``m``, ``ftUS``, ``deg``...), or None.

    A projected CRS's ProjLinearUnitsGeoKey, a geographic CRS's
    GeogAngularUnitsGeoKey (degrees when absent); None when the GeoKeys do
    not say, or name a unit not in the table.
    """
    if geotiff is None:
        return None
    keys = _geo_keys(geotiff)
    model = keys.get(_GT_MODEL_TYPE)
    if model == _MODEL_PROJECTED:
        return _UNITS.get(keys.get(_PROJ_LINEAR_UNITS, -1))
    if model == _MODEL_GEOGRAPHIC:
        return _UNITS.get(keys.get(_GEOG_ANGULAR_UNITS, 9102))
    return None


def _names(n_bands: int, descriptions: Sequence[str | None] | None) -> list[str]:
    """Column names of the bands: their descriptions when every one has its own, else ``Band_<i>``."""
    reserved = {"Value", "Class_Name", "Count", "Red", "Green", "Blue", "Alpha"}
    names = [f"Band_{i + 1}" for i in range(n_bands)]
    if descriptions is None or len(descriptions) < n_bands:
        return names
    given = [d.strip() if isinstance(d, str) else "" for d in descriptions[:n_bands]]
    if all(given) and len(set(given)) == n_bands and not set(given) & reserved:
        return given
    return names


def class_table(
    palette: np.ndarray,
    colours: np.ndarray,
    *,
    nodata: int | None = None,
    counts: np.ndarray | None = None,
    nodata_count: int | None = None,
    band_names: Sequence[str | None] | None = None,
    geotiff: GeoTiff | None = None,
) -> str:
    """The PAM document of a palette image's classes (see the module docstring).

    Parameters
    ----------
    palette : ndarray of shape (k, n_bands)
        Every band of each class's centre, in the data's units.
    colours : ndarray of shape (k, C), dtype uint8 or uint16
        The colours written to the TIFF's colormap (C in 1, 3, 4).
    nodata : int or None, default=None
        The no-data index written (GDAL_NODATA), given its own row.
    counts : ndarray of shape (k,) or None, default=None
        Pixels of each class; None leaves out the ``Count`` and area columns.
    nodata_count : int or None, default=None
        Pixels of the no-data index (with ``counts`` and ``nodata``).
    band_names : sequence of str or None, default=None
        The source's band descriptions.
    geotiff : GeoTiff or None, default=None
        The output's georeferencing: adds the area column.

    Returns
    -------
    str
        ``<PAMDataset>`` XML with the table on band 1.

    Examples
    --------
    >>> import numpy as np
    >>> xml = class_table(np.array([[10.0], [200.0]]), np.array([[10], [200]], np.uint8),
    ...                   counts=np.array([3, 5]))
    >>> "<Name>Band_1</Name>" in xml and "<F>class 1</F>" in xml
    True
    """
    palette = np.asarray(palette, dtype=np.float64)
    if palette.ndim == 1:
        palette = palette[:, None]
    if not np.all(np.isfinite(palette)):
        raise InvalidParameterError("palette holds NaN or infinite values: a class table needs numbers")
    k = len(palette)
    if len(colours) != k:
        raise InvalidParameterError(f"{len(colours)} colours for a palette of {k} classes")
    if counts is not None and len(counts) != k:
        raise InvalidParameterError(f"{len(counts)} counts for a palette of {k} classes")
    shown = (tiff_colormap(np.asarray(colours))[:, :k].T // 257).astype(np.int64)  # what GDAL reads
    area = pixel_area(geotiff) if counts is not None else None
    columns: list[tuple[str, int, int]] = [("Value", _INTEGER, _MIN_MAX), ("Class_Name", _STRING, _NAME)]
    columns += [(name, _REAL, _GENERIC) for name in _names(palette.shape[1], band_names)]
    if counts is not None:
        columns.append(("Count", _REAL, _PIXEL_COUNT))
    if area is not None:
        columns.append((f"Area_{area_unit(geotiff) or 'units'}2", _REAL, _GENERIC))
    columns += [("Red", _INTEGER, _RED), ("Green", _INTEGER, _GREEN), ("Blue", _INTEGER, _BLUE),
                ("Alpha", _INTEGER, _ALPHA)]
    rows: list[list[str]] = []
    for i in range(k):
        row = [str(i), f"class {i}"] + [_real(v) for v in palette[i]]
        if counts is not None:
            row.append(_real(counts[i]))
        if area is not None:
            row.append(_real(float(counts[i]) * area))
        rows.append(row + [str(int(v)) for v in shown[i]] + ["255"])
    if nodata is not None:
        row = [str(int(nodata)), "nodata"] + ["0"] * palette.shape[1]  # no centre (see the module docstring)
        if counts is not None:
            row.append(_real(nodata_count or 0))
        if area is not None:
            row.append(_real((nodata_count or 0) * area))
        rows.append(row + ["0", "0", "0", "0"])
    root = ElementTree.Element("PAMDataset")
    band = ElementTree.SubElement(root, "PAMRasterBand", band="1")
    table = ElementTree.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for index, (name, kind, usage) in enumerate(columns):
        field = ElementTree.SubElement(table, "FieldDefn", index=str(index))
        ElementTree.SubElement(field, "Name").text = name
        ElementTree.SubElement(field, "Type", typeAsString=_TYPE_NAMES[kind]).text = str(kind)
        ElementTree.SubElement(field, "Usage", usageAsString=_USAGE_NAMES[usage]).text = str(usage)
    for index, values in enumerate(rows):
        row_element = ElementTree.SubElement(table, "Row", index=str(index))
        for value in values:
            ElementTree.SubElement(row_element, "F").text = value
    ElementTree.indent(root, space="  ")
    return ElementTree.tostring(root, encoding="unicode") + "\n"


def _real(value: Any) -> str:
    """A Real field: whole numbers without a fraction, others as Python's shortest exact repr."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def write_rat(path: str | os.PathLike[str], document: str, *, overwrite: bool = False) -> pathlib.Path | URLPath:
    """Write a PAM document (:func:`class_table`) at ``path`` (a file or a URL), atomically.

    Raises
    ------
    ImageWriteError
        ``path`` exists (without ``overwrite``) or cannot be written.
    """
    path = output_location(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(document, encoding="utf-8")
    logger.info("wrote the classes' attribute table %s", path)
    return path
