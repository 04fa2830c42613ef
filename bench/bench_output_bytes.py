"""Output bytes of a k = 16 palette TIFF: bit packing x compression x predictor, against libvips' palette PNG.

The image: the photo mosaic of ``bench_peers.py`` (``_realfiles.Mosaic``,
2048-px cells, Gaussian noise of sigma 2), 8192² (67 MP) by default, reduced
to 16 colours by :class:`bigquant.KMeans` (cached with the labels in
``--workdir``).  ``--enlarge 2`` also measures the top-left quarter of the
labels enlarged 2x (nearest): smoother labels, as a higher-resolution scan of
the same scene gives, where long runs repeat the row above.

Two tables per image:

1. **Tile codecs** (one thread, no writer): every 512² tile of the labels
   encoded as 8-bit indices, as 8-bit with TIFF's horizontal predictor
   (differences along the row; libtiff refuses it on packed data), and packed
   4 bits an index (MSB first, :func:`bigquant.io.nbits.pack_rows`); CPU
   ns a pixel of the encode (packing included) and bytes.  zlib with
   ``Z_RLE`` at memLevel 6 is the writer's default before packing.
2. **The writer**: ``write_image(labels, "q.tif", palette=...)`` through
   the threaded scheduler, the labels in memory (512² chunks): wall seconds
   (median of ``--repeat``), CPU seconds of the process, bytes, and bytes
   extrapolated to 1.07 GP (x 1.07e9 / pixels); each file is read back by
   tifffile and GDAL (rasterio: NBITS, equal labels) and, when pyvips is
   installed, libvips.  Then bigquant's own palette PNG, and libvips'
   ``pngsave(palette=True, bitdepth=4, dither=0)`` of the RGB mosaic (what
   ``bench_peers.py`` times) and of bigquant's 16 colours (libimagequant then
   keeps the same 16 colours: the same picture in another container).

    python bench/bench_output_bytes.py                     # 67 MP, and 2x enlarged
    python bench/bench_output_bytes.py --side 4096 --enlarge 1 --repeat 1
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import statistics
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _realfiles as rf  # noqa: E402 - the shared helper next to this script

logger = logging.getLogger("bench.output_bytes")

K = 16
TILE = 512
CELL = 2048
NOISE = 2.0  # sigma of the mosaic's Gaussian noise, as bench_peers.py
GP = 1.07e9


# --------------------------------------------------------------------------- the image


def _mosaic(side: int, seed: int) -> np.ndarray:
    """The RGB mosaic as uint8 (side, side, 3), painted by bands on two threads."""
    mosaic = rf.Mosaic((side, side), cell=CELL, seed=seed)
    rgb = np.empty((side, side, 3), np.uint8)

    def band(y: int) -> None:
        part = mosaic.render(y, min(y + TILE, side), 0, side)
        part += np.random.default_rng([seed, y]).normal(0.0, NOISE, part.shape).astype(np.float32)
        rgb[y : y + part.shape[0]] = np.clip(np.rint(part), 0, 255).astype(np.uint8)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(band, range(0, side, TILE)))
    return rgb


def image(workdir: pathlib.Path, side: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB, labels, palette) of the mosaic at k = 16, cached in ``workdir``."""
    import dask.array as da

    import bigquant

    stem = workdir / f"bytes_{side}_s{seed}"
    files = [stem.with_name(f"{stem.name}_{n}.npy") for n in ("rgb", "labels", "palette")]
    if all(f.exists() for f in files):
        rgb, labels, palette = (np.load(f) for f in files)
        return rgb, labels, palette
    t0 = time.perf_counter()
    rgb = _mosaic(side, seed)
    x = da.from_array(rgb, chunks=(2048, 2048, 3))
    km = bigquant.KMeans(K, random_state=0).fit(x)
    labels = np.asarray(km.predict(x).compute()).astype(np.uint8)
    palette = np.clip(np.rint(km.cluster_centers_), 0, 255).astype(np.uint8)
    for f, a in zip(files, (rgb, labels, palette)):
        np.save(f, a)
    logger.info("mosaic %d² painted and fitted in %.0f s", side, time.perf_counter() - t0)
    return rgb, labels, palette


# --------------------------------------------------------------------------- table 1: tile codecs


def _tiles(labels: np.ndarray) -> list[np.ndarray]:
    h, w = labels.shape
    return [np.ascontiguousarray(labels[y : y + TILE, x : x + TILE])
            for y in range(0, h, TILE) for x in range(0, w, TILE)]


def _codecs() -> list[tuple[str, Callable[[bytes], bytes]]]:
    import imagecodecs

    def rle(b: bytes) -> bytes:
        obj = zlib.compressobj(6, zlib.DEFLATED, 15, 6, zlib.Z_RLE)
        return obj.compress(b) + obj.flush()

    def lib(level: int) -> Callable[[bytes], bytes]:
        return lambda b: imagecodecs.deflate_encode(b, level)

    def zstd(level: int) -> Callable[[bytes], bytes]:
        return lambda b: imagecodecs.zstd_encode(b, level)

    return [
        ("deflate zlib Z_RLE (before)", rle),
        ("deflate zlib 1", lambda b: zlib.compress(b, 1)),
        ("deflate zlib 6", lambda b: zlib.compress(b, 6)),
        ("deflate libdeflate 1", lib(1)),
        ("deflate libdeflate 4", lib(4)),
        ("deflate libdeflate 6 (now)", lib(6)),
        ("deflate libdeflate 9", lib(9)),
        ("zstd 1", zstd(1)), ("zstd 3", zstd(3)), ("zstd 9", zstd(9)),
        ("lzw", imagecodecs.lzw_encode),
        ("packbits", imagecodecs.packbits_encode),
        ("none", lambda b: b),
    ]


def tile_table(labels: np.ndarray) -> list[str]:
    """Table 1 (see the module docstring) as markdown lines."""
    import imagecodecs

    from bigquant.io.nbits import pack_rows

    tiles = _tiles(labels)
    layouts: dict[str, Callable[[np.ndarray], bytes]] = {
        "8-bit": lambda a: a.tobytes(),
        "8-bit + predictor 2": lambda a: imagecodecs.delta_encode(a, axis=-1).tobytes(),
        "4-bit packed": lambda a: pack_rows(a, 4).tobytes(),
    }
    npx = labels.size
    lines = ["| codec | indices | MB | ns/px CPU (1 thread) | MB at 1.07 GP |", "|---|---|---:|---:|---:|"]
    for name, codec in _codecs():
        for layout, prepare in layouts.items():
            t0 = time.process_time()
            n = sum(len(codec(prepare(a))) for a in tiles)
            ns = (time.process_time() - t0) / npx * 1e9
            lines.append(f"| {name} | {layout} | {n / 1e6:.2f} | {ns:.1f} | {n / npx * GP / 1e6:.0f} |")
            logger.info(lines[-1])
    return lines


# --------------------------------------------------------------------------- table 2: the writer


def _readers(path: pathlib.Path, labels: np.ndarray, palette: np.ndarray) -> str:
    """Which readers give the labels (or their colours) back: tifffile, GDAL (NBITS), libvips."""
    import tifffile

    out = []
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        ok = np.array_equal(page.asarray(), labels)
        out.append(f"tifffile {page.bitspersample}-bit {'ok' if ok else 'DIFFERS'}")
    try:
        import rasterio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(path) as ds:
                nbits = ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS", "8")
                ok = np.array_equal(ds.read(1), labels)
        out.append(f"GDAL NBITS={nbits} {'ok' if ok else 'DIFFERS'}")
    except ImportError:
        out.append("GDAL: no rasterio")
    try:
        import pyvips

        v = pyvips.Image.new_from_file(str(path), access="sequential")
        crop = v.crop(0, 0, 1024, 1024)
        arr = np.ndarray(buffer=crop.write_to_memory(), dtype=np.uint8, shape=(1024, 1024, crop.bands))
        ok = np.array_equal(arr[..., :3], palette[labels[:1024, :1024]])
        out.append(f"libvips {'ok' if ok else 'DIFFERS'}")
    except ImportError:
        out.append("libvips: no pyvips")
    return ", ".join(out)


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (user + sys of this process) of ``fn``."""
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = sum(os.times()[:2]), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(sum(os.times()[:2]) - c0)
    return statistics.median(walls), statistics.median(cpus)


def writer_table(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, out_dir: pathlib.Path,
                 repeat: int) -> list[str]:
    """Table 2 (see the module docstring) as markdown lines."""
    import dask
    import dask.array as da

    from bigquant import write_image

    arr = da.from_array(labels, chunks=(TILE, TILE))
    npx = labels.size
    runs: list[tuple[str, dict[str, Any]]] = [
        ("TIFF deflate, 4-bit (default)", {}),
        ("TIFF deflate, 8-bit (nbits=8)", {"nbits": 8}),
        ("TIFF deflate level 1, 4-bit", {"compression_level": 1}),
        ("TIFF deflate level 9, 4-bit", {"compression_level": 9}),
        ("TIFF zstd, 4-bit", {"compression": "zstd"}),
        ("TIFF zstd, 8-bit", {"compression": "zstd", "nbits": 8}),
        ("TIFF zstd level 9, 4-bit", {"compression": "zstd", "compression_level": 9}),
        ("TIFF lzw, 4-bit", {"compression": "lzw"}),
        ("TIFF uncompressed, 4-bit", {"compression": None}),
        ("TIFF uncompressed, 8-bit", {"compression": None, "nbits": 8}),
    ]
    lines = ["| output | wall s | CPU s | MB | MB at 1.07 GP | read back |", "|---|---:|---:|---:|---:|---|"]
    for name, kwargs in runs:
        path = out_dir / "q.tif"

        def write(kwargs: dict[str, Any] = kwargs, path: pathlib.Path = path) -> None:
            with dask.config.set(scheduler="threads"):
                write_image(arr, path, palette=palette, tile=TILE, overwrite=True, **kwargs)

        wall, cpu = _timed(write, repeat)
        size = path.stat().st_size
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {size / 1e6:.2f} | {size / npx * GP / 1e6:.0f} | "
                     f"{_readers(path, labels, palette)} |")
        logger.info(lines[-1])
        path.unlink()
    png = out_dir / "q.png"

    def write_png() -> None:
        with dask.config.set(scheduler="threads"):
            write_image(arr, png, palette=palette, tile=TILE, overwrite=True)

    wall, cpu = _timed(write_png, repeat)
    size = png.stat().st_size
    lines.append(f"| bigquant palette PNG (4-bit) | {wall:.2f} | {cpu:.2f} | {size / 1e6:.2f} | "
                 f"{size / npx * GP / 1e6:.0f} | |")
    png.unlink()
    try:
        import pyvips
    except ImportError:
        lines.append("| libvips palette PNG | pyvips not installed (pip install pyvips pyvips-binary) | | | | |")
        return lines
    for name, pixels in (("libvips palette PNG of the RGB mosaic (libimagequant, 16 colours)", rgb),
                         ("libvips palette PNG of bigquant's 16 colours", None)):
        vpng = out_dir / "v.png"

        def vips(pixels: np.ndarray | None = pixels) -> None:
            data = np.ascontiguousarray(palette[labels] if pixels is None else pixels)
            im = pyvips.Image.new_from_memory(data.data, data.shape[1], data.shape[0], 3, "uchar")
            im.pngsave(str(vpng), palette=True, bitdepth=4, dither=0)

        wall, cpu = _timed(vips, 1)
        size = vpng.stat().st_size
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {size / 1e6:.2f} | {size / npx * GP / 1e6:.0f} | |")
        logger.info(lines[-1])
        vpng.unlink()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=8192, help="mosaic side in pixels (default 8192: 67 MP)")
    parser.add_argument("--enlarge", type=int, nargs="*", default=[1, 2],
                        help="enlargements of the labels to measure (default 1 2)")
    parser.add_argument("--repeat", type=int, default=3, help="writer runs per row (median; default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path(tempfile.gettempdir()) / "bench_bytes",
                        help="cache of the mosaic and its labels")
    parser.add_argument("--no-tiles", action="store_true", help="skip the tile codec table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("bigquant", "pyvips"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    rgb, labels, palette = image(args.workdir, args.side, args.seed)
    for factor in args.enlarge:
        if factor == 1:
            lab, pix, title = labels, rgb, "the photo mosaic"
        else:
            part = args.side // factor
            lab = np.ascontiguousarray(labels[:part, :part].repeat(factor, 0).repeat(factor, 1))
            pix = np.ascontiguousarray(rgb[:part, :part].repeat(factor, 0).repeat(factor, 1))
            title = f"its top-left quarter enlarged {factor}x (nearest)" if factor == 2 else f"enlarged {factor}x"
        print(f"\n## k = {K}, {rf.size_label(*lab.shape)}: {title}\n")
        if not args.no_tiles:
            print("\n".join(tile_table(lab)) + "\n")
        with tempfile.TemporaryDirectory(dir=args.workdir) as d:
            print("\n".join(writer_table(pix, lab, palette, pathlib.Path(d), args.repeat)))
    print(f"\n{rf.machine_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
