"""The walkthrough's k sweep (k = 2..64 step 2 on grace_hopper.jpg): bigquant vs scikit-learn.

Run: ``.venv/bin/python bench/bench_sweep.py`` (add ``--quick`` to time
scikit-learn with ``n_init=1`` only). Prints markdown tables.

Like for like, per k, from one run on the same machine:

- the same cost on the same kind of palette for both: each fit's float centres
  rounded to integers (``rint``) and every pixel re-assigned to its nearest
  rounded colour — the error of the image rebuilt with that palette
  ("rounded cost"); and, second, the walkthrough's own definition for both:
  float centres cast to uint8 by truncation, each fit's own labels
  ("truncated cost");
- scikit-learn ``KMeans(n_clusters=k, n_init=5)`` (the walkthrough) fitted on
  the 307,200 pixels; ``bigquant.sweep(image, "2:64:2", n_init=...)``: one
  colour histogram shared by every k, the fits running concurrently. The
  float centres of bigquant's fits are those of the sweep (the same seeds;
  checked against the sweep's palettes);
- bigquant's palette as its sweep reports it (and ``quantize`` writes it) is
  printed apart, for information: it is not compared with scikit-learn.

Timings, the same for every contender: one untimed warm-up sweep over k = 2, 4
(numba compiled, thread pools started), then ``--repeat`` timed sweeps of all
k; the median is reported (histogram included for bigquant). The machine is
shared: compare ratios from the same run, not absolute numbers across runs.
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


def run_sklearn(pixels: np.ndarray, ks: list[int], n_init: int, seed: int, repeat: int) -> dict:
    """scikit-learn over every k: one warm-up over k = 2, 4, then ``repeat`` timed sweeps."""
    from sklearn.cluster import KMeans

    for k in (2, 4):  # warm-up, untimed: the same as bigquant's
        KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(pixels)
    walls: list[float] = []
    fits: dict[int, object] = {}
    for r in range(repeat):
        start = time.perf_counter()
        for k in ks:
            fits[k] = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(pixels)
        walls.append(time.perf_counter() - start)
        print(f"  scikit-learn n_init={n_init} sweep {r + 1}/{repeat}: {walls[-1]:.1f} s", file=sys.stderr, flush=True)
    out: dict = {"walls": walls, "median": statistics.median(walls)}
    for k, km in fits.items():
        out[k] = {
            "cost": rounded_palette_cost(pixels, km.cluster_centers_),
            "truncated": walkthrough_cost(pixels, km.cluster_centers_, km.labels_),
            "n_iter": int(km.n_iter_),
        }
    return out


def run_bigquant(img: np.ndarray, spec: str, n_init: int, seed: int, repeat: int) -> tuple[list[float], object]:
    """bigquant's sweep: one warm-up over k = 2, 4, then ``repeat`` timed sweeps of ``spec``."""
    from bigquant.pipeline.sweep import sweep

    sweep(img, [2, 4], n_init=n_init, random_state=seed)  # warm-up, untimed: the same as scikit-learn's
    walls = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = sweep(img, spec, n_init=n_init, random_state=seed)
        walls.append(time.perf_counter() - start)
    return walls, result


def bigquant_costs(img: np.ndarray, pixels: np.ndarray, ks: list[int], n_init: int, seed: int,
                   result: object) -> dict[int, dict[str, int]]:
    """The sweep's float centres (refitted with the sweep's seeds) costed as scikit-learn's are."""
    from bigquant.cluster.histogram import colour_histogram
    from bigquant.pipeline.sweep import _fit_task

    hist = colour_histogram(img)
    rows = {r.k: r for r in result.rows}
    out = {}
    for k in ks:
        fit, _ = _fit_task(hist, k, n_init, 300, 1e-4, seed)
        same = np.array_equal(np.asarray(fit.palette, dtype=np.int64), rows[k].palette_array(3))
        if not same:
            print(f"  warning: k={k}: the refit's palette differs from the sweep's", file=sys.stderr)
        out[k] = {
            "cost": rounded_palette_cost(pixels, fit.centers),
            "truncated": walkthrough_cost(pixels, fit.centers, nearest(pixels, fit.centers)),
            "reported": int(rows[k].cost),
            "same": same,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-init", type=int, nargs="+", default=[1], help="bigquant n_init values")
    parser.add_argument("--sklearn-n-init", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="scikit-learn with n_init=1 only")
    parser.add_argument("--repeat", type=int, default=3, help="timed sweeps per contender (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args()

    import numba
    import sklearn

    import bigquant
    from bigquant.cluster.allocator import tune_allocator
    from bigquant.pipeline.sweep import parse_ks

    tune_allocator()  # as the command line does (the same process for every contender)
    spec = "2:64:2"
    ks = parse_ks(spec)
    img = load_photo()
    pixels = img.reshape(-1, 3)

    runs = {}
    for n_init in args.n_init:
        print(f"bigquant n_init={n_init} x {args.repeat}...", file=sys.stderr, flush=True)
        walls, result = run_bigquant(img, spec, n_init, args.seed, args.repeat)
        runs[n_init] = {"walls": walls, "median": statistics.median(walls), "n_colours": result.n_colours,
                        "costs": bigquant_costs(img, pixels, ks, n_init, args.seed, result)}

    ref_n = 1 if args.quick else args.sklearn_n_init
    print(f"scikit-learn n_init={ref_n} x {args.repeat}...", file=sys.stderr, flush=True)
    ref = run_sklearn(pixels, ks, ref_n, args.seed, args.repeat)

    main_n = args.n_init[0]
    print(f"\n## k sweep 2..64 step 2 on grace_hopper.jpg ({img.shape[0]}x{img.shape[1]}, "
          f"{runs[main_n]['n_colours']} distinct colours)\n")
    print(f"bigquant {bigquant.__version__}, scikit-learn {sklearn.__version__}, numba {numba.__version__}; "
          f"2 cores shared; every contender: one untimed warm-up sweep (k = 2, 4), median of {args.repeat} "
          "timed sweeps\n")

    head = f"| k | sklearn n_init={ref_n} rounded cost |"
    sep = "|---:|---:|"
    for n in args.n_init:
        head += f" bigquant n_init={n} rounded cost | ratio | truncated-cost ratio | bigquant as written |"
        sep += "---:|---:|---:|---:|"
    print(head)
    print(sep)
    for k in ks:
        line = f"| {k} | {ref[k]['cost']} |"
        for n in args.n_init:
            c = runs[n]["costs"][k]
            line += (f" {c['cost']} | {c['cost'] / ref[k]['cost']:.4f} | {c['truncated'] / ref[k]['truncated']:.4f} |"
                     f" {c['reported']} |")
        print(line)

    print("\n### Totals\n")
    print("| run | sweep s (median) | sweeps (s) | speed-up | ks with rounded cost > sklearn | "
          "rounded-cost ratio min / median / max | truncated-cost ratio min / median / max |")
    print("|---|---:|---|---:|---:|---:|---:|")
    print(f"| scikit-learn n_init={ref_n} | {ref['median']:.1f} | {', '.join(f'{w:.1f}' for w in ref['walls'])} "
          "| 1 | | | |")
    for n in args.n_init:
        r = runs[n]
        ratios = [r["costs"][k]["cost"] / ref[k]["cost"] for k in ks]
        trunc = [r["costs"][k]["truncated"] / ref[k]["truncated"] for k in ks]
        worse = [k for k, q in zip(ks, ratios) if q > 1]
        print(f"| bigquant n_init={n} | {r['median']:.2f} | {', '.join(f'{w:.2f}' for w in r['walls'])} | "
              f"{ref['median'] / r['median']:.0f}x | {len(worse)} {worse if worse else ''} | "
              f"{min(ratios):.4f} / {statistics.median(ratios):.4f} / {max(ratios):.4f} | "
              f"{min(trunc):.4f} / {statistics.median(trunc):.4f} / {max(trunc):.4f} |")
        if not all(r["costs"][k]["same"] for k in ks):
            print(f"\n(n_init={n}: some refitted palettes differ from the sweep's: see stderr)")
    print("\nrounded cost = pixels to their nearest colour of the fit's centres rounded to integers (both); "
          "truncated cost = the walkthrough's: centres cast to uint8, the fit's own labels (both); "
          "bigquant as written = the palette its sweep reports and quantize writes (not compared).")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"sklearn": {str(k): v for k, v in ref.items()},
                       "bigquant": {str(n): r for n, r in runs.items()}}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
