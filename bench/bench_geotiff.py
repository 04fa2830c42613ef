"""GeoTIFF benchmark: a uint16 4-band satellite-like scene, bare read vs bigquant end to end.

Builds once (cached in ``--workdir``) a GeoTIFF the way GDAL-based pipelines
write surface reflectance products:

- uint16, 4 bands (blue, green, red, near infrared) pixel-interleaved,
  256 x 256 tiles, deflate with the horizontal predictor, BigTIFF;
- georeferenced in EPSG:32633 (WGS 84 / UTM zone 33N), 10 m pixels
  (ModelPixelScale, ModelTiepoint, GeoKeyDirectory, GeoAsciiParams), with
  GDAL_NODATA = 0;
- a nodata border around a rotated, slightly ragged valid footprint (like a
  satellite scene in its map grid: about 70% of the pixels are valid);
- band values derived from real photographs (``_realfiles.Mosaic``) mapped to
  reflectance-like values 1..10000 with per-band response curves and noise.

It is written in bounded memory (tiles painted on a thread pool, streamed to
tifffile, which applies the predictor and deflate).  Then it measures:

- a bare read: every tile read (``os.pread``) and decoded by tifffile's own
  decoder (deflate + predictor, imagecodecs) on a thread per core, pixels
  dropped;
- ``bigquant quantize IN OUT.tif -k 16`` as a subprocess (default
  LocalCluster), peak RSS of its process tree sampled every 0.2 s (and, with
  ``--runs cli,threads``, ``bigquant.quantize`` in this process on threads);

and prints Markdown tables, then what rasterio sees in the input and the
output (CRS, transform, nodata, colormap size).  Target: end to end <= 2.5 x
the bare read, peak RSS <= 1.5 GB.

    .venv/bin/python bench/bench_geotiff.py                      # 268 MP (16384 x 16384)
    .venv/bin/python bench/bench_geotiff.py --megapixels 16 -v   # 4096 x 4096, for development
"""

from __future__ import annotations

import argparse
import logging
import math
import pathlib
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _realfiles as rf  # noqa: E402 - the shared helper next to this script

logger = logging.getLogger("bench.geotiff")

TILE = 256
NODATA = 0
EPSG = 32633
CITATION = "WGS 84 / UTM zone 33N"
ORIGIN = (399960.0, 5900040.0)  # upper-left corner (x, y) in metres
PIXEL = 10.0  # metres
ANGLE = math.radians(12.0)  # rotation of the scene's footprint in the map grid


def geotiff_extratags(nodata: int | None) -> list[tuple[int, int, int, Any, bool]]:
    """tifffile ``extratags`` of a north-up projected GeoTIFF (PixelIsArea, metres)."""
    ascii_params = CITATION + "|"
    keys = [1, 1, 0, 5,                          # version 1.1.0, 5 keys
            1024, 0, 1, 1,                       # GTModelTypeGeoKey = ModelTypeProjected
            1025, 0, 1, 1,                       # GTRasterTypeGeoKey = RasterPixelIsArea
            1026, 34737, len(ascii_params), 0,   # GTCitationGeoKey -> GeoAsciiParams
            3072, 0, 1, EPSG,                    # ProjectedCSTypeGeoKey
            3076, 0, 1, 9001]                    # ProjLinearUnitsGeoKey = metre
    tags = [(33550, 12, 3, (PIXEL, PIXEL, 0.0), True),                        # ModelPixelScale
            (33922, 12, 6, (0.0, 0.0, 0.0, ORIGIN[0], ORIGIN[1], 0.0), True),  # ModelTiepoint
            (34735, 3, len(keys), tuple(keys), True),                         # GeoKeyDirectory
            (34737, 2, 0, ascii_params, True)]                                # GeoAsciiParams
    if nodata is not None:
        tags.append((42113, 2, 0, str(nodata), True))                         # GDAL_NODATA
    return tags


class Scene:
    """Pixels of the synthetic scene: 4 reflectance bands inside a rotated footprint."""

    def __init__(self, side: int, seed: int) -> None:
        self.side = side
        self.seed = seed
        self.mosaic = rf.Mosaic((side, side), cell=1024, seed=seed, scale=(1.0, 3.0))
        # half-size of the largest square turned by ANGLE that fits, a little inside the frame
        self.half = 0.985 * side / (2 * (math.cos(ANGLE) + math.sin(ANGLE)))

    def footprint(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """True where the scene has data."""
        c = self.side / 2
        dy = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - c
        dx = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - c
        u = dx * math.cos(ANGLE) + dy * math.sin(ANGLE)
        v = -dx * math.sin(ANGLE) + dy * math.cos(ANGLE)
        # ragged edges: detector stagger along track, a few pixels
        ragged = 3.0 * np.sign(np.sin(v / 23.0)) + 2.0 * np.sin(u / 57.0)
        return (np.abs(u) <= self.half + ragged) & (np.abs(v) <= self.half)

    def tile(self, win: tuple[int, int, int, int]) -> np.ndarray:
        """The window as uint16 (h, w, 4): blue, green, red, NIR; 0 outside the footprint."""
        y0, y1, x0, x1 = win
        valid = self.footprint(y0, y1, x0, x1)
        out = np.zeros((y1 - y0, x1 - x0, 4), dtype=np.uint16)
        if not valid.any():
            return out
        p = np.clip(self.mosaic.render(y0, y1, x0, x1) / 255.0, 0.0, 1.0)
        b, g, r = p[..., 2], p[..., 1], p[..., 0]
        bands = np.empty(out.shape, dtype=np.float32)
        bands[..., 0] = 250 + 1800 * b ** 1.3                       # blue: dark, low contrast
        bands[..., 1] = 350 + 2600 * g ** 1.2
        bands[..., 2] = 200 + 3400 * r ** 1.2
        vigour = np.clip(g - 0.6 * r + 0.45, 0.0, 1.0)              # "vegetation" is bright in NIR
        bands[..., 3] = 1200 + 8200 * vigour ** 1.1 * (0.55 + 0.45 * (g + r) / 2)
        rng = np.random.default_rng([self.seed, y0, x0])
        bands += rng.normal(0.0, 18.0, size=bands.shape).astype(np.float32)
        np.clip(bands, 1, 10000, out=bands)
        out[valid] = np.rint(bands[valid]).astype(np.uint16)
        return out


def build_scene(path: pathlib.Path, side: int, *, seed: int, threads: int) -> None:
    """Write the GeoTIFF to ``path`` in bounded memory (see the module docstring)."""
    import tifffile

    scene = Scene(side, seed)
    windows = list(rf.tile_windows(side, side, TILE))
    t0 = time.perf_counter()
    with rf.building(path) as tmp, ThreadPoolExecutor(threads) as pool:

        def tiles() -> Iterator[np.ndarray]:
            per_row = -(-side // TILE)
            for n, block in enumerate(rf.ordered_map(pool, scene.tile, iter(windows),
                                                     ahead=4 * threads)):
                if (n + 1) % (per_row * max(1, per_row // 8)) == 0:
                    logger.info("%d / %d tile rows (%.0f s)", (n + 1) // per_row, per_row,
                                time.perf_counter() - t0)
                yield rf.pad_tile(block, TILE)

        tifffile.imwrite(
            tmp, tiles(), shape=(side, side, 4), dtype=np.uint16, tile=(TILE, TILE),
            photometric="minisblack", planarconfig="contig", extrasamples=(0, 0, 0),
            compression="zlib", predictor=True, bigtiff=True, metadata=None, software=False,
            extratags=geotiff_extratags(NODATA), maxworkers=1,  # the pool paints; threaded
            # compression in tifffile would buffer many tiles
        )
    logger.info("built %s: %s in %.0f s", path.name, rf.fmt_mb(path.stat().st_size),
                time.perf_counter() - t0)


def check_scene(path: pathlib.Path, side: int) -> dict[str, Any] | None:
    """Layout of a cached scene, or None when it is missing or not the expected file."""
    import tifffile

    if not path.exists():
        return None
    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            ok = (page.shape == (side, side, 4) and page.dtype == np.uint16 and page.is_geotiff
                  and page.is_tiled and page.nodata == NODATA)
            info = {"tiles": len(page.dataoffsets), "bytes": int(sum(page.databytecounts)),
                    "compression": page.compression.name, "predictor": page.predictor.name}
    except Exception as exc:  # noqa: BLE001 - an unreadable cache is rebuilt
        logger.info("%s is not a usable scene (%s); rebuilding", path, exc)
        return None
    return info if ok else None


def describe(path: pathlib.Path) -> dict[str, str]:
    """What rasterio (GDAL) sees: CRS, transform, nodata, colormap, bands, nodata pixels."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            try:
                cmap = src.colormap(1)
            except ValueError:
                colormap = "none"
            else:
                distinct = len({tuple(v) for v in cmap.values()})
                colormap = f"{len(cmap)} entries, {distinct} distinct"
                if src.nodata is not None and int(src.nodata) in cmap:
                    colormap += f"; nodata entry {int(src.nodata)} = {tuple(cmap[int(src.nodata)])}"
            crs = src.crs.to_string() if src.crs else "none"
            transform = ("none (identity: not georeferenced)" if src.transform.is_identity
                         else ", ".join(f"{v:g}" for v in tuple(src.transform)[:6]))
            # nodata pixels: read band 1 on a decimated grid (overview-sized, cheap)
            step = max(1, max(src.width, src.height) // 1024)
            band = src.read(1, out_shape=(src.height // step, src.width // step))
            if src.nodata is not None:
                share = f"{float(np.mean(band == src.nodata)):.1%} of pixels (sampled)"
            else:
                share = "no nodata value"
            return {
                "driver / size": f"{src.driver}, {src.width}×{src.height}",
                "bands / dtype": f"{src.count} × {src.dtypes[0]}, {src.colorinterp[0].name}...",
                "CRS": crs,
                "transform": transform,
                "nodata": "none" if src.nodata is None else f"{src.nodata:g}",
                "nodata pixels": share,
                "colormap (band 1)": colormap,
                "compression / block": f"{src.compression.name if src.compression else 'none'}, "
                                       f"{src.block_shapes[0][0]}×{src.block_shapes[0][1]}",
            }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    rf.add_common_arguments(parser, what="scene", default_mp=256, side=16384, default_runs="cli",
                            pass_name="bare read")
    args, runs, threads = rf.parse_common(parser, argv)

    side = rf.side_for(args.megapixels, TILE)
    args.workdir.mkdir(parents=True, exist_ok=True)
    scene = args.workdir / f"scene_{side}_u16x4_deflate_s{args.seed}.tif"
    info = None if args.rebuild else check_scene(scene, side)
    if info is None:
        logger.info("building %s (%d x %d x 4 uint16)", scene, side, side)
        build_scene(scene, side, seed=args.seed, threads=threads)
        info = check_scene(scene, side)
        if info is None:
            raise SystemExit(f"{scene}: the built scene does not read back as expected")
    else:
        logger.info("using the cached %s", scene)
    logger.info("scene: %s", info)

    outdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-geotiff-", dir=args.workdir))
    rows: list[tuple[str, rf.Run, int]] = []
    described: dict[str, dict[str, str]] = {"input": describe(scene)}
    try:
        logger.info("bare read pass (%d threads)", threads)
        bare = rf.measure_bare(scene, threads=threads, repeat=args.repeat)
        logger.info("bare read: %.2f s, %.0f Mpx/s, peak %s", bare.seconds,
                    bare.notes["pixels"] / 1e6 / bare.seconds, rf.fmt_gb(bare.peak))
        out = outdir / "quantized.tif"
        if "cli" in runs:
            run, size, seen = rf.quantize_cli(scene, out, args.k, args.repeat, inspect=describe)
            rows.append(("`bigquant quantize` (CLI)", run, size))
            if seen is not None:
                described["output (CLI)"] = seen
        if "threads" in runs:
            run, size, seen = rf.quantize_threads(scene, out, args.k, args.repeat, inspect=describe)
            rows.append(("`bigquant.quantize()` (threads, in-process)", run, size))
            if seen is not None:
                described["output (threads)"] = seen
    finally:
        rf.clean_dir(outdir)
        if args.clean:
            scene.unlink(missing_ok=True)

    print(rf.results_tables(rf.size_label(side, side) + ", uint16 × 4", bare, rows,
                            bare_name="bare read", k=args.k, max_ratio=args.max_ratio,
                            max_gb=args.max_gb))
    print()
    names = list(described)
    print("| rasterio | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key in described["input"]:
        print(f"| {key} | " + " | ".join(described[n].get(key, "?") for n in names) + " |")
    print()
    print("\n".join([
        f"image: GeoTIFF ({scene.name}), {side}×{side}, uint16 × 4 bands (B, G, R, NIR) contig, "
        f"{TILE}² tiles, deflate + horizontal predictor, {rf.fmt_mb(info['bytes'])} of tiles "
        f"({info['tiles']} tiles), EPSG:{EPSG}, {PIXEL:g} m, GDAL_NODATA={NODATA}, "
        f"footprint turned {math.degrees(ANGLE):g}°; bands derived from real photos.",
        f"bare read: every tile read with os.pread and decoded by TiffPage.decode (imagecodecs "
        f"deflate + predictor) on {threads} threads, pixels dropped; file in the page cache; "
        f"peak {rf.fmt_gb(bare.peak)}.",
        f"CLI: `bigquant quantize IN OUT.tif -k {args.k} --random-state 0 --no-progress -v` in a subprocess "
        "(time includes interpreter start, imports and the LocalCluster); peak RSS = CLI + scheduler "
        "+ nannies + workers, sampled every 0.2 s.",
        *([f"threads: `bigquant.quantize(IN, OUT, {args.k}, random_state=0)` on dask's threaded scheduler, "
            "after an untimed warm-up; peak RSS = this whole process "
            f"(it held {rf.fmt_gb(rows[-1][1].notes['baseline'])} before the run)."]
          if rows and "baseline" in rows[-1][1].notes else []),
        f"times: median of {args.repeat} run(s); fit and write from bigquant's INFO log lines "
        "(uint16 data take the pixel strategy: fit = reading every tile once (persisted in memory "
        "when it fits), k-means++ on a sample and one pass over every pixel per Lloyd iteration; "
        "write = a second read of every tile, nearest centre per pixel, deflate, write).",
        rf.machine_line(),
    ]))


if __name__ == "__main__":
    main()
