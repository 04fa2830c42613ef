"""The ``bigquant`` command: ``quantize``, ``sweep``, ``info`` and ``demo``.

Exit codes: 0 success, 2 usage error (bad arguments or parameter values),
1 failure (unreadable input, unreachable scheduler, ...), 130 interrupted. Errors
are one line on stderr; ``--verbose`` adds the traceback and the library's log.

The command line owns the terminal: it configures logging, prints results on
stdout and draws progress (Lloyd's iterations, long passes) on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import pathlib
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

__all__ = ["main", "build_parser", "UsageError"]

PROG = "bigquant"
#: exit code when --quality MIN cannot be reached (pngquant uses the same)
EXIT_QUALITY = 99

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
                        "(default: start a local cluster)")
    g.add_argument("--workers", type=_positive_int, metavar="N", help="local cluster: worker processes")
    g.add_argument("--threads", type=_positive_int, metavar="N", help="local cluster: threads per worker")
    g.add_argument("--memory-limit", metavar="SIZE", help="local cluster: memory per worker, e.g. 4GiB")
    g.add_argument("--dashboard", metavar="ADDR", default=":8787",
                   help="local cluster: dashboard address (default :8787; 'none' for no dashboard)")
    g.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the scheduler (default 30)")
    g.add_argument("--no-cluster", action="store_true",
                   help="no Dask cluster: run on this process's threads (the default for small inputs)")
    g.add_argument("--cluster", action="store_true",
                   help="start a local Dask cluster even for a small input (e.g. to watch the dashboard)")
    g.add_argument("--no-progress", action="store_true", help="do not draw progress bars")


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
                       description="Fit a k-colour palette and write the image with it.")
    q.add_argument("paths", nargs="+", metavar="IN [IN ...] OUT",
                   help="input image (TIFF, zarr, PNG, JPEG...) and output (.tif, .zarr, .png); "
                        "with --out-dir, every path is an input")
    q.add_argument("-k", "--n-clusters", dest="n_clusters", type=_positive_int, default=None,
                   help="colours (default 16; with --quality, the most allowed)")
    q.add_argument("--palette", metavar="FILE",
                   help="apply this palette instead of fitting one (.json, .gpl, .act, .png/.tif swatch)")
    q.add_argument("--quality", metavar="[MIN:]TARGET",
                   help="choose k: the fewest colours whose image reaches TARGET dB PSNR; "
                        f"below MIN dB nothing is written (exit code {EXIT_QUALITY})")
    q.add_argument("--out-dir", metavar="DIR", help="quantize every input with one shared palette into DIR")
    q.add_argument("--suffix", default=".tif", help="with --out-dir: output format (default .tif)")
    q.add_argument("--weight", choices=("pixels", "image"), default="pixels",
                   help="with --out-dir: count every pixel once (default) or every image equally")
    q.add_argument("--keep-going", action="store_true",
                   help="with --out-dir: skip unreadable inputs (reported) instead of stopping")
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
                        "image of the same size (non-zero = image), 'auto' (slide background: Otsu on a "
                        "low-resolution level) or 'none' (ignore the file's masks too)")
    q.add_argument("--alpha", choices=("auto", "mask", "fit"), default="auto",
                   help="an RGBA image's alpha: 'fit' it as a fourth channel, colours premultiplied, kept in the "
                        "output (PNG tRNS, RGBA); 'mask' (alpha 0 is nodata, the rest opaque); 'auto' (default): "
                        "fit when some alpha lies between 0 and full and the output holds alpha")
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
    q.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    q.add_argument("--random-state", type=int, metavar="N",
                   help="seed (default 0: the same command writes the same bytes)")
    q.add_argument("--n-init", type=_positive_int, default=1, help="initialisations (default 1)")
    q.add_argument("--max-iter", type=_positive_int, default=300, help="Lloyd iterations at most (default 300)")
    q.add_argument("--tol", type=_non_negative_float, default=1e-4,
                   help="relative tolerance of Lloyd's convergence (default 1e-4)")
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

    def out(self, text: str = "") -> None:
        if not self.quiet:
            print(text, file=sys.stdout, flush=True)

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


#: decoded input bytes up to which ``quantize`` and ``sweep`` run on this process's
#: threads when no cluster is asked for (a 512 x 512 RGB PNG is 0.75 MiB; 128 MiB is
#: about 45 MP of RGB): starting worker processes would cost more than the work
IN_PROCESS_MAX_BYTES = 128 * 2**20
#: ... and at most this fraction of the machine's memory
IN_PROCESS_MAX_FRACTION = 1 / 16


def _machine_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 0


def _cluster_asked(args: argparse.Namespace) -> bool:
    """Whether the options name a cluster: ``--cluster``, ``--scheduler`` or a local cluster's size."""
    return bool(args.cluster or args.scheduler or args.workers or args.threads or args.memory_limit)


def fits_in_process(nbytes: int, memory: int | None = None) -> bool:
    """Whether an input of ``nbytes`` decoded bytes runs on threads, with no cluster start.

    Parameters
    ----------
    nbytes : int
        Decoded size of the input (``ImageSource.nbytes``).
    memory : int or None, default=None
        Bytes of memory to compare with; None: this machine's.

    Returns
    -------
    bool
        True up to :data:`IN_PROCESS_MAX_BYTES` and :data:`IN_PROCESS_MAX_FRACTION`
        of ``memory``.
    """
    memory = _machine_memory() if memory is None else memory
    limit = min(IN_PROCESS_MAX_BYTES, int(memory * IN_PROCESS_MAX_FRACTION)) if memory else IN_PROCESS_MAX_BYTES
    return 0 <= nbytes <= limit


def _choose_in_process(args: argparse.Namespace, console: _Console, paths: Sequence[str]) -> list[Any]:
    """Open the inputs (metadata only) and, unless a cluster was asked for, run small inputs in-process.

    Sets ``args.no_cluster`` when no cluster is asked for and the inputs
    together :func:`fits_in_process`.  Returns the opened
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
    nbytes = sum(s.nbytes for s in sources if s is not None)
    if fits_in_process(nbytes):
        args.no_cluster = True
        console.note(f"small input ({_human_bytes(nbytes)}): running on this process's threads "
                     "(--cluster starts a local Dask cluster)")
    return sources


@contextlib.contextmanager
def _runtime(args: argparse.Namespace, console: _Console) -> Iterator[Any]:
    """Yield a distributed client (or None with --no-cluster), closing what was started."""
    if args.no_cluster and getattr(args, "cluster", False):
        raise UsageError(f"{PROG}: --no-cluster and --cluster exclude each other")
    if args.no_cluster:
        if args.scheduler:
            raise UsageError(f"{PROG}: --no-cluster and --scheduler exclude each other")
        yield None
        return
    from bigquant.pipeline.runtime import connect

    dashboard = None if str(args.dashboard).lower() in ("none", "off", "") else args.dashboard
    start = time.perf_counter()
    if not args.scheduler:
        console.note("starting a local Dask cluster...")
    runtime = connect(
        args.scheduler,
        n_workers=args.workers,
        threads_per_worker=args.threads,
        memory_limit=args.memory_limit,
        dashboard_address=dashboard,
        timeout=args.timeout,
    )
    with runtime:
        workers = runtime.client.nthreads()
        kind = "connected to" if args.scheduler else "local cluster"
        console.note(f"{kind} {runtime.scheduler_address}: {len(workers)} workers, "
                     f"{sum(workers.values())} threads ({time.perf_counter() - start:.1f} s)")
        link = runtime.dashboard_link
        if link:
            console.note(f"dashboard: {link}")
        yield runtime.client


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
}


def request_options(args: argparse.Namespace, entry: str) -> dict[str, Any]:
    """The options of ``entry`` (:mod:`bigquant.pipeline.request`) the command line gave, by their names.

    Every option the command spells has the library's name; only
    :data:`bigquant.pipeline.request.PYTHON_ONLY` ones are not spelled.
    """
    from bigquant.pipeline.request import option_names

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


def _cmd_quantize(args: argparse.Namespace, console: _Console) -> int:
    from bigquant.pipeline.progress import Line, LloydProgress, progress
    from bigquant.pipeline.quantize import quantize
    from bigquant.pipeline.request import build_request, check_request, check_sources

    if args.out_dir is None and len(args.paths) != 2:
        raise UsageError(f"{PROG} quantize: give IN OUT, or several inputs with --out-dir DIR "
                         f"(got {len(args.paths)} path(s))")
    if args.out_dir is None and (args.keep_going or args.weight != "pixels"):
        raise UsageError(f"{PROG} quantize: --keep-going and --weight go with --out-dir")
    if args.n_clusters is None and args.palette is None and args.quality is None:
        args.n_clusters = 16
    if args.out_dir is not None:
        return _quantize_many(args, console)
    source, output = args.paths
    _check_input(source)
    options = request_options(args, "quantize")
    # the whole request is checked here, before a cluster is started for nothing (quantize checks it again)
    request = check_request(build_request("quantize", [source], [output], options))
    start = time.perf_counter()
    opened = _choose_in_process(args, console, [source])
    check_sources(request, opened)
    line = Line()
    bar = LloydProgress(args.max_iter, line=line) if _show_progress(args) and args.palette is None else None
    with _runtime(args, console) as client:
        with progress(client, enabled=_show_progress(args), line=line):
            model = quantize(source if not args.no_cluster else opened[0], output, client=client,
                             **dict(options, callback=bar))
        if bar is not None:
            bar.close(model.inertia_)
    seconds = time.perf_counter() - start
    for extra in (args.palette_out, args.preview, args.compare):
        if extra:
            console.out(f"wrote {extra}")
    measured = _quality_text(getattr(model, "quality_", None))
    if args.palette is not None:
        console.out(f"wrote {output}: {len(model.cluster_centers_)} colours from {args.palette}{measured}, "
                    f"{seconds:.1f} s")
    else:
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
    return 0


def _quality_text(quality: dict[str, Any] | None) -> str:
    """", PSNR 31.2 dB, mean ΔE_OK 0.0213" (or nothing without a measure)."""
    if not quality or quality.get("psnr") is None:
        return ""
    text = f", PSNR {quality['psnr']:.2f} dB"
    if quality.get("delta_e_ok") is not None:
        text += f", mean dE_OK {quality['delta_e_ok']:.4f}"
    return text


def _quantize_many(args: argparse.Namespace, console: _Console) -> int:
    from bigquant.pipeline.many import quantize_many
    from bigquant.pipeline.progress import Line, progress

    if not args.keep_going:
        for path in args.paths:
            _check_input(path)
    options = request_options(args, "quantize_many")
    start = time.perf_counter()
    _choose_in_process(args, console, args.paths)
    line = Line()
    with _runtime(args, console) as client:
        with progress(client, enabled=_show_progress(args), line=line):
            result = quantize_many(args.paths, args.out_dir, client=client, **options)
    seconds = time.perf_counter() - start
    for item in result.files:
        quality = "" if item.psnr is None else f" ({item.psnr:.2f} dB)"
        console.out(f"wrote {item.dst}{quality}")
    for name, reason in result.skipped:
        console.out(f"skipped {name}: {reason}")
    console.out(f"{len(result.files)} files with one palette of {len(result.palette)} colours "
                f"({args.weight} weighted), {seconds:.1f} s")
    if args.palette_out:
        console.out(f"wrote {args.palette_out}")
    return 0


def _cmd_sweep(args: argparse.Namespace, console: _Console) -> int:
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


#: library hints in error messages, as the command line spells them
_CLI_SPELLING = {"pass overwrite=True": "pass --overwrite"}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    for library, command_line in _CLI_SPELLING.items():
        text = text.replace(library, command_line)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bigquant`` command; returns the exit code.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a usage error, 1 on failure, 99 when ``--quality`` MIN
        cannot be reached (nothing written), 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
