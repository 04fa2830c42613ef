"""Palettes kept, applied and shared: apply = the fit's own write, one palette for a set, k from quality,
and one palette definition for quantize, the sweep and KMeans."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from bigquant import KMeans, quantize, sweep
from bigquant.cli import EXIT_QUALITY, main
from bigquant.cluster.fixed import FixedPalette
from bigquant.cluster.histogram import colour_histogram
from bigquant.errors import (
    ImageReadError,
    InvalidInputError,
    InvalidParameterError,
    QualityError,
)
from bigquant.io.palette_file import read_palette, write_palette
from bigquant.io.sample import make_sample_image
from bigquant.pipeline.many import quantize_many
from bigquant.pipeline.quality import QualityTarget, parse_quality, search_k
from tests.support.oracle import nearest_colour, squared_error


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three photo-like 8-bit RGB images as tiled TIFFs (different content, same type)."""
    d = tmp_path_factory.mktemp("photos")
    images, paths = [], []
    for seed, shape in enumerate([(180, 240), (200, 160), (150, 150)]):
        img = make_sample_image(shape, seed=seed)
        path = d / f"photo{seed}.tif"
        tifffile.imwrite(path, img, tile=(64, 64), photometric="rgb")
        images.append(img)
        paths.append(path)
    return images, paths


# --------------------------------------------------------------------------- one palette definition


@pytest.mark.parametrize("k", [3, 8, 16])
def test_sweep_cost_is_the_error_of_the_file_quantize_writes(tmp_path, photos, k):
    images, paths = photos
    result = sweep(paths[0], [k], random_state=7)
    quantize(paths[0], tmp_path / "q.tif", k, random_state=7, palette_out=tmp_path / "p.json")
    with tifffile.TiffFile(tmp_path / "q.tif") as tf:
        labels = tf.pages[0].asarray()
        colormap = tf.pages[0].colormap
    palette = (colormap[:, :k].T // 257).astype(np.float64)
    np.testing.assert_array_equal(palette, result.palette(k))
    written_error = float(((images[0].astype(np.float64) - palette[labels]) ** 2).sum())
    assert written_error == result[k].cost
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["error"] == result[k].cost and doc["psnr"] == pytest.approx(result[k].psnr)


def test_kmeans_palette_is_refined_and_never_worse_than_rounding(photos):
    img = photos[0][0]
    model = KMeans(12, random_state=0).fit(img)
    palette, error = model.palette()
    assert palette.dtype == np.uint8 and error == squared_error(img, palette)
    assert error <= squared_error(img, np.rint(model.cluster_centers_))
    # the same fit on the histogram alone
    again = KMeans(12, random_state=0).fit_histogram(colour_histogram(img))
    np.testing.assert_array_equal(again.cluster_centers_, model.cluster_centers_)
    np.testing.assert_array_equal(again.palette()[0], palette)


def test_float_data_palette_is_the_centres():
    X = np.random.default_rng(0).random((500, 3)).astype(np.float32)
    model = KMeans(4, random_state=0).fit(X)
    palette, error = model.palette()
    np.testing.assert_array_equal(palette, model.cluster_centers_)
    assert error is None


# --------------------------------------------------------------------------- apply a palette


@pytest.mark.parametrize("mode", ["palette", "rgb"])
def test_applying_the_fitted_palette_is_byte_identical_to_the_fit(tmp_path, photos, mode):
    path = photos[1][0]
    quantize(path, tmp_path / "fit.tif", 10, random_state=1, mode=mode, palette_out=tmp_path / "p.json")
    quantize(path, tmp_path / "applied.tif", palette=tmp_path / "p.json", mode=mode)
    assert (tmp_path / "fit.tif").read_bytes() == (tmp_path / "applied.tif").read_bytes()


def test_applied_palette_maps_each_pixel_to_its_nearest_colour(tmp_path, photos):
    images, paths = photos
    palette = np.array([[0, 0, 0], [255, 255, 255], [200, 30, 30], [30, 30, 200], [128, 128, 128]], np.uint8)
    model = quantize(paths[2], tmp_path / "q.png", palette=palette)
    assert isinstance(model, FixedPalette)
    with Image.open(tmp_path / "q.png") as im:
        labels = np.asarray(im)
        table = np.asarray(im.getpalette()[: 3 * len(palette)]).reshape(-1, 3)
    np.testing.assert_array_equal(labels, nearest_colour(images[2], palette))
    np.testing.assert_array_equal(table, palette)


def test_fixed_palette_full_table_equals_the_histogram_table():
    import dask.array as da

    img = make_sample_image((300, 256), seed=3)
    palette = np.random.default_rng(0).integers(0, 256, (24, 3))
    lazy = da.from_array(img, chunks=(100, 100, 3))
    full = FixedPalette(palette).fit(lazy)  # every colour code labelled: one read pass
    counted = FixedPalette(palette).fit(lazy, histogram=colour_histogram(img))
    assert full.lookup_table()[0].shape == (1 << 24,)
    expected = nearest_colour(img, palette)
    np.testing.assert_array_equal(full.labels_.compute(), expected)
    np.testing.assert_array_equal(counted.labels_.compute(), expected)
    assert counted.inertia_ == squared_error(img, palette)


@pytest.mark.parametrize("suffix", [".gpl", ".act", ".png", ".tif", ".json"])
def test_palette_files_round_trip(tmp_path, suffix):
    palette = np.random.default_rng(1).integers(0, 256, (37, 3)).astype(np.uint8)
    palette[5] = palette[2]  # a repeated colour survives in every format but the swatch
    path = write_palette(tmp_path / f"p{suffix}", palette)
    back = read_palette(path)
    if suffix in (".png", ".tif"):
        _, first = np.unique(palette, axis=0, return_index=True)
        np.testing.assert_array_equal(back, palette[np.sort(first)])
    else:
        np.testing.assert_array_equal(back, palette)


def test_gpl_and_act_are_what_gimp_and_photoshop_read(tmp_path):
    palette = np.array([[255, 0, 0], [0, 128, 255]], np.uint8)
    text = write_palette(tmp_path / "p.gpl", palette, name="two").read_text().splitlines()
    assert text[:2] == ["GIMP Palette", "Name: two"] and text[-2].split()[:3] == ["255", "0", "0"]
    raw = write_palette(tmp_path / "p.act", palette).read_bytes()
    assert len(raw) == 772 and raw[:6] == bytes([255, 0, 0, 0, 128, 255]) and raw[768:770] == b"\x00\x02"


def test_bad_palettes_are_clear_errors(tmp_path, photos):
    path = photos[1][0]
    write_palette(tmp_path / "grey.json", np.array([[1], [200]]))
    with pytest.raises(InvalidInputError, match="1 channel.*image has 3"):
        quantize(path, tmp_path / "a.tif", palette=tmp_path / "grey.json")
    big = np.random.default_rng(0).integers(0, 256, (300, 3)).astype(np.uint8)
    write_palette(tmp_path / "big.gpl", big)
    with pytest.raises(InvalidParameterError, match="more than the output can index .256."):
        quantize(path, tmp_path / "b.png", palette=tmp_path / "big.gpl")
    (tmp_path / "broken.gpl").write_text("not a palette\n")
    with pytest.raises(ImageReadError, match="broken.gpl"):
        quantize(path, tmp_path / "c.tif", palette=tmp_path / "broken.gpl")
    with pytest.raises(InvalidParameterError, match="n_clusters=5 but the palette has 2"):
        quantize(path, tmp_path / "d.tif", 5, palette=[[0, 0, 0], [9, 9, 9]])
    with pytest.raises(InvalidParameterError, match="act palette holds at most 256"):
        write_palette(tmp_path / "e.act", big)
    with pytest.raises(InvalidParameterError, match="8-bit RGB"):
        write_palette(tmp_path / "f.gpl", np.array([[0, 0, 0, 0]]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.gpl", "broken.gpl", "grey.json"]


# --------------------------------------------------------------------------- one palette for many


def test_every_file_of_a_set_carries_the_same_palette(tmp_path, photos):
    images, paths = photos
    result = quantize_many(paths, tmp_path / "out", 8, random_state=0, palette_out=tmp_path / "set.json")
    colormaps = []
    for img, item in zip(images, result.files):
        with tifffile.TiffFile(item.dst) as tf:
            labels = tf.pages[0].asarray()
            colormaps.append(tf.pages[0].colormap)
        np.testing.assert_array_equal(labels, nearest_colour(img, result.palette))
        assert item.error == squared_error(img, result.palette)
    assert all(np.array_equal(c, colormaps[0]) for c in colormaps)
    # the joint inertia is what the merged histogram predicts: the sum of the files' errors
    pixels = np.concatenate([img.reshape(-1, 3) for img in images])[:, None, :]
    joint = KMeans(8, random_state=0).fit(pixels)
    np.testing.assert_array_equal(result.model.cluster_centers_, joint.cluster_centers_)
    assert result.error == sum(f.error for f in result.files) == joint.palette()[1]
    doc = json.loads((tmp_path / "set.json").read_text())
    assert [entry["src"] for entry in doc["inputs"]] == [str(p) for p in paths]
    assert doc["error"] == result.error and doc["weight"] == "pixels"


def test_a_set_is_dithered_to_its_shared_palette(tmp_path, photos):
    from bigquant.kernels.dither import floyd_steinberg

    images, paths = photos
    plain = quantize_many(paths, tmp_path / "plain", 8, random_state=0)
    result = quantize_many(paths, tmp_path / "fs", 8, random_state=0, dither="floyd-steinberg",
                           dither_strength=0.8)
    np.testing.assert_array_equal(result.palette, plain.palette)  # the same fit
    for img, item in zip(images, result.files):
        labels = tifffile.imread(item.dst)
        np.testing.assert_array_equal(labels, floyd_steinberg(img, result.palette, strength=0.8))
        # the error reported is that of the dithered pixels written
        assert item.error == ((img.astype(np.int64) - result.palette[labels].astype(np.int64)) ** 2).sum()
        assert item.n_pixels == img.shape[0] * img.shape[1]
    written = [pathlib.Path(f.dst).name for f in result.files]
    assert sorted(p.name for p in (tmp_path / "fs").iterdir()) == sorted(
        written + [name + ".aux.xml" for name in written])  # images and their attribute tables; no spool left
    out = tmp_path / "cli"
    assert main(["quantize", *map(str, paths), "--out-dir", str(out), "-k", "8", "--random-state", "0",
                 "--dither", "floyd-steinberg", "--dither-strength", "0.8", "--no-cluster"]) == 0
    for item in result.files:
        np.testing.assert_array_equal(tifffile.imread(out / pathlib.Path(item.dst).name), tifffile.imread(item.dst))
    assert main(["quantize", *map(str, paths), "--out-dir", str(out), "-k", "8", "--space", "oklab"]) == 2


def test_weight_image_gives_every_image_the_same_weight(tmp_path, photos):
    images, paths = photos
    small = paths[2]  # 150 x 150, listed with a copy of the 180 x 240 image
    result = quantize_many([paths[0], small], tmp_path / "out", 6, weight="image", random_state=0)
    hist_big, hist_small = (colour_histogram(img) for img in (images[0], images[2]))
    factor_big = round(256 * hist_big.n_pixels / hist_big.n_pixels)
    factor_small = round(256 * hist_big.n_pixels / hist_small.n_pixels)
    totals = hist_big.n_pixels * factor_big, hist_small.n_pixels * factor_small
    assert abs(totals[0] / totals[1] - 1) < 0.002
    assert result.error == pytest.approx(
        factor_big * result.files[0].error + factor_small * result.files[1].error)


def test_an_unreadable_file_stops_the_set_before_the_fit(tmp_path, photos):
    _, paths = photos
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00 not really a tiff")
    with pytest.raises(ImageReadError, match="bad.tif"):
        quantize_many([paths[0], bad, paths[1]], tmp_path / "out", 4)
    assert not (tmp_path / "out").exists()
    result = quantize_many([paths[0], bad, paths[1]], tmp_path / "out", 4, keep_going=True, random_state=0)
    assert [f.src for f in result.files] == [str(paths[0]), str(paths[1])]
    assert result.skipped and result.skipped[0][0] == str(bad)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo0.tif", "photo0.tif.aux.xml", "photo1.tif",
                                                                    "photo1.tif.aux.xml"]


def test_sets_of_different_bands_are_refused(tmp_path, photos):
    _, paths = photos
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, np.zeros((20, 20), np.uint8))
    with pytest.raises(InvalidInputError, match="same bands and type"):
        quantize_many([paths[0], grey], tmp_path / "out", 4)


def test_sweep_over_a_set_is_the_sweep_of_the_joint_histogram(photos):
    images, paths = photos
    over_set = sweep(list(paths), [4, 8], random_state=3)
    pixels = np.concatenate([img.reshape(-1, 3) for img in images])[:, None, :]  # one image of every pixel
    together = sweep(pixels, [4, 8], random_state=3)
    assert over_set.costs == together.costs and over_set.n_pixels == sum(img.shape[0] * img.shape[1] for img in images)


# --------------------------------------------------------------------------- k from a quality target


def test_quality_returns_the_smallest_k_reaching_the_target(tmp_path, photos):
    path = photos[1][1]
    table = sweep(path, "1:24", random_state=2)
    target = (table[9].psnr + table[10].psnr) / 2  # between two ks: only k >= 10 reach it
    reaching = [row.k for row in table.rows if row.psnr >= target]
    model = quantize(path, tmp_path / "q.tif", quality=target, random_state=2, palette_out=tmp_path / "p.json")
    assert len(model.cluster_centers_) == min(reaching)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["n_colours"] == min(reaching) and doc["psnr"] >= target
    assert doc["psnr"] == pytest.approx(table[min(reaching)].psnr)


def test_quality_search_is_a_bisection_not_a_sweep():
    psnr = {k: 10 + 2 * math.log2(k) for k in range(1, 257)}  # 20 dB at k = 32
    calls = []

    def fit_k(k):
        calls.append(k)
        return k, 255.0**2 * 100 / 10 ** (psnr[k] / 10)

    found = search_k(fit_k, QualityTarget(19.5), n_values=100, peak=255.0, k_max=256)
    assert found.k == 27 and found.met  # 10 + 2 log2(27) = 19.51 >= 19.5 > 19.40 = 10 + 2 log2(26)
    assert len(calls) <= 2 * math.ceil(math.log2(256)) and len(set(calls)) == len(calls)


def test_quality_floor_writes_nothing_and_exits_99(tmp_path, photos, capsys):
    path = photos[1][2]
    with pytest.raises(QualityError, match="below the minimum 80 dB"):
        quantize(path, tmp_path / "q.tif", 4, quality="80:90")
    code = main(["quantize", str(path), str(tmp_path / "q.tif"), "-k", "4", "--psnr", "80:90", "--no-cluster",
                 "--no-progress"])
    assert code == EXIT_QUALITY == 99
    assert "below the minimum" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["x", "40:30", "-3", "1:2:3"])
def test_bad_quality_values(text):
    with pytest.raises(InvalidParameterError, match="quality"):
        parse_quality(text)


# --------------------------------------------------------------------------- the command line


def test_command_line_shared_palette_apply_and_swatch(tmp_path, photos, capsys):
    images, paths = photos
    out = tmp_path / "set"
    assert main(["quantize", *map(str, paths), "--out-dir", str(out), "-k", "6", "--random-state", "0",
                 "--palette-out", str(tmp_path / "set.gpl"), "--no-cluster", "--no-progress"]) == 0
    assert "3 files with one palette of 6 colours" in capsys.readouterr().out
    palette = read_palette(tmp_path / "set.gpl")
    assert main(["quantize", str(paths[0]), str(tmp_path / "again.tif"), "--palette", str(tmp_path / "set.gpl"),
                 "--no-cluster", "--no-progress"]) == 0
    assert (out / "photo0.tif").read_bytes() == (tmp_path / "again.tif").read_bytes()
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "again.tif"), nearest_colour(images[0], palette))
    assert main(["quantize", str(paths[0]), str(paths[1]), str(tmp_path / "x.tif"), "--no-cluster"]) == 2
    assert "--out-dir" in capsys.readouterr().err


def test_masks_apply_per_file_in_a_set(tmp_path, photos):
    images, paths = photos
    rgba = np.dstack([images[1], np.full(images[1].shape[:2], 255, np.uint8)])
    rgba[:50, :, 3] = 0  # a transparent band at the top of one file only
    masked = tmp_path / "masked.png"
    Image.fromarray(rgba, "RGBA").save(masked)
    result = quantize_many([paths[0], masked], tmp_path / "out", 5, random_state=0, suffix=".png")
    assert result.files[1].n_pixels == images[1].shape[0] * images[1].shape[1] - 50 * images[1].shape[1]
    with Image.open(result.files[1].dst) as im:
        labels = np.asarray(im)
        assert im.info.get("transparency") is not None
    assert (labels[:50] == 5).all() and (labels[50:] < 5).all()
    np.testing.assert_array_equal(labels[50:], nearest_colour(images[1][50:], result.palette))
    with Image.open(result.files[0].dst) as im:
        assert (np.asarray(im) < 5).all() and "transparency" not in im.info
    # the masked pixels took no part in the fit: the joint error counts the others only
    assert result.error == result.files[0].error + squared_error(images[1][50:], result.palette)


def test_sweep_and_quantize_agree_on_16_bit_data(tmp_path):
    """Without a histogram (uint16 RGB: the grid strategy) the sweep's cost is still the written file's error."""
    rng = np.random.default_rng(4)
    img = (make_sample_image((90, 120), seed=5).astype(np.uint16) * 257 + rng.integers(0, 257, (90, 120, 3))
           ).astype(np.uint16)
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, img, tile=(32, 32), photometric="rgb")
    result = sweep(path, [5], random_state=3)
    assert result.strategy == "grid"
    model = quantize(path, tmp_path / "q.tif", 5, random_state=3)
    labels = tifffile.imread(tmp_path / "q.tif")
    palette = model.palette()[0].astype(np.float64)
    np.testing.assert_array_equal(palette, result.palette(5))
    assert float(((img - palette[labels]) ** 2).sum()) == pytest.approx(result[5].cost, rel=1e-12)
