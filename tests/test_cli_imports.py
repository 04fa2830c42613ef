"""Small commands import only what they need: no dask (let alone dask.array, distributed), no numba for ``info`` of a PNG.

Each check runs ``bigquant.cli.main([...])`` in a fresh interpreter and looks
at ``sys.modules`` afterwards (behaviour, not time: re-adding a module-level
``import dask.array`` on these paths fails here).  A small quantize loads
dask.array and numba but not distributed, and freezes what the pipeline's
imports left (``gc.freeze``: no collection walks them again).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

HEAVY = ("dask", "dask.array", "distributed", "numba")

_PROBE = """
import gc, json, sys
from bigquant.cli import main
code = main(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "loaded": [m for m in json.loads(sys.argv[2]) if m in sys.modules],
                  "frozen": gc.get_freeze_count(), "collecting": gc.isenabled()}))
"""


def _run(argv: list[str], cwd) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(HEAVY)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture
def small_png(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "small.png"
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
    return path


def test_info_of_a_png_imports_no_dask_array_distributed_or_numba(small_png, tmp_path):
    result = _run(["info", str(small_png)], tmp_path)
    assert result["code"] == 0 and result["loaded"] == []


@pytest.mark.parametrize("argv", [
    ["quantize", "missing.png", "out.png"],                # a missing input
    ["quantize", "-k", "abc", "in.png", "out.png"],          # a bad argument
    ["info"],                                              # a missing argument
])
def test_errors_import_no_dask_array_distributed_or_numba(argv, tmp_path):
    result = _run(argv, tmp_path)
    assert result["code"] in (1, 2)
    assert result["loaded"] == []


def test_quantize_of_a_small_png_imports_no_distributed(small_png, tmp_path):
    # in memory, on this process's threads: no client is looked for (dask's "sync" scheduler
    # name would import distributed to look for one)
    result = _run(["quantize", str(small_png), str(tmp_path / "out.png"), "-k", "4", "-q"], tmp_path)
    assert result["code"] == 0 and (tmp_path / "out.png").exists()
    assert "distributed" not in result["loaded"]


def test_quantize_of_a_tiled_tiff_imports_no_distributed(tmp_path):
    # the lazy path (the colour histogram's pass, the write, the quality report) on this
    # process's threads: no compute names a scheduler that makes dask import distributed
    import tifffile

    from bigquant.io.sample import make_sample_image

    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, make_sample_image((1024, 1536), seed=2), tile=(256, 256), compression="zlib",
                     photometric="rgb")
    result = _run(["quantize", str(path), str(tmp_path / "out.tif"), "-k", "8", "-q"], tmp_path)
    assert result["code"] == 0 and (tmp_path / "out.tif").exists()
    assert "dask.array" in result["loaded"] and "distributed" not in result["loaded"]


def test_quantize_freezes_the_pipelines_modules_and_keeps_collecting(small_png, tmp_path):
    # the objects numba, dask and scipy leave as they load are frozen (no collection walks
    # them again), and the collector runs as usual afterwards
    result = _run(["quantize", str(small_png), str(tmp_path / "out.png"), "-k", "4", "-q"], tmp_path)
    assert result["code"] == 0
    assert result["frozen"] > 10_000 and result["collecting"] is True


def test_quantize_loads_no_scipy_sparse_or_fftpack_and_scipy_still_imports(small_png, tmp_path):
    # dask.array's optional scipy parts (sparse chunk type, fftpack) are skipped on the command
    # line; scipy itself still imports afterwards (the tissue mask's ndimage)
    probe = _PROBE.replace('"collecting": gc.isenabled()',
                           '"collecting": gc.isenabled(), "ndimage": bool(__import__("scipy.ndimage").ndimage)')
    argv = ["quantize", str(small_png), str(tmp_path / "out.png"), "-k", "4", "-q"]
    proc = subprocess.run([sys.executable, "-c", probe, json.dumps(argv),
                           json.dumps(["dask.array", "scipy.sparse", "scipy.fftpack"])],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0 and result["loaded"] == ["dask.array"]
    assert result["ndimage"] is True


def test_a_16_bit_image_on_the_command_lines_threads_imports_no_distributed(tmp_path):
    # over the in-memory size, the grid fit and the write compute on dask: each compute that
    # names no scheduler would have dask import distributed to look for a client
    import tifffile

    from bigquant.pipeline.quantize import IN_MEMORY_MAX_PIXELS

    side = int(IN_MEMORY_MAX_PIXELS ** 0.5) + 256
    rng = np.random.default_rng(0)
    pixels = (rng.integers(0, 64, (side // 64, side // 64, 3)) * 1000).astype(np.uint16)
    pixels = np.repeat(np.repeat(pixels, 64, axis=0), 64, axis=1)
    src = tmp_path / "u16.tif"
    tifffile.imwrite(src, pixels, tile=(256, 256), photometric="rgb")
    result = _run(["quantize", str(src), str(tmp_path / "out.tif"), "-k", "8", "-q"], tmp_path)
    assert result["code"] == 0 and (tmp_path / "out.tif").exists()
    assert "distributed" not in result["loaded"]


def test_loading_the_pipeline_leaves_a_paused_collector_alone():
    import gc

    from bigquant.cli import _loading_pipeline

    gc.disable()
    try:
        with _loading_pipeline():
            pass
        assert not gc.isenabled()  # paused by its program: not ours to restart
    finally:
        gc.enable()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P"])
def test_decode_image_gives_what_read_image_computes(tmp_path, mode):
    from bigquant.io.read import decode_image, read_image

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (30, 50, 4), dtype=np.uint8), "RGBA").convert(mode)
    path = tmp_path / ("in.gif" if mode == "P" else "in.png")
    img.save(path)
    decoded, src = decode_image(path), read_image(path)
    assert decoded.format == src.format and decoded.photometric == src.photometric
    assert decoded.extra == src.extra and decoded.metadata == src.metadata
    np.testing.assert_array_equal(decoded.data, src.data.compute())
    assert decoded.alpha == (src.alpha is not None)


def test_decode_image_leaves_tiffs_and_arrays_to_read_image(tiled_tiff):
    from bigquant.io.read import decode_image

    assert decode_image(tiled_tiff) is None
    assert decode_image(np.zeros((4, 4, 3), np.uint8)) is None


def test_info_of_a_png_counts_what_the_histogram_counts(small_png, tmp_path):
    from bigquant.cluster.histogram import colour_histogram
    from bigquant.io.read import read_image

    proc = subprocess.run([sys.executable, "-m", "bigquant", "info", str(small_png)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("distinct colours"))
    assert line.split()[-1] == str(colour_histogram(read_image(small_png).data).n_colours)
