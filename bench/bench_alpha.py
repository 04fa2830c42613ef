"""Soft alpha: bigquant against libimagequant (``imagequant``) on feathered RGBA PNGs.

Two images: a photograph (matplotlib's ``grace_hopper.jpg``, see
``_realfiles.real_photos``) under a radial feathered alpha (opaque centre, a
linear fade over the outer half of the radius: all 256 alpha levels), and an
anti-aliased logo over transparency (flat-coloured shapes drawn 16 times
larger and box-filtered down, so their edges take every alpha level).

For each image and k (32, 64) the table gives, for bigquant's ``alpha="fit"``
(the default "auto" chooses it here), bigquant's ``alpha="mask"`` (before
issue #23: alpha 0 masked, the rest opaque) and imagequant without and with
its default dithering, the PNG read back by Pillow as RGBA:

- ``levels``: distinct alpha values in the output;
- ``alpha RMSE``: root mean squared alpha error over every pixel;
- ``opaque RMSE``: root mean squared R, G, B error over the source's fully
  opaque pixels;
- ``seen RMSE``: root mean squared error of R, G, B premultiplied by alpha
  (composited on black) and alpha, over the pixels of alpha > 0 -- what
  bigquant's ``measure`` reports for an alpha fit;
- ``bytes``: the PNG's size (both written by Pillow's PNG encoder at its
  default level) and ``s``: wall time of the quantize call (bigquant's after a
  warm-up run, which compiles its numba kernels).

Run: ``PYTHONPATH=. python bench/bench_alpha.py [--size 512]``; needs the
``bench`` extra (imagequant).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _realfiles import real_photos  # noqa: E402

logger = logging.getLogger("bench_alpha")


def feathered_photo(size: int) -> np.ndarray:
    """The first photo's centre crop under a radial feathered alpha (every level from 0 to 255)."""
    _, photo = real_photos()[0]
    h, w = photo.shape[:2]
    side = min(size, h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    rgb = np.rint(photo[y0:y0 + side, x0:x0 + side]).astype(np.uint8)
    y, x = np.mgrid[0:side, 0:side]
    r = np.hypot(y - (side - 1) / 2, x - (side - 1) / 2) / (side / 2)
    alpha = np.rint(np.clip((1.0 - r) / 0.5, 0.0, 1.0) * 255).astype(np.uint8)
    return np.dstack([rgb, alpha])


def antialiased_logo(size: int, supersample: int = 16) -> np.ndarray:
    """Flat shapes over transparency, drawn ``supersample`` times larger and box-filtered down."""
    n = size * supersample
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n
    rgba = np.zeros((n, n, 4), dtype=np.float32)
    shapes = [
        (np.hypot(y - 0.5, x - 0.5) < 0.42, (30, 90, 200)),                            # disc
        ((np.hypot(y - 0.5, x - 0.5) < 0.30) & (np.hypot(y - 0.5, x - 0.5) > 0.22), (250, 200, 40)),  # ring
        ((y > 0.35) & (y < 0.65) & (np.abs(x - 0.5) < (y - 0.35) * 0.9), (220, 40, 60)),  # triangle
    ]
    for inside, colour in shapes:
        rgba[inside, :3] = colour
        rgba[inside, 3] = 255
    small = rgba.reshape(size, supersample, size, supersample, 4)
    alpha = small[..., 3].mean(axis=(1, 3))
    # straight colour: the alpha-weighted mean of the covered sub-pixels
    colour = (small[..., :3] * small[..., 3:]).sum(axis=(1, 3)) / np.maximum(small[..., 3:].sum(axis=(1, 3)), 1)
    return np.rint(np.dstack([colour, alpha])).clip(0, 255).astype(np.uint8)


def scores(src: np.ndarray, path: pathlib.Path) -> dict[str, float]:
    """What the table shows of the PNG at ``path`` against the source RGBA."""
    with Image.open(path) as im:
        out = np.asarray(im.convert("RGBA")).astype(np.float64)
    ref = src.astype(np.float64)
    opaque = src[..., 3] == 255
    seen = src[..., 3] > 0

    def premultiplied(rgba: np.ndarray) -> np.ndarray:
        return np.dstack([rgba[..., :3] * rgba[..., 3:] / 255.0, rgba[..., 3:]])

    return {
        "levels": float(np.unique(out[..., 3]).size),
        "alpha RMSE": float(np.sqrt(np.mean((out[..., 3] - ref[..., 3]) ** 2))),
        "opaque RMSE": float(np.sqrt(np.mean((out[opaque, :3] - ref[opaque, :3]) ** 2))),
        "seen RMSE": float(np.sqrt(np.mean((premultiplied(out)[seen] - premultiplied(ref)[seen]) ** 2))),
        "bytes": float(path.stat().st_size),
    }


def run_bigquant(src_path: pathlib.Path, out: pathlib.Path, k: int, alpha: str) -> float:
    from bigquant import quantize

    t0 = time.perf_counter()
    quantize(src_path, out, k, random_state=0, alpha=alpha, overwrite=True)
    return time.perf_counter() - t0


def run_imagequant(src: np.ndarray, out: pathlib.Path, k: int, dither: float) -> float:
    import imagequant

    t0 = time.perf_counter()
    result = imagequant.quantize_pil_image(Image.fromarray(src, "RGBA"), dithering_level=dither, max_colors=k)
    result.save(out, format="PNG")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image edge in pixels (default 512)")
    parser.add_argument("--ks", default="32,64", help="palette sizes (default 32,64)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    ks = [int(k) for k in args.ks.split(",")]
    images = {"feathered photo": feathered_photo(args.size), "anti-aliased logo": antialiased_logo(args.size)}
    print("| image | k | method | levels | alpha RMSE | opaque RMSE | seen RMSE | bytes | s |")
    print("|" + "---|" * 9)
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        warm = d / "warm.png"  # numba compiles on first use: not in the times below
        Image.fromarray(antialiased_logo(64, 4), "RGBA").save(warm)
        for alpha in ("fit", "mask"):
            run_bigquant(warm, d / f"warm_{alpha}.png", 4, alpha)
        for name, src in images.items():
            src_path = d / "src.png"
            Image.fromarray(src, "RGBA").save(src_path)
            levels_in = np.unique(src[..., 3]).size
            for k in ks:
                runs = [
                    ("bigquant fit", lambda o: run_bigquant(src_path, o, k, "fit")),
                    ("bigquant mask", lambda o: run_bigquant(src_path, o, k, "mask")),
                    ("imagequant", lambda o: run_imagequant(src, o, k, 0.0)),
                    ("imagequant dithered", lambda o: run_imagequant(src, o, k, 1.0)),
                ]
                for method, run in runs:
                    out = d / f"{method.replace(' ', '_')}_{k}.png"
                    seconds = run(out)
                    s = scores(src, out)
                    print(f"| {name} ({levels_in} levels) | {k} | {method} | {s['levels']:.0f} | "
                          f"{s['alpha RMSE']:.2f} | {s['opaque RMSE']:.2f} | {s['seen RMSE']:.2f} | "
                          f"{s['bytes']:.0f} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
