"""Tests of bigquant.pipeline.warm: the common paths compile nothing after the warm-up, on no worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bigquant.io.sample import make_sample_image, make_sample_tiff
from bigquant.pipeline.warm import kernels_warm, warm_kernels

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: a new process: the warm-up (loads from the cache, or compiles), then the command
#: lines of the common paths, recording every numba compile (a cache load is none)
_AFTER_WARM = textwrap.dedent("""
    import json, sys
    from numba.core import event
    from bigquant.pipeline.warm import warm_kernels
    warm_kernels(force=True)
    compiled = []

    class Record(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    event.register("numba:compile", Record())
    from bigquant.cli import main
    for argv in json.loads(sys.argv[1]):
        assert main(argv) == 0, argv
    print(json.dumps(compiled))
""")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("warm")
    png = root / "photo.png"
    Image.fromarray(make_sample_image((448, 512), seed=5)).save(png)  # other sizes than the warm-up's
    tiff = make_sample_tiff(root / "big.tif", size=(1536, 1280), tile=256, seed=5, compression="zlib")
    return root, png, tiff


@pytest.fixture(scope="module")
def inputs16(inputs):
    """16-bit RGB tiled TIFFs: a small one, and one of 16 MP (the fit's last pass runs in the write)."""
    import numpy as np
    import tifffile

    root = inputs[0]
    small, large = root / "small16.tif", root / "large16.tif"
    tifffile.imwrite(small, make_sample_image((640, 768), seed=6).astype(np.uint16) * 257, tile=(256, 256),
                     photometric="rgb", compression="zlib")
    tifffile.imwrite(large, make_sample_image((4096, 4096), seed=7).astype(np.uint16) * 257, tile=(512, 512),
                     photometric="rgb", compression="zlib")
    return small, large


@pytest.mark.slow  # compiles every kernel of the warm-up into an empty cache: about 25 s of CPU
def test_after_the_warm_up_the_common_paths_compile_nothing(inputs, inputs16, tmp_path):
    root, png, tiff = inputs
    small16, large16 = inputs16
    common = ["-k", "12", "--overwrite", "--no-progress", "-q"]
    commands = [
        ["quantize", str(png), str(root / "a.png"), *common],
        ["quantize", str(png), str(root / "b.png"), *common, "--dither", "floyd-steinberg"],
        ["quantize", str(tiff), str(root / "c.tif"), *common],
        ["quantize", str(tiff), str(root / "d.tif"), *common, "--dither", "floyd-steinberg"],
        ["sweep", str(tiff), "--k", "3:9:3", "--no-progress", "-q"],
        ["quantize", str(small16), str(root / "e.tif"), *common],
        ["quantize", str(large16), str(root / "f.tif"), *common],
    ]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))  # empty: only the warm-up fills it
    proc = subprocess.run([sys.executable, "-c", _AFTER_WARM, json.dumps(commands)], capture_output=True,
                          text=True, env=env, cwd=root, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_stamp_follows_the_kernels_sources(monkeypatch):
    import bigquant.pipeline.warm as warm

    warm_kernels()
    assert kernels_warm()
    monkeypatch.setattr(warm, "_stamp", lambda: "numba 0.0 on another machine\n")
    assert not kernels_warm()


# --------------------------------------------------------------------------- workers


def _record_compiles(dask_worker=None):
    from numba.core import event

    found: list[str] = []

    class Record(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            found.append(ev.data["dispatcher"].py_func.__qualname__)

    event.register("numba:compile", Record())
    sys.modules["__bigquant_test_compiled__"] = found  # type: ignore[assignment]


def _compiled():
    return list(sys.modules.get("__bigquant_test_compiled__", ["no recorder"]))


@pytest.mark.distributed
def test_workers_of_a_local_cluster_compile_nothing(inputs):
    import cloudpickle

    import bigquant
    from bigquant.pipeline.runtime import connect

    root, png, tiff = inputs
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    with connect(n_workers=2, threads_per_worker=1, dashboard_address=None, timeout=120) as rt:
        assert kernels_warm()  # connect() warmed the cache before the workers started
        rt.client.run(_record_compiles)
        bigquant.quantize(str(tiff), root / "w.tif", 12, random_state=0, overwrite=True, client=rt.client)
        bigquant.quantize(str(tiff), root / "wd.tif", 12, random_state=0, overwrite=True, client=rt.client,
                          dither="floyd-steinberg")
        per_worker = rt.client.run(_compiled)
    assert len(per_worker) == 2
    assert all(found == [] for found in per_worker.values()), per_worker
