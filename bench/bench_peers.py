"""Peers benchmark: bigquant, GDAL's ``rgb2pct.py`` and libvips' palette PNG on the same GeoTIFFs.

Builds once per size (cached in ``--workdir``) a photo-mosaic RGB GeoTIFF:
uint8, 3 bands pixel-interleaved, 512 x 512 tiles, deflate (no predictor),
georeferenced in EPSG:32633 (10 m pixels), painted from the real photographs
the dependencies ship (``_realfiles.Mosaic``, 2048-px cells, seeded noise of
sigma 2) on a thread pool and streamed to tifffile in bounded memory.  The
default sizes are 8192² (67 MP), 16384² (268 MP) and 32768² (1.07 GP).

Then, per size, k = 16, every program through its own command line, one
subprocess per run:

- ``bigquant quantize IN OUT.tif -k 16`` plain and ``--dither floyd-steinberg``
  (the CLI's defaults otherwise: palette output, strength 0.9, quality
  report), and the same to ``OUT.png``;
- GDAL ``rgb2pct.py -n 16 IN OUT.tif`` (median cut on a downsampled histogram,
  then Floyd-Steinberg: it only dithers; GTiff defaults, i.e. uncompressed),
  from Debian's ``gdal-bin`` + ``python3-gdal``;
- libvips ``pngsave(palette=True, bitdepth=4, dither=0 | 1)`` through pyvips
  (libimagequant; ``bitdepth=4`` is how libvips asks for 16 colours; ``Q`` and
  ``effort`` at their defaults, 100 and 7), the ``vips`` command when it is on
  the PATH, else a ``python -c`` subprocess, input opened with sequential access
  (what ``vips copy`` does).

Each run prints the wall time, the CPU time of the process tree (user + sys
of every reaped descendant: ``getrusage(RUSAGE_CHILDREN)`` deltas), the peak
RSS of the process tree (sampled every 0.2 s), the output's bytes, the PSNR
against the input and the PSNR after a Gaussian blur (sigma = 1 px, scipy's
``gaussian_filter``, of the difference: the blur is linear) -- the judge of
dithered results, as in docs/quality.md.  Both are measured on the whole image
up to 8192², on its central 8192² crop above; palette outputs are expanded
through their colour table (read with rasterio).

Every run starts the same way: the input is read once before the first run
of a size (it is in the page cache for everyone), each program makes one
untimed warm-up run on a 1024² mosaic first (imports, numba's cache, shared
libraries), and
before every run dirty pages are flushed (``os.sync``) and the machine gets a
1 s pause.

    python bench/bench_peers.py                                   # 67 MP, 268 MP, 1.07 GP
    python bench/bench_peers.py --sizes 67 --repeat 3 -v
    python bench/bench_peers.py --sizes 268 --only bigquant,vips --modes plain
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import logging
import math
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _realfiles as rf  # noqa: E402 - the shared helper next to this script
from bench_geotiff import EPSG, geotiff_extratags  # noqa: E402 - its GeoTIFF tags

logger = logging.getLogger("bench.peers")

TILE = 512
CELL = 2048
NOISE = 2.0
JUDGED = 8192  # side of the window PSNRs are measured on
SIGMA = 1.0  # Gaussian blur of the "blurred PSNR"
SIZES = {67: 8192, 268: 16384, 1074: 32768}
WARMUP_SIDE = 1024
PROGRAMS = ("bigquant", "gdal", "vips")
MODES = ("plain", "dither")
FORMATS = ("tif", "png")


# --------------------------------------------------------------------------- the input


def paint_tile(mosaic: rf.Mosaic, seed: int, win: tuple[int, int, int, int]) -> np.ndarray:
    """One window of the mosaic as uint8 RGB, with seeded sensor-like noise."""
    y0, y1, x0, x1 = win
    rgb = mosaic.render(y0, y1, x0, x1)
    rgb += np.random.default_rng([seed, y0, x0]).normal(0.0, NOISE, rgb.shape).astype(np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def build_input(path: pathlib.Path, side: int, *, seed: int, threads: int) -> None:
    """Write the RGB GeoTIFF (see the module docstring) in bounded memory."""
    import tifffile

    mosaic = rf.Mosaic((side, side), cell=CELL, seed=seed)
    windows = list(rf.tile_windows(side, side, TILE))
    per_row = -(-side // TILE)
    t0 = time.perf_counter()
    with rf.building(path) as tmp, ThreadPoolExecutor(threads) as pool:

        def tiles() -> Iterator[np.ndarray]:
            blocks = rf.ordered_map(pool, lambda w: paint_tile(mosaic, seed, w), iter(windows),
                                    ahead=4 * threads)
            for n, block in enumerate(blocks):
                if (n + 1) % (per_row * max(1, per_row // 8)) == 0:
                    logger.info("%d / %d tile rows (%.0f s)", (n + 1) // per_row, per_row,
                                time.perf_counter() - t0)
                yield rf.pad_tile(block, TILE)

        tifffile.imwrite(
            tmp, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE),
            photometric="rgb", planarconfig="contig", compression="zlib",
            bigtiff=side * side * 3 > 2**31, metadata=None, software=False,
            extratags=geotiff_extratags(None), maxworkers=1,  # the pool paints
        )
    logger.info("built %s: %s in %.0f s", path.name, rf.fmt_mb(path.stat().st_size),
                time.perf_counter() - t0)


def input_ok(path: pathlib.Path, side: int) -> bool:
    """Whether a cached input is the expected file."""
    import tifffile

    if not path.exists():
        return False
    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            return (page.shape == (side, side, 3) and page.dtype == np.uint8 and page.is_tiled
                    and page.tilewidth == TILE and page.is_geotiff
                    and page.compression.name == "ADOBE_DEFLATE")
    except Exception as exc:  # noqa: BLE001 - an unreadable cache is rebuilt
        logger.info("%s is not a usable input (%s); rebuilding", path, exc)
        return False


def ensure_input(workdir: pathlib.Path, side: int, *, seed: int, threads: int,
                 rebuild: bool) -> pathlib.Path:
    """The cached input of this side, built when missing."""
    path = workdir / f"peers_{side}_rgb8_deflate_s{seed}.tif"
    if rebuild or not input_ok(path, side):
        logger.info("building %s (%d x %d x 3 uint8)", path, side, side)
        build_input(path, side, seed=seed, threads=threads)
        if not input_ok(path, side):
            raise SystemExit(f"{path}: the built input does not read back as expected")
    return path


def read_through(path: pathlib.Path) -> float:
    """Read the whole file once (into the page cache); seconds taken."""
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(16 * rf.MB):
            pass
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- quality


def judged_window(side: int, judged: int = JUDGED) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the whole image up to ``judged``², else its central ``judged``² crop."""
    if side <= judged:
        return 0, side, 0, side
    a = (side - judged) // 2
    return a, a + judged, a, a + judged


def psnr(sse: float, count: int) -> float:
    """PSNR in dB of 8-bit data from a sum of squared errors over ``count`` values."""
    if sse == 0:
        return math.inf
    return 10.0 * math.log10(255.0**2 * count / sse)


Reader = Callable[[int, int, int, int], np.ndarray]


def band_psnrs(reference: Reader, result: Reader, window: tuple[int, int, int, int], *,
               band: int = 512, sigma: float = SIGMA) -> tuple[float, float]:
    """PSNR and blurred PSNR of ``result`` against ``reference`` over ``window``, band by band.

    Parameters
    ----------
    reference, result : callable
        ``f(y0, y1, x0, x1)`` returns that window as an (h, w, 3) array.
    window : tuple of int
        (y0, y1, x0, x1) judged.
    band : int, default=512
        Rows read at a time (memory is bounded by a band and its halo).
    sigma : float, default=1.0
        Gaussian blur (pixels) of the blurred PSNR; both images are blurred,
        as ``scipy.ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0))`` of the
        whole window would (mode ``reflect`` at the window's edges), computed
        as the blur of their difference (the filter is linear).

    Returns
    -------
    psnr, blurred_psnr : float
    """
    from scipy.ndimage import gaussian_filter

    y0, y1, x0, x1 = window
    halo = int(4.0 * sigma + 0.5)  # gaussian_filter's radius at truncate=4.0
    sse = bsse = 0.0
    count = 0
    for b0 in range(y0, y1, band):
        b1 = min(b0 + band, y1)
        h0, h1 = max(y0, b0 - halo), min(y1, b1 + halo)
        diff = result(h0, h1, x0, x1).astype(np.float64) - reference(h0, h1, x0, x1)
        core = slice(b0 - h0, b1 - h0)
        sse += float(np.square(diff[core]).sum())
        blurred = gaussian_filter(diff, sigma=(sigma, sigma, 0))
        bsse += float(np.square(blurred[core]).sum())
        count += diff[core].size
    return psnr(sse, count), psnr(bsse, count)


def raster_reader(path: pathlib.Path) -> tuple[Reader, Callable[[], None]]:
    """A window reader of an RGB or palette raster (expanded through its colour table), and close."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        src = rasterio.open(path)
    lut = None
    if src.count == 1:
        cmap = src.colormap(1)  # ValueError when the band has no colour table
        lut = np.zeros((256, 3), np.uint8)
        for index, rgba in cmap.items():
            lut[index] = rgba[:3]
    elif src.count < 3:
        raise ValueError(f"{path}: {src.count} bands, neither palette nor RGB")

    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        win = Window(x0, y0, x1 - x0, y1 - y0)
        if lut is not None:
            return lut[src.read(1, window=win)]
        return np.moveaxis(src.read((1, 2, 3), window=win), 0, -1)

    return read, src.close


def measure_quality(source: pathlib.Path, output: pathlib.Path, side: int) -> tuple[float, float]:
    """(PSNR, blurred PSNR) of ``output`` against ``source`` on the judged window."""
    ref, close_ref = raster_reader(source)
    out, close_out = raster_reader(output)
    try:
        return band_psnrs(ref, out, judged_window(side))
    finally:
        close_out()
        close_ref()


# --------------------------------------------------------------------------- running


@dataclasses.dataclass
class Measured:
    """One timed subprocess: wall and CPU seconds of its tree, peak RSS of its tree."""

    wall: float
    cpu: float
    peak: int


class TreeSampler(rf.TreeRss):
    """:class:`_realfiles.TreeRss` that also keeps each process's last seen CPU seconds.

    Their sum is a lower bound of the tree's CPU (a process's last 0.2 s is
    missed); it checks that ``RUSAGE_CHILDREN`` saw every process of the tree
    (a descendant its parent never reaped is missing there).
    """

    def __init__(self, pid: int | None = None, interval: float = 0.2) -> None:
        super().__init__(pid, interval)
        self.cpu: dict[int, float] = {}

    def sample(self) -> int:
        import psutil

        total = super().sample()
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return total
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                self.cpu[p.pid] = t.user + t.system
        return total

    @property
    def cpu_seen(self) -> float:
        return sum(self.cpu.values())


def children_cpu() -> float:
    """User + system seconds of every reaped descendant of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(cmd: Sequence[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd``; wall time, CPU of its reaped tree and peak RSS of its tree (0.2 s samples)."""
    logger.info("running %s", " ".join(cmd))
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    with TreeSampler(proc.pid) as rss:
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
    cpu = children_cpu() - cpu0
    if rss.cpu_seen > 1.05 * cpu + 0.2:
        logger.warning("CPU: the reaped tree used %.1f s, but its processes were seen using "
                       "%.1f s (a descendant was not reaped?): reporting the larger",
                       cpu, rss.cpu_seen)
        cpu = rss.cpu_seen
    logger.debug("CPU %.2f s (reaped tree), %.2f s (sampled, lower bound), %d processes",
                 cpu, rss.cpu_seen, len(rss.cpu))
    for line in (out + err).splitlines():
        logger.debug("  | %s", line)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        raise RuntimeError(f"exit {proc.returncode} after {wall:.1f} s: "
                           f"{lines[-1] if lines else '(no message)'}")
    return Measured(wall, cpu, rss.peak)


def find_rgb2pct() -> list[str] | None:
    """GDAL's ``rgb2pct.py`` command, or None when it is not installed."""
    for name in ("rgb2pct.py", "rgb2pct"):
        found = shutil.which(name)
        if found:
            return [found]
    for path in ("/usr/bin/rgb2pct.py", "/usr/local/bin/rgb2pct.py"):
        if os.access(path, os.X_OK):
            return [path]
    return None


def gdal_env() -> dict[str, str]:
    """The environment of GDAL's scripts: the system Python, not this venv's paths."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(key, None)
    return env


def vips_command(src: pathlib.Path, out: pathlib.Path, dither: float) -> list[str]:
    """libvips' palette PNG save of ``src``: the ``vips`` CLI, else pyvips in a subprocess."""
    options = f"palette,bitdepth=4,dither={dither:g}"
    vips = shutil.which("vips")
    if vips:
        return [vips, "copy", str(src), f"{out}[{options}]"]
    code = ("import sys, pyvips; "
            "pyvips.Image.new_from_file(sys.argv[1], access='sequential')"
            ".pngsave(sys.argv[2], palette=True, bitdepth=4, dither=float(sys.argv[3]))")
    return [sys.executable, "-c", code, str(src), str(out), f"{dither:g}"]


def vips_available() -> bool:
    """Whether libvips can be run (the ``vips`` command or pyvips)."""
    if shutil.which("vips"):
        return True
    try:
        import pyvips  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


@dataclasses.dataclass(frozen=True)
class Contender:
    """One row of a table: a program, a mode and an output format, and its command line."""

    program: str
    mode: str
    fmt: str
    label: str
    command: Callable[[pathlib.Path, pathlib.Path, int], list[str]]
    env: Callable[[], dict[str, str] | None] = lambda: None
    warm_up: tuple[str, ...] = ()  # options of the warm-up run only


def bigquant_cmd(dither: bool) -> Callable[[pathlib.Path, pathlib.Path, int], list[str]]:
    def cmd(src: pathlib.Path, out: pathlib.Path, k: int) -> list[str]:
        extra = ["--dither", "floyd-steinberg"] if dither else []
        return [*rf.bigquant_command(), "quantize", str(src), str(out), "-k", str(k),
                *extra, "--overwrite", "--no-progress"]
    return cmd


def gdal_cmd(src: pathlib.Path, out: pathlib.Path, k: int) -> list[str]:
    script = find_rgb2pct()
    assert script is not None
    return [*script, "-n", str(k), "-of", "GTiff", str(src), str(out)]


def vips_cmd(dither: float) -> Callable[[pathlib.Path, pathlib.Path, int], list[str]]:
    def cmd(src: pathlib.Path, out: pathlib.Path, k: int) -> list[str]:
        if k != 16:
            raise ValueError("libvips picks its palette size by bit depth: only k = 16 here")
        return vips_command(src, out, dither)
    return cmd


#: The rows, in the order of issue #25's tables.
CONTENDERS = (
    Contender("bigquant", "plain", "tif", "bigquant, plain, .tif", bigquant_cmd(False)),
    Contender("bigquant", "dither", "tif", "bigquant, Floyd–Steinberg, .tif", bigquant_cmd(True)),
    Contender("gdal", "dither", "tif", "GDAL `rgb2pct.py -n 16` (median cut + Floyd–Steinberg)",
              gdal_cmd, gdal_env),
    Contender("bigquant", "plain", "png", "bigquant, plain, .png", bigquant_cmd(False)),
    Contender("vips", "plain", "png", "libvips `pngsave(palette=True, bitdepth=4, dither=0)`",
              vips_cmd(0.0)),
    Contender("bigquant", "dither", "png", "bigquant, Floyd–Steinberg, .png", bigquant_cmd(True)),
    Contender("vips", "dither", "png", "libvips `pngsave(palette=True, bitdepth=4, dither=1)`",
              vips_cmd(1.0)),
)


@dataclasses.dataclass
class Row:
    """A contender's result at one size."""

    label: str
    runs: list[Measured] = dataclasses.field(default_factory=list)
    size: int = 0
    psnr: float = math.nan
    blurred: float = math.nan
    error: str = ""


def remove_output(out: pathlib.Path) -> None:
    """Delete an output and the sidecar a program may write beside it (GDAL's .aux.xml)."""
    out.unlink(missing_ok=True)
    out.with_name(out.name + ".aux.xml").unlink(missing_ok=True)


def settle() -> None:
    """The same start for every run: dirty pages flushed, garbage collected, a short pause."""
    os.sync()
    gc.collect()
    time.sleep(1.0)


def run_contender(c: Contender, src: pathlib.Path, outdir: pathlib.Path, side: int, *, k: int,
                  repeat: int, keep: bool) -> Row:
    """``repeat`` timed runs of one contender, then the quality of its last output."""
    row = Row(c.label)
    out = outdir / f"{c.program}_{c.mode}_{side}.{c.fmt}"
    for r in range(repeat):
        remove_output(out)
        settle()
        try:
            m = run_measured(c.command(src, out, k), c.env())
        except (RuntimeError, ValueError) as exc:
            logger.error("%s: %s", c.label, exc)
            row.error = str(exc)
            remove_output(out)
            return row
        row.runs.append(m)
        row.size = rf.file_size(out)
        logger.info("%s, run %d: %.1f s wall, %.1f s CPU, peak %s, %s", c.label, r + 1, m.wall,
                    m.cpu, rf.fmt_gb(m.peak), rf.fmt_mb(row.size))
    try:
        row.psnr, row.blurred = measure_quality(src, out, side)
    except Exception as exc:  # noqa: BLE001 - an unreadable output is reported, not fatal
        logger.exception("%s: the output could not be judged", c.label)
        row.error = f"output unreadable: {type(exc).__name__}: {exc}"
    logger.info("%s: PSNR %.2f dB, blurred %.2f dB", c.label, row.psnr, row.blurred)
    if not keep:
        remove_output(out)
    return row


def warm_up(contenders: Sequence[Contender], src: pathlib.Path, outdir: pathlib.Path,
            k: int) -> None:
    """One untimed run of each contender on a small input (imports, caches, libraries)."""
    for c in contenders:
        out = outdir / f"warm-up.{c.fmt}"
        for extra in dict.fromkeys([c.warm_up, ()]):  # without the extra options if refused
            try:
                run_measured([*c.command(src, out, k), *extra], c.env())
                break
            except (RuntimeError, ValueError) as exc:
                logger.warning("warm-up of %s %s failed: %s", c.label, " ".join(extra), exc)
        remove_output(out)


# --------------------------------------------------------------------------- tables


def fmt_db(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def table(rows: Sequence[Row]) -> str:
    """One Markdown table: a row per contender."""
    lines = ["| run | wall s | CPU s | peak GB | PSNR dB | blurred PSNR dB | output |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if not row.runs:
            lines.append(f"| {row.label} | failed: {row.error[:160]} | | | | | |")
            continue
        wall = statistics.median(m.wall for m in row.runs)
        cpu = statistics.median(m.cpu for m in row.runs)
        peak = max(m.peak for m in row.runs)
        lines.append(f"| {row.label} | {wall:.1f} | {cpu:.1f} | {peak / rf.GB:.2f} | "
                     f"{fmt_db(row.psnr)} | {fmt_db(row.blurred)} | {rf.fmt_mb(row.size)} |")
    return "\n".join(lines)


def versions() -> str:
    """Versions of the programs compared."""
    parts = []
    with contextlib.suppress(Exception):  # a missing program only loses its version
        out = subprocess.run([*rf.bigquant_command(), "--version"], capture_output=True,
                             text=True, timeout=60)
        parts.append((out.stdout or out.stderr).strip().splitlines()[-1])
    with contextlib.suppress(Exception):
        gdal = subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True, timeout=60)
        parts.append(gdal.stdout.strip().split(",")[0])
    with contextlib.suppress(Exception):
        import pyvips

        parts.append(f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} "
                     f"(pyvips {pyvips.__version__})")
    return ", ".join(parts)


# --------------------------------------------------------------------------- main


def side_of(megapixels: float) -> int:
    """Side of the square input: 67, 268, 1074 -> 8192, 16384, 32768; else a multiple of the tile."""
    if megapixels in SIZES:
        return SIZES[int(megapixels)]
    return max(TILE, int(round(math.sqrt(megapixels * 1e6) / TILE)) * TILE)


def parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(items) - set(allowed))
    if unknown:
        raise SystemExit(f"{what}: unknown {unknown} (choose from {', '.join(allowed)})")
    return items


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="67,268,1074",
                        help="sizes in MP: 67 (8192²), 268 (16384²), 1074 (32768²), others rounded to 512-px sides")
    parser.add_argument("--only", default=",".join(PROGRAMS),
                        help="programs: bigquant, gdal, vips (default all)")
    parser.add_argument("--modes", default=",".join(MODES), help="plain, dither (default both)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="tif, png (default both)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each row (median)")
    parser.add_argument("-k", type=int, default=16, help="colours (default 16; libvips: 16 only)")
    parser.add_argument("--workdir", type=pathlib.Path,
                        default=pathlib.Path(tempfile.gettempdir()) / "bigquant-bench-peers",
                        help="where the inputs are built and cached, and the outputs written")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of the input builder (default: cores)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the inputs even if cached")
    parser.add_argument("--keep", action="store_true", help="keep the outputs in --workdir")
    parser.add_argument("--no-warmup", action="store_true",
                        help="no untimed warm-up run of each program")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    rf.setup_logging(args.verbose)

    try:
        sizes = [side_of(float(s)) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise SystemExit("--sizes: megapixels, comma separated (e.g. 67,268,1074)") from None
    programs = parse_list(args.only, PROGRAMS, "--only")
    modes = parse_list(args.modes, MODES, "--modes")
    formats = parse_list(args.formats, FORMATS, "--formats")
    threads = args.threads or len(os.sched_getaffinity(0))

    contenders = [c for c in CONTENDERS
                  if c.program in programs and c.mode in modes and c.fmt in formats]
    skipped: list[str] = []
    if any(c.program == "gdal" for c in contenders) and find_rgb2pct() is None:
        skipped.append("GDAL's rgb2pct.py is not installed (Debian/Ubuntu: "
                       "`apt-get install gdal-bin python3-gdal`; conda: `conda install gdal`): "
                       "its rows are skipped")
        contenders = [c for c in contenders if c.program != "gdal"]
    if any(c.program == "vips" for c in contenders) and not vips_available():
        skipped.append("libvips is not available (`pip install pyvips pyvips-binary`, the "
                       "`bench` extra): its rows are skipped")
        contenders = [c for c in contenders if c.program != "vips"]
    for note in skipped:
        logger.warning("%s", note)
    if not contenders:
        raise SystemExit("nothing to run")

    args.workdir.mkdir(parents=True, exist_ok=True)
    outdir = args.workdir / "outputs"
    outdir.mkdir(exist_ok=True)
    if not args.no_warmup:
        small = ensure_input(args.workdir, WARMUP_SIDE, seed=args.seed, threads=threads,
                             rebuild=args.rebuild)
        logger.info("warm-up runs on %s", small.name)
        warm_up(contenders, small, outdir, args.k)

    about = versions()
    for side in sizes:
        src = ensure_input(args.workdir, side, seed=args.seed, threads=threads,
                           rebuild=args.rebuild)
        seconds = read_through(src)
        logger.info("%s read once into the page cache (%s, %.1f s)", src.name,
                    rf.fmt_mb(src.stat().st_size), seconds)
        load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        rows = [run_contender(c, src, outdir, side, k=args.k, repeat=args.repeat, keep=args.keep)
                for c in contenders]
        y0, y1, x0, x1 = judged_window(side)
        judged = "the whole image" if (y1 - y0) == side else f"the central {y1 - y0}²"
        print(f"\n### {rf.size_label(side, side)}, k = {args.k}\n")
        print(table(rows))
        print()
        print(f"input: {src.name}, RGB uint8, {TILE}² tiles, deflate, EPSG:{EPSG}, "
              f"{rf.fmt_mb(src.stat().st_size)}; wall and CPU: median of {args.repeat} run(s), "
              f"CPU = user + sys of the process tree, peak = RSS of the process tree (0.2 s samples); "
              f"PSNR and blurred PSNR (Gaussian σ = {SIGMA:g} px) on {judged}; "
              f"load average before the runs {load_before}.")
        print(rf.machine_line())
        print(about)
        for note in skipped:
            print(f"note: {note}")
    if not args.keep:
        rf.clean_dir(outdir)


if __name__ == "__main__":
    main()
