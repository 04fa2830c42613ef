"""The command line runs on its own threads unless a scheduler, worker processes or the dashboard is asked for."""

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
    assert "--dashboard" not in capsys.readouterr().err  # no note for a short job
    assert out.exists()


def test_sweep_of_a_small_input_runs_in_process(connects, small_png, capsys):
    assert cli.main(["sweep", str(small_png), "--k", "2:4:2", "--no-progress", "--random-state", "0"]) == 0
    assert connects.calls == []


def test_a_large_input_runs_in_process_too_and_says_how_to_watch_it(connects, small_png, tmp_path, monkeypatch,
                                                                     capsys):
    # "large": a limit lowered below this input's 15 KiB
    monkeypatch.setattr(cli, "LONG_JOB_BYTES", 1024)
    out = tmp_path / "q.tif"
    assert cli.main(["quantize", str(small_png), str(out), "-k", "4", "--no-progress"]) == 0
    assert connects.calls == []
    err = capsys.readouterr().err
    assert "this process's" in err and "--dashboard :8787" in err and "--cluster" in err
    assert out.exists()


@pytest.mark.parametrize("option, processes, dashboard", [
    (["--cluster"], True, ":8787"),
    (["--cluster", "--dashboard", "none"], True, None),
    (["--workers", "1"], True, ":8787"),
    (["--threads", "1"], True, ":8787"),
    (["--memory-limit", "1GiB"], True, ":8787"),
    (["--dashboard", "127.0.0.1:0"], False, "127.0.0.1:0"),
])
def test_a_cluster_option_starts_a_local_cluster(connects, small_png, tmp_path, capsys, option, processes,
                                                   dashboard):
    argv = ["quantize", str(small_png), str(tmp_path / "q.tif"), "--no-progress", *option]
    assert cli.main(argv) == 1
    assert [(c["scheduler"], c["processes"], c["dashboard_address"]) for c in connects.calls] == [
        (None, processes, dashboard)]
    assert "no cluster in this test" in capsys.readouterr().err
    assert not (tmp_path / "q.tif").exists()


def test_a_scheduler_address_is_used(connects, small_png, tmp_path, capsys):
    argv = ["quantize", str(small_png), str(tmp_path / "q.tif"), "--no-progress", "--scheduler", "tcp://127.0.0.1:1"]
    assert cli.main(argv) == 1
    assert [c["scheduler"] for c in connects.calls] == ["tcp://127.0.0.1:1"]


def test_dashboard_none_alone_runs_in_process(connects, small_png, tmp_path):
    out = tmp_path / "q.tif"
    assert cli.main(["quantize", str(small_png), str(out), "-k", "3", "--no-progress", "--dashboard", "none"]) == 0
    assert connects.calls == [] and out.exists()


def test_the_demo_starts_worker_processes_and_the_dashboard(connects, tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path / "demo"), "--size", "64", "--no-progress", "--dashboard", "127.0.0.1:0"]
    assert cli.main(argv) == 1
    assert [(c["scheduler"], c["processes"], c["dashboard_address"]) for c in connects.calls] == [
        (None, True, "127.0.0.1:0")]


def test_cluster_and_no_cluster_exclude_each_other(small_png, tmp_path, capsys):
    argv = ["quantize", str(small_png), str(tmp_path / "q.tif"), "--no-cluster", "--cluster"]
    assert cli.main(argv) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_a_large_compressed_tiff_is_decoded_ahead_and_written_the_same(tmp_path, monkeypatch):
    """The command decodes the input in a child process while it loads; the pass adopts that spool."""
    import numpy as np
    import tifffile

    from bigquant.io import ahead
    from bigquant.io import spool as spool_module
    from bigquant.io.sample import make_sample_image

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, make_sample_image((512, 768), seed=5), tile=(128, 128), compression="zlib",
                     photometric="rgb")
    adopted: list = []

    def adopt(*args):
        for child in list(ahead._running.values()):  # the child done first: the test does not race it
            child.process.wait(timeout=60)
        adopted.append(ahead.adopt(*args))
        return adopted[-1]

    monkeypatch.setattr(spool_module, "adopt", adopt)
    outs = {}
    for name, smallest in (("ahead", 0), ("not", 2**62)):
        monkeypatch.setattr(ahead, "MIN_FILE_BYTES", smallest)
        adopted.clear()
        assert cli.main(["quantize", str(src), str(tmp_path / f"{name}.tif"), "-k", "8", "-q"]) == 0
        assert len(adopted) == 1 and (adopted[0] is not None) == (name == "ahead")
        outs[name] = tifffile.imread(tmp_path / f"{name}.tif")
    np.testing.assert_array_equal(outs["ahead"], outs["not"])
    assert not [p for p in tmp_path.iterdir() if "spool" in p.name]


def test_a_refused_request_starts_no_child_or_leaves_none(tmp_path, monkeypatch, capsys):
    """Decoding ahead never outlives a refused request: an output the checks refuse up front (the input
    itself, an existing file without --overwrite, a directory) starts no child; a request refused later
    (k too large for a PNG) kills its child and removes its spool before the error is printed."""
    import contextlib

    import tifffile

    from bigquant.io import ahead
    from bigquant.io.sample import make_sample_image

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, make_sample_image((512, 768), seed=5), tile=(128, 128), compression="zlib",
                     photometric="rgb")
    monkeypatch.setattr(ahead, "MIN_FILE_BYTES", 0)
    started: list = []
    real = ahead.decoding_ahead

    @contextlib.contextmanager
    def recorded(*args, **kwargs):
        with real(*args, **kwargs) as child:
            started.append(child)
            yield child

    monkeypatch.setattr(ahead, "decoding_ahead", recorded)
    (tmp_path / "exists.tif").write_bytes(b"mine")
    (tmp_path / "folder.tif").mkdir()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    for out, extra in ((src, ["--overwrite"]), (tmp_path / "exists.tif", []),
                       (tmp_path / "folder.tif", ["--overwrite"])):
        assert cli.main(["quantize", str(src), str(out), "-k", "8", "-q", *extra]) != 0
        assert started == [], out
    capsys.readouterr()
    assert cli.main(["quantize", str(src), str(tmp_path / "big.png"), "-k", "300", "-q"]) != 0
    assert "256" in capsys.readouterr().err
    assert len(started) == 1 and started[0] is not None  # a child ran while the request was checked ...
    assert started[0].process.returncode is not None  # ... and is gone, its spool with it
    assert not started[0].directory.exists() and not ahead._running
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
