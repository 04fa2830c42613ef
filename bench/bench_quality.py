"""Quality benchmark: bigquant vs libimagequant (pngquant's engine) on five photos, and a dithered gigapixel.

Photos: scikit-image's astronaut, coffee, chelsea, rocket and immunohistochemistry
at k = 16, 64, 256.  Every figure is end to end: read the PNG, quantize, write
a palette PNG, read it back for the metrics.  Methods:

- ``bq rgb``: ``bigquant.quantize`` (exact k-means in sRGB, the default);
- ``bq oklab``: the same with ``space="oklab"``;
- ``bq FS``: ``dither="floyd-steinberg"`` (sRGB fit);
- ``bq FS oklab``: ``dither="floyd-steinberg", space="oklab"``;
- ``liq``: ``imagequant.quantize_pil_image(dithering_level=0)``;
- ``liq FS``: the same with ``dithering_level=1.0`` (its default).

Metrics: PSNR (dB, sRGB), mean Delta E in OKLab (natural units, L in [0, 1]),
and for dithered results the PSNR after a Gaussian blur (sigma = 1 px) of both
images ("blurred PSNR"), which judges what the eye sees.  Times are the median
of ``--repeat`` runs on the threaded scheduler (2 cores).

``--gigapixel`` also times a 1 GP mosaic of the photos (uncompressed tiled
BigTIFF, 512 px tiles) quantized at k=16 to a palette BigTIFF on a
LocalCluster of 2 single-thread worker processes, undithered vs
Floyd--Steinberg, with the peak RSS of the process tree (client + scheduler +
workers) sampled every 0.2 s.  ``--figure PATH`` writes the README's crops.

    pip install -e .[bench]
    python bench/bench_quality.py --figure docs/dither_crops.png --gigapixel
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"]
KS = [16, 64, 256]
METHODS = ["bq rgb", "bq oklab", "bq FS", "bq FS oklab", "liq", "liq FS"]
DITHERED = {"bq FS", "bq FS oklab", "liq FS"}


def photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    return np.ascontiguousarray(img[:, :, :3])


def metrics(result: np.ndarray, source: np.ndarray) -> dict[str, float]:
    from scipy.ndimage import gaussian_filter

    from bigquant.kernels.spaces import to_space

    a, b = result.astype(np.float64), source.astype(np.float64)
    mse = float(((a - b) ** 2).mean())
    d = (to_space(result.reshape(-1, 3), "oklab") - to_space(source.reshape(-1, 3), "oklab")) / 100
    blur = [gaussian_filter(x, sigma=(1, 1, 0)) for x in (a, b)]
    bmse = float(((blur[0] - blur[1]) ** 2).mean())
    return {
        "psnr": 10 * math.log10(255**2 / mse),
        "de": float(np.sqrt((d * d).sum(axis=1)).mean()),
        "bpsnr": 10 * math.log10(255**2 / bmse),
    }


def run_method(method: str, src: pathlib.Path, dst: pathlib.Path, k: int) -> None:
    if method.startswith("liq"):
        import imagequant
        from PIL import Image

        img = Image.open(src).convert("RGBA")
        out = imagequant.quantize_pil_image(img, dithering_level=1.0 if method == "liq FS" else 0.0,
                                            max_colors=k)
        out.save(dst)
        return
    from bigquant import quantize

    options = {"dither": "floyd-steinberg" if "FS" in method else None,
               "space": "oklab" if "oklab" in method else "rgb"}
    quantize(src, dst, k, random_state=0, overwrite=True, measure=False, **options)


def quality_table(workdir: pathlib.Path, repeat: int) -> tuple[str, list[dict[str, object]]]:
    from PIL import Image

    rows: list[dict[str, object]] = []
    for name in PHOTOS:
        img = photo(name)
        src = workdir / f"{name}.png"
        Image.fromarray(img).save(src)
        for k in KS:
            for method in METHODS:
                dst = workdir / f"{name}_{k}_{method.replace(' ', '_')}.png"
                times = []
                for _ in range(repeat if k == 256 else 1):
                    t0 = time.perf_counter()
                    run_method(method, src, dst, k)
                    times.append(time.perf_counter() - t0)
                result = np.asarray(Image.open(dst).convert("RGB"))
                m = metrics(result, img)
                rows.append({"photo": name, "k": k, "method": method, "seconds": statistics.median(times), **m})
                print(f"# {name} k={k} {method}: PSNR {m['psnr']:.2f}, dE {m['de']:.4f}, blurred "
                      f"{m['bpsnr']:.2f}, {statistics.median(times):.2f} s", file=sys.stderr, flush=True)
    lines = []
    head = "| photo | k | " + " | ".join(f"{m} PSNR / ΔE_OK" + (" / blurred" if m in DITHERED else "")
                                          for m in METHODS) + " |"
    lines += [head, "|" + "---|" * (2 + len(METHODS))]
    for name in PHOTOS:
        for k in KS:
            cells = []
            for method in METHODS:
                r = next(r for r in rows if r["photo"] == name and r["k"] == k and r["method"] == method)
                cell = f"{r['psnr']:.2f} / {r['de']:.4f}"
                if method in DITHERED:
                    cell += f" / {r['bpsnr']:.2f}"
                cells.append(cell)
            lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| method | " + " | ".join(PHOTOS) + " | median |")
    lines.append("|" + "---|" * (len(PHOTOS) + 2))
    for method in METHODS:
        ts = [next(r["seconds"] for r in rows if r["photo"] == n and r["k"] == 256 and r["method"] == method)
              for n in PHOTOS]
        lines.append(f"| {method} (k=256, s) | " + " | ".join(f"{t:.2f}" for t in ts)
                     + f" | {statistics.median(ts):.2f} |")
    lines.append("")
    # the bars, checked on the rows
    checks = []
    for name in PHOTOS:
        for k in KS:
            get = {r["method"]: r for r in rows if r["photo"] == name and r["k"] == k}
            checks.append((name, k,
                           get["bq rgb"]["psnr"] >= get["liq"]["psnr"],
                           get["bq oklab"]["de"] <= get["liq"]["de"],
                           get["bq FS"]["bpsnr"] >= get["liq FS"]["bpsnr"],
                           get["bq FS oklab"]["bpsnr"] >= get["liq FS"]["bpsnr"]))
    lines.append("| bar | holds in |")
    lines.append("|---|---|")
    for i, bar in enumerate(["plain PSNR ≥ liq", "oklab ΔE_OK ≤ liq", "FS blurred PSNR ≥ liq FS",
                             "FS oklab blurred PSNR ≥ liq FS"]):
        held = sum(c[2 + i] for c in checks)
        missed = ", ".join(f"{c[0]} k={c[1]}" for c in checks if not c[2 + i])
        lines.append(f"| {bar} | {held} of {len(checks)}" + (f" (not: {missed})" if missed else "") + " |")
    return "\n".join(lines), rows


def strength_table(workdir: pathlib.Path) -> str:
    """Blurred PSNR of Floyd--Steinberg at several strengths (one sRGB palette per photo and k)."""
    import json

    from bigquant import quantize
    from bigquant.kernels.dither import floyd_steinberg

    strengths = [1.0, 0.9, 0.8, 0.7]
    lines = ["| photo | k | " + " | ".join(f"strength {s} PSNR / blurred" for s in strengths) + " |",
             "|" + "---|" * (2 + len(strengths))]
    for name in PHOTOS:
        img = photo(name)
        for k in KS:
            quantize(img, workdir / "s.png", k, random_state=0, overwrite=True,
                     palette_out=workdir / "s.json", measure=False)
            pal = np.array(json.loads((workdir / "s.json").read_text())["colours"], dtype=np.uint8)
            cells = []
            for s in strengths:
                m = metrics(pal[floyd_steinberg(img, pal, strength=s)], img)
                cells.append(f"{m['psnr']:.2f} / {m['bpsnr']:.2f}")
            lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(path: pathlib.Path, workdir: pathlib.Path) -> None:
    """Original / plain / dithered (bigquant FS) crops of two photos at k=16, enlarged 3x, nearest."""
    from PIL import Image, ImageDraw

    from bigquant import quantize

    crops = [("astronaut", (20, 300, 110, 110)), ("coffee", (40, 420, 110, 110))]
    panels = []
    for name, (y, x, h, w) in crops:
        img = photo(name)
        src = workdir / f"fig_{name}.png"
        Image.fromarray(img).save(src)
        row = [img[y:y + h, x:x + w]]
        for dither in (None, "floyd-steinberg"):
            dst = workdir / f"fig_{name}_{dither}.png"
            quantize(src, dst, 16, random_state=0, overwrite=True, dither=dither, measure=False)
            row.append(np.asarray(Image.open(dst).convert("RGB"))[y:y + h, x:x + w])
        panels.append(row)
    scale, gap, label_h = 3, 6, 18
    h, w = 110 * scale, 110 * scale
    canvas = Image.new("RGB", (3 * w + 2 * gap, label_h + len(panels) * h + (len(panels) - 1) * gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, title in enumerate(["original", "k=16, plain", "k=16, Floyd-Steinberg"]):
        draw.text((i * (w + gap) + 4, 2), title, fill="black")
    for r, row in enumerate(panels):
        for c, crop in enumerate(row):
            tile = Image.fromarray(crop).resize((w, h), Image.Resampling.NEAREST)
            canvas.paste(tile, (c * (w + gap), label_h + r * (h + gap)))
    canvas.save(path, optimize=True)
    print(f"# wrote {path} ({path.stat().st_size / 1024:.0f} KB)", file=sys.stderr)


def make_mosaic(path: pathlib.Path, side: int, tile: int = 512) -> None:
    """A ``side`` x ``side`` RGB mosaic of the photos (512 px tiles, each a photo crop, flipped by position)."""
    import tifffile

    sources = []
    for name in PHOTOS:
        img = photo(name)
        img = np.pad(img, ((0, max(0, tile - img.shape[0])), (0, max(0, tile - img.shape[1])), (0, 0)),
                     mode="reflect")
        sources.append(np.ascontiguousarray(img[:tile, :tile]))

    def tiles():
        for ty in range(side // tile):
            for tx in range(side // tile):
                t = sources[(ty * 7 + tx * 3) % len(sources)]
                if (ty + tx) % 2:
                    t = t[:, ::-1]
                if ty % 3 == 1:
                    t = t[::-1]
                yield np.ascontiguousarray(t)

    tifffile.imwrite(path, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(tile, tile),
                     photometric="rgb", bigtiff=True, compression=None)


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its children (scheduler, workers) so far.

    Under load from other programs wall times swell; the CPU a job takes barely does.
    """
    import psutil

    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def gigapixel(workdir: pathlib.Path, side: int, memory_limit: str) -> str:
    import distributed

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from bench_gigapixel import measured

    from bigquant import quantize
    from bigquant.pipeline.quantize import _release_freed_memory

    src = workdir / "mosaic.tif"
    t0 = time.perf_counter()
    make_mosaic(src, side)
    print(f"# mosaic {side}x{side} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, memory_limit=memory_limit)
    client = distributed.Client(cluster)
    lines = [f"| {side}² mosaic, k=16 | seconds | CPU s (process tree) | peak RSS GB | PSNR dB | mean ΔE_OK |",
             "|---|---|---|---|---|---|"]
    try:
        for label, dither in (("plain", None), ("Floyd–Steinberg", "floyd-steinberg"), ("plain (again)", None)):
            dst = workdir / "mosaic_q.tif"
            cpu0 = tree_cpu_seconds()
            with measured() as m:
                model = quantize(src, dst, 16, client=client, random_state=0, overwrite=True, dither=dither)
            cpu = tree_cpu_seconds() - cpu0
            q = model.quality_ or {}
            lines.append(f"| {label} | {m['seconds']:.1f} | {cpu:.1f} | {m['peak_gb']:.2f} "
                         f"| {q.get('psnr', float('nan')):.2f} "
                         f"| {q.get('delta_e_ok', float('nan')):.4f} |")
            print("# " + lines[-1], file=sys.stderr, flush=True)
            dst.unlink()
            del model
            client.run(lambda: __import__("gc").collect())
            _release_freed_memory()
    finally:
        client.close()
        cluster.close()
        src.unlink()
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs timed at k=256 (median)")
    parser.add_argument("--figure", type=pathlib.Path, help="write the crops figure to this PNG")
    parser.add_argument("--gigapixel", action="store_true", help="also time the 1 GP mosaic")
    parser.add_argument("--side", type=int, default=32768, help="mosaic side (32768: 1.07 GP)")
    parser.add_argument("--memory-limit", default="4GiB")
    parser.add_argument("--skip-photos", action="store_true")
    parser.add_argument("--strengths", action="store_true", help="also tabulate dither strengths")
    parser.add_argument("--dir", default=None, help="where to write temporary files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bigquant-quality-", dir=args.dir) as d:
        workdir = pathlib.Path(d)
        if not args.skip_photos:
            text, _ = quality_table(workdir, args.repeat)
            print(text, flush=True)
        if args.strengths:
            print(strength_table(workdir), flush=True)
        if args.figure:
            figure(args.figure, workdir)
        if args.gigapixel:
            print(gigapixel(workdir, args.side, args.memory_limit), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with contextlib.suppress(KeyboardInterrupt):
        main()
