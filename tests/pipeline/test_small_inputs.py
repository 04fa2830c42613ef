"""Small images already in memory are fitted and mapped as numpy arrays: same files, less machinery."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bigquant import quantize
from bigquant.pipeline import quantize as pipeline_quantize


@pytest.fixture
def png(tmp_path, rgb_image):
    path = tmp_path / "in.png"
    Image.fromarray(rgb_image).save(path)
    return path


@pytest.mark.parametrize("k", [6, 40])
def test_in_memory_run_writes_what_the_chunked_run_writes(tmp_path, png, k):
    """The same palette, error and pixels as the dask path (forced here by asking for chunks)."""
    small = quantize(png, tmp_path / "a.png", k, random_state=0, palette_out=tmp_path / "a.json")
    chunked = quantize(png, tmp_path / "b.png", k, random_state=0, chunks=128, palette_out=tmp_path / "b.json")
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["colours"] == b["colours"] and a["error"] == b["error"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))
    np.testing.assert_array_equal(small.cluster_centers_, chunked.cluster_centers_)
    assert small.quality_["psnr"] == pytest.approx(chunked.quality_["psnr"])


def test_which_inputs_run_in_memory(png, tiled_tiff, rgb_image):
    from bigquant import read_image

    def decide(src, **kw):
        source = read_image(src)
        args = dict(valid=None, client=None, palette=None, target=None, dither=None, space="rgb",
                    strategy="auto", compare=None)
        args.update(kw)
        return pipeline_quantize._runs_in_memory(src, source, source.data, **args)

    assert decide(png) and decide(rgb_image)
    assert not decide(tiled_tiff)  # read lazily, tile by tile
    assert not decide(png, dither="floyd-steinberg") and not decide(png, space="oklab")
    assert not decide(png, strategy="pixels") and not decide(png, palette=[[0, 0, 0]])


def test_a_small_quantize_imports_no_distributed(tmp_path, png):
    """Without a cluster, a small image's run never imports distributed (about 1 s of start-up)."""
    code = (
        "import sys, bigquant\n"
        f"bigquant.quantize({str(png)!r}, {str(tmp_path / 'o.tif')!r}, 4, random_state=0)\n"
        "assert 'distributed' not in sys.modules, 'distributed was imported'\n"
        "assert 'bigquant.pipeline.sweep' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
