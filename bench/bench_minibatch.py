"""Benchmark bigquant's MiniBatchKMeans against full Lloyd and scikit-learn.

Two markdown tables, every method timed in the same run:

1. The photo: matplotlib's ``grace_hopper.jpg`` (600 x 512), k = 8, 16, 32, 64 —
   bigquant ``MiniBatchKMeans`` (pixel and histogram strategies, and
   ``refine=False``: scikit-learn's algorithm), the full fit ``KMeans()`` (the
   reference: exact histogram, coarse search), full Lloyd on the pixels
   (``KMeans(strategy="pixels")``) and scikit-learn's ``MiniBatchKMeans``
   (same batch size, ``n_init=1``), every method over the same ``--photo-repeats``
   seeds. SSE ratios are to the full fit's median SSE: the median and the
   worst seed of each method.
2. A large photo-like image (``bigquant.io.sample.make_sample_tiff``, tiled
   BigTIFF of ``--megapixels`` MP, read lazily with ``bigquant.read_image``):
   ``MiniBatchKMeans`` (pixel strategy, with and without the Lloyd refinement)
   over ``--repeats`` seeds against full
   Lloyd (``--lloyd-repeats`` seeds; it persists the image in memory) and
   scikit-learn's ``MiniBatchKMeans.partial_fit`` streamed over the chunks
   (one pass).

Time and SSE are medians over the seeds; SSE is the exact inertia on every
pixel (each estimator's final pass; one extra pass for scikit-learn's streamed
fit). Ratios compare medians from the same run. The machine may be shared:
the load average is printed with the tables.

Usage::

    python bench/bench_minibatch.py [--photo-repeats 5] [--repeats 3] [--megapixels 256] [--k-big 16]
        [--lloyd-repeats 1] [--workdir DIR] [--skip-photo] [--skip-big]
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import date
from typing import Any

import dask
import numpy as np

logger = logging.getLogger("bench_minibatch")


def load_photo() -> np.ndarray:
    """matplotlib's grace_hopper.jpg as uint8 (600, 512, 3)."""
    import matplotlib.cbook as cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB"))


def runs(fit: Callable[[int], Any], sse: Callable[[Any], float], seeds: int) -> dict[str, Any]:
    """Fit once per seed; median time and SSE, every SSE, and what the fits read."""
    times, sses, models = [], [], []
    for seed in range(seeds):
        t0 = time.perf_counter()
        model = fit(seed)
        times.append(time.perf_counter() - t0)
        sses.append(sse(model))
        models.append(model)
        logger.info("  seed %d: %.2f s, SSE %.6g", seed, times[-1], sses[-1])
    return {
        "time": statistics.median(times),
        "sse": statistics.median(sses),
        "sses": sses,
        "sse_min": min(sses),
        "sse_max": max(sses),
        "steps": statistics.median(getattr(m, "n_steps_", getattr(m, "n_iter_", 0)) for m in models),
        "fetched": statistics.median(getattr(m, "n_samples_fetched_", 0) for m in models),
        "n": seeds,
    }


def row(k: int, name: str, r: dict[str, Any], ref: dict[str, Any]) -> str:
    return (
        f"| {k} | {name} | {r['n']} | {r['time']:.2f} | {r['sse']:.5g} | "
        f"{r['sse_min'] / ref['sse']:.3f}–{r['sse_max'] / ref['sse']:.3f} | "
        f"**{r['sse'] / ref['sse']:.3f}** | **{ref['time'] / r['time']:.1f}x** | {r['steps']:g} |"
    )


HEADER = (
    "| k | method | seeds | time (s, median) | SSE (median) | SSE / Lloyd (range) "
    "| SSE / Lloyd (median) | speed-up vs Lloyd | steps or iterations |\n"
    "|---|---|---|---|---|---|---|---|---|"
)

PHOTO_HEADER = (
    "| k | method | time (s, median) | × full fit's time | SSE / full fit: median | max "
    "| samples drawn (× pixels) | passes over the pixels |\n"
    "|---|---|---|---|---|---|---|---|"
)


def photo_row(k: int, name: str, r: dict[str, Any], full: dict[str, Any], n_pixels: int, passes: str) -> str:
    """SSE ratios to the median SSE of the full fit over the same seeds."""
    fetched = f"{r['fetched'] / n_pixels:.1f}" if r["fetched"] else ""
    return (
        f"| {k} | {name} | {r['time']:.2f} | {r['time'] / full['time']:.1f} | "
        f"**{r['sse'] / full['sse']:.4f}** | {r['sse_max'] / full['sse']:.4f} | {fetched} | {passes} |"
    )


def photo_table(ks: list[int], seeds: int, batch_size: int) -> str:
    """k, method, time and SSE / the full fit (``KMeans()``, histogram and coarse search)."""
    import threadpoolctl
    from sklearn.cluster import MiniBatchKMeans as SKMiniBatch

    from bigquant import KMeans, MiniBatchKMeans

    img = load_photo()
    n_pixels = img.shape[0] * img.shape[1]
    Xf = img.reshape(-1, 3).astype(np.float64)
    for strategy in ("pixels", "histogram"):  # compile the kernels once
        MiniBatchKMeans(4, strategy=strategy, random_state=0).fit(img)
        MiniBatchKMeans(4, strategy=strategy, refine=False, random_state=0).fit(img)
    KMeans(4, random_state=0).fit(img)
    KMeans(4, strategy="pixels", random_state=0).fit(img)
    lines = [PHOTO_HEADER]
    worst: dict[str, float] = {}
    for k in ks:
        logger.info("photo, k=%d", k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = runs(lambda s: KMeans(k, random_state=s).fit(img), lambda m: m.inertia_, seeds)
            lloyd = runs(lambda s: KMeans(k, strategy="pixels", random_state=s).fit(img),
                         lambda m: m.inertia_, seeds)
        mb = runs(lambda s: MiniBatchKMeans(k, batch_size=batch_size, random_state=s).fit(img),
                  lambda m: m.inertia_, seeds)
        mbh = runs(lambda s: MiniBatchKMeans(k, batch_size=batch_size, strategy="histogram",
                                             random_state=s).fit(img),
                   lambda m: m.inertia_, seeds)
        mbs = runs(lambda s: MiniBatchKMeans(k, batch_size=batch_size, refine=False,
                                             random_state=s).fit(img),
                   lambda m: m.inertia_, seeds)
        with threadpoolctl.threadpool_limits(1):  # its fastest setting on this shared machine
            sk = runs(lambda s: SKMiniBatch(k, batch_size=batch_size, n_init=1, random_state=s).fit(Xf),
                      lambda m: m.inertia_, seeds)
        sk["fetched"] = sk["steps"] * batch_size  # its batches (its init sample aside)
        for name, r in (("pixels", mb), ("histogram", mbh)):
            worst[name] = max(worst.get(name, 0.0), r["sse_max"] / full["sse"])
        lines += [
            photo_row(k, "full fit `KMeans()` (histogram, coarse search)", full, full, n_pixels, "1 + labels"),
            photo_row(k, "full Lloyd `KMeans(strategy='pixels')`", lloyd, full, n_pixels,
                      f"{lloyd['steps']:g} Lloyd iterations"),
            photo_row(k, "bigquant `MiniBatchKMeans` (pixels)", mb, full, n_pixels, "1 (`inertia_`, labels)"),
            photo_row(k, "bigquant `MiniBatchKMeans(strategy='histogram')`", mbh, full, n_pixels,
                      "1 (count) + labels"),
            photo_row(k, "bigquant `MiniBatchKMeans(refine=False)`", mbs, full, n_pixels, "1 (`inertia_`, labels)"),
            photo_row(k, "scikit-learn `MiniBatchKMeans` (`n_init=1`)", sk, full, n_pixels, "1 (labels)"),
        ]
    lines.append("")
    lines.append("worst SSE / full fit over every k and seed: "
                 + ", ".join(f"MiniBatchKMeans ({n}) {v:.4f}" for n, v in worst.items()))
    return "\n".join(lines)


def big_image(megapixels: int, workdir: pathlib.Path) -> pathlib.Path:
    """A photo-like tiled BigTIFF of about ``megapixels`` MP (generated once, then reused)."""
    from bigquant.io.sample import make_sample_tiff

    side = int(round(np.sqrt(megapixels * 2**20) / 512)) * 512
    path = workdir / f"minibatch_sample_{side}.tif"
    if not path.exists():
        logger.info("writing %s (%d x %d)", path, side, side)
        t0 = time.perf_counter()
        make_sample_tiff(path, (side, side), tile=512)
        logger.info("written in %.0f s", time.perf_counter() - t0)
    return path


def big_table(path: pathlib.Path, k: int, seeds: int, lloyd_seeds: int, batch_size: int,
              skip_sklearn: bool) -> tuple[str, str]:
    from bigquant import KMeans, MiniBatchKMeans, read_image
    from bigquant.cluster.points import DaskPoints

    src = read_image(path)
    X = src.data
    desc = (f"{X.shape[0]} x {X.shape[1]} px = {X.shape[0] * X.shape[1] / 2**20:.0f} MP "
            f"({X.nbytes / 2**30:.2f} GiB), chunks {X.chunksize[:2]}, {X.npartitions} chunks")
    logger.info("big image: %s, k=%d", desc, k)
    lines = [HEADER]
    logger.info("full fit KMeans() (8-bit: histogram)")
    full = runs(lambda s: KMeans(k, random_state=s).fit(X), lambda m: m.inertia_, lloyd_seeds)
    logger.info("full Lloyd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lloyd = runs(lambda s: KMeans(k, strategy="pixels", random_state=s).fit(X),
                     lambda m: m.inertia_, lloyd_seeds)
    logger.info("MiniBatchKMeans")
    mb = runs(lambda s: MiniBatchKMeans(k, batch_size=batch_size, random_state=s).fit(X),
              lambda m: m.inertia_, seeds)
    logger.info("MiniBatchKMeans(refine=False)")
    mbs = runs(lambda s: MiniBatchKMeans(k, batch_size=batch_size, refine=False, random_state=s).fit(X),
               lambda m: m.inertia_, seeds)
    lines += [
        row(k, "full fit `KMeans()` (histogram, coarse search)", full, lloyd),
        row(k, "full Lloyd `KMeans(strategy='pixels')`", lloyd, lloyd),
        row(k, "bigquant `MiniBatchKMeans` (pixels)", mb, lloyd),
        row(k, "bigquant `MiniBatchKMeans(refine=False)`", mbs, lloyd),
    ]
    if not skip_sklearn:
        from sklearn.cluster import MiniBatchKMeans as SKMiniBatch

        logger.info("scikit-learn partial_fit over the chunks")

        def stream(seed: int) -> Any:
            sk = SKMiniBatch(k, batch_size=batch_size, compute_labels=False, random_state=seed)
            for block in X.blocks.ravel():
                sk.partial_fit(block.compute().reshape(-1, 3).astype(np.float64))
            return sk

        sk = runs(stream, lambda m: DaskPoints(X).partial_sums(m.cluster_centers_)[2], 1)
        lines.append(row(k, "scikit-learn `MiniBatchKMeans.partial_fit` over the chunks (1 pass)", sk, lloyd))
    return desc, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="seeds per method on the big image (default 3)")
    parser.add_argument("--photo-repeats", type=int, default=5, help="seeds per method on the photo (default 5)")
    parser.add_argument("--lloyd-repeats", type=int, default=1, help="seeds of full Lloyd on the big image")
    parser.add_argument("--megapixels", type=int, default=256, help="size of the big image (MP, 2**20 px)")
    parser.add_argument("--k-photo", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--k-big", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--workdir", type=pathlib.Path, default=None,
                        help="where the big TIFF is written and reused (default: a temporary directory)")
    parser.add_argument("--skip-photo", action="store_true")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-sklearn-big", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)

    print(f"bigquant bench_minibatch — {date.today()} — {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average at start {os.getloadavg()[0]:.1f}\n")
    with dask.config.set(scheduler="threads"):
        if not args.skip_photo:
            print(f"### grace_hopper.jpg (600 x 512), batch_size={args.batch_size}, "
                  f"seeds 0..{args.photo_repeats - 1} for every method\n")
            print(photo_table(args.k_photo, args.photo_repeats, args.batch_size))
            print()
        if not args.skip_big:
            with tempfile.TemporaryDirectory() as tmp:
                workdir = args.workdir or pathlib.Path(tmp)
                path = big_image(args.megapixels, workdir)
                desc, table = big_table(path, args.k_big, args.repeats, args.lloyd_repeats,
                                        args.batch_size, args.skip_sklearn_big)
                print(f"### Photo-like tiled BigTIFF, {desc}, k={args.k_big}, threaded scheduler\n")
                print(table)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
