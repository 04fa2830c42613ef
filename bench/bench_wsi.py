"""Whole-slide benchmark: an Aperio-like JPEG slide, bare decode vs bigquant end to end.

Builds once (cached in ``--workdir``) a pyramidal BigTIFF laid out like an
Aperio ``.svs`` file, painted from real photographs (see ``_realfiles.Mosaic``:
a grid of cells, each a photo shipped by matplotlib / scikit-learn, enlarged,
cropped, flipped and colour-mixed its own way, on a near-white "glass"
background outside an irregular "tissue" region, with per-pixel noise):

- IFD0: level 0, 256 x 256 tiles, JPEG quality 90 with shared JPEGTables
  (tiles pre-encoded with imagecodecs and split into tables + abbreviated
  streams, as Aperio scanners write them); ``--jpeg rgb`` (default, Aperio's
  "JPEG/RGB": no colour transform) or ``ycbcr`` (4:2:0);
- IFD1: stripped JPEG thumbnail; IFD2...: the reduced levels /4, /16, ...
  (tiled, NewSubfileType 0, as Aperio writes them); then the label (LZW) and
  the macro image (JPEG), with Aperio ImageDescriptions.

It is written in bounded memory: level-0 tiles are painted and encoded on a
thread pool and streamed to tifffile a few tile rows ahead; each tile's 4x box
reduction is appended to a raw file from which the reduced levels are made.

Then, in one run, it measures on level 0:

- a bare decode pass: every level-0 tile read (``os.pread``) and decoded by
  tifffile's own decoder (imagecodecs JPEG with the JPEGTables) on a thread per
  core, pixels dropped (``_realfiles.bare_pass``);
- ``bigquant quantize SLIDE OUT.tif -k 16`` as a subprocess (on its own
  threads, the CLI's default), peak RSS of its process tree sampled every 0.2 s;
- ``bigquant.quantize(SLIDE, OUT.tif, 16)`` in this process on dask's threaded
  scheduler (after an untimed warm-up on a tiny image), peak RSS of this process;

and prints Markdown tables (stdout; progress on stderr).  Targets (issue #25): end to end
<= 3.5 x the bare decode through the CLI, <= 3 x in-process, peak RSS <= 1.5 GB.

    .venv/bin/python bench/bench_wsi.py                      # 1 GP (32768 x 32768)
    .venv/bin/python bench/bench_wsi.py --megapixels 64 -v   # 8192 x 8192, for development
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _realfiles as rf  # noqa: E402 - the shared helper next to this script

logger = logging.getLogger("bench.wsi")

APERIO = "Aperio Image Library v12.0.15"
TILE = 256
NOISE = 3  # uniform integer noise in [-NOISE, NOISE] per sample
GLASS = np.array([238.0, 236.0, 241.0], dtype=np.float32)  # background outside the tissue


# --------------------------------------------------------------------------- JPEG streams


def _jpeg_segments(buf: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment of a JPEG, up to and including SOS."""
    if buf[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    i = 2
    while i < len(buf):
        if buf[i] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {i}")
        marker = buf[i + 1]
        (length,) = struct.unpack(">H", buf[i + 2:i + 4])
        yield marker, i, i + 2 + length
        if marker == 0xDA:  # SOS: entropy-coded data follows
            return
        i += 2 + length


def split_jpeg(buf: bytes, *, drop_app: bool) -> tuple[bytes, bytes]:
    """Split a JPEG into TIFF JPEGTables (SOI DQT DHT EOI) and the abbreviated stream.

    ``drop_app`` also removes the APPn markers (JFIF, Adobe) from the stream,
    as in Aperio's RGB tiles (component ids 'R', 'G', 'B' tell decoders there
    is no colour transform).
    """
    tables, rest, last = [b"\xff\xd8"], [b"\xff\xd8"], 0
    for marker, start, end in _jpeg_segments(buf):
        if marker in (0xDB, 0xC4):  # DQT, DHT
            tables.append(buf[start:end])
        elif not (drop_app and 0xE0 <= marker <= 0xEF):
            rest.append(buf[start:end])
        last = end
    rest.append(buf[last:])
    tables.append(b"\xff\xd9")
    return b"".join(tables), b"".join(rest)


class JpegTiles:
    """Encode tiles as abbreviated JPEG streams sharing one JPEGTables."""

    def __init__(self, quality: int, colour: str) -> None:
        self.quality = quality
        self.colour = colour
        self.kwargs: dict[str, Any] = {"level": quality, "optimize": False}  # standard Huffman tables
        if colour == "rgb":
            self.kwargs.update(colorspace="rgb", outcolorspace="rgb")
        self.tables = self._split(np.zeros((TILE, TILE, 3), np.uint8))[0]

    def _split(self, tile: np.ndarray) -> tuple[bytes, bytes]:
        import imagecodecs

        full = imagecodecs.jpeg8_encode(tile, **self.kwargs)
        return split_jpeg(bytes(full), drop_app=self.colour == "rgb")

    def encode(self, tile: np.ndarray) -> bytes:
        tables, stream = self._split(tile)
        if tables != self.tables:
            raise RuntimeError("JPEG tables differ between tiles; cannot share JPEGTables")
        return stream

    def tiff_kwargs(self) -> dict[str, Any]:
        """TiffWriter.write arguments giving these tiles' Photometric and subsampling."""
        if self.colour == "ycbcr":
            return {"photometric": "rgb", "compression": "jpeg", "subsampling": (2, 2)}
        return {"photometric": "rgb", "compression": "jpeg", "subsampling": (1, 1),
                "compressionargs": {"outcolorspace": "rgb"}}


# --------------------------------------------------------------------------- the slide


class Slide:
    """Pixels of the synthetic slide: photo mosaic inside the tissue, glass outside."""

    def __init__(self, side: int, seed: int) -> None:
        self.side = side
        self.seed = seed
        self.mosaic = rf.Mosaic((side, side), cell=2048, seed=seed)
        rng = np.random.default_rng([seed, 11])
        self.phase = rng.uniform(0, 2 * np.pi, 3)

    def tissue(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Opacity of the tissue in [0, 1]: an irregular blob over about 60% of the slide.

        Computed on a 4 px grid (the edge is hundreds of pixels wide), then repeated.
        """
        c = self.side / 2
        ys = np.arange(y0, y1, 4, dtype=np.float32) + 2.0
        xs = np.arange(x0, x1, 4, dtype=np.float32) + 2.0
        dy = (ys[:, None] - c) / (0.47 * self.side)
        dx = (xs[None, :] - c) / (0.49 * self.side)
        dist = np.sqrt(dy * dy + dx * dx)
        theta = np.arctan2(dy, dx)
        p = self.phase
        radius = 1 + 0.10 * np.sin(3 * theta + p[0]) + 0.05 * np.sin(7 * theta + p[1]) \
            - 0.06 * (1 + np.sin(2 * theta + p[2]))
        alpha = np.clip((radius - dist) / 0.02, 0.0, 1.0)
        return alpha.repeat(4, axis=0).repeat(4, axis=1)[:y1 - y0, :x1 - x0]

    def tile(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The window as uint8 RGB."""
        alpha = self.tissue(y0, y1, x0, x1)[..., None]
        if alpha.min() == 1:
            rgb = self.mosaic.render(y0, y1, x0, x1)
        elif alpha.max() > 0:
            rgb = self.mosaic.render(y0, y1, x0, x1)
            rgb = rgb * alpha + GLASS * (1 - alpha)
        else:
            rgb = np.broadcast_to(GLASS, (y1 - y0, x1 - x0, 3)).copy()
        rng = np.random.default_rng([self.seed, y0, x0])
        rgb += rng.integers(-NOISE, NOISE + 1, size=rgb.shape, dtype=np.int8)
        np.clip(rgb, 0, 255, out=rgb)
        return np.rint(rgb).astype(np.uint8)


def level_sides(side: int) -> list[int]:
    """Aperio-like pyramid: each level a quarter of the one above, down to >= 512 px."""
    sides = [side]
    while sides[-1] // 4 >= 512:
        sides.append(sides[-1] // 4)
    return sides


def _description(side: int, level_side: int | None, jpeg: JpegTiles) -> str:
    comp = f"JPEG/{jpeg.colour.upper()} Q={jpeg.quality}"
    head = f"{APERIO} \r\n{side}x{side} [0,0 {side}x{side}] ({TILE}x{TILE})"
    if level_side is not None:
        head += f" -> {level_side}x{level_side}"
    return (f"{head} {comp}|AppMag = 20|StripeWidth = 2040|ScanScope ID = SS9999|"
            f"Filename = bigquant-bench|Date = 11/26/26|Time = 12:00:00|Time Zone = GMT+00:00|"
            f"User = bench|MPP = 0.4990|Left = 25.000000|Top = 18.000000|LineCameraSkew = 0|"
            f"LineAreaXOffset = 0|LineAreaYOffset = 0|Focus Offset = 0|ImageID = 1|"
            f"OriginalWidth = {side}|Originalheight = {side}|Filtered = 5")


def _raw_bands(path: pathlib.Path, side: int, rows: int) -> Iterator[np.ndarray]:
    """Bands of ``rows`` rows of a raw (side, side, 3) uint8 file."""
    row_bytes = side * 3
    with open(path, "rb") as fh:
        for y0 in range(0, side, rows):
            n = min(rows, side - y0)
            band = np.fromfile(fh, dtype=np.uint8, count=n * row_bytes).reshape(n, side, 3)
            yield band


def _reduce_raw(src: pathlib.Path, src_side: int, dst: pathlib.Path) -> None:
    """Write the 4x box reduction of a raw level, a band at a time."""
    with open(dst, "wb") as out:
        for band in _raw_bands(src, src_side, 4 * TILE):
            out.write(rf.box_down(band, 4).tobytes())


def build_slide(path: pathlib.Path, side: int, *, quality: int, colour: str, seed: int,
                threads: int) -> None:
    """Write the Aperio-like slide to ``path`` in bounded memory (see the module docstring)."""
    import tifffile
    from PIL import Image

    jpeg = JpegTiles(quality, colour)
    slide = Slide(side, seed)
    sides = level_sides(side)
    per_row = -(-side // TILE)
    raws = [path.with_name(f".{path.name}.level{i}.raw") for i in range(len(sides))]
    common = {"metadata": None, "software": False}
    t0 = time.perf_counter()
    try:
        with rf.building(path) as tmp, ThreadPoolExecutor(threads) as pool, \
                tifffile.TiffWriter(tmp, bigtiff=True) as tw:

            def level0_job(win: tuple[int, int, int, int]) -> tuple[bytes, np.ndarray]:
                block = slide.tile(*win)
                return jpeg.encode(rf.pad_tile(block, TILE)), rf.box_down(block, 4)

            def level0() -> Iterator[bytes]:
                band = np.zeros((TILE // 4, side // 4, 3), np.uint8)
                windows = list(rf.tile_windows(side, side, TILE))
                with open(raws[1] if len(sides) > 1 else os.devnull, "wb") as raw:
                    for n, (stream, small) in enumerate(rf.ordered_map(
                            pool, level0_job, iter(windows), ahead=4 * threads)):
                        y0, _, x0, x1 = windows[n]
                        band[:small.shape[0], x0 // 4:x0 // 4 + small.shape[1]] = small
                        if x1 == side:  # a tile row done: its reduction goes to the raw file
                            rows = min(TILE, side - y0) // 4
                            raw.write(band[:rows].tobytes())
                            done = (n + 1) // per_row
                            if done % max(1, per_row // 8) == 0:
                                logger.info("level 0: %d / %d tile rows (%.0f s)", done, per_row,
                                            time.perf_counter() - t0)
                        yield stream

            tw.write(level0(), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE),
                     jpegtables=jpeg.tables, description=_description(side, None, jpeg),
                     subfiletype=0, **jpeg.tiff_kwargs(), **common)
            for i in range(2, len(sides)):
                _reduce_raw(raws[i - 1], sides[i - 1], raws[i])
            if len(sides) > 1:
                smallest = np.fromfile(raws[-1], dtype=np.uint8).reshape(sides[-1], sides[-1], 3)
            else:
                smallest = slide.tile(0, side, 0, side)
            # IFD1: the thumbnail, JPEG strips
            tside = min(1024, sides[-1])
            thumb = np.asarray(Image.fromarray(smallest).resize((tside, tside), Image.BOX))
            tw.write(thumb, rowsperstrip=16, compression="jpeg", compressionargs={"level": quality},
                     photometric="rgb", subfiletype=0,
                     description=f"{APERIO} \r\n{side}x{side} -> {tside}x{tside} - |AppMag = 20|"
                                 "MPP = 0.4990", **common)
            # IFD2...: the reduced levels
            for i in range(1, len(sides)):
                s = sides[i]

                def tiles_of_level(raw: pathlib.Path = raws[i], s: int = s) -> Iterator[np.ndarray]:
                    for y0, band in zip(range(0, s, TILE), _raw_bands(raw, s, TILE)):
                        for x0 in range(0, s, TILE):
                            yield rf.pad_tile(band[:, x0:x0 + TILE], TILE)

                streams = rf.ordered_map(pool, jpeg.encode, tiles_of_level(), ahead=4 * threads)
                tw.write(streams, shape=(s, s, 3), dtype=np.uint8, tile=(TILE, TILE),
                         jpegtables=jpeg.tables, description=_description(side, s, jpeg),
                         subfiletype=0, **jpeg.tiff_kwargs(), **common)
                logger.info("level %d (%d x %d) written", i, s, s)
            # label (LZW strips, NewSubfileType 1) and macro (JPEG strips, NewSubfileType 9)
            label = np.full((463, 387, 3), 250, np.uint8)
            label[60:400:12, 40:350] = 20
            label[420:440, 40:200] = 60
            tw.write(label, photometric="rgb", compression="lzw", rowsperstrip=16, subfiletype=1,
                     description=f"{APERIO}\r\nlabel {label.shape[1]}x{label.shape[0]}", **common)
            macro = np.full((431, 1280, 3), 225, np.uint8)
            macro[:, :380] = 245  # the slide's label end
            inset = np.asarray(Image.fromarray(smallest).resize((420, 420), Image.BOX))
            macro[5:425, 620:1040] = inset
            tw.write(macro, photometric="rgb", compression="jpeg", rowsperstrip=16, subfiletype=9,
                     description=f"{APERIO}\r\nmacro {macro.shape[1]}x{macro.shape[0]}", **common)
    finally:
        for raw in raws:
            raw.unlink(missing_ok=True)
    logger.info("built %s: %s in %.0f s", path.name, rf.fmt_mb(path.stat().st_size),
                time.perf_counter() - t0)


def check_slide(path: pathlib.Path, side: int) -> dict[str, Any] | None:
    """Layout of a cached slide, or None when it is missing or not the expected file."""
    import tifffile

    if not path.exists():
        return None
    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            ser = tf.series[0]
            ok = (tf.is_svs and ser.shape == (side, side, 3) and page.jpegtables is not None
                  and len(ser.levels) == len(level_sides(side)))
            info = {"levels": [lev.shape[:2] for lev in ser.levels],
                    "series": [s.name for s in tf.series],
                    "photometric": page.photometric.name, "tiles": len(page.dataoffsets),
                    "level0_bytes": int(sum(page.databytecounts))}
    except Exception as exc:  # noqa: BLE001 - an unreadable cache is rebuilt
        logger.info("%s is not a usable slide (%s); rebuilding", path, exc)
        return None
    return info if ok else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    rf.add_common_arguments(parser, what="slide", default_mp=1024, side=32768, default_runs="cli,threads",
                            pass_name="bare decode")
    parser.set_defaults(max_ratio=3.5)  # through the CLI
    parser.add_argument("--max-ratio-in-process", type=float, default=3.0,
                        help="time target of the in-process run, in bare decodes (default 3)")
    parser.add_argument("--jpeg", choices=("rgb", "ycbcr"), default="rgb",
                        help="tile colour space: Aperio JPEG/RGB (default) or YCbCr 4:2:0")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    args, runs, threads = rf.parse_common(parser, argv)

    side = rf.side_for(args.megapixels, 4 * TILE)
    args.workdir.mkdir(parents=True, exist_ok=True)
    slide = args.workdir / f"slide_{side}_{args.jpeg}_q{args.quality}_s{args.seed}.svs"
    info = None if args.rebuild else check_slide(slide, side)
    if info is None:
        logger.info("building %s (%d x %d, %d levels)", slide, side, side, len(level_sides(side)))
        build_slide(slide, side, quality=args.quality, colour=args.jpeg, seed=args.seed,
                    threads=threads)
        info = check_slide(slide, side)
        if info is None:
            raise SystemExit(f"{slide}: the built slide does not read back as expected")
    else:
        logger.info("using the cached %s", slide)
    logger.info("slide: %s", info)

    outdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-wsi-", dir=args.workdir))
    rows: list[tuple[str, rf.Run, int]] = []
    try:
        logger.info("bare decode pass (%d threads)", threads)
        bare = rf.measure_bare(slide, threads=threads, repeat=args.repeat)
        logger.info("bare decode: %.2f s, %.0f Mpx/s, peak %s", bare.seconds,
                    bare.notes["pixels"] / 1e6 / bare.seconds, rf.fmt_gb(bare.peak))
        out = outdir / "quantized.tif"
        if "cli" in runs:
            run, size, _ = rf.quantize_cli(slide, out, args.k, args.repeat)
            rows.append(("`bigquant quantize` (CLI)", run, size))
        if "threads" in runs:
            run, size, _ = rf.quantize_threads(slide, out, args.k, args.repeat)
            rows.append(("`bigquant.quantize()` (threads, in-process)", run, size))
    finally:
        rf.clean_dir(outdir)
        if args.clean:
            slide.unlink(missing_ok=True)

    notes = [
        f"image: Aperio-like BigTIFF ({slide.name}), level 0 {side}×{side}, {TILE}² tiles, "
        f"JPEG/{args.jpeg.upper()} Q={args.quality} with JPEGTables, {rf.fmt_mb(info['level0_bytes'])} "
        f"of level-0 tiles ({info['tiles']} tiles), levels {[s[0] for s in info['levels']]}, "
        f"series {info['series']}; painted from real photos (matplotlib/scikit-learn samples).",
        f"bare decode: every level-0 tile read with os.pread and decoded by TiffPage.decode "
        f"(imagecodecs) on {threads} threads, pixels dropped; file in the page cache; "
        f"peak {rf.fmt_gb(bare.peak)}.",
        f"CLI: `bigquant quantize SLIDE OUT.tif -k {args.k} --random-state 0 --no-progress -v` in a subprocess "
        "(time includes interpreter start and imports; the CLI runs on its own threads); peak RSS = its process tree, "
        "sampled every 0.2 s.",
        f"threads: `bigquant.quantize(SLIDE, OUT, {args.k}, random_state=0)` on dask's threaded scheduler, "
        "after an untimed warm-up; peak RSS = this whole process "
        + (f"(it held {rf.fmt_gb(rows[-1][1].notes['baseline'])} before the run)."
           if rows and "baseline" in rows[-1][1].notes else "."),
        f"times: median of {args.repeat} run(s); fit and write from bigquant's INFO log lines "
        "(fit = the colour-histogram pass, which reads and decodes every tile and keeps the decoded tiles "
        "in a pixel spool beside the output, + the palette search and Lloyd; write = every tile read back "
        "from the spool (decoded again where no spool could be made), label lookup, deflate, write).",
        rf.machine_line(),
    ]
    print(rf.results_tables(rf.size_label(side, side), bare, rows, bare_name="bare decode",
                            k=args.k, max_ratio=args.max_ratio, max_gb=args.max_gb,
                            max_ratio_in_process=args.max_ratio_in_process))
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
