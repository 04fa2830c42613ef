"""16-bit and multi-band data: bare read pass vs quantize with the grid strategy.

For each size (megapixels, 2**20 px) and kind it builds an uncompressed tiled
BigTIFF (512 px tiles) from a real photograph (matplotlib's ``grace_hopper.jpg``,
mirrored, enlarged, colour drift: :mod:`bigquant.io.sample`), taken to 16 bits
with a deterministic sub-8-bit jitter (every 16-bit level is used; nothing random
between runs):

- ``uint16 RGB``: the photo x 257 plus a jitter in [-128, 128];
- ``uint16 4-band``: the same plus a fourth band (0.6 R + 0.4 G, its own jitter);
- ``float32 RGB``: the uint16 RGB values / 65535.

Sizes above the smallest are that image repeated (4 x 4 for 1024 MP over 64 MP):
rendering a gigapixel photo takes longer than the benchmark.

Then, on a LocalCluster (2 single-thread worker processes by default), it
measures a bare dask read pass of the file (same chunks as quantize: every
block summed; one warm-up pass, then the median of ``--reads``; a quantize of a
1024 x 1024 crop first loads the kernels of the dtype in every worker), ``quantize(k=16)`` with ``strategy="grid"`` to a zlib palette
BigTIFF, and (``--pixels-up-to``, default 100 MP) the same with
``strategy="pixels"`` from the same seed, sampling the peak RSS of the whole
process tree (client + scheduler + workers) every 0.2 s.  It checks the grid
result is a Lloyd fixed point of the pixels (one more exact assignment pass with
the final centres: labels changed, and the centre shift against ``tol``).
Prints a markdown table.

    python bench/bench_depths.py --sizes 64,1024 --dir /tmp/bq-depths --keep

Images are kept in ``--dir`` with ``--keep`` and reused by the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_gigapixel import measured as _measured  # noqa: E402  (sampled RSS of the process tree)


def _tree_cpu() -> float:
    """CPU seconds (user + system) of this process and its descendants (the cluster's processes)."""
    import contextlib

    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for p in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(p.cpu_times()[:2])
    return total


@contextlib.contextmanager
def measured():
    """Wall seconds, peak RSS and CPU seconds of the process tree (the workers live throughout)."""
    c0 = _tree_cpu()
    with _measured() as out:
        yield out
    out["cpu"] = _tree_cpu() - c0

KINDS = {"u16rgb": ("uint16 RGB", np.uint16, 3), "u16x4": ("uint16 4-band", np.uint16, 4),
         "f32rgb": ("float32 RGB", np.float32, 3)}


def render(y0: int, y1: int, x0: int, x1: int, shape: tuple[int, int], kind: str) -> np.ndarray:
    """One window of the sample image of ``kind`` (a pure function of its position)."""
    from bigquant.io.sample import make_sample_image  # noqa: F401  (the photo module)
    from bigquant.io import sample

    rgb8 = sample._render(y0, y1, x0, x1, shape, 0).astype(np.float32)
    rng = np.random.default_rng([7, y0, x0])
    jitter = rng.integers(-128, 129, size=rgb8.shape, dtype=np.int16)
    u16 = np.clip(rgb8 * 257.0 + jitter, 0, 65535)
    if kind == "u16x4":
        nir = 0.6 * u16[..., 0] + 0.4 * u16[..., 1] + rng.integers(-300, 301, size=u16.shape[:2])
        u16 = np.concatenate([u16, np.clip(nir, 0, 65535)[..., None]], axis=-1)
    u16 = np.rint(u16).astype(np.uint16)
    if kind == "f32rgb":
        return (u16 / np.float32(65535)).astype(np.float32)
    return u16


def _derive(u16: np.ndarray, kind: str, y0: int, x0: int) -> np.ndarray:
    """The tile of ``kind`` from the uint16 RGB tile at (y0, x0) (what :func:`render` gives)."""
    if kind == "f32rgb":
        return (u16 / np.float32(65535)).astype(np.float32)
    rng = np.random.default_rng([7, y0, x0])
    rng.integers(-128, 129, size=u16.shape, dtype=np.int16)  # the RGB jitter's draws, as in render
    nir = 0.6 * u16[..., 0] + 0.4 * u16[..., 1] + rng.integers(-300, 301, size=u16.shape[:2])
    return np.concatenate([u16, np.rint(np.clip(nir, 0, 65535)).astype(np.uint16)[..., None]], axis=-1)


def build(path: pathlib.Path, side: int, kind: str, tile: int = 512) -> None:
    """Write the image of ``kind`` (side x side) as an uncompressed tiled BigTIFF.

    4-band and float images are derived tile by tile from the uint16 RGB one
    when it exists, and an image is the smaller one of its kind repeated when
    that exists (rendering the photo is the slow part).
    """
    from concurrent.futures import ThreadPoolExecutor

    import tifffile

    _, dtype, bands = KINDS[kind]
    shape = (side, side)
    base = path.with_name(f"u16rgb_{side}.tif")
    small = [p for p in sorted(path.parent.glob(f"{kind}_*.tif"))
             if int(p.stem.split("_")[1]) < side and side % int(p.stem.split("_")[1]) == 0]

    def tiles():
        if small:
            # a smaller image of the same kind, repeated (rendering gigapixels takes long)
            import tifffile as tf

            img = tf.imread(small[-1])
            s = img.shape[0]
            for y0 in range(0, side, tile):
                for x0 in range(0, side, tile):
                    yield img[y0 % s:y0 % s + tile, x0 % s:x0 % s + tile]
            return
        if kind != "u16rgb" and base.exists():
            from bigquant import read_image

            data = read_image(base).data
            for y0 in range(0, side, tile):
                band = data[y0:min(y0 + tile, side)].compute(scheduler="threads")
                for x0 in range(0, side, tile):
                    yield _derive(band[:, x0:x0 + tile], kind, y0, x0)
            return
        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            for y0 in range(0, side, tile):
                wins = [(y0, min(y0 + tile, side), x0, min(x0 + tile, side)) for x0 in range(0, side, tile)]
                yield from pool.map(lambda w: render(*w, shape, kind), wins)

    tmp = path.with_name(path.name + ".tmp")
    tifffile.imwrite(tmp, tiles(), shape=(side, side, bands), dtype=dtype, tile=(tile, tile),
                     photometric="rgb", extrasamples=[0] if bands == 4 else None,
                     compression=None, bigtiff=True, metadata=None, buffersize=64 * 2**20)
    os.replace(tmp, path)


def _block_sum(block: np.ndarray) -> np.ndarray:
    return np.array([[[float(block.sum(dtype=np.float64))]]])


def bare_read(path: pathlib.Path) -> float:
    """Read every block of the file once (the chunks quantize reads) and sum it."""
    from bigquant import read_image

    data = read_image(path).data
    return float(data.map_blocks(_block_sum, dtype=np.float64, chunks=(1, 1, 1)).sum().compute())


def fixed_point_check(path: pathlib.Path, model, client) -> tuple[int, float, float]:
    """(labels changed, centre shift, tol) of one more exact pixel pass with the final centres."""
    from bigquant import read_image
    from bigquant.cluster.grid import check_fixed_point

    data = read_image(path).data
    with client.as_current():
        return check_fixed_point(data, model)


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    import distributed

    from bigquant import quantize
    from bigquant.cluster.allocator import release_freed_memory, tune_allocator

    tune_allocator()
    workdir = pathlib.Path(args.dir) if args.dir else pathlib.Path(tempfile.mkdtemp(prefix="bq-depths-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, memory_limit=args.memory_limit)
    client = distributed.Client(cluster)
    try:
        for mp in args.sizes:
            side = int(round(math.sqrt(mp * 2**20) / 512)) * 512
            for kind in args.kinds:
                src = workdir / f"{kind}_{side}.tif"
                if not src.exists():
                    t0 = time.perf_counter()
                    build(src, side, kind)
                    print(f"# built {src.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
                if args.build_only:
                    continue
                row: dict[str, object] = {"kind": KINDS[kind][0], "mp": side * side / 1e6}
                reads, cpus = [], []
                with client.as_current():
                    bare_read(src)  # warm: workers started, file in the page cache when it fits
                    for _ in range(args.reads):
                        with measured() as m:
                            bare_read(src)
                        reads.append(m["seconds"])
                        cpus.append(m["cpu"])
                row["read_s"], row["read_cpu"] = float(np.median(reads)), float(np.median(cpus))
                # warm: every worker loads (or compiles) this dtype's kernels before the timing
                import tifffile

                crop = tifffile.imread(src, selection=(slice(0, 1024), slice(0, 1024)))
                with client.as_current():
                    quantize(crop, workdir / "warm.tif", 16, strategy="grid", client=client, overwrite=True)
                strategies = ["grid"] + (["pixels"] if mp <= args.pixels_up_to else [])
                for strategy in strategies:
                    dst = workdir / f"q_{kind}_{side}_{strategy}.tif"
                    with measured() as m:
                        model = quantize(src, dst, 16, strategy=strategy, client=client, random_state=0,
                                         overwrite=True)
                    row[f"{strategy}_s"], row[f"{strategy}_gb"] = m["seconds"], m["peak_gb"]
                    row[f"{strategy}_cpu"] = m["cpu"]
                    row[f"{strategy}_sse"] = float(model.inertia_)
                    row[f"{strategy}_iter"] = int(model.n_iter_)
                    print(f"# {kind} {mp} MP {strategy}: {m['seconds']:.1f} s, {m['peak_gb']:.2f} GB, "
                          f"{m['cpu']:.1f} CPU s, SSE {model.inertia_:.6g}, passes {model.n_iter_}, "
                          f"read {row['read_s']:.1f} s / {row['read_cpu']:.1f} CPU s", file=sys.stderr, flush=True)
                    if strategy == "grid":
                        row["changed"], row["shift"], row["tol"] = fixed_point_check(src, model, client)
                        print(f"# {kind} {mp} MP grid: one more Lloyd step changes {row['changed']} labels, "
                              f"shift / tol {row['shift'] / row['tol']:.3g}", file=sys.stderr, flush=True)
                    dst.unlink()
                    del model
                rows.append(row)
                if not args.keep:
                    src.unlink()
                client.run(lambda: __import__("gc").collect())
                release_freed_memory()
    finally:
        client.close()
        cluster.close()
    return rows


def table(rows: list[dict[str, object]], cluster: str) -> str:
    head = ["data", "MP", "bare read s (CPU s)", "grid s (CPU s)", "x read wall (CPU)", "grid peak GB",
            "grid pixel passes", "pixels s (CPU s)", "x read wall (CPU)", "SSE grid / pixels",
            "one more step: labels changed", "shift / tol"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        px = "pixels_s" in r
        cells = [str(r["kind"]), f"{r['mp']:.0f}", f"{r['read_s']:.1f} ({r['read_cpu']:.1f})",
                 f"{r['grid_s']:.1f} ({r['grid_cpu']:.1f})",
                 f"{r['grid_s'] / r['read_s']:.1f} ({r['grid_cpu'] / r['read_cpu']:.1f})", f"{r['grid_gb']:.2f}",
                 str(r["grid_iter"]),
                 f"{r['pixels_s']:.1f} ({r['pixels_cpu']:.1f})" if px else "not run",
                 f"{r['pixels_s'] / r['read_s']:.1f} ({r['pixels_cpu'] / r['read_cpu']:.1f})" if px else "",
                 f"{r['grid_sse'] / r['pixels_sse']:.5f}" if px else "",
                 f"{r['changed']} of {int(r['mp'] * 1e6)}", f"{r['shift'] / r['tol']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\ncluster: {cluster}; k=16, random_state=0, uncompressed 512 px tiled BigTIFF in, "
                 "zlib palette BigTIFF out; peak RSS = client + scheduler + workers, sampled every 0.2 s; "
                 "CPU s = user + system of the whole process tree")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,1024", help="image sizes in megapixels (2**20 px), comma separated")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma separated, of {', '.join(KINDS)}")
    parser.add_argument("--pixels-up-to", type=float, default=100,
                        help="run the pixel strategy too up to this many megapixels")
    parser.add_argument("--reads", type=int, default=3, help="bare read passes timed (median)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="6GiB")
    parser.add_argument("--dir", default=None, help="where the images are written (and kept with --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the images for the next run")
    parser.add_argument("--build-only", action="store_true", help="only build the images")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.kinds = [k for k in args.kinds.split(",") if k]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    rows = run(args)
    if rows:
        print(table(rows, f"processes x{args.workers}"))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
