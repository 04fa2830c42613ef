"""16-bit RGB end to end: a bare read against quantize in-process and through the CLI, two code trees.

The issue #25 target is "16-bit RGB <= 4x a bare read warm, through the CLI".
This builds :mod:`bench_depths`'s uint16 RGB image (a photo taken to 16 bits
with a sub-8-bit jitter, 512 px tiles) uncompressed, and a copy compressed as
GIS users hold them (deflate with the horizontal predictor), then for each
tree (``--tree NAME=PATH``, put first on ``PYTHONPATH``; default: this
checkout) and input, ``--reps`` times, interleaved:

- in one fresh process: a warm-up ``quantize(client=None)``, then a timed bare
  read (every block of the chunks quantize reads, summed, threaded scheduler)
  and a timed ``quantize`` (the library's default report: no quality pass);
- the CLI as a subprocess, ``bigquant quantize IN OUT -k 16`` (its default
  threads and its quality report), wall and CPU of the whole process.

Prints medians (wall and CPU = user + sys) as a markdown table, the ratios to
the bare read, whether the outputs of the trees are byte-identical, and the
load average (the machine is shared: CPU is the steadier figure).

    python bench/bench_depths_cli.py --dir /tmp/bq16 --tree before=/work/main --tree after=.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

_INPROC = r"""
import json, sys, time, resource
import numpy as np
import bigquant
from bigquant import read_image
path, out = sys.argv[1], sys.argv[2]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
def bare():
    data = read_image(path).data
    return float(data.map_blocks(lambda b: np.array([[[float(b.sum(dtype=np.float64))]]]), dtype=np.float64,
                                 chunks=(1, 1, 1)).sum().compute())
q = lambda: bigquant.quantize(path, out, 16, client=None, overwrite=True, random_state=0)
q(); bare()
res = {}
for name, f in (("bare", bare), ("quantize", q)):
    c0, t0 = cpu(), time.perf_counter(); f(); res[name] = (time.perf_counter() - t0, cpu() - c0)
print(json.dumps(res))
"""


def deflated(src: pathlib.Path, dst: pathlib.Path) -> None:
    """A deflate + horizontal predictor copy of ``src`` (same tiles), written tile row by tile row."""
    import tifffile
    import zarr

    with tifffile.TiffFile(src) as tf:
        a = zarr.open(tf.series[0].aszarr(), mode="r")
        height, width = a.shape[:2]

        def tiles():
            for y in range(0, height, 512):
                band = a[y:y + 512]
                for x in range(0, width, 512):
                    yield band[:, x:x + 512]

        tmp = dst.with_name(dst.name + ".tmp")
        tifffile.imwrite(tmp, tiles(), shape=a.shape, dtype=a.dtype, tile=(512, 512), photometric="rgb",
                         compression="zlib", predictor=True, bigtiff=True, metadata=None, maxworkers=2)
    os.replace(tmp, dst)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="megapixels (2**20 px) of the image")
    parser.add_argument("--dir", required=True, help="where the images are built (kept) and outputs written")
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a bigquant checkout")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(HERE.parent)}
    trees = {name: str(pathlib.Path(path).resolve()) for name, path in trees.items()}
    workdir = pathlib.Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    side = int(round((args.size * 2**20) ** 0.5 / 512)) * 512
    raw = workdir / f"u16rgb_{side}.tif"
    if not raw.exists():
        sys.path.insert(0, str(HERE))
        from bench_depths import build

        build(raw, side, "u16rgb")
    packed = workdir / f"u16rgb_deflate_{side}.tif"
    if not packed.exists():
        deflated(raw, packed)
    inputs = {"uncompressed": raw, "deflate + predictor": packed}
    rows: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    python = sys.executable
    for label, path in inputs.items():
        for rep in range(args.reps):
            for tree, root in trees.items():
                env = dict(os.environ, PYTHONPATH=root)
                out = workdir / f"out_{tree}.tif"
                # in the tree: ``python -c`` puts the working directory first on sys.path
                done = subprocess.run([python, "-c", _INPROC, str(path), str(out)], env=env, check=True,
                                      capture_output=True, text=True, cwd=root)
                res = json.loads(done.stdout.strip().splitlines()[-1])
                rows.setdefault((label, tree, "bare read, in-process"), []).append(tuple(res["bare"]))
                rows.setdefault((label, tree, "in-process quantize"), []).append(tuple(res["quantize"]))
                cli_out = workdir / f"cli_{tree}.tif"
                c0, t0 = _children_cpu(), time.perf_counter()
                subprocess.run([python, "-m", "bigquant", "-q", "quantize", str(path), str(cli_out), "-k", "16", "-f",
                                "--no-progress"], env=env, check=True, cwd=root)  # ``-m`` too: cwd first
                rows.setdefault((label, tree, "CLI"), []).append((time.perf_counter() - t0, _children_cpu() - c0))
            names = list(trees)
            same = all((workdir / f"cli_{n}.tif").read_bytes() == (workdir / f"cli_{names[0]}.tif").read_bytes()
                       for n in names)
            print(f"# {label} rep {rep}: CLI outputs of {', '.join(names)} identical: {same}; "
                  f"load {os.getloadavg()}", file=sys.stderr, flush=True)
    head = ["input", "run"] + [f"{t} wall s (CPU s)" for t in trees] + [f"{t} x bare read: wall (CPU)" for t in trees]
    print("| " + " | ".join(head) + " |")
    print("|---|---|" + "---:|" * (2 * len(trees)))
    for label in inputs:
        bare = {t: np.median(np.array(rows[(label, t, "bare read, in-process")]), axis=0) for t in trees}
        for run in ("bare read, in-process", "in-process quantize", "CLI"):
            med = {t: np.median(np.array(rows[(label, t, run)]), axis=0) for t in trees}
            cells = [f"{med[t][0]:.2f} ({med[t][1]:.2f})" for t in trees]
            cells += [f"{med[t][0] / bare[t][0]:.1f} ({med[t][1] / bare[t][1]:.1f})" for t in trees]
            print(f"| {label} | {run} | " + " | ".join(cells) + " |")
    print(f"\nmedians of {args.reps}; load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
