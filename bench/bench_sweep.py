"""The walkthrough's k sweep (k = 2..64 step 2 on grace_hopper.jpg): bigquant vs scikit-learn.

Run: ``.venv/bin/python bench/bench_sweep.py`` (add ``--quick`` to time
scikit-learn with ``n_init=1`` only). Prints markdown tables.

What is compared, per k, from one run on the same machine:

- scikit-learn ``KMeans(n_clusters=k, n_init=5)`` (the walkthrough), fitted on
  the 307,200 pixels; its cost is the walkthrough's: the squared error of every
  pixel to its centroid cast to uint8 (``astype``: truncation).
- ``bigquant.sweep(image, "2:64:2", n_init=...)``: one colour histogram shared
  by every k, the fits running concurrently. Its cost is the squared error of
  the quantized image: every pixel to its colour in the integer palette (the
  rounded centres, colours re-assigned to the nearest palette colour), which is
  what the walkthrough's formula gives for integer centroids. For transparency
  the tables also give bigquant's cost with the walkthrough's truncation of its
  float centres, and scikit-learn's cost with the same rounded palette.

Timings: bigquant's are medians of ``--repeat`` runs of the whole sweep
(histogram included, numba compiled beforehand, compile time reported apart);
scikit-learn's are one run (it is the slow side). The machine is shared:
compare ratios from the same run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def load_photo() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        return np.asarray(Image.open(fh).convert("RGB"))


def sse(pixels: np.ndarray, palette: np.ndarray, labels: np.ndarray) -> int:
    """Sum of squared differences of int pixels to ``palette[labels]`` (exact, int64)."""
    diff = pixels.astype(np.int64) - palette.astype(np.int64)[labels]
    return int(np.einsum("ij,ij->", diff, diff))


def nearest(pixels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of every pixel (ties: lowest index)."""
    out = np.empty(pixels.shape[0], np.int64)
    X = pixels.astype(np.float64)
    for i in range(0, X.shape[0], 1 << 15):
        d = ((X[i : i + (1 << 15), None, :] - centres[None]) ** 2).sum(-1)
        out[i : i + (1 << 15)] = d.argmin(axis=1)
    return out


def walkthrough_cost(pixels: np.ndarray, centres: np.ndarray, labels: np.ndarray) -> int:
    """The walkthrough's cost: centroids cast to uint8 by truncation, the fit's labels."""
    return sse(pixels, np.clip(centres, 0, 255).astype(np.uint8), labels)


def rounded_palette_cost(pixels: np.ndarray, centres: np.ndarray) -> int:
    """Error of the image rebuilt with the rounded centres (pixels to their nearest palette colour)."""
    palette = np.clip(np.rint(centres), 0, 255)
    return sse(pixels, palette, nearest(pixels, palette))


def run_sklearn(pixels: np.ndarray, ks: list[int], n_init: int, seed: int) -> dict[int, dict]:
    from sklearn.cluster import KMeans

    out = {}
    for k in ks:
        start = time.perf_counter()
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(pixels)
        seconds = time.perf_counter() - start
        out[k] = {
            "seconds": seconds,
            "cost": walkthrough_cost(pixels, km.cluster_centers_, km.labels_),
            "cost_rounded": rounded_palette_cost(pixels, km.cluster_centers_),
            "n_iter": int(km.n_iter_),
        }
        print(f"  scikit-learn n_init={n_init} k={k}: {seconds:.2f} s", file=sys.stderr, flush=True)
    return out


def run_bigquant(img: np.ndarray, spec: str, n_init: int, seed: int, repeat: int) -> tuple[list[float], object]:
    from bigquant.pipeline.sweep import sweep

    walls = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = sweep(img, spec, n_init=n_init, random_state=seed)
        walls.append(time.perf_counter() - start)
    return walls, result


def bigquant_truncated(img: np.ndarray, pixels: np.ndarray, ks: list[int], n_init: int, seed: int) -> dict[int, int]:
    """bigquant's float centres with the walkthrough's truncation (same seeds as the sweep)."""
    from bigquant.cluster.histogram import colour_histogram
    from bigquant.pipeline.sweep import _seed_for, fit_histogram

    hist = colour_histogram(img)
    out = {}
    for k in ks:
        fit = fit_histogram(hist, k, n_init=n_init, random_state=_seed_for(seed, k), parallel=False)
        out[k] = walkthrough_cost(pixels, fit.centers, nearest(pixels, fit.centers))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-init", type=int, nargs="+", default=[1, 2], help="bigquant n_init values")
    parser.add_argument("--sklearn-n-init", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="scikit-learn with n_init=1 only")
    parser.add_argument("--also-sklearn-1", action="store_true", help="also time scikit-learn n_init=1")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args()

    import numba
    import sklearn

    import bigquant
    from bigquant.pipeline.sweep import parse_ks, sweep

    spec = "2:64:2"
    ks = parse_ks(spec)
    img = load_photo()
    pixels = img.reshape(-1, 3)

    start = time.perf_counter()
    sweep(img[:64, :64], [2, 3], n_init=2, random_state=0)  # numba compile (cached on disk after the first run)
    compile_s = time.perf_counter() - start

    runs = {}
    for n_init in args.n_init:
        print(f"bigquant n_init={n_init} x {args.repeat}...", file=sys.stderr, flush=True)
        walls, result = run_bigquant(img, spec, n_init, args.seed, args.repeat)
        runs[n_init] = {
            "walls": walls,
            "median": statistics.median(walls),
            "rows": {r.k: r for r in result.rows},
            "truncated": bigquant_truncated(img, pixels, ks, n_init, args.seed),
            "n_colours": result.n_colours,
        }

    sk_n_inits = [1] if args.quick else ([args.sklearn_n_init, 1] if args.also_sklearn_1 else [args.sklearn_n_init])
    sk = {}
    for n in sk_n_inits:
        print(f"scikit-learn n_init={n}...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        sk[n] = run_sklearn(pixels, ks, n, args.seed)
        sk[n]["total"] = time.perf_counter() - start  # type: ignore[assignment]

    ref_n = sk_n_inits[0]
    ref = sk[ref_n]
    main_n = args.n_init[0]
    print(f"\n## k sweep 2..64 step 2 on grace_hopper.jpg ({img.shape[0]}x{img.shape[1]}, "
          f"{runs[main_n]['n_colours']} distinct colours)\n")
    print(f"bigquant {bigquant.__version__}, scikit-learn {sklearn.__version__}, numba {numba.__version__}; "
          f"2 cores shared; numba compile (untimed) {compile_s:.1f} s\n")

    head = f"| k | sklearn n_init={ref_n} cost | sklearn s |"
    sep = "|---:|---:|---:|"
    for n in args.n_init:
        head += f" bigquant n_init={n} cost | ratio | trunc. ratio |"
        sep += "---:|---:|---:|"
    head += " sklearn rounded-palette ratio |"
    sep += "---:|"
    print(head)
    print(sep)
    for k in ks:
        line = f"| {k} | {ref[k]['cost']} | {ref[k]['seconds']:.2f} |"
        for n in args.n_init:
            cost = runs[n]["rows"][k].cost
            line += f" {int(cost)} | {cost / ref[k]['cost']:.4f} | {runs[n]['truncated'][k] / ref[k]['cost']:.4f} |"
        line += f" {ref[k]['cost_rounded'] / ref[k]['cost']:.4f} |"
        print(line)

    print("\n### Totals\n")
    print("| run | total s (median) | runs (s) | speed-up vs sklearn | ks with cost > sklearn | worst ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for n, sk_run in sk.items():
        print(f"| scikit-learn n_init={n} | {sk_run['total']:.1f} | 1 run | 1 | | |")
    for n in args.n_init:
        r = runs[n]
        ratios = [r["rows"][k].cost / ref[k]["cost"] for k in ks]
        worse = [k for k, q in zip(ks, ratios) if q > 1]
        print(f"| bigquant n_init={n} | {r['median']:.2f} | {', '.join(f'{w:.2f}' for w in r['walls'])} | "
              f"{ref['total'] / r['median']:.0f}x | {len(worse)} {worse if worse else ''} | {max(ratios):.4f} |")
    trunc = {n: [runs[n]["truncated"][k] / ref[k]["cost"] for k in ks] for n in args.n_init}
    print("\nratio = bigquant cost / scikit-learn cost (walkthrough definition) for the same k; "
          "trunc. ratio = bigquant's float centres cast by truncation as the walkthrough does "
          f"(max: {', '.join(f'n_init={n}: {max(v):.4f}' for n, v in trunc.items())}); "
          "sklearn rounded-palette ratio = what rounding alone gives scikit-learn's centres.")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({
                "sklearn": {str(n): {str(k): v for k, v in s.items()} for n, s in sk.items()},
                "bigquant": {str(n): {"walls": r["walls"], "median": r["median"],
                                      "rows": {str(k): vars(row) for k, row in r["rows"].items()},
                                      "truncated": {str(k): v for k, v in r["truncated"].items()}}
                             for n, r in runs.items()},
            }, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
