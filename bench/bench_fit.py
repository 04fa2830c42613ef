"""Benchmark the core engine against scikit-learn and dask-ml.

Two tables, printed as markdown:

1. Seed scale: matplotlib's ``grace_hopper.jpg`` (600 x 512), k = 8, 16, 32 —
   fit time and SSE of bigquant (auto = exact colour histogram) beside
   scikit-learn KMeans (n_init=1 and 5), MiniBatchKMeans and dask-ml KMeans.
2. Pixel-strategy throughput: seconds per Lloyd iteration on a persisted
   photo-like array of ``--megapixels`` MP (default 64), k = 16 and 64,
   with dask-ml's per-iteration time on a slice for reference.

Like for like: every contender is timed the same way (:func:`timed`: a pause,
untimed warm-up fits for at least 0.25 s, then the median of ``--repeats``
fits), and every SSE is the same cost on the same kind of palette: the
contender's float centres (none rounded), every pixel to its nearest centre
(:func:`sse`).

Usage: ``python bench/bench_fit.py [--repeats 5] [--megapixels 64] [--skip-dask-ml]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from datetime import date

import dask
import dask.array as da
import numpy as np


def load_photo() -> np.ndarray:
    import matplotlib.cbook as cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB"))


def sse(X: np.ndarray, centers: np.ndarray) -> float:
    from bigquant import KMeans

    km = KMeans(len(centers), init=centers, max_iter=1)
    km.cluster_centers_ = np.asarray(centers, dtype=np.float64)
    km.n_features_in_ = X.shape[1]
    return -km.score(X)


#: idle time before each contender's calls: OpenMP/BLAS worker threads left spinning by
#: the previous library would otherwise be charged to the next one
SETTLE_SECONDS = 0.3
#: untimed calls run for at least this long before the timed ones: after the pause the
#: cores run slower for some tens of milliseconds (measured here: 10-12 ms fits that settle
#: at 8 ms), which a call of 0.1 s absorbs and one of 10 ms does not
WARM_SECONDS = 0.25


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` back-to-back calls, after a pause and untimed warm-up calls."""
    time.sleep(SETTLE_SECONDS)
    if repeats > 1:  # warm: caches, thread pools, allocator, clock speed
        start = time.perf_counter()
        fn()
        while time.perf_counter() - start < WARM_SECONDS:
            fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def seed_table(repeats: int, skip_dask_ml: bool) -> str:
    from sklearn.cluster import KMeans as SKKMeans
    from sklearn.cluster import MiniBatchKMeans as SKMiniBatch

    from bigquant import KMeans

    img = load_photo()
    X = img.reshape(-1, 3)
    Xf = X.astype(np.float64)
    KMeans(4, random_state=0).fit(img)  # compile the kernels once
    rows = ["| k | bigquant (s) | SSE | sklearn n_init=1 (s) | SSE | sklearn n_init=5 (s) | SSE "
            "| sklearn MiniBatch (s) | SSE | dask-ml (s) | SSE | speed-up vs sklearn n_init=1 "
            "| SSE / sklearn best |",
            "|---" * 13 + "|"]
    for k in (8, 16, 32):
        t_bq, km = timed(lambda: KMeans(k, random_state=0).fit(img), repeats)
        t_sk1, sk1 = timed(lambda: SKKMeans(k, n_init=1, random_state=0).fit(Xf), repeats)
        t_sk5, sk5 = timed(lambda: SKKMeans(k, n_init=5, random_state=0).fit(Xf), repeats)
        t_mb, mb = timed(lambda: SKMiniBatch(k, n_init=1, random_state=0, batch_size=4096).fit(Xf), repeats)
        if skip_dask_ml:
            t_dm, sse_dm = float("nan"), float("nan")
        else:
            from dask_ml.cluster import KMeans as DMKMeans

            Xd = da.from_array(Xf, chunks=(65536, 3))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_dm, dm = timed(lambda: DMKMeans(n_clusters=k, random_state=0).fit(Xd), repeats)
            sse_dm = sse(X, dm.cluster_centers_)
        sse_bq, sse_sk1, sse_sk5 = (sse(X, m.cluster_centers_) for m in (km, sk1, sk5))
        best = min(sse_sk1, sse_sk5)
        rows.append(
            f"| {k} | {t_bq:.3f} | {sse_bq:.4g} | {t_sk1:.3f} | {sse_sk1:.4g} | {t_sk5:.3f} "
            f"| {sse_sk5:.4g} | {t_mb:.3f} | {sse(X, mb.cluster_centers_):.4g} | {t_dm:.2f} "
            f"| {sse_dm:.4g} | {t_sk1 / t_bq:.1f}x | {sse_bq / best:.4f} |"
        )
    return "\n".join(rows)


def photo_like(megapixels: int, seed: int = 0) -> da.Array:
    """A photo-like uint8 RGB dask array: the sample photo tiled with noise."""
    img = load_photo()
    side = int(np.sqrt(megapixels * 1e6))
    chunk = 2048

    def block(block_info=None):
        (r0, r1), (c0, c1), _ = block_info[None]["array-location"]
        rng = np.random.default_rng([seed, r0, c0])
        rows = np.arange(r0, r1) % img.shape[0]
        cols = np.arange(c0, c1) % img.shape[1]
        base = img[rows][:, cols].astype(np.int16)
        return np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)

    return da.map_blocks(block, chunks=da.core.normalize_chunks((chunk, chunk, 3), (side, side, 3)),
                         dtype=np.uint8)


def throughput_table(megapixels: int, repeats: int, skip_dask_ml: bool) -> str:
    from bigquant.cluster.points import DaskPoints

    X = photo_like(megapixels).persist()
    n = X.shape[0] * X.shape[1]
    points = DaskPoints(X)
    rng = np.random.default_rng(0)
    rows = ["| k | pixels | s / iteration (median) | Mpx/s | dask-ml s / iteration (4 MP) | dask-ml Mpx/s |",
            "|---|---|---|---|---|---|"]
    for k in (16, 64):
        centers = rng.uniform(0, 255, (k, 3))
        points.partial_sums(centers)
        t, _ = timed(lambda: points.partial_sums(centers), repeats)
        if skip_dask_ml:
            t_dm = float("nan")
        else:
            from dask_ml.cluster import KMeans as DMKMeans

            sub = X[:2048, :2048].reshape(-1, 3).astype(np.float64).rechunk((1 << 20, 3)).persist()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_fit, dm = timed(lambda: DMKMeans(n_clusters=k, init=centers, max_iter=5, tol=0,
                                                   random_state=0).fit(sub), repeats)
                t_dm = t_fit / max(dm.n_iter_, 1)
        mp_dm = 2048 * 2048 / 1e6 / t_dm if t_dm == t_dm else float("nan")
        rows.append(f"| {k} | {n / 1e6:.0f} MP | {t:.3f} | {n / 1e6 / t:.0f} | {t_dm:.2f} | {mp_dm:.1f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed fits per contender (median)")
    parser.add_argument("--megapixels", type=int, default=64)
    parser.add_argument("--skip-dask-ml", action="store_true")
    args = parser.parse_args()
    from bigquant.cluster.allocator import tune_allocator

    tune_allocator()  # as the command line does (the same process for every contender)
    print(f"bigquant bench_fit — {date.today()} — {platform.machine()}, "
          f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}\n")
    print(f"### Seed scale: grace_hopper.jpg (600 x 512), time = median of {args.repeats} warm fits, "
          "every contender timed alike; SSE = float centres, pixels to the nearest, for every contender\n")
    print(seed_table(args.repeats, args.skip_dask_ml))
    print(f"\n### Pixel strategy: one Lloyd iteration on a persisted {args.megapixels} MP array "
          f"(threaded scheduler, {__import__('os').cpu_count()} cores)\n")
    with dask.config.set(scheduler="threads"):
        print(throughput_table(args.megapixels, args.repeats, args.skip_dask_ml))


if __name__ == "__main__":
    main()
