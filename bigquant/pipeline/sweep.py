"""The k-sweep runner: fit a palette for every k on one shared colour histogram.

:func:`sweep` reads the image once into an exact colour histogram
(:func:`bigquant.colour_histogram`) and fits every k on the distinct colours
weighted by their counts, concurrently: on the Dask cluster when a client is
given or active (the histogram is scattered to the workers once, then one task
per k), else on a thread pool (the kernels release the GIL). Each finished k is
appended to a CSV file at once, so an interrupted sweep resumes from it.

Each k is fitted by :func:`fit_histogram`: exactly the fit and the palette
of :func:`bigquant.quantize` for that k and ``random_state``
(:meth:`bigquant.KMeans.fit_histogram`, then :meth:`bigquant.KMeans.palette`:
the centres rounded to integer colours, re-assigned and re-rounded on the
exact histogram while the error drops), so the cost a sweep reports for k is
the squared error of the file ``quantize`` writes with that k.

``cost`` is the walkthrough's measure of a quantized image: the sum over every
pixel of the squared distance to its colour in the uint8 (integer) palette;
``inertia`` is k-means' own objective for the float centres.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import pathlib
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from bigquant import kernels, tasks
from bigquant.cluster.allocator import tune_if_asked
from bigquant.cluster.grid import grid_bits
from bigquant.cluster.histogram import ColourHistogram, colour_histogram, histogram_bits
from bigquant.cluster.scheduler import on_client
from bigquant.cluster.search import prepare_search, uses_coarse_search
from bigquant.errors import ConvergenceWarning, FewColoursWarning, InvalidInputError, InvalidParameterError
from bigquant.io.objects import URLPath, output_location, read_url_bytes, same_location, url_exists, write_url_bytes
from bigquant.pipeline.runtime import active_client, phase
from bigquant.pipeline import provenance
from bigquant.pipeline.request import (
    DEFAULT_SEED,
    ReadOptions,
    apply_signature,
    build_request,
    check_not_inputs,
    check_request,
)
from bigquant.pipeline.space import sweep_in_space

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "sweep", "SweepResult", "SweepRow", "HistogramFit", "fit_histogram", "parse_ks", "elbow",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- one k


@dataclass
class HistogramFit:
    """A palette of ``k`` colours fitted on a colour histogram.

    Attributes
    ----------
    centers : ndarray of shape (k, n_channels)
        Lloyd's centres (float64), the weighted means of their clusters.
    palette : ndarray of shape (k, n_channels)
        The palette the quantized image is written with
        (:meth:`bigquant.KMeans.palette`): integer colours in the histogram's
        dtype, the centres for float data.
    inertia : float
        Weighted sum of squared distances of the colours to their nearest centre.
    cost : int or float
        Weighted sum of squared distances of the colours to their nearest palette
        colour: the squared error of the quantized image.
    n_iter : int
        Lloyd iterations of the kept run.
    converged : bool
        Whether the kept run converged within ``max_iter``.
    """

    centers: np.ndarray
    palette: np.ndarray
    inertia: float
    cost: int | float
    n_iter: int
    converged: bool


def fit_histogram(
    histogram: ColourHistogram | tuple[np.ndarray, np.ndarray],
    n_clusters: int,
    *,
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: int | np.random.Generator | None = None,
) -> HistogramFit:
    """Fit a palette of ``n_clusters`` colours on a colour histogram (exact weighted k-means).

    The fit is :meth:`bigquant.KMeans.fit_histogram` with the same parameters
    and the palette :meth:`bigquant.KMeans.palette`: for the same k and
    ``random_state``, exactly the palette :func:`bigquant.quantize` writes,
    and ``cost`` the squared error of the image it writes.

    Parameters
    ----------
    histogram : ColourHistogram or tuple (colours, counts)
        Distinct colours of shape (n_colours, n_channels) and their pixel counts.
    n_clusters : int
        Palette size k.
    n_init : int, default=1
        Number of initialisations (as :class:`bigquant.KMeans`).
    max_iter : int, default=300
        Maximum Lloyd iterations per run.
    tol : float, default=1e-4
        Relative tolerance (as :class:`bigquant.KMeans`).
    random_state : int, numpy Generator or None, default=None
        Seed of the initialisations (as :class:`bigquant.KMeans`).

    Returns
    -------
    HistogramFit

    Examples
    --------
    >>> import numpy as np
    >>> colours = np.array([[0, 0, 0], [0, 0, 2], [250, 250, 250]], dtype=np.uint8)
    >>> fit = fit_histogram((colours, np.array([3, 1, 4])), 2, random_state=0)
    >>> fit.palette[np.argsort(fit.palette[:, 2])].tolist()
    [[0, 0, 0], [250, 250, 250]]
    >>> fit.cost
    4
    """
    from bigquant.cluster.kmeans import KMeans

    hist = _as_histogram(histogram)
    if hist is None:
        raise InvalidInputError(
            "fit_histogram needs unsigned integer colours of at most 24 bits per pixel (e.g. uint8 RGB)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FewColoursWarning)
        model = KMeans(n_clusters, n_init=n_init, max_iter=max_iter, tol=tol,
                       random_state=random_state).fit_histogram(hist)
    palette, cost = model.palette()
    if len(palette) < int(n_clusters):  # fewer distinct colours than k: every colour its own entry
        palette = np.concatenate([palette, np.repeat(palette[-1:], int(n_clusters) - len(palette), axis=0)])
    converged = model.n_iter_ < int(max_iter)
    if not converged:
        logger.warning("k=%d: Lloyd's iteration did not converge within max_iter=%d", n_clusters, max_iter)
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    return HistogramFit(centers, palette, float(model.inertia_), int(round(cost)), int(model.n_iter_), converged)


def _as_histogram(histogram: ColourHistogram | tuple[np.ndarray, np.ndarray]) -> ColourHistogram | None:
    """A :class:`ColourHistogram` of (colours, counts) of histogrammable dtype, else ``None``."""
    if isinstance(histogram, ColourHistogram):
        return histogram
    colours, counts = (np.asarray(a) for a in histogram)
    bits = histogram_bits(colours.dtype, colours.shape[-1]) if colours.ndim == 2 else None
    if bits is None:
        return None
    codes = kernels.encode_colours(np.ascontiguousarray(colours), bits)
    order = np.argsort(codes, kind="stable")
    return ColourHistogram(np.ascontiguousarray(colours[order]), counts[order].astype(np.int64), codes[order], bits)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SweepRow:
    """One k of a sweep (one CSV row)."""

    k: int
    cost: float
    inertia: float
    psnr: float
    n_iter: int
    seconds: float
    palette: str = ""
    #: what the sweep is of (:mod:`bigquant.pipeline.provenance`), as JSON
    provenance: str = ""

    def palette_array(self, n_channels: int | None = None) -> np.ndarray:
        """The palette as an integer array of shape (k, n_channels)."""
        rows = [[float(v) for v in colour.split()] for colour in self.palette.split(";") if colour]
        arr = np.array(rows, dtype=np.float64)
        if n_channels is not None:
            arr = arr.reshape(-1, n_channels)
        return arr.astype(np.int64) if np.all(arr == np.round(arr)) else arr


_COLUMNS = [f.name for f in fields(SweepRow)]


def _format_palette(palette: np.ndarray) -> str:
    def fmt(v: Any) -> str:
        return str(int(v)) if float(v).is_integer() else repr(float(v))

    return ";".join(" ".join(fmt(v) for v in colour) for colour in np.asarray(palette))


def elbow(ks: Sequence[float], costs: Sequence[float]) -> int | None:
    """The elbow of a decreasing cost curve (Kneedle: farthest below the chord).

    Parameters
    ----------
    ks : sequence of int
        The k values, increasing.
    costs : sequence of float
        The cost for each k.

    Returns
    -------
    int or None
        The suggested k, or ``None`` with fewer than three points.

    Examples
    --------
    >>> elbow([1, 2, 3, 4, 5, 6], [100, 40, 20, 15, 12, 10])
    3
    """
    x = np.asarray(ks, dtype=np.float64)
    y = np.asarray(costs, dtype=np.float64)
    if x.shape[0] < 3:
        return None
    order = np.argsort(x)
    x, y = x[order], y[order]
    xr = x[-1] - x[0]
    yr = y.max() - y.min()
    if xr <= 0 or yr <= 0:
        return int(x[0])
    xn = (x - x[0]) / xr
    yn = (y - y.min()) / yr
    chord = yn[0] + (yn[-1] - yn[0]) * xn
    return int(x[int(np.argmax(chord - yn))])


@dataclass
class SweepResult:
    """The results of a k sweep: one :class:`SweepRow` per k, sorted by k.

    Attributes
    ----------
    rows : list of SweepRow
    n_pixels : int
        Pixels of the image.
    n_colours : int or None
        Distinct colours (histogram strategy).
    n_channels : int
    strategy : str
        ``"histogram"`` or the per-pixel strategy used.
    seconds : float
        Wall-clock time of the whole sweep (histogram included).
    resumed : list of int
        The ks read back from a previous run's CSV instead of fitted.
    """

    rows: list[SweepRow]
    n_pixels: int
    n_colours: int | None
    n_channels: int
    strategy: str
    seconds: float = 0.0
    resumed: list[int] = field(default_factory=list)

    @property
    def ks(self) -> list[int]:
        """The k values."""
        return [r.k for r in self.rows]

    @property
    def costs(self) -> list[float]:
        """The cost of each k."""
        return [r.cost for r in self.rows]

    @property
    def times(self) -> list[float]:
        """Seconds spent fitting each k."""
        return [r.seconds for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> SweepRow:
        for row in self.rows:
            if row.k == k:
                return row
        raise KeyError(k)

    def palette(self, k: int) -> np.ndarray:
        """The palette fitted for ``k``, of shape (k, n_channels)."""
        return self[k].palette_array(self.n_channels)

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as dictionaries (without the palettes)."""
        return [{k: v for k, v in asdict(r).items() if k not in ("palette", "provenance")} for r in self.rows]

    def to_frame(self) -> Any:
        """The rows as a pandas DataFrame indexed by k (needs pandas)."""
        import pandas as pd

        return pd.DataFrame.from_records(self.to_records()).set_index("k")

    def to_csv(self, path: str | os.PathLike[str]) -> pathlib.Path | URLPath:
        """Write every row (with its palette) to a CSV file (or an object at a URL); returns where."""
        path = output_location(path)
        text = _csv_text(self.rows, header=True)
        if isinstance(path, URLPath):
            write_url_bytes(path, text.encode())
            return path
        with open(path, "w", newline="") as fh:
            fh.write(text)
        return path

    def elbow(self) -> int | None:
        """The suggested k: the elbow of the cost curve (see :func:`elbow`)."""
        return elbow(self.ks, self.costs)

    def plot(self, figsize: tuple[float, float] = (12, 4)) -> Figure:
        """Cost and fit time against k, as the walkthrough's ``plot_k_metrics``.

        The suggested k (:meth:`elbow`) is marked on the cost axis.
        """
        from bigquant.plotting import plot_k_metrics

        fig = plot_k_metrics(self.ks, self.costs, self.times, figsize=figsize)
        k = self.elbow()
        if k is not None and fig.axes:
            ax = fig.axes[0]
            ax.axvline(k, color="tab:red", linestyle="--", linewidth=1)
            ax.annotate(f"elbow k={k}", xy=(k, self[k].cost), xytext=(8, 8), textcoords="offset points",
                        color="tab:red")
        return fig

    def table(self) -> str:
        """The results as a markdown table."""
        lines = ["| k | cost | inertia | PSNR (dB) | iterations | seconds |", "|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r.k} | {r.cost:.6g} | {r.inertia:.6g} | {r.psnr:.2f} | {r.n_iter} | {r.seconds:.3f} |")
        return "\n".join(lines)


def _csv_text(rows: Sequence[SweepRow], *, header: bool) -> str:
    """The CSV lines of ``rows`` (after the header line when ``header``)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=_COLUMNS)
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return buffer.getvalue()


def _exists(location: Any) -> bool:
    """Whether a CSV is at ``location`` (a path or a URL)."""
    where = output_location(location)
    return url_exists(where) if isinstance(where, URLPath) else where.exists()


def read_rows(path: str | os.PathLike[str]) -> list[SweepRow]:
    """Rows of a sweep CSV (as written by :func:`sweep` or :meth:`SweepResult.to_csv`), from a file or a URL."""
    rows = []
    where = output_location(path)
    if isinstance(where, URLPath):
        text = read_url_bytes(where).decode("utf-8")
    else:
        with open(where, newline="") as fh:
            text = fh.read()
    if not text.endswith("\n"):  # a run killed while writing a row: its last line is cut short
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(text.splitlines(keepends=True))
    missing = set(_COLUMNS) - set(reader.fieldnames or ()) - {"provenance"}
    if missing:
        raise InvalidInputError(f"{path}: not a sweep CSV (missing columns {sorted(missing)})")
    for rec in reader:
        try:
            rows.append(SweepRow(int(rec["k"]), float(rec["cost"]), float(rec["inertia"]), float(rec["psnr"]),
                                 int(rec["n_iter"]), float(rec["seconds"]), rec.get("palette") or "",
                                 rec.get("provenance") or ""))
        except (TypeError, ValueError):
            logger.warning("%s: skipping an unreadable row %r", path, rec)
    return rows


# --------------------------------------------------------------------------- sweep


def parse_ks(spec: str | Iterable[int]) -> list[int]:
    """Parse k values: ``"2:64:2"`` (start:stop:step, stop included), ``"4,8,16"`` or ints.

    Examples
    --------
    >>> parse_ks("2:10:4")
    [2, 6, 10]
    >>> parse_ks("16,4,8,4")
    [4, 8, 16]
    """
    if isinstance(spec, str):
        text = spec.strip()
        try:
            if ":" in text:
                parts = [int(p) for p in text.split(":")]
                if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] < 1):
                    raise ValueError
                start, stop = parts[0], parts[1]
                step = parts[2] if len(parts) == 3 else 1
                values = list(range(start, stop + 1, step))
            else:
                values = [int(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise InvalidParameterError(
                f"ks={spec!r} must look like 'start:stop[:step]' or 'k1,k2,...' with integers"
            ) from None
    else:
        try:
            values = [int(v) for v in spec]
        except (TypeError, ValueError):
            raise InvalidParameterError(f"ks={spec!r} must be integers") from None
    if not values:
        raise InvalidParameterError(f"ks={spec!r} gives no k value")
    bad = [v for v in values if v < 1]
    if bad:
        raise InvalidParameterError(f"ks={spec!r}: every k must be >= 1, got {bad[0]}")
    return sorted(set(values))


def _psnr(cost: float, n_values: int, peak: float) -> float:
    if cost <= 0:
        return math.inf
    return 10.0 * math.log10(peak * peak * n_values / cost)


def _fit_task(hist: ColourHistogram, k: int, n_init: int, max_iter: int, tol: float,
              base: int) -> tuple[HistogramFit, float]:
    """One k, run on a worker (or a thread): the fit and its wall time."""
    start = time.perf_counter()
    # the seed of every k is the sweep's: k fits as quantize(..., k, random_state=base) does
    fit = fit_histogram(hist, k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=base)
    return fit, time.perf_counter() - start


def _is_file_set(src: Any) -> bool:
    """A list or tuple of image files (or opened sources): a set sharing one palette."""
    from bigquant.io import ImageSource

    return isinstance(src, (list, tuple)) and bool(src) and all(
        isinstance(s, (str, os.PathLike, ImageSource)) for s in src)


def _load_source(src: Any, mask: Any = None, read: ReadOptions | None = None) -> tuple[Any, Any]:
    """An array (numpy or dask) of shape (..., C) from a path, ImageSource or array, and its mask.

    The mask (see :func:`bigquant.io.mask.resolve_mask`) is None for plain
    arrays of pixels unless given.
    """
    from bigquant.io import ImageSource, read_image
    from bigquant.pipeline.masks import resolve_mask

    read = read or ReadOptions()
    if isinstance(src, (str, os.PathLike)):
        src = read_image(src, chunks=read.chunks, level=read.level, series=read.series)
    valid = None
    if isinstance(src, ImageSource):
        valid = resolve_mask(src, mask, threshold=read.mask_threshold)
    elif mask is not None and mask is not False:
        valid = np.asarray(mask, dtype=bool) if not hasattr(mask, "chunks") else mask
    data = getattr(src, "data", src)
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim not in (2, 3) or 0 in data.shape:
        raise InvalidInputError(f"src of shape {tuple(data.shape)} must be an image (H, W[, C]) or pixels (N, C)")
    return data, valid


class _CsvLog:
    """Appends rows to a CSV file as they come, flushed at once.

    At a URL (an object cannot be appended to) every row rewrites the object
    whole, in one request: it holds every finished row, or the previous ones.
    """

    def __init__(self, path: pathlib.Path | URLPath, keep: list[SweepRow], append: bool):
        self.path = path
        if isinstance(path, URLPath):
            self.text = ""
            if append:  # the rows kept, without a row cut short
                old = read_url_bytes(path).decode("utf-8")
                self.text = old[: old.rfind("\n") + 1]
            else:
                self.text = _csv_text(keep, header=True)
                write_url_bytes(path, self.text.encode())
            return
        if append:  # drop a row cut short by a killed run, so the next row starts on its own line
            with open(path, "rb+") as fh:
                fh.truncate(fh.read().rfind(b"\n") + 1)
        self.fh = open(path, "a" if append else "w", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=_COLUMNS)
        if not append:
            self.writer.writeheader()
            for row in keep:
                self.writer.writerow(asdict(row))
        self.fh.flush()

    def write(self, row: SweepRow) -> None:
        if isinstance(self.path, URLPath):
            self.text += _csv_text([row], header=False)
            write_url_bytes(self.path, self.text.encode())
            return
        self.writer.writerow(asdict(row))
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        if not isinstance(self.path, URLPath):
            self.fh.close()


def _sort_csv(path: pathlib.Path | URLPath) -> None:
    """Rewrite a finished sweep's CSV in k order (one row per k), atomically."""
    by_k = {r.k: r for r in read_rows(path)}
    if isinstance(path, URLPath):  # one request: the object is replaced whole
        write_url_bytes(path, _csv_text([by_k[k] for k in sorted(by_k)], header=True).encode())
        return
    tmp = path.with_name(path.name + ".tmp")
    SweepResult([by_k[k] for k in sorted(by_k)], 0, None, 0, "").to_csv(tmp)
    os.replace(tmp, path)


def sweep(
    src: Any,
    ks: str | Iterable[int],
    *,
    client: Any = None,
    **options: Any,
) -> SweepResult:
    """Fit a palette for every k and tabulate cost, inertia, PSNR, iterations and time.

    Parameters
    ----------
    src : str, path, ImageSource, ColourHistogram, ndarray, dask array or list of files
        The image (a file is read lazily with :func:`bigquant.read_image`), its
        pixels (n_pixels, n_channels), or its colour histogram; a list of
        files (8-bit) is swept on their joint histogram, as
        :func:`bigquant.quantize_many` fits one palette for all of them.
    ks : str or iterable of int
        The k values: ``"2:64:2"`` (stop included), ``"4,8,16"`` or a list.
    strategy : {"auto", "histogram", "pixels", "minibatch"}, default="auto"
        ``"histogram"`` (auto for 8-bit data): one exact colour histogram shared
        by every k, the fits running concurrently; otherwise every k is a
        :class:`bigquant.KMeans` fit of that strategy on the pixels.
    client : distributed.Client or None, default=None
        Where to run; default the active client if any, else local threads.
    n_init : int, default=1
        Initialisations per k (see :func:`fit_histogram`).
    random_state : int or None, default=None
        Seed of every k's fit, as ``KMeans(k, random_state=random_state)``:
        ``quantize(src, dst, k, random_state=random_state)`` writes the
        palette and the cost reported for k, and a resumed sweep fits the same
        palettes as an uninterrupted one.  None: the fixed default seed 0
        (:data:`bigquant.pipeline.request.DEFAULT_SEED`, logged), as
        :func:`bigquant.quantize`; a resumed sweep goes on with the seed its
        CSV records.
    max_iter : int, default=300
    tol : float, default=1e-4
        As :class:`bigquant.KMeans`.
    out : str or path, default=None
        CSV file (or URL) written incrementally: one row per k as soon as it is done;
        its ``provenance`` column records what the sweep is of (inputs by
        path, size and modification time, or a digest; bands, series, level,
        mask, space, strategy and seed: :mod:`bigquant.pipeline.provenance`).
    resume_from : str or path, default=None
        CSV of an earlier (possibly interrupted) sweep of the same image: its
        ks are kept and not fitted again. May be the same file as ``out``.
        A CSV of anything else (another input, mask, space, strategy or seed)
        is refused before a pixel is read, naming the difference; without
        ``random_state`` the sweep goes on with the seed the CSV records.
    overwrite : bool, default=False
        Replace an existing ``out`` (not needed when it is ``resume_from``).
    chunks, level, series
        How a file is read, as in :func:`bigquant.quantize`.
    callback : callable, default=None
        Called with each new :class:`SweepRow` as soon as its k is done
        (in completion order), e.g. to draw progress.

    mask : None, "auto", False, array-like or path, default=None
        Which pixels count (as in :func:`bigquant.quantize`): None, the file's
        own mask (alpha, nodata, mask IFD, NaN); "auto", and a slide's tissue;
        an array or file, and its non-zero pixels; False, every pixel.
    space : {"rgb", "oklab", "lab"}, default="rgb"
        Colour space of the fits (as in :func:`bigquant.quantize`); cost and
        PSNR are still measured on the sRGB palette, inertia in the space.
        A space other than "rgb" needs 8-bit RGB data (the histogram), and
        fits the ks one after the other.

    Returns
    -------
    SweepResult

    Examples
    --------
    >>> import numpy as np
    >>> img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    >>> result = sweep(img, "2:8:2", random_state=0)
    >>> result.ks
    [2, 4, 6, 8]
    >>> bool(result.costs[0] > result.costs[-1])
    True
    """
    start = time.perf_counter()
    tune_if_asked()  # the caller's allocator is theirs: only with BIGQUANT_TUNE_MALLOC=1
    k_values = parse_ks(ks)
    inputs = list(src) if _is_file_set(src) else [src]
    request = check_request(build_request("sweep", inputs, [], options))
    read, fit = request.read, request.fit
    strategy, space, n_init, max_iter, tol = fit.strategy, fit.space, fit.n_init, fit.max_iter, fit.tol
    random_state, mask = fit.random_state, read.mask
    out, resume_from, callback = request.sweep.out, request.sweep.resume_from, request.sweep.callback
    check_not_inputs(request, [mask] if isinstance(mask, (str, os.PathLike)) and mask != "auto" else [])

    previous: dict[int, SweepRow] = {}
    recorded: dict[str, Any] | None = None
    if resume_from is not None and _exists(resume_from):
        previous = {r.k: r for r in read_rows(resume_from)}
        recorded = next((json.loads(r.provenance) for r in previous.values() if r.provenance), None)
    if random_state is None and recorded is not None and isinstance(recorded.get("seed"), int):
        base = int(recorded["seed"])  # a resumed sweep goes on with the seed it was started with
    elif random_state is None:
        base = DEFAULT_SEED  # as quantize: the same sweep twice gives the same palettes
        logger.info("random_state=None: the default seed %d", base)
    elif isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        base = int(random_state)
    else:
        raise InvalidParameterError(f"random_state={random_state!r} must be an int or None")

    def provenance_of(bands: int) -> dict[str, Any]:
        """What this sweep is of; a resumed CSV must be of the same (checked before any pixel is read)."""
        current = provenance.record(inputs, bands=bands, series=read.series, level=read.level, mask=mask,
                                    space=space, strategy=strategy, seed=base, mask_threshold=read.mask_threshold)
        if previous:
            provenance.check_same(str(resume_from), recorded, current)
        return current

    kept: list[SweepRow] = []
    if previous:
        kept = [previous[k] for k in k_values if k in previous]
        logger.info("resuming from %s: %d of %d k values already done", resume_from, len(kept), len(k_values))
    todo = [k for k in k_values if k not in {r.k for r in kept}]

    log: _CsvLog | None = None
    if out is not None:
        out_path = output_location(out)
        append = (
            resume_from is not None
            and _exists(out_path)
            and _exists(resume_from)
            and (same_location(out_path, resume_from) if isinstance(out_path, URLPath)
                 else out_path.resolve() == pathlib.Path(resume_from).resolve())
        )
        log = _CsvLog(out_path, kept, append)

    if client is None:
        client = active_client()
    rows = list(kept)

    stamp = ""

    def record(row: SweepRow) -> None:
        """Keep a finished k: in the results, the CSV and the caller's callback."""
        row = replace(row, provenance=stamp)
        rows.append(row)
        if log is not None:
            log.write(row)
        if callback is not None:
            callback(row)

    try:
        if isinstance(src, ColourHistogram):
            hist: ColourHistogram | None = src
            n_channels = src.colours.shape[1]
            dtype = src.colours.dtype
            stamp = json.dumps(provenance_of(n_channels), sort_keys=True)
        elif _is_file_set(src):
            from bigquant.pipeline.many import joint_histogram, open_sources

            opened, _ = open_sources(list(src), mask=mask, series=read.series, level=read.level,
                                     mask_threshold=read.mask_threshold)
            stamp = json.dumps(provenance_of(int(opened[0].data.shape[-1])), sort_keys=True)
            with _on(client):
                hist, _ = joint_histogram(opened)
            if hist.n_colours == 0:
                raise InvalidInputError("every pixel of every input is masked: nothing to fit")
            n_channels, dtype = hist.colours.shape[1], hist.colours.dtype
        else:
            data, valid = _load_source(src, mask, read)
            n_channels = int(data.shape[-1])
            stamp = json.dumps(provenance_of(n_channels), sort_keys=True)
            dtype = data.dtype
            bits = histogram_bits(dtype, n_channels)
            if strategy == "histogram" and bits is None:
                raise InvalidParameterError(
                    f"strategy='histogram' needs unsigned integer data of at most 24 bits per pixel; "
                    f"got dtype={dtype} with {n_channels} channels: use strategy='pixels'"
                )
            hist = None
            if strategy in ("auto", "histogram") and bits is not None and todo:
                with _on(client), phase(tasks.HISTOGRAM):
                    hist = colour_histogram(data, valid=valid)
                if hist.n_colours == 0:
                    raise InvalidInputError("every pixel is masked (alpha, nodata or mask): nothing to fit")
        peak = float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "ui" else 1.0
        n_colours: int | None
        if not todo:
            n_pixels = hist.n_pixels if hist is not None else int(np.prod(data.shape[:-1]))
            n_colours = hist.n_colours if hist is not None else None
            used = "histogram" if hist is not None or (strategy in ("auto", "histogram") and bits is not None) \
                else (_pixel_strategy(dtype, n_channels) if strategy == "auto" else strategy)
        elif space != "rgb":
            if hist is None or n_channels != 3:
                raise InvalidParameterError(
                    f"space={space!r} in a sweep needs 8-bit RGB data (its colour histogram)"
                )
            n_pixels = hist.n_pixels
            n_colours = hist.n_colours
            used = "histogram"
            for k, cost, inertia, n_iter, seconds, palette in sweep_in_space(
                hist, todo, space, n_init=n_init, max_iter=max_iter, tol=tol,
                seeds={k: base for k in todo},  # as quantize(..., k, space=space, random_state=base)
            ):
                row = SweepRow(k, cost, inertia, _psnr(cost, n_pixels * n_channels, peak), n_iter, seconds,
                               _format_palette(palette))
                logger.info("k=%d (%s): cost %.6g, PSNR %.2f dB, %d iterations, %.3f s", k, space, row.cost,
                            row.psnr, row.n_iter, seconds)
                record(row)
        elif hist is not None:
            n_pixels = hist.n_pixels
            n_colours = hist.n_colours
            used = "histogram"
            for k, fit, seconds in _run_histogram(hist, todo, n_init, max_iter, tol, base, client):
                row = SweepRow(k, float(fit.cost), fit.inertia, _psnr(fit.cost, n_pixels * n_channels, peak),
                               fit.n_iter, seconds, _format_palette(fit.palette))
                logger.info("k=%d: cost %.6g, PSNR %.2f dB, %d iterations, %.3f s", k, row.cost, row.psnr,
                            row.n_iter, seconds)
                record(row)
        else:
            n_pixels = int(np.prod(data.shape[:-1]))
            n_colours = None
            # what quantize's fit takes for these data: the grid where it applies
            used = _pixel_strategy(dtype, n_channels) if strategy in ("auto", "histogram") else strategy
            for k in todo:
                with _on(client):
                    record(_fit_pixels(data, k, used, n_init, max_iter, tol, base, peak, valid))
    finally:
        if log is not None:
            log.close()
    if log is not None:
        _sort_csv(log.path)
    rows.sort(key=lambda r: r.k)
    seconds = time.perf_counter() - start
    logger.info("sweep of %d k values in %.2f s", len(todo), seconds)
    return SweepResult(rows, n_pixels, n_colours, n_channels, used, seconds, [r.k for r in kept])


@contextlib.contextmanager
def _on(client: Any) -> Iterator[None]:
    """Make ``client`` the scheduler of the computes in the block (nothing for None)."""
    with on_client(client):  # context-local: no global dask.config.set(scheduler=client)
        yield


def _run_histogram(hist: ColourHistogram, ks: list[int], n_init: int, max_iter: int, tol: float, base: int,
                   client: Any) -> Iterable[tuple[int, HistogramFit, float]]:
    """Fit every k concurrently; yield (k, fit, seconds) as they finish, largest k started first."""
    if not ks:
        return
    payload = hist.sharing()  # without a pixel index; the fits of threads share its octree
    if uses_coarse_search(payload):
        prepare_search(payload)  # the coarse colour sets, computed once and shipped with it
    order = sorted(ks, reverse=True)  # the slowest first: better packing
    if client is not None:
        from dask.base import tokenize
        from distributed import as_completed as dist_as_completed

        token = tokenize(hist.codes, hist.counts, n_init, max_iter, tol, base)
        with _on(client), phase(tasks.SWEEP):
            [remote] = client.scatter([payload], broadcast=False, hash=False)
            futures = {
                client.submit(_fit_task, remote, k, n_init, max_iter, tol, base,
                              key=f"{tasks.SWEEP}-{k}-{token}", pure=False): k
                for k in order
            }
            try:
                for future in dist_as_completed(futures, loop=client.loop):  # not only the default client
                    fit, seconds = future.result()
                    yield futures[future], fit, seconds
            finally:
                client.cancel(list(futures) + [remote])
        return
    from bigquant.cluster.points import n_threads

    with ThreadPoolExecutor(max(1, min(n_threads(), len(order)))) as pool:
        futures = {pool.submit(_fit_task, payload, k, n_init, max_iter, tol, base): k for k in order}
        try:
            for task in as_completed(futures):
                fit, seconds = task.result()
                yield futures[task], fit, seconds
        finally:
            for task in futures:
                task.cancel()


def _pixel_strategy(dtype: Any, n_channels: int) -> str:
    """The strategy ``auto`` fits data without a colour histogram with (as :class:`bigquant.KMeans` does)."""
    return "grid" if grid_bits(dtype, n_channels) is not None else "pixels"


def _fit_pixels(data: Any, k: int, strategy: str, n_init: int, max_iter: int, tol: float, base: int,
                peak: float, valid: Any = None) -> SweepRow:
    """One k on the pixels with :class:`bigquant.KMeans` (non-histogram strategies).

    The cost and PSNR are measured as :func:`bigquant.quantize` measures the
    file it writes (:func:`bigquant.pipeline.report.quality_pass`: every band,
    masked pixels left out); ``peak`` is not used for float data, whose PSNR
    has the peak 1.0 when every value counted lies in [0, 1] and is NaN
    otherwise (:func:`bigquant.pipeline.report.psnr_peak`).
    """
    import dask.array as da

    from bigquant.cluster.fixed import FixedPalette
    from bigquant.cluster.kmeans import KMeans
    from bigquant.pipeline.report import psnr_peak, quality_pass

    start = time.perf_counter()
    km = KMeans(k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=base, strategy=strategy).fit(
        data, sample_weight=valid)
    seconds = time.perf_counter() - start
    palette, _ = km.palette()
    # the error of the image quantize writes: every pixel to its nearest palette colour
    pixels = da.asarray(data)
    image = pixels if pixels.ndim == 3 else pixels[:, None, :]  # (n_samples, C) pixels: one column
    labels = da.asarray(FixedPalette(palette).fit(pixels).labels_).reshape(image.shape[:2])
    mask = None if valid is None else da.asarray(valid).reshape(image.shape[:2]).rechunk(image.chunks[:2])
    with phase(tasks.COST):
        sums = quality_pass(image, labels, palette, mask, delta_e=False)
    cost, n_pixels = float(sums[0]), int(sums[2])
    if np.dtype(data.dtype).kind == "f":
        peak = psnr_peak(data.dtype, sums[3:5])
    n_values = n_pixels * int(data.shape[-1])
    psnr = math.nan if peak is None else _psnr(cost, n_values, peak)
    row = SweepRow(k, cost, float(km.inertia_), psnr, int(km.n_iter_), seconds, _format_palette(palette))
    logger.info("k=%d: cost %.6g, PSNR %.2f dB, %d iterations, %.3f s", k, row.cost, row.psnr, row.n_iter, seconds)
    return row


apply_signature("sweep", sweep)
