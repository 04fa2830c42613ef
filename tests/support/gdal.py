"""GDAL's own reading of a raster attribute table, through its C API.

rasterio has no RAT API, but its wheel bundles libgdal (``rasterio.libs/``):
the functions GDAL's ``gdalinfo`` calls (``GDALOpen``, ``GDALGetDefaultRAT``,
``GDALRATGetValueAsString``..., and ``GDALInfo`` itself, which prints
``gdalinfo -json``) are called here through ctypes, on the very
library rasterio loaded, so nothing besides the test dependencies is needed.
A rasterio built against a system GDAL has no bundled copy: the system's
``libgdal`` is used then.  No GDAL found is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import glob
import json
import os
import pathlib
from collections.abc import Iterator

_VOIDP, _INT, _CHARP, _DOUBLE = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_double


@dataclasses.dataclass(frozen=True)
class Rat:
    """A RAT as GDAL read it: table type, columns (name, type, usage) and rows."""

    thematic: bool
    columns: list[tuple[str, int, int]]
    rows: list[list[str]]

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.columns]

    def column(self, name: str) -> list[str]:
        """Every row's value of column ``name``, as GDAL prints it."""
        i = self.names.index(name)
        return [row[i] for row in self.rows]

    def usage(self, name: str) -> int:
        return self.columns[self.names.index(name)][2]

    def type(self, name: str) -> int:
        return self.columns[self.names.index(name)][1]


@functools.lru_cache(maxsize=1)
def libgdal() -> ctypes.CDLL:
    """The libgdal rasterio runs on (bundled in its wheel, else the system's)."""
    import rasterio  # loads its libgdal first: ctypes then finds the same, loaded library

    base = pathlib.Path(rasterio.__file__).parent
    found = sorted(glob.glob(str(base.parent / "rasterio.libs" / "libgdal*.so*"))
                   + glob.glob(str(base / ".libs" / "libgdal*.so*"))
                   + glob.glob(str(base / ".dylibs" / "libgdal*.dylib")))
    path = found[0] if found else ctypes.util.find_library("gdal")
    if path is None:
        raise RuntimeError("no libgdal: neither rasterio's bundled copy nor a system one")
    lib = ctypes.CDLL(path)
    signatures = {
        "GDALOpen": (_VOIDP, [_CHARP, _INT]),
        "GDALClose": (None, [_VOIDP]),
        "GDALGetRasterBand": (_VOIDP, [_VOIDP, _INT]),
        "GDALGetDefaultRAT": (_VOIDP, [_VOIDP]),
        "GDALRATGetRowCount": (_INT, [_VOIDP]),
        "GDALRATGetColumnCount": (_INT, [_VOIDP]),
        "GDALRATGetNameOfCol": (_CHARP, [_VOIDP, _INT]),
        "GDALRATGetTypeOfCol": (_INT, [_VOIDP, _INT]),
        "GDALRATGetUsageOfCol": (_INT, [_VOIDP, _INT]),
        "GDALRATGetValueAsString": (_CHARP, [_VOIDP, _INT, _INT]),
        "GDALRATGetTableType": (_INT, [_VOIDP]),
        "GDALRATGetRowOfValue": (_INT, [_VOIDP, _DOUBLE]),
        "GDALVersionInfo": (_CHARP, [_CHARP]),
        "GDALInfoOptionsNew": (_VOIDP, [ctypes.POINTER(_CHARP), _VOIDP]),
        "GDALInfoOptionsFree": (None, [_VOIDP]),
        "GDALInfo": (_VOIDP, [_VOIDP, _VOIDP]),
        "VSIFree": (None, [_VOIDP]),
    }
    for name, (restype, argtypes) in signatures.items():
        func = getattr(lib, name)
        func.restype, func.argtypes = restype, argtypes
    lib.GDALAllRegister()
    return lib


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str]) -> Iterator[tuple[ctypes.CDLL, int]]:
    """GDAL's library and ``path`` opened read-only with it (closed after)."""
    lib = libgdal()
    ds = lib.GDALOpen(os.fsencode(os.fspath(path)), 0)
    if not ds:
        raise OSError(f"GDAL cannot open {path}")
    try:
        yield lib, ds
    finally:
        lib.GDALClose(ds)


def read_rat(path: str | os.PathLike[str], band: int = 1) -> Rat | None:
    """The default RAT GDAL finds for ``band`` of ``path`` (None when it finds none)."""
    with _opened(path) as (lib, ds):
        rat = lib.GDALGetDefaultRAT(lib.GDALGetRasterBand(ds, band))
        if not rat:
            return None
        n_cols, n_rows = lib.GDALRATGetColumnCount(rat), lib.GDALRATGetRowCount(rat)
        columns = [(lib.GDALRATGetNameOfCol(rat, c).decode(), lib.GDALRATGetTypeOfCol(rat, c),
                    lib.GDALRATGetUsageOfCol(rat, c)) for c in range(n_cols)]
        rows = [[lib.GDALRATGetValueAsString(rat, r, c).decode() for c in range(n_cols)] for r in range(n_rows)]
        return Rat(lib.GDALRATGetTableType(rat) == 0, columns, rows)


def gdalinfo_json(path: str | os.PathLike[str]) -> dict:
    """What ``gdalinfo -json PATH`` prints (``GDALInfo``, the library function the program wraps), parsed.

    Parsed strictly: a bare ``nan`` or ``inf`` (not JSON) fails.
    """
    with _opened(path) as (lib, ds):
        options = lib.GDALInfoOptionsNew((_CHARP * 2)(b"-json", None), None)
        try:
            text = lib.GDALInfo(ds, options)
        finally:
            lib.GDALInfoOptionsFree(options)
        try:
            printed = ctypes.string_at(text).decode()
        finally:
            lib.VSIFree(text)

    def not_json(constant: str) -> None:
        raise ValueError(f"gdalinfo -json printed {constant}, which is not JSON")

    return json.loads(printed, parse_constant=not_json)


def row_of_value(path: str | os.PathLike[str], value: float, band: int = 1) -> int:
    """``GDALRATGetRowOfValue``: the RAT row GDAL gives a pixel value (-1: none)."""
    with _opened(path) as (lib, ds):
        rat = lib.GDALGetDefaultRAT(lib.GDALGetRasterBand(ds, band))
        return -1 if not rat else int(lib.GDALRATGetRowOfValue(rat, float(value)))
