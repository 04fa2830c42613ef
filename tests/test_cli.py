"""Tests of the ``bigquant`` command, in-process (``main([...])``) and as a subprocess."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import bigquant.cli as cli
from bigquant.cli import main

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def photo_png(tmp_path) -> pathlib.Path:
    from PIL import Image

    from bigquant.io.sample import make_sample_image

    path = tmp_path / "photo.png"
    Image.fromarray(make_sample_image((80, 96), seed=2)).save(path)
    return path


@pytest.fixture
def photo_tiff(tmp_path) -> pathlib.Path:
    from bigquant.io.sample import make_sample_tiff

    return make_sample_tiff(tmp_path / "photo.tif", size=(128, 160), tile=64, seed=4)


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- usage errors (exit 2)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice"),
        (["quantize"], "required: PATH"),
        (["quantize", "a.tif", "b.tif", "-o", "c.tif"], "-o c.tif is the output of one input"),
        (["quantize", "a.tif", "b.tif", "--quality", "30:40"], "--psnr 30:40"),
        (["quantize", "a.tif", "b.tif", "-k", "abc"], "not an integer"),
        (["quantize", "a.tif", "b.tif", "-k", "0"], "must be >= 1"),
        (["quantize", "a.tif", "b.tif", "--strategy", "magic"], "invalid choice"),
        (["quantize", "a.tif", "b.tif", "--mode", "cmyk"], "invalid choice"),
        (["sweep", "a.tif", "--k", "2:x"], "--k 2:x must"),
        (["sweep", "a.tif", "--k", "0:4"], "every k must be >= 1"),
        (["sweep", "a.tif", "--resume"], "--resume needs --out"),
        (["demo", "--size", "5"], "sides >= 16"),
        (["info", "a.tif", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, match):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert match in _one_line(captured.err)
    assert captured.out == ""


def test_no_cluster_and_scheduler_exclude_each_other(capsys, photo_png, tmp_path):
    argv = ["quantize", str(photo_png), str(tmp_path / "o.tif"), "--no-cluster", "--scheduler", "tcp://x:1"]
    assert main(argv) == 2
    assert "exclude each other" in _one_line(capsys.readouterr().err)


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    assert "quantize" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("bigquant ")


# --------------------------------------------------------------------------- failures (exit 1)


def test_missing_input_exits_1_with_one_line(capsys, tmp_path):
    assert main(["info", str(tmp_path / "nope.tif")]) == 1
    assert _one_line(capsys.readouterr().err).startswith("bigquant: error:")
    assert main(["quantize", str(tmp_path / "nope.tif"), str(tmp_path / "o.tif"), "--no-cluster"]) == 1
    assert "no such file" in _one_line(capsys.readouterr().err)


def test_verbose_adds_the_traceback(capsys, tmp_path):
    assert main(["info", str(tmp_path / "nope.tif"), "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("bigquant: error:")


def test_existing_output_is_not_replaced_without_overwrite(capsys, photo_png, tmp_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    assert main(["quantize", str(photo_png), str(out), "-k", "4", "--no-cluster"]) == 1
    err = _one_line(capsys.readouterr().err)
    assert "exists" in err and "--overwrite" in err and "overwrite=True" not in err
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("command", ["quantize", "sweep"])
def test_an_existing_output_is_the_same_failure_in_every_command(capsys, photo_png, tmp_path, command):
    out = tmp_path / ("o.tif" if command == "quantize" else "o.csv")
    out.write_bytes(b"keep me")
    given = [str(out), "-k", "4"] if command == "quantize" else ["--k", "2:4:2", "--out", str(out)]
    assert main([command, str(photo_png), *given, "--no-cluster"]) == 1
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("bigquant: error:") and "exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"keep me"


def test_unreachable_scheduler_exits_1_quickly(capsys, photo_png, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    argv = ["quantize", str(photo_png), str(tmp_path / "o.tif"), "--scheduler", f"127.0.0.1:{port}",
            "--timeout", "1"]
    assert main(argv) == 1
    assert time.perf_counter() - start < 20
    line = _one_line(capsys.readouterr().err)
    assert "could not reach the Dask scheduler" in line and str(port) in line
    assert not (tmp_path / "o.tif").exists()


# --------------------------------------------------------------------------- commands


def test_info_exact(capsys, photo_png):
    from PIL import Image

    assert main(["info", str(photo_png)]) == 0
    out = capsys.readouterr().out
    pixels = np.asarray(Image.open(photo_png)).reshape(-1, 3)
    n_colours = len(np.unique(pixels, axis=0))
    assert "80 x 96 x 3" in out and "uint8" in out and "png" in out
    assert f"distinct colours  {n_colours}" in out


def test_info_estimates_on_big_images(capsys, monkeypatch, photo_tiff):
    monkeypatch.setattr(cli, "_EXACT_PIXELS", 1000)
    monkeypatch.setattr(cli, "_SAMPLE_PIXELS", 64 * 64 * 2)
    assert main(["info", str(photo_tiff)]) == 0
    out = capsys.readouterr().out
    assert "tiles             64 x 64" in out
    assert "estimated" in out and "counted in 2 tiles" in out
    assert main(["info", str(photo_tiff), "--exact"]) == 0
    assert "estimated" not in capsys.readouterr().out


def test_quantize_in_process(capsys, photo_tiff, tmp_path):
    import tifffile

    out, pal, prev = tmp_path / "q.tif", tmp_path / "p.json", tmp_path / "p.png"
    argv = ["quantize", str(photo_tiff), str(out), "-k", "6", "--no-cluster", "--tile", "64",
            "--palette-out", str(pal), "--preview", str(prev), "--random-state", "0"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}: 6 colours" in captured.out
    labels = tifffile.imread(out)
    assert labels.shape == (128, 160) and labels.max() < 6
    doc = json.loads(pal.read_text())
    assert doc["n_colours"] == 6 and prev.exists()
    # the Lloyd progress went to stderr, not stdout
    assert "lloyd" in captured.err and "lloyd" not in captured.out


def test_quantize_quiet_prints_nothing(capsys, photo_png, tmp_path):
    assert main(["-q", "quantize", str(photo_png), str(tmp_path / "o.tif"), "-k", "3", "--no-cluster"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_sweep_in_process_writes_csv_plot_and_resumes(capsys, photo_png, tmp_path):
    out, plot = tmp_path / "s.csv", tmp_path / "s.png"
    argv = ["sweep", str(photo_png), "--k", "2:6:2", "--out", str(out), "--plot", str(plot), "--no-cluster",
            "--random-state", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| k | cost" in text and "suggested k (elbow)" in text
    with open(out, newline="") as fh:
        assert [int(r["k"]) for r in csv.DictReader(fh)] == [2, 4, 6]
    assert plot.stat().st_size > 0
    # existing outputs: refused (the same exit code as quantize's), then resumed
    assert main(argv) == 1
    assert "exists" in _one_line(capsys.readouterr().err)
    more = ["sweep", str(photo_png), "--k", "2:10:2", "--out", str(out), "--plot", str(plot), "--no-cluster",
            "--random-state", "1", "--resume"]
    assert main(more) == 0
    assert "resumed 3 k values" in capsys.readouterr().out
    with open(out, newline="") as fh:
        assert sorted(int(r["k"]) for r in csv.DictReader(fh)) == [2, 4, 6, 8, 10]


def test_demo_small_without_cluster(capsys, tmp_path):
    folder = tmp_path / "demo"
    argv = ["demo", "--out", str(folder), "--size", "256", "--sweep-k", "2:6:2", "--no-cluster", "-k", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in ("sample.tif", "quantized.tif", "preview.png", "palette.json", "comparison.png", "sweep.csv",
                 "sweep.png"):
        assert (folder / name).stat().st_size > 0, name
        assert name in out
    assert str(folder.resolve()) in out
    # a second run reuses the sample image
    assert main(argv) == 0
    assert "reusing the sample image" in capsys.readouterr().err


# --------------------------------------------------------------------------- subprocess


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([*args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def _entry_point() -> list[str]:
    script = pathlib.Path(sys.executable).parent / "bigquant"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bigquant"]


def test_subprocess_python_m_bigquant_info(photo_png):
    proc = _run(sys.executable, "-m", "bigquant", "info", str(photo_png))
    assert proc.returncode == 0, proc.stderr
    assert "distinct colours" in proc.stdout


def test_subprocess_entry_point_usage_error_and_failure(tmp_path):
    proc = _run(*_entry_point(), "quantize", "a.png", "b.png", "-o", "c.png")
    assert proc.returncode == 2
    assert "is the output of one input" in _one_line(proc.stderr)
    proc = _run(*_entry_point(), "info", str(tmp_path / "missing.tif"))
    assert proc.returncode == 1
    assert _one_line(proc.stderr).startswith("bigquant: error:")
    assert "Traceback" not in proc.stderr


def test_subprocess_entry_point_quantize(photo_png, tmp_path):
    out = tmp_path / "q.png"
    proc = _run(*_entry_point(), "quantize", str(photo_png), str(out), "-k", "5", "--no-cluster")
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    img = Image.open(out)
    colours = img.getcolors(256)  # None when there are more than 256
    assert img.size == (96, 80) and colours is not None and len(colours) <= 5


@pytest.mark.distributed
def test_subprocess_demo_on_a_local_cluster_prints_the_dashboard(tmp_path):
    folder = tmp_path / "demo"
    proc = _run(*_entry_point(), "demo", "--out", str(folder), "--size", "512", "--sweep-k", "2:8:2",
                "--workers", "2", "--dashboard", "127.0.0.1:0", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "dashboard: http://127.0.0.1:" in proc.stderr
    assert "local cluster tcp://" in proc.stderr
    assert (folder / "quantized.tif").exists() and (folder / "comparison.png").exists()


def test_existing_output_fails_before_a_cluster_starts(capsys, photo_png, tmp_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    assert main(["quantize", str(photo_png), str(out), "-k", "4", "--dashboard", "none"]) == 1
    captured = capsys.readouterr()
    assert "--overwrite" in captured.err
    assert "cluster" not in captured.out + captured.err
    assert out.read_bytes() == b"keep me"
