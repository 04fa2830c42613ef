"""One palette for a set: 16 photo-mosaic TIFFs quantized together vs each on its own.

Builds once (cached in ``--workdir``) ``--files`` photo-like RGB tiled
BigTIFFs of ``--megapixels`` each (:func:`bigquant.io.sample.make_sample_tiff`,
a different seed each: different crops and colours of the same photo), then
measures, in this process on the same threaded scheduler:

- **shared**: :func:`bigquant.quantize_many` (one joint histogram, one fit at
  k, every file written with it);
- **separate**: :func:`bigquant.quantize` on every file (its own histogram,
  fit and write), summed;

each run ``--repeats`` times alternately after one warm-up of both (medians
printed), and per image the PSNR with the shared palette against its own
palette (the cost of sharing).

    .venv/bin/python bench/bench_many.py                          # 16 x 64 MP = 1 GP
    .venv/bin/python bench/bench_many.py --files 4 --megapixels 4  # for development
"""

from __future__ import annotations

import argparse
import math
import pathlib
import shutil
import statistics
import tempfile
import time

import tifffile

from bigquant import quantize
from bigquant.io.sample import make_sample_tiff
from bigquant.pipeline.many import quantize_many


def _inputs(workdir: pathlib.Path, n_files: int, megapixels: float) -> list[pathlib.Path]:
    side = int(math.sqrt(megapixels * 1e6) // 512 * 512) or 512
    paths = []
    for i in range(n_files):
        path = workdir / f"mosaic-{side}-{i:02d}.tif"
        if not path.exists():
            make_sample_tiff(path, (side, side), tile=512, seed=i)
        paths.append(path)
    return paths


def _shared(paths: list[pathlib.Path], out: pathlib.Path, k: int) -> tuple[float, list[float]]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = quantize_many(paths, out, k, random_state=0, overwrite=True)
    return time.perf_counter() - start, [f.psnr for f in result.files]


def _separate(paths: list[pathlib.Path], out: pathlib.Path, k: int) -> tuple[float, list[float]]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    psnrs = []
    for path in paths:
        model = quantize(path, out / path.name, k, random_state=0)
        _, error = model.palette()
        psnrs.append(10 * math.log10(255.0**2 * model.histogram_.n_pixels * 3 / error))
    return time.perf_counter() - start, psnrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--megapixels", type=float, default=64.0)
    parser.add_argument("-k", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=pathlib.Path,
                        default=pathlib.Path(tempfile.gettempdir()) / "bigquant-bench-many")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = _inputs(args.workdir, args.files, args.megapixels)
    total_mp = sum(math.prod(tifffile.TiffFile(p).pages[0].shape[:2]) for p in paths) / 1e6
    out = args.workdir / "out"
    _shared(paths, out / "shared", args.k)  # warm-up: compile, page cache
    _separate(paths, out / "separate", args.k)
    shared_t, separate_t = [], []
    for _ in range(args.repeats):  # alternated: both see the same machine state
        t, shared_psnr = _shared(paths, out / "shared", args.k)
        shared_t.append(t)
        t, own_psnr = _separate(paths, out / "separate", args.k)
        separate_t.append(t)
    shared_s, separate_s = statistics.median(shared_t), statistics.median(separate_t)
    print(f"\n{args.files} files x {args.megapixels:g} MP ({total_mp:.0f} MP in all), k = {args.k}, "
          f"threads in this process, median of {args.repeats} after a warm-up\n")
    print("| run | time (s) | Mpx/s | PSNR mean (dB) |")
    print("|---|---:|---:|---:|")
    print(f"| shared palette (`quantize_many`) | {shared_s:.1f} | {total_mp / shared_s:.0f} | "
          f"{statistics.mean(shared_psnr):.2f} |")
    print(f"| each its own palette (`quantize` x {args.files}) | {separate_s:.1f} | {total_mp / separate_s:.0f} | "
          f"{statistics.mean(own_psnr):.2f} |")
    loss = [o - s for s, o in zip(shared_psnr, own_psnr)]
    print(f"\nshared / separate time: {shared_s / separate_s:.2f}; cost of sharing per image: "
          f"median {statistics.median(loss):.2f} dB, worst {max(loss):.2f} dB PSNR below its own palette\n")
    print("| image | own palette (dB) | shared palette (dB) |")
    print("|---|---:|---:|")
    for path, own, shared in zip(paths, own_psnr, shared_psnr):
        print(f"| {path.name} | {own:.2f} | {shared:.2f} |")


if __name__ == "__main__":
    main()
