"""Every number quantize and sweep report is the truth of the file written (issue #22, "Trust").

Each case writes a small image to a tiled TIFF, quantizes it, reads the written
labels back with tifffile and the full-band palette from the JSON's
``palette`` entry, and recomputes the squared error against the source pixels
(masked pixels excluded), the PSNR (peak: the integer type's largest value;
1.0 for float data in [0, 1]) and, for three bands, the mean Delta E in OKLab
(Ottosson's definition, written out here).  The error, PSNR and Delta E that
``model.quality_``, the palette JSON, the command line, the sweep and a
dithered set (:func:`bigquant.pipeline.many.quantize_many`) report must equal
them (or be None where no true number is defined).
"""

from __future__ import annotations

import json
import math
import re

import dask
import numpy as np
import pytest
import tifffile

from bigquant import quantize, sweep
from bigquant.cli import main

H, W, TILE = 64, 96, 32
GDAL_NODATA = 42113

_M1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                [0.2119034982, 0.6806995451, 0.1073969566],
                [0.0883024619, 0.2817188376, 0.6299787005]])
_M2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                [1.9779984951, -2.4285922050, 0.4505937099],
                [0.0259040371, 0.7827717662, -0.8086757660]])


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def _oklab(rgb: np.ndarray, scale: float) -> np.ndarray:
    """sRGB on ``scale`` (n, 3) -> OKLab (n, 3), L in [0, 1]."""
    v = np.asarray(rgb, dtype=np.float64) / scale
    lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return np.cbrt(lin @ _M1.T) @ _M2.T


def _pixels(n_bands: int, dtype: str, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """Blocks of random colours with noise: many colours, a few dominant ones."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (H // 16 + 1, W // 16 + 1, n_bands))
    y, x = np.mgrid[0:H, 0:W]
    img = np.clip(base[y // 16, x // 16] + rng.normal(0, 0.08, (H, W, n_bands)), 0, 1)
    # away from 0, which stands for nodata in the masked cases
    if dtype == "float32":
        return (scale * (0.01 + 0.99 * img)).astype(np.float32)
    peak = np.iinfo(dtype).max
    return np.rint(1 + img * (peak - 1)).astype(dtype)


def _region() -> np.ndarray:
    """The pixels the masked cases hide: a corner and a scatter."""
    hidden = np.zeros((H, W), dtype=bool)
    hidden[:20, :30] = True
    hidden[np.random.default_rng(7).random((H, W)) < 0.05] = True
    return hidden


def _source(tmp_path, n_bands: int, dtype: str, mask: str | None,
            scale: float = 1.0) -> tuple[str, np.ndarray, np.ndarray, dict]:
    """The source TIFF, its pixels (bands fitted), the pixels counted, and quantize's mask option."""
    pixels = _pixels(n_bands, dtype, scale)
    hidden = _region()
    path = tmp_path / "src.tif"
    photometric = "rgb" if n_bands == 3 else "minisblack"
    options: dict = {}
    kwargs: dict = {"tile": (TILE, TILE), "photometric": photometric}
    if n_bands > 1 or mask == "alpha":
        kwargs["planarconfig"] = "contig"
    if mask == "alpha":
        peak = 1 if dtype == "float32" else np.iinfo(dtype).max
        alpha = np.where(hidden, 0, peak).astype(dtype)[:, :, None]
        tifffile.imwrite(path, np.concatenate([pixels, alpha], axis=2), extrasamples=[2], **kwargs)
    elif mask == "nan":  # float data: a pixel with a NaN band is no image
        stored = pixels.copy()
        stored[hidden, -1] = np.nan
        tifffile.imwrite(path, stored if n_bands > 1 else stored[:, :, 0], **kwargs)
    elif mask == "nodata":
        stored = pixels.copy()
        stored[hidden] = 0
        tifffile.imwrite(path, stored if n_bands > 1 else stored[:, :, 0],
                         extratags=[(GDAL_NODATA, "s", 0, "0", True)], **kwargs)
    else:
        tifffile.imwrite(path, pixels if n_bands > 1 else pixels[:, :, 0], **kwargs)
        if mask == "array":
            options["mask"] = ~hidden
        else:
            hidden[:] = False
    return str(path), pixels, ~hidden, options


def _labels(out) -> np.ndarray:
    """The palette indices written: a TIFF's (tifffile), a zarr array's, a palette PNG's (Pillow)."""
    suffix = str(out).rsplit(".", 1)[-1]
    if suffix == "zarr":
        import zarr

        return np.asarray(zarr.open_array(str(out), mode="r")[...])
    if suffix == "png":
        from PIL import Image

        with Image.open(out) as image:
            assert image.mode == "P"
            return np.asarray(image)
    return tifffile.imread(out)


def _truth(pixels: np.ndarray, valid: np.ndarray, out, doc: dict) -> dict:
    """Error, PSNR and Delta E recomputed from the written labels and the JSON's full-band palette."""
    labels = _labels(out)
    assert labels.shape == (H, W)
    nodata = doc["nodata_index"]
    written = np.ones((H, W), dtype=bool) if nodata is None else labels != nodata
    np.testing.assert_array_equal(written, valid)  # the masked pixels, and only they, hold nodata
    palette = np.asarray(doc["palette"], dtype=np.float64).reshape(doc["n_colours"], -1)
    assert palette.shape[1] == pixels.shape[2]
    x = pixels[valid].astype(np.float64)
    colour = palette[labels[valid].astype(np.int64)]
    error = float(((x - colour) ** 2).sum())
    n_bands = pixels.shape[2]
    if pixels.dtype.kind == "u":
        peak = float(np.iinfo(pixels.dtype).max)
    else:
        peak = 1.0 if x.min() >= 0 and x.max() <= 1 else None
    psnr = None if peak is None else 10 * math.log10(peak * peak * x.size / error)
    delta_e = None
    if n_bands == 3 and peak is not None:
        d = _oklab(x, peak) - _oklab(colour, peak)
        delta_e = float(np.sqrt((d * d).sum(axis=1)).mean())
    return {"error": error, "psnr": psnr, "delta_e_ok": delta_e, "pixels": int(valid.sum())}


def _same(reported, true, what: str) -> None:
    if true is None:
        assert reported is None, f"{what}: reported {reported!r} where no true number is defined"
    else:
        # Delta E: the kernels' OKLab is float32 (bigquant.kernels.spaces), within about 1e-7 of this float64
        # oracle: a millionth is well under the 4 significant digits printed; error and PSNR are exact
        rel = 1e-6 if "delta_e" in what else 1e-9
        assert reported == pytest.approx(true, rel=rel), f"{what}: reported {reported!r}, file says {true!r}"


CASES = [
    (n_bands, dtype, mask, dither)
    for n_bands in (1, 2, 3, 4, 13)
    for dtype in ("uint8", "uint16", "float32")
    for mask in (None, "alpha", "nodata", "array", "nan")
    for dither in (None, "floyd-steinberg")
    if not (mask == "alpha" and n_bands not in (1, 3))  # a TIFF's alpha: grey + alpha or RGBA
    if not (mask == "nan" and dtype != "float32")
    if not (dither and (n_bands not in (1, 3) or dtype == "float32"))  # dithering: 1 or 3 integer bands
]


@pytest.mark.parametrize(("n_bands", "dtype", "mask", "dither"), CASES,
                         ids=[f"{c}b-{d}-{m or 'nomask'}-{f or 'plain'}" for c, d, m, f in CASES])
def test_reported_numbers_are_those_of_the_written_file(tmp_path, n_bands, dtype, mask, dither):
    src, pixels, valid, options = _source(tmp_path, n_bands, dtype, mask)
    out, doc_path = tmp_path / "q.tif", tmp_path / "p.json"
    model = quantize(src, out, 6, random_state=0, tile=TILE, palette_out=doc_path, measure=True,
                     dither=dither, **options)
    doc = json.loads(doc_path.read_text())
    truth = _truth(pixels, valid, out, doc)
    _same(doc["error"], truth["error"], "JSON error")
    _same(doc["psnr"], truth["psnr"], "JSON psnr")
    _same(doc["delta_e_ok"], truth["delta_e_ok"], "JSON delta_e_ok")
    assert model.quality_["pixels"] == truth["pixels"]
    _same(model.quality_["psnr"], truth["psnr"], "model.quality_ psnr")
    _same(model.quality_["delta_e_ok"], truth["delta_e_ok"], "model.quality_ delta_e_ok")


@pytest.mark.parametrize(("dtype", "bands"), [("uint8", (2, 1, 0)), ("uint16", (0, 2, 1))], ids=str)
def test_bands_shown_in_another_order_are_measured_in_their_own(tmp_path, dtype, bands):
    """rgb_bands reorders the colours shown, not the error measured; Delta E reads the bands as shown."""
    src, pixels, valid, options = _source(tmp_path, 3, dtype, "array")
    out, doc_path = tmp_path / "q.tif", tmp_path / "p.json"
    model = quantize(src, out, 6, random_state=0, tile=TILE, palette_out=doc_path, measure=True,
                     rgb_bands=bands, **options)
    doc = json.loads(doc_path.read_text())
    truth = _truth(pixels, valid, out, doc)
    _same(doc["error"], truth["error"], "JSON error")
    _same(doc["psnr"], truth["psnr"], "JSON psnr")
    _same(model.quality_["psnr"], truth["psnr"], "model.quality_ psnr")
    order = list(bands)
    shown = _truth(pixels[:, :, order], valid, out, dict(doc, palette=np.asarray(doc["palette"])[:, order].tolist()))
    _same(doc["delta_e_ok"], shown["delta_e_ok"], "JSON delta_e_ok")
    _same(model.quality_["delta_e_ok"], shown["delta_e_ok"], "model.quality_ delta_e_ok")


@pytest.mark.parametrize("suffix", ["png", "zarr"])
def test_other_formats_report_their_files_numbers(tmp_path, suffix):
    src, pixels, valid, options = _source(tmp_path, 4, "uint8", "nodata")
    out, doc_path = tmp_path / f"q.{suffix}", tmp_path / "p.json"
    model = quantize(src, out, 6, random_state=0, tile=TILE, palette_out=doc_path, measure=True, **options)
    doc = json.loads(doc_path.read_text())
    truth = _truth(pixels, valid, out, doc)
    for name in ("error", "psnr", "delta_e_ok"):
        _same(doc[name], truth[name], f"JSON {name}")
    _same(model.quality_["psnr"], truth["psnr"], "model.quality_ psnr")


@pytest.mark.parametrize(("n_bands", "dtype", "dither", "measure"), [
    (3, "uint8", "floyd-steinberg", False), (1, "uint16", "floyd-steinberg", False),
    (3, "uint8", "blue-noise", None),
], ids=str)
def test_numbers_reported_without_a_measure_are_true_or_none(tmp_path, n_bands, dtype, dither, measure):
    """Without a measuring pass no number the file contradicts is reported: not the undithered image's error."""
    src, pixels, valid, _ = _source(tmp_path, n_bands, dtype, None)
    out, doc_path = tmp_path / "q.tif", tmp_path / "p.json"
    model = quantize(src, out, 6, random_state=0, tile=TILE, palette_out=doc_path, dither=dither, measure=measure)
    doc = json.loads(doc_path.read_text())
    truth = _truth(pixels, valid, out, doc)
    for name in ("error", "psnr", "delta_e_ok"):
        if doc[name] is not None:
            _same(doc[name], truth[name], f"JSON {name}")
    for name in ("psnr", "delta_e_ok"):
        if model.quality_ is not None and model.quality_[name] is not None:
            _same(model.quality_[name], truth[name], f"model.quality_ {name}")


@pytest.mark.parametrize(("n_bands", "options"), [(4, []), (3, ["--no-measure", "--dither", "floyd-steinberg"])],
                         ids=str)
def test_cli_prints_the_psnr_of_the_written_file(tmp_path, capsys, n_bands, options):
    src, pixels, valid, _ = _source(tmp_path, n_bands, "uint8", None)
    out, doc_path = tmp_path / "q.tif", tmp_path / "p.json"
    code = main(["quantize", src, str(out), "-k", "8", "--palette-out", str(doc_path), "--random-state", "0",
                 "--tile", str(TILE), *options])
    assert code == 0
    line = [t for t in capsys.readouterr().out.splitlines() if t.startswith(f"wrote {out}")][-1]
    found = re.search(r"PSNR ([0-9.]+) dB", line)
    truth = _truth(pixels, valid, out, json.loads(doc_path.read_text()))
    if "--no-measure" in options:  # a PSNR printed must be the file's; none is printed without a measure
        assert found is None or float(found.group(1)) == pytest.approx(truth["psnr"], abs=0.005), line
    else:
        assert float(found.group(1)) == pytest.approx(truth["psnr"], abs=0.005), line  # two decimals


def test_float_data_beyond_unit_range_have_no_psnr(tmp_path):
    """Float data outside [0, 1] have no peak: error and cost true, PSNR and Delta E None (NaN in a sweep)."""
    src, pixels, valid, options = _source(tmp_path, 3, "float32", "array", scale=40.0)
    out, doc_path = tmp_path / "q.tif", tmp_path / "p.json"
    model = quantize(src, out, 5, random_state=1, tile=TILE, palette_out=doc_path, measure=True, **options)
    doc = json.loads(doc_path.read_text())
    truth = _truth(pixels, valid, out, doc)
    assert truth["psnr"] is None
    _same(doc["error"], truth["error"], "JSON error")
    assert doc["psnr"] is None and doc["delta_e_ok"] is None
    assert model.quality_ == {"psnr": None, "delta_e_ok": None, "pixels": truth["pixels"]}
    row = sweep(src, [5], random_state=1, **options)[5]
    assert row.cost == pytest.approx(truth["error"], rel=1e-9)
    assert math.isnan(row.psnr)


@pytest.mark.parametrize(("n_bands", "dtype", "mask"),
                         [(4, "uint8", None), (13, "uint16", "array"), (3, "float32", "nodata"), (2, "float32", "nan")],
                         ids=str)
def test_sweep_cost_is_the_error_of_the_file_quantize_writes(tmp_path, n_bands, dtype, mask):
    """The sweep's row for k and quantize's JSON for k (same random_state) both state the written file's error."""
    src, pixels, valid, options = _source(tmp_path, n_bands, dtype, mask)
    result = sweep(src, [5], random_state=3, **options)
    out, doc_path = tmp_path / "q.tif", tmp_path / "p.json"
    quantize(src, out, 5, random_state=3, tile=TILE, palette_out=doc_path, measure=True, **options)
    doc = json.loads(doc_path.read_text())
    np.testing.assert_array_equal(result.palette(5), np.asarray(doc["palette"]).reshape(5, -1))
    truth = _truth(pixels, valid, out, doc)
    assert result[5].cost == pytest.approx(truth["error"], rel=1e-9)
    assert result[5].psnr == pytest.approx(truth["psnr"], rel=1e-9)
    _same(doc["error"], truth["error"], "JSON error")
    _same(doc["psnr"], truth["psnr"], "JSON psnr")


@pytest.mark.parametrize("dither", ["floyd-steinberg", "blue-noise"])
def test_set_numbers_are_those_of_the_written_files(tmp_path, dither):
    """quantize_many dithered: each file's error and PSNR, and the set's, are the files' as written (or None)."""
    from bigquant.pipeline.many import quantize_many

    sources = []
    for i, size in enumerate([(H, W), (H // 2, W)]):
        pixels = _pixels(3, "uint8", seed=i)[: size[0], : size[1]]
        path = tmp_path / f"src{i}.tif"
        tifffile.imwrite(path, pixels, tile=(16, 16), photometric="rgb")
        sources.append((path, pixels))
    doc_path = tmp_path / "set.json"
    result = quantize_many([p for p, _ in sources], tmp_path / "out", 6, random_state=0, dither=dither,
                           palette_out=doc_path, tile=16)
    doc = json.loads(doc_path.read_text())
    palette = np.asarray(doc["palette"], dtype=np.float64)
    # blue noise is not measured on its way: None is allowed there, a number must be true
    check = _same if dither == "floyd-steinberg" else (lambda got, true, what: got is None or _same(got, true, what))
    total, count = 0.0, 0
    for (_, pixels), item, entry in zip(sources, result.files, doc["inputs"]):
        labels = tifffile.imread(item.dst).astype(np.int64)
        error = float(((pixels.astype(np.float64) - palette[labels]) ** 2).sum())
        check(item.error, error, f"{item.dst} error")
        check(entry["psnr"], 10 * math.log10(255.0**2 * pixels.size / error), f"{item.dst} JSON psnr")
        total, count = total + error, count + pixels.size
    check(result.error, total, "set error")
    check(doc["error"], total, "JSON set error")
    check(doc["psnr"], 10 * math.log10(255.0**2 * count / total), "JSON set psnr")
