"""Floyd--Steinberg against the plain job: CPU seconds in one process and on a LocalCluster.

The image: an 8-bit RGB photo mosaic (:class:`_realfiles.Mosaic`, real photographs enlarged, a
little seeded noise) written as a deflate BigTIFF with 512-px tiles, built once in ``--workdir``.
Each run is ``bigquant.quantize(src, out, 16, dither=...)`` in a fresh process, either on threads
in that process (``inproc``) or on the LocalCluster the command line starts (``cluster``: 2
single-thread worker processes here); the CPU seconds are user + system of the client process
(and its scheduler) plus every worker's own.  ``--checkouts`` runs the same table for other
checkouts of bigquant (e.g. ``/work/main`` for "before"), each run alternated with the others;
the ratio ``FS / plain`` of each checkout is formed within one repetition.

    python bench/bench_dither.py --sides 8192,16384 --checkouts .,/work/main
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _realfiles import Mosaic, building, machine_line, ordered_map, tile_windows  # noqa: E402

TILE = 512

#: one run, in a fresh interpreter whose bigquant is the checkout on PYTHONPATH; prints one JSON line
RUN = r"""
import json, os, resource, sys, time

def cpu_here():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def main():
    import bigquant
    src, out, dither, mode, k = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    runtime = client = None
    if mode == "cluster":
        from bigquant.pipeline.runtime import connect
        runtime = connect(dashboard_address=None)
        client = runtime.client
        client.run(lambda: 0)

    def cpu():
        return cpu_here() + (sum(client.run(cpu_here).values()) if client is not None else 0.0)

    c0, t0 = cpu(), time.perf_counter()
    model = bigquant.quantize(src, out, k, dither=None if dither == "none" else dither, client=client,
                              overwrite=True, random_state=0)
    wall, used = time.perf_counter() - t0, cpu() - c0
    print(json.dumps({"wall": wall, "cpu": used, "quality": model.quality_}))
    if runtime is not None:
        runtime.close()

if __name__ == "__main__":
    main()
"""


def build(path: pathlib.Path, side: int, seed: int) -> None:
    """The mosaic GeoTIFF-like BigTIFF (deflate, 512-px tiles), in bounded memory."""
    import tifffile

    mosaic = Mosaic((side, side), cell=2048, seed=seed)

    def tile(win: tuple[int, int, int, int]) -> np.ndarray:
        y0, y1, x0, x1 = win
        pixels = mosaic.render(y0, y1, x0, x1)
        pixels += np.random.default_rng([seed, y0, x0]).normal(0, 2.0, pixels.shape).astype(np.float32)
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    with building(path) as tmp, ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        tifffile.imwrite(tmp, ordered_map(pool, tile, iter(tile_windows(side, side, TILE)), ahead=8),
                         shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                         compression="zlib", bigtiff=True, maxworkers=1)


def run_once(checkout: pathlib.Path, src: pathlib.Path, dither: str, mode: str, k: int) -> dict:
    with tempfile.TemporaryDirectory(dir=src.parent) as tmp:
        out = pathlib.Path(tmp) / "out.tif"
        env = dict(os.environ, PYTHONPATH=str(checkout))
        # run in the checkout: ``python -c`` puts the working directory first on sys.path, so a run
        # started from another checkout would import that one whatever PYTHONPATH says
        done = subprocess.run([sys.executable, "-c", RUN, str(src.resolve()), str(out.resolve()), dither, mode, str(k)],
                              env=env, capture_output=True, text=True, check=True, cwd=checkout.resolve())
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sides", default="8192,16384", help="mosaic edges in px (default 8192,16384)")
    parser.add_argument("--modes", default="inproc,cluster")
    parser.add_argument("--checkouts", default=".", help="bigquant checkouts to compare (comma-separated)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("-k", type=int, default=16)
    parser.add_argument("--workdir", type=pathlib.Path,
                        default=pathlib.Path(tempfile.gettempdir()) / "bigquant-bench-dither")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    checkouts = [pathlib.Path(c).resolve() for c in args.checkouts.split(",")]
    rows = []
    for side in (int(s) for s in args.sides.split(",")):
        src = args.workdir / f"mosaic-{side}.tif"
        if not src.exists():
            t0 = time.perf_counter()
            build(src, side, seed=0)
            print(f"built {src} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for mode in args.modes.split(","):
            for rep in range(args.repeat):
                for checkout in checkouts:
                    got = {d: run_once(checkout, src, d, mode, args.k) for d in ("none", "floyd-steinberg")}
                    rows.append((side, mode, checkout, rep, got))
                    plain, fs = got["none"], got["floyd-steinberg"]
                    n = side * side
                    print(f"| {side * side / 1e6:.0f} MP | {mode} | {checkout.name} | {plain['wall']:.1f} | "
                          f"{plain['cpu']:.1f} ({plain['cpu'] / n * 1e9:.0f}) | {fs['wall']:.1f} | "
                          f"{fs['cpu']:.1f} ({fs['cpu'] / n * 1e9:.0f}) | **{fs['cpu'] / plain['cpu']:.2f}** | "
                          f"{plain['load']:.1f} / {fs['load']:.1f} |", flush=True)
    print("\n(columns: size | runtime | checkout | plain wall s | plain CPU s (ns/px) | FS wall s | "
          "FS CPU s (ns/px) | FS/plain CPU | load average after each run)")
    print(machine_line())


if __name__ == "__main__":
    main()
