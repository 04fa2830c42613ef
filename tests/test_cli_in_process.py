"""The command line runs small inputs on its own threads and starts a cluster for large ones."""

from __future__ import annotations

import pathlib

import pytest

import bigquant.cli as cli
import bigquant.pipeline.runtime as runtime
from bigquant.errors import ClusterConnectionError


class _Connects:
    """A stand-in for :func:`bigquant.pipeline.runtime.connect` that records calls and starts nothing."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, scheduler=None, **kwargs):
        self.calls.append({"scheduler": scheduler, **kwargs})
        raise ClusterConnectionError("no cluster in this test")


@pytest.fixture
def connects(monkeypatch) -> _Connects:
    fake = _Connects()
    monkeypatch.setattr(runtime, "connect", fake)
    return fake


@pytest.fixture
def small_png(tmp_path) -> pathlib.Path:
    from PIL import Image

    from bigquant.io.sample import make_sample_image

    path = tmp_path / "small.png"
    Image.fromarray(make_sample_image((64, 80), seed=3)).save(path)
    return path


def test_a_small_input_runs_in_process(connects, small_png, tmp_path, capsys):
    out = tmp_path / "q.tif"
    assert cli.main(["quantize", str(small_png), str(out), "-k", "4", "--no-progress", "--random-state", "0"]) == 0
    assert connects.calls == []
    assert "running on this process's threads" in capsys.readouterr().err
    assert out.exists()


def test_sweep_of_a_small_input_runs_in_process(connects, small_png, capsys):
    assert cli.main(["sweep", str(small_png), "--k", "2:4:2", "--no-progress", "--random-state", "0"]) == 0
    assert connects.calls == []


@pytest.mark.parametrize("option", [["--cluster"], ["--workers", "1"], ["--threads", "1"],
                                    ["--memory-limit", "1GiB"], ["--scheduler", "tcp://127.0.0.1:1"]])
def test_a_cluster_option_keeps_the_cluster(connects, small_png, tmp_path, capsys, option):
    argv = ["quantize", str(small_png), str(tmp_path / "q.tif"), "--no-progress", *option]
    assert cli.main(argv) == 1
    assert len(connects.calls) == 1
    assert "no cluster in this test" in capsys.readouterr().err
    assert not (tmp_path / "q.tif").exists()


def test_a_large_input_starts_a_local_cluster(connects, small_png, tmp_path, monkeypatch, capsys):
    # "large": above a limit lowered below this input's 15 KiB
    monkeypatch.setattr(cli, "IN_PROCESS_MAX_BYTES", 1024)
    assert cli.main(["quantize", str(small_png), str(tmp_path / "q.tif"), "--no-progress"]) == 1
    assert [c["scheduler"] for c in connects.calls] == [None]
    assert "running on this process's threads" not in capsys.readouterr().err


def test_cluster_and_no_cluster_exclude_each_other(small_png, tmp_path, capsys):
    argv = ["quantize", str(small_png), str(tmp_path / "q.tif"), "--no-cluster", "--cluster"]
    assert cli.main(argv) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_fits_in_process_limits():
    gib = 2**30
    assert cli.fits_in_process(768 * 1024, memory=16 * gib)
    assert cli.fits_in_process(cli.IN_PROCESS_MAX_BYTES, memory=16 * gib)
    assert not cli.fits_in_process(cli.IN_PROCESS_MAX_BYTES + 1, memory=16 * gib)
    # a small machine: a sixteenth of its memory at most
    assert not cli.fits_in_process(100 * 2**20, memory=1 * gib)
    assert cli.fits_in_process(60 * 2**20, memory=1 * gib)
