"""The ``bigquant`` command: ``quantize``, ``sweep``, ``info`` and ``demo``.

Exit codes: 0 success, 2 usage error (bad arguments or parameter values),
1 failure (unreadable input, unreachable scheduler, ...), 3 an input skipped
with ``--keep-going``, 98 ``--skip-if-larger`` kept the input, 99 ``--quality``
MIN not reached, 130 interrupted. Errors
are one line on stderr; ``--verbose`` adds the traceback and the library's log.

The command line owns the terminal: it configures logging, prints results on
stdout and draws progress (Lloyd's iterations, long passes) on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import logging
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

__all__ = ["main", "run", "build_parser", "UsageError"]

PROG = "bigquant"
#: exit code when --quality MIN cannot be reached (pngquant uses the same)
EXIT_QUALITY = 99
#: exit code when --skip-if-larger keeps the input: the output would not be smaller (pngquant's)
EXIT_LARGER = 98
#: exit code when --keep-going skipped an input it could not read
EXIT_SKIPPED = 3

logger = logging.getLogger("bigquant.cli")


class UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------- arguments


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 8192 or 8192x6144") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 16:
        raise argparse.ArgumentTypeError(f"{text!r} must be N or HxW with sides >= 16")
    return parts[0], parts[1]


def _bands(text: str) -> tuple[int, int, int]:
    parts = text.replace(" ", "").split(",")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} must be three band indices R,G,B, e.g. 3,2,1")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _mask_option(value: str | None) -> Any:
    """--mask as quantize's ``mask``: None (the file's masks), "auto", False ('none') or a path."""
    if value is None or value == "auto":
        return value
    return False if value == "none" else value


def _add_runtime(p: argparse.ArgumentParser, *, cluster_default: bool = True) -> None:
    g = p.add_argument_group("where it runs")
    g.add_argument("--scheduler", metavar="ADDR",
                   help="address of an existing Dask scheduler, e.g. tcp://host:8786 "
                        "(default: this process's threads, no scheduler)")
    g.add_argument("--workers", type=_positive_int, metavar="N", help="local cluster: worker processes")
    g.add_argument("--threads", type=_positive_int, metavar="N", help="local cluster: threads per worker")
    g.add_argument("--memory-limit", metavar="SIZE", help="local cluster: memory per worker, e.g. 4GiB")
    g.add_argument("--dashboard", metavar="ADDR", default=None,
                   help="serve Dask's dashboard at ADDR, e.g. :8787 (a scheduler in this process, its threads "
                        "as the worker; with --cluster the default is :8787; 'none' for no dashboard)")
    g.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the scheduler (default 30)")
    g.add_argument("--tls-ca-file", metavar="PATH",
                   help="TLS scheduler (tls://host:port): the CA certificate its certificate is checked against")
    g.add_argument("--tls-cert", metavar="PATH", help="TLS scheduler: this client's certificate (PEM)")
    g.add_argument("--tls-key", metavar="PATH",
                   help="TLS scheduler: this client's private key, unless --tls-cert holds it "
                        "(default for all three: Dask's config distributed.comm.tls.*)")
    g.add_argument("--no-cluster", action="store_true",
                   help="no Dask scheduler: run on this process's threads (the default unless --cluster, "
                        "--scheduler, --dashboard, --workers, --threads or --memory-limit is given)")
    g.add_argument("--cluster", action="store_true",
                   help="start a local Dask cluster of worker processes, with the dashboard at :8787 "
                        "(on one machine it costs more CPU and memory than threads)")
    g.add_argument("--no-progress", action="store_true", help="do not draw progress bars")


QUANTIZE_USAGE = """\
bigquant quantize [options] IN OUT
       bigquant quantize [options] [NCOLORS] IN [IN ...]          each beside itself, named with --ext
       bigquant quantize [options] [NCOLORS] IN -o OUT            one input; '-' is stdin / stdout
       bigquant quantize [options] IN [IN ...] --shared | --out-dir DIR   one palette for the set"""

QUANTIZE_EXAMPLES = """\
examples:
  a whole-slide scan, 32 colours, as a tiled palette BigTIFF QuPath and napari open:
    bigquant quantize slide.svs slide-32.tif -k 32 --mask auto --overviews
  a 16-bit GeoTIFF, 24 colours of bands 4,3,2, a Cloud-Optimized GeoTIFF for GDAL/QGIS:
    bigquant quantize scene.tif scene-24.tif -k 24 --rgb-bands 3,2,1 -of COG -co COMPRESS=ZSTD
  PNGs for the web, as pngquant does (pngquant's 0-100 quality; a-fs8.png beside a.png):
    bigquant quantize --quality 65-80 --floyd a.png b.png
    bigquant quantize 64 - < in.png > out.png
"""

#: --speed S: (n_init, max_iter, tol) -- pngquant's 1 (slow, best) .. 11 (fast, rough), 4 its
#: default and bigquant's; the search of a large histogram runs 2 chains per initialisation
#: (bigquant.cluster.search.default_chains), so n_init sets the chains too
SPEEDS: dict[int, tuple[int, int, float]] = {
    1: (8, 1000, 1e-6), 2: (4, 600, 1e-5), 3: (2, 400, 1e-5), 4: (1, 300, 1e-4), 5: (1, 200, 1e-4),
    6: (1, 100, 3e-4), 7: (1, 60, 1e-3), 8: (1, 40, 1e-3), 9: (1, 20, 3e-3), 10: (1, 10, 1e-2),
    11: (1, 5, 1e-2),
}
#: --speed at and above which dithering is off, as pngquant's --speed 11
SPEED_NO_DITHER = 11

#: the command line's own spellings (argparse destinations that are no option of the request
#: model) and the model options each one sets: the one place where they map onto the model
CLI_ALIASES: dict[str, tuple[str, ...]] = {
    "output": (), "ext": ("suffix",), "shared": (), "skip_if_larger": (),
    "speed": ("n_init", "max_iter", "tol", "dither"),
    "nofs": ("dither",), "floyd": ("dither", "dither_strength"),
    "strip": ("metadata",),
    "creation_options": ("compression", "compression_level", "tile", "overviews", "cog", "nbits"),
    "output_format": ("cog", "suffix"),
}

#: -of: GDAL's driver names, and the output suffix each writes
OUTPUT_FORMATS = {"gtiff": ".tif", "cog": ".tif", "png": ".png", "zarr": ".zarr"}
#: -co COMPRESS=...: GDAL's names as bigquant's compressions
_GDAL_COMPRESS = {"deflate": "zlib", "lzw": "lzw", "zstd": "zstd", "none": "none", "jpeg": "jpeg",
                  "webp": "webp", "lzma": "lzma", "packbits": "packbits"}
#: -co keys each driver takes
_GDAL_KEYS = {
    "gtiff": ("COMPRESS", "PREDICTOR", "ZLEVEL", "ZSTD_LEVEL", "TILED", "BLOCKXSIZE", "BLOCKYSIZE", "BIGTIFF",
              "COPY_SRC_OVERVIEWS", "NBITS"),
    "cog": ("COMPRESS", "PREDICTOR", "LEVEL", "BLOCKSIZE", "BIGTIFF", "NBITS"),
}


def _add_pngquant_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pngquant's options (same meaning unless said)")
    g.add_argument("-o", "--output", metavar="OUT",
                   help="the output of the one input ('-': PNG on stdout, nothing else there)")
    g.add_argument("--ext", metavar="END",
                   help="name of each output beside its input: IN's name with END (default -fs8 dithered, "
                        "-or8 not, then the input's suffix or --suffix, e.g. a.png -> a-or8.png)")
    g.add_argument("--shared", action="store_true",
                   help="one palette for every input (as --out-dir), each written beside itself with --ext")
    g.add_argument("--psnr", dest="quality", type=lambda t: f"{t}dB", metavar="[MIN:]TARGET",
                   help="choose k: the fewest colours reaching TARGET dB PSNR; below MIN dB nothing is "
                        f"written (exit code {EXIT_QUALITY})")
    g.add_argument("--skip-if-larger", action="store_true",
                   help=f"keep the input (write nothing; exit code {EXIT_LARGER}) when the output is not smaller")
    g.add_argument("--strip", action="store_true",
                   help="write no metadata of the input: georeferencing, pixel size, scan fields, ICC profile "
                        "(= --no-metadata)")
    g.add_argument("--no-metadata", dest="metadata", action="store_false", default=True,
                   help="copy no metadata of the input (georeferencing, pixel size, scan fields, ICC profile)")
    g.add_argument("--speed", type=_int_at_least(1), metavar="1..11",
                   help="1 slow and best .. 4 (default) .. 11 fast and rough: initialisations, search chains, "
                        "Lloyd iterations and tolerance; 11 also turns dithering off")
    g.add_argument("--nofs", action="store_true", help="no Floyd-Steinberg dithering (bigquant's default)")
    g.add_argument("--floyd", nargs="?", const=1.0, type=_unit_float, metavar="F",
                   help="Floyd-Steinberg dithering of strength F in [0, 1] (default 1; pngquant dithers "
                        "by default, bigquant only when asked)")
    g.add_argument("--compression-level", type=_non_negative_int, metavar="N",
                   help="codec level (default: fast); -co ZLEVEL / ZSTD_LEVEL")


def _add_creation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("GDAL's creation options")
    g.add_argument("-co", dest="creation_options", action="append", metavar="KEY=VALUE",
                   help="TIFF creation option in GDAL's words: COMPRESS=DEFLATE|LZW|ZSTD|LZMA|NONE, "
                        "ZLEVEL, ZSTD_LEVEL, PREDICTOR=1, TILED=YES, BLOCKXSIZE=BLOCKYSIZE (= --tile), "
                        "BIGTIFF=YES|IF_NEEDED|IF_SAFER, COPY_SRC_OVERVIEWS=YES (= --overviews), "
                        "NBITS=1|2|4|8|16 (= --nbits); -of COG: COMPRESS, LEVEL, BLOCKSIZE, BIGTIFF, NBITS")
    g.add_argument("-of", dest="output_format", type=str.lower, choices=tuple(OUTPUT_FORMATS), metavar="FORMAT",
                   help="output format in GDAL's words: GTiff, COG (= --cog), PNG, Zarr")


def _level(key: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise UsageError(f"{PROG}: -co {key}={value}: give an integer in {low}..{high}")
    return int(value)


def creation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The request model's options that ``-co KEY=VALUE`` and ``-of FORMAT`` stand for (GDAL's words).

    Raises
    ------
    UsageError
        An unknown key or value, or one bigquant cannot write (PREDICTOR=2,
        TILED=NO, BIGTIFF=NO, BLOCKXSIZE != BLOCKYSIZE).
    """
    fmt = args.output_format
    given = list(args.creation_options or [])
    out: dict[str, Any] = {}
    if fmt == "cog":
        out["cog"] = True
    if not given:
        return out
    if fmt in ("png", "zarr"):
        raise UsageError(f"{PROG}: -co {given[0]}: creation options are TIFF's (-of GTiff or COG), not -of {fmt}")
    keys = _GDAL_KEYS["cog" if fmt == "cog" else "gtiff"]
    co: dict[str, str] = {}
    for item in given:
        key, sep, value = item.partition("=")
        key, value = key.strip().upper(), value.strip()
        if not sep or not key or not value:
            raise UsageError(f"{PROG}: -co {item}: give KEY=VALUE")
        if key not in keys:
            driver = "COG" if fmt == "cog" else "GTiff"
            raise UsageError(f"{PROG}: -co {key}: not a {driver} creation option bigquant writes (it takes "
                             f"{', '.join(keys)})")
        co[key] = value
    if "COMPRESS" in co:
        name = _GDAL_COMPRESS.get(co["COMPRESS"].lower())
        if name is None:
            raise UsageError(f"{PROG}: -co COMPRESS={co['COMPRESS']}: use one of "
                             f"{', '.join(k.upper() for k in _GDAL_COMPRESS)}")
        out["compression"] = name
    compression = out.get("compression", args.compression)
    for key, codec, high in (("ZLEVEL", "zlib", 9), ("ZSTD_LEVEL", "zstd", 22), ("LEVEL", None, 22)):
        if key in co:
            if codec is not None and str(compression).lower() not in ((codec, "deflate") if codec == "zlib"
                                                                       else (codec,)):
                raise UsageError(f"{PROG}: -co {key} is the level of COMPRESS={'DEFLATE' if codec == 'zlib' else 'ZSTD'}"
                                 f", not of {str(compression).upper()}")
            out["compression_level"] = _level(key, co[key], 1, high)
    if "PREDICTOR" in co and co["PREDICTOR"].upper() not in ("1", "NO", "NONE"):
        raise UsageError(f"{PROG}: -co PREDICTOR={co['PREDICTOR']}: bigquant's tile encoder has no predictor "
                         "(palette indices lose from a horizontal one: 10-20% more bytes, measured, and libtiff "
                         "refuses it on packed NBITS < 8); use PREDICTOR=1 or leave it out")
    if "NBITS" in co:
        if co["NBITS"] not in ("1", "2", "4", "8", "16"):
            raise UsageError(f"{PROG}: -co NBITS={co['NBITS']}: bigquant packs palette indices at 1, 2, 4, 8 or 16 "
                             "bits (GDAL's other depths, 3, 5-7 and 9-15, are not written)")
        out["nbits"] = int(co["NBITS"])
    if "TILED" in co and co["TILED"].upper() not in ("YES", "TRUE", "ON", "1"):
        raise UsageError(f"{PROG}: -co TILED={co['TILED']}: bigquant writes tiled TIFFs only (TILED=YES)")
    if "BIGTIFF" in co and co["BIGTIFF"].upper() not in ("YES", "IF_NEEDED", "IF_SAFER"):
        raise UsageError(f"{PROG}: -co BIGTIFF={co['BIGTIFF']}: bigquant always writes BigTIFF (YES, IF_NEEDED "
                         "or IF_SAFER)")
    sizes = {k: co[k] for k in ("BLOCKXSIZE", "BLOCKYSIZE", "BLOCKSIZE") if k in co}
    if sizes:
        values = set(sizes.values())
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise UsageError(f"{PROG}: -co {', '.join(f'{k}={v}' for k, v in sizes.items())}: square tiles only "
                             "(BLOCKXSIZE = BLOCKYSIZE, a multiple of 16)")
        tile = int(next(iter(values)))
        if tile < 16 or tile % 16:
            raise UsageError(f"{PROG}: -co {next(iter(sizes))}={tile}: a multiple of 16")
        out["tile"] = tile
    if "COPY_SRC_OVERVIEWS" in co:
        if co["COPY_SRC_OVERVIEWS"].upper() not in ("YES", "NO", "TRUE", "FALSE"):
            raise UsageError(f"{PROG}: -co COPY_SRC_OVERVIEWS={co['COPY_SRC_OVERVIEWS']}: YES or NO")
        if co["COPY_SRC_OVERVIEWS"].upper() in ("YES", "TRUE"):
            out["overviews"] = True  # the quantized image's own overviews (nearest), not the source's
    return out


def _normalise_quantize(args: argparse.Namespace) -> None:
    """Turn the command line's own spellings (:data:`CLI_ALIASES`) into the request model's options, in place."""
    paths = list(args.paths)
    args.ncolors = None
    if len(paths) > 1 and paths[0].isdigit() and not pathlib.Path(paths[0]).exists():
        args.ncolors = int(paths.pop(0))  # pngquant's [ncolors]
        if args.n_clusters is not None and args.n_clusters != args.ncolors:
            raise UsageError(f"{PROG} quantize: NCOLORS {args.ncolors} and -k {args.n_clusters} disagree")
        args.n_clusters = args.ncolors
    args.paths = paths
    speed = args.speed
    if speed is not None and speed not in SPEEDS:
        raise UsageError(f"{PROG} quantize: --speed {speed}: give 1 (slow, best) .. 11 (fast, rough)")
    n_init, max_iter, tol = SPEEDS[4 if speed is None else speed]
    args.n_init = n_init if args.n_init is None else args.n_init
    args.max_iter = max_iter if args.max_iter is None else args.max_iter
    args.tol = tol if args.tol is None else args.tol
    if args.nofs and args.floyd is not None:
        raise UsageError(f"{PROG} quantize: --nofs and --floyd exclude each other")
    if args.floyd is not None:
        if args.dither not in ("none", "floyd-steinberg"):
            raise UsageError(f"{PROG} quantize: --floyd and --dither {args.dither} exclude each other")
        args.dither, args.dither_strength = ("floyd-steinberg", args.floyd) if args.floyd > 0 else ("none", 0.0)
    if args.nofs or (speed is not None and speed >= SPEED_NO_DITHER and args.floyd is None):
        args.dither = "none"
    if args.strip:
        args.metadata = False
    for name, value in creation_options(args).items():
        setattr(args, name, value)
    if args.output_format is not None and args.suffix is None:
        args.suffix = OUTPUT_FORMATS[args.output_format]
    if args.quality is not None:
        args.quality = _quality_option(args.quality)


def _quality_option(text: str) -> str:
    """--quality: pngquant's MIN-MAX (or N: N*9/10-N, as pngquant), or PSNR with a dB suffix; 'A:B' is refused."""
    value = text.strip()
    if value.lower().endswith("db"):
        return value
    if ":" in value:
        raise UsageError(f"{PROG} quantize: --quality {text} is ambiguous: --quality takes pngquant's 0-100 "
                         f"scale as MIN-MAX (--quality {value.replace(':', '-')}); for PSNR in dB write "
                         f"--psnr {value} or --quality {value}dB")
    if value.isdigit():
        target = int(value)
        return f"{target * 9 // 10}-{target}"  # pngquant's 'N': no worse than 90% of N
    return value


def _output_ext(args: argparse.Namespace, src: str) -> str:
    """What follows an input's stem in its output's name: --ext, else -fs8/-or8 and the format's suffix."""
    if args.ext:
        return args.ext
    mark = "-fs8" if args.dither == "floyd-steinberg" else "-or8"
    suffix = args.suffix or (pathlib.PurePath(src).suffix if src != "-" else ".png") or ".tif"
    return mark + (suffix if suffix.startswith(".") else f".{suffix}")


def _beside(src: str, end: str) -> str:
    """``src``'s output beside it: its name without the last suffix, then ``end`` (pngquant's --ext)."""
    from bigquant.io.objects import output_location

    path = output_location(src)  # beside a URL input too (s3://b/a.png -> s3://b/a-fs8.png)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return str(path.with_name(stem + end))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bigquant`` command."""
    from bigquant import __version__
    from bigquant._typing import STRATEGIES

    parser = _Parser(prog=PROG, description="Colour quantization of gigapixel images with k-means on Dask.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress (-vv: debug); show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    # the same options after the command name (bigquant quantize ... -v)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log progress (-vv: debug); show tracebacks on errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    q = sub.add_parser("quantize", parents=[common], help="quantize an image to k colours and write it",
                       description="Fit a k-colour palette and write the image with it.",
                       usage=QUANTIZE_USAGE, epilog=QUANTIZE_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("paths", nargs="+", metavar="PATH",
                   help="IN OUT (one image), or inputs only: each written beside itself with --ext, "
                        "to -o OUT, or with one palette (--shared, --out-dir); a leading number is "
                        "pngquant's NCOLORS (= -k); '-' is stdin (input) or stdout (-o -)")
    q.add_argument("-k", "--n-clusters", dest="n_clusters", type=_positive_int, default=None,
                   help="colours (default 16; with --quality, the most allowed)")
    q.add_argument("--palette", metavar="FILE",
                   help="apply this palette instead of fitting one (.json, .gpl, .act, .png/.tif swatch)")
    q.add_argument("--quality", metavar="MIN-MAX",
                   help="choose k as pngquant does, on its 0-100 scale: the fewest colours reaching MAX; "
                        f"below MIN nothing is written (exit code {EXIT_QUALITY}); converted to PSNR with "
                        "libimagequant's quality_to_mse (-v prints the dB); MIN:TARGETdB is PSNR in dB")
    q.add_argument("--out-dir", metavar="DIR", help="quantize every input with one shared palette into DIR")
    q.add_argument("--suffix", default=None,
                   help="output format of a set (.tif, .png, .zarr...; default: the input's, .tif with --out-dir)")
    q.add_argument("--weight", choices=("pixels", "image"), default="pixels",
                   help="with --out-dir: count every pixel once (default) or every image equally")
    q.add_argument("--keep-going", action="store_true",
                   help="several inputs: skip unreadable ones (reported once; exit code "
                        f"{EXIT_SKIPPED}) instead of stopping")
    q.add_argument("--strategy", choices=STRATEGIES, default="auto", help="fitting strategy (default auto)")
    q.add_argument("--mode", choices=("palette", "rgb"), default="palette", help="indexed or RGB output")
    q.add_argument("--tile", type=_positive_int, default=512, help="output tile size (default 512)")
    q.add_argument("--compression", default="zlib", help="output compression (default zlib; 'none')")
    q.add_argument("--pyramid", action="store_true", help="add pyramid levels as SubIFDs (TIFF)")
    q.add_argument("--overviews", nargs="?", const=True, default=False, type=_positive_int, metavar="N",
                   help="add N (default: down to one tile) reduced-resolution IFDs GDAL lists as overviews (TIFF)")
    q.add_argument("--cog", action="store_true", help="Cloud-Optimized GeoTIFF layout, with overviews (TIFF)")
    q.add_argument("--mask", metavar="FILE|auto|none",
                   help="pixels to leave out besides the file's own (alpha 0, nodata, mask IFD, NaN): a mask "
                        "image of the same size (non-zero = image), 'auto' (a slide's tissue, found by its "
                        "colour on a low-resolution level; see --mask-threshold) or 'none' (ignore the file's "
                        "masks too)")
    q.add_argument("--alpha", choices=("auto", "mask", "fit"), default="auto",
                   help="an RGBA image's alpha: 'fit' it as a fourth channel, colours premultiplied, kept in the "
                        "output (PNG tRNS, RGBA); 'mask' (alpha 0 is nodata, the rest opaque); 'auto' (default): "
                        "fit when some alpha lies between 0 and full and the output holds alpha")
    q.add_argument("--mask-threshold", dest="mask_threshold", type=_non_negative_float, metavar="OD",
                   help="with --mask auto: colour density above which a pixel is tissue, in optical-density "
                        "units (log10 of a pixel's brightest band over its darkest against the glass: ~0.01 "
                        "faintest tint, ~0.03 pale stroma, ~0.2 well-stained tissue); larger keeps less "
                        "(default: Otsu's threshold, shown with -v)")
    q.add_argument("--nbits", type=int, choices=(1, 2, 4, 8, 16), metavar="N",
                   help="bits a palette TIFF's index takes (GDAL's NBITS): default the fewest that hold the palette "
                        "and nodata (1, 2 or 4 packed; 8; 16); 8 for readers that take no packed samples "
                        "(-co NBITS=N)")
    q.add_argument("--nodata-index", type=_non_negative_int, metavar="I",
                   help="palette index of masked pixels (default k, after the palette)")
    q.add_argument("--rgb-bands", type=_bands, metavar="R,G,B",
                   help="bands shown as the palette's colours (default the first three)")
    q.add_argument("--display-range", metavar="MIN,MAX[;MIN,MAX;MIN,MAX]",
                   help="display stretch of the colours shown (colour table, PNG palette, preview): MIN,MAX for "
                        "every band shown, one MIN,MAX per band, or percentiles like p2,p98 (default: uint8 as is, "
                        "other data p2,p98 -- QGIS's default -- from what the fit counted)")
    q.add_argument("--display-palette", metavar="FILE",
                   help="8-bit colours shown, one per class (.json, .gpl, .act, .png; as many as k)")
    q.add_argument("--no-rat", dest="rat", action="store_false", default=True,
                   help="do not write the classes' raster attribute table (OUT.aux.xml, read by GDAL and QGIS) "
                        "beside a palette TIFF")
    q.add_argument("--series", type=_non_negative_int, metavar="N",
                   help="TIFF series to read (default: the image, not a thumbnail, label, macro or mask)")
    q.add_argument("--level", type=_non_negative_int, default=0, metavar="N", help="pyramid level to read (default 0)")
    q.add_argument("--space", choices=("rgb", "oklab", "lab"), default="rgb",
                   help="colour space of the fit and the mapping (default rgb: highest PSNR; oklab: "
                        "lowest perceptual error); the palette is sRGB either way")
    q.add_argument("--dither", choices=("none", "floyd-steinberg", "blue-noise"), default="none",
                   help="dither the mapping: exact tile-parallel Floyd-Steinberg, or blue-noise ordered (default none)")
    q.add_argument("--scratch", metavar="DIR|URL", default=None,
                   help="where workers share temporaries (the dither's label spool): a directory or a URL prefix "
                        "(default: beside a local output, the temp dir for a URL output)")
    q.add_argument("--dither-strength", type=_unit_float, default=0.9, metavar="S",
                   help="fraction of the error diffused / noise amplitude, in [0, 1] (default 0.9)")
    q.add_argument("--compare", metavar="PNG",
                   help="also write the centre 512x512 crop at full resolution, source | result, as PNG")
    q.add_argument("--no-measure", dest="measure", action="store_false", default=True,
                   help="do not measure PSNR and mean dE_OK (saves a pass over the pixels for pixel strategies)")
    q.add_argument("--palette-out", metavar="FILE",
                   help="also write the palette: .json (with the fit's summary), .gpl, .act or .png")
    q.add_argument("--preview", metavar="PNG", help="also write a small preview PNG")
    q.add_argument("--overwrite", "-f", "--force", action="store_true", help="replace existing outputs")
    q.add_argument("--random-state", type=int, metavar="N",
                   help="seed (default 0: the same command writes the same bytes)")
    q.add_argument("--n-init", type=_positive_int, default=None, help="initialisations (default 1; see --speed)")
    q.add_argument("--max-iter", type=_positive_int, default=None,
                   help="Lloyd iterations at most (default 300; see --speed)")
    q.add_argument("--tol", type=_non_negative_float, default=None,
                   help="relative tolerance of Lloyd's convergence (default 1e-4; see --speed)")
    _add_pngquant_options(q)
    _add_creation_options(q)
    _add_runtime(q)

    s = sub.add_parser("sweep", parents=[common], help="fit every k of a range and tabulate cost and time",
                       description="Fit a palette for every k on one shared colour histogram.")
    s.add_argument("inputs", nargs="+", metavar="IN", help="input image (several: one palette for all, 8-bit)")
    s.add_argument("--k", dest="ks", default="2:64:2", help="k values: start:stop[:step] or k1,k2,... (default 2:64:2)")
    s.add_argument("--out", metavar="CSV", help="results CSV, written as each k finishes")
    s.add_argument("--plot", metavar="PNG", help="plot of cost and time against k")
    s.add_argument("--resume", action="store_true",
                   help="keep the ks already in --out and fit the rest (only a sweep of the same input(s), "
                        "mask, space, strategy and seed: the CSV records them)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out / --plot")
    s.add_argument("--strategy", choices=STRATEGIES, default="auto", help="fitting strategy (default auto)")
    s.add_argument("--n-init", type=_positive_int, default=1, help="initialisations per k (default 1)")
    s.add_argument("--max-iter", type=_positive_int, default=300, help="Lloyd iterations at most (default 300)")
    s.add_argument("--tol", type=_non_negative_float, default=1e-4,
                   help="relative tolerance of Lloyd's convergence (default 1e-4)")
    s.add_argument("--random-state", type=int, metavar="N",
                   help="seed (default 0, recorded in the CSV; --resume goes on with the recorded one)")
    s.add_argument("--series", type=_non_negative_int, metavar="N",
                   help="TIFF series to read (default: the image, not a thumbnail, label, macro or mask)")
    s.add_argument("--level", type=_non_negative_int, default=0, metavar="N", help="pyramid level to read (default 0)")
    s.add_argument("--mask", metavar="FILE|auto|none",
                   help="pixels to leave out besides the file's own, as for quantize")
    s.add_argument("--mask-threshold", dest="mask_threshold", type=_non_negative_float, metavar="OD",
                   help="with --mask auto: the tissue threshold, as for quantize (recorded for --resume)")
    s.add_argument("--space", choices=("rgb", "oklab", "lab"), default="rgb",
                   help="colour space of the fits, as for quantize (default rgb)")
    _add_runtime(s)

    i = sub.add_parser("info", parents=[common],
                       help="describe an image: shape, dtype, tiles, distinct colours; series and levels of TIFFs",
                       description="Describe an image without reading more than needed. For TIFF files "
                                   "(slides, GeoTIFF...) also list every series -- image, thumbnail, label, "
                                   "macro, mask -- with its levels, tiles and compression.")
    i.add_argument("input", metavar="IN", help="input image")
    i.add_argument("--exact", action="store_true", help="count distinct colours exactly, however big")

    d = sub.add_parser("demo", parents=[common], help="quantize a large sample image on a local cluster, end to end",
                       description="Build a large sample TIFF from a real photo, quantize it on a local "
                                   "Dask cluster, and write the outputs, a comparison and a sweep plot.")
    d.add_argument("--out", metavar="DIR", default="bigquant-demo", help="output folder (default ./bigquant-demo)")
    d.add_argument("--size", type=_size, default=(8192, 8192), metavar="N|HxW",
                   help="sample image size (default 8192, i.e. 8192x8192)")
    d.add_argument("-k", "--n-clusters", dest="k", type=_positive_int, default=16, help="colours (default 16)")
    d.add_argument("--sweep-k", default="2:32:4", help="ks of the sweep plot (default 2:32:4)")
    d.add_argument("--random-state", type=int, default=0, metavar="N", help="seed (default 0)")
    _add_runtime(d)
    return parser


# --------------------------------------------------------------------------- helpers


class _Console:
    """Where the command writes: results on stdout, notes on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        #: stdout carries the image (-o -): results go to stderr
        self.stdout_is_data = False

    def out(self, text: str = "") -> None:
        if not self.quiet:
            print(text, file=sys.stderr if self.stdout_is_data else sys.stdout, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (tests swap it between calls of :func:`main`)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger("bigquant")
    root.setLevel(level)
    if not any(getattr(h, "_bigquant_cli", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        handler._bigquant_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.WARNING if verbose > 1 else logging.ERROR)


#: decoded input bytes from which the command line, running on its threads, says how
#: to watch the work (1 GiB: about 360 MP of RGB, half a minute or more here)
LONG_JOB_BYTES = 2**30


def _dashboard_address(args: argparse.Namespace) -> str | None:
    """``--dashboard`` as an address, or None when not given (or 'none')."""
    value = getattr(args, "dashboard", None)
    return None if value is None or str(value).lower() in ("none", "off", "") else str(value)


def _processes_asked(args: argparse.Namespace) -> bool:
    """Whether the options ask for local worker processes: ``--cluster`` or a local cluster's size."""
    return bool(args.cluster or args.workers or args.threads or args.memory_limit)


def _cluster_asked(args: argparse.Namespace) -> bool:
    """Whether the options name a Dask scheduler: worker processes, ``--scheduler`` or ``--dashboard ADDR``."""
    return bool(_processes_asked(args) or args.scheduler or _dashboard_address(args))


def _choose_in_process(args: argparse.Namespace, console: _Console, paths: Sequence[str]) -> list[Any]:
    """Open the inputs (metadata only) and, unless a scheduler was asked for, run on this process's threads.

    Sets ``args.no_cluster`` when no scheduler is asked for (see
    :func:`_cluster_asked`): on one machine, threads in this process do the
    same work as worker processes with less CPU and memory (no process
    start, no kernels loaded per worker, no data sent between processes; see
    docs/cluster.md).  An input of :data:`LONG_JOB_BYTES` or more gets a
    note on how to watch it.  Returns the opened
    :class:`~bigquant.io.source.ImageSource` s (to be checked and reused;
    None for an input of a set that does not open, which the job reports or
    skips with ``--keep-going``).
    """
    from bigquant.errors import BigquantError
    from bigquant.io.read import read_image

    sources = []
    for path in paths:
        try:
            sources.append(read_image(path, level=getattr(args, "level", 0), series=getattr(args, "series", None)))
        except (BigquantError, OSError):
            if len(paths) == 1:
                raise
            sources.append(None)
    if args.no_cluster or _cluster_asked(args):
        return sources
    args.no_cluster = True
    nbytes = sum(s.nbytes for s in sources if s is not None)
    if nbytes >= LONG_JOB_BYTES:
        from bigquant.cluster.resources import cpu_count

        console.note(f"{_human_bytes(nbytes)} on this process's {cpu_count()} threads "
                     "(--dashboard :8787 to watch it in Dask's dashboard, --cluster for worker processes)")
    return sources


@contextlib.contextmanager
def _runtime(args: argparse.Namespace, console: _Console) -> Iterator[Any]:
    """Yield a distributed client (or None with --no-cluster), closing what was started."""
    if args.no_cluster and getattr(args, "cluster", False):
        raise UsageError(f"{PROG}: --no-cluster and --cluster exclude each other")
    tls = {"tls_ca_file": args.tls_ca_file, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    if any(tls.values()) and not args.scheduler:
        raise UsageError(f"{PROG}: --tls-ca-file, --tls-cert and --tls-key go with --scheduler tls://HOST:PORT")
    if args.no_cluster:
        if args.scheduler:
            raise UsageError(f"{PROG}: --no-cluster and --scheduler exclude each other")
        import dask
        import dask.threaded

        # this process's threads, as the function itself: a compute that names no scheduler, or
        # names one by a string, has dask import distributed to look for a client (0.1-0.2 s of
        # CPU), which cannot exist here
        with dask.config.set(scheduler=dask.threaded.get):
            yield None
        return
    from bigquant.pipeline.runtime import connect

    # a local cluster: worker processes when asked (--cluster, a size, the demo), else
    # --dashboard alone: a scheduler and the dashboard in this process, its threads the worker
    processes = _processes_asked(args) or args.dashboard is None
    dashboard = _dashboard_address(args) if args.dashboard is not None else ":8787"
    start = time.perf_counter()
    if not args.scheduler:
        if processes:
            from bigquant.pipeline.warm import kernels_warm

            if not kernels_warm():  # connect() compiles them, once, before the workers start
                console.note("compiling the numba kernels once, for every worker (about 20 s of CPU; "
                             "python -m bigquant.pipeline.warm does it ahead)...")
        console.note("starting a local Dask cluster..." if processes else
                     "starting a Dask scheduler and its dashboard in this process...")
    runtime = connect(
        args.scheduler,
        n_workers=args.workers,
        threads_per_worker=args.threads,
        memory_limit=args.memory_limit,
        dashboard_address=dashboard,
        processes=processes,
        timeout=args.timeout,
        **{name: value for name, value in tls.items() if value},
    )
    with runtime:
        workers = runtime.client.nthreads()
        kind = "connected to" if args.scheduler else "local cluster"
        console.note(f"{kind} {runtime.scheduler_address}: {len(workers)} workers, "
                     f"{sum(workers.values())} threads ({time.perf_counter() - start:.1f} s)")
        link = runtime.dashboard_link if dashboard is not None else None  # --dashboard none: no link
        if link:
            console.note(f"dashboard: {link}")
        yield runtime.client


def _decoding_ahead(args: argparse.Namespace, src: str, target: Any) -> contextlib.AbstractContextManager[Any]:
    """A child process decoding ``src`` ahead while the pipeline loads (:mod:`bigquant.io.ahead`), when it may pay.

    That is a job that runs on this process's threads and keeps the decoded
    tiles for its write (:func:`bigquant.io.spool.pixel_spool`): a palette
    fitted in RGB by the histogram or the value grid, unmasked, written as a
    local TIFF or PNG.  The child itself checks the rest (a large local
    TIFF of compressed tiles, a second core).

    The child only reads the input, into a hidden spool, while the request's
    checks run; none is started for an output those checks would refuse
    without the pipeline (:func:`_output_refused`), and one whose request
    is refused later is killed and its spool removed before the error is
    printed (the block's exit).
    """
    from bigquant.io.ahead import decoding_ahead, spool_base

    if (not isinstance(target, pathlib.Path) or _output_refused(args, src, target) or _cluster_asked(args)
            or args.palette is not None or args.skip_if_larger or args.mask is not None
            or args.strategy not in ("auto", "histogram", "grid") or args.space != "rgb" or args.alpha == "fit"
            or target.suffix.lower() not in (".tif", ".tiff", ".png")
            or (args.scratch is not None and "://" in str(args.scratch))):
        return contextlib.nullcontext()
    from bigquant.io.spool import decode_ahead  # imported here, the forked child has it (and numpy) already

    return decoding_ahead(src, spool_base(target, args.scratch), level=args.level, series=args.series,
                          work=decode_ahead)


def _output_refused(args: argparse.Namespace, src: str, target: pathlib.Path) -> bool:
    """Whether the request's output checks will refuse ``target`` (the input itself, a directory, no room...).

    The checks of :func:`bigquant.io.atomic.check_target` and the input's own
    file (a hard or symbolic link included), made here before the pipeline
    is imported; the request makes them again, and says why.
    """
    from bigquant.errors import BigquantError
    from bigquant.io.atomic import check_target

    try:
        check_target(target, overwrite=bool(args.overwrite))
        return target.exists() and os.path.samefile(src, target)
    except (BigquantError, OSError):
        return True


@contextlib.contextmanager
def _loading_pipeline() -> Iterator[None]:
    """Import the pipeline's modules with the cyclic garbage collector paused, then freeze what they made.

    numba, dask and scipy leave some 140,000 objects the collector tracks as
    they load, and they live as long as the process.  The collector, run
    every 700 allocations, would walk them again and again while they arrive
    and in each later full collection: 0.06 s of CPU of the 1 s a small PNG
    takes end to end, and 0.1 s more in the interpreter's final collections
    at exit.  Frozen (:func:`gc.freeze`), no collection walks them again.  The
    collector's settings for the run itself are left as they are.  Only the
    first load in a process pauses and freezes anything: a program that calls
    :func:`main` again, or froze objects itself, is left alone.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.disable()
    try:
        _import_dask_array_without_scipy()
        yield
        _start_numba()
    finally:
        gc.freeze()
        gc.enable()


def _import_dask_array_without_scipy() -> None:
    """Import dask.array without the scipy.sparse and scipy.fftpack it loads for its optional parts.

    dask.array registers scipy's sparse matrices as a chunk type and wraps
    ``scipy.fftpack`` when scipy imports: 0.15 s of CPU at every start of the
    command line, for array types and transforms it never meets.  With
    ``sys.modules["scipy"] = None`` during that one import, ``import scipy``
    fails there and dask skips both; scipy itself imports as usual afterwards
    (the tissue mask's ``scipy.ndimage``).  Only a process where neither is
    loaded yet is touched: a program that imported either keeps dask's
    registrations whole.
    """
    if "dask.array" in sys.modules or "scipy" in sys.modules:
        return
    sys.modules["scipy"] = None  # type: ignore[assignment]  # `import scipy` raises ImportError
    try:
        import dask.array  # noqa: F401
    finally:
        del sys.modules["scipy"]


def _start_numba() -> None:
    """Initialise numba's CPU target now, without the ``scipy.linalg`` it loads to look for BLAS.

    numba sets its compiler up on the first call of a compiled function:
    0.1 s of imports and registrations, and 0.1 s more for ``scipy.linalg``
    (with ``numpy.f2py``, which scipy's array-API layer pulls in), imported
    only to learn whether ``np.dot`` and friends could call BLAS -- no kernel
    of bigquant does.  With ``sys.modules["scipy.linalg"] = None`` during that
    first call numba records "no BLAS" for the two functions that ask at set-up
    (``np.convolve`` and ``np.correlate`` then use its own loop) and imports
    scipy as usual when a kernel that needs BLAS is compiled.  Done here, with
    the pipeline's imports (collector paused, objects frozen), rather than in
    the first pass: that call is the colour count's kernel (loaded from numba's
    cache), which every fit of 8-bit colours runs first.  A process where
    numba's target or ``scipy.linalg`` is set up already is left alone.
    """
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    import numpy as np

    from bigquant.kernels import count_morton

    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # `import scipy.linalg` raises ImportError
    try:
        count_morton(np.empty((0, 3), dtype=np.uint8), np.empty(0, dtype=np.uint32))
    finally:
        del sys.modules["scipy.linalg"]


def _show_progress(args: argparse.Namespace) -> bool:
    return not (args.quiet or getattr(args, "no_progress", False))


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


#: command-line destinations that are not the option of the same name, and how their values read
_CLI_VALUES: dict[str, Callable[[Any], Any]] = {
    "mask": lambda v: _mask_option(v),
    "dither": lambda v: None if v == "none" else v,
    "compression": lambda v: None if str(v).lower() == "none" else v,
    "suffix": lambda v: ".tif" if v is None else v,
}


def request_options(args: argparse.Namespace, entry: str) -> dict[str, Any]:
    """The options of ``entry`` (:mod:`bigquant.pipeline.request`) the command line gave, by their names.

    Every option the command spells has the library's name; only
    :data:`bigquant.pipeline.request.PYTHON_ONLY` ones are not spelled.
    """
    from bigquant.pipeline.options import option_names

    options = {}
    for name in option_names(entry):
        if hasattr(args, name):
            value = getattr(args, name)
            options[name] = _CLI_VALUES[name](value) if name in _CLI_VALUES else value
    return options


def _check_outputs(paths: Sequence[str | None], overwrite: bool) -> None:
    """Outputs that cannot be written fail as :func:`bigquant.io.atomic.check_target` says (exit 1).

    An existing output is the same failure, with the same exit code, in every command.
    """
    from bigquant.io.atomic import check_target
    from bigquant.io.objects import output_location

    for p in paths:
        if p:
            check_target(output_location(p), overwrite=overwrite)


# --------------------------------------------------------------------------- commands


def _check_input(path: str) -> None:
    if not pathlib.Path(path).exists() and "://" not in path:
        raise FileNotFoundError(f"{path}: no such file")


def _plan_quantize(args: argparse.Namespace) -> tuple[str, list[tuple[str, str]]]:
    """What the paths mean: ("one" | "each", [(input, output), ...]) or ("shared", [])."""
    paths = args.paths
    if args.out_dir is not None or args.shared:
        if args.output:
            raise UsageError(f"{PROG} quantize: -o writes one image; --shared and --out-dir write one per input")
        if "-" in paths:
            raise UsageError(f"{PROG} quantize: '-' (stdin) is one image, not a set with one palette")
        return "shared", []
    if args.weight != "pixels":
        raise UsageError(f"{PROG} quantize: --weight goes with one palette for a set (--shared or --out-dir)")
    if args.output is not None:
        if len(paths) != 1:
            raise UsageError(f"{PROG} quantize: -o {args.output} is the output of one input, got {len(paths)} "
                             "inputs (without -o each is written beside itself with --ext)")
        if args.ext:
            raise UsageError(f"{PROG} quantize: --ext and -o exclude each other (as in pngquant)")
        return "one", [(paths[0], args.output)]
    if paths.count("-") > 1 or ("-" in paths and len(paths) > 1):
        raise UsageError(f"{PROG} quantize: '-' (stdin) is the only input when given")
    pngquant_style = args.ncolors is not None or args.ext is not None
    if len(paths) == 2 and not pngquant_style and "-" not in paths:
        return "one", [(paths[0], paths[1])]
    if paths == ["-"]:
        return "one", [("-", "-")]  # pngquant: stdin to stdout
    missing = [p for p in paths if "://" not in p and not pathlib.Path(p).exists()]
    if len(paths) > 2 and not pngquant_style and missing and not args.keep_going:
        raise UsageError(f"{PROG} quantize: {', '.join(missing)}: no such input; several paths are all inputs, "
                         "each written beside itself with --ext (IN OUT is one image: one pair per command); "
                         "for a set with one palette give --out-dir DIR or --shared")
    return "each", [(src, _beside(src, _output_ext(args, src))) for src in paths]


def _cmd_quantize(args: argparse.Namespace, console: _Console) -> int:
    _normalise_quantize(args)
    if args.n_clusters is None and args.palette is None and args.quality is None:
        args.n_clusters = 16
    kind, jobs = _plan_quantize(args)
    if kind == "shared":
        return _quantize_many(args, console)
    return _quantize_each(args, console, jobs, one=kind == "one")


def _note_quality(args: argparse.Namespace, console: _Console, quality: Any) -> None:
    """With -v: the PSNR pngquant's --quality MIN-MAX stands for."""
    from bigquant.pipeline.quality import parse_quality

    target = parse_quality(quality)
    if target is None or target.pngquant is None or not args.verbose:
        return
    low, high = target.pngquant
    floor = "no floor" if target.minimum is None else f"floor {target.minimum:.2f} dB"
    console.note(f"--quality {low}-{high} (pngquant's scale, libimagequant's quality_to_mse): target "
                 f"{target.target:.2f} dB PSNR, {floor} (an approximation: libimagequant measures "
                 "its error in its own gamma and channel weights)")


_MAGIC = ((b"\x89PNG", ".png"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"), (b"II+\x00", ".tif"),
          (b"MM\x00+", ".tif"), (b"\xff\xd8\xff", ".jpg"))


def _stdin_image(folder: pathlib.Path) -> pathlib.Path:
    """The image on stdin (PNG, TIFF or JPEG bytes), saved in ``folder``."""
    data = sys.stdin.buffer.read()
    suffix = next((s for magic, s in _MAGIC if data.startswith(magic)), None)
    if suffix is None:
        raise UsageError(f"{PROG} quantize: stdin holds {len(data)} bytes that are no PNG, TIFF or JPEG image")
    path = folder / f"stdin{suffix}"
    path.write_bytes(data)
    return path


def _candidate(dst: pathlib.Path) -> pathlib.Path:
    """A hidden file beside ``dst`` for --skip-if-larger: written first, renamed only when smaller."""
    fd, name = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=f".candidate{dst.suffix}", dir=dst.parent or ".")
    os.close(fd)
    return pathlib.Path(name)


def _quantize_each(args: argparse.Namespace, console: _Console, jobs: list[tuple[str, str]], *, one: bool) -> int:
    """Quantize every (input, output) with its own palette, in one process or one Dask job.

    Every request is built and checked (outputs, options, the inputs' metadata)
    before the first pixel of the first input is read.
    """
    from bigquant.errors import BigquantError, QualityError

    if args.keep_going and one:
        raise UsageError(f"{PROG} quantize: --keep-going goes with several inputs")
    from bigquant.io.objects import output_location

    with contextlib.ExitStack() as stack:
        scratch: pathlib.Path | None = None
        if any(src == "-" or dst == "-" for src, dst in jobs):
            scratch = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bigquant-")))
        plan: list[tuple[str, str, pathlib.Path, str]] = []  # input, output as named, where written, what it is
        for src, dst in jobs:
            shown = "stdin" if src == "-" else src
            if src == "-":
                src = str(_stdin_image(scratch))  # type: ignore[arg-type]
            target = dst
            if dst == "-":
                suffix = args.suffix or ".png"
                if OUTPUTS_ON_STDOUT.get(suffix.lower()) is None:
                    raise UsageError(f"{PROG} quantize: -o - writes a PNG or TIFF on stdout, not {suffix}")
                target = str(scratch / f"stdout{suffix}")  # type: ignore[operator]
                console.stdout_is_data = True
            plan.append((src, dst, output_location(target), shown))
        if args.output_format is not None:
            for _, dst, target, _ in plan:
                if dst != "-" and OUTPUT_FORMATS[args.output_format] != target.suffix.lower() and not (
                        args.output_format in ("gtiff", "cog") and target.suffix.lower() == ".tiff"):
                    raise UsageError(f"{PROG} quantize: -of {args.output_format} but the output {dst} is "
                                     f"{target.suffix or 'no format'}")
        skipped: list[tuple[str, str]] = []
        kept = []
        for src, dst, target, shown in plan:
            if not pathlib.Path(src).exists() and "://" not in src:
                if not args.keep_going:
                    raise FileNotFoundError(f"{src}: no such file")
                skipped.append((shown, "no such file"))
                continue
            kept.append((src, dst, target, shown))
        if len(kept) == 1:  # the second core decodes the input while this one loads the pipeline
            stack.enter_context(_decoding_ahead(args, kept[0][0], kept[0][2]))
        # the pipeline (dask.array, numba) is imported only once the inputs are known to exist
        with _loading_pipeline():
            from bigquant.pipeline.progress import Line, LloydProgress, progress
            from bigquant.pipeline.quantize import quantize
            from bigquant.pipeline.request import build_request, check_request, check_sources

        options = request_options(args, "quantize")
        _note_quality(args, console, options.get("quality"))
        requests = []
        for src, dst, target, shown in kept:
            if args.skip_if_larger and target.suffix.lower() == ".zarr":
                raise UsageError(f"{PROG} quantize: --skip-if-larger compares file sizes; {dst} is a zarr folder")
            requests.append(check_request(build_request("quantize", [src], [target], options)))
        start = time.perf_counter()
        opened = _choose_in_process(args, console, [src for src, _, _, _ in kept]) if kept else []
        runs = []
        for (src, dst, target, shown), request, source in zip(kept, requests, opened):
            if source is None:
                from bigquant.io.read import read_image

                try:
                    read_image(src)  # metadata only: the reason it did not open
                    reason = "not a readable image"
                except (BigquantError, OSError) as exc:
                    if not args.keep_going:
                        raise
                    reason = _one_line(exc)
                skipped.append((shown, reason))
                continue
            try:
                check_sources(request, [source])
            except BigquantError as exc:
                if not args.keep_going:
                    raise
                skipped.append((shown, _one_line(exc)))
                continue
            runs.append((src, dst, target, shown, source, request))
        for name, reason in skipped:
            console.note(f"skipped {name}: {reason}")
        code = EXIT_SKIPPED if skipped else 0
        quality_missed = larger = False
        show = _show_progress(args)
        line = Line()
        with _runtime(args, console) as client:
            for src, dst, target, shown, source, request in runs:
                written = _candidate(target) if args.skip_if_larger and dst != "-" else target
                bar = None
                if show and args.palette is None:
                    bar = LloydProgress(args.max_iter, line=line, every=None if args.quality else 10)
                file_start = time.perf_counter()
                try:
                    with progress(client, enabled=show, line=line):
                        model = quantize(src if not args.no_cluster else source, written, client=client,
                                         **dict(options, callback=bar,
                                                overwrite=options["overwrite"] or written != target))
                except QualityError as exc:
                    if bar is not None:
                        bar.close()
                    if written != target:
                        _remove_candidate(written)
                    if one:
                        raise
                    console.note(f"{PROG}: {shown}: {_one_line(exc)}")
                    quality_missed = True
                    continue
                except BaseException:
                    if written != target:
                        _remove_candidate(written)
                    raise
                if bar is not None:
                    bar.close(model.inertia_)
                if args.skip_if_larger:
                    before = _size_of(src)
                    after = _size_of(str(written))
                    if before is not None and after is not None and after >= before:
                        _remove_candidate(written)
                        larger = True
                        console.note(f"skipped {shown}: the output ({_human_bytes(after)}) is not smaller than "
                                     f"the input ({_human_bytes(before)}); nothing written")
                        if dst == "-":
                            _to_stdout(pathlib.Path(src))  # pngquant: the input itself on stdout
                        continue
                    if written != target:
                        _replace_candidate(written, target)
                if dst == "-":
                    _to_stdout(target)
                _report_quantized(args, console, model, shown, dst if dst != "-" else "stdout",
                                  time.perf_counter() - file_start, request.sidecars)
        seconds = time.perf_counter() - start
        if len(plan) > 1:
            console.out(f"{len(runs)} of {len(plan)} files, each with its own palette, {seconds:.1f} s")
        if code:
            return code
        if quality_missed:
            return EXIT_QUALITY
        return EXIT_LARGER if larger else 0
    return 0  # pragma: no cover


#: output suffixes -o - writes on stdout
OUTPUTS_ON_STDOUT = {".png": "png", ".tif": "tiff", ".tiff": "tiff"}


def _to_stdout(path: pathlib.Path) -> None:
    with path.open("rb") as f:
        shutil.copyfileobj(f, sys.stdout.buffer)
    sys.stdout.buffer.flush()


def _remove_candidate(path: pathlib.Path) -> None:
    """Remove a --skip-if-larger candidate output and the attribute table written beside it."""
    from bigquant.io.rat import rat_path

    for p in (path, rat_path(path)):
        with contextlib.suppress(OSError):
            p.unlink()


def _replace_candidate(path: pathlib.Path, target: pathlib.Path) -> None:
    """Move a --skip-if-larger candidate (and its attribute table) to the output it was written for."""
    from bigquant.io.rat import rat_path

    if rat_path(path).exists():
        os.replace(rat_path(path), rat_path(target))
    os.replace(path, target)


def _report_quantized(args: argparse.Namespace, console: _Console, model: Any, src: str, output: str,
                      seconds: float, sidecars: Sequence[pathlib.Path] = ()) -> None:
    for extra in (args.palette_out, args.preview, args.compare, *sidecars):
        if extra:
            console.out(f"wrote {extra}")
    measured = _quality_text(getattr(model, "quality_", None))
    if args.palette is not None:
        console.out(f"wrote {output}: {len(model.cluster_centers_)} colours from {args.palette}{measured}, "
                    f"{seconds:.1f} s")
        return
    quality = measured
    _, error = model.palette() if hasattr(model, "palette") else (None, None)
    # the fit's error is that of the image mapped to the nearest colours: not of a dithered one
    if (not quality and error is not None and args.dither == "none"
            and getattr(model, "histogram_", None) is not None):
        from bigquant.pipeline.quantize import psnr

        value = psnr(error, model.histogram_.n_pixels * model.n_features_in_, model.palette()[0].dtype)
        quality = "" if value is None else f", PSNR {value:.2f} dB"
    console.out(f"wrote {output}: {len(model.cluster_centers_)} colours, strategy {model.strategy_}, "
                f"{model.n_iter_} iterations, inertia {model.inertia_:.6g}{quality}, {seconds:.1f} s")
    mask = getattr(model, "mask_", None) or {}
    if mask.get("method", "none") != "none" and mask.get("kept") is not None:
        console.out(f"mask {mask['method']}: kept {100.0 * mask['kept']:.1f}% of the pixels")


def _quality_text(quality: dict[str, Any] | None) -> str:
    """", PSNR 31.2 dB, mean ΔE_OK 0.0213" (or nothing without a measure)."""
    if not quality or quality.get("psnr") is None:
        return ""
    text = f", PSNR {quality['psnr']:.2f} dB"
    if quality.get("delta_e_ok") is not None:
        text += f", mean dE_OK {quality['delta_e_ok']:.4f}"
    return text


def _quantize_many(args: argparse.Namespace, console: _Console) -> int:
    with _loading_pipeline():
        from bigquant.pipeline.many import quantize_many
        from bigquant.pipeline.progress import Line, progress

    if not args.keep_going:
        for path in args.paths:
            _check_input(path)
    if args.skip_if_larger or args.output_format == "cog":
        raise UsageError(f"{PROG} quantize: --skip-if-larger and -of COG take one palette per file, not --shared")
    out_dir = args.out_dir
    if out_dir is None:  # --shared: beside the inputs, named with --ext
        folders = {os.path.abspath(pathlib.Path(p).parent) for p in args.paths}
        if len(folders) != 1 or any("://" in p for p in args.paths):
            raise UsageError(f"{PROG} quantize: --shared writes beside the inputs when they share one folder; "
                             "give --out-dir DIR")
        out_dir = folders.pop()
        ends = {_output_ext(args, p) for p in args.paths}
        if len(ends) != 1:
            raise UsageError(f"{PROG} quantize: --shared writes one format: give --suffix or --ext "
                             f"(the inputs would give {', '.join(sorted(ends))})")
        args.suffix = ends.pop()
    options = request_options(args, "quantize_many")
    _note_quality(args, console, options.get("quality"))
    start = time.perf_counter()
    _choose_in_process(args, console, args.paths)
    line = Line()
    with _runtime(args, console) as client:
        with progress(client, enabled=_show_progress(args), line=line):
            result = quantize_many(args.paths, out_dir, client=client, **options)
    seconds = time.perf_counter() - start
    for item in result.files:
        quality = "" if item.psnr is None else f" ({item.psnr:.2f} dB)"
        console.out(f"wrote {item.dst}{quality}")
    for name, reason in result.skipped:
        console.note(f"skipped {name}: {' '.join(reason.split())}")
    console.out(f"{len(result.files)} files with one palette of {len(result.palette)} colours "
                f"({args.weight} weighted), {seconds:.1f} s")
    if args.palette_out:
        console.out(f"wrote {args.palette_out}")
    return EXIT_SKIPPED if result.skipped else 0


def _cmd_sweep(args: argparse.Namespace, console: _Console) -> int:
    with _loading_pipeline():
        from bigquant.pipeline.request import build_request, check_not_inputs, check_request
        from bigquant.pipeline.sweep import parse_ks, sweep

    ks = parse_ks(args.ks)
    if args.resume and not args.out:
        raise UsageError(f"{PROG}: --resume needs --out CSV")
    for path in args.inputs:
        _check_input(path)
    args.resume_from = args.out if args.resume else None
    options = request_options(args, "sweep")
    request = check_request(build_request("sweep", args.inputs, [], options))
    if args.plot:
        plot = pathlib.Path(args.plot).expanduser()
        if plot.suffix.lower() not in (".png", ".pdf", ".svg"):
            raise UsageError(f"{PROG} sweep: --plot {args.plot}: write a .png, .pdf or .svg")
        _check_outputs([args.plot], args.overwrite or args.resume)
        check_not_inputs(dataclasses.replace(request, outputs=(plot,)))
    check_not_inputs(request)
    from bigquant.pipeline.progress import Line, SweepProgress, progress

    _choose_in_process(args, console, args.inputs)
    line = Line()
    bar = SweepProgress(len(ks), line=line) if _show_progress(args) else None
    with _runtime(args, console) as client:
        with progress(client, enabled=_show_progress(args), line=line):
            result = sweep(
                args.inputs[0] if len(args.inputs) == 1 else args.inputs, ks, client=client,
                **dict(options, callback=bar),
            )
    if bar is not None:
        bar.close()
    console.out(result.table())
    console.out()
    if result.resumed:
        console.out(f"resumed {len(result.resumed)} k values from {args.out}")
    elbow = result.elbow()
    colours = f", {result.n_colours} distinct colours" if result.n_colours is not None else ""
    console.out(f"{len(result)} k values in {result.seconds:.2f} s ({result.strategy}{colours}); "
                f"suggested k (elbow): {elbow}")
    if args.out:
        console.out(f"wrote {args.out}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg", force=False)
        fig = result.plot()
        fig.savefig(args.plot, dpi=100, bbox_inches="tight")
        console.out(f"wrote {args.plot}")
    return 0


#: pixels up to which ``info`` counts distinct colours exactly
_EXACT_PIXELS = 64 * 2**20
#: pixels ``info`` samples (whole chunks) on bigger images
_SAMPLE_PIXELS = 16 * 2**20


def _distinct_colours(src: Any, exact: bool) -> str:
    import numpy as np

    from bigquant.cluster.histogram import colour_histogram, histogram_bits

    data = src.data
    if data.ndim == 2:
        data = data[:, :, None]
    bits = histogram_bits(data.dtype, int(data.shape[-1]))
    if bits is None:
        return f"n/a (counted for unsigned data of at most 24 bits per pixel, not {data.dtype} x {data.shape[-1]})"
    n_pixels = int(np.prod(data.shape[:-1]))
    if exact or n_pixels <= _EXACT_PIXELS:
        with _threads():
            hist = colour_histogram(data)
        return f"{hist.n_colours}"
    # whole tiles (else chunks), evenly spread over the image, up to _SAMPLE_PIXELS pixels
    import dask.array as da

    unit = "chunks"
    if src.tile is not None and src.path is not None:
        from bigquant.io import read_image

        with contextlib.suppress(Exception):
            tiled = read_image(src.path, chunks=tuple(src.tile), level=src.level, series=src.series).data
            data = tiled if tiled.ndim == 3 else tiled[:, :, None]
            unit = "tiles"

    blocks = [(i, j) for i in range(data.numblocks[0]) for j in range(data.numblocks[1])]
    per_block = max(1, int(np.prod(data.chunksize[:2])))
    n = max(1, min(len(blocks), _SAMPLE_PIXELS // per_block))
    pick = [blocks[int(t)] for t in np.linspace(0, len(blocks) - 1, n).round().astype(int)]
    sample = da.concatenate([data.blocks[i, j].reshape(-1, data.shape[-1]) for i, j in dict.fromkeys(pick)])
    with _threads():
        hist = colour_histogram(sample)
    share = 100.0 * hist.n_pixels / n_pixels
    return (f">= {hist.n_colours} (estimated: counted in {len(set(pick))} {unit}, {share:.1f}% of the pixels; "
            f"--exact counts all)")


@contextlib.contextmanager
def _threads() -> Iterator[None]:
    import dask

    with dask.config.set(scheduler="threads"):
        yield


def _size_of(location: str) -> int | None:
    """Bytes of a file, a folder (zarr) or a URL; None when the server does not say."""
    if "://" in location:
        try:
            import fsspec

            fs, inner = fsspec.core.url_to_fs(location)
            return int(fs.size(inner))
        except Exception:  # noqa: BLE001 - any protocol error: the size is only informative
            logger.debug("%s: size unknown", location, exc_info=True)
            return None
    path = pathlib.Path(location).expanduser()
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _pixel_size(metadata: Any) -> str:
    """The pixel size ``bigquant info`` shows (what outputs carry), and the ICC profile if any."""
    size = metadata.pixel_size
    text = f"{size[0]:.6g} x {size[1]:.6g} µm" if size is not None else "unknown"
    if metadata.icc_profile is not None:
        text += f"; ICC profile of {len(metadata.icc_profile)} bytes"
    return text


def _cmd_info(args: argparse.Namespace, console: _Console) -> int:
    from bigquant.io.read import decode_image

    decoded = decode_image(args.input)  # a PNG, JPEG...: decoded here, described without dask
    if decoded is not None and (args.exact or decoded.data.shape[0] * decoded.data.shape[1] <= _EXACT_PIXELS):
        return _info_decoded(args, console, decoded)
    from bigquant.io import read_image

    src = read_image(args.input)
    location = str(args.input) if "://" in str(args.input) else str(pathlib.Path(args.input))
    described = None
    if src.format.endswith("tiff"):
        from bigquant.io.inspect import describe

        described = describe(args.input)
    size = _size_of(str(args.input))
    if size is None and described is not None:
        size = described.size
    chunks = src.data.chunksize
    rows = [
        ("file", location),
        ("format", src.format),
        ("shape", " x ".join(str(s) for s in src.shape)),
        ("dtype", str(src.dtype)),
        ("channels", f"{src.channels} ({src.photometric})" if src.photometric else str(src.channels)),
        ("tiles", " x ".join(map(str, src.tile)) if src.tile else "none"),
        ("chunks", f"{' x '.join(map(str, chunks))} ({src.data.npartitions} chunks)"),
        ("levels", str(src.levels)),
        ("pixels", f"{src.height * src.width / 1e6:.1f} MP"),
        ("pixel size", _pixel_size(src.metadata)),
        ("size on disk", _human_bytes(size) if size is not None else "unknown"),
        ("size in memory", _human_bytes(src.nbytes or src.data.nbytes)),
        ("distinct colours", _distinct_colours(src, args.exact)),
    ]
    if described is not None:
        kind = described.series[src.series].kind if src.series < len(described.series) else "?"
        rows.insert(8, ("series", f"{src.series} ({kind}) of {len(described.series)}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        console.out(f"{key:<{width}}  {value}")
    if described is not None:
        console.out()
        console.out(described.table())
    return 0


def _info_decoded(args: argparse.Namespace, console: _Console, decoded: Any) -> int:
    """``bigquant info`` of a decoded PNG, JPEG...: the rows of ``read_image``'s source, from numpy."""
    from bigquant.io.chunks import aligned_chunks

    data = decoded.data
    shape = tuple(int(s) for s in data.shape)
    height, width = shape[:2]
    cy, cx = aligned_chunks((height, width), (1, 1), None, name=str(args.input))  # as read_image chunks it
    cy, cx = min(cy, height), min(cx, width)
    n_chunks = -(-height // cy) * -(-width // cx)
    channels = shape[2] if len(shape) == 3 else 1
    location = str(args.input) if "://" in str(args.input) else str(pathlib.Path(args.input))
    size = _size_of(str(args.input))
    rows = [
        ("file", location),
        ("format", decoded.format),
        ("shape", " x ".join(map(str, shape))),
        ("dtype", str(data.dtype)),
        ("channels", f"{channels} ({decoded.photometric})"),
        ("tiles", "none"),
        ("chunks", f"{' x '.join(map(str, (cy, cx) + shape[2:]))} ({n_chunks} chunks)"),
        ("levels", "1"),
        ("pixels", f"{height * width / 1e6:.1f} MP"),
        ("pixel size", _pixel_size(decoded.metadata)),
        ("size on disk", _human_bytes(size) if size is not None else "unknown"),
        ("size in memory", _human_bytes(data.nbytes)),
        ("distinct colours", _distinct_colours_numpy(data)),
    ]
    width_ = max(len(k) for k, _ in rows)
    for key, value in rows:
        console.out(f"{key:<{width_}}  {value}")
    return 0


def _distinct_colours_numpy(data: Any) -> str:
    """Distinct colours of an in-memory image, counted exactly with numpy (as ``colour_histogram`` counts)."""
    import numpy as np

    if data.ndim == 2:
        data = data[:, :, None]
    n_channels = int(data.shape[-1])
    bits = data.dtype.itemsize * 8
    if data.dtype.kind != "u" or bits * n_channels > 24:  # histogram_bits' rule (MAX_HISTOGRAM_BITS = 24)
        return f"n/a (counted for unsigned data of at most 24 bits per pixel, not {data.dtype} x {n_channels})"
    codes = np.zeros(data.shape[:2], dtype=np.uint32)
    for c in range(n_channels):
        codes <<= bits
        codes |= data[:, :, c]
    seen = np.zeros(1 << (bits * n_channels), dtype=bool)
    seen[codes.ravel()] = True
    return f"{int(np.count_nonzero(seen))}"


def _cmd_demo(args: argparse.Namespace, console: _Console) -> int:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    from PIL import Image

    from bigquant.io import read_image
    from bigquant.io.sample import make_sample_tiff
    from bigquant.pipeline.progress import Line, LloydProgress, progress
    from bigquant.pipeline.quantize import quantize
    from bigquant.pipeline.sweep import parse_ks, sweep
    from bigquant.plotting import display_images
    from bigquant.plotting import preview as make_preview

    ks = parse_ks(args.sweep_k)
    if not args.no_cluster and not args.scheduler:
        args.cluster = True  # the demo shows a LocalCluster of worker processes and its dashboard
    folder = pathlib.Path(args.out).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / name for name in (
        "sample.tif", "quantized.tif", "preview.png", "palette.json", "comparison.png", "sweep.csv", "sweep.png")}
    height, width = args.size
    t0 = time.perf_counter()

    sample = files["sample.tif"]
    reuse = False
    if sample.exists():
        with contextlib.suppress(Exception):
            reuse = read_image(sample).shape[:2] == (height, width)
    if reuse:
        console.note(f"reusing the sample image {sample} ({height} x {width})")
    else:
        console.note(f"building a {height} x {width} sample image ({height * width / 1e6:.0f} MP) "
                     f"from matplotlib's grace_hopper.jpg...")
        make_sample_tiff(sample, size=(height, width), tile=512, seed=args.random_state)
    t_sample = time.perf_counter() - t0

    line = Line()
    show = _show_progress(args)
    bar = LloydProgress(300, line=line) if show else None
    with _runtime(args, console) as client:
        console.note(f"quantizing to k={args.k} colours...")
        t1 = time.perf_counter()
        with progress(client, enabled=show, line=line):
            model = quantize(
                sample, files["quantized.tif"], args.k, client=client, random_state=args.random_state,
                overwrite=True, preview=files["preview.png"], palette_out=files["palette.json"], callback=bar,
            )
        if bar is not None:
            bar.close(model.inertia_)
        t_quantize = time.perf_counter() - t1
        console.note(f"sweeping k = {args.sweep_k} on the same colour histogram...")
        t2 = time.perf_counter()
        src = model.histogram_ if getattr(model, "histogram_", None) is not None else sample
        with progress(client, enabled=show, line=line):
            result = sweep(src, ks, client=client, random_state=args.random_state, out=files["sweep.csv"],
                           overwrite=True)
        t_sweep = time.perf_counter() - t2

    fig = result.plot()
    fig.savefig(files["sweep.png"], dpi=100, bbox_inches="tight")
    original = make_preview(read_image(sample).data, 1024)
    quantized = np.asarray(Image.open(files["preview.png"]).convert("RGB"))
    fig = display_images(original, quantized, figsize=(14, 7),
                         titles=[f"sample, {height} x {width}", f"quantized, k = {args.k}"])
    fig.savefig(files["comparison.png"], dpi=100, bbox_inches="tight")

    console.out(f"demo done in {time.perf_counter() - t0:.1f} s (sample {t_sample:.1f} s, "
                f"quantize {t_quantize:.1f} s, sweep {t_sweep:.1f} s); suggested k (elbow): {result.elbow()}")
    console.out(f"outputs in {folder.resolve()}:")
    notes = {
        "sample.tif": "the input, a photo-like tiled BigTIFF",
        "quantized.tif": f"the image with {args.k} colours (indexed, tiled BigTIFF)",
        "preview.png": "a small preview of it",
        "palette.json": "the palette and fit summary",
        "comparison.png": "original and quantized side by side",
        "sweep.csv": "cost, PSNR and time for every k",
        "sweep.png": "cost and time against k",
    }
    for name, path in files.items():
        console.out(f"  {path.name:<15} {notes[name]}")
    return 0


_COMMANDS = {"quantize": _cmd_quantize, "sweep": _cmd_sweep, "info": _cmd_info, "demo": _cmd_demo}
#: the commands that fit a palette in this process (their allocator is tuned)
_FITTING = ("quantize", "sweep", "demo")


# --------------------------------------------------------------------------- main


#: options the command line spells otherwise than ``--name`` (value False: the flag that sets it)
_CLI_SPELLING = {"n_clusters": "-k", ("measure", "False"): "--no-measure", ("metadata", "False"): "--no-metadata",
                 "ks": "--k"}
#: ``name=value`` in a library message: an option of the request model and its value
_OPTION_VALUE = re.compile(r"\b([a-z][a-z0-9_]*)=(\([^)]*\)|\[[^\]]*\]|'[^']*'|\"[^\"]*\"|[^\s,;:)]+)")


def cli_spelling(text: str) -> str:
    """A library message as the command line speaks: ``mode='rgb'`` -> ``--mode rgb``, ``overwrite=True`` -> ``--overwrite``.

    Every option of the request model (:func:`bigquant.pipeline.request.option_names`)
    is spelled ``--name-with-dashes``; :data:`_CLI_SPELLING` lists the others.
    """
    from bigquant.pipeline.options import ENTRY_GROUPS, option_names

    names = {n for entry in ENTRY_GROUPS for n in option_names(entry)} | {"ks"}

    def spell(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if name not in names:
            return m.group(0)
        value = value.strip("'\"")
        if value.startswith(("(", "[")):
            value = value[1:-1].replace(" ", "")
        flag = _CLI_SPELLING.get((name, value))
        if flag is not None:
            return flag
        flag = _CLI_SPELLING.get(name, "--" + name.replace("_", "-"))
        return flag if value == "True" else f"{flag} {value}"

    return _OPTION_VALUE.sub(spell, text)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return cli_spelling(text)


#: options whose value may start with '-' (pngquant's ``--ext -fs8.png``)
_DASH_VALUES = ("--ext",)


def _attach_dash_values(argv: list[str]) -> list[str]:
    """``--ext -fs8.png`` as ``--ext=-fs8.png`` (argparse would read ``-fs8.png`` as an option), and a bare
    ``--floyd`` as ``--floyd=1`` (pngquant takes a strength only after ``=``: ``--floyd a.png`` is no strength)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--floyd":  # pngquant: a strength only as --floyd=F; bare --floyd is 1
            out.append("--floyd=1")
            i += 1
            continue
        if argv[i] in _DASH_VALUES and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1] != "--":
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line, options and paths in any order (``quantize 64 --floyd a.png b.png``).

    argparse alone gives a command's positional paths only up to the first
    option after them; the command's own arguments are therefore parsed
    with ``parse_intermixed_args`` (which takes no subparsers, so the
    command is found first).
    """
    parser = build_parser()
    commands = _subcommands(parser)
    at = next((i for i, word in enumerate(argv) if word in commands), None)
    if at is None:
        return parser.parse_args(argv)  # no command: argparse says what is missing (or --help, --version)
    head = parser.parse_args([*argv[:at], argv[at], *_PLACEHOLDER.get(argv[at], ())])
    return commands[argv[at]].parse_intermixed_args(argv[at + 1:], namespace=head)


#: the fewest arguments that let a command's parser run, so that the top-level parse stops there
_PLACEHOLDER = {"quantize": ("-",), "sweep": ("-",), "info": ("-",)}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bigquant`` command; returns the exit code.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a usage error, 1 on failure, 3 when ``--keep-going``
        skipped an input, 98 when ``--skip-if-larger`` kept an input, 99 when
        ``--quality`` MIN cannot be reached (nothing written), 130 when
        interrupted.
    """
    argv = _attach_dash_values(list(sys.argv[1:] if argv is None else argv))
    try:
        args = parse_arguments(argv)
    except UsageError as exc:
        print(_one_line(exc), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    verbose = args.verbose
    _setup_logging(args.verbose, args.quiet)
    console = _Console(args.quiet)
    from bigquant.errors import (
        BigquantError,
        ClusterConnectionError,
        InvalidParameterError,
        QualityError,
    )

    try:
        if args.command in _FITTING:
            from bigquant.cluster.allocator import tune_allocator

            tune_allocator()  # this process is ours: glibc thresholds for the fit (BIGQUANT_TUNE_MALLOC=0: off)
        return _COMMANDS[args.command](args, console)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        if verbose:
            traceback.print_exc()
        print(_one_line(exc), file=sys.stderr)
        return 2
    except QualityError as exc:
        print(f"{PROG}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_QUALITY
    except InvalidParameterError as exc:
        if verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (BigquantError, ClusterConnectionError, OSError) as exc:
        if verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # an unexpected failure: still one line unless --verbose
        if verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {type(exc).__name__}: {_one_line(exc)} (--verbose for the traceback)",
              file=sys.stderr)
        return 1


def run() -> NoReturn:
    """``python -m bigquant``: :func:`main`, then leave without tearing the interpreter down.

    When the command is done every output is closed and renamed, every
    temporary removed, and stdout and stderr are flushed here: what
    interpreter shutdown would still do is to free the 1000-odd modules of
    dask, numba and numpy one by one (about 0.04 s) and join idle pool
    threads.  The exit handlers registered with :mod:`atexit` run first
    (logging's flush, tempfile's clean-ups), then the process ends with
    :func:`os._exit`.  Programs calling :func:`main` are not affected.
    """
    import atexit

    code = main()
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a broken pipe or a failing handler: the usual exit reports it
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
