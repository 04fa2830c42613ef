"""Shared pieces of the real-file benchmarks (``bench_wsi.py``, ``bench_geotiff.py``).

- **Measuring**: :class:`TreeRss` samples the summed RSS of a process and its
  descendants every 0.2 s (psutil); :func:`run_cli` times a ``bigquant``
  command line in a subprocess and samples its whole tree (client, scheduler,
  nannies, workers); :func:`bare_pass` reads and decodes every segment of one
  TIFF page with tifffile's own decoder (imagecodecs) on a thread pool.
- **Real photographs**: :func:`real_photos` loads the photos the dependencies
  ship (matplotlib's ``grace_hopper.jpg``; scikit-learn's ``china.jpg`` and
  ``flower.jpg`` when it is installed, as the ``bench`` extra does).
- **Mosaic**: :class:`Mosaic` paints any window of an arbitrarily large canvas
  from those photos.  The canvas is a grid of cells; each cell shows one photo
  enlarged (bilinear) by its own factor, from its own offset, flipped and/or
  transposed, with its own colour mix, so the image looks like photographs and
  no two cells are the same stamp.  Every pixel is a pure function of
  ``(seed, position)``: windows are painted independently, in threads, in
  bounded memory.

Nothing here imports bigquant: the builders only depend on numpy, Pillow,
tifffile and imagecodecs.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import importlib.util
import logging
import math
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np

logger = logging.getLogger("bench.realfiles")

GB = 2**30
MB = 2**20


# --------------------------------------------------------------------------- measuring


class TreeRss:
    """Peak of the summed RSS of one process and all its descendants, sampled in a thread.

    Parameters
    ----------
    pid : int or None, default=None
        Root process (None: this process).
    interval : float, default=0.2
        Seconds between samples.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_root = 0  # RSS of the root process at the peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil

        try:
            root = self.proc.memory_info().rss
            children = self.proc.children(recursive=True)
        except psutil.Error:  # the root has exited
            return 0
        total = root
        for child in children:
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        if total > self.peak:
            self.peak, self.peak_root = total, root
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeRss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


@dataclasses.dataclass
class Run:
    """One timed run: wall seconds, peak RSS of the measured tree, and notes."""

    seconds: float
    peak: int
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)


def own_rss() -> int:
    """RSS of this process now."""
    import psutil

    return psutil.Process().memory_info().rss


def measure_here(fn: Callable[[], Any]) -> tuple[Run, Any]:
    """Run ``fn()`` in this process; time it and sample this process tree's RSS."""
    with TreeRss() as rss:
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
    return Run(seconds, rss.peak), result


_PHASE_PATTERNS = {
    "cluster start": re.compile(r"(?:local cluster|connected to) \S+: .*\((\d+(?:\.\d+)?) s\)"),
    "fit": re.compile(r"fitted \d+ colours in (\d+(?:\.\d+)?) s"),
    "write": re.compile(r"wrote \S+ in (\d+(?:\.\d+)?) s"),
}


def parse_phases(text: str) -> dict[str, float]:
    """Phase seconds from bigquant's INFO log lines (``quantize`` and the CLI)."""
    out: dict[str, float] = {}
    for name, pattern in _PHASE_PATTERNS.items():
        match = pattern.search(text)
        if match:
            out[name] = float(match.group(1))
    return out


_CLI_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d) \S+ [A-Z]+: (.*)$")
_EVENTS = {
    "start": re.compile(r"^quantize .*: \(\d+, \d+"),
    "histogram": re.compile(r"^colour histogram: "),
    "iteration 1": re.compile(r"^(iteration 1: |\d+ iterations in one call)"),
    "fitted": re.compile(r"^fitted \d+ colours in \S+ s \((\d+) iterations\)"),
}


def cli_events(text: str) -> list[tuple[float, str]]:
    """(seconds of the day, message) of the CLI's log lines (1 s resolution)."""
    out = []
    for line in text.splitlines():
        match = _CLI_LINE.match(line)
        if match:
            h, m, sec, message = match.groups()
            out.append((int(h) * 3600 + int(m) * 60 + int(sec), message))
    return out


def event_phases(events: Sequence[tuple[float, str]]) -> dict[str, float]:
    """Split the fit with the log's timestamps.

    ``first pass`` is the histogram pass (histogram strategy: start of
    ``quantize`` to the histogram's log line) or, for the pixel strategy,
    everything up to the end of the first Lloyd iteration (reading every tile,
    persisting, moments, k-means++ and one pass); ``rest of fit`` runs from
    there to the fitted palette (palette search and Lloyd, or the other Lloyd
    iterations); ``iterations`` is Lloyd's count.
    """
    seen: dict[str, float] = {}
    iterations = None
    for t, message in events:
        for name, pattern in _EVENTS.items():
            match = pattern.match(message)
            if match and name not in seen:
                seen[name] = t
                if name == "fitted":
                    iterations = int(match.group(1))
    out: dict[str, float] = {}
    mark = seen.get("histogram", seen.get("iteration 1"))
    if "start" in seen and mark is not None and "fitted" in seen:
        out["first pass"] = mark - seen["start"]
        out["rest of fit"] = seen["fitted"] - mark
        out["strategy"] = 0.0 if "histogram" in seen else 1.0
    if iterations is not None:
        out["iterations"] = float(iterations)
    return out


def bigquant_command() -> list[str]:
    """The ``bigquant`` console script of this interpreter's environment."""
    script = pathlib.Path(sys.executable).with_name("bigquant")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "bigquant"]


def run_cli(args: Sequence[str]) -> Run:
    """Run ``bigquant ARGS`` in a subprocess: wall time and peak RSS of its process tree.

    The tree is the CLI process (the Dask client) and everything it starts
    (scheduler, nannies, workers); the benchmark process itself is not counted.
    The CLI's stderr (INFO logs with ``-v``) is parsed for the phase times and
    echoed to this process's log at DEBUG level (``-vv``).
    """
    cmd = bigquant_command() + list(args)
    logger.info("running %s", " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeRss(proc.pid) as rss:
        out, err = proc.communicate()
        seconds = time.perf_counter() - t0
    for line in err.splitlines():
        logger.debug("  cli| %s", line)
    if proc.returncode != 0:
        raise RuntimeError(f"bigquant exited with {proc.returncode}:\n{err[-3000:]}")
    phases = parse_phases(err) | event_phases(cli_events(err))
    return Run(seconds, rss.peak, phases, {"stdout": out.strip()})


def failed(exc: BaseException) -> Run:
    """A run that did not finish: no time, the last line of its error in the notes."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return Run(math.nan, 0, notes={"error": f"{type(exc).__name__}: {lines[-1] if lines else ''}"})


def trim_heap() -> None:
    """Return freed heap memory to the OS (glibc), so one run's leftovers do not count in the next."""
    import ctypes
    import ctypes.util

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def quantize_cli(src: pathlib.Path, out: pathlib.Path, k: int, repeat: int, *,
                 inspect: Callable[[pathlib.Path], Any] | None = None) -> tuple[Run, int, Any]:
    """``bigquant quantize SRC OUT -k K`` ``repeat`` times: median run, output size, inspection.

    ``inspect(out)`` is called on the last run's output before it is deleted.
    """
    runs, size, seen = [], 0, None
    for r in range(repeat):
        try:
            run = run_cli(["quantize", str(src), str(out), "-k", str(k), "--random-state", "0",
                           "--overwrite", "--no-progress", "-v"])
        except RuntimeError as exc:  # reported in the table, the other runs still happen
            logger.error("%s", exc)
            return failed(exc), 0, None
        size = file_size(out)
        if inspect is not None and r == repeat - 1:
            seen = inspect(out)
        out.unlink(missing_ok=True)
        logger.info("CLI run %d: %.1f s, peak %s, phases %s; %s", r + 1, run.seconds,
                    fmt_gb(run.peak), run.phases, run.notes["stdout"])
        runs.append(run)
    return summarise(runs), size, seen


def quantize_threads(src: pathlib.Path, out: pathlib.Path, k: int, repeat: int, *,
                     inspect: Callable[[pathlib.Path], Any] | None = None) -> tuple[Run, int, Any]:
    """``bigquant.quantize(SRC, OUT, K)`` in this process on dask's threaded scheduler.

    An untimed warm-up on a tiny image first (imports, numba kernels); the
    peak RSS is this whole process's, and ``notes["baseline"]`` what it held
    before the run.
    """
    import dask

    import bigquant

    warm = out.with_name("warm-up.tif")
    tiny = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with dask.config.set(scheduler="threads"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bigquant.quantize(tiny, warm, k, random_state=0, overwrite=True, tile=128)
        bigquant.quantize(tiny.astype(np.uint16) * 40, warm, k, random_state=0, overwrite=True,
                          tile=128, max_iter=3)
    warm.unlink(missing_ok=True)
    runs, size, seen = [], 0, None
    for r in range(repeat):
        import gc

        gc.collect()
        trim_heap()
        base = own_rss()
        try:
            with dask.config.set(scheduler="threads"), LogCapture() as cap:
                run, _ = measure_here(lambda: bigquant.quantize(src, out, k, random_state=0,
                                                                overwrite=True))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            logger.exception("bigquant.quantize failed")
            out.unlink(missing_ok=True)
            return failed(exc), 0, None
        run.phases = parse_phases(cap.text) | event_phases(cap.events)
        run.notes["baseline"] = base
        size = file_size(out)
        if inspect is not None and r == repeat - 1:
            seen = inspect(out)
        out.unlink(missing_ok=True)
        logger.info("threads run %d: %.1f s, peak %s (this process held %s before), phases %s",
                    r + 1, run.seconds, fmt_gb(run.peak), fmt_gb(base), run.phases)
        runs.append(run)
    best = summarise(runs)
    best.notes["baseline"] = max(r.notes["baseline"] for r in runs)
    return best, size, seen


def results_tables(image: str, bare: Run, rows: Sequence[tuple[str, Run, int]], *,
                   bare_name: str, k: int, max_ratio: float, max_gb: float,
                   max_ratio_in_process: float | None = None) -> str:
    """The two Markdown tables: times and memory, then where the time went.

    ``max_ratio_in_process``, when given, is the time target of the in-process rows
    (``max_ratio`` that of the others).
    """
    mpx = bare.notes["pixels"] / 1e6 / bare.seconds
    lines = [f"| image | run | {bare_name} | quantize k={k} | × {bare_name.split()[-1]} | "
             "peak RSS | output |",
             "|---|---|---|---|---|---|---|"]
    for name, run, size in rows:
        if "error" in run.notes:
            lines.append(f"| {image} | {name} | {bare.seconds:.1f} s ({mpx:.0f} Mpx/s) | "
                         f"failed: {run.notes['error'][:160]} | – | – | – |")
            continue
        lines.append(f"| {image} | {name} | {bare.seconds:.1f} s ({mpx:.0f} Mpx/s) | "
                     f"{run.seconds:.1f} s | {run.seconds / bare.seconds:.2f} | "
                     f"{run.peak / GB:.2f} GB | {fmt_mb(size)} |")
    lines += ["", "| run | start-up, cluster, exit | fit: first pass | fit: the rest | write pass | "
              f"target ≤ {max_ratio:g}× {bare_name.split()[-1]}"
              + (f" (in-process ≤ {max_ratio_in_process:g}×)" if max_ratio_in_process is not None else "")
              + f", ≤ {max_gb:g} GB |",
              "|---|---|---|---|---|---|"]
    for name, run, _ in rows:
        if "error" in run.notes:
            lines.append(f"| {name} | – | – | – | – | failed |")
            continue
        fit, write = run.phases.get("fit"), run.phases.get("write")
        rest = max(0.0, run.seconds - (fit or 0) - (write or 0))
        if "cluster start" in run.phases:
            rest_cell = f"{rest:.1f} s (cluster start {run.phases['cluster start']:.1f} s)"
        else:
            rest_cell = f"{rest:.1f} s"
        in_process = max_ratio_in_process is not None and "in-process" in name
        ok_t = run.seconds <= (max_ratio_in_process if in_process else max_ratio) * bare.seconds
        ok_m = run.peak <= max_gb * GB
        missed = [s for s, ok in (("time", ok_t), ("memory", ok_m)) if not ok]
        verdict = "met" if not missed else "missed (" + ", ".join(missed) + ")"
        first, later = run.phases.get("first pass"), run.phases.get("rest of fit")
        if first is None or fit is None:
            first_cell, rest_of_fit = "?", f"{_secs(fit)} (whole fit)"
        else:  # the log's timestamps split the fit; the fit's own total is the reference
            later = max(0.0, fit - first)
            what = ("colour histogram: read, decode, count" if not run.phases.get("strategy")
                    else "read, persist, init, Lloyd step 1")
            first_cell = f"{first:.1f} s ({what})"
            iters = run.phases.get("iterations")
            how = ("palette search + Lloyd" if not run.phases.get("strategy")
                   else f"Lloyd steps 2–{int(iters)}" if iters else "Lloyd")
            if iters and run.phases.get("strategy") and iters > 1:
                how += f", {later / (iters - 1):.1f} s each"
            rest_of_fit = f"{later:.1f} s ({how})"
        lines.append(f"| {name} | {rest_cell} | {first_cell} | {rest_of_fit} | {_secs(write)} | "
                     f"{verdict} |")
    return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def clean_dir(path: pathlib.Path) -> None:
    """Delete a folder of temporary outputs (files only, then the folder)."""
    if path.exists():
        for p in path.iterdir():
            p.unlink()
        path.rmdir()


class LogCapture(logging.Handler):
    """Collect the formatted records of one logger while in the ``with`` block."""

    def __init__(self, name: str = "bigquant") -> None:
        super().__init__(logging.INFO)
        self.name_ = name
        self.lines: list[str] = []
        self.events: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.events.append((record.created, record.getMessage()))

    def __enter__(self) -> LogCapture:
        log = logging.getLogger(self.name_)
        self._level = log.level
        log.addHandler(self)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        log = logging.getLogger(self.name_)
        log.removeHandler(self)
        log.setLevel(self._level)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def summarise(runs: Sequence[Run]) -> Run:
    """Median time (and phase times) and the highest peak over repeated runs."""
    phases = {}
    for name in runs[0].phases:
        values = [r.phases[name] for r in runs if name in r.phases]
        phases[name] = statistics.median(values)
    notes = dict(runs[0].notes)
    notes["all_seconds"] = [r.seconds for r in runs]
    return Run(statistics.median(r.seconds for r in runs), max(r.peak for r in runs), phases, notes)


def machine_line() -> str:
    """Cores, memory, CPU model, versions and date, for the table's footnote."""
    import psutil

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for mod in ("numpy", "tifffile", "imagecodecs", "dask", "distributed"):
        with contextlib.suppress(Exception):
            versions.append(f"{mod} {__import__(mod).__version__}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"machine: {platform.machine()}, {cores} cores ({cpu}), "
            f"{psutil.virtual_memory().total / GB:.0f} GiB, Python {platform.python_version()}, "
            f"{', '.join(versions)}; load average {load}; {datetime.date.today().isoformat()}")


def fmt_gb(n: float) -> str:
    return f"{n / GB:.2f} GB"


def fmt_mb(n: float) -> str:
    return f"{n / MB:.0f} MB" if n >= 10 * MB else f"{n / MB:.1f} MB"


def side_for(megapixels: float, multiple: int) -> int:
    """Square side (a multiple of ``multiple``) of about ``megapixels`` * 2**20 pixels."""
    return max(multiple, int(round(math.sqrt(megapixels * 2**20) / multiple)) * multiple)


def size_label(height: int, width: int) -> str:
    px = height * width
    amount = f"{px / 1e9:.2f} GP" if px >= 1e9 else f"{px / 1e6:.0f} MP"
    return f"{width}×{height} ({amount})" if height != width else f"{width}² ({amount})"


# --------------------------------------------------------------------------- bare pass


def bare_pass(path: pathlib.Path, *, threads: int, series: int = 0, level: int = 0) -> dict[str, Any]:
    """Read and decode every segment of one TIFF level, on ``threads`` threads.

    The fastest honest pass tifffile + imagecodecs give without holding the
    image: the segment table is parsed once, each thread reads its tile rows
    with ``os.pread`` (no shared file position, no lock) and decodes each
    segment with the page's own decoder (``TiffPage.decode``: imagecodecs'
    JPEG with the JPEGTables, or deflate + predictor...), into pixels that are
    then dropped.  Returns seconds, pixels and a checksum of the decoded data.
    """
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.series[series].levels[level].keyframe
        offsets = [int(o) for o in page.dataoffsets]
        counts = [int(c) for c in page.databytecounts]
        decode = page.decode
        tables = page.jpegtables
        pixels = int(page.imagelength) * int(page.imagewidth)
        if page.is_tiled:
            per_row = -(-int(page.imagewidth) // int(page.tilewidth))
        else:
            per_row = 1
        nrows = -(-len(offsets) // per_row)
        kwargs = {"jpegtables": tables} if tables is not None else {}
        if page.jpegheader is not None:
            kwargs["jpegheader"] = page.jpegheader
        fd = os.open(path, os.O_RDONLY)
        try:

            def row(r: int) -> int:
                acc = 0
                for i in range(r * per_row, min((r + 1) * per_row, len(offsets))):
                    if counts[i] == 0:
                        continue
                    data = os.pread(fd, counts[i], offsets[i])
                    seg, _, _ = decode(data, i, **kwargs)
                    acc += int(seg.flat[-1])  # touch the decoded pixels
                return acc

            t0 = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                checksum = sum(pool.map(row, range(nrows)))
            seconds = time.perf_counter() - t0
        finally:
            os.close(fd)
    return {"seconds": seconds, "pixels": pixels, "segments": len(offsets), "checksum": checksum,
            "bytes": sum(counts)}


def measure_bare(path: pathlib.Path, *, threads: int, repeat: int) -> Run:
    """:func:`bare_pass` ``repeat`` times (after one untimed warm pass): median time, peak RSS."""
    bare_pass(path, threads=threads)  # page cache and decoder warm, like the runs that follow
    runs = []
    for _ in range(repeat):
        with TreeRss() as rss:
            info = bare_pass(path, threads=threads)
        runs.append(Run(info["seconds"], rss.peak, notes=info))
    return summarise(runs)


# --------------------------------------------------------------------------- real photos


def _photo_files() -> list[tuple[str, pathlib.Path]]:
    import matplotlib.cbook

    files = [("grace_hopper.jpg", pathlib.Path(matplotlib.cbook.get_sample_data(
        "grace_hopper.jpg", asfileobj=False)))]
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        images = pathlib.Path(next(iter(spec.submodule_search_locations))) / "datasets" / "images"
        for name in ("china.jpg", "flower.jpg"):
            if (images / name).exists():
                files.append((name, images / name))
    return files


@lru_cache(maxsize=1)
def real_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """The real photographs the dependencies ship, as float32 (H, W, 3) in [0, 255]."""
    from PIL import Image

    out = []
    for name, path in _photo_files():
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
        arr.setflags(write=False)
        out.append((name, arr))
    logger.info("photos: %s", ", ".join(f"{n} {a.shape[1]}x{a.shape[0]}" for n, a in out))
    return tuple(out)


def _mirror(coord: np.ndarray, n: int) -> np.ndarray:
    """Fold coordinates into ``[0, n - 1]`` by mirror repetition."""
    period = 2 * (n - 1)
    t = np.mod(coord, period)
    return np.where(t > n - 1, period - t, t)


@dataclasses.dataclass(frozen=True)
class Cell:
    """How one cell of the mosaic shows its photo."""

    photo: int
    scale: float                     # enlargement factor
    offset: tuple[float, float]      # photo (row, col) at the cell's top-left corner
    flip: tuple[int, int]            # +1 / -1 per axis
    transpose: bool
    matrix: np.ndarray               # (3, 3) colour mix
    bias: np.ndarray                 # (3,) added after the mix


class Mosaic:
    """A canvas of cells, each a real photo seen its own way (see the module docstring).

    Parameters
    ----------
    shape : tuple of int (H, W)
        Canvas size.
    cell : int, default=2048
        Cell edge in pixels; windows aligned to a divisor of it fall in one cell.
    seed : int, default=0
    scale : tuple of float, default=(1.5, 5.0)
        Range of the photos' enlargement factors.
    """

    def __init__(self, shape: tuple[int, int], *, cell: int = 2048, seed: int = 0,
                 scale: tuple[float, float] = (1.5, 5.0)) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.cell = int(cell)
        self.seed = int(seed)
        self.scale = scale
        self.photos = [a for _, a in real_photos()]
        self._cells: dict[tuple[int, int], Cell] = {}
        self._lock = threading.Lock()

    def cell_at(self, cy: int, cx: int) -> Cell:
        with self._lock:
            found = self._cells.get((cy, cx))
        if found is not None:
            return found
        rng = np.random.default_rng([self.seed, 7, cy, cx])
        k = int(rng.integers(len(self.photos)))
        ph, pw = self.photos[k].shape[:2]
        mix = np.eye(3) * rng.uniform(0.8, 1.2, 3) + rng.normal(0.0, 0.08, (3, 3))
        made = Cell(
            photo=k,
            scale=float(rng.uniform(*self.scale)),
            offset=(float(rng.uniform(0, ph)), float(rng.uniform(0, pw))),
            flip=(int(rng.choice([-1, 1])), int(rng.choice([-1, 1]))),
            transpose=bool(rng.integers(2)),
            matrix=mix.astype(np.float32),
            bias=rng.uniform(-18.0, 18.0, 3).astype(np.float32),
        )
        with self._lock:
            self._cells[(cy, cx)] = made
        return made

    def render(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The window ``[y0:y1, x0:x1]`` as float32 RGB, about [0, 255], no noise."""
        out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.float32)
        c = self.cell
        for cy in range(y0 // c, (y1 - 1) // c + 1):
            ya, yb = max(y0, cy * c), min(y1, (cy + 1) * c)
            for cx in range(x0 // c, (x1 - 1) // c + 1):
                xa, xb = max(x0, cx * c), min(x1, (cx + 1) * c)
                out[ya - y0:yb - y0, xa - x0:xb - x0] = self._render_cell(
                    self.cell_at(cy, cx), ya - cy * c, yb - cy * c, xa - cx * c, xb - cx * c)
        # slow colour drift across the whole canvas (uneven illumination / staining)
        h, w = self.shape
        ay = 2 * np.pi * np.arange(y0, y1, dtype=np.float32) / h
        ax = 2 * np.pi * np.arange(x0, x1, dtype=np.float32) / w
        sy, cy_ = np.sin(ay)[:, None], np.cos(ay)[:, None]
        for ch in range(3):  # sin(a + b) = sin a cos b + cos a sin b: two outer products
            bx = 1.3 * ax + 2.1 * ch
            out[..., ch] *= 1.0 + 0.08 * (sy * np.cos(bx)[None, :] + cy_ * np.sin(bx)[None, :])
        return out

    def _render_cell(self, cell: Cell, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if cell.transpose:
            return self._render_cell(dataclasses.replace(cell, transpose=False),
                                     x0, x1, y0, y1).transpose(1, 0, 2)
        photo = self.photos[cell.photo]
        ph, pw = photo.shape[:2]
        u = _mirror(cell.offset[0] + cell.flip[0] * np.arange(y0, y1) / cell.scale, ph)
        v = _mirror(cell.offset[1] + cell.flip[1] * np.arange(x0, x1) / cell.scale, pw)
        i0 = np.minimum(np.floor(u).astype(np.intp), ph - 2)
        j0 = np.minimum(np.floor(v).astype(np.intp), pw - 2)
        wy = (u - i0).astype(np.float32)[:, None, None]
        wx = (v - j0).astype(np.float32)[None, :, None]
        r0, r1 = photo[i0], photo[i0 + 1]
        top = r0[:, j0] * (1 - wx) + r0[:, j0 + 1] * wx
        bottom = r1[:, j0] * (1 - wx) + r1[:, j0 + 1] * wx
        rgb = top * (1 - wy) + bottom * wy
        rgb = rgb @ cell.matrix.T
        rgb += cell.bias
        return rgb


# --------------------------------------------------------------------------- tiles


def tile_windows(height: int, width: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every tile, row-major, clipped to the image."""
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            yield y0, min(y0 + tile, height), x0, min(x0 + tile, width)


def pad_tile(block: np.ndarray, tile: int) -> np.ndarray:
    """``block`` padded with its edge values to a full ``tile`` x ``tile`` segment."""
    h, w = block.shape[:2]
    if (h, w) == (tile, tile):
        return np.ascontiguousarray(block)
    return np.pad(block, ((0, tile - h), (0, tile - w)) + ((0, 0),) * (block.ndim - 2), mode="edge")


def ordered_map(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterator[Any],
                ahead: int) -> Iterator[Any]:
    """``pool.map`` over an iterator, at most ``ahead`` items in flight (bounded memory)."""
    pending: collections.deque[Any] = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def box_down(block: np.ndarray, f: int) -> np.ndarray:
    """Box-filter integer ``block`` (H, W, C) by ``f`` in both axes (edges cropped), rounded."""
    h, w, c = block.shape
    h, w = h // f * f, w // f * f
    sums = block[:h, :w].reshape(h // f, f, w // f, f, c).sum(axis=(1, 3), dtype=np.uint32)
    return ((sums + f * f // 2) // (f * f)).astype(block.dtype)


def file_size(path: pathlib.Path) -> int:
    return path.stat().st_size if path.exists() else 0


@contextlib.contextmanager
def building(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A temporary name next to ``path``, renamed to it when the block succeeds."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def setup_logging(verbose: int) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    # progress of the builds and runs; -vv also echoes the CLI's own log
    logging.getLogger("bench").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    if verbose < 2:
        for name in ("distributed", "bokeh", "tornado", "numba", "rasterio", "PIL"):
            logging.getLogger(name).setLevel(logging.WARNING)


def add_common_arguments(parser: Any, *, what: str, default_mp: int, side: int, default_runs: str,
                         pass_name: str) -> None:
    """The options both real-file benchmarks take (size, cache, repeats, runs, targets)."""
    import tempfile

    parser.add_argument("--megapixels", type=float, default=default_mp,
                        help=f"{what} size in 2**20 px (default {default_mp}: {side} x {side})")
    parser.add_argument("--workdir", type=pathlib.Path,
                        default=pathlib.Path(tempfile.gettempdir()) / "bigquant-bench-realfiles",
                        help=f"where the {what} is built and cached (default: a folder in the temp dir)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement (median)")
    parser.add_argument("-k", type=int, default=16, help="colours (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=default_runs,
                        help="bigquant runs: cli (subprocess, its own threads), threads (in-process)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"threads of the build and the {pass_name} (default: cores)")
    parser.add_argument("--rebuild", action="store_true", help=f"rebuild the {what} even if cached")
    parser.add_argument("--clean", action="store_true", help=f"delete the {what} at the end")
    parser.add_argument("--max-ratio", type=float, default=2.5)
    parser.add_argument("--max-gb", type=float, default=1.5)
    parser.add_argument("-v", "--verbose", action="count", default=0)


def parse_common(parser: Any, argv: list[str] | None) -> tuple[Any, list[str], int]:
    """Parsed arguments, the bigquant runs asked for, and the threads to use."""
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    runs = [r for r in args.runs.split(",") if r]
    if unknown := set(runs) - {"cli", "threads"}:
        parser.error(f"--runs: unknown {sorted(unknown)}")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 1
    return args, runs, args.threads or cores
