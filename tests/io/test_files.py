"""Inputs by URL (bigquant.io.files): a real HTTP server on loopback with byte ranges, fsspec memory."""

from __future__ import annotations

import socket

import fsspec
import numpy as np
import pytest
import tifffile

from bigquant import quantize, read_image
from bigquant.errors import ImageReadError
from bigquant.io.files import file_stamp, is_url


def _requests(http_url) -> list[str]:
    log = http_url.extra["log"]
    return log.read_text().splitlines() if log.exists() else []


def _range_bytes(line: str) -> int:
    """Bytes asked for by one logged request (``GET /x Range=bytes=a-b``); 0 for HEAD."""
    if line.startswith("HEAD"):
        return 0
    first, _, last = line.rsplit("bytes=", 1)[1].partition("-")
    return int(last) - int(first) + 1


def test_is_url():
    assert is_url("http://127.0.0.1:8000/a.tif") and is_url("s3://bucket/a.tif") and is_url("memory://a.tif")
    assert not is_url("a.tif") and not is_url("file:///tmp/a.tif") and not is_url(b"http://x")


def test_url_reads_only_the_tiles_it_needs(http_url):
    before = len(_requests(http_url))
    src = read_image(http_url.url, chunks=256)
    assert src.shape == http_url.levels[0].shape and src.path == http_url.url
    size = http_url.path.stat().st_size
    window = src.data[256:512, 256:512].compute()  # one 256 px chunk
    np.testing.assert_array_equal(window, http_url.levels[0][256:512, 256:512])
    lines = _requests(http_url)[before:]
    assert lines, "the server saw no request"
    assert all("bytes=" in line or line.startswith("HEAD") for line in lines), lines
    # range requests of (at most) 64 KiB blocks, never the whole file at once
    assert max(_range_bytes(line) for line in lines) <= min(1 << 16, size - 1), lines


def test_url_is_opened_by_worker_processes(http_url, local_cluster):
    """The lazy array holds the URL, not an open file: worker processes open it themselves."""
    src = read_image(http_url.url, chunks=256)
    got = local_cluster.compute(src.data).result()
    np.testing.assert_array_equal(got, http_url.levels[0])


def test_quantize_a_url_equals_quantizing_the_file(tmp_path, http_url):
    from_url = quantize(http_url.url, tmp_path / "u.tif", 6, random_state=0)
    from_file = quantize(http_url.path, tmp_path / "f.tif", 6, random_state=0)
    np.testing.assert_array_equal(from_url.cluster_centers_, from_file.cluster_centers_)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "u.tif"), tifffile.imread(tmp_path / "f.tif"))


def test_memory_url(rgb_image):
    fs = fsspec.filesystem("memory")
    with fs.open("/bigquant-test/x.tif", "wb") as fh:
        tifffile.imwrite(fh, rgb_image, tile=(64, 64), compression="zlib", photometric="rgb")
    try:
        src = read_image("memory://bigquant-test/x.tif")
        np.testing.assert_array_equal(src.data.compute(), rgb_image)
        assert file_stamp("memory://bigquant-test/x.tif")[0] > 0
    finally:
        fs.rm("/bigquant-test", recursive=True)


def test_url_errors_name_the_url_and_write_nothing(tmp_path, http_url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/slide.tif"
    with pytest.raises(ImageReadError, match=rf"{dead}: (does not answer|no such file)"):
        quantize(dead, tmp_path / "q.tif", 4)
    missing = http_url.extra["base"] + "missing.tif"
    with pytest.raises(ImageReadError, match=rf"{missing}: no such file"):
        read_image(missing)
    assert list(tmp_path.iterdir()) == []


def test_command_line_quantizes_a_url(tmp_path, http_url, capsys):
    from bigquant.cli import main

    code = main(["quantize", http_url.url, str(tmp_path / "q.tif"), "-k", "5", "--no-cluster", "--no-progress",
                 "--random-state", "0"])
    assert code == 0, capsys.readouterr().err
    assert tifffile.imread(tmp_path / "q.tif").shape == http_url.reference.shape[:2]
