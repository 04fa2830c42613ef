"""pngquant's and GDAL's everyday commands, run through ``bigquant quantize`` with their meaning (issue #24)."""

from __future__ import annotations

import io
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bigquant.cli import main
from bigquant.pipeline import quality

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args: str) -> list[str]:
    return ["quantize", *args, "--no-cluster"]


@pytest.fixture
def rgb(tmp_path) -> pathlib.Path:
    from bigquant.io.sample import make_sample_image

    path = tmp_path / "a.png"
    Image.fromarray(make_sample_image((48, 64), seed=2)).save(path)
    return path


@pytest.fixture
def grey(tmp_path) -> pathlib.Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "b.png"
    Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8).repeat(2, 0).repeat(2, 1)).save(path)
    return path


@pytest.fixture
def rgb2(tmp_path) -> pathlib.Path:
    from bigquant.io.sample import make_sample_image

    path = tmp_path / "c.png"
    Image.fromarray(make_sample_image((40, 56), seed=5)).save(path)
    return path


# --------------------------------------------------------------------------- --quality on pngquant's scale


def _libimagequant_standard_mse(q: int) -> float:
    """libimagequant's quality_to_mse (src/quant.rs) then internal_mse_to_standard_mse (src/pal.rs), step by step."""
    fudge = max(0.016 / (0.001 + q) - 0.001, 0.0)
    internal = 0.45 * (fudge + 2.5 / (210.0 + q) ** 1.2 * (100.1 - q) / 100.0)  # unit_mse_to_internal_mse
    return (internal * 65536.0 / 6.0) / 0.45


@pytest.mark.parametrize("q", [1, 30, 65, 80, 90, 99])
def test_the_quality_scale_is_libimagequants_curve(q):
    assert quality.pngquant_quality_to_mse(q) == pytest.approx(_libimagequant_standard_mse(q), rel=1e-12)
    assert quality.pngquant_quality_to_psnr(q) == pytest.approx(10 * math.log10(255**2 / _libimagequant_standard_mse(q)))


def test_the_quality_scale_fixed_points():
    assert quality.pngquant_quality_to_mse(100) == 0.0 and quality.pngquant_quality_to_psnr(100) == math.inf
    assert quality.pngquant_quality_to_psnr(65) == pytest.approx(37.587, abs=1e-3)  # 11.334 per value
    assert quality.pngquant_quality_to_psnr(80) == pytest.approx(40.285, abs=1e-3)  # 6.090 per value
    target = quality.parse_quality("65-80")
    assert (target.minimum, target.target, target.pngquant) == (
        pytest.approx(37.587, abs=1e-3), pytest.approx(40.285, abs=1e-3), (65, 80))
    assert quality.parse_quality("0-80").minimum is None  # pngquant: MIN 0 is no floor
    assert quality.parse_quality("30:40dB").target == 40.0 and quality.parse_quality("30:40dB").minimum == 30.0


def test_quality_with_a_colon_is_refused_with_a_hint(rgb, tmp_path, capsys):
    assert main(_run(str(rgb), str(tmp_path / "o.png"), "--quality", "65:80")) == 2
    err = capsys.readouterr().err
    assert "ambiguous" in err and "--quality 65-80" in err and "--psnr 65:80" in err
    assert not (tmp_path / "o.png").exists()


def test_pngquant_quality_batch_with_ext(rgb, rgb2, tmp_path, capsys):
    code = main(_run("--quality", "0-80", "--ext", "-fs8.png", str(rgb), str(rgb2), "-v"))
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "a-fs8.png").exists() and (tmp_path / "c-fs8.png").exists()
    err = capsys.readouterr().err
    assert "target 40.28 dB PSNR" in err  # -v: the dB the scale stands for


def test_options_and_paths_in_any_order_as_pngquant_takes_them(rgb, rgb2, tmp_path, capsys):
    # pngquant 8 --floyd --ext -fs8.png a.png c.png: the paths after the options are still inputs
    code = main(["quantize", "8", "--floyd", "--ext", "-fs8.png", str(rgb), "--no-cluster", str(rgb2)])
    assert code == 0, capsys.readouterr().err
    for name in ("a-fs8.png", "c-fs8.png"):
        assert len(Image.open(tmp_path / name).getpalette()) // 3 <= 8


def test_quality_prints_one_line_per_fit(tmp_path, capsys):
    from bigquant.io.sample import make_sample_image

    path = tmp_path / "p.png"
    Image.fromarray(make_sample_image((200, 300), seed=2)).save(path)
    assert main(_run(str(path), str(tmp_path / "o.png"), "--psnr", "34", "-v")) == 0
    err = capsys.readouterr().err
    fits = err.count("quality search: k=")
    lines = [line for line in err.splitlines() if line.startswith("lloyd [")]
    assert fits >= 4 and len(lines) <= fits + 1, err
    assert lines[-1].startswith("lloyd [" + "#" * 24 + "]")  # the fit is over: full bar


def test_the_lloyd_bar_fills_towards_tol():
    from bigquant.pipeline.progress import LloydProgress

    out = io.StringIO()
    bar = LloydProgress(300, stream=out, every=1)
    bar.limits(300, 1.0)
    for i, shift in enumerate([100.0, 10.0, 2.0, 0.5], start=1):
        bar(i, 1.0, shift)
    bars = [line.split("]")[0].count("#") for line in out.getvalue().splitlines()]
    assert bars[0] == 0 and bars[1] == 12 and 12 < bars[2] < 24 and bars[3] == 24


# --------------------------------------------------------------------------- stdin / stdout, -o, --force


def test_stdin_to_stdout_as_pngquant(rgb, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bigquant", "quantize", "8", "-", "--no-cluster"],
                          input=rgb.read_bytes(), capture_output=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    image = Image.open(io.BytesIO(proc.stdout))  # nothing but the PNG on stdout
    assert image.format == "PNG" and image.mode == "P" and image.size == (64, 48)
    assert len(image.getcolors()) <= 8
    proc = subprocess.run([sys.executable, "-m", "bigquant", "quantize", str(rgb), "-o", "-", "-k", "4",
                           "--no-cluster", "--no-progress"], capture_output=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0 and len(Image.open(io.BytesIO(proc.stdout)).getcolors()) <= 4


def test_force_replaces_an_existing_output(rgb, tmp_path, capsys):
    out = tmp_path / "o.png"
    out.write_bytes(b"old")
    assert main(_run(str(rgb), "-o", str(out), "-k", "4")) == 1
    assert out.read_bytes() == b"old" and "--overwrite" in capsys.readouterr().err
    assert main(_run(str(rgb), "-o", str(out), "-k", "4", "--force")) == 0
    assert Image.open(out).mode == "P"


def test_skip_if_larger_writes_nothing(tmp_path, capsys):
    flat = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(flat, optimize=True)
    assert main(_run(str(flat), "-o", str(tmp_path / "o.tif"), "-k", "2", "--skip-if-larger")) == 98
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.png"]
    assert "not smaller" in capsys.readouterr().err


def test_skip_if_larger_writes_a_smaller_output(rgb, tmp_path):
    assert main(_run(str(rgb), "-o", str(tmp_path / "o.png"), "-k", "4", "--skip-if-larger")) == 0
    assert (tmp_path / "o.png").stat().st_size < rgb.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "o.png"]


def test_nofs_and_floyd_name_and_dither(rgb, tmp_path):
    assert main(_run("4", str(rgb), "--nofs")) == 0
    assert main(_run("4", str(rgb), "--floyd=0.8")) == 0
    plain = np.asarray(Image.open(tmp_path / "a-or8.png"))
    dithered = np.asarray(Image.open(tmp_path / "a-fs8.png"))
    assert plain.shape == dithered.shape and (plain != dithered).any()
    assert main(_run("4", str(rgb), "--nofs", "--floyd")) == 2


def test_speed_sets_the_effort(rgb, tmp_path, capsys, monkeypatch):
    import bigquant.pipeline.quantize as quantize_module

    seen = {}
    real = quantize_module.quantize

    def spy(*args, **kwargs):
        seen.update({k: kwargs[k] for k in ("n_init", "max_iter", "tol", "dither")})
        return real(*args, **kwargs)

    monkeypatch.setattr(quantize_module, "quantize", spy)
    assert main(_run(str(rgb), str(tmp_path / "o.png"), "-k", "4", "--speed", "1")) == 0
    assert seen == {"n_init": 8, "max_iter": 1000, "tol": 1e-6, "dither": None}
    assert main(_run(str(rgb), str(tmp_path / "p.png"), "-k", "4", "--speed", "11", "--max-iter", "7")) == 0
    assert seen == {"n_init": 1, "max_iter": 7, "tol": 1e-2, "dither": None}  # explicit options win


def test_strip_writes_no_georeferencing(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    src = tmp_path / "geo.tif"
    rng = np.random.default_rng(1)
    with rasterio.open(src, "w", driver="GTiff", width=64, height=48, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 5000000, 10, 10)) as dst:
        dst.write(rng.integers(0, 256, (3, 48, 64), dtype=np.uint8))
    assert main(_run(str(src), str(tmp_path / "kept.tif"), "-k", "4")) == 0
    assert main(_run(str(src), str(tmp_path / "stripped.tif"), "-k", "4", "--strip")) == 0
    with rasterio.open(tmp_path / "kept.tif") as kept, rasterio.open(tmp_path / "stripped.tif") as stripped:
        assert kept.crs is not None and kept.crs.to_epsg() == 32633
        assert stripped.crs is None


# --------------------------------------------------------------------------- batches both ways


def test_each_file_its_own_palette_grey_and_rgb(rgb, grey, tmp_path, capsys):
    assert main(_run("4", str(rgb), str(grey))) == 0
    a, b = Image.open(tmp_path / "a-or8.png"), Image.open(tmp_path / "b-or8.png")
    assert a.mode == "P" and b.mode == "P"
    grey_palette = np.array(b.getpalette()).reshape(-1, 3)[:4]
    assert (grey_palette[:, 0] == grey_palette[:, 1]).all()  # grey stays grey: its own palette


def test_one_palette_for_a_set_beside_the_inputs(rgb, rgb2, tmp_path):
    assert main(_run("-k", "4", "--shared", str(rgb), str(rgb2))) == 0
    a, c = Image.open(tmp_path / "a-or8.png"), Image.open(tmp_path / "c-or8.png")
    assert a.getpalette()[:12] == c.getpalette()[:12]


def test_one_palette_for_grey_and_rgb_is_refused(rgb, grey, tmp_path, capsys):
    assert main(_run("-k", "4", "--shared", str(rgb), str(grey))) == 1
    assert "one palette needs the same bands" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


@pytest.mark.parametrize("shared", [False, True])
def test_keep_going_reports_a_skipped_file_once(rgb, rgb2, tmp_path, capsys, shared):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    args = ["-k", "4", "--keep-going", str(rgb), str(bad), str(rgb2)] + (["--shared"] if shared else [])
    assert main(_run(*args)) == 3
    captured = capsys.readouterr()
    assert [line for line in (captured.out + captured.err).splitlines() if "bad.png" in line] == [
        line for line in captured.err.splitlines() if line.startswith(f"skipped {bad}")]
    assert len([line for line in (captured.out + captured.err).splitlines() if "bad.png" in line]) == 1
    assert (tmp_path / "a-or8.png").exists() and (tmp_path / "c-or8.png").exists()


def test_every_output_is_checked_before_the_first_file_is_read(rgb, rgb2, tmp_path, capsys):
    (tmp_path / "c-or8.png").write_bytes(b"keep")
    assert main(_run("4", str(rgb), str(rgb2))) == 1
    assert not (tmp_path / "a-or8.png").exists() and (tmp_path / "c-or8.png").read_bytes() == b"keep"


# --------------------------------------------------------------------------- GDAL's -co / -of


@pytest.mark.parametrize(("co", "compression"), [("DEFLATE", "deflate"), ("LZW", "lzw"), ("ZSTD", "zstd"),
                                                 ("NONE", None)])
def test_creation_options_as_gdal_reads_them(rgb, tmp_path, co, compression):
    import rasterio

    out = tmp_path / "o.tif"
    assert main(_run(str(rgb), str(out), "-k", "4", "-co", f"COMPRESS={co}", "-co", "BLOCKXSIZE=32",
                     "-co", "BLOCKYSIZE=32", "-co", "TILED=YES", "-co", "BIGTIFF=YES")) == 0
    with rasterio.open(out) as src:
        assert (src.compression.value.lower() if src.compression else None) == compression
        assert src.block_shapes == [(32, 32)] and src.is_tiled
        assert src.colorinterp[0].name == "palette"


def test_zlevel_and_cog(rgb, tmp_path):
    import rasterio

    from bigquant.io.sample import make_sample_image

    photo = tmp_path / "photo.png"
    Image.fromarray(make_sample_image((200, 300), seed=2)).save(photo)
    fast, small = tmp_path / "fast.tif", tmp_path / "small.tif"
    assert main(_run(str(photo), str(fast), "-k", "8", "-co", "ZLEVEL=1", "--random-state", "0")) == 0
    assert main(_run(str(photo), str(small), "-k", "8", "-co", "ZLEVEL=9", "--random-state", "0")) == 0
    assert small.stat().st_size < fast.stat().st_size  # the level reaches the encoder
    cog = tmp_path / "c.tif"
    assert main(_run(str(rgb), str(cog), "-k", "8", "-of", "COG", "-co", "BLOCKSIZE=16")) == 0
    with rasterio.open(cog) as src:
        assert src.overviews(1) and src.block_shapes == [(16, 16)]


@pytest.mark.parametrize(("args", "nbits"), [((), "2"), (("-co", "NBITS=8"), None), (("--nbits", "8"), None),
                                           (("-co", "NBITS=4"), "4"), (("-of", "COG", "-co", "NBITS=8"), None)])
def test_nbits_as_gdal_reads_it(rgb, tmp_path, args, nbits):
    """k = 4: packed 2 bits an index by default; NBITS=8 (GDAL's spelling) or --nbits 8 turns it off."""
    import rasterio

    out = tmp_path / "o.tif"
    assert main(_run(str(rgb), str(out), "-k", "4", *args)) == 0
    with rasterio.open(out) as src:
        assert src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == nbits
        assert len(src.colormap(1)) == 2 ** int(nbits or 8)
        assert set(np.unique(src.read(1))) <= {0, 1, 2, 3}


@pytest.mark.parametrize(("co", "match"), [
    ("FOO=1", "not a GTiff creation option"), ("COMPRESS=BROTLI", "use one of"), ("PREDICTOR=2", "no predictor"),
    ("BLOCKXSIZE=40", "multiple of 16"), ("TILED=NO", "tiled TIFFs only"), ("COMPRESS=JPEG", "lossy"),
    ("ZSTD_LEVEL=3", "level of COMPRESS=ZSTD"), ("NBITS=3", "NBITS=3"), ("NBITS=1", "1 holds 2 palette indices"),
])
def test_bad_creation_options_are_one_error_before_anything(rgb, tmp_path, capsys, co, match):
    assert main(_run(str(rgb), str(tmp_path / "o.tif"), "-k", "4", "-co", co)) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_output_format_and_suffix_must_agree(rgb, tmp_path, capsys):
    assert main(_run(str(rgb), str(tmp_path / "o.png"), "-k", "4", "-of", "GTiff")) == 2
    assert main(_run("4", str(rgb), "-of", "PNG", "--ext", "-x.png")) == 0
    assert main(_run("4", str(rgb), "-of", "GTiff")) == 0
    assert (tmp_path / "a-or8.tif").exists()  # -of gives the format of a batch


# --------------------------------------------------------------------------- usage, hints, dashboard


def test_the_usage_line_says_what_is_accepted(capsys):
    assert main(["quantize", "--help"]) == 0
    out = capsys.readouterr().out
    usage = out.split("\n\n")[0]
    assert "OUT [IN" not in usage
    for form in ("IN OUT", "[NCOLORS] IN [IN ...]", "-o OUT", "--shared | --out-dir DIR"):
        assert form in usage
    for example in ("slide.svs", "scene.tif", "--quality 65-80"):
        assert example in out.split("examples:")[1]


def test_pairs_are_refused_with_what_is_accepted(rgb, rgb2, tmp_path, capsys):
    pairs = [str(rgb), str(tmp_path / "a-q.png"), str(rgb2), str(tmp_path / "c-q.png")]
    assert main(_run(*pairs, "-k", "4")) == 2
    err = capsys.readouterr().err
    assert "a-q.png, " in err and "one pair per command" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.png"]


def test_hints_speak_the_command_lines_language(rgb, tmp_path, capsys):
    assert main(_run(str(rgb), str(tmp_path / "o.tif"), "-k", "4", "--compression", "jpeg")) == 2
    err = capsys.readouterr().err
    assert "--mode rgb" in err and "mode=" not in err and "--compression jpeg" in err
    assert main(_run(str(rgb), str(tmp_path / "o.png"), "-k", "300")) == 2
    err = capsys.readouterr().err
    assert "-k 300" in err and "n_clusters=" not in err
    assert main(_run(str(rgb), str(tmp_path / "o.tif"), "-k", "8", "--nodata-index", "3")) == 2
    assert "--nodata-index 3" in capsys.readouterr().err


@pytest.mark.distributed
def test_dashboard_none_prints_no_link(rgb, tmp_path, capsys):
    code = main(["quantize", str(rgb), str(tmp_path / "o.png"), "-k", "4", "--cluster", "--workers", "1",
                 "--threads", "1", "--dashboard", "none", "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err
    assert "local cluster" in err and "dashboard" not in err
