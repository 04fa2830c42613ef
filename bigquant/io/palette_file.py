"""Palette files people exchange: bigquant JSON, GIMP ``.gpl``, Adobe ``.act`` and swatch images.

:func:`read_palette` returns the colours of a palette file as an array of
shape (k, n_channels); :func:`write_palette` writes one.  The format follows
the suffix:

- ``.json``: what :func:`bigquant.quantize` writes (``palette_out``); its
  ``palette`` entry (every band, in the image's units; older files:
  ``centres``, then ``colours``) is read back.
- ``.gpl``: GIMP palette, text, one ``R G B name`` line per colour (8-bit).
- ``.act``: Adobe colour table, 768 bytes of 256 RGB triples, then the
  number of colours and the transparent index (big-endian uint16, 0xFFFF for
  none): 4 more bytes.  At most 256 colours.
- ``.png``, ``.tif``, ``.tiff``: a swatch image; its distinct colours in
  the order they first appear (row by row), or the colour table of an
  indexed image.  Written as a grid of 16 x 16 px squares, 16 to a row.

``.gpl``, ``.act`` and swatches hold 8-bit RGB colours only.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import tempfile
from typing import Any

import numpy as np

from bigquant.errors import ImageReadError, InvalidInputError, InvalidParameterError
from bigquant.io.atomic import atomic_output
from bigquant.io.files import is_url, read_bytes
from bigquant.io.objects import output_location

__all__ = ["PALETTE_FORMATS", "read_palette", "write_palette", "palette_format"]

logger = logging.getLogger(__name__)

#: palette file suffixes and their format
PALETTE_FORMATS = {".json": "json", ".gpl": "gpl", ".act": "act", ".png": "swatch", ".tif": "swatch", ".tiff": "swatch"}
#: most colours read from a swatch image
MAX_SWATCH_COLOURS = 65536
#: swatch squares: edge in pixels and squares per row
_SQUARE = 16
_PER_ROW = 16


def palette_format(path: str | os.PathLike[str]) -> str:
    """The format of a palette file from its suffix.

    Raises
    ------
    InvalidParameterError
        The suffix is not one of :data:`PALETTE_FORMATS`.
    """
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in PALETTE_FORMATS:
        raise InvalidParameterError(
            f"{path}: unknown palette format {suffix or '(no suffix)'!r}; use one of {', '.join(PALETTE_FORMATS)}"
        )
    return PALETTE_FORMATS[suffix]


# --------------------------------------------------------------------------- reading


def read_palette(path: str | os.PathLike[str]) -> np.ndarray:
    """Read the colours of a palette file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.json``, ``.gpl``, ``.act``, ``.png`` or ``.tif`` file, local or
        at a URL (``s3://bucket/palette.json``: fetched whole).

    Returns
    -------
    palette : ndarray of shape (k, n_channels)
        uint8 for the 8-bit formats; the JSON's own values (int64 when they
        are all integers, else float64) for ``.json``.

    Raises
    ------
    ImageReadError
        The file is missing, unreadable or not a palette of its format.
    InvalidParameterError
        The suffix is not a palette format.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = write_palette(pathlib.Path(d) / "p.gpl", np.array([[255, 0, 0], [0, 0, 255]], np.uint8))
    ...     read_palette(p).tolist()
    [[255, 0, 0], [0, 0, 255]]
    """
    if is_url(path):  # fetched whole (a palette file is small) into a temporary file, read as a local one
        fmt = palette_format(output_location(path))
        try:
            data = read_bytes(str(path))
        except ImageReadError as exc:
            raise ImageReadError(f"palette file {exc}") from exc
        with tempfile.TemporaryDirectory(prefix="bigquant-palette-") as folder:
            local = pathlib.Path(folder) / output_location(path).name
            local.write_bytes(data)
            try:
                return read_palette(local)
            except ImageReadError as exc:
                raise ImageReadError(str(exc).replace(str(local), str(path))) from exc
    path = pathlib.Path(path).expanduser()
    fmt = palette_format(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: palette file not found")
    try:
        if fmt == "json":
            pal = _read_json(path)
        elif fmt == "gpl":
            pal = _read_gpl(path)
        elif fmt == "act":
            pal = _read_act(path)
        else:
            pal = _read_swatch(path)
    except (ImageReadError, InvalidInputError):
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageReadError(f"{path}: not a readable {fmt} palette ({exc})") from exc
    if pal.ndim != 2 or pal.shape[0] == 0:
        raise ImageReadError(f"{path}: the palette holds no colour")
    logger.info("palette %s: %d colours of %d channel(s)", path, pal.shape[0], pal.shape[1])
    return pal


def _read_json(path: pathlib.Path) -> np.ndarray:
    try:
        doc = json.loads(path.read_text())
    except RecursionError:
        raise ImageReadError(
            f"{path}: not a palette JSON: its lists or objects are nested too deeply to read "
            "(a palette is a list of colours, each a list of numbers)"
        ) from None
    if not isinstance(doc, dict):
        raise ImageReadError(f"{path}: a palette JSON is an object with a 'palette' (or 'colours') list")
    for key in ("palette", "centres", "colours"):
        if doc.get(key) is not None:
            values = np.asarray(doc[key], dtype=np.float64)
            break
    else:
        raise ImageReadError(f"{path}: no 'palette', 'centres' or 'colours' entry")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ImageReadError(f"{path}: the palette must be a list of colours, got shape {values.shape}")
    if np.all(np.isfinite(values)) and np.all(values == np.rint(values)):
        return values.astype(np.int64)
    return values


def _read_gpl(path: pathlib.Path) -> np.ndarray:
    lines = path.read_text(errors="replace").splitlines()
    if not lines or lines[0].strip() != "GIMP Palette":
        raise ImageReadError(f"{path}: a GIMP palette starts with the line 'GIMP Palette'")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        text = line.strip()
        if not text or text.startswith("#") or re.match(r"^(Name|Columns)\s*:", text):
            continue
        parts = text.split()
        try:
            rgb = [int(v) for v in parts[:3]]
        except ValueError:
            raise ImageReadError(f"{path}, line {number}: expected 'R G B [name]', got {text!r}") from None
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ImageReadError(f"{path}, line {number}: expected three values 0..255, got {text!r}")
        rows.append(rgb)
    return np.array(rows, dtype=np.uint8).reshape(-1, 3)


def _read_act(path: pathlib.Path) -> np.ndarray:
    raw = path.read_bytes()
    if len(raw) not in (768, 772):
        raise ImageReadError(f"{path}: an Adobe colour table is 768 or 772 bytes, this file is {len(raw)}")
    table = np.frombuffer(raw[:768], dtype=np.uint8).reshape(256, 3)
    count = 256
    if len(raw) == 772:
        count = int.from_bytes(raw[768:770], "big")
        if not 1 <= count <= 256:
            raise ImageReadError(f"{path}: colour count {count} is not in 1..256")
    return table[:count].copy()


def _read_swatch(path: pathlib.Path) -> np.ndarray:
    from PIL import Image

    try:
        im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: too large for a swatch image ({exc})") from exc
    with im:
        if im.mode == "P":
            index = np.asarray(im)
            used = _first_appearance(index.reshape(-1, 1))[:, 0]
            table = np.asarray(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
            if used.size and int(used.max()) >= len(table):
                raise InvalidInputError(
                    f"{path}: pixel index {int(used.max())} is past the image's colour table of "
                    f"{len(table)} colour(s); the indexed PNG is corrupt"
                )
            return table[used]
        rgb = np.asarray(im.convert("RGB"))
    if rgb.dtype != np.uint8:
        raise ImageReadError(f"{path}: a swatch image must be 8-bit")
    return _first_appearance(rgb.reshape(-1, 3))


def _first_appearance(rows: np.ndarray) -> np.ndarray:
    """Distinct rows in the order they first appear."""
    _, first = np.unique(rows, axis=0, return_index=True)
    if first.shape[0] > MAX_SWATCH_COLOURS:
        raise InvalidInputError(
            f"the swatch has {first.shape[0]} distinct colours, more than a palette holds ({MAX_SWATCH_COLOURS})"
        )
    return rows[np.sort(first)]


# --------------------------------------------------------------------------- writing


def write_palette(
    path: str | os.PathLike[str],
    palette: np.ndarray,
    *,
    document: dict[str, Any] | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write a palette file (format from the suffix), atomically.

    Parameters
    ----------
    path : str or os.PathLike
    palette : array-like of shape (k, n_channels)
        The colours; ``.gpl``, ``.act`` and swatches need 8-bit RGB (or grey,
        written as R = G = B).
    document : dict, default=None
        JSON only: the whole document to write (its ``palette`` entry is set
        from ``palette``).
    name : str, default=None
        ``.gpl`` only: the palette's name (default: the file's stem).
    overwrite : bool, default=False
        Replace an existing file.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InvalidParameterError
        The format cannot hold these colours (not 8-bit RGB, or more than 256
        colours in an ``.act``).
    """
    path = output_location(path)
    fmt = palette_format(path)
    pal = np.asarray(palette)
    if pal.ndim == 1:
        pal = pal[:, None]
    if fmt == "json":
        doc = dict(document or {})
        doc["palette"] = pal.tolist()
        with atomic_output(path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
        return path
    rgb = _as_rgb8(pal, path, fmt)
    with atomic_output(path, overwrite=overwrite) as tmp:
        if fmt == "gpl":
            lines = ["GIMP Palette", f"Name: {name or path.stem}", f"Columns: {min(len(rgb), _PER_ROW)}", "#"]
            lines += [f"{r:3d} {g:3d} {b:3d}\tIndex {i}" for i, (r, g, b) in enumerate(rgb.tolist())]
            tmp.write_text("\n".join(lines) + "\n")
        elif fmt == "act":
            table = np.zeros((256, 3), dtype=np.uint8)
            table[: len(rgb)] = rgb
            tmp.write_bytes(table.tobytes() + len(rgb).to_bytes(2, "big") + (0xFFFF).to_bytes(2, "big"))
        else:
            _write_swatch(tmp, rgb, path.suffix.lower())
    return path


def _as_rgb8(pal: np.ndarray, path: pathlib.Path, fmt: str) -> np.ndarray:
    if pal.shape[1] == 1:
        pal = np.repeat(pal, 3, axis=1)
    values = np.asarray(pal, dtype=np.float64)
    if (pal.shape[1] != 3 or not np.all(values == np.rint(values))
            or values.size and (values.min() < 0 or values.max() > 255)):
        raise InvalidParameterError(
            f"{path}: a {fmt} palette holds 8-bit RGB colours; these are {pal.shape[1]} channel(s) "
            f"of {pal.dtype} in [{values.min():g}, {values.max():g}]: write a .json palette"
        )
    if fmt == "act" and pal.shape[0] > 256:
        raise InvalidParameterError(f"{path}: an .act palette holds at most 256 colours, not {pal.shape[0]}")
    return values.astype(np.uint8)


def _write_swatch(tmp: pathlib.Path, rgb: np.ndarray, suffix: str) -> None:
    """A grid of squares, ``_PER_ROW`` to a row; the last row padded with the last colour."""
    k = rgb.shape[0]
    columns = min(k, _PER_ROW)
    rows = -(-k // columns)
    cells = np.concatenate([rgb, np.repeat(rgb[-1:], rows * columns - k, axis=0)]).reshape(rows, columns, 3)
    image = np.repeat(np.repeat(cells, _SQUARE, axis=0), _SQUARE, axis=1)
    if suffix == ".png":
        from PIL import Image

        Image.fromarray(image, "RGB").save(tmp, format="PNG")
    else:
        import tifffile

        tifffile.imwrite(tmp, image, photometric="rgb")
