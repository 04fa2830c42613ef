"""Microbenchmark of the Floyd--Steinberg kernel ``bigquant.kernels.dither.fs_rows`` (ns a pixel).

Dithers one window of an RGB image (a photo by default: a window of the
peers mosaic ``bench_peers.py`` writes, else a synthetic noisy gradient) to
16 colours drawn from its pixels, with and without the quality sums, on
rectangular rows and on the slanted tiles of the tiled pipeline.  Each
source tree given (``--tree``, default: this checkout and ``/work/main``) is
timed in a subprocess of its own, in the same run, so the figures compare.
Prints a table: median over ``--reps`` runs of wall and thread-CPU time per
pixel, and the ratio to the first tree.

Usage::

    python bench/bench_fs_kernel.py [--image PATH] [--size 2048] [--reps 5] [--tree DIR ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_IMAGE = "/tmp/bp/peers_8192_rgb8_deflate_s0.tif"


def _window(path: str | None, size: int) -> np.ndarray:
    if path and os.path.exists(path):
        if path.endswith(".npy"):
            return np.ascontiguousarray(np.load(path, mmap_mode="r")[:size, :size])
        import tifffile

        return tifffile.imread(path, selection=(slice(0, size), slice(0, size)))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 255 // (2 * size)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _worker(args: argparse.Namespace) -> dict:
    import inspect

    from bigquant.kernels import spaces
    from bigquant.kernels.dither import candidate_grid, error_dtype, fs_rows, strength_q

    # trees before the vectorised sums (d3afe3c) took a cache of source colours' OKLab
    cached = "cache" in inspect.signature(fs_rows).parameters

    img = _window(args.image, args.size)
    h, w, _ = img.shape
    rng = np.random.default_rng(0)
    colours = img.reshape(-1, 3)[rng.choice(h * w, args.k, replace=False)].astype(np.int64)
    grid = candidate_grid(colours, 255)
    q = strength_q(0.9)
    tile = 512
    results = {}
    for layout in ("rect", "slanted"):
        if layout == "rect":
            xa, xb, ex0 = np.zeros(h, np.int64), np.full(h, w, np.int64), -1
        else:  # the pipeline's slanted tile J=1 of width 512, rows shifted one column left a row
            r = np.arange(h)
            xa = np.clip(tile - r, 0, w).astype(np.int64)
            xb = np.maximum(xa, np.clip(2 * tile - r, 0, w)).astype(np.int64)
            ex0 = -1
        npx = int((xb - xa).sum())
        for case in ("nosums", "sums14", "sums17"):
            walls, cpus = [], []
            for _ in range(args.reps + 1):  # the first run compiles / warms
                errors = np.zeros((h + 1, w + 2, 3), dtype=error_dtype(img.dtype))
                out = np.zeros((h, w), np.uint8)
                sums = None if case == "nosums" else np.zeros(3)
                extra = {}
                if cached and case != "nosums":
                    extra["cache"] = spaces.ok_cache(1 << (14 if case == "sums14" else 17))
                t0, c0 = time.perf_counter(), time.thread_time()
                fs_rows(img, (0, 0), None, errors, (-1, ex0), out, (0, 0), 0, xa, xb, q, colours, grid,
                        sums=sums, **extra)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.thread_time() - c0)
            results[f"{layout}/{case}"] = (float(np.median(walls[1:])) / npx * 1e9,
                                           float(np.median(cpus[1:])) / npx * 1e9,
                                           int(out.astype(np.int64).sum()))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tree", action="append", default=None, help="source trees to compare (first: the baseline)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    trees = args.tree or ["/work/main", HERE]
    table = {}
    for tree in trees:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--image", str(args.image), "--size",
               str(args.size), "--k", str(args.k), "--reps", str(args.reps)]
        env = dict(os.environ, PYTHONPATH=tree)
        table[tree] = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; {args.size}^2 window, k={args.k}, "
          f"median of {args.reps} (ns a pixel: wall / thread CPU)")
    base = table[trees[0]]
    print(f"{'case':18s}" + "".join(f"{os.path.basename(t.rstrip('/')):>24s}" for t in trees) + "   speed-up (CPU)")
    for case in base:
        cells = "".join(f"{table[t][case][0]:11.1f} / {table[t][case][1]:9.1f}" for t in trees)
        same = all(table[t][case][2] == base[case][2] for t in trees)
        print(f"{case:18s}{cells}   {base[case][1] / table[trees[-1]][case][1]:5.2f}x"
              + ("" if same else "   LABELS DIFFER"))


if __name__ == "__main__":
    main()
