"""Tests of the quality report: quantize's PSNR / mean Delta E (OKLab), the JSON, the CLI, --compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from bigquant import quantize
from bigquant.cli import main
from bigquant.kernels.spaces import to_space


def _measured(result: np.ndarray, source: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    a, b = result.reshape(-1, 3), source.reshape(-1, 3)
    if valid is not None:
        a, b = a[valid.reshape(-1)], b[valid.reshape(-1)]
    mse = ((a.astype(float) - b) ** 2).mean()
    d = (to_space(a, "oklab") - to_space(b, "oklab")) / 100
    return 10 * np.log10(255**2 / mse), float(np.sqrt((d * d).sum(axis=1)).mean())


@pytest.mark.parametrize("options", [
    {},  # histogram: from the distinct colours
    {"dither": "floyd-steinberg"},  # from the dither's first pass
    {"dither": "blue-noise", "measure": True},  # one more pass
    {"strategy": "pixels", "measure": True},
    {"space": "oklab"},
], ids=str)
def test_quality_is_that_of_the_written_image(tmp_path, rgb_image, options):
    valid = np.ones(rgb_image.shape[:2], dtype=bool)
    valid[:40, :90] = False
    model = quantize(rgb_image, tmp_path / "q.tif", 8, random_state=0, tile=64, chunks=128, mode="rgb",
                     mask=valid, palette_out=tmp_path / "p.json", **options)
    written = tifffile.imread(tmp_path / "q.tif")[:, :, :3]
    psnr, delta_e = _measured(written, rgb_image, valid)
    assert model.quality_["pixels"] == valid.sum()
    assert model.quality_["psnr"] == pytest.approx(psnr, rel=1e-9)
    # Delta E within a millionth: the kernels' OKLab is float32 (about 1e-7 off this float64 oracle)
    assert model.quality_["delta_e_ok"] == pytest.approx(delta_e, rel=1e-6)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["psnr"] == pytest.approx(psnr, rel=1e-9)
    assert doc["delta_e_ok"] == pytest.approx(delta_e, rel=1e-6)


def test_no_quality_when_it_would_cost_a_pass(tmp_path, rgb_image):
    model = quantize(rgb_image, tmp_path / "q.tif", 4, random_state=0, tile=64, strategy="pixels")
    assert model.quality_ is None
    model = quantize(rgb_image, tmp_path / "r.tif", 4, random_state=0, tile=64, measure=False)
    assert model.quality_ is None
    model = quantize(rgb_image, tmp_path / "s.tif", 4, random_state=0, tile=64, measure=False,
                     dither="floyd-steinberg")
    assert model.quality_ is None


def test_cli_last_line_and_compare(tmp_path, rgb_image, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(rgb_image).save(src)
    out, compare = tmp_path / "o.png", tmp_path / "c.png"
    assert main(["quantize", str(src), str(out), "-k", "6", "--no-cluster", "--random-state", "0",
                 "--dither", "floyd-steinberg", "--compare", str(compare), "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    psnr, delta_e = _measured(np.asarray(Image.open(out).convert("RGB")), rgb_image)
    assert f"PSNR {psnr:.2f} dB" in last and f"mean dE_OK {delta_e:.4f}" in last
    side = np.asarray(Image.open(compare).convert("RGB"))
    assert side.shape == (300, 400 * 2 + 8, 3)  # the whole (small) image, source | gap | result
    np.testing.assert_array_equal(side[:, :400], rgb_image)
    np.testing.assert_array_equal(side[:, 408:], np.asarray(Image.open(out).convert("RGB")))
