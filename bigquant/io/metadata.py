"""What an image says about itself besides its pixels, carried from input to output.

An :class:`ImageMetadata` holds, read once with the rest of the metadata:

- the pixel size: TIFF XResolution/YResolution/ResolutionUnit (kept as exact
  rationals), an OME-TIFF's PhysicalSizeX/Y (in micrometres), a PNG's pHYs or
  a JPEG's JFIF density;
- the ``key = value`` fields of an Aperio ImageDescription (``MPP``,
  ``AppMag``, the scanner, date, ...), which describe the scan;
- the ICC profile (TIFF tag 34675, PNG iCCP, JPEG APP2).

Writers ask it for what their format holds.  A TIFF gets XResolution and
YResolution in pixels per centimetre -- what OpenSlide's generic-tiff vendor
turns into ``openslide.mpp-x``/``mpp-y`` (and QuPath and Bio-Formats into the
pixel size) -- each reduced level's divided by its subsampling step; the Aperio
fields go into its ImageDescription as text under a line that does not start
with "Aperio", since the file does not have the Aperio structure (thumbnail,
label and macro IFDs).  An OME-TIFF (an output named ``*.ome.tif``) gets
PhysicalSizeX/Y in its OME-XML and the Aperio fields as a MapAnnotation.  A
PNG gets pHYs (pixels per metre) and iCCP, a JPEG the ICC profile (not its
JFIF density, whose 16-bit fields cannot hold slide resolutions).  Zarr
outputs carry none of it.  The ICC profile is carried only
where its colour space is that of the pixels written (an RGB profile on RGB or
palette pixels, a grey one on grey pixels).

Examples
--------
>>> from fractions import Fraction
>>> meta = ImageMetadata(resolution=(Fraction(40000), Fraction(40000)), resolution_unit="centimeter")
>>> meta.pixel_size
(0.25, 0.25)
>>> meta.scaled(4).tiff_resolution()
((10000, 1), (10000, 1), 'CENTIMETER')
>>> meta.pixels_per_metre()
(4000000, 4000000)
"""

from __future__ import annotations

import logging
import math
import os
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Literal

from bigquant.errors import InvalidParameterError

__all__ = [
    "ICC_PROFILE_TAG", "ImageMetadata", "ResolutionUnit", "check_ome_layout", "is_ome_name", "read_tiff_metadata",
]

logger = logging.getLogger(__name__)

#: TIFF tag of the ICC profile (InterColorProfile, UNDEFINED bytes)
ICC_PROFILE_TAG = 34675
_UNDEFINED = 7
#: the units of ResolutionUnit bigquant carries (TIFF 1, 2, 3)
ResolutionUnit = Literal["none", "inch", "centimeter"]
#: micrometres per unit of ResolutionUnit (4 and 5: millimetre, micrometre, written by some tools)
_UM_PER_UNIT = {"inch": 25400, "centimeter": 10000, "millimeter": 1000, "micrometer": 1}
_TIFF_UNITS = {1: "none", 2: "inch", 3: "centimeter", 4: "millimeter", 5: "micrometer"}
#: micrometres per OME UnitsLength (the metric ones, the angstrom and the inch)
_OME_UM = {"m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "nm": 1e-3, "pm": 1e-6,
           "Å": 1e-4, "in": 25400.0}
#: first line of the Aperio fields bigquant writes (never "Aperio...": the file is not an Aperio slide)
DESCRIPTION_HEADER = "bigquant: Aperio scan fields of the source"
_APERIO = "Aperio"
_FIELD = re.compile(r"^\s*([^=|]+?)\s*=\s*(.*?)\s*$")
#: Aperio fields that change with the pixel size of the level written
_MPP, _APPMAG = "MPP", "AppMag"
#: the TIFF suffixes an OME-TIFF name ends in (after ".ome")
_OME_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
_ICC_SPACES = {"rgb": b"RGB ", "gray": b"GRAY"}
#: the largest numerator or denominator of a TIFF RATIONAL
_UINT32 = 2**32 - 1


def _rational(value: Fraction) -> tuple[int, int]:
    """``value`` as a TIFF RATIONAL (numerator and denominator within 32 bits)."""
    if value <= 0:
        return 0, 1
    if value.numerator <= _UINT32 and value.denominator <= _UINT32:
        return value.numerator, value.denominator
    close = value.limit_denominator(max(1, min(_UINT32, int(_UINT32 / value))))
    return close.numerator, close.denominator


def _format_number(value: float) -> str:
    """A number as the Aperio fields spell it (``0.25``, ``20``, ``0.998``)."""
    return f"{value:.10g}"


@dataclass(frozen=True)
class ImageMetadata:
    """Pixel size, scan description and colour profile of an image.

    Parameters
    ----------
    resolution : (Fraction, Fraction) or None, default=None
        Pixels per ``resolution_unit`` along X and along Y, as the file says
        (TIFF XResolution, YResolution; PNG pHYs, JPEG JFIF density).
    resolution_unit : {"none", "inch", "centimeter"} or None, default=None
        Unit of ``resolution`` ("none": an aspect ratio only).
    physical_size : (float, float) or None, default=None
        Width and height of a pixel in micrometres, from an OME-TIFF's
        PhysicalSizeX/Y.
    fields : tuple of (str, str), default=()
        The ``key = value`` fields of an Aperio ImageDescription, in order
        (``("AppMag", "20")``, ``("MPP", "0.25")``, ...).
    icc_profile : bytes or None, default=None
        The ICC profile.
    """

    resolution: tuple[Fraction, Fraction] | None = None
    resolution_unit: ResolutionUnit | None = None
    physical_size: tuple[float, float] | None = None
    fields: tuple[tuple[str, str], ...] = ()
    icc_profile: bytes | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ what the image says

    @property
    def mpp(self) -> float | None:
        """The Aperio ``MPP`` field (micrometres per pixel), when it is a positive number."""
        for key, value in self.fields:
            if key == _MPP:
                try:
                    mpp = float(value)
                except ValueError:
                    return None
                return mpp if math.isfinite(mpp) and mpp > 0 else None
        return None

    def _tag_pixel_size(self) -> tuple[float, float] | None:
        """Pixel width and height in micrometres from ``resolution`` (a physical unit only)."""
        if self.resolution is None or self.resolution_unit not in _UM_PER_UNIT:
            return None
        x, y = self.resolution
        if x <= 0 or y <= 0:
            return None
        per_unit = _UM_PER_UNIT[self.resolution_unit]
        return float(per_unit / x), float(per_unit / y)

    @property
    def pixel_size(self) -> tuple[float, float] | None:
        """Width and height of a pixel in micrometres, or None when unknown.

        As the input's own format says it: an OME-TIFF's PhysicalSizeX/Y,
        else an Aperio ``MPP``, else the resolution in a physical unit.
        """
        if self.physical_size is not None:
            return self.physical_size
        mpp = self.mpp
        if mpp is not None:
            return mpp, mpp
        return self._tag_pixel_size()

    # ------------------------------------------------------------------ changes

    def scaled(self, step_x: Fraction | int, step_y: Fraction | int | None = None) -> ImageMetadata:
        """The metadata of the image subsampled by ``step_x`` along X and ``step_y`` along Y.

        Each pixel is ``step`` times as large: resolutions are divided by it,
        pixel sizes and ``MPP`` multiplied, ``AppMag`` divided (the
        magnification whose pixels are that size).
        """
        fx = Fraction(step_x)
        fy = fx if step_y is None else Fraction(step_y)
        if fx <= 0 or fy <= 0:
            raise InvalidParameterError(f"steps ({step_x!r}, {step_y!r}) must be positive")
        if fx == 1 and fy == 1:
            return self
        resolution = None if self.resolution is None else (self.resolution[0] / fx, self.resolution[1] / fy)
        size = self.physical_size
        physical = None if size is None else (size[0] * float(fx), size[1] * float(fy))
        fields = []
        for key, value in self.fields:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if key == _MPP and math.isfinite(number):
                value = _format_number(number * float(fx))
            elif key == _APPMAG and math.isfinite(number):
                value = _format_number(number / float(fx))
            fields.append((key, value))
        return replace(self, resolution=resolution, physical_size=physical, fields=tuple(fields))

    def transposed(self) -> ImageMetadata:
        """The metadata of the image with X and Y swapped (an Orientation of 5 to 8 applied)."""
        resolution = None if self.resolution is None else (self.resolution[1], self.resolution[0])
        size = self.physical_size
        physical = None if size is None else (size[1], size[0])
        return replace(self, resolution=resolution, physical_size=physical)

    # ------------------------------------------------------------------ what writers ask

    def tiff_resolution(self) -> tuple[tuple[int, int], tuple[int, int], str] | None:
        """XResolution, YResolution (rationals) and ResolutionUnit to write, or None.

        The file's own tags when they are in a physical unit and agree with
        :attr:`pixel_size`; else pixels per centimetre from the pixel size; a
        unitless ratio as it is when it is not 1:1.
        """
        size = self.pixel_size
        if size is None:
            if self.resolution is not None and self.resolution_unit == "none" and self.resolution[0] != self.resolution[1]:
                return _rational(self.resolution[0]), _rational(self.resolution[1]), "NONE"
            return None
        tags = self._tag_pixel_size()
        if (self.resolution is not None and self.resolution_unit in ("inch", "centimeter") and tags is not None
                and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(tags, size))):
            return _rational(self.resolution[0]), _rational(self.resolution[1]), self.resolution_unit.upper()
        x, y = (Fraction(10000) / Fraction(s) for s in size)
        return _rational(x), _rational(y), "CENTIMETER"

    def pixels_per_metre(self) -> tuple[int, int] | None:
        """PNG pHYs: pixels per metre along X and Y (rounded), or None when the pixel size is unknown."""
        size = self.pixel_size
        if size is None:
            return None
        ppm = tuple(int(round(1e6 / s)) for s in size)
        if min(ppm) < 1 or max(ppm) > 2**31 - 1:
            logger.debug("pixel size %s um is beyond what a PNG pHYs chunk holds: not written", size)
            return None
        return ppm[0], ppm[1]

    def description(self) -> str | None:
        """The ImageDescription of a TIFF output: the Aperio fields under bigquant's line, or None."""
        if not self.fields:
            return None
        return "|".join([DESCRIPTION_HEADER] + [f"{key} = {value}" for key, value in self.fields])

    def ome(self) -> dict[str, Any]:
        """``tifffile`` OME metadata of the first image: PhysicalSizeX/Y (µm) and the Aperio fields."""
        out: dict[str, Any] = {}
        size = self.pixel_size
        if size is not None:
            out.update(PhysicalSizeX=size[0], PhysicalSizeXUnit="µm", PhysicalSizeY=size[1],
                       PhysicalSizeYUnit="µm")
        if self.fields:
            out["MapAnnotation"] = dict(self.fields)
        return out

    def icc_for(self, colour: Literal["rgb", "gray"] | None) -> bytes | None:
        """The ICC profile when it describes pixels of this colour space, else None."""
        icc = self.icc_profile
        if icc is None or colour is None:
            return None
        if len(icc) < 20 or icc[16:20] != _ICC_SPACES[colour]:
            logger.debug("ICC profile of colour space %r does not describe %s pixels: not written",
                         icc[16:20], colour)
            return None
        return icc

    def icc_tag(self, colour: Literal["rgb", "gray"] | None) -> list[tuple[int, int, int, bytes, bool]]:
        """``tifffile`` extratags of the ICC profile (tag 34675) for pixels of ``colour``."""
        icc = self.icc_for(colour)
        return [] if icc is None else [(ICC_PROFILE_TAG, _UNDEFINED, len(icc), icc, True)]


# ---------------------------------------------------------------------------------- parsing


def aperio_fields(description: str | None) -> tuple[tuple[str, str], ...]:
    """The ``key = value`` fields of an Aperio ImageDescription (or of one bigquant wrote), else ()."""
    if not description or not description.lstrip().startswith((_APERIO, DESCRIPTION_HEADER)):
        return ()
    fields = []
    for part in description.split("|")[1:]:
        match = _FIELD.match(part)
        if match:
            fields.append((match[1], match[2]))
    return tuple(fields)


def _ome_physical_size(xml: str | None, series: int, name: str | None) -> tuple[float, float] | None:
    """PhysicalSizeX/Y in micrometres of OME Image ``series`` (or the one named ``name``)."""
    if not xml:
        return None
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        logger.debug("OME-XML is not XML: no physical size")
        return None
    images = [e for e in root if e.tag.rsplit("}", 1)[-1] == "Image"]
    named = [e for e in images if name and e.get("Name") == name]
    image = named[0] if len(named) == 1 else images[series] if series < len(images) else None
    pixels = None if image is None else next((e for e in image if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    size = []
    for axis in "XY":
        value, unit = pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm")
        try:
            um = float(value) * _OME_UM[unit] if value is not None else math.nan
        except (KeyError, ValueError):
            um = math.nan
        if not (math.isfinite(um) and um > 0):
            return None
        size.append(um)
    return size[0], size[1]


def read_tiff_metadata(tf: Any, series: int, level: int) -> ImageMetadata:
    """The metadata of one level of one series of an open ``tifffile.TiffFile``.

    Read from the full-resolution page of the series (reduced levels often
    carry no resolution of their own) and scaled to the level's size.
    """
    levels = tf.series[series].levels
    page = levels[0].keyframe
    tags = page.tags
    resolution: tuple[Fraction, Fraction] | None = None
    unit: Any = None
    x, y = tags.get(282), tags.get(283)
    if x is not None and y is not None:
        try:
            resolution = (Fraction(*x.value), Fraction(*y.value))
            unit = _TIFF_UNITS.get(int(tags.valueof(296, default=2)))
        except (TypeError, ValueError, ZeroDivisionError):
            resolution = None
    if unit in ("millimeter", "micrometer") and resolution is not None:
        per_cm = Fraction(_UM_PER_UNIT["centimeter"], _UM_PER_UNIT[unit])
        resolution, unit = (resolution[0] * per_cm, resolution[1] * per_cm), "centimeter"
    if unit is None:
        resolution = None
    icc = tags.get(ICC_PROFILE_TAG)
    icc_bytes = bytes(icc.value) if icc is not None and isinstance(icc.value, (bytes, bytearray)) else None
    physical = None
    if tf.is_ome:
        physical = _ome_physical_size(tf.ome_metadata, series, tf.series[series].name)
    description = page.description if isinstance(page.description, str) else None
    meta = ImageMetadata(resolution=resolution, resolution_unit=unit, physical_size=physical,
                         fields=aperio_fields(description), icc_profile=icc_bytes)
    if level:
        (h0, w0), (h, w) = (tuple(int(s) for s in lev.keyframe.shape[:2]) for lev in (levels[0], levels[level]))
        meta = meta.scaled(Fraction(w0, w), Fraction(h0, h))
    return meta


# ---------------------------------------------------------------------------------- OME names


def is_ome_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named as an OME-TIFF (``*.ome.tif``, ``.ome.tiff``, ``.ome.btf``, ``.ome.tf8``)."""
    name = os.fspath(path).lower()
    return any(name.endswith(".ome" + suffix) for suffix in _OME_SUFFIXES)


def check_ome_layout(path: str | os.PathLike[str], *, overviews: Any, cog: Any) -> None:
    """Refuse reduced levels an OME-TIFF named ``path`` cannot hold.

    An OME-TIFF keeps its pyramid in SubIFDs; overview IFDs chained after the
    image (``overviews``, ``cog``) would be more images to an OME reader,
    which the OME-XML does not describe.

    Raises
    ------
    InvalidParameterError
        ``path`` is an OME-TIFF name and ``overviews`` or ``cog`` is asked.
    """
    if is_ome_name(path) and (overviews or cog):
        asked = "cog=True" if cog else f"overviews={overviews!r}"
        raise InvalidParameterError(
            f"{path}: an OME-TIFF keeps its reduced levels as SubIFDs (pyramid), not as the overview IFDs "
            f"{asked} chains after the image; use pyramid, or name the output .tif"
        )
