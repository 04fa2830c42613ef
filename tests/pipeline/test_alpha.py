"""Soft alpha as pngquant keeps it (issue #23, item 4): alpha fitted premultiplied, written as RGBA.

Feathered RGBA PNGs are built here (a smooth colourful image under a radial
alpha with every level from 0 to 255); the outputs are read back by Pillow,
imagecodecs and tifffile.
"""

from __future__ import annotations

import json
import math

import dask
import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from bigquant import quantize, quantize_many, sweep
from bigquant.cli import main
from bigquant.errors import InvalidParameterError

SIDE = 96


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def _feathered(side: int = SIDE, seed: int = 0) -> np.ndarray:
    """Smooth colours (gradients and a few blobs) under a radial alpha: opaque centre, 0..255 fade, 0 corners."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / (side - 1)
    rgb = np.dstack([200 * x + 30, 180 * y + 40, 120 * (1 - x * y) + 60])
    for _ in range(4):
        cy, cx = rng.uniform(0.2, 0.8, 2)
        rgb += rng.uniform(-60, 60, 3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 0.02)[:, :, None]
    r = np.hypot(y - 0.5, x - 0.5) / 0.5
    alpha = np.clip((1.0 - r) / 0.6, 0, 1) * 255
    return np.rint(np.dstack([np.clip(rgb, 0, 255), alpha])).astype(np.uint8)


def _write_png(path, rgba: np.ndarray):
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def _rgba_back(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def _seen(rgba: np.ndarray) -> np.ndarray:
    """R, G, B premultiplied by alpha (composited on black) and alpha, float64."""
    rgba = rgba.astype(np.float64)
    return np.concatenate([rgba[..., :3] * rgba[..., 3:] / 255.0, rgba[..., 3:]], axis=-1)


def test_a_feathered_png_keeps_eight_alpha_levels_or_more_at_k32(tmp_path):
    src = _feathered()
    assert np.unique(src[..., 3]).size > 200
    out = tmp_path / "q.png"
    quantize(_write_png(tmp_path / "in.png", src), out, 32, random_state=0)
    with Image.open(out) as im:
        assert im.mode == "P"
        trns = im.info["transparency"]
        assert isinstance(trns, bytes)  # per-entry alpha, not one transparent index
    partial = {a for a in trns if 0 < a < 255}
    assert len(partial) >= 6
    back = _rgba_back(out)
    assert np.unique(back[..., 3]).size >= 8
    # alpha follows the source's: transparent where it is, opaque where it is, close in between
    np.testing.assert_array_equal(back[src[..., 3] == 0, 3], 0)
    assert np.sqrt(np.mean((back[..., 3].astype(float) - src[..., 3]) ** 2)) < 12


def test_the_fit_premultiplies_colours_by_alpha(tmp_path):
    """A nearly transparent pixel barely pulls a colour; a fully transparent one does not at all."""
    src = np.zeros((32, 32, 4), np.uint8)
    src[:, :16] = (250, 0, 0, 255)     # opaque red
    src[:, 16:] = (0, 250, 0, 10)      # green, nearly transparent
    src[:4, :] = (0, 0, 255, 0)        # blue, fully transparent
    out = tmp_path / "q.png"
    model = quantize(_write_png(tmp_path / "in.png", src), out, 1, random_state=0)
    (entry,) = np.asarray(model.cluster_centers_)
    # premultiplied mean: (250 * 1 + 0 * 10/255) / (1 + 10/255) ~ 240 red, ~ 9 green; a straight
    # mean would be (125, 125, 0)
    r, g, b, a = entry
    assert r > 230 and g < 15 and b == 0
    assert 120 < a < 140  # alpha is averaged as alpha: (255 + 10) / 2
    back = _rgba_back(out)
    np.testing.assert_array_equal(back[:4], 0)  # the transparent pixels share the alpha-0 entry
    assert (back[4:, :, :3] == np.rint(entry[:3])).all()


def test_binary_alpha_is_read_as_a_mask_as_before(tmp_path):
    """Alpha of only 0 and 255: no alpha channel fitted, the same file as alpha='mask' writes."""
    src = _feathered()
    src[..., 3] = np.where(src[..., 3] > 0, 255, 0)
    path = _write_png(tmp_path / "in.png", src)
    auto = quantize(path, tmp_path / "auto.png", 8, random_state=0)
    mask = quantize(path, tmp_path / "mask.png", 8, random_state=0, alpha="mask")
    assert auto.cluster_centers_.shape == (8, 3)
    np.testing.assert_array_equal(auto.cluster_centers_, mask.cluster_centers_)
    assert (tmp_path / "auto.png").read_bytes() == (tmp_path / "mask.png").read_bytes()
    with Image.open(tmp_path / "auto.png") as im:
        assert im.info["transparency"] == 8  # one transparent index: the nodata entry
    back = _rgba_back(tmp_path / "auto.png")
    assert set(np.unique(back[..., 3])) == {0, 255}


def test_the_png_read_back_is_the_rgba_of_the_labels(tmp_path):
    src = _feathered()
    out = tmp_path / "q.png"
    model = quantize(_write_png(tmp_path / "in.png", src), out, 16, random_state=0)
    palette = np.asarray(model.cluster_centers_)
    assert palette.shape == (16, 4)
    labels = np.asarray(model.labels_)
    table = np.vstack([palette, [0, 0, 0, 0]]).astype(np.uint8)  # index 16: the fully transparent pixels
    expected = table[np.where(src[..., 3] == 0, 16, labels)]
    np.testing.assert_array_equal(_rgba_back(out), expected)
    np.testing.assert_array_equal(imagecodecs.png_decode(out.read_bytes()), expected)
    # every pixel takes its nearest entry in the premultiplied space (alpha weighted as libimagequant)
    from bigquant.pipeline.alpha import ALPHA_WEIGHT

    def points(rgba):
        p = _seen(rgba)
        p[..., 3] *= ALPHA_WEIGHT
        return p

    seen = src[..., 3] > 0
    d = ((points(src[seen])[:, None, :] - points(palette)[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d[np.arange(len(d)), labels[seen]], d.min(axis=1), rtol=1e-4, atol=1e-3)


def test_the_reported_psnr_is_the_written_rgba_as_seen(tmp_path):
    src = _feathered()
    out = tmp_path / "q.png"
    model = quantize(_write_png(tmp_path / "in.png", src), out, 24, random_state=0, measure=True,
                     palette_out=tmp_path / "p.json")
    seen = src[..., 3] > 0
    error = ((_seen(_rgba_back(out))[seen] - _seen(src)[seen]) ** 2).sum()
    psnr = 10 * math.log10(255.0**2 * seen.sum() * 4 / error)
    assert model.quality_["pixels"] == seen.sum()
    assert model.quality_["psnr"] == pytest.approx(psnr, rel=1e-6)
    assert model.quality_["delta_e_ok"] is None
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["psnr"] == pytest.approx(psnr, rel=1e-6)
    assert doc["error"] == pytest.approx(error, rel=1e-6)
    assert doc["bands"] == 4 and doc["nodata_index"] == 24


def test_rgb_tiff_is_rgba_with_unassociated_alpha(tmp_path):
    src = _feathered()
    out = tmp_path / "q.tif"
    quantize(_write_png(tmp_path / "in.png", src), out, 32, random_state=0, mode="rgb", tile=32,
             preview=tmp_path / "preview.png")
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert page.samplesperpixel == 4 and [e.name for e in page.extrasamples] == ["UNASSALPHA"]
        stored = page.asarray()
    assert np.unique(stored[..., 3]).size >= 8
    np.testing.assert_array_equal(stored[src[..., 3] == 0], 0)  # transparent black
    preview = _rgba_back(tmp_path / "preview.png")  # the preview shows the alpha too
    assert np.unique(preview[..., 3]).size >= 8


def test_a_palette_tiff_cannot_hold_alpha(tmp_path):
    src = _feathered()
    path = _write_png(tmp_path / "in.png", src)
    with pytest.raises(InvalidParameterError, match="colormap holds no alpha"):
        quantize(path, tmp_path / "q.tif", 8, alpha="fit")
    assert not (tmp_path / "q.tif").exists()
    # auto: the alpha is a mask there, as before
    model = quantize(path, tmp_path / "q.tif", 8, random_state=0, tile=32)
    assert model.cluster_centers_.shape == (8, 3)
    assert set(np.unique(tifffile.imread(tmp_path / "q.tif")[src[..., 3] == 0])) == {8}


def test_alpha_option_is_checked_before_a_pixel_is_read(tmp_path):
    path = _write_png(tmp_path / "in.png", _feathered())
    with pytest.raises(InvalidParameterError, match="alpha='soft' must be one of"):
        quantize(path, tmp_path / "q.png", 8, alpha="soft")
    Image.fromarray(_feathered()[..., :3], "RGB").save(tmp_path / "rgb.png")
    with pytest.raises(InvalidParameterError, match="no alpha channel"):
        quantize(tmp_path / "rgb.png", tmp_path / "q.png", 8, alpha="fit")
    with pytest.raises(InvalidParameterError, match="dither does not fit alpha"):
        quantize(path, tmp_path / "q.png", 8, alpha="fit", dither="floyd-steinberg")
    # a set's shared palette and a sweep read alpha as a mask
    with pytest.raises(InvalidParameterError, match="a set's shared palette reads alpha as a mask"):
        quantize_many([path], tmp_path / "set", 8, alpha="fit", suffix=".png")
    with pytest.raises(InvalidParameterError, match="alpha is not an option of sweep"):
        sweep(path, [2, 4], alpha="fit")


def test_the_command_line_fits_alpha(tmp_path):
    path = _write_png(tmp_path / "in.png", _feathered())
    out = tmp_path / "q.png"
    assert main(["quantize", str(path), str(out), "-k", "32", "--alpha", "fit", "--no-progress",
                 "--random-state", "0"]) == 0
    assert np.unique(_rgba_back(out)[..., 3]).size >= 8
    assert main(["quantize", str(path), str(tmp_path / "m.png"), "-k", "32", "--alpha", "mask", "--no-progress",
                 "--random-state", "0"]) == 0
    assert set(np.unique(_rgba_back(tmp_path / "m.png")[..., 3])) == {0, 255}


def test_premultiply_and_back():
    from bigquant.pipeline.alpha import ALPHA_WEIGHT, premultiply, unpremultiply

    # libimagequant's weights: 3 * 0.625^2 against the mean of 0.5^2, 1^2, 0.45^2
    assert ALPHA_WEIGHT == pytest.approx(math.sqrt(3 * 0.625**2 / ((0.25 + 1 + 0.2025) / 3)))
    rgba = np.random.default_rng(0).integers(0, 256, (500, 4), dtype=np.uint8)
    rgba[:, 3] = np.maximum(rgba[:, 3], 128)  # where 8 bits of colour survive premultiplying
    np.testing.assert_array_equal(unpremultiply(premultiply(rgba), np.uint8), rgba)
    wide = (rgba.astype(np.uint16) * 257)
    np.testing.assert_array_equal(unpremultiply(premultiply(wide), np.uint16), wide)


def test_an_rgba_tiff_keeps_its_alpha_in_a_png(tmp_path):
    src = _feathered()
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, src, photometric="rgb", extrasamples=["unassalpha"], tile=(32, 32))
    out = tmp_path / "q.png"
    quantize(path, out, 32, random_state=0)
    back = _rgba_back(out)
    assert np.unique(back[..., 3]).size >= 8
    np.testing.assert_array_equal(back[src[..., 3] == 0], 0)
