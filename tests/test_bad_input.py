"""Bad inputs: each gives one clear bigquant error naming the problem, and leaves no file.

Every library case must raise an exception of the :mod:`bigquant.errors` family
that is also a ``ValueError``, ``TypeError`` or ``OSError``, with a message
naming the problem, and leave the output directory exactly as it was (no
output, no hidden temporary file). The command line gives exit code 2 for usage
errors and 1 for failures, with exactly one line on stderr.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile

from bigquant import KMeans, MiniBatchKMeans, quantize, read_image, write_image
from bigquant.errors import (
    BigquantError,
    ClusterConnectionError,
    ComplexInputError,
    FewColoursWarning,
    ImageReadError,
    ImageWriteError,
    InputTypeError,
    InvalidInputError,
    InvalidParameterError,
)

RGB = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _listing(directory: Path) -> list[str]:
    """Every entry under ``directory``, hidden ones included."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(inputs, outputs): a directory of source files, and an empty output directory.

    On teardown the output directory must hold nothing new: no output and no
    hidden temporary file.
    """
    src = tmp_path / "in"
    out = tmp_path / "out"
    src.mkdir()
    out.mkdir()
    tifffile.imwrite(src / "good.tif", RGB, tile=(16, 16), compression="zlib", photometric="rgb")
    (out / "exists.tif").write_bytes(b"previous result")
    (out / "exists.png").write_bytes(b"previous preview")
    before = _listing(out)
    yield src, out
    assert _listing(out) == before, "a failed run left files behind"
    assert (out / "exists.tif").read_bytes() == b"previous result"


# ---------------------------------------------------------------- source files


def _text_as_tif(src: Path) -> Path:
    path = src / "notes.tif"
    path.write_text("these are notes, not an image\n" * 20)
    return path


def _truncated(src: Path) -> Path:
    data = (src / "good.tif").read_bytes()
    path = src / "truncated.tif"
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_tile(src: Path) -> Path:
    """A TIFF whose size is right but one tile's compressed bytes are garbage."""
    data = bytearray((src / "good.tif").read_bytes())
    with tifffile.TiffFile(src / "good.tif") as tf:
        page = tf.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]
    data[offset : offset + count] = b"\xff" * count
    path = src / "corrupt.tif"
    path.write_bytes(bytes(data))
    return path


def _unsupported_compression(src: Path) -> Path:
    """A tiled TIFF whose Compression tag names a codec nothing here decodes (SGILOG24)."""
    path = src / "unsupported.tif"
    path.write_bytes((src / "good.tif").read_bytes())
    with tifffile.TiffFile(path, mode="r+b") as tf:
        tf.pages[0].tags["Compression"].overwrite(34676)
    return path


def _empty_file(src: Path) -> Path:
    path = src / "empty.tif"
    path.touch()
    return path


def _float_tiff_with_nan(src: Path) -> Path:
    img = RGB.astype(np.float32) / 255
    img[40, 7, 1] = np.nan
    path = src / "nan.tif"
    tifffile.imwrite(path, img, tile=(16, 16), photometric="rgb")
    return path


SOURCE_CASES: dict[str, tuple[Callable[[Path], object], type[Exception], str]] = {
    "missing file": (lambda src: src / "nope.tif", ImageReadError, r"nope\.tif: no such file"),
    "a directory": (lambda src: src, ImageReadError, r"is a directory"),
    "non-image named .tif": (_text_as_tif, ImageReadError, r"notes\.tif: not a recognised image"),
    "truncated TIFF": (_truncated, ImageReadError, r"truncated\.tif: file is truncated"),
    "unsupported compression": (
        _unsupported_compression, ImageReadError, r"unsupported\.tif: series 0 uses compression SGILOG \(34676\)",
    ),
    "corrupt tile data": (
        _corrupt_tile, ImageReadError, r"corrupt\.tif: cannot decode tile \d+ \(tile row \d+, column \d+",
    ),
    "empty file": (_empty_file, ImageReadError, r"empty\.tif: file is empty"),
    "0x0 image": (lambda src: np.zeros((0, 0, 3), np.uint8), InvalidInputError, r"empty, shape \(0, 0, 3\)"),
    "0-width image": (lambda src: np.zeros((5, 0), np.uint8), InvalidInputError, r"empty, shape \(5, 0\)"),
    "1-D array": (lambda src: np.zeros(10, np.uint8), InvalidInputError, r"2-D .* got shape \(10,\)"),
    "5-D array": (lambda src: np.zeros((2,) * 5, np.uint8), InvalidInputError, r"2-D .* got shape \(2, 2, 2, 2, 2\)"),
    "inf in float image": (
        lambda src: np.where(RGB == RGB[3, 3, 0], np.inf, RGB / 255.0), InvalidInputError, r"infinity",
    ),
    "every pixel NaN": (
        lambda src: np.full((20, 30, 3), np.nan, np.float32), InvalidInputError, r"array: every pixel is masked",
    ),
    "complex dtype": (lambda src: RGB.astype(complex), InputTypeError, r"dtype complex128"),
    "object dtype": (lambda src: RGB.astype(object), InputTypeError, r"dtype object"),
    "bool dtype": (lambda src: RGB > 100, InputTypeError, r"dtype bool"),
    "not an array": (lambda src: {"pixels": 1}, InputTypeError, r"src of type dict"),
}


def _check_family(exc: BaseException) -> None:
    assert isinstance(exc, BigquantError)
    assert isinstance(exc, (ValueError, TypeError, OSError))
    assert len(str(exc).splitlines()) == 1, "the message is one line"


@pytest.mark.parametrize("case", list(SOURCE_CASES))
def test_bad_source(dirs, case):
    src, out = dirs
    make, error, match = SOURCE_CASES[case]
    source = make(src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy moments of NaN data
        with pytest.raises(error, match=match) as info:
            quantize(source, out / "q.tif", 4, random_state=0, tile=16, chunks=32)
    _check_family(info.value)


#: NaN is an error for the estimators; quantize reads NaN pixels as not image (nodata)
ESTIMATOR_CASES = {
    **SOURCE_CASES,
    "NaN in float image": (
        lambda src: np.where(RGB == RGB[3, 3, 0], np.nan, RGB / 255.0), InvalidInputError, r"NaN",
    ),
}


@pytest.mark.parametrize("case", ["1-D array", "5-D array", "NaN in float image", "complex dtype",
                                  "object dtype", "bool dtype"])
def test_bad_array_to_kmeans(case):
    make, error, _ = ESTIMATOR_CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(error) as info:
            KMeans(3, random_state=0).fit(make(None))
        _check_family(info.value)
        X = make(None)
        if isinstance(X, np.ndarray) and X.dtype != object:
            with pytest.raises(error):
                KMeans(3, random_state=0, strategy="pixels").fit(da.from_array(X, chunks=16))


@pytest.mark.parametrize("estimator", [KMeans(3, random_state=0), MiniBatchKMeans(3, random_state=0)], ids=repr)
def test_complex_array_to_estimators_is_also_a_value_error(estimator):
    """Complex data: an InputTypeError for bigquant and the ValueError scikit-learn's checks expect."""
    with pytest.raises(ComplexInputError, match=r"Complex data not supported: X has dtype=complex128") as info:
        estimator.fit(RGB.astype(complex))
    assert isinstance(info.value, InputTypeError) and isinstance(info.value, ValueError)
    _check_family(info.value)


def test_nan_pixels_of_a_float_tiff_are_nodata_not_an_error(tmp_path):
    """NaN in float data marks pixels that are not image (as GDAL reads them): left out, written as nodata."""
    path = _float_tiff_with_nan(tmp_path)
    model = quantize(path, tmp_path / "q.tif", 4, random_state=0, tile=16, chunks=32)
    labels = tifffile.imread(tmp_path / "q.tif")
    assert labels[40, 7] == 4 and (labels != 4).sum() == labels.size - 1
    assert np.isfinite(model.cluster_centers_).all()


# ---------------------------------------------------------------- parameters


PARAM_CASES: dict[str, tuple[dict, type[Exception], str]] = {
    "k = 0": ({"n_clusters": 0}, InvalidParameterError, r"n_clusters=0 must be >= 1"),
    "k < 0": ({"n_clusters": -3}, InvalidParameterError, r"n_clusters=-3 must be >= 1"),
    "non-integer k": ({"n_clusters": 2.5}, InvalidParameterError, r"n_clusters=2.5 must be an integer"),
    "k as a string": ({"n_clusters": "4"}, InvalidParameterError, r"n_clusters='4' must be an integer"),
    "k as a bool": ({"n_clusters": True}, InvalidParameterError, r"n_clusters=True must be an integer"),
    "k above the TIFF palette limit": (
        {"n_clusters": 65537}, InvalidParameterError, r"n_clusters=65537 is above the 65536 colours",
    ),
    "k above the RGB writer's limit": (
        {"n_clusters": 70000, "mode": "rgb"}, InvalidParameterError, r"n_clusters=70000 is above the 65536",
    ),
    "k above the PNG palette limit": (
        {"n_clusters": 257, "dst": "q.png"}, InvalidParameterError, r"n_clusters=257 is above the 256 colours",
    ),
    "tile not a multiple of 16": ({"tile": 100}, InvalidParameterError, r"tile=100 must be a positive multiple of 16"),
    "tile = 0": ({"tile": 0}, InvalidParameterError, r"tile=0 must be a positive multiple of 16"),
    "unknown compression": ({"compression": "bogus"}, InvalidParameterError, r"compression='bogus' is not one of"),
    "lossy codec on palette indices": (
        {"compression": "webp"}, InvalidParameterError, r"compression='webp' is lossy and would corrupt palette",
    ),
    "unknown mode": ({"mode": "gray"}, InvalidParameterError, r"mode='gray' must be 'palette' or 'rgb'"),
    "unknown strategy": ({"strategy": "fast"}, InvalidParameterError, r"strategy='fast' is not one of"),
    "negative random_state": ({"random_state": -1}, InvalidParameterError, r"random_state=-1 must be >= 0"),
    "chunks = 0": ({"chunks": 0}, InvalidParameterError, r"chunks=0 must be positive"),
    "unsupported output suffix": ({"dst": "q.bmp"}, ImageWriteError, r"unsupported output suffix '\.bmp'"),
    "output exists without overwrite": ({"dst": "exists.tif"}, ImageWriteError, r"exists\.tif: output exists"),
    "output directory missing": ({"dst": "missing/q.tif"}, ImageWriteError, r"directory .*missing does not exist"),
    "palette JSON same as output": (
        {"palette_out": "q.tif"}, InvalidParameterError, r"two outputs would be written to .*q\.tif",
    ),
    "preview exists without overwrite": (
        {"preview": "exists.png"}, ImageWriteError, r"exists\.png: output exists",
    ),
    "preview not a PNG": ({"preview": "p.jpg"}, InvalidParameterError, r"preview=.*p\.jpg: a preview is a \.png"),
    "TIFF level out of range": ({"level": 3}, InvalidParameterError, r"level=3 out of range"),
    "TIFF series out of range": ({"series": 2}, InvalidParameterError, r"series=2 out of range"),
    "max_iter = 0": ({"max_iter": 0}, InvalidParameterError, r"max_iter=0 must be >= 1"),
    "unknown keyword": ({"n_iters": 5}, InvalidParameterError, r"unknown option n_iters; did you mean "),
}


@pytest.mark.parametrize("case", list(PARAM_CASES))
def test_bad_parameter(dirs, case):
    src, out = dirs
    params, error, match = PARAM_CASES[case]
    params = dict(params)
    dst = out / params.pop("dst", "q.tif")
    for key in ("palette_out", "preview"):
        if key in params:
            params[key] = out / params[key]
    k = params.pop("n_clusters", 4)
    with pytest.raises(error, match=match) as info:
        quantize(src / "good.tif", dst, k, **{"random_state": 0, "tile": 16, **params})
    _check_family(info.value)


def test_output_parent_is_a_file(dirs):
    src, out = dirs
    with pytest.raises(ImageWriteError, match=r"exists\.tif is not a directory") as info:
        quantize(src / "good.tif", out / "exists.tif" / "q.tif", 4, tile=16)
    _check_family(info.value)


def test_read_only_output_directory(dirs, monkeypatch):
    src, out = dirs
    ro = out / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root: the mode does not stop writes; report it read-only
            access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
                False if Path(p) == ro and mode & os.W_OK else access(p, mode, **kw)))
        with pytest.raises(ImageWriteError, match=r"read-only is not writable") as info:
            quantize(src / "good.tif", ro / "q.tif", 4, tile=16)
        _check_family(info.value)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)
        ro.rmdir()


def test_write_failing_midway_leaves_nothing(dirs):
    """Labels out of the palette's range in the last band: the write fails after tiles went out."""
    _, out = dirs
    labels = np.zeros((256, 256), np.uint8)
    labels[200:, 100:] = 9
    with pytest.raises(InvalidInputError, match=r"labels range over \[0, 9\] but the palette has 2") as info:
        write_image(da.from_array(labels, chunks=64), out / "labels.tif",
                    palette=[[0, 0, 0], [255, 255, 255]], tile=64, preview=out / "preview.png")
    _check_family(info.value)


def test_palette_of_more_than_65536_colours(dirs):
    _, out = dirs
    palette = np.random.default_rng(0).integers(0, 256, (65537, 3))
    with pytest.raises(InvalidParameterError, match=r"palette has 65537 colours; at most 65536") as info:
        write_image(np.zeros((32, 32), np.uint32), out / "big.tif", palette=palette, tile=16)
    _check_family(info.value)


def test_more_colours_than_palette_png(dirs):
    _, out = dirs
    palette = np.random.default_rng(0).integers(0, 256, (300, 3))
    with pytest.raises(InvalidParameterError, match=r"PNG palettes hold at most 256 colours, got 300"):
        write_image(np.zeros((32, 32), np.uint16), out / "q.png", palette=palette, tile=16)


def test_jpeg_over_the_decompression_bomb_limit(dirs, monkeypatch):
    from PIL import Image

    src, out = dirs
    Image.fromarray(RGB).save(src / "photo.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4096 px is now a "bomb"
    with pytest.raises(ImageReadError, match=r"photo\.jpg: 64x64 pixels .* decompression-bomb limit") as info:
        quantize(src / "photo.jpg", out / "q.tif", 4, tile=16)
    _check_family(info.value)
    assert Image.MAX_IMAGE_PIXELS == 1000  # the reader restored the limit it lifted
    assert read_image(src / "photo.jpg", allow_large=True).shape == (64, 64, 3)


def test_fewer_colours_than_k_is_a_warning(dirs):
    """k above the number of distinct colours: a FewColoursWarning, and the image is written."""
    _, out = dirs
    img = np.zeros((48, 48, 3), np.uint8)
    img[:, 24:] = (200, 30, 90)
    with pytest.warns(FewColoursWarning, match=r"Number of distinct clusters \(2\) found smaller than n_clusters \(5\)"):
        model = quantize(img, out / "two.tif", 5, random_state=0, tile=16)
    assert len(model.cluster_centers_) == 5 and len(np.unique(model.cluster_centers_, axis=0)) == 2
    stored = tifffile.imread(out / "two.tif")
    assert stored.shape == (48, 48) and set(np.unique(stored)) == {0, 1}
    for name in ("two.tif", "two.tif.aux.xml"):  # the fixture checks nothing else was left
        (out / name).unlink()


# ---------------------------------------------------------------- scheduler


@pytest.fixture
def closed_port() -> int:
    """A local port with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fake_peer(request) -> Iterator[int]:
    """A local TCP server that never answers ("silent") or answers HTTP ("http")."""
    kind = request.param
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conns.append(conn)
            if kind == "http":
                conn.settimeout(1)
                try:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in conns:
            conn.close()
        server.close()


def _connect_bounded(address: str, timeout: float) -> tuple[BaseException, float]:
    from bigquant.pipeline.runtime import connect

    start = time.monotonic()
    with pytest.raises(ClusterConnectionError) as info:
        connect(address, timeout=timeout).close()
    return info.value, time.monotonic() - start


def test_unreachable_scheduler_times_out(closed_port):
    exc, elapsed = _connect_bounded(f"tcp://127.0.0.1:{closed_port}", 1.5)
    assert elapsed < 1.5 + 5, "connect did not honour its timeout"
    assert re.search(rf"could not reach the Dask scheduler at tcp://127\.0\.0\.1:{closed_port}", str(exc))
    _check_family(exc)


@pytest.mark.parametrize("fake_peer", ["silent", "http"], indirect=True)
def test_scheduler_address_of_a_non_dask_peer(fake_peer):
    """A peer that accepts the connection but never speaks Dask: bounded, never a hang."""
    exc, elapsed = _connect_bounded(f"tcp://127.0.0.1:{fake_peer}", 1.5)
    assert elapsed < 1.5 + 5, "connect hung on the handshake"
    assert f"127.0.0.1:{fake_peer}" in str(exc)
    assert isinstance(exc, OSError)


def test_malformed_scheduler_address():
    from bigquant.pipeline.runtime import connect

    with pytest.raises(InvalidParameterError, match=r"scheduler='tcp://:::' is not a scheduler address"):
        connect("tcp://:::")



def test_output_name_too_long(dirs):
    src, out = dirs
    with pytest.raises(ImageWriteError, match=r"\.tif: File name too long") as info:
        quantize(src / "good.tif", out / ("x" * 300 + ".tif"), 4, tile=16)
    _check_family(info.value)


def test_longest_legal_output_name_is_written(dirs):
    """A 255-byte file name is legal: the hidden temporary name beside it must be too."""
    src, out = dirs
    dst = out / ("x" * 251 + ".tif")
    quantize(src / "good.tif", dst, 4, tile=16, pyramid=1, random_state=0)
    assert tifffile.imread(dst).shape == (64, 64)
    dst.unlink()


# ---------------------------------------------------------------- command line

# (arguments, exit code, what the one line on stderr says); IN/OUT/SRC are filled in per test
CLI_CASES: dict[str, tuple[list[str], int, str]] = {
    "missing input": (["quantize", "{src}/nope.tif", "{out}/q.tif"], 1, r"nope\.tif: no such file"),
    "input is a directory": (["quantize", "{src}", "{out}/q.tif"], 1, r"is a directory"),
    "non-image named .tif": (["quantize", "{src}/notes.tif", "{out}/q.tif"], 1, r"not a recognised image"),
    "truncated TIFF": (["quantize", "{src}/truncated.tif", "{out}/q.tif"], 1, r"file is truncated"),
    "k = 0": (["quantize", "{src}/good.tif", "{out}/q.tif", "-k", "0"], 2, r"-k/--n-clusters: '0' must be >= 1"),
    "non-integer k": (["quantize", "{src}/good.tif", "{out}/q.tif", "-k", "2.5"], 2, r"'2\.5' is not an integer"),
    "k above the writer's limit": (
        ["quantize", "{src}/good.tif", "{out}/q.tif", "-k", "70000"], 2, r"-k 70000 is above the 65536",
    ),
    "tile not a multiple of 16": (
        ["quantize", "{src}/good.tif", "{out}/q.tif", "--tile", "100"], 2, r"--tile 100 must be a positive multiple of 16",
    ),
    "lossy codec on palette indices": (
        ["quantize", "{src}/good.tif", "{out}/q.tif", "--compression", "jpeg"], 2, r"--compression jpeg is lossy and would corrupt",
    ),
    "unknown compression": (
        ["quantize", "{src}/good.tif", "{out}/q.tif", "--compression", "bogus"], 2, r"--compression bogus is not one of",
    ),
    "output exists": (["quantize", "{src}/good.tif", "{out}/exists.tif"], 1, r"exists\.tif: output exists"),
    "output directory missing": (
        ["quantize", "{src}/good.tif", "{out}/missing/q.tif"], 1, r"directory .*missing does not exist",
    ),
    "unsupported output suffix": (["quantize", "{src}/good.tif", "{out}/q.bmp"], 1, r"unsupported output suffix"),
    "unknown command": (["frobnicate"], 2, r"invalid choice: 'frobnicate'"),
    "missing arguments": (["quantize"], 2, r"the following arguments are required: PATH"),
    "--no-cluster with --scheduler": (
        ["quantize", "{src}/good.tif", "{out}/q.tif", "--scheduler", "tcp://127.0.0.1:9"], 2,
        r"--no-cluster and --scheduler exclude each other",
    ),
    "sweep --resume without --out": (["sweep", "{src}/good.tif", "--resume"], 2, r"--resume needs --out"),
    "sweep with malformed ks": (["sweep", "{src}/good.tif", "--k", "a:b"], 2, r"--k a:b must look like"),
    "info of a missing file": (["info", "{src}/nope.tif"], 1, r"nope\.tif: no such file"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_command_line_bad_input(dirs, capsys, case):
    import bigquant.cli as cli

    src, out = dirs
    _text_as_tif(src)
    _truncated(src)
    argv, code, match = CLI_CASES[case]
    argv = [a.format(src=src, out=out) for a in argv]
    if argv[0] in ("quantize", "sweep"):
        argv += ["--no-progress", "--no-cluster"]  # no local cluster for a bad input
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got {err!r}"
    assert re.search(match, err), err


def test_command_line_unreachable_scheduler(dirs, capsys, closed_port):
    import bigquant.cli as cli

    src, out = dirs
    start = time.monotonic()
    code = cli.main(["quantize", str(src / "good.tif"), str(out / "q.tif"), "--no-progress",
                     "--scheduler", f"tcp://127.0.0.1:{closed_port}", "--timeout", "1"])
    assert time.monotonic() - start < 1 + 5
    assert code == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert f"could not reach the Dask scheduler at tcp://127.0.0.1:{closed_port}" in err
