"""Gigapixel benchmark: bare read pass vs end-to-end quantize, time and peak RSS.

For each size (in megapixels) it generates a photo-like RGB tiled BigTIFF with
uncompressed 512 px tiles (:func:`bigquant.io.sample.make_sample_tiff`), then on a
LocalCluster (2 single-thread worker processes by default) measures:

- a bare dask read pass (sum of every block) through bigquant's own reader, and the
  same through tifffile's zarr store (``tifffile.imread(aszarr=True)`` + ``dask.array.from_zarr``,
  bigquant's chunks, dask's threaded scheduler) -- the "tifffile/zarr/dask read" issue #25's
  target is stated against,
- ``quantize(k=16)`` to a zlib palette BigTIFF with the histogram strategy,
- the same with ``strategy="pixels"`` (optional),

sampling the peak RSS of the whole process tree (this client + scheduler +
workers) every 0.2 s with psutil.  Prints a markdown table.

    python bench/bench_gigapixel.py --sizes 64,256,1024
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
import threading
import time
from collections.abc import Iterator

import numpy as np


class RssSampler:
    """Sample the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.peak_parts: tuple[int, int] = (0, 0)  # (this process, descendants) at the peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        own = self.proc.memory_info().rss
        children = 0
        for p in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                children += p.memory_info().rss
        if own + children > self.peak:
            self.peak, self.peak_parts = own + children, (own, children)
        return own + children

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = 0
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@contextlib.contextmanager
def measured() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    with RssSampler() as rss:
        t0 = time.perf_counter()
        yield out
        out["seconds"] = time.perf_counter() - t0
    out["peak_gb"] = rss.peak / 2**30
    out["peak_client_gb"], out["peak_workers_gb"] = (b / 2**30 for b in rss.peak_parts)


def _block_sum(block: np.ndarray) -> np.ndarray:
    return np.array([[int(block.sum(dtype=np.uint64))]], dtype=np.uint64)


def bare_read(path: pathlib.Path) -> int:
    from bigquant import read_image

    data = read_image(path).data
    sums = data.map_blocks(
        lambda b: _block_sum(b)[..., None], dtype=np.uint64, chunks=(1, 1, 1)
    )
    return int(sums.sum().compute())


def tifffile_read(path: pathlib.Path, workers: int) -> int:
    """The same pass through tifffile's zarr store and :func:`dask.array.from_zarr`, bigquant's chunks.

    On dask's threaded scheduler with ``workers`` threads: the store holds an
    open file and does not pickle, so it cannot go through a client.
    """
    import dask.array as da
    import tifffile
    import zarr

    from bigquant import read_image

    chunks = read_image(path).data.chunks
    with tifffile.imread(path, aszarr=True) as store:
        data = da.from_zarr(zarr.open(store, mode="r"), chunks=chunks)
        sums = data.map_blocks(
            lambda b: _block_sum(b)[..., None], dtype=np.uint64, chunks=(1, 1, 1)
        )
        return int(sums.sum().compute(scheduler="threads", num_workers=workers))


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    import distributed

    from bigquant import quantize
    from bigquant.io.sample import make_sample_tiff
    from bigquant.cluster.allocator import release_freed_memory, tune_allocator

    tune_allocator()  # as the command line does

    rows: list[dict[str, object]] = []
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bigquant-bench-", dir=args.dir))
    processes = args.cluster == "processes"
    cluster = distributed.LocalCluster(
        n_workers=args.workers if processes else 1,
        threads_per_worker=1 if processes else args.workers,
        processes=processes,
        dashboard_address=None,
        memory_limit=args.memory_limit,
    )
    client = distributed.Client(cluster)
    try:
        for mp in args.sizes:
            side = int(round(math.sqrt(mp * 2**20) / 512)) * 512
            src = workdir / f"sample_{mp}mp.tif"
            t0 = time.perf_counter()
            make_sample_tiff(src, (side, side), tile=512, compression=None)
            gen = time.perf_counter() - t0
            print(f"# generated {side}x{side} ({side * side / 1e6:.0f} MP) in {gen:.0f} s",
                  file=sys.stderr, flush=True)
            row: dict[str, object] = {"size": f"{side}x{side}", "mp": side * side / 1e6}
            with client.as_current(), measured() as m:
                bare_read(src)
            row["read_s"], row["read_gb"] = m["seconds"], m["peak_gb"]
            with measured() as m:
                tifffile_read(src, args.workers)
            row["tf_read_s"] = m["seconds"]
            for strategy in args.strategies:
                dst = workdir / f"q_{mp}_{strategy}.tif"
                with measured() as m:
                    model = quantize(src, dst, 16, strategy=strategy, client=client,
                                     random_state=0, overwrite=True,
                                     max_iter=args.max_iter)
                row[f"{strategy}_s"], row[f"{strategy}_gb"] = m["seconds"], m["peak_gb"]
                row[f"{strategy}_iter"] = int(model.n_iter_)
                row[f"{strategy}_out_mb"] = dst.stat().st_size / 2**20
                dst.unlink()
                print(f"# {mp} MP {strategy}: {m['seconds']:.1f} s, {m['peak_gb']:.2f} GB "
                      f"(client + scheduler {m['peak_client_gb']:.2f}, workers and nannies "
                      f"{m['peak_workers_gb']:.2f})", file=sys.stderr, flush=True)
                del model  # each size is measured on its own
            rows.append(row)
            src.unlink()
            # the next size starts from a clean slate: garbage collected, freed heap returned
            client.run(lambda: __import__("gc").collect())
            __import__("gc").collect()
            release_freed_memory()
    finally:
        client.close()
        cluster.close()
        for p in workdir.iterdir():
            p.unlink()
        workdir.rmdir()
    return rows


def table(rows: list[dict[str, object]], strategies: list[str], cluster: str) -> str:
    head = ["image", "MP", "bare read s", "read peak GB", "tifffile/zarr read s"]
    for s in strategies:
        head += [f"quantize[{s}] s", "iters", "x read", "x tifffile read", "peak GB", "out MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["size"]), f"{r['mp']:.0f}", f"{r['read_s']:.1f}", f"{r['read_gb']:.2f}",
                 f"{r['tf_read_s']:.1f}"]
        for s in strategies:
            cells += [f"{r[f'{s}_s']:.1f}", str(r[f"{s}_iter"]),
                      f"{r[f'{s}_s'] / r['read_s']:.1f}", f"{r[f'{s}_s'] / r['tf_read_s']:.2f}",
                      f"{r[f'{s}_gb']:.2f}",
                      f"{r[f'{s}_out_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\ncluster: {cluster}; k=16, zlib palette BigTIFF, 512 px tiles; "
                 "peak RSS = client + scheduler + workers, sampled every 0.2 s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,256,1024",
                        help="image sizes in megapixels (2**20 px), comma separated")
    parser.add_argument("--strategies", default="histogram,pixels",
                        help="fit strategies to time, comma separated")
    parser.add_argument("--cluster", choices=["processes", "threads"], default="processes",
                        help="2 single-thread worker processes, or 1 worker with threads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GiB")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--dir", default=None, help="where to write the temporary images")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.strategies = [s for s in args.strategies.split(",") if s]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    rows = run(args)
    print(table(rows, args.strategies, f"{args.cluster} x{args.workers}"))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
