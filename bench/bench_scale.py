"""Scale model: the measured inputs of docs/scale.md, its projection, and seconds per GP here.

Three parts, each printed as a markdown table:

1. **Model inputs** (measured on this machine):
   - per-task scheduler cost: a pass of N trivial tasks (N leaves, tree-summed 8 at a
     time, as bigquant's passes are) on a LocalCluster of 2 single-thread worker
     processes, and on dask's threaded scheduler;
   - tasks per pass for the chunking bigquant chooses
     (:func:`bigquant.io.chunks.aligned_chunks`, 512 px TIFF tiles), counted on the
     real graphs built over a lazy array without running them: the colour count
     (:func:`bigquant.cluster.histogram.histogram_graph`), a Lloyd iteration of the
     pixel strategy (:func:`bigquant.cluster.points.block_tree`, as
     :class:`~bigquant.cluster.points.DaskPoints` builds it) and the write pass
     (one ``bq-write`` task per chunk, :func:`bigquant.io.tiff_write.compute_bands`);
   - bytes a pass moves: the partial histograms of the count pass (every result
     of the count tree but the root, measured on a photo-like sample), a Lloyd
     iteration's partial sums, the lookup table shipped once to each worker
     (zlib-compressed, as it travels), and the encoded tiles sent to the writer.
2. **Projection** for 10 GP and 100 GP on 8, 32 and 128 workers (one core each),
   today's chunking and the adaptive one, with the formula of docs/scale.md.
3. **Seconds per GP and peak memory** of ``quantize(k=16)`` in-process (threads,
   as :func:`bigquant.quantize` runs without a client) on uncompressed tiled
   BigTIFFs made by :func:`bigquant.io.sample.make_sample_tiff`; peak RSS of the
   process tree, sampled every 0.2 s.

    python bench/bench_scale.py --sides 16384                # 0.27 GP only
    python bench/bench_scale.py                              # 0.27 .. 4.3 GP (run alone: ~10 min)
    python bench/bench_scale.py --sides none                 # model inputs and projection only
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import pathlib
import sys
import tempfile
import time
import zlib
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_gigapixel import RssSampler  # noqa: E402  (sampled RSS of the process tree)

logger = logging.getLogger("bench_scale")

GP = 1e9
#: sides of the square test images: 0.27, 0.55, 1.07, 2.15, 4.29 GP
DEFAULT_SIDES = "16384,23552,32768,46336,65536"
#: bandwidth assumed for the projection's transfers (10 Gb/s Ethernet)
LINK_BYTES_PER_S = 1.25e9


# ------------------------------------------------------------------ 1. model inputs


def _leaf(i: int) -> int:
    return i


def _add(parts: list[int]) -> int:
    return sum(parts)


def trivial_pass(n: int, tag: str = "0") -> tuple[dict[Any, Any], Any]:
    """A graph of ``n`` trivial leaves tree-summed 8 at a time, and its root key (names end in ``tag``)."""
    from bigquant.cluster.points import tree_reduce

    leaves = {(f"bq-trivial-{tag}", i): (_leaf, i) for i in range(n)}
    tree, root = tree_reduce(f"bq-trivial-sum-{tag}", list(leaves), _add, split_every=8)
    return {**leaves, **tree}, root


def task_cost(n: int, repeats: int = 3) -> dict[str, float]:
    """Seconds per task of a pass of ``n`` trivial tasks: distributed (2 processes) and threaded."""
    import dask
    import distributed

    graph, root = trivial_pass(n)
    keys = len(graph)
    out: dict[str, float] = {"keys": keys}
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert dask.get(graph, root) == n * (n - 1) // 2  # noqa: S101 - the pass must be complete
        best = min(best, time.perf_counter() - t0)
    out["sync_s"] = best / keys
    from dask.threaded import get as threaded_get

    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert threaded_get(graph, root) == n * (n - 1) // 2  # noqa: S101
        best = min(best, time.perf_counter() - t0)
    out["threads_s"] = best / keys
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.get(*trivial_pass(64, "warm"))  # connections, imports on the workers
        best = math.inf
        for r in range(repeats):
            graph, root = trivial_pass(n, str(r))  # new keys each round: nothing cached
            t0 = time.perf_counter()
            total = client.get(graph, root)
            best = min(best, time.perf_counter() - t0)
            assert total == n * (n - 1) // 2  # noqa: S101
        out["distributed_s"] = best / keys
    return out


def pass_tasks(side: int, tile: int = 512, *, adaptive: bool = True) -> dict[str, int]:
    """Keys of one pass of each kind over a ``side`` x ``side`` RGB image, counted on lazy graphs."""
    import dask.array as da

    from bigquant import tasks
    from bigquant.cluster.histogram import histogram_graph
    from bigquant.cluster.points import block_tree
    from bigquant.io import chunks as chunking

    shape = (side, side)
    if adaptive:
        cy, cx = chunking.aligned_chunks(shape, (tile, tile))
    else:
        with _fixed_edge():
            cy, cx = chunking.aligned_chunks(shape, (tile, tile))
    X = da.zeros((side, side, 3), dtype=np.uint8, chunks=(cy, cx, 3))
    n_chunks = X.numblocks[0] * X.numblocks[1]
    # a TIFF read directly folds the read into the count tasks; a lazy array adds
    # one source key per chunk, not counted here
    count = len(dict(histogram_graph(X, 8).__dask_graph__())) - n_chunks
    lloyd = len(dict(block_tree(tasks.LLOYD, X, None, _leaf, (), _add).__dask_graph__())) - n_chunks
    return {"side": side, "cy": cy, "cx": cx, "chunks": n_chunks, "count": count, "lloyd": lloyd,
            "write": n_chunks + 1}  # one bq-write per chunk, the lookup table once


@contextlib.contextmanager
def _fixed_edge():
    """Today's default chunking (a 4096 px edge at every size), for comparison."""
    from bigquant.io import chunks as chunking

    saved = getattr(chunking, "ADAPT_ABOVE_PIXELS", None)
    if saved is None:
        yield
        return
    chunking.ADAPT_ABOVE_PIXELS = 1 << 62
    try:
        yield
    finally:
        chunking.ADAPT_ABOVE_PIXELS = saved


def pass_bytes(path: pathlib.Path, k: int = 16) -> dict[str, float]:
    """Bytes the passes move over the image at ``path`` (a photo-like sample)."""
    import dask
    from dask.callbacks import Callback
    from dask.sizeof import sizeof

    from bigquant import KMeans, kernels, read_image
    from bigquant.cluster.histogram import histogram_graph

    source = read_image(path)
    X = source.data
    n_px = X.shape[0] * X.shape[1]
    root = histogram_graph(X, 8)
    sizes: dict[Any, int] = {}

    class Sizes(Callback):
        def _posttask(self, key, result, dsk, state, id):  # noqa: A002 - dask's signature
            sizes[key] = sizeof(result)

    with Sizes():
        dask.compute(root, scheduler="threads")
    partial = sum(v for key, v in sizes.items() if key != root.key)
    leaves = [v for key, v in sizes.items() if isinstance(key, tuple) and str(key[0]).startswith("bq-count-")
              and not str(key[0]).startswith("bq-count-sum")]
    model = KMeans(k, random_state=0).fit(X)  # the histogram strategy, as quantize fits 8-bit RGB
    lut = model.lookup_table()
    lut_bytes = len(zlib.compress(lut[0].tobytes(), 1)) if lut is not None else 0
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    block = np.asarray(X[:512, :512]).reshape(-1, 3)
    lloyd = sizeof(kernels.partial_sums(block, centers, None))
    return {"px": n_px, "chunks": X.numblocks[0] * X.numblocks[1], "count_bytes": partial,
            "leaf_bytes": float(np.mean(leaves)) if leaves else 0.0, "colours": model.histogram_.n_colours if model.histogram_ is not None else 0,
            "lloyd_bytes": lloyd, "lut_bytes": lut_bytes, "lut_raw": lut[0].nbytes if lut is not None else 0}


# ------------------------------------------------------------------ 2. projection


def project(gp: float, workers: int, tasks_per_pass: dict[str, int], cost: float, core_s_per_gp: float,
            count_bytes_per_gp: float, lut_bytes: float, out_bytes_per_px: float) -> dict[str, float]:
    """The model of docs/scale.md for one image size and cluster size (histogram strategy).

    Two passes, a count pass and a write pass, each of half the measured core-seconds:

    scheduler s (a pass) = its tasks x cost              (one scheduler, serial)
    compute s (a pass)   = core_s_per_gp / 2 x gp / busy  (busy = workers, and for the write
                           pass at most the chunks of the bands computed at once)
    wall s               = sum over passes of max(scheduler s, compute s) + output / link
    transfer             = partial histograms + lookup table x workers + encoded output
    """
    side = math.sqrt(gp * GP)
    cy, cx = tasks_per_pass["cy"], tasks_per_pass["cx"]
    per_band = math.ceil(side / cx)
    band_bytes = cy * side  # raw labels of one band: what bounds the bands computed ahead
    depth = min(3, max(1, int(384 * 2**20 // band_bytes)))
    half = core_s_per_gp / 2 * gp
    passes = (
        (tasks_per_pass["count"], half / workers),
        (tasks_per_pass["write"], half / min(workers, per_band * depth)),
    )
    scheduler_s = sum(n * cost for n, _ in passes)
    compute_s = sum(c for _, c in passes)
    out_bytes = out_bytes_per_px * gp * GP
    wall = sum(max(n * cost, c) for n, c in passes) + out_bytes / LINK_BYTES_PER_S
    task_s = core_s_per_gp / 2 * cy * cx / GP
    return {"tasks": sum(n for n, _ in passes), "scheduler_s": scheduler_s, "compute_s": compute_s,
            "transfer": count_bytes_per_gp * gp + lut_bytes * workers + out_bytes, "wall_s": wall,
            "task_s": task_s, "workers_fed": task_s / cost, "write_workers": min(workers, per_band * depth)}


# ------------------------------------------------------------------ 3. seconds per GP


def quantize_run(side: int, workdir: pathlib.Path) -> dict[str, float]:
    from bigquant import quantize
    from bigquant.cluster.allocator import release_freed_memory
    from bigquant.io.sample import make_sample_tiff

    src = workdir / f"sample_{side}.tif"
    t0 = time.perf_counter()
    make_sample_tiff(src, (side, side), tile=512, compression=None)
    logger.info("made %s (%d x %d) in %.0f s", src.name, side, side, time.perf_counter() - t0)
    dst = workdir / f"q_{side}.tif"
    try:
        with RssSampler() as rss:
            t0 = time.perf_counter()
            quantize(src, dst, 16, random_state=0, overwrite=True)
            seconds = time.perf_counter() - t0
        out_bytes = dst.stat().st_size
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
        release_freed_memory()
    gp = side * side / GP
    return {"side": side, "gp": gp, "seconds": seconds, "s_per_gp": seconds / gp, "peak_gb": rss.peak / 2**30,
            "out_bytes_per_px": out_bytes / (side * side)}


# ------------------------------------------------------------------ tables


def _si(n: float, unit: str = "B") -> str:
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {prefix}{unit}"
    return f"{n:.0f} {unit}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default=DEFAULT_SIDES,
                        help="sides of the square images to quantize, comma separated ('none': skip)")
    parser.add_argument("--tasks", type=int, default=4000, help="leaves of the trivial pass")
    parser.add_argument("--sample-side", type=int, default=16384,
                        help="side of the photo-like sample the bytes per pass are measured on")
    parser.add_argument("--dir", default=None, help="where the temporary images go")
    parser.add_argument("--core-s-per-gp", type=float, default=2 * 12.3 / 1.07,
                        help="with --sides none: core-seconds per GP of a quantize (default: DESIGN.md's "
                             "quiet 1.07 GP run, 12.3 s on 2 cores)")
    parser.add_argument("--task-cost", type=float, default=None,
                        help="seconds a task for the projection (default: the one measured)")
    parser.add_argument("--out-bytes-per-px", type=float, default=0.059,
                        help="with --sides none: encoded output bytes per pixel")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    sides = [] if args.sides == "none" else [int(s) for s in args.sides.split(",") if s]

    from bigquant.io.sample import make_sample_tiff

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bigquant-scale-", dir=args.dir))
    try:
        cost = task_cost(args.tasks)
        projected_cost = cost["distributed_s"] if args.task_cost is None else args.task_cost
        sample = make_sample_tiff(workdir / "bytes.tif", (args.sample_side, args.sample_side), tile=512,
                                  compression=None)
        moved = pass_bytes(sample)
        sample.unlink()
        runs = [quantize_run(side, workdir) for side in sides]
    finally:
        for p in workdir.iterdir():
            p.unlink()
        workdir.rmdir()

    print("## Model inputs (measured here)\n")
    print("| input | value |\n|---|---|")
    print(f"| scheduler cost per task, distributed (LocalCluster, 2 processes), pass of {cost['keys']:.0f} keys "
          f"| {cost['distributed_s'] * 1e3:.2f} ms |")
    print(f"| the same pass, dask threaded scheduler | {cost['threads_s'] * 1e3:.3f} ms |")
    print(f"| the same pass, synchronous (dask.get) | {cost['sync_s'] * 1e3:.3f} ms |")
    gp_sample = moved["px"] / GP
    print(f"| partial histograms moved by a count pass ({gp_sample:.2f} GP sample, {moved['chunks']} chunks, "
          f"{moved['colours']} colours) | {_si(moved['count_bytes'])} = {_si(moved['count_bytes'] / gp_sample)}"
          f" per GP; {_si(moved['leaf_bytes'])} per chunk |")
    print(f"| lookup table shipped once to each worker (zlib; raw {_si(moved['lut_raw'])}) "
          f"| {_si(moved['lut_bytes'])} |")
    print(f"| Lloyd partial sums of one chunk (k=16, RGB) | {moved['lloyd_bytes']} B |")
    if runs:
        r = runs[0]
        print(f"| encoded output (palette BigTIFF, k=16) | {r['out_bytes_per_px']:.3f} B/px |")

    print("\n## Tasks per pass (counted on the graphs, 512 px tiles)\n")
    print("| image | chunks (cy x cx) | chunks a pass | count pass | Lloyd iteration | write pass "
          "| 4096² chunks: count pass | Lloyd iteration | write pass |")
    print("|---|---|---|---|---|---|---|---|---|")
    counted = {}
    for gp, side in (("1.07 GP", 32768), ("10 GP", 100352), ("100 GP", 316416)):
        new, old = pass_tasks(side), pass_tasks(side, adaptive=False)
        counted[gp] = (new, old)
        print(f"| {gp} ({side}²) | {new['cy']} x {new['cx']} | {new['chunks']} | {new['count']} | {new['lloyd']} | "
              f"{new['write']} | {old['count']} | {old['lloyd']} | {old['write']} |")

    if runs:
        core_s_per_gp = runs[0]["s_per_gp"] * 2  # the in-process run used this machine's 2 cores
        out_bpp = runs[0]["out_bytes_per_px"]
    else:
        core_s_per_gp, out_bpp = args.core_s_per_gp, args.out_bytes_per_px
    print(f"\n## Projection (histogram strategy: a count pass and a write pass; {core_s_per_gp:.1f} core-s per GP"
          f"; {projected_cost * 1e3:.2f} ms a task; links {LINK_BYTES_PER_S * 8 / 1e9:.0f} Gb/s)\n")
    print("| image | workers | chunking | tasks | scheduler s | compute s | transfer | wall s "
          "| s a task | workers the scheduler feeds | workers writing |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for gp_name, gp in (("10 GP", 10.0), ("100 GP", 100.0)):
        for workers in (8, 32, 128):
            for label, tp in (("default", counted[gp_name][0]), ("4096²", counted[gp_name][1])):
                p = project(gp, workers, tp, projected_cost, core_s_per_gp,
                            moved["count_bytes"] / gp_sample, moved["lut_bytes"], out_bpp)
                print(f"| {gp_name} | {workers} | {label} ({tp['cy']}x{tp['cx']}) | {p['tasks']} | {p['scheduler_s']:.1f} | "
                      f"{p['compute_s']:.0f} | {_si(p['transfer'])} | {p['wall_s']:.0f} | {p['task_s']:.2f} | "
                      f"{p['workers_fed']:.0f} | {p['write_workers']} |")

    if runs:
        print("\n## quantize(k=16) in-process, uncompressed tiled BigTIFF in, zlib palette BigTIFF out\n")
        print("| image | GP | seconds | s per GP | peak RSS (process tree) |\n|---|---|---|---|---|")
        for r in runs:
            print(f"| {r['side']}² | {r['gp']:.2f} | {r['seconds']:.1f} | {r['s_per_gp']:.1f} | "
                  f"{r['peak_gb']:.2f} GB |")


if __name__ == "__main__":
    main()
