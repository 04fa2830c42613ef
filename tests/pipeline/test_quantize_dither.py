"""Tests of bigquant.quantize(dither=...): the written image is the reference dither of the palette."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from bigquant import quantize
from bigquant.cli import main
from bigquant.errors import InvalidParameterError
from bigquant.kernels.dither import floyd_steinberg


def _palette(path) -> np.ndarray:
    return np.array(json.loads(path.read_text())["colours"])


@pytest.mark.parametrize("suffix", [".tif", ".zarr", ".png"])
def test_quantize_floyd_steinberg_writes_the_reference_labels(tmp_path, rgb_image, suffix):
    out = tmp_path / f"q{suffix}"
    quantize(rgb_image, out, 8, random_state=0, tile=64, chunks=96, dither="floyd-steinberg",
             palette_out=tmp_path / "p.json")
    colours = _palette(tmp_path / "p.json")
    if suffix == ".tif":
        labels = tifffile.imread(out)
    elif suffix == ".zarr":
        labels = np.asarray(zarr.open_array(str(out), mode="r")[:])
    else:
        labels = np.asarray(Image.open(out))
    np.testing.assert_array_equal(labels, floyd_steinberg(rgb_image, colours, strength=0.9))  # the default
    rat = [out.name + ".aux.xml"] if suffix == ".tif" else []  # the classes' attribute table
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, "p.json", *rat])  # the label spool is gone


@pytest.mark.parametrize("dither", ["floyd-steinberg", "blue-noise"])
def test_a_dithered_compressed_tiff_is_decoded_once(tmp_path, tiled_tiff, monkeypatch, dither):
    """The dither reads the tiles the fit decoded (the pixel spool), in its own chunks; the labels are those of
    the pixels decoded again, and nothing is left beside the output."""
    import bigquant.io.spool as spool
    from bigquant.io.tiff_read import _SegmentIndex

    decoded: list[int] = []
    original = _SegmentIndex.decoded

    def counting(self, fh, i, *args):
        decoded.append(i)
        return original(self, fh, i, *args)

    monkeypatch.setattr(_SegmentIndex, "decoded", counting)
    monkeypatch.setattr("bigquant.pipeline.dither.DITHER_CHUNK", 128)  # smaller than the read's chunks
    monkeypatch.setattr("bigquant.pipeline.quantize.DITHER_CHUNK", 128)
    quantize(tiled_tiff, tmp_path / "q.tif", 6, random_state=0, tile=64, dither=dither)
    assert sorted(decoded) == list(range(5 * 7))  # 300 x 400 in 64 px tiles, each decoded once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.tif", "q.tif.aux.xml", "tiled.tif"]
    with pytest.MonkeyPatch.context() as mp:  # no room for a spool: the dither decodes the tiles again
        mp.setattr(spool, "FREE_MARGIN", 2**62)
        decoded.clear()
        quantize(tiled_tiff, tmp_path / "again.tif", 6, random_state=0, tile=64, dither=dither)
    assert len(decoded) == 2 * 5 * 7
    assert tifffile.imread(tmp_path / "q.tif").tobytes() == tifffile.imread(tmp_path / "again.tif").tobytes()


def test_quantize_dither_rgb_mode_with_mask(tmp_path, rgb_image):
    valid = np.ones(rgb_image.shape[:2], dtype=bool)
    valid[100:180, 50:300] = False
    out = tmp_path / "q.tif"
    quantize(rgb_image, out, 6, random_state=0, tile=64, chunks=64, mode="rgb", mask=valid,
             dither="floyd-steinberg", dither_strength=0.8, palette_out=tmp_path / "p.json")
    colours = _palette(tmp_path / "p.json")
    pixels = tifffile.imread(out)
    assert pixels.shape == rgb_image.shape[:2] + (4,)  # RGB + the no-data alpha
    assert (pixels[~valid, 3] == 0).all() and (pixels[valid, 3] == 255).all()
    expected = colours[floyd_steinberg(rgb_image, colours, valid=valid, strength=0.8)]
    np.testing.assert_array_equal(pixels[valid, :3], expected[valid])


def test_quantize_blue_noise_and_plain_differ_and_keep_the_palette(tmp_path, rgb_image):
    plain = quantize(rgb_image, tmp_path / "a.tif", 8, random_state=0, tile=64)
    noisy = quantize(rgb_image, tmp_path / "b.tif", 8, random_state=0, tile=64, dither="blue-noise")
    np.testing.assert_array_equal(plain.cluster_centers_, noisy.cluster_centers_)
    a, b = tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif")
    assert 0.05 < (a != b).mean() < 0.9
    assert b.max() < 8


def test_quantize_dither_refuses_what_it_cannot_dither(tmp_path, rgb_image):
    with pytest.raises(InvalidParameterError, match="dither='floyd'"):
        quantize(rgb_image, tmp_path / "q.tif", 4, dither="floyd")
    with pytest.raises(InvalidParameterError, match="uint8 or uint16"):
        quantize(rgb_image.astype(np.float32) / 255, tmp_path / "q.tif", 4, dither="blue-noise")
    four = np.concatenate([rgb_image, rgb_image[:, :, :1]], axis=2)
    with pytest.raises(InvalidParameterError, match="1 or 3 bands"):
        quantize(four, tmp_path / "q.tif", 4, dither="floyd-steinberg")
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_dither(tmp_path, rgb_image):
    src = tmp_path / "in.png"
    Image.fromarray(rgb_image).save(src)
    out = tmp_path / "out.tif"
    assert main(["quantize", str(src), str(out), "-k", "4", "--no-cluster", "--random-state", "0",
                 "--dither", "floyd-steinberg", "--dither-strength", "0.5", "--tile", "64",
                 "--palette-out", str(tmp_path / "p.json")]) == 0
    colours = _palette(tmp_path / "p.json")
    np.testing.assert_array_equal(tifffile.imread(out), floyd_steinberg(rgb_image, colours, strength=0.5))
    assert main(["quantize", str(src), str(tmp_path / "x.tif"), "--no-cluster", "--dither-strength", "2"]) == 2


def test_dithered_tiff_labels_are_deflated_fast_unless_a_level_is_given(tmp_path, rgb_image):
    """Dithered labels (noise to deflate) take the fast level by default: the very bytes of an explicit
    level 1, not those of the palette default; a level given is kept, and other codecs keep theirs."""
    from bigquant.io.encode import DITHERED_DEFLATE_LEVEL, PALETTE_DEFLATE_LEVEL

    assert DITHERED_DEFLATE_LEVEL < PALETTE_DEFLATE_LEVEL

    def written(name, **kw):
        out = tmp_path / name
        quantize(rgb_image, out, 16, random_state=0, tile=64, dither="floyd-steinberg", rat=False, **kw)
        return out

    default = written("default.tif")
    fast = written("fast.tif", compression_level=DITHERED_DEFLATE_LEVEL)
    usual = written("usual.tif", compression_level=PALETTE_DEFLATE_LEVEL)
    with tifffile.TiffFile(default) as a, tifffile.TiffFile(fast) as b, tifffile.TiffFile(usual) as c:
        sizes = [sum(t.pages[0].databytecounts) for t in (a, b, c)]
        np.testing.assert_array_equal(a.asarray(), c.asarray())
    assert sizes[0] == sizes[1] != sizes[2]
    zstd = written("z.tif", compression="zstd")
    np.testing.assert_array_equal(tifffile.imread(zstd), tifffile.imread(default))
