"""Palette PNG output: the streamed writer against Pillow's whole-image write.

``write_image(labels, "q.png", palette=...)`` of a lazy label image at k = 16
(4-bit PNG), in a fresh process per run, through the threaded scheduler;
the wall time of the write alone, the peak RSS of the process (sampled every
0.05 s from outside, baseline before the write included) and the file size.
Each run imports the bigquant of a checkout (``--checkouts``: this one, and
e.g. ``/work/main`` whose PNG output went through Pillow and refused more
than Pillow's 89 MP).

The labels: four 2048 x 2048 photo-mosaic cells (:class:`_realfiles.Mosaic`,
real photographs enlarged, seeded noise) reduced to the same 16 colours by
Pillow once per process (~16 MB of labels); chunk (512 x 512) by chunk, each
2048 cell of the canvas shows one of them, turned one of 8 ways, so the
image looks like a quantized photograph without rendering 268 MP of it.

``--filters`` prints the other table (the choice of row filters in
:mod:`bigquant.io.png_write`): size and time of each PNG filter (at the
writer's zlib level, or ``--level``) on the real photographs the
dependencies ship, on a 2048 x 3072 mosaic, and on the same images reduced to
16 colours (RGB).

    python bench/bench_png.py --sizes 8192,16384 --checkouts .,/work/main
    python bench/bench_png.py --filters
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _realfiles import MB, Mosaic, TreeRss, fmt_mb, machine_line, real_photos  # noqa: E402

logger = logging.getLogger("bench_png")

K = 16
CELL = 2048
CHUNK = 512


def _stamps(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four 2048² label cells of one 16-colour palette, and the palette (16, 3)."""
    from PIL import Image

    mosaic = Mosaic((2 * CELL, 2 * CELL), cell=CELL, seed=seed)
    rng = np.random.default_rng(seed)
    cells, palette_image = [], None
    for cy in range(2):
        for cx in range(2):
            rgb = mosaic.render(cy * CELL, (cy + 1) * CELL, cx * CELL, (cx + 1) * CELL)
            rgb = np.clip(rgb + rng.normal(0.0, 2.0, rgb.shape), 0, 255).astype(np.uint8)
            img = Image.fromarray(rgb)
            if palette_image is None:
                palette_image = img.quantize(K, dither=Image.Dither.NONE)
            cells.append(np.asarray(img.quantize(palette=palette_image, dither=Image.Dither.NONE)))
    palette = np.array(palette_image.getpalette()[: 3 * K], np.uint8).reshape(K, 3)
    return np.stack(cells), palette


def lazy_labels(side: int, seed: int = 0) -> tuple[object, np.ndarray]:
    """A lazy (side, side) uint8 label image of 16 colours (see the module docstring)."""
    import dask.array as da

    cells, palette = _stamps(seed)

    def block(block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        cy, cx = y0 // CELL, x0 // CELL
        pick = np.random.default_rng([seed, cy, cx]).integers(0, 4 * 8)
        cell = cells[pick % 4]
        turn = pick // 4
        cell = np.rot90(cell, turn % 4)
        cell = cell.T if turn >= 4 else cell
        return np.ascontiguousarray(cell[y0 - cy * CELL : y1 - cy * CELL, x0 - cx * CELL : x1 - cx * CELL])

    arr = da.map_blocks(block, dtype=np.uint8, chunks=((CHUNK,) * (side // CHUNK),) * 2,
                        meta=np.empty((0, 0), np.uint8))
    return arr, palette


def child(side: int, out: pathlib.Path, level: int | None) -> None:
    """One run (in its own process): build the lazy labels, then time the write; JSON on stdout."""
    import bigquant
    from bigquant import write_image

    labels, palette = lazy_labels(side)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the parent has its baseline RSS
    t0 = time.perf_counter()
    result: dict[str, object] = {"bigquant": str(pathlib.Path(bigquant.__file__).parents[1])}
    try:
        extra = {} if level is None else {"compression_level": level}
        write_image(labels, out, palette=palette, tile=CHUNK, overwrite=True, **extra)
        result["seconds"] = time.perf_counter() - t0
        result["bytes"] = out.stat().st_size
    except Exception as exc:  # noqa: BLE001 - the refusal is a result
        result["seconds"] = time.perf_counter() - t0
        result["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result), flush=True)


def run(checkout: pathlib.Path, side: int, out: pathlib.Path, level: int | None) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(checkout.resolve()))
    extra = [] if level is None else ["--level", str(level)]
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(side), "--out", str(out), *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    json.loads(proc.stdout.readline())
    rss = TreeRss(proc.pid, interval=0.05)
    baseline = rss.sample()
    with rss:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
    proc.wait()
    result.update(peak=rss.peak, baseline=baseline)
    if "bytes" in result:
        result["check"] = _check(out, side)
        out.unlink()
    return result


def _check(path: pathlib.Path, side: int) -> str:
    """The file's IHDR: its size, bit depth and colour type."""
    import struct

    with open(path, "rb") as fh:
        head = fh.read(33)
    width, height, depth, ctype = struct.unpack(">IIBB", head[16:26])
    assert (width, height) == (side, side)
    return f"{depth}-bit, colour type {ctype}"


def filters_table(level: int) -> None:
    from PIL import Image

    from bigquant.io.png_write import PngLayout, filter_rows, pack_rows

    images = [(name, photo.astype(np.uint8)) for name, photo in real_photos()]
    mosaic = Mosaic((2048, 3072), seed=0).render(0, 2048, 0, 3072)
    mosaic = np.clip(mosaic + np.random.default_rng(0).normal(0, 2, mosaic.shape), 0, 255).astype(np.uint8)
    images.append(("mosaic 3072×2048", mosaic))
    images += [(f"{name}, 16 colours", np.asarray(Image.fromarray(img).quantize(K).convert("RGB")))
               for name, img in list(images)]
    names = ["none", "sub", "up", "average", "paeth", "adaptive"]
    print("| image | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for name, img in images:
        cells = []
        for f in names:
            layout = PngLayout(2, 8, filter=f)
            rows = pack_rows(img, layout)
            t0 = time.perf_counter()
            parts = [filter_rows(rows[y : y + 512], rows[y - 1] if y else None, layout)
                     for y in range(0, rows.shape[0], 512)]
            t1 = time.perf_counter()
            comp = zlib.compressobj(level, zlib.DEFLATED, 15, 8)
            size = sum(len(comp.compress(p)) for p in parts) + len(comp.flush())
            t2 = time.perf_counter()
            cells.append(f"{size / 1e3:.0f} kB, {1e3 * (t1 - t0):.0f}+{1e3 * (t2 - t1):.0f} ms")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nkB of IDAT data; ms filtering + ms zlib level {level}.")
    print(machine_line())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8192,16384", help="sides of the square images")
    parser.add_argument("--checkouts", default=str(HERE.parent), help="bigquant checkouts, comma-separated")
    parser.add_argument("--dir", default=None, help="where the PNGs go (default: a temporary directory)")
    parser.add_argument("--level", type=int, default=None,
                        help="compression_level passed to write_image (default: the writer's own)")
    parser.add_argument("--filters", action="store_true", help="print the row-filter table instead")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, pathlib.Path(args.out), args.level)
        return
    if args.filters:
        from bigquant.io.png_write import DEFAULT_LEVEL

        filters_table(DEFAULT_LEVEL if args.level is None else args.level)
        return
    base = pathlib.Path(args.dir or tempfile.mkdtemp(prefix="bq-png-"))
    print("| bigquant | image | wall s (write) | peak RSS (before the write) | file | result |")
    print("|---|---|---|---|---|---|")
    for side in (int(s) for s in args.sizes.split(",")):
        for checkout in (pathlib.Path(c).resolve() for c in args.checkouts.split(",")):
            r = run(checkout, side, base / f"k16-{side}.png", args.level)
            result = r.get("check") or str(r.get("error", ""))[:110]
            size = fmt_mb(float(r["bytes"])) if "bytes" in r else "-"
            print(f"| {checkout} | {side}² ({side * side / 1e6:.0f} MP) | {float(r['seconds']):.1f} | "
                  f"{fmt_mb(float(r['peak']))} ({fmt_mb(float(r['baseline']))}) | {size} | {result} |", flush=True)
    level = "the writer's default" if args.level is None else args.level
    print(f"\nk = {K}, compression_level {level}, labels from a lazy dask array (chunks {CHUNK}², threaded scheduler); "
          f"peak RSS sampled every 0.05 s; MB = {MB} bytes.")
    print(machine_line())


if __name__ == "__main__":
    main()
