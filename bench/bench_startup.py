"""Time bigquant from a fresh install: the first (cold) and later (warm) quantize of a 512² PNG.

Makes a new virtual environment, installs this checkout into it (not editable:
numba's cache then lives in the fresh ``site-packages``; ``NUMBA_CACHE_DIR``
points at an empty folder as well), writes a 512 x 512 crop of matplotlib's
``grace_hopper.jpg`` as a PNG, and times:

- ``bigquant quantize in.png out.tif`` the first time (empty numba cache) and
  the second time (``--repeats`` times, median);
- the same with ``--cluster`` (a LocalCluster started for the small input);
- with a second empty cache: the warm-up ``make install`` runs
  (``python -m bigquant.pipeline.warm``), then the first CLI run after it;
- ``bigquant.quantize()`` in Python: the first call of a fresh process
  (imports included: ``import bigquant`` itself loads its modules on first
  use) and the median of warm calls in one process (wall and CPU).

Wall time and CPU time (user + system of the processes) are printed side by side:
on a loaded machine the CPU time is the steadier of the two.

``--small BEFORE`` instead times small commands in this interpreter, warm (a
first run of each fills the numba caches, untimed), BEFORE's checkout and this
one (``PYTHONPATH``) in turn, Python start-up included: ``bigquant info``
and ``bigquant quantize -k 16`` of a 600 x 400 PNG (grace_hopper.jpg resized),
an error (a missing input), and libimagequant's end to end (``python -c`` with
Pillow + ``imagequant``, when installed) -- medians of ``--repeats`` runs
(at least 5).

Usage: ``python bench/bench_startup.py [--repeats 3] [--k 16] [--keep DIR]``
       ``python bench/bench_startup.py --small /path/to/other/checkout [--repeats 7]``
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date

REPO = pathlib.Path(__file__).resolve().parents[1]

PY_CALL = r"""
import statistics, sys, time
t0 = time.perf_counter()
import bigquant
t1 = time.perf_counter()
src, out, k, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
bigquant.quantize(src, out, k, random_state=0, overwrite=True)
t2 = time.perf_counter()
times, cpus = [], []
for _ in range(repeats):
    a, c = time.perf_counter(), time.process_time()
    bigquant.quantize(src, out, k, random_state=0, overwrite=True)
    times.append(time.perf_counter() - a)
    cpus.append(time.process_time() - c)
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {statistics.median(times):.3f} {statistics.median(cpus):.3f}")
"""


def run(cmd: list[str], env: dict[str, str], cwd: pathlib.Path) -> tuple[float, float, str]:
    """Wall and CPU seconds (children's user + system) of one command, and its stdout.

    ``cwd`` is outside the checkout: ``python -c`` would import the checkout's
    sources (with a numba cache of their own) rather than the installed package.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def make_png(python: str, path: pathlib.Path, env: dict[str, str]) -> None:
    code = (
        "import numpy as np, matplotlib.cbook as cb; from PIL import Image\n"
        "with cb.get_sample_data('grace_hopper.jpg') as fh:\n"
        "    im = np.asarray(Image.open(fh).convert('RGB'))\n"
        f"Image.fromarray(im[:512, :512]).save({str(path)!r})\n"
    )
    subprocess.run([python, "-c", code], env=env, check=True, cwd=path.parent)


IMAGEQUANT = (
    "import sys; from PIL import Image; import imagequant\n"
    "img = Image.open(sys.argv[1]).convert('RGBA')\n"
    "imagequant.quantize_pil_image(img, max_colors=int(sys.argv[3])).save(sys.argv[2])\n"
)


def small(before: pathlib.Path, repeats: int, k: int) -> None:
    """Warm wall / CPU medians of small commands: ``before``'s checkout and this one, same run."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="bq-small-"))
    try:
        code = (
            "import matplotlib.cbook as cb; from PIL import Image\n"
            "Image.open(cb.get_sample_data('grace_hopper.jpg', asfileobj=False)).convert('RGB')"
            ".resize((600, 400)).save('small.png')\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
        base = {k_: v for k_, v in os.environ.items() if not k_.startswith(("PYTHON", "NUMBA_"))}
        cli = [sys.executable, "-m", "bigquant.cli"]
        commands = [
            ("`bigquant info small.png`", cli + ["info", "small.png"], 0),
            (f"`bigquant quantize small.png out.png -k {k}`",
             cli + ["quantize", "small.png", "out.png", "-k", str(k), "--overwrite", "-q"], 0),
            ("error: `bigquant quantize missing.png out.png`", cli + ["quantize", "missing.png", "out.png"], 1),
        ]
        checkouts = [("before", before.resolve()), ("after", REPO)]
        results: dict[tuple[str, str], tuple[float, float]] = {}
        for name, cmd, code_ in commands:
            for label, checkout in checkouts:
                env = dict(base, PYTHONPATH=str(checkout))
                _timed(cmd, env, root, code_)  # warm: numba caches, page cache
            samples: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in checkouts}
            for _ in range(repeats):
                for label, checkout in checkouts:  # interleaved: a slow moment costs both
                    samples[label].append(_timed(cmd, dict(base, PYTHONPATH=str(checkout)), root, code_))
            for label, _ in checkouts:
                results[name, label] = (statistics.median(w for w, _ in samples[label]),
                                        statistics.median(c for _, c in samples[label]))
        iq = None
        probe = subprocess.run([sys.executable, "-c", "import imagequant"], capture_output=True, env=base)
        if probe.returncode == 0:
            cmd = [sys.executable, "-c", IMAGEQUANT, "small.png", "iq.png", str(k)]
            _timed(cmd, base, root, 0)
            runs = [_timed(cmd, base, root, 0) for _ in range(repeats)]
            iq = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        print(f"bigquant small commands, {date.today()}, Python {platform.python_version()}, {os.cpu_count()} cores; "
              f"600 x 400 PNG, warm, medians of {repeats} runs (Python start-up included)\n")
        print("| command | before wall s | before CPU s | after wall s | after CPU s |")
        print("|---|---:|---:|---:|---:|")
        for name, _, _ in commands:
            (bw, bc), (aw, ac) = results[name, "before"], results[name, "after"]
            print(f"| {name} | {bw:.2f} | {bc:.2f} | {aw:.2f} | {ac:.2f} |")
        if iq is not None:
            print(f"| libimagequant (`imagequant.quantize_pil_image`, k = {k}) | | | {iq[0]:.2f} | {iq[1]:.2f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _timed(cmd: list[str], env: dict[str, str], cwd: pathlib.Path, expect: int) -> tuple[float, float]:
    """Wall and CPU seconds of one command that must exit with ``expect``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}, not {expect}:\n{proc.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per row (median)")
    parser.add_argument("--k", type=int, default=16, help="colours (default 16)")
    parser.add_argument("--keep", metavar="DIR", help="make the environment in DIR and keep it")
    parser.add_argument("--small", metavar="BEFORE",
                        help="time small commands warm in this interpreter: checkout BEFORE, then this one")
    args = parser.parse_args()
    if args.small:
        small(pathlib.Path(args.small), max(args.repeats, 5), args.k)
        return

    root = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="bq-startup-"))
    root.mkdir(parents=True, exist_ok=True)
    venv = root / "venv"
    if venv.exists():
        shutil.rmtree(venv)
    cache = root / "numba-cache"
    if cache.exists():
        shutil.rmtree(cache)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHON", "VIRTUAL_ENV"))}
    env["NUMBA_CACHE_DIR"] = str(cache)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    bigquant = str(venv / "bin" / "bigquant")
    subprocess.run([python, "-m", "pip", "install", "-q", str(REPO)], check=True, env=env)
    install = time.perf_counter() - t0
    png = root / "in512.png"
    make_png(python, png, env)
    out = root / "out.tif"
    k = str(args.k)

    rows: list[tuple[str, float, float]] = []
    cli = [bigquant, "quantize", str(png), str(out), "-k", k, "--overwrite", "--random-state", "0", "-q"]
    wall, cpu, _ = run(cli, env, root)
    rows.append(("CLI quantize, first run (empty numba cache)", wall, cpu))
    warm = [run(cli, env, root) for _ in range(args.repeats)]
    rows.append(("CLI quantize, warm (this process's threads)", statistics.median(w for w, _, _ in warm),
                 statistics.median(c for _, c, _ in warm)))
    clustered = [run(cli + ["--cluster", "--dashboard", "none"], env, root) for _ in range(args.repeats)]
    rows.append(("CLI quantize --cluster, warm (LocalCluster)", statistics.median(w for w, _, _ in clustered),
                 statistics.median(c for _, c, _ in clustered)))
    warmed = dict(env, NUMBA_CACHE_DIR=str(root / "numba-cache-warmed"))  # empty again
    wall, cpu, _ = run([python, "-m", "bigquant.pipeline.warm"], warmed, root)
    rows.append(("warm-up as `make install` runs it (`python -m bigquant.pipeline.warm`, empty cache)", wall, cpu))
    wall, cpu, _ = run(cli, warmed, root)
    rows.append(("CLI quantize, first run after the warm-up", wall, cpu))
    wall, cpu, text = run([python, "-c", PY_CALL, str(png), str(out), k, str(max(args.repeats, 5))], env, root)
    imports, first, call, call_cpu = (float(x) for x in text.split())

    print(f"bigquant startup, {date.today()}, Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{platform.machine()}; fresh venv + install {install:.0f} s; 512 x 512 PNG, k = {args.k}\n")
    print("| run | wall s | CPU s |")
    print("|---|---:|---:|")
    for name, wall_s, cpu_s in rows:
        print(f"| {name} | {wall_s:.2f} | {cpu_s:.2f} |")
    print(f"| Python: `import bigquant` (warm cache) | {imports:.2f} | |")
    print(f"| Python: first `quantize()` call of the process | {first:.2f} | |")
    print(f"| Python: `quantize()`, warm (median of {max(args.repeats, 5)}) | {call:.3f} | {call_cpu:.3f} |")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
