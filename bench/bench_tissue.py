"""Tissue detection: ``mask="auto"`` against known masks on synthetic H&E slides.

Each fixture of ``tests/support/tissue.py`` (purple nuclei, pale pink and pale
bluish stroma, fat vacuoles, a light-grey vignetted glass with noise; pen
marks and dust on one) is made at ``--size`` for each seed, and three
detectors are judged on it, as the percentage of the tissue they keep and of
the background (glass, pen ink, dust on the glass) they keep:

- ``grey Otsu``: bigquant's ``mask="auto"`` up to bb9f888, which is also the
  first step of histolab's ``TissueMask`` and tiatoolbox's
  ``OtsuTissueMasker``: Otsu's threshold on the grey level, darker = tissue;
- ``histolab-style``: the same, then histolab's slide composition
  (``BinaryDilation(disk 5)``, ``RemoveSmallHoles(3000)``,
  ``RemoveSmallObjects(3000)``), rebuilt here with scipy.ndimage
  (histolab itself is not a dependency);
- ``bigquant``: :func:`bigquant.pipeline.masks.background_mask` as it is now
  (colour density in OD, Otsu on its log, pen ink out by hue, holes filled,
  small objects dropped), run on the image as ``quantize(mask="auto")`` runs it.

The target is >= 97 % of the tissue and <= 3 % of the background on every
fixture.  Prints a Markdown table on stdout.

    PYTHONPATH=. .venv/bin/python bench/bench_tissue.py
    PYTHONPATH=. .venv/bin/python bench/bench_tissue.py --seeds 3 --size 1024x1280
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bigquant import read_image  # noqa: E402
from bigquant.pipeline.masks import background_mask, otsu_threshold  # noqa: E402
from tests.support.tissue import SLIDES, make_slide, score  # noqa: E402

logger = logging.getLogger("bench_tissue")


def grey_otsu(rgb: np.ndarray) -> np.ndarray:
    """bigquant's old ``mask="auto"``: 8-bit luminance below Otsu's threshold."""
    grey = np.clip(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]), 0, 255).astype(np.uint8)
    return grey < otsu_threshold(grey)


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return yy**2 + xx**2 <= radius**2


def histolab_style(rgb: np.ndarray) -> np.ndarray:
    """histolab's slide ``TissueMask`` composition, with scipy.ndimage for scikit-image."""
    mask = ndi.binary_dilation(grey_otsu(rgb), _disk(5))
    holes, n = ndi.label(ndi.binary_fill_holes(mask) & ~mask)
    if n:
        small = np.bincount(holes.ravel()) <= 3000  # skimage: holes smaller than area_threshold
        small[0] = False
        mask |= small[holes]
    objects, n = ndi.label(mask)  # 4-connected, skimage's default
    if n:
        keep = np.bincount(objects.ravel()) >= 3000
        keep[0] = False
        mask = keep[objects]
    return mask


def bigquant_auto(rgb: np.ndarray) -> np.ndarray:
    """``mask="auto"`` as quantize runs it (low-resolution view, upsampled chunk by chunk)."""
    return background_mask(read_image(rgb, chunks=512)).compute()


METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "grey Otsu (old)": grey_otsu, "histolab-style": histolab_style, "bigquant": bigquant_auto,
}


def _size(text: str) -> tuple[int, int]:
    parts = [int(p) for p in text.lower().split("x")]
    return (parts[0], parts[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_size, default=(1024, 1280), help="HxW of each fixture (default 1024x1280)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per fixture (default 1: seed 0)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    header = ["fixture", "seed", "tissue %"] + [f"{m}: tissue / bg kept %" for m in METHODS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    worst = {m: [1.0, 0.0] for m in METHODS}
    seconds = {m: 0.0 for m in METHODS}
    for name in SLIDES:
        for seed in range(args.seeds):
            slide = make_slide(name, args.size, seed=seed)
            cells = [name, str(seed), f"{100 * slide.truth.mean():.1f}"]
            for method, detect in METHODS.items():
                t0 = time.perf_counter()
                mask = detect(slide.rgb)
                seconds[method] += time.perf_counter() - t0
                tissue, background = score(mask, slide.truth)
                worst[method] = [min(worst[method][0], tissue), max(worst[method][1], background)]
                ok = "" if tissue >= 0.97 and background <= 0.03 else " ✗"
                cells.append(f"{100 * tissue:.1f} / {100 * background:.2f}{ok}")
            print("| " + " | ".join(cells) + " |", flush=True)
    print()
    print("| method | worst tissue kept % | worst background kept % | seconds per fixture |")
    print("|---|---|---|---|")
    runs = len(SLIDES) * args.seeds
    for method in METHODS:
        print(f"| {method} | {100 * worst[method][0]:.1f} | {100 * worst[method][1]:.2f} | "
              f"{seconds[method] / runs:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
